//! A small HTTP/1.1 data source on a free loopback port for `codex run --data-source`: every
//! path serves the same deterministic dataset (honouring a `Range: bytes=A-B` header), unless
//! the server is told to misbehave. Stopped when dropped.
use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

/// How the server answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// The dataset (or the asked-for range of it).
    Serve,
    /// 404 for everything.
    NotFound,
    /// 200 with this many more bytes than asked for.
    TooMany(usize),
    /// Headers, then nothing (the connection stays open).
    Stall,
}

struct Shared {
    mode: Mutex<Mode>,
    stop: AtomicBool,
    requests: AtomicUsize,
    paths: Mutex<Vec<String>>,
    size: usize,
}

/// The running server.
pub struct DataServer {
    pub port: u16,
    shared: Arc<Shared>,
    held: Arc<Mutex<Vec<TcpStream>>>,
}

/// Byte `i` of the dataset.
pub fn byte(i: usize) -> u8 {
    (i.wrapping_mul(31).wrapping_add(7) % 251) as u8
}

impl DataServer {
    /// Serves a dataset of `size` bytes.
    pub fn start(size: usize) -> DataServer {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the data server");
        let port = listener.local_addr().unwrap().port();
        let shared = Arc::new(Shared {
            mode: Mutex::new(Mode::Serve),
            stop: AtomicBool::new(false),
            requests: AtomicUsize::new(0),
            paths: Mutex::new(Vec::new()),
            size,
        });
        let held = Arc::new(Mutex::new(Vec::new()));
        let (s, h) = (shared.clone(), held.clone());
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                if s.stop.load(Ordering::Relaxed) {
                    return;
                }
                let Ok(conn) = conn else { continue };
                let (s, h) = (s.clone(), h.clone());
                std::thread::spawn(move || serve(conn, &s, &h));
            }
        });
        DataServer { port, shared, held }
    }

    /// The `--data-source` template (ranges of one dataset).
    pub fn template(&self) -> String {
        format!("http://127.0.0.1:{}/data/{{cid}}", self.port)
    }

    /// Changes how it answers from now on.
    pub fn set_mode(&self, mode: Mode) {
        *self.shared.mode.lock().unwrap() = mode;
    }

    /// Requests answered so far.
    pub fn requests(&self) -> usize {
        self.shared.requests.load(Ordering::Relaxed)
    }
}

impl Drop for DataServer {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::Relaxed);
        // Wake the accept loop so that it sees the flag.
        let _ = TcpStream::connect(("127.0.0.1", self.port));
        self.held.lock().unwrap().clear();
    }
}

fn serve(mut conn: TcpStream, s: &Shared, held: &Mutex<Vec<TcpStream>>) {
    let mut reader = BufReader::new(conn.try_clone().unwrap());
    let mut line = String::new();
    if reader.read_line(&mut line).is_err() || line.is_empty() {
        return;
    }
    let path = line.split_whitespace().nth(1).unwrap_or("/").to_string();
    let mut range = None;
    loop {
        let mut h = String::new();
        if reader.read_line(&mut h).is_err() || h.trim().is_empty() {
            break;
        }
        if let Some((k, v)) = h.split_once(':') {
            if k.eq_ignore_ascii_case("range") {
                let v = v.trim().trim_start_matches("bytes=");
                if let Some((a, b)) = v.split_once('-') {
                    if let (Ok(a), Ok(b)) = (a.parse::<usize>(), b.parse::<usize>()) {
                        range = Some((a, b));
                    }
                }
            }
        }
    }
    s.requests.fetch_add(1, Ordering::Relaxed);
    s.paths.lock().unwrap().push(path);
    let mode = *s.mode.lock().unwrap();
    let (a, b) = range.unwrap_or((0, s.size.saturating_sub(1)));
    let b = b.min(s.size.saturating_sub(1));
    let body: Vec<u8> = if a <= b {
        (a..=b).map(byte).collect()
    } else {
        Vec::new()
    };
    match mode {
        Mode::NotFound => {
            let _ = conn.write_all(b"HTTP/1.1 404 Not Found\r\nContent-Length: 9\r\nConnection: close\r\n\r\nnot found");
        }
        Mode::Serve => {
            let status = if range.is_some() {
                "206 Partial Content"
            } else {
                "200 OK"
            };
            let head = format!(
                "HTTP/1.1 {status}\r\nContent-Length: {}\r\nContent-Range: bytes {a}-{b}/{}\r\nConnection: close\r\n\r\n",
                body.len(),
                s.size
            );
            let _ = conn.write_all(head.as_bytes());
            let _ = conn.write_all(&body);
        }
        Mode::TooMany(extra) => {
            let mut body = body;
            body.extend(std::iter::repeat_n(1u8, extra));
            let head = format!(
                "HTTP/1.1 206 Partial Content\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                body.len()
            );
            let _ = conn.write_all(head.as_bytes());
            let _ = conn.write_all(&body);
        }
        Mode::Stall => {
            let head = format!(
                "HTTP/1.1 206 Partial Content\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                body.len()
            );
            let _ = conn.write_all(head.as_bytes());
            // Keep the connection open, sending nothing, until the server is dropped.
            held.lock().unwrap().push(conn);
        }
    }
}
