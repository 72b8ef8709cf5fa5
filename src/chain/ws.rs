//! One WebSocket connection over a non-blocking mio socket.
//!
//! A [`WsConn`] is a state machine whose states carry their data:
//! `Connecting` (a TCP connect in progress) → `Handshaking` (tungstenite's client handshake,
//! kept as a resumable `MidHandshake`, over plain TCP or rustls) → `Open` → `Closed`.
//! The driver feeds it readiness with [`WsConn::on_ready`] and `now` with
//! [`WsConn::on_timer`]; it never blocks: reads run until `WouldBlock`, and WRITABLE interest
//! is registered only while output is pending (or while connecting and handshaking).
//!
//! Name resolution of a host name uses the system resolver once per connection attempt
//! (mio has none); IP literals and `localhost` resolve without network traffic.
use std::io::{self, Read, Write};
use std::net::{SocketAddr, ToSocketAddrs};
use std::sync::{Arc, OnceLock};
use std::time::Instant;

use mio::net::TcpStream;
use mio::{Interest, Registry, Token};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use tungstenite::handshake::client::ClientHandshake;
use tungstenite::handshake::{HandshakeError, MidHandshake};
use tungstenite::protocol::WebSocketConfig;
use tungstenite::{Message, WebSocket};

/// A parsed `ws://` or `wss://` endpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    /// The URL as given.
    pub url: String,
    /// Host name or IP literal (without brackets).
    pub host: String,
    /// TCP port.
    pub port: u16,
    /// Whether TLS is used (`wss://`).
    pub tls: bool,
    /// Certificates trusted for `wss://` in addition to the Mozilla roots of webpki-roots
    /// (`--eth-ca-file`).
    pub ca_certs: Vec<CertificateDer<'static>>,
}

/// Why an endpoint URL was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid provider URL {url:?}: {reason}")]
pub struct EndpointError {
    /// The offending URL.
    pub url: String,
    /// What is wrong with it.
    pub reason: &'static str,
}

impl Endpoint {
    /// Parses `ws://host[:port][/path]` or `wss://…`.
    pub fn parse(url: &str) -> Result<Endpoint, EndpointError> {
        let err = |reason| EndpointError {
            url: url.to_string(),
            reason,
        };
        let (tls, rest) = if let Some(r) = url.strip_prefix("ws://") {
            (false, r)
        } else if let Some(r) = url.strip_prefix("wss://") {
            (true, r)
        } else {
            return Err(err("it must start with ws:// or wss://"));
        };
        let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
        if authority.contains('@') {
            return Err(err("user information is not supported"));
        }
        let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
            let (h, after) = v6.split_once(']').ok_or_else(|| err("unclosed '['"))?;
            (h, after.strip_prefix(':'))
        } else {
            match authority.rsplit_once(':') {
                Some((h, p)) => (h, Some(p)),
                None => (authority, None),
            }
        };
        if host.is_empty() {
            return Err(err("the host is missing"));
        }
        let port = match port {
            Some(p) => p
                .parse::<u16>()
                .map_err(|_| err("the port is not a number"))?,
            None if tls => 443,
            None => 80,
        };
        Ok(Endpoint {
            url: url.to_string(),
            host: host.to_string(),
            port,
            tls,
            ca_certs: Vec::new(),
        })
    }

    /// The endpoint with `certs` trusted in addition to the Mozilla roots.
    pub fn with_ca_certs(mut self, certs: Vec<CertificateDer<'static>>) -> Endpoint {
        self.ca_certs = certs;
        self
    }

    fn resolve(&self) -> io::Result<SocketAddr> {
        (self.host.as_str(), self.port)
            .to_socket_addrs()?
            .next()
            .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, "no address for host"))
    }
}

/// Why a connection ended or could not start.
#[derive(Debug, thiserror::Error)]
pub enum WsError {
    /// The TCP connection could not be made (refused, unreachable, unknown host).
    #[error("cannot connect: {0}")]
    Connect(io::Error),
    /// The TCP connect, TLS or WebSocket handshake did not finish before its deadline.
    #[error("connecting timed out")]
    ConnectTimeout,
    /// The TLS set-up failed (bad server name, certificate rejected).
    #[error("TLS failed: {0}")]
    Tls(String),
    /// The server did not accept the WebSocket upgrade.
    #[error("WebSocket handshake failed: {0}")]
    Handshake(String),
    /// The connection broke (reset, EOF, protocol violation, oversized frame).
    #[error("connection lost: {0}")]
    Lost(String),
    /// The peer closed the connection.
    #[error("connection closed by the node")]
    Closed,
}

/// What a connection reports to its driver.
#[derive(Debug)]
pub enum WsEvent {
    /// The WebSocket handshake completed.
    Open,
    /// A text (or UTF-8 binary) message.
    Text(String),
    /// A ping or pong from the node: the link is alive.
    Alive,
    /// The connection ended; no further events follow.
    Closed(WsError),
}

/// The byte stream under the WebSocket: plain TCP or rustls over TCP.
#[derive(Debug)]
pub enum Stream {
    /// `ws://`
    Plain(TcpStream),
    /// `wss://`
    Tls(Box<rustls::StreamOwned<rustls::ClientConnection, TcpStream>>),
}

impl Stream {
    fn tcp(&mut self) -> &mut TcpStream {
        match self {
            Stream::Plain(s) => s,
            Stream::Tls(s) => &mut s.sock,
        }
    }

    fn tls_wants_write(&self) -> bool {
        match self {
            Stream::Plain(_) => false,
            Stream::Tls(s) => s.conn.wants_write(),
        }
    }

    /// Pushes buffered TLS records to the socket until done or `WouldBlock`.
    fn flush_tls(&mut self) -> io::Result<()> {
        if let Stream::Tls(s) = self {
            while s.conn.wants_write() {
                if s.conn.write_tls(&mut s.sock)? == 0 {
                    return Err(io::ErrorKind::WriteZero.into());
                }
            }
        }
        Ok(())
    }
}

impl Read for Stream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let r = match self {
            Stream::Plain(s) => s.read(buf),
            Stream::Tls(s) => s.read(buf),
        };
        if matches!(r, Ok(n) if n > 0) {
            quick_ack(self.tcp());
        }
        r
    }
}

/// Asks the kernel to acknowledge what arrives at once rather than delaying the ACK.
///
/// A node that writes its answers without `TCP_NODELAY` (anvil does) holds a second small
/// answer back until the first is acknowledged, and a delayed ACK waits up to 40 ms: two
/// answers in flight together cost 40 ms instead of a fraction of one. Linux leaves quick-ACK
/// mode again on its own, so it is re-armed after every read that brought data
/// (`cargo bench --bench node` prints the round trip of calls in flight together).
#[cfg(target_os = "linux")]
fn quick_ack(sock: &TcpStream) {
    let _ = rustix::net::sockopt::set_tcp_quickack(sock, true);
}

#[cfg(not(target_os = "linux"))]
fn quick_ack(_: &TcpStream) {}

impl Write for Stream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Stream::Plain(s) => s.write(buf),
            Stream::Tls(s) => s.write(buf),
        }
    }
    fn flush(&mut self) -> io::Result<()> {
        match self {
            Stream::Plain(s) => s.flush(),
            Stream::Tls(s) => s.flush(),
        }
    }
}

/// Why an `--eth-ca-file` was refused. The messages leave out the file name: the caller
/// names it.
#[derive(Debug, thiserror::Error)]
pub enum CaFileError {
    /// The file cannot be read (missing, permissions, a directory).
    #[error("cannot read it: {0}")]
    Read(io::Error),
    /// The file is not well-formed PEM.
    #[error("not a valid PEM file: {0}")]
    Pem(String),
    /// The file is PEM but holds no `CERTIFICATE` section.
    #[error("it holds no PEM certificate (-----BEGIN CERTIFICATE-----)")]
    NoCertificate,
    /// A certificate cannot serve as a trust anchor (bad DER, unsupported key).
    #[error("certificate {index} in it is not usable: {reason}")]
    BadCertificate {
        /// 1-based position of the certificate in the file.
        index: usize,
        /// What rustls reported.
        reason: String,
    },
}

/// Reads the PEM certificates of an `--eth-ca-file` and checks that each is usable as a
/// trust anchor.
pub fn load_ca_file(path: &std::path::Path) -> Result<Vec<CertificateDer<'static>>, CaFileError> {
    let bytes = std::fs::read(path).map_err(CaFileError::Read)?;
    let certs = CertificateDer::pem_slice_iter(&bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| CaFileError::Pem(e.to_string()))?;
    if certs.is_empty() {
        return Err(CaFileError::NoCertificate);
    }
    let mut store = rustls::RootCertStore::empty();
    for (i, cert) in certs.iter().enumerate() {
        store
            .add(cert.clone())
            .map_err(|e| CaFileError::BadCertificate {
                index: i + 1,
                reason: e.to_string(),
            })?;
    }
    Ok(certs)
}

/// The client TLS configuration: the Mozilla roots plus `extra`. The common case (no extra
/// certificates) is built once per process.
fn tls_config(
    extra: &[CertificateDer<'static>],
) -> Result<Arc<rustls::ClientConfig>, rustls::Error> {
    static CONFIG: OnceLock<Arc<rustls::ClientConfig>> = OnceLock::new();
    if extra.is_empty() {
        if let Some(c) = CONFIG.get() {
            return Ok(c.clone());
        }
    }
    let mut roots = rustls::RootCertStore {
        roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
    };
    for cert in extra {
        roots.add(cert.clone())?;
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
    if !extra.is_empty() {
        return Ok(Arc::new(config));
    }
    Ok(CONFIG.get_or_init(|| Arc::new(config)).clone())
}

enum State {
    Connecting {
        sock: TcpStream,
        deadline: Instant,
    },
    Handshaking {
        mid: MidHandshake<ClientHandshake<Stream>>,
        deadline: Instant,
    },
    Open {
        ws: Box<WebSocket<Stream>>,
        /// Output is waiting for the socket to become writable.
        write_pending: bool,
    },
    Closed,
}

/// Limits for one connection.
#[derive(Debug, Clone, Copy)]
pub struct WsLimits {
    /// The largest message accepted from the node; a larger one ends the connection.
    pub max_message: usize,
}

impl Default for WsLimits {
    fn default() -> Self {
        WsLimits {
            max_message: 16 << 20,
        }
    }
}

/// One WebSocket connection. See the module docs.
pub struct WsConn {
    state: State,
    endpoint: Endpoint,
    token: Token,
    limits: WsLimits,
    registered_write: bool,
    /// The last read stopped at [`READ_BATCH`] messages, not at an empty socket: more may be
    /// there without a new readiness event (mio's readiness is edge-triggered).
    unread: bool,
}

/// The most messages one readiness call reads. The loop handles them (and its other work,
/// and the pongs the read queued) before it reads more: a burst of thousands of answers
/// would otherwise be read and parsed in one go while nothing else ran.
pub const READ_BATCH: usize = 64;

impl std::fmt::Debug for WsConn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let state = match self.state {
            State::Connecting { .. } => "connecting",
            State::Handshaking { .. } => "handshaking",
            State::Open { .. } => "open",
            State::Closed => "closed",
        };
        f.debug_struct("WsConn")
            .field("endpoint", &self.endpoint.url)
            .field("state", &state)
            .finish()
    }
}

fn lost(e: tungstenite::Error) -> WsError {
    match e {
        tungstenite::Error::ConnectionClosed | tungstenite::Error::AlreadyClosed => WsError::Closed,
        other => WsError::Lost(other.to_string()),
    }
}

fn would_block(e: &tungstenite::Error) -> bool {
    matches!(e, tungstenite::Error::Io(io) if io.kind() == io::ErrorKind::WouldBlock)
}

/// The message of a TLS failure; an unknown issuer gets a hint at `--eth-ca-file`.
fn tls_reason(io: &io::Error) -> String {
    let unknown_issuer = matches!(
        io.get_ref().and_then(|e| e.downcast_ref::<rustls::Error>()),
        Some(rustls::Error::InvalidCertificate(
            rustls::CertificateError::UnknownIssuer
        ))
    );
    if unknown_issuer {
        format!(
            "{io} (the node's certificate does not chain to a trusted root; \
         give its CA certificate with --eth-ca-file)"
        )
    } else {
        io.to_string()
    }
}

impl WsConn {
    /// Starts a non-blocking TCP connect and registers it. The connect, TLS and WebSocket
    /// handshakes must finish by `deadline`.
    pub fn connect(
        endpoint: &Endpoint,
        registry: &Registry,
        token: Token,
        limits: WsLimits,
        deadline: Instant,
    ) -> Result<WsConn, WsError> {
        let addr = endpoint.resolve().map_err(WsError::Connect)?;
        let mut sock = TcpStream::connect(addr).map_err(WsError::Connect)?;
        registry
            .register(&mut sock, token, Interest::READABLE | Interest::WRITABLE)
            .map_err(WsError::Connect)?;
        Ok(WsConn {
            state: State::Connecting { sock, deadline },
            endpoint: endpoint.clone(),
            token,
            limits,
            registered_write: true,
            unread: false,
        })
    }

    /// Whether the last read left messages on the socket (see [`READ_BATCH`]): call
    /// [`Self::on_ready`] again without waiting for readiness.
    pub fn unread(&self) -> bool {
        self.unread && self.is_open()
    }

    /// Whether the WebSocket is open.
    pub fn is_open(&self) -> bool {
        matches!(self.state, State::Open { .. })
    }

    /// Whether the connection has ended.
    pub fn is_closed(&self) -> bool {
        matches!(self.state, State::Closed)
    }

    /// The connect deadline while connecting or handshaking.
    pub fn next_deadline(&self) -> Option<Instant> {
        match &self.state {
            State::Connecting { deadline, .. } | State::Handshaking { deadline, .. } => {
                Some(*deadline)
            }
            _ => None,
        }
    }

    /// Checks the connect deadline.
    pub fn on_timer(&mut self, registry: &Registry, now: Instant, out: &mut Vec<WsEvent>) {
        if let Some(d) = self.next_deadline() {
            if now >= d {
                self.fail(registry, WsError::ConnectTimeout, out);
            }
        }
    }

    /// Handles readiness of the socket (any readiness; spurious wake-ups are harmless).
    pub fn on_ready(&mut self, registry: &Registry, out: &mut Vec<WsEvent>) {
        let state = std::mem::replace(&mut self.state, State::Closed);
        self.state = match state {
            State::Connecting { sock, deadline } => self.finish_connect(sock, deadline, out),
            State::Handshaking { mid, deadline } => Self::resume(mid, deadline, out),
            other => other,
        };
        if let State::Open { .. } = self.state {
            self.pump(out);
        }
        self.update_interest(registry, out);
    }

    fn finish_connect(&self, sock: TcpStream, deadline: Instant, out: &mut Vec<WsEvent>) -> State {
        match sock.take_error() {
            Ok(Some(e)) | Err(e) => {
                out.push(WsEvent::Closed(WsError::Connect(e)));
                return State::Closed;
            }
            Ok(None) => {}
        }
        match sock.peer_addr() {
            Ok(_) => {}
            Err(e)
                if e.kind() == io::ErrorKind::NotConnected
                    || e.kind() == io::ErrorKind::WouldBlock =>
            {
                return State::Connecting { sock, deadline };
            }
            Err(e) => {
                out.push(WsEvent::Closed(WsError::Connect(e)));
                return State::Closed;
            }
        }
        let _ = sock.set_nodelay(true);
        let stream = if self.endpoint.tls {
            let name = match ServerName::try_from(self.endpoint.host.clone()) {
                Ok(n) => n,
                Err(e) => {
                    out.push(WsEvent::Closed(WsError::Tls(e.to_string())));
                    return State::Closed;
                }
            };
            match tls_config(&self.endpoint.ca_certs)
                .and_then(|c| rustls::ClientConnection::new(c, name))
            {
                Ok(conn) => Stream::Tls(Box::new(rustls::StreamOwned::new(conn, sock))),
                Err(e) => {
                    out.push(WsEvent::Closed(WsError::Tls(e.to_string())));
                    return State::Closed;
                }
            }
        } else {
            Stream::Plain(sock)
        };
        let request = match tungstenite::client::IntoClientRequest::into_client_request(
            self.endpoint.url.as_str(),
        ) {
            Ok(r) => r,
            Err(e) => {
                out.push(WsEvent::Closed(WsError::Handshake(e.to_string())));
                return State::Closed;
            }
        };
        let config = WebSocketConfig::default()
            .max_message_size(Some(self.limits.max_message))
            .max_frame_size(Some(self.limits.max_message))
            .write_buffer_size(0);
        match ClientHandshake::start(stream, request, Some(config)) {
            Ok(mid) => Self::resume(mid, deadline, out),
            Err(e) => {
                out.push(WsEvent::Closed(WsError::Handshake(e.to_string())));
                State::Closed
            }
        }
    }

    fn resume(
        mid: MidHandshake<ClientHandshake<Stream>>,
        deadline: Instant,
        out: &mut Vec<WsEvent>,
    ) -> State {
        match mid.handshake() {
            Ok((ws, _response)) => {
                out.push(WsEvent::Open);
                State::Open {
                    ws: Box::new(ws),
                    write_pending: true,
                }
            }
            Err(HandshakeError::Interrupted(mid)) => State::Handshaking { mid, deadline },
            Err(HandshakeError::Failure(e)) => {
                let err = match e {
                    tungstenite::Error::Io(io) if io.kind() == io::ErrorKind::InvalidData => {
                        WsError::Tls(tls_reason(&io))
                    }
                    tungstenite::Error::Io(io) => WsError::Connect(io),
                    other => WsError::Handshake(other.to_string()),
                };
                out.push(WsEvent::Closed(err));
                State::Closed
            }
        }
    }

    /// Reads every available message, then flushes pending output.
    fn pump(&mut self, out: &mut Vec<WsEvent>) {
        let State::Open { ws, .. } = &mut self.state else {
            return;
        };
        let mut read = 0;
        self.unread = false;
        let end = loop {
            if read == READ_BATCH {
                self.unread = true;
                break None;
            }
            read += 1;
            match ws.read() {
                Ok(Message::Text(t)) => out.push(WsEvent::Text(t.as_str().to_owned())),
                Ok(Message::Binary(b)) => match String::from_utf8(b.to_vec()) {
                    Ok(t) => out.push(WsEvent::Text(t)),
                    Err(_) => log::warn!("ignoring a binary frame that is not UTF-8"),
                },
                // tungstenite queues the pong to a ping itself.
                Ok(Message::Ping(_)) | Ok(Message::Pong(_)) => out.push(WsEvent::Alive),
                Ok(_) => {} // close (answered by tungstenite), raw frame
                Err(e) if would_block(&e) => break None,
                Err(e) => break Some(lost(e)),
            }
        };
        if let Some(e) = end {
            self.state = State::Closed;
            out.push(WsEvent::Closed(e));
            return;
        }
        self.flush(out);
    }

    fn flush(&mut self, out: &mut Vec<WsEvent>) {
        let State::Open { ws, write_pending } = &mut self.state else {
            return;
        };
        let r = ws
            .flush()
            .and_then(|()| ws.get_mut().flush_tls().map_err(tungstenite::Error::Io));
        match r {
            Ok(()) => *write_pending = ws.get_ref().tls_wants_write(),
            Err(e) if would_block(&e) => *write_pending = true,
            Err(e) => {
                self.state = State::Closed;
                out.push(WsEvent::Closed(lost(e)));
            }
        }
    }

    fn update_interest(&mut self, registry: &Registry, out: &mut Vec<WsEvent>) {
        let (want_write, sock) = match &mut self.state {
            State::Connecting { sock, .. } => (true, sock),
            State::Handshaking { mid, .. } => (true, mid.get_mut().get_mut().tcp()),
            State::Open { ws, write_pending } => (*write_pending, ws.get_mut().tcp()),
            State::Closed => return,
        };
        if want_write == self.registered_write {
            return;
        }
        let interest = if want_write {
            Interest::READABLE | Interest::WRITABLE
        } else {
            Interest::READABLE
        };
        match registry.reregister(sock, self.token, interest) {
            Ok(()) => self.registered_write = want_write,
            Err(e) => self.fail(registry, WsError::Lost(e.to_string()), out),
        }
    }

    /// Queues a text message and tries to write it. Returns false when the connection is not
    /// open (the message is dropped).
    pub fn send_text(&mut self, registry: &Registry, text: String, out: &mut Vec<WsEvent>) -> bool {
        self.send(registry, Message::text(text), out)
    }

    /// Sends a ping.
    pub fn send_ping(&mut self, registry: &Registry, out: &mut Vec<WsEvent>) -> bool {
        self.send(registry, Message::Ping(Default::default()), out)
    }

    fn send(&mut self, registry: &Registry, msg: Message, out: &mut Vec<WsEvent>) -> bool {
        let State::Open { ws, .. } = &mut self.state else {
            return false;
        };
        match ws.write(msg) {
            Ok(()) => {}
            Err(e) if would_block(&e) => {}
            Err(e) => {
                self.state = State::Closed;
                out.push(WsEvent::Closed(lost(e)));
                return false;
            }
        }
        self.flush(out);
        self.update_interest(registry, out);
        true
    }

    /// Starts a clean close (a close frame); the connection reports `Closed` once the node
    /// answers or the socket ends.
    pub fn close(&mut self, registry: &Registry, out: &mut Vec<WsEvent>) {
        if let State::Open { ws, .. } = &mut self.state {
            let _ = ws.close(None);
        }
        self.flush(out);
        self.update_interest(registry, out);
    }

    /// Ends the connection at once and deregisters the socket.
    pub fn fail(&mut self, registry: &Registry, err: WsError, out: &mut Vec<WsEvent>) {
        self.deregister(registry);
        if !matches!(self.state, State::Closed) {
            self.state = State::Closed;
            out.push(WsEvent::Closed(err));
        }
    }

    /// Deregisters the socket (also done by [`WsConn::fail`]).
    pub fn deregister(&mut self, registry: &Registry) {
        let sock = match &mut self.state {
            State::Connecting { sock, .. } => sock,
            State::Handshaking { mid, .. } => mid.get_mut().get_mut().tcp(),
            State::Open { ws, .. } => ws.get_mut().tcp(),
            State::Closed => return,
        };
        let _ = registry.deregister(sock);
        let _ = sock.shutdown(std::net::Shutdown::Both);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_endpoints() {
        let e = Endpoint::parse("ws://localhost:8545").unwrap();
        assert_eq!((e.host.as_str(), e.port, e.tls), ("localhost", 8545, false));
        let e = Endpoint::parse("wss://node.example.org/v1/abc?x=1").unwrap();
        assert_eq!(
            (e.host.as_str(), e.port, e.tls),
            ("node.example.org", 443, true)
        );
        let e = Endpoint::parse("ws://[::1]:9000/").unwrap();
        assert_eq!((e.host.as_str(), e.port), ("::1", 9000));
        assert_eq!(Endpoint::parse("ws://h").unwrap().port, 80);
        for bad in [
            "http://localhost:8545",
            "localhost:8545",
            "ws://",
            "ws://:80",
            "ws://h:port",
            "ws://h:70000",
            "ws://[::1",
            "ws://u@h:1",
        ] {
            let err = Endpoint::parse(bad).unwrap_err();
            assert_eq!(err.url, bad);
        }
    }

    #[test]
    fn tls_config_builds() {
        let c = tls_config(&[]).unwrap();
        assert!(c.alpn_protocols.is_empty());
    }
}
