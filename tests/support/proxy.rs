//! A fault-injecting TCP proxy for WebSocket JSON-RPC, between codex and anvil.
//!
//! It forwards the HTTP upgrade untouched, then whole WebSocket frames in both directions, so
//! that faults land exactly where a test wants them: a frame cut in half, a stalled socket, a
//! malformed or oversized frame, a JSON-RPC error in place of a real answer, a response for an
//! id nobody asked for, and refusing connections while the node restarts. Threads are fine
//! here: this is test scaffolding, not the client under test.
use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

struct Conn {
    /// Write side towards the client; frames are written whole under this lock.
    client_w: Mutex<TcpStream>,
    client: TcpStream,
    upstream: TcpStream,
    stalled: AtomicBool,
}

impl Conn {
    fn kill(&self) {
        let _ = self.client.shutdown(Shutdown::Both);
        let _ = self.upstream.shutdown(Shutdown::Both);
    }

    fn send_to_client(&self, bytes: &[u8]) -> bool {
        let mut w = self.client_w.lock().unwrap();
        w.write_all(bytes).is_ok()
    }
}

struct Shared {
    upstream: SocketAddr,
    conns: Mutex<Vec<Arc<Conn>>>,
    refuse: AtomicBool,
    stop: AtomicBool,
    drop_mid_frame: AtomicBool,
    fail_method: Mutex<Option<String>>,
    /// Connections accepted so far (each reconnect counts).
    accepted: AtomicUsize,
}

/// The proxy. Stops and closes every connection on drop.
pub struct Proxy {
    shared: Arc<Shared>,
    /// The local port clients connect to.
    pub port: u16,
}

/// A server-to-client (unmasked) text frame.
pub fn text_frame(payload: &[u8]) -> Vec<u8> {
    let mut f = vec![0x81];
    let n = payload.len();
    if n < 126 {
        f.push(n as u8);
    } else if n <= 0xffff {
        f.push(126);
        f.extend_from_slice(&(n as u16).to_be_bytes());
    } else {
        f.push(127);
        f.extend_from_slice(&(n as u64).to_be_bytes());
    }
    f.extend_from_slice(payload);
    f
}

/// Length of the first complete frame in `buf`, with its opcode and unmasked payload.
fn next_frame(buf: &[u8]) -> Option<(usize, u8, Vec<u8>)> {
    if buf.len() < 2 {
        return None;
    }
    let opcode = buf[0] & 0x0f;
    let masked = buf[1] & 0x80 != 0;
    let (len, mut at) = match buf[1] & 0x7f {
        126 => (
            u16::from_be_bytes(buf.get(2..4)?.try_into().ok()?) as usize,
            4,
        ),
        127 => (
            u64::from_be_bytes(buf.get(2..10)?.try_into().ok()?) as usize,
            10,
        ),
        n => (n as usize, 2),
    };
    let mask = if masked {
        let m: [u8; 4] = buf.get(at..at + 4)?.try_into().ok()?;
        at += 4;
        Some(m)
    } else {
        None
    };
    let payload = buf.get(at..at + len)?;
    let payload = match mask {
        Some(m) => payload
            .iter()
            .enumerate()
            .map(|(i, b)| b ^ m[i % 4])
            .collect(),
        None => payload.to_vec(),
    };
    Some((at + len, opcode, payload))
}

fn header_end(buf: &[u8]) -> Option<usize> {
    buf.windows(4).position(|w| w == b"\r\n\r\n").map(|p| p + 4)
}

impl Proxy {
    /// Starts a proxy on a free loopback port forwarding to `upstream`.
    pub fn start(upstream: SocketAddr) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind proxy");
        let port = listener.local_addr().unwrap().port();
        let shared = Arc::new(Shared {
            upstream,
            conns: Mutex::new(Vec::new()),
            refuse: AtomicBool::new(false),
            stop: AtomicBool::new(false),
            drop_mid_frame: AtomicBool::new(false),
            fail_method: Mutex::new(None),
            accepted: AtomicUsize::new(0),
        });
        let s = shared.clone();
        std::thread::spawn(move || {
            for client in listener.incoming() {
                if s.stop.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(client) = client else { continue };
                if s.refuse.load(Ordering::SeqCst) {
                    let _ = client.shutdown(Shutdown::Both);
                    continue;
                }
                let Ok(upstream) = TcpStream::connect(s.upstream) else {
                    let _ = client.shutdown(Shutdown::Both);
                    continue;
                };
                s.accepted.fetch_add(1, Ordering::SeqCst);
                let _ = client.set_nodelay(true);
                let _ = upstream.set_nodelay(true);
                let conn = Arc::new(Conn {
                    client_w: Mutex::new(client.try_clone().unwrap()),
                    client: client.try_clone().unwrap(),
                    upstream: upstream.try_clone().unwrap(),
                    stalled: AtomicBool::new(false),
                });
                s.conns.lock().unwrap().push(conn.clone());
                let (s1, c1) = (s.clone(), conn.clone());
                std::thread::spawn(move || down_pump(s1, c1, upstream));
                let (s2, c2) = (s.clone(), conn);
                std::thread::spawn(move || up_pump(s2, c2, client));
            }
        });
        Proxy { shared, port }
    }

    /// `ws://127.0.0.1:PORT`
    pub fn ws_url(&self) -> String {
        format!("ws://127.0.0.1:{}", self.port)
    }

    /// Connections accepted so far.
    pub fn accepted(&self) -> usize {
        self.shared.accepted.load(Ordering::SeqCst)
    }

    fn live(&self) -> Vec<Arc<Conn>> {
        self.shared.conns.lock().unwrap().clone()
    }

    /// Cuts the next frame from the node in half and closes the connection.
    pub fn drop_mid_frame(&self) {
        self.shared.drop_mid_frame.store(true, Ordering::SeqCst);
    }

    /// Closes every connection now.
    pub fn drop_all(&self) {
        for c in self.shared.conns.lock().unwrap().drain(..) {
            c.kill();
        }
    }

    /// While set, new connections are accepted and closed at once (the node is down).
    pub fn refuse(&self, on: bool) {
        self.shared.refuse.store(on, Ordering::SeqCst);
    }

    /// Stops forwarding on every current connection, in both directions, without closing.
    pub fn stall(&self) {
        for c in self.live() {
            c.stalled.store(true, Ordering::SeqCst);
        }
    }

    /// Sends raw bytes to every client, between two frames.
    pub fn inject(&self, bytes: &[u8]) {
        for c in self.live() {
            c.send_to_client(bytes);
        }
    }

    /// Answers the next call of `method` with a JSON-RPC error instead of forwarding it.
    pub fn fail_next(&self, method: &str) {
        *self.shared.fail_method.lock().unwrap() = Some(method.to_string());
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        self.drop_all();
        let _ = TcpStream::connect(("127.0.0.1", self.port));
    }
}

fn forget(s: &Shared, conn: &Arc<Conn>) {
    conn.kill();
    s.conns.lock().unwrap().retain(|c| !Arc::ptr_eq(c, conn));
}

/// Node → client.
fn down_pump(s: Arc<Shared>, conn: Arc<Conn>, mut upstream: TcpStream) {
    let mut buf = Vec::new();
    let mut chunk = vec![0u8; 64 * 1024];
    let mut upgraded = false;
    loop {
        let n = match upstream.read(&mut chunk) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        if conn.stalled.load(Ordering::SeqCst) {
            continue;
        }
        buf.extend_from_slice(&chunk[..n]);
        if !upgraded {
            let Some(end) = header_end(&buf) else {
                continue;
            };
            if !conn.send_to_client(&buf[..end]) {
                break;
            }
            buf.drain(..end);
            upgraded = true;
        }
        while let Some((len, _, _)) = next_frame(&buf) {
            if s.drop_mid_frame.swap(false, Ordering::SeqCst) {
                conn.send_to_client(&buf[..len / 2]);
                forget(&s, &conn);
                return;
            }
            if !conn.send_to_client(&buf[..len]) {
                forget(&s, &conn);
                return;
            }
            buf.drain(..len);
        }
    }
    forget(&s, &conn);
}

/// Client → node.
fn up_pump(s: Arc<Shared>, conn: Arc<Conn>, mut client: TcpStream) {
    let mut upstream = conn.upstream.try_clone().unwrap();
    let mut buf = Vec::new();
    let mut chunk = vec![0u8; 64 * 1024];
    let mut upgraded = false;
    loop {
        let n = match client.read(&mut chunk) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        if conn.stalled.load(Ordering::SeqCst) {
            continue;
        }
        buf.extend_from_slice(&chunk[..n]);
        if !upgraded {
            let Some(end) = header_end(&buf) else {
                continue;
            };
            if upstream.write_all(&buf[..end]).is_err() {
                break;
            }
            buf.drain(..end);
            upgraded = true;
        }
        while let Some((len, opcode, payload)) = next_frame(&buf) {
            let mut swallow = false;
            if opcode == 1 {
                let mut fail = s.fail_method.lock().unwrap();
                if let Some(m) = fail.clone() {
                    if let Ok(v) = serde_json::from_slice::<serde_json::Value>(&payload) {
                        if v["method"] == m.as_str() {
                            *fail = None;
                            swallow = true;
                            let reply = serde_json::json!({
                                "jsonrpc": "2.0",
                                "id": v["id"],
                                "error": {"code": -32000, "message": "injected failure"}
                            });
                            conn.send_to_client(&text_frame(reply.to_string().as_bytes()));
                        }
                    }
                }
            }
            if !swallow && upstream.write_all(&buf[..len]).is_err() {
                forget(&s, &conn);
                return;
            }
            buf.drain(..len);
        }
    }
    forget(&s, &conn);
}
