//! The chain client: a [`WsConn`] plus the JSON-RPC core, with reconnection.
//!
//! [`ChainClient`] is event-loop friendly: the owner registers nothing itself; it hands the
//! client a mio [`Registry`] and a [`Token`], feeds readiness for that token
//! ([`ChainClient::on_ready`]) and expired deadlines ([`ChainClient::on_timer`], safe to call
//! at any time), and drains [`ClientOutput`]s with [`ChainClient::poll_output`]. It never
//! blocks and never reads a clock: `now` comes in with every call, and the wake-ups it needs
//! (connect deadline, call timeouts, keep-alive ping, pong deadline, reconnect backoff) are
//! data whose minimum is [`ChainClient::next_deadline`].
//!
//! With a [`Follow`] configuration the client also keeps the Marketplace log subscription and
//! `newHeads`, and backfills with bounded `eth_getLogs` after every (re)connect from the
//! cursor of its [`LogSync`]: logs come out exactly once, in order, across disconnects.
//!
//! [`BlockingClient`] runs the same client in its own [`EventLoop`] for one-shot CLI calls.
use std::collections::VecDeque;
use std::time::{Duration, Instant};

use alloy_primitives::{Address, Bytes};
use mio::{Registry, Token};
use serde_json::Value;

use super::error::ChainError;
use super::event_loop::{EventLoop, CHAIN};
use super::rpc::{
    parse_incoming, parse_incoming_batch, parse_logs, parse_quantity, CallId, Head, Incoming, Log,
    LogRange, LogSync, ParseError, Pending, SubKind, Subscriptions, SyncEvent,
};
use super::ws::{Endpoint, WsConn, WsError, WsEvent, WsLimits};

/// Tunables of a [`ChainClient`].
#[derive(Debug, Clone)]
pub struct ClientConfig {
    /// The provider.
    pub endpoint: Endpoint,
    /// How long a call may wait for its answer.
    pub call_timeout: Duration,
    /// How long the TCP connect and both handshakes may take.
    pub connect_timeout: Duration,
    /// After this long without any frame from the node a ping is sent; without any frame for
    /// the same time after the ping, the connection counts as stalled and is replaced.
    pub keepalive: Duration,
    /// First reconnect delay; doubled per failed attempt up to `backoff_max`, with jitter.
    pub backoff_initial: Duration,
    /// Largest reconnect delay.
    pub backoff_max: Duration,
    /// Whether to reconnect at all (one-shot commands fail fast instead).
    pub reconnect: bool,
    /// Connection limits.
    pub limits: WsLimits,
    /// Log following, if wanted.
    pub follow: Option<Follow>,
}

impl ClientConfig {
    /// Defaults for the given provider.
    pub fn new(endpoint: Endpoint) -> ClientConfig {
        ClientConfig {
            endpoint,
            call_timeout: Duration::from_secs(30),
            connect_timeout: Duration::from_secs(10),
            keepalive: Duration::from_secs(20),
            backoff_initial: Duration::from_millis(250),
            backoff_max: Duration::from_secs(30),
            reconnect: true,
            limits: WsLimits::default(),
            follow: None,
        }
    }
}

/// What to follow.
#[derive(Debug, Clone)]
pub struct Follow {
    /// The Marketplace address.
    pub address: Address,
    /// The first block to hand out logs for.
    pub from_block: u64,
    /// The last block, if bounded.
    pub to_block: Option<u64>,
    /// Blocks per `eth_getLogs` query.
    pub max_range: u64,
}

/// What the client reports.
#[derive(Debug)]
pub enum ClientOutput {
    /// The WebSocket is open (again).
    Connected,
    /// The connection ended; a reconnect is scheduled if configured.
    Disconnected(ChainError),
    /// Reconnection is off and the connection ended or never came up.
    Failed(ChainError),
    /// The answer to a [`ChainClient::call`].
    Response {
        /// The id `call` returned.
        id: CallId,
        /// The result.
        result: Result<Value, ChainError>,
    },
    /// A new Marketplace log, in order, each once.
    Log(Log),
    /// A log handed out earlier was removed by a reorganisation.
    Removed(Log),
    /// Every log up to this block has been handed out.
    Processed(u64),
    /// A new block header.
    Head(Head),
}

#[derive(Debug, Clone, Copy)]
enum Tag {
    User,
    Subscribe(SubKind),
    BlockNumber,
    GetLogs(LogRange),
}

enum Link {
    /// Waiting to (re)connect at the given time.
    Waiting(Instant),
    /// A connection attempt or an open connection.
    Up {
        conn: Box<WsConn>,
        open: bool,
        last_rx: Instant,
        ping_sent: Option<Instant>,
    },
    /// Reconnection is off and the link failed.
    Down,
}

/// The event-loop-friendly client. See the module docs.
pub struct ChainClient {
    config: ClientConfig,
    token: Token,
    link: Link,
    attempt: u32,
    rng: fastrand::Rng,
    pending: Pending<Tag>,
    /// Frames of calls made while the link was not open, sent once it opens.
    outbox: VecDeque<(CallId, String)>,
    subs: Subscriptions,
    sync: Option<LogSync>,
    out: VecDeque<ClientOutput>,
    ws_events: Vec<WsEvent>,
    sync_events: Vec<SyncEvent>,
}

impl ChainClient {
    /// A client that connects on the first [`ChainClient::on_timer`]. `rng` provides the
    /// backoff jitter.
    pub fn new(config: ClientConfig, token: Token, now: Instant, rng: fastrand::Rng) -> Self {
        let sync = config
            .follow
            .as_ref()
            .map(|f| LogSync::new(f.from_block, f.to_block, f.max_range));
        ChainClient {
            config,
            token,
            link: Link::Waiting(now),
            attempt: 0,
            rng,
            pending: Pending::default(),
            outbox: VecDeque::new(),
            subs: Subscriptions::default(),
            sync,
            out: VecDeque::new(),
            ws_events: Vec::new(),
            sync_events: Vec::new(),
        }
    }

    /// The log cursor, when following.
    pub fn sync(&self) -> Option<&LogSync> {
        self.sync.as_ref()
    }

    /// Queries the Marketplace logs again from `block` (see [`LogSync::rewind`]): for a
    /// reorganisation the caller saw in the heads' hashes that the log cursor could not.
    pub fn rewind_logs(&mut self, block: u64) {
        if let Some(s) = &mut self.sync {
            s.rewind(block);
        }
    }

    /// Whether the WebSocket is open.
    pub fn is_connected(&self) -> bool {
        matches!(self.link, Link::Up { open: true, .. })
    }

    /// Sends a call (or queues it until the link is open) and returns its id; the answer
    /// comes as [`ClientOutput::Response`] with that id.
    pub fn call(
        &mut self,
        registry: &Registry,
        method: &str,
        params: &Value,
        now: Instant,
    ) -> CallId {
        self.start(registry, method, params, Tag::User, now)
    }

    /// Sends several calls as one JSON-RPC batch (one frame out, one frame back, so the
    /// node answers them together instead of one small frame each) and returns their ids;
    /// each answer comes as its own [`ClientOutput::Response`].
    pub fn call_batch(
        &mut self,
        registry: &Registry,
        calls: &[(&str, Value)],
        now: Instant,
    ) -> Vec<CallId> {
        let deadline = now + self.config.call_timeout;
        let mut ids = Vec::with_capacity(calls.len());
        let mut frame = String::from("[");
        for (i, (method, params)) in calls.iter().enumerate() {
            let (id, one) = self.pending.start(method, params, Tag::User, deadline);
            if i > 0 {
                frame.push(',');
            }
            frame.push_str(&one);
            ids.push(id);
        }
        frame.push(']');
        let Some(&first) = ids.first() else {
            return ids;
        };
        if self.is_connected() {
            self.send(registry, frame, now);
        } else {
            self.outbox.push_back((first, frame));
        }
        ids
    }

    fn start(
        &mut self,
        registry: &Registry,
        method: &str,
        params: &Value,
        tag: Tag,
        now: Instant,
    ) -> CallId {
        let deadline = now + self.config.call_timeout;
        let (id, frame) = self.pending.start(method, params, tag, deadline);
        if self.is_connected() {
            self.send(registry, frame, now);
        } else {
            self.outbox.push_back((id, frame));
        }
        id
    }

    fn send(&mut self, registry: &Registry, frame: String, now: Instant) {
        if let Link::Up { conn, .. } = &mut self.link {
            conn.send_text(registry, frame, &mut self.ws_events);
        }
        self.handle_ws_events(registry, now);
    }

    /// The next output, if any.
    pub fn poll_output(&mut self) -> Option<ClientOutput> {
        self.out.pop_front()
    }

    /// Whether the socket holds messages not read yet: the loop should come back at once
    /// (see [`super::ws::READ_BATCH`]).
    pub fn has_unread(&self) -> bool {
        matches!(&self.link, Link::Up { conn, .. } if conn.unread())
    }

    /// When [`ChainClient::on_timer`] must run next.
    pub fn next_deadline(&self) -> Option<Instant> {
        let link = match &self.link {
            Link::Waiting(at) => Some(*at),
            Link::Up {
                conn,
                open,
                last_rx,
                ping_sent,
            } => {
                if *open {
                    Some(match ping_sent {
                        Some(at) => *at + self.config.keepalive,
                        None => *last_rx + self.config.keepalive,
                    })
                } else {
                    conn.next_deadline()
                }
            }
            Link::Down => None,
        };
        [link, self.pending.next_deadline()]
            .into_iter()
            .flatten()
            .min()
    }

    /// Handles readiness of the client's token.
    pub fn on_ready(&mut self, registry: &Registry, now: Instant) {
        if let Link::Up { conn, .. } = &mut self.link {
            conn.on_ready(registry, &mut self.ws_events);
        }
        self.handle_ws_events(registry, now);
    }

    /// Handles every deadline that is due at `now`.
    pub fn on_timer(&mut self, registry: &Registry, now: Instant) {
        // Reconnect.
        if let Link::Waiting(at) = self.link {
            if now >= at {
                self.connect(registry, now);
            }
        }
        // Connect deadline, keep-alive.
        let mut stalled = false;
        let mut ping = false;
        if let Link::Up {
            conn,
            open,
            last_rx,
            ping_sent,
        } = &mut self.link
        {
            if *open {
                match ping_sent {
                    Some(at) if now >= *at + self.config.keepalive => stalled = true,
                    None if now >= *last_rx + self.config.keepalive => {
                        *ping_sent = Some(now);
                        ping = true;
                    }
                    _ => {}
                }
            } else {
                conn.on_timer(registry, now, &mut self.ws_events);
            }
            if ping {
                conn.send_ping(registry, &mut self.ws_events);
            }
        }
        if stalled {
            self.drop_link(registry, WsError::Lost("no answer to a ping".into()), now);
        }
        // Call timeouts.
        let expired = self.pending.expire(now);
        if !expired.is_empty() && !self.outbox.is_empty() {
            let gone: std::collections::HashSet<CallId> =
                expired.iter().map(|(id, _)| *id).collect();
            self.outbox.retain(|(i, _)| !gone.contains(i));
        }
        let mut internal_timeout = None;
        for (id, call) in expired {
            match call.tag {
                Tag::User => self.out.push_back(ClientOutput::Response {
                    id,
                    result: Err(ChainError::Timeout {
                        method: call.method,
                    }),
                }),
                _ => internal_timeout = Some(call.method),
            }
        }
        if let Some(method) = internal_timeout {
            // The node stopped answering: replace the connection.
            if matches!(self.link, Link::Up { .. }) {
                self.drop_link(
                    registry,
                    WsError::Lost(format!("no answer to {method} in time")),
                    now,
                );
            }
        }
        self.handle_ws_events(registry, now);
    }

    /// Closes the connection cleanly and stops reconnecting.
    pub fn shutdown(&mut self, registry: &Registry) {
        if let Link::Up { conn, .. } = &mut self.link {
            conn.close(registry, &mut Vec::new());
            conn.deregister(registry);
        }
        self.link = Link::Down;
    }

    fn connect(&mut self, registry: &Registry, now: Instant) {
        let deadline = now + self.config.connect_timeout;
        match WsConn::connect(
            &self.config.endpoint,
            registry,
            self.token,
            self.config.limits,
            deadline,
        ) {
            Ok(conn) => {
                self.link = Link::Up {
                    conn: Box::new(conn),
                    open: false,
                    last_rx: now,
                    ping_sent: None,
                }
            }
            Err(e) => self.link_failed(e, now),
        }
    }

    fn backoff(&mut self) -> Duration {
        let base =
            self.config.backoff_initial.as_secs_f64() * 2f64.powi(self.attempt.min(30) as i32);
        let capped = base.min(self.config.backoff_max.as_secs_f64());
        self.attempt = self.attempt.saturating_add(1);
        // Full jitter in [capped/2, capped].
        Duration::from_secs_f64(capped * (0.5 + 0.5 * self.rng.f64()))
    }

    fn link_failed(&mut self, e: WsError, now: Instant) {
        let err = ChainError::from_ws(&self.config.endpoint.url, e);
        for (id, call) in self.pending.drain() {
            if let Tag::User = call.tag {
                self.out.push_back(ClientOutput::Response {
                    id,
                    result: Err(ChainError::Disconnected(err.to_string())),
                });
            }
        }
        self.outbox.clear();
        self.subs.clear();
        if let Some(s) = &mut self.sync {
            s.on_disconnect();
        }
        if self.config.reconnect {
            let delay = self.backoff();
            log::debug!("reconnecting in {} ms", delay.as_millis());
            self.link = Link::Waiting(now + delay);
            self.out.push_back(ClientOutput::Disconnected(err));
        } else {
            self.link = Link::Down;
            self.out.push_back(ClientOutput::Failed(err));
        }
    }

    fn drop_link(&mut self, registry: &Registry, e: WsError, now: Instant) {
        if let Link::Up { conn, .. } = &mut self.link {
            conn.deregister(registry);
        }
        self.link_failed(e, now);
    }

    fn handle_ws_events(&mut self, registry: &Registry, now: Instant) {
        while !self.ws_events.is_empty() {
            let events = std::mem::take(&mut self.ws_events);
            for ev in events {
                match ev {
                    WsEvent::Open => self.on_open(registry, now),
                    WsEvent::Text(t) => {
                        self.alive(now);
                        self.on_text(registry, &t, now);
                    }
                    WsEvent::Alive => self.alive(now),
                    WsEvent::Closed(e) => {
                        if let Link::Up { conn, .. } = &mut self.link {
                            conn.deregister(registry);
                        }
                        if matches!(self.link, Link::Up { .. }) {
                            self.link_failed(e, now);
                        }
                    }
                }
            }
        }
    }

    fn alive(&mut self, now: Instant) {
        if let Link::Up {
            last_rx, ping_sent, ..
        } = &mut self.link
        {
            *last_rx = now;
            *ping_sent = None;
        }
    }

    fn on_open(&mut self, registry: &Registry, now: Instant) {
        if let Link::Up {
            open,
            last_rx,
            ping_sent,
            ..
        } = &mut self.link
        {
            *open = true;
            *last_rx = now;
            *ping_sent = None;
        }
        self.out.push_back(ClientOutput::Connected);
        let queued: Vec<_> = self.outbox.drain(..).collect();
        for (_, frame) in queued {
            if let Link::Up { conn, .. } = &mut self.link {
                conn.send_text(registry, frame, &mut self.ws_events);
            }
        }
        if let Some(f) = self.config.follow.clone() {
            let live = f.to_block.is_none();
            if live {
                for kind in [SubKind::Logs, SubKind::NewHeads] {
                    let params = kind.params(f.address);
                    self.start(
                        registry,
                        "eth_subscribe",
                        &params,
                        Tag::Subscribe(kind),
                        now,
                    );
                }
            }
            self.start(
                registry,
                "eth_blockNumber",
                &Value::Array(vec![]),
                Tag::BlockNumber,
                now,
            );
        }
    }

    fn on_text(&mut self, registry: &Registry, text: &str, now: Instant) {
        if text.trim_start().starts_with('[') {
            for msg in parse_incoming_batch(text) {
                self.on_message(registry, msg, now);
            }
            return;
        }
        self.on_message(registry, parse_incoming(text), now);
    }

    fn on_message(&mut self, registry: &Registry, msg: Result<Incoming, ParseError>, now: Instant) {
        match msg {
            Ok(Incoming::Response { id, result }) => match self.pending.complete(id) {
                Some(call) => self.on_response(registry, id, call.method, call.tag, result, now),
                None => log::warn!("ignoring a response for unknown call id {id}"),
            },
            Ok(Incoming::Notification {
                subscription,
                result,
            }) => self.on_notification(registry, &subscription, &result, now),
            Err(ParseError::ForeignId { id, error }) => {
                log::warn!("ignoring a response with id {id}: {error:?}")
            }
            Err(e) => log::warn!("ignoring a frame from the node: {e}"),
        }
    }

    fn on_response(
        &mut self,
        registry: &Registry,
        id: CallId,
        method: String,
        tag: Tag,
        result: Result<Value, super::rpc::RpcError>,
        now: Instant,
    ) {
        if result.is_ok() {
            self.attempt = 0; // the link works: the next failure starts the backoff afresh
        }
        let result = result.map_err(|error| ChainError::Rpc {
            method: method.clone(),
            error,
        });
        let failure = match (tag, result) {
            (Tag::User, result) => {
                self.out.push_back(ClientOutput::Response { id, result });
                None
            }
            (_, Err(e)) => Some(e.to_string()),
            (Tag::Subscribe(kind), Ok(v)) => {
                self.subs.confirm(kind, &v).err().map(|e| e.to_string())
            }
            (Tag::BlockNumber, Ok(v)) => match v.as_str().map(parse_quantity) {
                Some(Ok(n)) => {
                    if let Some(s) = &mut self.sync {
                        s.on_head(n, false);
                    }
                    None
                }
                _ => Some(format!("eth_blockNumber returned {v}")),
            },
            (Tag::GetLogs(range), Ok(v)) => match parse_logs(&v) {
                Ok(logs) => {
                    if let Some(s) = &mut self.sync {
                        s.on_range(range, logs, &mut self.sync_events);
                    }
                    None
                }
                Err(e) => Some(e.to_string()),
            },
        };
        if let Some(reason) = failure {
            // An internal call failed: the backfill cannot go on over this connection.
            self.drop_link(registry, WsError::Lost(reason), now);
            return;
        }
        self.advance(registry, now);
    }

    fn on_notification(&mut self, registry: &Registry, sub: &str, result: &Value, now: Instant) {
        match self.subs.kind_of(sub) {
            Some(SubKind::Logs) => match Log::from_value(result) {
                Ok(log) => {
                    if let Some(s) = &mut self.sync {
                        s.on_subscription_log(log, &mut self.sync_events);
                    }
                }
                Err(e) => log::warn!("ignoring a log notification: {e}"),
            },
            Some(SubKind::NewHeads) => match Head::from_value(result) {
                Ok(head) => {
                    if let Some(s) = &mut self.sync {
                        s.on_head(head.number, true);
                    }
                    self.out.push_back(ClientOutput::Head(head));
                }
                Err(e) => log::warn!("ignoring a block header: {e}"),
            },
            None => log::warn!("ignoring a notification for unknown subscription {sub}"),
        }
        self.advance(registry, now);
    }

    /// Hands out what the log sync produced and plans the next range.
    fn advance(&mut self, registry: &Registry, now: Instant) {
        for ev in self.sync_events.drain(..) {
            self.out.push_back(match ev {
                SyncEvent::Log(l) => ClientOutput::Log(l),
                SyncEvent::Removed(l) => ClientOutput::Removed(l),
                SyncEvent::Processed(b) => ClientOutput::Processed(b),
            });
        }
        if !self.is_connected() {
            return;
        }
        let Some(f) = self.config.follow.clone() else {
            return;
        };
        let next = self.sync.as_mut().and_then(LogSync::next_range);
        if let Some(range) = next {
            let params = range.params(f.address);
            self.start(registry, "eth_getLogs", &params, Tag::GetLogs(range), now);
        }
    }
}

/// A blocking convenience wrapper for one-shot commands: the same client in its own
/// [`EventLoop`].
pub struct BlockingClient {
    lp: EventLoop,
    client: ChainClient,
    /// Outputs other than the awaited response (heads, logs), kept in order.
    backlog: VecDeque<ClientOutput>,
}

impl BlockingClient {
    /// Connects to the provider (no reconnection) and waits until the WebSocket is open.
    pub fn connect(endpoint: &str, call_timeout: Duration) -> Result<BlockingClient, ChainError> {
        Self::connect_to(Endpoint::parse(endpoint)?, call_timeout)
    }

    /// [`BlockingClient::connect`] to a parsed endpoint (which may carry extra trusted
    /// certificates for `wss://`).
    pub fn connect_to(
        endpoint: Endpoint,
        call_timeout: Duration,
    ) -> Result<BlockingClient, ChainError> {
        let mut config = ClientConfig::new(endpoint);
        config.reconnect = false;
        config.call_timeout = call_timeout;
        config.connect_timeout = call_timeout;
        Self::with_config(config)
    }

    /// Connects with the given configuration and waits until the WebSocket is open.
    pub fn with_config(config: ClientConfig) -> Result<BlockingClient, ChainError> {
        let lp = EventLoop::new().map_err(|e| ChainError::Unreachable {
            endpoint: config.endpoint.url.clone(),
            reason: format!("cannot create a poller: {e}"),
        })?;
        let now = Instant::now();
        // Backoff jitter only: the generator's own seeding (time of day, thread) will do.
        let client = ChainClient::new(config, CHAIN, now, fastrand::Rng::new());
        let mut bc = BlockingClient {
            lp,
            client,
            backlog: VecDeque::new(),
        };
        loop {
            bc.turn(None)?;
            while let Some(o) = bc.client.poll_output() {
                match o {
                    ClientOutput::Connected => return Ok(bc),
                    ClientOutput::Failed(e) => return Err(e),
                    other => bc.backlog.push_back(other),
                }
            }
        }
    }

    /// The underlying client.
    pub fn client(&mut self) -> &mut ChainClient {
        &mut self.client
    }

    /// Runs one loop turn: waits for readiness or the next deadline (at most `max_wait`).
    pub fn turn(&mut self, max_wait: Option<Duration>) -> Result<(), ChainError> {
        let until = max_wait.map(|m| Instant::now() + m);
        self.lp
            .turn(&mut self.client, until)
            .map_err(|e| ChainError::Disconnected(format!("poll failed: {e}")))?;
        Ok(())
    }

    /// Calls `method` and waits for the answer (or the call timeout).
    pub fn call(&mut self, method: &str, params: Value) -> Result<Value, ChainError> {
        let id = self
            .client
            .call(self.lp.registry(), method, &params, Instant::now());
        loop {
            while let Some(o) = self.client.poll_output() {
                match o {
                    ClientOutput::Response { id: got, result } if got == id => return result,
                    ClientOutput::Failed(e) => return Err(e),
                    other => self.backlog.push_back(other),
                }
            }
            self.turn(None)?;
        }
    }

    /// Keeps the loop running (answering pings, collecting notifications) for `d`; the
    /// waiting is the poll timeout, not a sleep.
    pub fn pause(&mut self, d: Duration) -> Result<(), ChainError> {
        let end = Instant::now() + d;
        loop {
            let now = Instant::now();
            if now >= end {
                return Ok(());
            }
            self.turn(Some(end - now))?;
            while let Some(o) = self.client.poll_output() {
                match o {
                    ClientOutput::Failed(e) => return Err(e),
                    other => self.backlog.push_back(other),
                }
            }
        }
    }

    /// `eth_call` of `data` on `to` at the latest block; returns the return data.
    pub fn eth_call(&mut self, to: Address, data: &[u8]) -> Result<Bytes, ChainError> {
        let v = self.call(
            "eth_call",
            serde_json::json!([{"to": to, "data": Bytes::copy_from_slice(data)}, "latest"]),
        )?;
        v.as_str()
            .and_then(|s| s.parse::<Bytes>().ok())
            .ok_or_else(|| ChainError::BadResponse {
                method: "eth_call".into(),
                reason: format!("{v} is not hex data"),
            })
    }

    /// Outputs that arrived while waiting for answers (heads, logs, responses to other calls).
    pub fn take_backlog(&mut self) -> VecDeque<ClientOutput> {
        std::mem::take(&mut self.backlog)
    }

    /// The node's chain id.
    pub fn chain_id(&mut self) -> Result<u64, ChainError> {
        let v = self.call("eth_chainId", Value::Array(vec![]))?;
        quantity_result("eth_chainId", &v)
    }

    /// The current block number.
    pub fn block_number(&mut self) -> Result<u64, ChainError> {
        let v = self.call("eth_blockNumber", Value::Array(vec![]))?;
        quantity_result("eth_blockNumber", &v)
    }

    /// Fails with [`ChainError::NoContract`] unless `address` holds contract code.
    pub fn check_code(&mut self, address: Address) -> Result<(), ChainError> {
        let code = self.call("eth_getCode", serde_json::json!([address, "latest"]))?;
        match code.as_str() {
            Some("0x") | Some("") => Err(ChainError::NoContract { address }),
            Some(_) => Ok(()),
            None => Err(ChainError::BadResponse {
                method: "eth_getCode".into(),
                reason: format!("{code} is not a hex string"),
            }),
        }
    }

    /// Verifies the provider and finds the Marketplace: the chain id must equal
    /// `expected_chain_id` when given; the Marketplace is `configured`, else the known
    /// deployment of the node's chain ([`ChainError::UnknownChain`] when there is none); it
    /// must hold contract code. Returns the chain id and the Marketplace address.
    pub fn verify(
        &mut self,
        expected_chain_id: Option<u64>,
        configured: Option<Address>,
    ) -> Result<(u64, Address), ChainError> {
        let actual = self.chain_id()?;
        if let Some(expected) = expected_chain_id {
            if expected != actual {
                return Err(ChainError::WrongChain { expected, actual });
            }
        }
        let marketplace = match configured {
            Some(a) => a,
            None => super::settings::known_marketplace(actual)
                .ok_or(ChainError::UnknownChain { chain_id: actual })?,
        };
        self.check_code(marketplace)?;
        Ok((actual, marketplace))
    }
}

impl Drop for BlockingClient {
    fn drop(&mut self) {
        self.client.shutdown(self.lp.registry());
    }
}

/// Parses a quantity result.
pub fn quantity_result(method: &str, v: &Value) -> Result<u64, ChainError> {
    v.as_str()
        .ok_or_else(|| format!("{v} is not a string"))
        .and_then(parse_quantity)
        .map_err(|reason| ChainError::BadResponse {
            method: method.to_string(),
            reason,
        })
}
