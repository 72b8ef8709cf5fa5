//! A TLS-terminating TCP proxy in front of anvil, so that `wss://` runs against a real node:
//! codex ⇄ TLS (rustls server, a certificate made by rcgen in the test) ⇄ this proxy ⇄ plain
//! TCP ⇄ anvil. Threads are fine here: this is test scaffolding, not the client under test.
//!
//! Per connection, two threads share the rustls `ServerConnection` behind a mutex; each
//! blocks on its own socket read without holding the lock.
use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use rustls::ServerConnection;

/// A certificate and its key, made for the test.
pub struct TestCert {
    /// The certificate in PEM, for `--eth-ca-file`.
    pub pem: String,
    der: CertificateDer<'static>,
    key: Vec<u8>,
}

impl TestCert {
    /// A self-signed certificate for the given names (IP literals become IP SANs).
    pub fn self_signed(names: &[&str]) -> TestCert {
        let names: Vec<String> = names.iter().map(|s| s.to_string()).collect();
        let ck = rcgen::generate_simple_self_signed(names).expect("generate a certificate");
        TestCert {
            pem: ck.cert.pem(),
            der: ck.cert.der().clone(),
            key: ck.signing_key.serialize_der(),
        }
    }

    /// Writes the PEM certificate to `path`.
    pub fn write_pem(&self, path: &std::path::Path) {
        std::fs::write(path, &self.pem).unwrap();
    }

    fn server_config(&self) -> Arc<rustls::ServerConfig> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(self.key.clone()));
        let config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(vec![self.der.clone()], key)
            .expect("server certificate");
        Arc::new(config)
    }
}

struct Shared {
    stop: AtomicBool,
    /// Every socket of every connection, shut down on drop so that the threads end.
    sockets: Mutex<Vec<TcpStream>>,
    /// TLS errors the server saw (a client refusing the certificate shows up here).
    errors: Mutex<Vec<String>>,
}

/// The proxy. Stops and closes every connection on drop.
pub struct TlsProxy {
    shared: Arc<Shared>,
    /// The local port clients connect to.
    pub port: u16,
}

impl TlsProxy {
    /// Starts a proxy on a free loopback port that terminates TLS with `cert` and forwards
    /// the plaintext to `upstream`.
    pub fn start(upstream: SocketAddr, cert: &TestCert) -> TlsProxy {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind TLS proxy");
        let port = listener.local_addr().unwrap().port();
        let config = cert.server_config();
        let shared = Arc::new(Shared {
            stop: AtomicBool::new(false),
            sockets: Mutex::new(Vec::new()),
            errors: Mutex::new(Vec::new()),
        });
        let s = shared.clone();
        std::thread::spawn(move || {
            for client in listener.incoming() {
                if s.stop.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(client) = client else { continue };
                let (s, config) = (s.clone(), config.clone());
                std::thread::spawn(move || serve(s, config, client, upstream));
            }
        });
        TlsProxy { shared, port }
    }

    /// `wss://127.0.0.1:PORT`
    pub fn wss_url(&self) -> String {
        format!("wss://127.0.0.1:{}", self.port)
    }

    /// The TLS errors seen so far.
    pub fn errors(&self) -> Vec<String> {
        self.shared.errors.lock().unwrap().clone()
    }
}

impl Drop for TlsProxy {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        for s in self.shared.sockets.lock().unwrap().drain(..) {
            let _ = s.shutdown(Shutdown::Both);
        }
        // Wake the accept loop so that it sees `stop`.
        let _ = TcpStream::connect(("127.0.0.1", self.port));
    }
}

/// Writes every pending TLS record to the client.
fn flush_tls(conn: &mut ServerConnection, client: &mut TcpStream) -> std::io::Result<()> {
    while conn.wants_write() {
        conn.write_tls(client)?;
    }
    Ok(())
}

fn serve(
    s: Arc<Shared>,
    config: Arc<rustls::ServerConfig>,
    client: TcpStream,
    upstream: SocketAddr,
) {
    let Ok(up) = TcpStream::connect(upstream) else {
        let _ = client.shutdown(Shutdown::Both);
        return;
    };
    let _ = client.set_nodelay(true);
    let _ = up.set_nodelay(true);
    {
        let mut socks = s.sockets.lock().unwrap();
        socks.push(client.try_clone().unwrap());
        socks.push(up.try_clone().unwrap());
    }
    let conn = Arc::new(Mutex::new(
        ServerConnection::new(config).expect("TLS server connection"),
    ));

    // Node → client: plaintext in, TLS records out.
    let (conn2, mut up_r, mut client_w) = (
        conn.clone(),
        up.try_clone().unwrap(),
        client.try_clone().unwrap(),
    );
    std::thread::spawn(move || {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let n = match up_r.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            let mut c = conn2.lock().unwrap();
            if c.writer().write_all(&buf[..n]).is_err() || flush_tls(&mut c, &mut client_w).is_err()
            {
                break;
            }
        }
        let _ = client_w.shutdown(Shutdown::Both);
    });

    // Client → node: TLS records in, plaintext out (and handshake records back).
    let (mut client_r, mut client_w, mut up_w) = (client.try_clone().unwrap(), client, up);
    let mut buf = vec![0u8; 64 * 1024];
    'conn: loop {
        let n = match client_r.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        let mut rd = &buf[..n];
        while !rd.is_empty() {
            let mut plain = Vec::new();
            {
                let mut c = conn.lock().unwrap();
                if c.read_tls(&mut rd).is_err() {
                    break 'conn;
                }
                let state = c.process_new_packets();
                // Alerts and handshake records go back whatever the outcome.
                let flushed = flush_tls(&mut c, &mut client_w);
                if let Err(e) = state {
                    s.errors.lock().unwrap().push(e.to_string());
                    break 'conn;
                }
                if flushed.is_err() {
                    break 'conn;
                }
                // WouldBlock ends the plaintext available now; what was read stays in `plain`.
                let _ = c.reader().read_to_end(&mut plain);
            }
            if !plain.is_empty() && up_w.write_all(&plain).is_err() {
                break 'conn;
            }
        }
    }
    let _ = up_w.shutdown(Shutdown::Both);
    let _ = client_w.shutdown(Shutdown::Both);
}
