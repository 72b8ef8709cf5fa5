//! A small HTTP/1.1 server that lives inside the node's one `mio` loop: no threads, no
//! blocking I/O, and nothing a client sends can make it panic or stall the loop.
//!
//! [`Server`] owns a listening socket and up to [`Limits::max_connections`] connections, each
//! registered with the caller's [`Registry`] under its own [`Token`]. The driver feeds it
//! readiness ([`Server::on_ready`]) and the passing of time ([`Server::on_timer`], always with
//! an explicit `now`), takes complete requests out with [`Server::poll_request`] and hands
//! answers back with [`Server::respond`]. It knows no routes and no JSON: the router is the
//! caller's.
//!
//! # Driving it
//!
//! ```text
//! loop {
//!     let timeout = if server.has_pending_work() { Some(Duration::ZERO) }
//!                   else { server.next_deadline().map(|d| d.saturating_duration_since(now)) };
//!     poll.poll(&mut events, timeout)?;          // min'd with the loop's other deadlines
//!     for ev in &events {
//!         if server.owns(ev.token()) {
//!             let readable = ev.is_readable() || ev.is_read_closed() || ev.is_error();
//!             let writable = ev.is_writable() || ev.is_write_closed();
//!             server.on_ready(registry, ev.token(), readable, writable, Instant::now());
//!         }
//!     }
//!     server.on_timer(registry, Instant::now());  // every turn: timeouts and continuations
//!     while let Some((id, request)) = server.poll_request() {
//!         server.respond(registry, id, route(&request), Instant::now());
//!     }
//! }
//! ```
//!
//! mio is edge-triggered: a connection is read until `WouldBlock`, except that one call reads
//! at most [`Limits::read_budget`] bytes from it, so that one fast client cannot hold the
//! loop. A connection cut short that way is remembered: [`Server::has_pending_work`] is true
//! and the next [`Server::on_timer`] reads on (the driver polls with a zero timeout
//! meanwhile). Writes go until `WouldBlock`, and WRITABLE interest is registered only while
//! output is pending, as in mio's `tcp_server` example.
//!
//! # One request at a time
//!
//! A connection has at most one request out with the router. Bytes that follow it
//! (pipelined requests) are buffered, up to `max_head_bytes + max_body_bytes`, but not parsed
//! until [`Server::respond`] answered it; then the next buffered request is parsed. This keeps
//! responses in request order without any bookkeeping, bounds the memory a connection can
//! hold, and costs nothing for the operator's tools, which send one request and wait.
//!
//! # What it accepts
//!
//! HTTP/1.0 and 1.1, keep-alive by default for 1.1 (`Connection: close` or HTTP/1.0 without
//! `Connection: keep-alive` closes after the response). Bodies by `Content-Length` only:
//! `Transfer-Encoding` is answered 501, a body over [`Limits::max_body_bytes`] 413 (it is not
//! read), a bad or conflicting length 400; `Expect: 100-continue` with an acceptable length
//! gets `100 Continue` (curl sends it for bodies over 1 KiB). A malformed head is answered
//! 400 naming the problem, a head over [`Limits::max_head_bytes`] or with more than
//! [`Limits::max_headers`] headers 431; each of these closes the connection after the answer.
//!
//! Timeouts (all measured against the `now` passed in): a head not complete within
//! `head_timeout` of the connection opening, or of its first byte on a kept-alive
//! connection, and a body not complete within `body_timeout` of its head, get a best-effort
//! 408 and the connection is closed; a kept-alive connection that sends nothing for
//! `idle_timeout` and a response not written within `write_timeout` are closed silently.
//! While the router holds a request, no timeout runs for it.
//!
//! At `max_connections`, a new connection is sent a best-effort 503 (one non-blocking write)
//! and closed; it never takes a slot. End of stream, a reset or any I/O error closes just
//! that connection; an answer for a connection that is gone is dropped.
use std::collections::VecDeque;
use std::fmt::Write as _;
use std::io::{self, Read, Write};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use mio::net::{TcpListener, TcpStream};
use mio::{Interest, Registry, Token};

/// How much the server lets clients take. [`Limits::default`] suits the operator's API.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// Connections held open at once; one more is answered 503 and closed.
    pub max_connections: usize,
    /// Largest request line plus headers, in bytes (431 above).
    pub max_head_bytes: usize,
    /// Most headers in one request (431 above).
    pub max_headers: usize,
    /// Largest `Content-Length` accepted (413 above).
    pub max_body_bytes: usize,
    /// Time from a connection's opening (or a kept-alive one's first byte) to a complete head.
    pub head_timeout: Duration,
    /// Time from a complete head to a complete body.
    pub body_timeout: Duration,
    /// Time a kept-alive connection may wait, silent, for its next request.
    pub idle_timeout: Duration,
    /// Time for a response (or an error answer) to be written out.
    pub write_timeout: Duration,
    /// Bytes read from one connection in one call, at most (at least 1 is used).
    pub read_budget: usize,
}

impl Default for Limits {
    /// 64 connections, 8 KiB head, 32 headers, 1 MiB body, 10 s for a head and for a body,
    /// 60 s idle keep-alive, 30 s to write a response, 64 KiB read per connection per call.
    fn default() -> Limits {
        Limits {
            max_connections: 64,
            max_head_bytes: 8 * 1024,
            max_headers: 32,
            max_body_bytes: 1024 * 1024,
            head_timeout: Duration::from_secs(10),
            body_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60),
            write_timeout: Duration::from_secs(30),
            read_budget: 64 * 1024,
        }
    }
}

/// A complete request, as the router sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    /// The method as sent (`GET`, `POST`, `HEAD`, ...; case is kept).
    pub method: String,
    /// The request target up to any `?`, raw (not percent-decoded).
    pub path: String,
    /// The request target after the first `?`, raw; empty when there is none.
    pub query: String,
    /// The headers in order, names lowercased, values trimmed (non-UTF-8 bytes replaced).
    pub headers: Vec<(String, String)>,
    /// The body (`Content-Length` bytes; empty without one).
    pub body: Vec<u8>,
}

impl Request {
    /// The first header called `name` (any case).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The first query parameter called `name`, percent-decoded with `+` as a space (invalid
    /// escapes are kept as they are, invalid UTF-8 is replaced). `?a` gives `a` as "".
    pub fn query_param(&self, name: &str) -> Option<String> {
        self.query
            .split('&')
            .filter(|pair| !pair.is_empty())
            .map(|pair| pair.split_once('=').unwrap_or((pair, "")))
            .find(|(k, _)| form_decode(k) == name)
            .map(|(_, v)| form_decode(v))
    }
}

/// Decodes one `application/x-www-form-urlencoded` component.
fn form_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' => match (
                bytes.get(i + 1).and_then(hex),
                bytes.get(i + 2).and_then(hex),
            ) {
                (Some(hi), Some(lo)) => {
                    out.push(hi << 4 | lo);
                    i += 2;
                }
                _ => out.push(b'%'),
            },
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn hex(b: &u8) -> Option<u8> {
    (*b as char).to_digit(16).map(|d| d as u8)
}

/// The `Server` header of every answer (unless the response names its own): the CLI's client
/// subcommands tell a codex node from another server on the port by it.
pub const SERVER: &str = concat!("codex/", env!("CARGO_PKG_VERSION"));

/// An answer for [`Server::respond`]. The server adds `Content-Length` and `Connection`
/// itself (and ignores those, and `Transfer-Encoding`, if given here); a `Connection: close`
/// given here closes the connection after this response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    /// The status code (100..=999; anything else is sent as 500).
    pub status: u16,
    /// Extra headers, in order. A header whose name or value could break the framing (CR,
    /// LF, NUL, or a name that is not a token) is dropped.
    pub headers: Vec<(String, String)>,
    /// The body; not sent for 204, 1xx or a `HEAD` request (whose `Content-Length` still
    /// says how long it is).
    pub body: Vec<u8>,
}

impl Response {
    /// An empty response with this status.
    pub fn new(status: u16) -> Response {
        Response {
            status,
            headers: Vec::new(),
            body: Vec::new(),
        }
    }

    /// A `text/plain; charset=utf-8` response.
    pub fn text(status: u16, msg: impl Into<String>) -> Response {
        Response {
            status,
            headers: vec![("Content-Type".into(), "text/plain; charset=utf-8".into())],
            body: msg.into().into_bytes(),
        }
    }

    /// An `application/json` response whose body is already serialized.
    pub fn json(status: u16, body: String) -> Response {
        Response {
            status,
            headers: vec![("Content-Type".into(), "application/json".into())],
            body: body.into_bytes(),
        }
    }

    /// Adds a header.
    pub fn header(mut self, name: impl Into<String>, value: impl Into<String>) -> Response {
        self.headers.push((name.into(), value.into()));
        self
    }
}

/// The standard reason phrase for the codes the API uses; "Unknown" for others.
pub fn reason_phrase(status: u16) -> &'static str {
    match status {
        100 => "Continue",
        200 => "OK",
        201 => "Created",
        202 => "Accepted",
        204 => "No Content",
        301 => "Moved Permanently",
        302 => "Found",
        304 => "Not Modified",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        409 => "Conflict",
        411 => "Length Required",
        413 => "Content Too Large",
        415 => "Unsupported Media Type",
        422 => "Unprocessable Content",
        429 => "Too Many Requests",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        501 => "Not Implemented",
        503 => "Service Unavailable",
        _ => "Unknown",
    }
}

/// Names one request handed out by [`Server::poll_request`], for [`Server::respond`]: its
/// connection's slot and a generation drawn afresh for every request. An id whose request was
/// answered, or whose connection closed (its slot perhaps reused since), matches nothing.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
pub struct ConnId {
    slot: usize,
    generation: u64,
}

/// The server. See the module docs.
pub struct Server {
    listener: TcpListener,
    local_addr: SocketAddr,
    token_base: usize,
    limits: Limits,
    slots: Vec<Option<Conn>>,
    open: usize,
    /// The generation the next request gets.
    next_generation: u64,
    /// Complete requests in arrival order; entries of closed connections are skipped.
    ready: VecDeque<(ConnId, Request)>,
    /// After an accept error other than `WouldBlock` (out of file descriptors, say), when to
    /// try again: the listener stays readable and edge-triggered mio would not tell us.
    accept_retry: Option<Instant>,
    scratch: Box<[u8]>,
}

/// Why a connection ends (for the debug log).
struct Close(&'static str);

type Step = Result<(), Close>;

const ACCEPT_RETRY: Duration = Duration::from_millis(500);
const SCRATCH_BYTES: usize = 16 * 1024;

impl Server {
    /// Listens on `addr` (port 0 picks one: see [`Server::local_addr`]). The listener is
    /// registered as `Token(token_base)`, connections as `Token(token_base + 1)` to
    /// `Token(token_base + max_connections)`; the caller keeps that range free.
    pub fn bind(
        addr: SocketAddr,
        registry: &Registry,
        token_base: usize,
        limits: Limits,
    ) -> io::Result<Server> {
        if token_base.checked_add(limits.max_connections).is_none() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "HTTP token range overflows",
            ));
        }
        let mut listener = TcpListener::bind(addr)?;
        let local_addr = listener.local_addr()?;
        registry.register(&mut listener, Token(token_base), Interest::READABLE)?;
        let slots = (0..limits.max_connections).map(|_| None).collect();
        Ok(Server {
            listener,
            local_addr,
            token_base,
            limits,
            slots,
            open: 0,
            next_generation: 1,
            ready: VecDeque::new(),
            accept_retry: None,
            scratch: vec![0; SCRATCH_BYTES].into_boxed_slice(),
        })
    }

    /// The address listened on.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Whether `token` is the listener's or one of the connections'.
    pub fn owns(&self, token: Token) -> bool {
        token.0 >= self.token_base && token.0 - self.token_base <= self.limits.max_connections
    }

    /// Handles readiness of one of [`Server::owns`]'s tokens: accepts on the listener, reads
    /// and writes on a connection. Pass `readable` for read-closed and error events too (a
    /// read then finds out what happened).
    pub fn on_ready(
        &mut self,
        registry: &Registry,
        token: Token,
        readable: bool,
        writable: bool,
        now: Instant,
    ) {
        if token.0 == self.token_base {
            self.accept(registry, now);
            return;
        }
        let Some(slot) = self.slot_of(token) else {
            return;
        };
        let Some(conn) = self.slots[slot].as_mut() else {
            return; // closed earlier in this batch of events
        };
        let mut step = Ok(());
        if writable && conn.out.is_some() {
            step = conn.flush(registry, now);
        }
        if step.is_ok() && readable {
            step = conn.read(&mut self.scratch, &self.limits).and_then(|()| {
                conn.advance(
                    registry,
                    &self.limits,
                    slot,
                    &mut self.next_generation,
                    &mut self.ready,
                    now,
                )
            });
        }
        if let Err(why) = step {
            self.close(registry, slot, why);
        }
    }

    /// The next complete request, in arrival order. Answer it with [`Server::respond`]; its
    /// connection reads nothing further until then.
    pub fn poll_request(&mut self) -> Option<(ConnId, Request)> {
        while let Some((id, request)) = self.ready.pop_front() {
            if self.awaiting(id) {
                return Some((id, request));
            }
        }
        None
    }

    /// Answers the request handed out with `conn` and starts on the connection's next
    /// buffered request, if any. Does nothing if the connection has closed (or `conn` was
    /// answered already). A 1xx status is not meant here: it is written, without a body, as
    /// if it were the answer.
    pub fn respond(&mut self, registry: &Registry, conn: ConnId, response: Response, now: Instant) {
        if !self.awaiting(conn) {
            log::debug!(
                "http: dropped a {} for a request that awaits no answer",
                response.status
            );
            return;
        }
        let slot = conn.slot;
        let Some(c) = self.slots[slot].as_mut() else {
            return;
        };
        let Phase::Handling {
            keep_alive,
            head_request,
        } = c.phase
        else {
            return;
        };
        let keep_alive = keep_alive && !asks_close(&response.headers);
        let bytes = encode(&response, keep_alive, head_request);
        c.phase = if keep_alive {
            Phase::Idle { since: now }
        } else {
            Phase::Closing
        };
        let step = c.send(registry, &bytes, now).and_then(|()| {
            c.advance(
                registry,
                &self.limits,
                slot,
                &mut self.next_generation,
                &mut self.ready,
                now,
            )
        });
        if let Err(why) = step {
            self.close(registry, slot, why);
        }
    }

    /// Enforces the timeouts that are due at `now` and reads on from connections cut short
    /// by the read budget. Call it after every turn of the loop.
    pub fn on_timer(&mut self, registry: &Registry, now: Instant) {
        if self.accept_retry.is_some_and(|at| at <= now) {
            self.accept_retry = None;
            self.accept(registry, now);
        }
        for slot in 0..self.slots.len() {
            let Some(conn) = self.slots[slot].as_mut() else {
                continue;
            };
            let step = match conn.deadline(&self.limits) {
                Some((at, expiry)) if at <= now => match expiry {
                    Expiry::Silent(why) => Err(Close(why)),
                    Expiry::Answer(why) => {
                        // Best effort: one try at writing the 408, then close regardless.
                        let _ = conn.fail(registry, Response::text(408, "request timeout"), now);
                        Err(Close(why))
                    }
                },
                _ if conn.unread && conn.can_read(&self.limits) => {
                    conn.read(&mut self.scratch, &self.limits).and_then(|()| {
                        conn.advance(
                            registry,
                            &self.limits,
                            slot,
                            &mut self.next_generation,
                            &mut self.ready,
                            now,
                        )
                    })
                }
                _ => Ok(()),
            };
            if let Err(why) = step {
                self.close(registry, slot, why);
            }
        }
    }

    /// The earliest instant at which [`Server::on_timer`] has a timeout to enforce.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.conns()
            .filter_map(|c| c.deadline(&self.limits).map(|(at, _)| at))
            .chain(self.accept_retry)
            .min()
    }

    /// Whether some connection stopped reading because of the read budget and must be
    /// continued by [`Server::on_timer`] without waiting for readiness (poll with a zero
    /// timeout then).
    pub fn has_pending_work(&self) -> bool {
        self.conns().any(|c| c.unread && c.can_read(&self.limits))
    }

    /// Connections open now (not counting ones turned away with 503).
    pub fn open_connections(&self) -> usize {
        self.open
    }

    /// Bytes buffered over all connections: input not yet parsed, output not yet written.
    #[cfg(test)]
    fn buffered(&self) -> (usize, usize) {
        self.conns().fold((0, 0), |(i, o), c| {
            let out = c
                .out
                .as_ref()
                .map_or(0, |out| out.bytes.len() - out.written);
            (i + c.input.len(), o + out)
        })
    }

    fn conns(&self) -> impl Iterator<Item = &Conn> {
        self.slots.iter().flatten()
    }

    fn slot_of(&self, token: Token) -> Option<usize> {
        let slot = token.0.checked_sub(self.token_base)?.checked_sub(1)?;
        (slot < self.slots.len()).then_some(slot)
    }

    /// Whether `id` names an open connection whose request is out with the router.
    fn awaiting(&self, id: ConnId) -> bool {
        self.slots.get(id.slot).is_some_and(|s| {
            s.as_ref().is_some_and(|c| {
                c.request == id.generation && matches!(c.phase, Phase::Handling { .. })
            })
        })
    }

    fn accept(&mut self, registry: &Registry, now: Instant) {
        loop {
            let (mut stream, peer) = match self.listener.accept() {
                Ok(accepted) => accepted,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::Interrupted | io::ErrorKind::ConnectionAborted
                    ) =>
                {
                    continue
                }
                Err(e) => {
                    log::warn!("http: accept failed: {e}; trying again shortly");
                    self.accept_retry = Some(now + ACCEPT_RETRY);
                    return;
                }
            };
            let Some(slot) = self.slots.iter().position(Option::is_none) else {
                log::debug!("http: {peer} turned away: {} connections open", self.open);
                turn_away(&mut stream, &mut self.scratch);
                continue;
            };
            let token = Token(self.token_base + 1 + slot);
            if let Err(e) = registry.register(&mut stream, token, Interest::READABLE) {
                log::warn!("http: cannot register a connection from {peer}: {e}");
                continue;
            }
            self.slots[slot] = Some(Conn {
                stream,
                token,
                input: Vec::new(),
                out: None,
                writable: false,
                // Data may have come before registration: read once without an event.
                unread: true,
                phase: Phase::Head { since: now },
                request: 0,
            });
            self.open += 1;
        }
    }

    fn close(&mut self, registry: &Registry, slot: usize, why: Close) {
        if let Some(mut conn) = self.slots[slot].take() {
            log::debug!("http: connection {} closed: {}", conn.token.0, why.0);
            let _ = registry.deregister(&mut conn.stream);
            self.open -= 1;
        }
    }
}

/// One best-effort write of a 503 to a connection that gets no slot; then it is dropped.
fn turn_away(stream: &mut TcpStream, scratch: &mut [u8]) {
    let bytes = encode(&Response::text(503, "too many connections"), false, false);
    let _ = stream.write(&bytes);
    // Reading what the client already sent makes the close a FIN rather than a reset, which
    // would discard the 503 before the client reads it.
    let _ = stream.read(scratch);
}

/// Where a connection is in its current exchange. Each state carries what it needs.
enum Phase {
    /// Kept alive after a response, waiting for the first byte of the next request.
    Idle { since: Instant },
    /// Reading a request line and headers, since this instant.
    Head { since: Instant },
    /// Reading `length` body bytes for this head, since this instant.
    Body {
        head: Head,
        length: usize,
        since: Instant,
    },
    /// A request is out with the router (or queued for it).
    Handling {
        keep_alive: bool,
        head_request: bool,
    },
    /// The last response is being written; then the connection closes. Input is discarded.
    Closing,
}

/// A parsed head waiting for its body.
struct Head {
    method: String,
    path: String,
    query: String,
    headers: Vec<(String, String)>,
    keep_alive: bool,
}

/// Bytes being written and since when.
struct Outgoing {
    bytes: Vec<u8>,
    written: usize,
    since: Instant,
}

enum Expiry {
    /// Close without a word (idle keep-alive, a write that does not finish).
    Silent(&'static str),
    /// Send 408 (best effort) and close.
    Answer(&'static str),
}

struct Conn {
    stream: TcpStream,
    token: Token,
    /// Bytes read and not yet consumed by the parser.
    input: Vec<u8>,
    out: Option<Outgoing>,
    /// WRITABLE interest is registered (only while `out` is pending).
    writable: bool,
    /// The last read stopped before `WouldBlock` (read budget or a full input buffer), so
    /// no readiness event will come for the bytes left in the socket.
    unread: bool,
    phase: Phase,
    /// The generation of the request last handed out (0 before the first).
    request: u64,
}

impl Conn {
    /// Most input buffered: a whole request, head and body, at the limits.
    fn input_cap(limits: &Limits) -> usize {
        limits.max_head_bytes.saturating_add(limits.max_body_bytes)
    }

    fn can_read(&self, limits: &Limits) -> bool {
        matches!(self.phase, Phase::Closing) || self.input.len() < Conn::input_cap(limits)
    }

    /// Reads until `WouldBlock`, the read budget or a full input buffer.
    fn read(&mut self, scratch: &mut [u8], limits: &Limits) -> Step {
        let mut budget = limits.read_budget.max(1);
        let discard = matches!(self.phase, Phase::Closing);
        loop {
            let room = if discard {
                scratch.len()
            } else {
                Conn::input_cap(limits).saturating_sub(self.input.len())
            };
            if budget == 0 || room == 0 {
                self.unread = true;
                return Ok(());
            }
            let n = scratch.len().min(budget).min(room);
            match self.stream.read(&mut scratch[..n]) {
                Ok(0) => return Err(Close("end of stream")),
                Ok(k) => {
                    budget -= k;
                    if !discard {
                        self.input.extend_from_slice(&scratch[..k]);
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    self.unread = false;
                    return Ok(());
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    log::debug!("http: connection {}: read: {e}", self.token.0);
                    return Err(Close("read error"));
                }
            }
        }
    }

    /// Queues `bytes` and writes what the socket takes.
    fn send(&mut self, registry: &Registry, bytes: &[u8], now: Instant) -> Step {
        match &mut self.out {
            Some(out) => out.bytes.extend_from_slice(bytes),
            None => {
                self.out = Some(Outgoing {
                    bytes: bytes.to_vec(),
                    written: 0,
                    since: now,
                })
            }
        }
        self.flush(registry, now)
    }

    /// Writes until `WouldBlock` or done; keeps WRITABLE interest exactly while output waits.
    fn flush(&mut self, registry: &Registry, now: Instant) -> Step {
        if let Some(out) = &mut self.out {
            while out.written < out.bytes.len() {
                match self.stream.write(&out.bytes[out.written..]) {
                    Ok(0) => return Err(Close("write returned 0")),
                    Ok(n) => out.written += n,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                        if !self.writable {
                            registry
                                .reregister(
                                    &mut self.stream,
                                    self.token,
                                    Interest::READABLE | Interest::WRITABLE,
                                )
                                .map_err(|_| Close("reregister failed"))?;
                            self.writable = true;
                        }
                        return Ok(());
                    }
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => {
                        log::debug!("http: connection {}: write: {e}", self.token.0);
                        return Err(Close("write error"));
                    }
                }
            }
            self.out = None;
        }
        if self.writable {
            registry
                .reregister(&mut self.stream, self.token, Interest::READABLE)
                .map_err(|_| Close("reregister failed"))?;
            self.writable = false;
        }
        match &mut self.phase {
            Phase::Closing => return Err(Close("last response written")),
            // The wait for the next request starts once the last response is out.
            Phase::Idle { since } | Phase::Head { since } => *since = now,
            _ => {}
        }
        Ok(())
    }

    /// Answers with an error (or the 408) and closes once it is written.
    fn fail(&mut self, registry: &Registry, response: Response, now: Instant) -> Step {
        log::debug!(
            "http: connection {}: {} {}",
            self.token.0,
            response.status,
            String::from_utf8_lossy(&response.body)
        );
        let bytes = encode(&response, false, false);
        self.phase = Phase::Closing;
        self.input = Vec::new();
        self.send(registry, &bytes, now)
    }

    /// When the current state times out, and how.
    fn deadline(&self, limits: &Limits) -> Option<(Instant, Expiry)> {
        // A timeout too long to add up (Duration::MAX, say) never expires.
        let (since, timeout, expiry) = match (&self.out, &self.phase) {
            (Some(out), _) => (
                out.since,
                limits.write_timeout,
                Expiry::Silent("write timeout"),
            ),
            (None, Phase::Idle { since }) => {
                (*since, limits.idle_timeout, Expiry::Silent("idle timeout"))
            }
            (None, Phase::Head { since }) => {
                (*since, limits.head_timeout, Expiry::Answer("head timeout"))
            }
            (None, Phase::Body { since, .. }) => {
                (*since, limits.body_timeout, Expiry::Answer("body timeout"))
            }
            (None, Phase::Handling { .. } | Phase::Closing) => return None,
        };
        Some((since.checked_add(timeout)?, expiry))
    }

    /// Parses what the input holds as far as the state allows: a head, a body, and once a
    /// request is complete, nothing more until it is answered.
    fn advance(
        &mut self,
        registry: &Registry,
        limits: &Limits,
        slot: usize,
        next_generation: &mut u64,
        ready: &mut VecDeque<(ConnId, Request)>,
        now: Instant,
    ) -> Step {
        loop {
            // Each arm puts back the state it leaves the connection in.
            match std::mem::replace(&mut self.phase, Phase::Closing) {
                Phase::Idle { .. } if !self.input.is_empty() => {
                    self.phase = Phase::Head { since: now };
                }
                Phase::Head { since } => match parse_head(&self.input, limits) {
                    Parsed::Partial => {
                        self.phase = Phase::Head { since };
                        return Ok(());
                    }
                    Parsed::Reject(response) => return self.fail(registry, response, now),
                    Parsed::Complete {
                        head,
                        consumed,
                        length,
                        expect_continue,
                    } => {
                        self.input.drain(..consumed);
                        let body_missing = self.input.len() < length;
                        self.phase = Phase::Body {
                            head,
                            length,
                            since: now,
                        };
                        if expect_continue && body_missing {
                            self.send(registry, b"HTTP/1.1 100 Continue\r\n\r\n", now)?;
                        }
                    }
                },
                Phase::Body { head, length, .. } if self.input.len() >= length => {
                    let body: Vec<u8> = self.input.drain(..length).collect();
                    self.phase = Phase::Handling {
                        keep_alive: head.keep_alive,
                        head_request: head.method == "HEAD",
                    };
                    self.request = *next_generation;
                    *next_generation += 1;
                    let id = ConnId {
                        slot,
                        generation: self.request,
                    };
                    ready.push_back((
                        id,
                        Request {
                            method: head.method,
                            path: head.path,
                            query: head.query,
                            headers: head.headers,
                            body,
                        },
                    ));
                    return Ok(());
                }
                waiting => {
                    self.phase = waiting;
                    return Ok(());
                }
            }
        }
    }
}

/// The outcome of parsing the start of the input as a request head.
enum Parsed {
    /// More bytes are needed.
    Partial,
    /// The head is complete and acceptable; `consumed` bytes make it up.
    Complete {
        head: Head,
        consumed: usize,
        length: usize,
        expect_continue: bool,
    },
    /// Answer this and close.
    Reject(Response),
}

fn parse_head(input: &[u8], limits: &Limits) -> Parsed {
    let mut slots = vec![httparse::EMPTY_HEADER; limits.max_headers];
    let mut req = httparse::Request::new(&mut slots);
    let too_large = || {
        Parsed::Reject(Response::text(
            431,
            format!("request head larger than {} bytes", limits.max_head_bytes),
        ))
    };
    let consumed = match req.parse(input) {
        Ok(httparse::Status::Partial) if input.len() > limits.max_head_bytes => return too_large(),
        Ok(httparse::Status::Partial) => return Parsed::Partial,
        Ok(httparse::Status::Complete(n)) if n > limits.max_head_bytes => return too_large(),
        Ok(httparse::Status::Complete(n)) => n,
        Err(httparse::Error::TooManyHeaders) => {
            return Parsed::Reject(Response::text(
                431,
                format!("more than {} headers", limits.max_headers),
            ))
        }
        Err(e) => return Parsed::Reject(Response::text(400, format!("malformed request: {e}"))),
    };
    // A complete parse sets all three.
    let (Some(method), Some(target), Some(version)) = (req.method, req.path, req.version) else {
        return Parsed::Reject(Response::text(400, "malformed request line"));
    };
    let headers: Vec<(String, String)> = req
        .headers
        .iter()
        .map(|h| {
            (
                h.name.to_ascii_lowercase(),
                String::from_utf8_lossy(h.value).trim().to_string(),
            )
        })
        .collect();
    let values = |name: &'static str| {
        headers
            .iter()
            .filter(move |(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    };
    if values("transfer-encoding").next().is_some() {
        return Parsed::Reject(Response::text(
            501,
            "chunked request bodies are not supported",
        ));
    }
    let length = match content_length(values("content-length")) {
        Ok(n) => n,
        Err(msg) => return Parsed::Reject(Response::text(400, msg)),
    };
    if length > limits.max_body_bytes as u64 {
        return Parsed::Reject(Response::text(
            413,
            format!("request body larger than {} bytes", limits.max_body_bytes),
        ));
    }
    let has_token = |name: &'static str, token: &str| {
        values(name).any(|v| v.split(',').any(|t| t.trim().eq_ignore_ascii_case(token)))
    };
    let keep_alive = if version == 0 {
        has_token("connection", "keep-alive")
    } else {
        !has_token("connection", "close")
    };
    // HTTP/1.0 clients do not know 100 Continue (RFC 9110 §10.1.1).
    let expect_continue = version >= 1 && length > 0 && has_token("expect", "100-continue");
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    Parsed::Complete {
        head: Head {
            method: method.to_string(),
            path: path.to_string(),
            query: query.to_string(),
            headers,
            keep_alive,
        },
        consumed,
        length: length as usize,
        expect_continue,
    }
}

/// The first request in `input`, head and body, parsed as a connection parses it, and the
/// bytes it takes: `Ok(None)` while more are needed, `Err` with the answer a refused head
/// gets. The server reads through its connections; this is the decoder fuzz harness's way in.
#[doc(hidden)]
pub fn parse_request(input: &[u8], limits: &Limits) -> Result<Option<(Request, usize)>, Response> {
    match parse_head(input, limits) {
        Parsed::Partial => Ok(None),
        Parsed::Reject(response) => Err(response),
        Parsed::Complete {
            head,
            consumed,
            length,
            ..
        } => {
            let Some(end) = consumed.checked_add(length) else {
                return Ok(None);
            };
            let Some(body) = input.get(consumed..end) else {
                return Ok(None);
            };
            Ok(Some((
                Request {
                    method: head.method,
                    path: head.path,
                    query: head.query,
                    headers: head.headers,
                    body: body.to_vec(),
                },
                end,
            )))
        }
    }
}

/// The body length the `Content-Length` headers agree on (0 without any). Repeated equal
/// values, in separate headers or a list, are accepted (RFC 9110 §8.6).
fn content_length<'a>(values: impl Iterator<Item = &'a str>) -> Result<u64, &'static str> {
    let mut length = None;
    for part in values.flat_map(|v| v.split(',')) {
        let part = part.trim();
        if part.is_empty() || !part.bytes().all(|b| b.is_ascii_digit()) {
            return Err("invalid Content-Length");
        }
        let n: u64 = part.parse().map_err(|_| "invalid Content-Length")?;
        if length.is_some_and(|l| l != n) {
            return Err("conflicting Content-Length headers");
        }
        length = Some(n);
    }
    Ok(length.unwrap_or(0))
}

/// Whether the router asked for the connection to close after this response.
fn asks_close(headers: &[(String, String)]) -> bool {
    headers.iter().any(|(k, v)| {
        k.eq_ignore_ascii_case("connection")
            && v.split(',').any(|t| t.trim().eq_ignore_ascii_case("close"))
    })
}

fn is_token(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

/// The response's bytes on the wire.
fn encode(response: &Response, keep_alive: bool, head_request: bool) -> Vec<u8> {
    let mut status = response.status;
    if !(100..=999).contains(&status) {
        log::warn!("http: status {status} is not a status code; sending 500");
        status = 500;
    }
    let bodiless = status == 204 || status < 200;
    let mut head = format!("HTTP/1.1 {status} {}\r\n", reason_phrase(status));
    for (name, value) in &response.headers {
        let framing = ["content-length", "connection", "transfer-encoding"]
            .iter()
            .any(|f| name.eq_ignore_ascii_case(f));
        if framing {
            continue;
        }
        if !is_token(name) || value.bytes().any(|b| matches!(b, b'\r' | b'\n' | 0)) {
            log::warn!("http: dropped a response header that would break framing: {name:?}");
            continue;
        }
        let _ = write!(head, "{name}: {value}\r\n");
    }
    if !response
        .headers
        .iter()
        .any(|(n, _)| n.eq_ignore_ascii_case("server"))
    {
        let _ = write!(head, "Server: {SERVER}\r\n");
    }
    if !bodiless {
        let _ = write!(head, "Content-Length: {}\r\n", response.body.len());
    }
    if status >= 200 {
        let connection = if keep_alive { "keep-alive" } else { "close" };
        let _ = write!(head, "Connection: {connection}\r\n");
    }
    head.push_str("\r\n");
    let mut bytes = head.into_bytes();
    if !bodiless && !head_request {
        bytes.extend_from_slice(&response.body);
    }
    bytes
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpStream as StdStream;

    use mio::{Events, Poll};

    /// How long a test waits for a condition before it fails.
    const WAIT: Duration = Duration::from_secs(5);

    type Handler = fn(&Request) -> Response;

    /// A real `mio::Poll` around a server on 127.0.0.1, turned by the test itself.
    struct Harness {
        poll: Poll,
        events: Events,
        server: Server,
        /// Answers every request at the end of a turn; `None` leaves them to the test.
        handler: Option<Handler>,
        /// Turns whose readiness handling left budget-limited input behind.
        budget_cuts: usize,
    }

    impl Harness {
        fn new(limits: Limits, handler: Option<Handler>) -> Harness {
            let poll = Poll::new().unwrap();
            let addr = "127.0.0.1:0".parse().unwrap();
            let server = Server::bind(addr, poll.registry(), 10, limits).unwrap();
            Harness {
                poll,
                events: Events::with_capacity(64),
                server,
                handler,
                budget_cuts: 0,
            }
        }

        fn connect(&self) -> Client {
            let stream = StdStream::connect(self.server.local_addr()).unwrap();
            // Non-blocking: the test thread also turns the server's loop. Any wait is a
            // condition polled with a deadline.
            stream.set_nonblocking(true).unwrap();
            Client {
                stream,
                buf: Vec::new(),
                eof: false,
            }
        }

        /// One turn as the node's driver does it.
        fn turn(&mut self) {
            let timeout = if self.server.has_pending_work() {
                Duration::ZERO
            } else {
                Duration::from_millis(5)
            };
            self.poll.poll(&mut self.events, Some(timeout)).unwrap();
            let registry = self.poll.registry();
            for ev in self.events.iter() {
                assert!(self.server.owns(ev.token()), "{:?}", ev.token());
                let readable = ev.is_readable() || ev.is_read_closed() || ev.is_error();
                let writable = ev.is_writable() || ev.is_write_closed();
                self.server
                    .on_ready(registry, ev.token(), readable, writable, Instant::now());
            }
            if self.server.has_pending_work() {
                self.budget_cuts += 1;
            }
            self.server.on_timer(registry, Instant::now());
            if let Some(handler) = self.handler {
                while let Some((id, request)) = self.server.poll_request() {
                    self.server
                        .respond(registry, id, handler(&request), Instant::now());
                }
            }
        }

        /// Turns the loop until `done` holds; fails the test after [`WAIT`].
        fn until(&mut self, what: &str, mut done: impl FnMut(&mut Harness) -> bool) {
            let deadline = Instant::now() + WAIT;
            while !done(self) {
                assert!(Instant::now() < deadline, "timed out waiting for {what}");
                self.turn();
            }
        }

        /// Turns until a request is out, which the test then answers itself.
        fn request(&mut self) -> (ConnId, Request) {
            let mut got = None;
            self.until("a request", |h| {
                got = h.server.poll_request();
                got.is_some()
            });
            got.unwrap()
        }

        fn timer(&mut self, now: Instant) {
            self.server.on_timer(self.poll.registry(), now);
        }
    }

    struct Client {
        stream: StdStream,
        buf: Vec<u8>,
        eof: bool,
    }

    #[derive(Debug)]
    struct Reply {
        status: u16,
        headers: Vec<(String, String)>,
        body: Vec<u8>,
    }

    impl Reply {
        fn header(&self, name: &str) -> Option<&str> {
            self.headers
                .iter()
                .find(|(k, _)| k.eq_ignore_ascii_case(name))
                .map(|(_, v)| v.as_str())
        }

        fn text(&self) -> &str {
            std::str::from_utf8(&self.body).unwrap()
        }
    }

    impl Client {
        /// Writes all of `bytes`, turning the server's loop whenever the socket is full.
        fn send(&mut self, h: &mut Harness, bytes: &[u8]) {
            let deadline = Instant::now() + WAIT;
            let mut sent = 0;
            while sent < bytes.len() {
                match self.stream.write(&bytes[sent..]) {
                    Ok(n) => sent += n,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                        assert!(Instant::now() < deadline, "timed out sending");
                        h.turn();
                    }
                    Err(e) => panic!("client write: {e}"),
                }
            }
        }

        /// Reads what has arrived, at most `max` bytes.
        fn fill(&mut self, max: usize) {
            let mut chunk = [0u8; 16 * 1024];
            let mut total = 0;
            while !self.eof && total < max {
                let n = chunk.len().min(max - total);
                match self.stream.read(&mut chunk[..n]) {
                    Ok(0) => self.eof = true,
                    Ok(k) => {
                        self.buf.extend_from_slice(&chunk[..k]);
                        total += k;
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                    Err(e) if e.kind() == io::ErrorKind::ConnectionReset => self.eof = true,
                    Err(e) => panic!("client read: {e}"),
                }
            }
        }

        /// A whole response at the front of the buffer, taken out.
        fn take_reply(&mut self) -> Option<Reply> {
            let mut headers = [httparse::EMPTY_HEADER; 32];
            let mut parsed = httparse::Response::new(&mut headers);
            let httparse::Status::Complete(n) = parsed.parse(&self.buf).unwrap() else {
                return None;
            };
            let status = parsed.code.unwrap();
            let headers: Vec<(String, String)> = parsed
                .headers
                .iter()
                .map(|h| {
                    let value = std::str::from_utf8(h.value).unwrap();
                    (h.name.to_ascii_lowercase(), value.to_string())
                })
                .collect();
            let length = headers
                .iter()
                .find(|(k, _)| k == "content-length")
                .map_or(0, |(_, v)| v.parse::<usize>().unwrap());
            if self.buf.len() < n + length {
                return None;
            }
            let body = self.buf[n..n + length].to_vec();
            self.buf.drain(..n + length);
            Some(Reply {
                status,
                headers,
                body,
            })
        }

        /// Turns the loop until a whole response came.
        fn reply(&mut self, h: &mut Harness) -> Reply {
            self.reply_reading(h, usize::MAX)
        }

        /// Like [`Client::reply`], reading at most `per_turn` bytes between turns.
        fn reply_reading(&mut self, h: &mut Harness, per_turn: usize) -> Reply {
            let deadline = Instant::now() + WAIT;
            loop {
                self.fill(per_turn);
                if let Some(reply) = self.take_reply() {
                    return reply;
                }
                assert!(!self.eof, "closed before a whole response: {:?}", self.buf);
                assert!(
                    Instant::now() < deadline,
                    "timed out waiting for a response"
                );
                h.turn();
            }
        }

        /// Turns the loop until the server closed this connection.
        fn wait_closed(&mut self, h: &mut Harness) {
            let deadline = Instant::now() + WAIT;
            loop {
                self.fill(usize::MAX);
                if self.eof {
                    return;
                }
                assert!(Instant::now() < deadline, "timed out waiting for the close");
                h.turn();
            }
        }

        /// Turns the loop until `needle` occurs `count` times in what arrived.
        fn until_bytes(&mut self, h: &mut Harness, needle: &[u8], count: usize) {
            let deadline = Instant::now() + WAIT;
            loop {
                self.fill(usize::MAX);
                let seen = self
                    .buf
                    .windows(needle.len())
                    .filter(|w| *w == needle)
                    .count();
                if seen >= count {
                    return;
                }
                assert!(
                    Instant::now() < deadline,
                    "timed out waiting for {needle:?}"
                );
                h.turn();
            }
        }

        /// Turns the loop a few times and reports whether anything arrived meanwhile.
        fn quiet_for_a_few_turns(&mut self, h: &mut Harness) -> bool {
            for _ in 0..5 {
                h.turn();
            }
            self.fill(usize::MAX);
            self.buf.is_empty() && !self.eof
        }
    }

    fn pattern(n: usize) -> Vec<u8> {
        (0..n).map(|i| (i % 251) as u8).collect()
    }

    /// The test router: `/big` and `/huge` are large, a body is echoed with 201, anything
    /// else says what it was asked.
    fn echo(req: &Request) -> Response {
        match req.path.as_str() {
            "/big" => Response {
                body: pattern(4 << 20),
                ..Response::new(200)
            },
            "/huge" => Response {
                body: pattern(32 << 20),
                ..Response::new(200)
            },
            "/nothing" => Response::new(204),
            _ if !req.body.is_empty() => Response {
                body: req.body.clone(),
                ..Response::new(201).header("X-Len", req.body.len().to_string())
            },
            _ => Response::text(200, format!("{} {} {}", req.method, req.path, req.query)),
        }
    }

    fn never(_: &Request) -> Response {
        panic!("the router was reached")
    }

    fn echo_server() -> Harness {
        Harness::new(Limits::default(), Some(echo))
    }

    #[test]
    fn get_round_trip() {
        let mut h = echo_server();
        let mut c = h.connect();
        c.send(&mut h, b"GET /status?x=1&y=2 HTTP/1.1\r\nHost: a\r\n\r\n");
        let reply = c.reply(&mut h);
        assert_eq!(reply.status, 200);
        assert_eq!(reply.text(), "GET /status x=1&y=2");
        assert_eq!(reply.header("content-length"), Some("19"));
        assert_eq!(reply.header("connection"), Some("keep-alive"));
        assert_eq!(
            reply.header("content-type"),
            Some("text/plain; charset=utf-8")
        );
        assert_eq!(h.server.open_connections(), 1);
    }

    #[test]
    fn keep_alive_serves_sequential_requests_on_one_connection() {
        let mut h = echo_server();
        let mut c = h.connect();
        for path in ["/one", "/two", "/three"] {
            c.send(&mut h, format!("GET {path} HTTP/1.1\r\n\r\n").as_bytes());
            let reply = c.reply(&mut h);
            assert_eq!(reply.text(), format!("GET {path} "));
            assert_eq!(h.server.open_connections(), 1);
        }
    }

    #[test]
    fn pipelined_requests_are_answered_one_at_a_time_in_order() {
        let mut h = Harness::new(Limits::default(), None);
        let mut c = h.connect();
        c.send(&mut h, b"GET /a HTTP/1.1\r\n\r\nGET /b HTTP/1.1\r\n\r\n");
        let (first, req) = h.request();
        assert_eq!(req.path, "/a");
        // The second is buffered, not parsed, until the first is answered.
        for _ in 0..5 {
            h.turn();
            assert!(h.server.poll_request().is_none());
        }
        let registry = h.poll.registry();
        h.server
            .respond(registry, first, Response::text(200, "a"), Instant::now());
        let (second, req) = h.server.poll_request().expect("parsed after the answer");
        assert_eq!(req.path, "/b");
        assert_ne!(first, second);
        // The first id answers nothing more, though its connection lives on.
        let registry = h.poll.registry();
        h.server
            .respond(registry, first, Response::text(200, "dup"), Instant::now());
        h.server
            .respond(registry, second, Response::text(200, "b"), Instant::now());
        assert_eq!(c.reply(&mut h).text(), "a");
        assert_eq!(c.reply(&mut h).text(), "b");
    }

    #[test]
    fn post_with_body() {
        let mut h = echo_server();
        let mut c = h.connect();
        c.send(
            &mut h,
            b"POST /items HTTP/1.1\r\nContent-Type: text/plain\r\nContent-Length: 11\r\n\r\nhello world",
        );
        let reply = c.reply(&mut h);
        assert_eq!(reply.status, 201);
        assert_eq!(reply.text(), "hello world");
        assert_eq!(reply.header("x-len"), Some("11"));
    }

    #[test]
    fn expect_100_continue_is_answered_before_the_body() {
        let mut h = echo_server();
        let mut c = h.connect();
        c.send(
            &mut h,
            b"POST /up HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: 2000\r\n\r\n",
        );
        let interim = c.reply(&mut h);
        assert_eq!(interim.status, 100);
        assert!(interim.headers.is_empty());
        c.send(&mut h, &pattern(2000));
        let reply = c.reply(&mut h);
        assert_eq!(reply.status, 201);
        assert_eq!(reply.body, pattern(2000));
    }

    #[test]
    fn body_over_the_limit_is_refused_unread() {
        let limits = Limits {
            max_body_bytes: 1024,
            ..Limits::default()
        };
        let mut h = Harness::new(limits, Some(never));
        let mut c = h.connect();
        // With Expect, curl waits: no 100 Continue may come, only the 413.
        c.send(
            &mut h,
            b"POST /up HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: 2048\r\n\r\n",
        );
        let reply = c.reply(&mut h);
        assert_eq!(reply.status, 413);
        assert_eq!(reply.text(), "request body larger than 1024 bytes");
        assert_eq!(reply.header("connection"), Some("close"));
        c.wait_closed(&mut h);
        assert_eq!(h.server.open_connections(), 0);
    }

    #[test]
    fn huge_head_and_too_many_headers_get_431() {
        let mut h = Harness::new(Limits::default(), Some(never));
        let mut c = h.connect();
        let big = format!("GET / HTTP/1.1\r\nX-Big: {}\r\n\r\n", "a".repeat(9000));
        c.send(&mut h, big.as_bytes());
        let reply = c.reply(&mut h);
        assert_eq!(reply.status, 431);
        assert_eq!(reply.text(), "request head larger than 8192 bytes");
        c.wait_closed(&mut h);

        // A head that never ends is refused as soon as it passes the limit.
        let mut c = h.connect();
        c.send(&mut h, format!("GET /{}", "a".repeat(9000)).as_bytes());
        assert_eq!(c.reply(&mut h).status, 431);
        c.wait_closed(&mut h);

        let mut c = h.connect();
        let mut many = String::from("GET / HTTP/1.1\r\n");
        for i in 0..33 {
            many.push_str(&format!("X-{i}: {i}\r\n"));
        }
        many.push_str("\r\n");
        c.send(&mut h, many.as_bytes());
        let reply = c.reply(&mut h);
        assert_eq!(reply.status, 431);
        assert_eq!(reply.text(), "more than 32 headers");
        c.wait_closed(&mut h);
    }

    #[test]
    fn garbage_gets_400_naming_the_problem() {
        let mut h = Harness::new(Limits::default(), Some(never));
        for (garbage, problem) in [
            (
                &b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03"[..],
                "invalid token",
            ),
            (b"GET / HTTP/2.0\r\n\r\n", "invalid HTTP version"),
            (
                b"GET / HTTP/1.1\r\nBad Name: x\r\n\r\n",
                "invalid header name",
            ),
        ] {
            let mut c = h.connect();
            c.send(&mut h, garbage);
            let reply = c.reply(&mut h);
            assert_eq!(reply.status, 400);
            assert_eq!(reply.text(), format!("malformed request: {problem}"));
            c.wait_closed(&mut h);
        }
        assert_eq!(h.server.open_connections(), 0);
    }

    #[test]
    fn unsupported_or_bad_body_framing_is_refused() {
        let mut h = Harness::new(Limits::default(), Some(never));
        for (head, status, msg) in [
            (
                "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n",
                501,
                "chunked request bodies are not supported",
            ),
            (
                "POST / HTTP/1.1\r\nContent-Length: 12x\r\n\r\n",
                400,
                "invalid Content-Length",
            ),
            (
                "POST / HTTP/1.1\r\nContent-Length: -1\r\n\r\n",
                400,
                "invalid Content-Length",
            ),
            (
                "POST / HTTP/1.1\r\nContent-Length: 99999999999999999999999\r\n\r\n",
                400,
                "invalid Content-Length",
            ),
            (
                "POST / HTTP/1.1\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\n",
                400,
                "conflicting Content-Length headers",
            ),
        ] {
            let mut c = h.connect();
            c.send(&mut h, head.as_bytes());
            let reply = c.reply(&mut h);
            assert_eq!((reply.status, reply.text()), (status, msg), "{head:?}");
            c.wait_closed(&mut h);
        }
        // Equal repeated lengths are one length.
        h.handler = Some(echo);
        let mut c = h.connect();
        c.send(
            &mut h,
            b"POST / HTTP/1.1\r\nContent-Length: 2\r\nContent-Length: 2, 2\r\n\r\nok",
        );
        assert_eq!(c.reply(&mut h).text(), "ok");
    }

    #[test]
    fn connection_close_and_http_1_0_close_after_the_response() {
        let mut h = echo_server();
        for (request, connection, stays_open) in [
            (
                "GET / HTTP/1.1\r\nConnection: close\r\n\r\n",
                "close",
                false,
            ),
            ("GET / HTTP/1.0\r\n\r\n", "close", false),
            (
                "GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n",
                "keep-alive",
                true,
            ),
        ] {
            let mut c = h.connect();
            c.send(&mut h, request.as_bytes());
            let reply = c.reply(&mut h);
            assert_eq!(reply.header("connection"), Some(connection), "{request:?}");
            if stays_open {
                assert!(c.quiet_for_a_few_turns(&mut h));
            } else {
                c.wait_closed(&mut h);
            }
        }
    }

    #[test]
    fn head_and_204_have_no_body() {
        let mut h = echo_server();
        let mut c = h.connect();
        c.send(
            &mut h,
            b"HEAD /big HTTP/1.1\r\n\r\nGET /nothing HTTP/1.1\r\n\r\n",
        );
        c.until_bytes(&mut h, b"\r\n\r\n", 2);
        let text = String::from_utf8(c.buf.clone()).unwrap();
        let (head, rest) = text.split_once("\r\n\r\n").unwrap();
        assert!(head.starts_with("HTTP/1.1 200 OK\r\n"), "{head}");
        assert!(head.contains("Content-Length: 4194304\r\n"), "{head}");
        assert!(rest.starts_with("HTTP/1.1 204 No Content\r\n"), "{rest}");
        assert!(!rest.contains("Content-Length"), "{rest}");
        assert!(rest.ends_with("\r\n\r\n"), "{rest}");
    }

    #[test]
    fn head_timeout_answers_408() {
        let mut h = Harness::new(Limits::default(), Some(never));
        let before = Instant::now();
        let mut c = h.connect();
        c.send(&mut h, b"G");
        h.until("the byte read", |h| h.server.buffered().0 == 1);
        let deadline = h.server.next_deadline().unwrap();
        assert!(deadline > before + h.server.limits.head_timeout);
        h.timer(before + h.server.limits.head_timeout);
        assert_eq!(h.server.open_connections(), 1, "not due yet");
        h.timer(deadline);
        assert_eq!(h.server.open_connections(), 0);
        let reply = c.reply(&mut h);
        assert_eq!((reply.status, reply.text()), (408, "request timeout"));
        c.wait_closed(&mut h);
    }

    #[test]
    fn body_timeout_answers_408() {
        let mut h = Harness::new(Limits::default(), Some(never));
        let mut c = h.connect();
        c.send(&mut h, b"POST / HTTP/1.1\r\nContent-Length: 10\r\n\r\nabc");
        h.until("the body started", |h| h.server.buffered().0 == 3);
        let late = Instant::now() + h.server.limits.body_timeout + Duration::from_secs(1);
        h.timer(late);
        assert_eq!(h.server.open_connections(), 0);
        assert_eq!(c.reply(&mut h).status, 408);
        c.wait_closed(&mut h);
    }

    #[test]
    fn idle_keep_alive_connection_is_closed_after_idle_timeout() {
        let mut h = echo_server();
        let mut c = h.connect();
        c.send(&mut h, b"GET / HTTP/1.1\r\n\r\n");
        assert_eq!(c.reply(&mut h).status, 200);
        let limits = h.server.limits.clone();
        // The head timeout does not apply to a connection that sent nothing since.
        h.timer(Instant::now() + limits.head_timeout + Duration::from_secs(1));
        assert_eq!(h.server.open_connections(), 1);
        h.timer(Instant::now() + limits.idle_timeout + Duration::from_secs(1));
        assert_eq!(h.server.open_connections(), 0);
        c.wait_closed(&mut h);
        assert!(c.buf.is_empty(), "closed silently: {:?}", c.buf);
    }

    #[test]
    fn connections_over_the_limit_get_503_and_the_others_still_work() {
        let limits = Limits {
            max_connections: 2,
            ..Limits::default()
        };
        let mut h = Harness::new(limits, Some(echo));
        let mut a = h.connect();
        let mut b = h.connect();
        h.until("two open", |h| h.server.open_connections() == 2);
        let mut extra = h.connect();
        let reply = extra.reply(&mut h);
        assert_eq!((reply.status, reply.text()), (503, "too many connections"));
        assert_eq!(reply.header("connection"), Some("close"));
        extra.wait_closed(&mut h);
        assert_eq!(h.server.open_connections(), 2);
        for c in [&mut a, &mut b] {
            c.send(&mut h, b"GET /still HTTP/1.1\r\n\r\n");
            assert_eq!(c.reply(&mut h).text(), "GET /still ");
        }
        // A freed slot takes the next connection.
        drop(a);
        h.until("one closed", |h| h.server.open_connections() == 1);
        let mut d = h.connect();
        d.send(&mut h, b"GET /d HTTP/1.1\r\n\r\n");
        assert_eq!(d.reply(&mut h).text(), "GET /d ");
    }

    #[test]
    fn large_response_reaches_a_slow_reader_without_blocking() {
        let mut h = echo_server();
        let mut c = h.connect();
        c.send(&mut h, b"GET /big HTTP/1.1\r\n\r\n");
        // 64 KiB per turn: the server must keep the rest and go on when the socket drains.
        let reply = c.reply_reading(&mut h, 64 * 1024);
        assert_eq!(reply.status, 200);
        assert_eq!(reply.body.len(), 4 << 20);
        assert!(reply.body == pattern(4 << 20));
        // And the connection is still good for another request.
        c.send(&mut h, b"GET /after HTTP/1.1\r\n\r\n");
        assert_eq!(c.reply(&mut h).text(), "GET /after ");
        assert_eq!(h.server.buffered(), (0, 0));
    }

    #[test]
    fn response_not_written_within_write_timeout_is_dropped() {
        let mut h = echo_server();
        let mut c = h.connect();
        c.send(&mut h, b"GET /huge HTTP/1.1\r\n\r\n");
        h.until("the response stuck", |h| h.server.buffered().1 > 0);
        let late = Instant::now() + h.server.limits.write_timeout + Duration::from_secs(1);
        assert!(h.server.next_deadline().unwrap() < late);
        h.timer(late);
        assert_eq!(h.server.open_connections(), 0);
        drop(c);
    }

    #[test]
    fn stale_conn_id_is_ignored() {
        let mut h = Harness::new(Limits::default(), None);
        let mut a = h.connect();
        a.send(&mut h, b"GET /a HTTP/1.1\r\n\r\n");
        let (stale, _) = h.request();
        drop(a);
        h.until("a closed", |h| h.server.open_connections() == 0);
        let registry = h.poll.registry();
        h.server
            .respond(registry, stale, Response::text(200, "late"), Instant::now());

        let mut b = h.connect();
        b.send(&mut h, b"GET /b HTTP/1.1\r\n\r\n");
        let (fresh, req) = h.request();
        assert_eq!(req.path, "/b");
        assert_eq!(fresh.slot, stale.slot, "the slot is reused");
        assert_ne!(fresh, stale);
        let registry = h.poll.registry();
        h.server.respond(
            registry,
            stale,
            Response::text(200, "stale"),
            Instant::now(),
        );
        assert!(b.quiet_for_a_few_turns(&mut h));
        let registry = h.poll.registry();
        h.server.respond(
            registry,
            fresh,
            Response::text(200, "fresh"),
            Instant::now(),
        );
        // A second answer to the same request is dropped too.
        h.server.respond(
            registry,
            fresh,
            Response::text(200, "again"),
            Instant::now(),
        );
        assert_eq!(b.reply(&mut h).text(), "fresh");
        assert!(b.quiet_for_a_few_turns(&mut h));
    }

    #[test]
    fn read_budget_cut_is_continued_by_on_timer() {
        let limits = Limits {
            read_budget: 16 * 1024,
            ..Limits::default()
        };
        let mut h = Harness::new(limits, Some(echo));
        let mut c = h.connect();
        let body = pattern(200 * 1024);
        let mut request = b"POST /up HTTP/1.1\r\nContent-Length: 204800\r\n\r\n".to_vec();
        request.extend_from_slice(&body);
        c.send(&mut h, &request);
        let reply = c.reply(&mut h);
        assert_eq!(reply.header("x-len"), Some("204800"));
        assert!(reply.body == body);
        assert!(h.budget_cuts > 0, "the budget never cut a read short");
    }

    #[test]
    fn input_left_by_the_budget_needs_no_new_readiness() {
        let limits = Limits {
            read_budget: 16 * 1024,
            ..Limits::default()
        };
        let mut h = Harness::new(limits, None);
        let mut c = h.connect();
        h.until("accepted", |h| {
            h.server.open_connections() == 1 && !h.server.has_pending_work()
        });
        let body = pattern(40 * 1024);
        let mut request = b"POST /up HTTP/1.1\r\nContent-Length: 40960\r\n\r\n".to_vec();
        request.extend_from_slice(&body);
        // Loopback takes it all at once, so it all waits in the server's socket.
        c.stream.write_all(&request).unwrap();
        let deadline = Instant::now() + WAIT;
        while !h.server.has_pending_work() {
            assert!(Instant::now() < deadline, "no readiness");
            h.poll
                .poll(&mut h.events, Some(Duration::from_millis(10)))
                .unwrap();
            for ev in h.events.iter() {
                let token = ev.token();
                h.server
                    .on_ready(h.poll.registry(), token, true, false, Instant::now());
            }
        }
        assert!(h.server.poll_request().is_none());
        // From here on only on_timer: mio reports no new edge for bytes already there.
        let mut got = None;
        for _ in 0..10 {
            h.timer(Instant::now());
            got = h.server.poll_request();
            if got.is_some() {
                break;
            }
        }
        let (_, req) = got.expect("the budget-limited input was continued");
        assert!(req.body == body);
        assert!(!h.server.has_pending_work());
    }

    #[test]
    fn query_params_are_decoded() {
        let req = Request {
            method: "GET".into(),
            path: "/a%20b".into(),
            query: "name=J%C3%BCrgen+M&empty=&flag&bad=%zz%4&x%3Dy=1".into(),
            headers: vec![("x-thing".into(), "v".into())],
            body: Vec::new(),
        };
        assert_eq!(req.query_param("name").as_deref(), Some("Jürgen M"));
        assert_eq!(req.query_param("empty").as_deref(), Some(""));
        assert_eq!(req.query_param("flag").as_deref(), Some(""));
        assert_eq!(req.query_param("bad").as_deref(), Some("%zz%4"));
        assert_eq!(req.query_param("x=y").as_deref(), Some("1"));
        assert_eq!(req.query_param("missing"), None);
        assert_eq!(req.header("X-Thing"), Some("v"));
        assert_eq!(req.header("other"), None);
    }

    #[test]
    fn encoding_sets_framing_itself_and_drops_unsafe_headers() {
        let response = Response::json(404, "{}".into())
            .header("Content-Length", "999")
            .header("Connection", "keep-alive")
            .header("X-Evil", "a\r\nSet-Cookie: b")
            .header("Bad Name", "c")
            .header("X-Fine", "d");
        let bytes = encode(&response, false, false);
        assert_eq!(
            String::from_utf8(bytes).unwrap(),
            format!(
                "HTTP/1.1 404 Not Found\r\nContent-Type: application/json\r\nX-Fine: d\r\n\
                 Server: {SERVER}\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{{}}"
            )
        );
        let bytes = encode(&Response::new(204), true, false);
        assert_eq!(
            String::from_utf8(bytes).unwrap(),
            format!(
                "HTTP/1.1 204 No Content\r\nServer: {SERVER}\r\nConnection: keep-alive\r\n\r\n"
            )
        );
        let bytes = encode(&Response::text(1234, "x"), true, false);
        assert!(String::from_utf8(bytes)
            .unwrap()
            .starts_with("HTTP/1.1 500 Internal Server Error\r\n"));
        for code in [
            200, 201, 204, 400, 404, 405, 408, 411, 413, 415, 422, 431, 500, 501, 503,
        ] {
            assert_ne!(reason_phrase(code), "Unknown", "{code}");
        }
        assert_eq!(reason_phrase(299), "Unknown");
    }
}
