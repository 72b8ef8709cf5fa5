//! Drives a following [`ChainClient`] in codex's event loop, on the test thread.
use std::time::{Duration, Instant};

use codex::chain::client::{ChainClient, ClientConfig, ClientOutput, Follow};
use codex::chain::event_loop::{EventLoop, CHAIN};
use codex::chain::rpc::Log;
use codex::chain::ws::Endpoint;

/// A follower and everything it has reported.
pub struct Follower {
    lp: EventLoop,
    pub client: ChainClient,
    pub logs: Vec<Log>,
    pub removed: Vec<Log>,
    pub heads: Vec<u64>,
    pub processed: Option<u64>,
    pub connects: usize,
    pub disconnects: Vec<String>,
}

/// Short timers so that faults are noticed quickly.
pub fn fast_config(url: &str) -> ClientConfig {
    let mut c = ClientConfig::new(Endpoint::parse(url).unwrap());
    c.call_timeout = Duration::from_secs(2);
    c.connect_timeout = Duration::from_secs(2);
    c.keepalive = Duration::from_millis(700);
    c.backoff_initial = Duration::from_millis(20);
    c.backoff_max = Duration::from_millis(200);
    c
}

impl Follower {
    pub fn new(mut config: ClientConfig, follow: Follow) -> Follower {
        config.follow = Some(follow);
        let lp = EventLoop::new().unwrap();
        let client = ChainClient::new(config, CHAIN, Instant::now(), fastrand::Rng::with_seed(7));
        Follower {
            lp,
            client,
            logs: vec![],
            removed: vec![],
            heads: vec![],
            processed: None,
            connects: 0,
            disconnects: vec![],
        }
    }

    /// Runs loop turns until `done(self)` or the timeout; panics on timeout.
    pub fn run_until(&mut self, timeout: Duration, what: &str, done: impl Fn(&Follower) -> bool) {
        let deadline = Instant::now() + timeout;
        while !done(self) {
            let now = Instant::now();
            assert!(
                now < deadline,
                "timed out waiting for {what}; logs={} processed={:?} disconnects={:?}",
                self.logs.len(),
                self.processed,
                self.disconnects
            );
            self.lp.turn(&mut self.client, Some(deadline)).unwrap();
            while let Some(o) = self.client.poll_output() {
                match o {
                    ClientOutput::Connected => self.connects += 1,
                    ClientOutput::Disconnected(e) | ClientOutput::Failed(e) => {
                        self.disconnects.push(e.to_string())
                    }
                    ClientOutput::Log(l) => self.logs.push(l),
                    ClientOutput::Removed(l) => self.removed.push(l),
                    ClientOutput::Processed(b) => self.processed = Some(b),
                    ClientOutput::Head(h) => self.heads.push(h.number),
                    ClientOutput::Response { .. } => {}
                }
            }
        }
    }
}
