//! The one mio loop that every codex program runs around a [`ChainClient`]: the node
//! (`codex run`, with signals, a waker for its worker threads and a tick), `codex events
//! --follow` (with signals), and [`super::client::BlockingClient`] for one-shot calls.
//!
//! A turn waits for readiness until the earliest of the client's next deadline and the
//! caller's own, hands the client its socket readiness and due timers, and reports what else
//! happened (a signal, a wake-up). The caller then drains the client's outputs and does its
//! own work; nothing here sleeps or reads the chain.
use std::io;
use std::sync::Arc;
use std::time::Instant;

use mio::{Events, Interest, Poll, Registry, Token, Waker};
use signal_hook_mio::v1_0::Signals;

use super::client::ChainClient;

/// The token the chain client must be created with.
pub const CHAIN: Token = Token(0);
const SIGNALS: Token = Token(1);
const WAKER: Token = Token(2);

/// What a turn saw besides the chain connection.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Turn {
    /// The last signal that arrived (SIGINT, SIGTERM, ...), if any.
    pub signal: Option<i32>,
    /// The waker was woken (another thread has something for the loop).
    pub woken: bool,
    /// How long the turn waited in `poll`.
    pub waited: std::time::Duration,
    /// How long the client took with the socket's readiness and its timers.
    pub client: std::time::Duration,
}

/// The loop. See the module docs.
pub struct EventLoop {
    poll: Poll,
    events: Events,
    signals: Option<Signals>,
    /// Readiness of the caller's own sockets in the last turn: (token, readable, writable).
    others: Vec<(Token, bool, bool)>,
}

/// The first token free for the caller's own sockets (the REST and metrics servers).
pub const FIRST_FREE: usize = 16;

impl EventLoop {
    /// A loop with nothing registered yet.
    pub fn new() -> io::Result<EventLoop> {
        Ok(EventLoop {
            poll: Poll::new()?,
            events: Events::with_capacity(256),
            signals: None,
            others: Vec::new(),
        })
    }

    /// Also watches these signals (installed by the caller before any network call, so that
    /// an interrupt while connecting is not lost).
    pub fn with_signals(mut self, mut signals: Signals) -> io::Result<EventLoop> {
        self.poll
            .registry()
            .register(&mut signals, SIGNALS, Interest::READABLE)?;
        self.signals = Some(signals);
        Ok(self)
    }

    /// A waker that other threads use to wake the loop ([`Turn::woken`]).
    pub fn waker(&self) -> io::Result<Arc<Waker>> {
        Ok(Arc::new(Waker::new(self.poll.registry(), WAKER)?))
    }

    /// The registry, for the client's calls.
    pub fn registry(&self) -> &Registry {
        self.poll.registry()
    }

    /// Waits for readiness until the earliest of `client`'s next deadline and `until`, then
    /// feeds the client its readiness and its due timers.
    pub fn turn(&mut self, client: &mut ChainClient, until: Option<Instant>) -> io::Result<Turn> {
        let now = Instant::now();
        let unread = client.has_unread();
        let deadline = [client.next_deadline(), until].into_iter().flatten().min();
        // Messages left on the socket by the last read: only look for other readiness.
        let timeout = if unread {
            Some(std::time::Duration::ZERO)
        } else {
            deadline.map(|d| d.saturating_duration_since(now))
        };
        if let Err(e) = self.poll.poll(&mut self.events, timeout) {
            if e.kind() != io::ErrorKind::Interrupted {
                return Err(e);
            }
        }
        let mut turn = Turn {
            waited: now.elapsed(),
            ..Turn::default()
        };
        let mut chain_ready = false;
        let mut signalled = false;
        self.others.clear();
        for ev in self.events.iter() {
            match ev.token() {
                CHAIN => chain_ready = true,
                SIGNALS => signalled = true,
                WAKER => turn.woken = true,
                t => self.others.push((
                    t,
                    ev.is_readable() || ev.is_read_closed() || ev.is_error(),
                    ev.is_writable() || ev.is_write_closed(),
                )),
            }
        }
        let registry = self.poll.registry();
        let t = Instant::now();
        if chain_ready || unread {
            client.on_ready(registry, Instant::now());
        }
        client.on_timer(registry, Instant::now());
        turn.client = t.elapsed();
        if signalled {
            if let Some(s) = &mut self.signals {
                for sig in s.pending() {
                    turn.signal = Some(sig);
                }
            }
        }
        Ok(turn)
    }

    /// The readiness the last [`Self::turn`] saw on the caller's own sockets (tokens from
    /// [`FIRST_FREE`] on): (token, readable, writable).
    pub fn others(&self) -> &[(Token, bool, bool)] {
        &self.others
    }

    /// Waits until `until` for a signal only (no chain connection yet: start-up backoff);
    /// returns the signal if one came.
    pub fn wait_for_signal(&mut self, until: Instant) -> io::Result<Option<i32>> {
        loop {
            let now = Instant::now();
            if now >= until {
                return Ok(None);
            }
            if let Err(e) = self.poll.poll(&mut self.events, Some(until - now)) {
                if e.kind() != io::ErrorKind::Interrupted {
                    return Err(e);
                }
            }
            if self.events.iter().any(|e| e.token() == SIGNALS) {
                if let Some(s) = &mut self.signals {
                    if let Some(sig) = s.pending().last() {
                        return Ok(Some(sig));
                    }
                }
            }
        }
    }
}
