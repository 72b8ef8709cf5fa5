//! A real anvil child process on a free loopback port, killed on drop.
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

/// The anvil binary installed by `npm ci --prefix fixtures/chain`.
pub fn anvil_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("CODEX_TEST_ANVIL") {
        return PathBuf::from(p);
    }
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/chain/node_modules/.bin/anvil");
    assert!(
        p.exists(),
        "anvil not found at {}: run `npm ci --prefix fixtures/chain`",
        p.display()
    );
    p
}

/// A running anvil. Killed (and reaped) when dropped.
pub struct Anvil {
    child: Child,
    /// The TCP port it listens on.
    pub port: u16,
    args: Vec<String>,
}

impl Anvil {
    /// The process id of the anvil child.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Starts anvil with `--port 0` and the extra arguments, and waits until it listens.
    pub fn start(extra: &[&str]) -> Anvil {
        Self::start_on(0, extra.iter().map(|s| s.to_string()).collect())
    }

    fn start_on(port: u16, args: Vec<String>) -> Anvil {
        let mut child = Command::new(anvil_bin())
            .arg("--host")
            .arg("127.0.0.1")
            .arg("--port")
            .arg(port.to_string())
            .args(&args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start anvil");
        let stdout = child.stdout.take().expect("anvil stdout");
        // Build the guard before waiting, so that a failure below still kills the child.
        let mut guard = Anvil {
            child,
            port: 0,
            args,
        };
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if let Some(addr) = line.strip_prefix("Listening on ") {
                    let _ = tx.send(addr.trim().to_string());
                }
            }
        });
        let addr = rx
            .recv_timeout(Duration::from_secs(30))
            .expect("anvil did not report its address in time");
        guard.port = addr
            .rsplit(':')
            .next()
            .and_then(|p| p.parse().ok())
            .expect("anvil address has a port");
        guard
    }

    /// `ws://127.0.0.1:PORT`
    pub fn ws_url(&self) -> String {
        format!("ws://127.0.0.1:{}", self.port)
    }

    /// Stops anvil with SIGTERM (so that `--dump-state`/`--state` is written) and waits.
    pub fn terminate(&mut self) {
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status();
        // anvil exits promptly on SIGTERM after writing its state.
        let _ = self.child.wait();
    }

    /// Starts a new anvil with the same arguments on the same port (after [`Anvil::terminate`]).
    pub fn restart(&mut self) {
        let args = self.args.clone();
        let port = self.port;
        let _ = self.child.kill();
        let _ = self.child.wait();
        let fresh = Self::start_on(port, args);
        // Swap in the new child; the old guard's Drop then reaps the dead one.
        let old = std::mem::replace(self, fresh);
        drop(old);
    }
}

impl Drop for Anvil {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
