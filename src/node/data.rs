//! Slot data over HTTP: where a host gets the bytes of a slot it has reserved.
//!
//! A real Codex host fetches a slot's blocks from the network by the request's CID. codex
//! instead reads them from an HTTP server named by `--data-source URL_TEMPLATE`, which keeps the
//! node simple and lets a deployment put anything behind that URL (a Codex node's REST API, a
//! static file server, an object store). The template has a `{cid}` placeholder and may have a
//! `{slot}` placeholder:
//!
//! - with `{slot}` (`http://host/{cid}/slots/{slot}`) the server serves each slot as its own
//!   resource, and the body of a plain GET is the slot's bytes;
//! - without it (`http://host/data/{cid}`) the server serves the whole dataset, and codex asks
//!   for the slot's bytes with `Range: bytes=START-END`, START = slot index × slot size.
//!
//! [`DataSource::parse`] validates a template once, before the node starts. [`download`] is
//! blocking and meant for a worker thread: it streams the body into `<path>.part`, zero-pads a
//! short last slot to the slot size, fsyncs, and renames the file into place, so a file at a
//! slot's path is always a complete slot. On any error, or when the job is cancelled, the
//! `.part` file is removed. Progress is reported in batches so that the event loop is not
//! flooded with one message per socket read.
//!
//! Invariants: the file at [`slot_path`] has exactly the slot's size once [`download`] returns
//! `Ok`; a download never waits longer than the job's stall timeout for the next byte.

use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

const CID: &str = "{cid}";
const SLOT: &str = "{slot}";
/// Bytes read from the socket and written to the file at a time.
const CHUNK: usize = 64 * 1024;
/// Progress is reported once at least this many bytes are written since the last report.
const PROGRESS_BATCH: u64 = 1024 * 1024;

/// A validated `--data-source` URL template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DataSource {
    template: String,
}

/// A `--data-source` value that cannot work. Our configuration's fault, never retried.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DataSourceError {
    /// The template does not start with `http://` or `https://`.
    #[error("--data-source {0:?} is not an http:// or https:// URL")]
    NotHttp(String),
    /// The template has no `{cid}`, so every request would fetch the same data.
    #[error("--data-source {0:?} has no {{cid}} placeholder")]
    NoCid(String),
    /// A `{` or `}` other than `{cid}` and `{slot}`, most likely a misspelt placeholder.
    #[error("--data-source {0:?} has a brace that is not part of {{cid}} or {{slot}}")]
    UnknownPlaceholder(String),
    /// With its placeholders filled in, the template is not a valid URL.
    #[error("--data-source {template:?} is not a valid URL: {reason}")]
    BadUrl { template: String, reason: String },
}

impl DataSource {
    /// Validates a URL template: `http://` or `https://`, at least one `{cid}`, optionally
    /// `{slot}`, no other braces, and a valid URL with a host once the placeholders are filled.
    pub fn parse(template: &str) -> Result<DataSource, DataSourceError> {
        let lower = template.to_ascii_lowercase();
        if !(lower.starts_with("http://") || lower.starts_with("https://")) {
            return Err(DataSourceError::NotHttp(template.to_string()));
        }
        if !template.contains(CID) {
            return Err(DataSourceError::NoCid(template.to_string()));
        }
        let stripped = template.replace(CID, "").replace(SLOT, "");
        if stripped.contains(['{', '}']) {
            return Err(DataSourceError::UnknownPlaceholder(template.to_string()));
        }
        let source = DataSource {
            template: template.to_string(),
        };
        let sample = source.url("zDvZRwzmSampleCid", 0);
        let bad = |reason: String| DataSourceError::BadUrl {
            template: template.to_string(),
            reason,
        };
        let uri = ureq::http::Uri::try_from(sample.as_str()).map_err(|e| bad(e.to_string()))?;
        if uri.host().is_none_or(str::is_empty) {
            return Err(bad("it has no host".to_string()));
        }
        Ok(source)
    }

    /// The URL of a slot's data: `{cid}` replaced by the CID (percent-encoded except for
    /// URL-unreserved characters, which covers every multibase CID unchanged) and `{slot}` by
    /// the slot index in decimal.
    pub fn url(&self, cid: &str, slot_index: u64) -> String {
        self.template
            .replace(CID, &percent_encode(cid))
            .replace(SLOT, &slot_index.to_string())
    }

    /// True when the template has `{slot}`: each slot is its own resource and is fetched whole,
    /// without a `Range` header.
    pub fn per_slot(&self) -> bool {
        self.template.contains(SLOT)
    }

    /// The template as given.
    pub fn template(&self) -> &str {
        &self.template
    }
}

/// Percent-encodes everything but RFC 3986 unreserved characters, so that a CID from the chain
/// can neither change the URL's structure nor inject a placeholder.
fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// One slot to fetch into `path`.
#[derive(Debug, Clone)]
pub struct DownloadJob {
    pub source: Arc<DataSource>,
    /// The request's CID as text, e.g. `zDvZRwzm…`.
    pub cid: String,
    pub slot_index: u64,
    /// Bytes per slot; the file ends up exactly this long.
    pub slot_size: u64,
    /// Where the slot's bytes go, usually [`slot_path`].
    pub path: PathBuf,
    /// The longest wait for the next byte (and for connecting, and for the response headers).
    /// Must be positive.
    pub stall_timeout: Duration,
    /// Set by the event loop to abandon the download; checked between chunks.
    pub cancel: Arc<AtomicBool>,
}

/// Why a download failed. [`DownloadError::is_transient`] tells which are worth a retry.
#[derive(Debug, thiserror::Error)]
pub enum DownloadError {
    /// The job's cancel flag was set. Nobody misbehaved.
    #[error("download cancelled")]
    Cancelled,
    /// The slot has no byte range: its size is 0, or its end lies past 2^64 bytes. The
    /// request's numbers are nonsense; retrying cannot help.
    #[error("slot {slot_index} of {slot_size} bytes has no byte range a data source can serve")]
    BadSlot { slot_index: u64, slot_size: u64 },
    /// Connecting, TLS or the HTTP exchange failed (refused, reset, DNS, protocol). Transient.
    #[error("GET {url}: {source}")]
    Request {
        url: String,
        #[source]
        source: ureq::Error,
    },
    /// Nothing arrived for the stall timeout: while connecting, waiting for the response
    /// headers, or between two reads of the body. Transient.
    #[error("GET {url}: the data source sent nothing for {timeout:?}")]
    Stalled { url: String, timeout: Duration },
    /// A status other than 2xx. 5xx, 408 and 429 are transient; others (404) mean the data
    /// source does not have the data.
    #[error("GET {url}: the data source answered {}", status_text(*status))]
    Status { url: String, status: u16 },
    /// A Range request got a 2xx other than 206 Partial Content: the data source ignored the
    /// range (it does not serve byte ranges). Skipping ahead in the whole dataset could mean
    /// downloading terabytes for one slot, so this is an error: use a `{slot}` template for
    /// such a server.
    #[error(
        "GET {url}: the data source answered {status} to a Range request instead of 206 \
         Partial Content (it does not serve byte ranges; use a {{slot}} template)"
    )]
    NotPartial { url: String, status: u16 },
    /// A 206 whose `Content-Range` does not start at the slot's first byte.
    #[error(
        "GET {url}: the data source sent Content-Range {got:?}, not the range from byte {start}"
    )]
    WrongRange {
        url: String,
        got: String,
        start: u64,
    },
    /// The body (or its announced `Content-Length`) is longer than a slot: wrong data.
    #[error("GET {url}: data source sent more than the slot's {slot_size} bytes")]
    TooLong { url: String, slot_size: u64 },
    /// Reading the body failed, e.g. the connection closed before the announced length.
    /// Transient.
    #[error("GET {url}: receiving the body: {source}")]
    Receive {
        url: String,
        #[source]
        source: io::Error,
    },
    /// Creating, writing, syncing or renaming the local file failed (a full disk, permissions).
    #[error("writing {}: {source}", path.display())]
    Write {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

impl DownloadError {
    /// True for failures of the network or of an overloaded data source, where the same
    /// download may succeed later.
    pub fn is_transient(&self) -> bool {
        match self {
            DownloadError::Request { .. }
            | DownloadError::Stalled { .. }
            | DownloadError::Receive { .. } => true,
            DownloadError::Status { status, .. } => {
                *status >= 500 || *status == 408 || *status == 429
            }
            _ => false,
        }
    }
}

/// `404 Not Found`, or just the number for a status without a standard reason phrase.
fn status_text(status: u16) -> String {
    match ureq::http::StatusCode::from_u16(status)
        .ok()
        .and_then(|s| s.canonical_reason())
    {
        Some(reason) => format!("{status} {reason}"),
        None => status.to_string(),
    }
}

/// Where a slot's data lives: `<data_dir>/slots/<slot_id_hex>`.
pub fn slot_path(data_dir: &Path, slot_id_hex: &str) -> PathBuf {
    data_dir.join("slots").join(slot_id_hex)
}

/// Deletes a slot's file and its `.part` file; either being absent is fine.
pub fn release(path: &Path) -> io::Result<()> {
    remove_if_present(path)?;
    remove_if_present(&part_path(path))
}

fn remove_if_present(path: &Path) -> io::Result<()> {
    match fs::remove_file(path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

/// `<path>.part`, where a download writes until it is complete.
fn part_path(path: &Path) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(".part");
    PathBuf::from(s)
}

/// Fetches one slot into `job.path` and returns the bytes written, which is `job.slot_size`.
///
/// `progress` receives the bytes written since its last call, at most once per MiB and once at
/// the end for the remainder; the calls add up to the return value (zero padding included).
///
/// Timeouts: `job.stall_timeout` bounds each wait separately: hostname resolution, connecting
/// (TLS included), sending the request, receiving the response headers, and each read of the
/// body (ureq's per-read timeout, which restarts with every read). There is deliberately no
/// bound on the whole download, since a large slot over a slow link may take hours while
/// making steady progress; the cancel flag ends a download that is no longer wanted.
///
/// A body shorter than the slot is zero-padded (the dataset's last slot is usually short).
/// A server that ends a body by closing the connection, with neither `Content-Length` nor
/// chunked encoding, cannot be told apart from one whose connection broke; such a body is
/// taken as complete.
pub fn download(job: &DownloadJob, progress: &mut dyn FnMut(u64)) -> Result<u64, DownloadError> {
    let part = part_path(&job.path);
    let result = fetch(job, &part, progress);
    if result.is_err() {
        // Best effort: the error being returned matters more than a failed cleanup.
        let _ = remove_if_present(&part);
    }
    result
}

fn fetch(
    job: &DownloadJob,
    part: &Path,
    progress: &mut dyn FnMut(u64),
) -> Result<u64, DownloadError> {
    let cancelled = || job.cancel.load(Ordering::Relaxed);
    if cancelled() {
        return Err(DownloadError::Cancelled);
    }
    let url = job.source.url(&job.cid, job.slot_index);
    let range = if job.source.per_slot() {
        None
    } else {
        let bad = || DownloadError::BadSlot {
            slot_index: job.slot_index,
            slot_size: job.slot_size,
        };
        let start = job.slot_index.checked_mul(job.slot_size).ok_or_else(bad)?;
        let last = job.slot_size.checked_sub(1).ok_or_else(bad)?;
        let end = start.checked_add(last).ok_or_else(bad)?;
        Some((start, end))
    };

    let stall = Some(job.stall_timeout);
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .user_agent(concat!("codex/", env!("CARGO_PKG_VERSION")))
        .timeout_resolve(stall)
        .timeout_connect(stall)
        .timeout_send_request(stall)
        .timeout_recv_response(stall)
        .timeout_per_read(stall)
        .timeout_per_write(stall)
        .build()
        .into();
    let mut request = agent.get(&url);
    if let Some((start, end)) = range {
        request = request.header("Range", &format!("bytes={start}-{end}"));
    }
    let mut response = request.call().map_err(|e| match e {
        ureq::Error::Timeout(_) => stalled(&url, job.stall_timeout),
        ureq::Error::Io(e) if is_timeout(&e) => stalled(&url, job.stall_timeout),
        e => DownloadError::Request {
            url: url.clone(),
            source: e,
        },
    })?;

    let status = response.status();
    if !status.is_success() {
        return Err(DownloadError::Status {
            url,
            status: status.as_u16(),
        });
    }
    if let Some((start, _)) = range {
        if status.as_u16() != 206 {
            return Err(DownloadError::NotPartial {
                url,
                status: status.as_u16(),
            });
        }
        if let Some(value) = response.headers().get("content-range") {
            let got = String::from_utf8_lossy(value.as_bytes()).into_owned();
            if content_range_start(&got) != Some(start) {
                return Err(DownloadError::WrongRange { url, got, start });
            }
        }
    }
    let too_long = |url: &str| DownloadError::TooLong {
        url: url.to_string(),
        slot_size: job.slot_size,
    };
    if response
        .body()
        .content_length()
        .is_some_and(|n| n > job.slot_size)
    {
        return Err(too_long(&url));
    }

    let write_error = |source| DownloadError::Write {
        path: part.to_path_buf(),
        source,
    };
    if let Some(dir) = part.parent() {
        fs::create_dir_all(dir).map_err(write_error)?;
    }
    let mut file = File::create(part).map_err(write_error)?;
    let mut reader = response.body_mut().as_reader();
    let mut buf = vec![0u8; CHUNK];
    let mut written: u64 = 0;
    let mut unreported: u64 = 0;
    loop {
        if cancelled() {
            return Err(DownloadError::Cancelled);
        }
        let n = match reader.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) if is_timeout(&e) => return Err(stalled(&url, job.stall_timeout)),
            Err(source) => return Err(DownloadError::Receive { url, source }),
        };
        // n <= CHUNK, so the cast is lossless; `written` never exceeds the slot size.
        let n64 = n as u64;
        if n64 > job.slot_size - written {
            return Err(too_long(&url));
        }
        file.write_all(&buf[..n]).map_err(write_error)?;
        written += n64;
        unreported += n64;
        if unreported >= PROGRESS_BATCH {
            progress(unreported);
            unreported = 0;
        }
    }
    drop(reader);

    // A short last slot: pad with real zeros rather than a sparse hole, so that a disk that
    // cannot hold the slot fails now and not when a proof reads it.
    buf.fill(0);
    while written < job.slot_size {
        if cancelled() {
            return Err(DownloadError::Cancelled);
        }
        let n = (job.slot_size - written).min(CHUNK as u64);
        // n <= CHUNK, so the cast is lossless.
        file.write_all(&buf[..n as usize]).map_err(write_error)?;
        written += n;
        unreported += n;
        if unreported >= PROGRESS_BATCH {
            progress(unreported);
            unreported = 0;
        }
    }
    if unreported > 0 {
        progress(unreported);
    }

    file.sync_all().map_err(write_error)?;
    drop(file);
    fs::rename(part, &job.path).map_err(|source| DownloadError::Write {
        path: job.path.clone(),
        source,
    })?;
    sync_parent(&job.path)?;
    Ok(written)
}

/// Makes the rename durable. If that fails the slot's file is removed again, so that an error
/// never leaves a file behind that a restart would take as complete.
fn sync_parent(path: &Path) -> Result<(), DownloadError> {
    #[cfg(unix)]
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        if let Err(source) = File::open(dir).and_then(|d| d.sync_all()) {
            let _ = remove_if_present(path);
            return Err(DownloadError::Write {
                path: dir.to_path_buf(),
                source,
            });
        }
    }
    #[cfg(not(unix))]
    let _ = path;
    Ok(())
}

fn stalled(url: &str, timeout: Duration) -> DownloadError {
    DownloadError::Stalled {
        url: url.to_string(),
        timeout,
    }
}

/// A read timeout as ureq reports it: its own `Timeout` error wrapped in an `io::Error`, or a
/// socket timeout.
fn is_timeout(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::TimedOut | io::ErrorKind::WouldBlock
    ) || e
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<ureq::Error>())
        .is_some_and(|inner| match inner {
            ureq::Error::Timeout(_) => true,
            ureq::Error::Io(e) => is_timeout(e),
            _ => false,
        })
}

/// The first byte of `bytes START-END/TOTAL`.
pub(crate) fn content_range_start(value: &str) -> Option<u64> {
    let rest = value.trim().strip_prefix("bytes")?.trim_start();
    let (start, _) = rest.split_once('-')?;
    start.trim().parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{TcpListener, TcpStream};
    use std::sync::mpsc;
    use std::thread::{self, JoinHandle};
    use std::time::Instant;

    /// What the test server received.
    #[derive(Debug)]
    struct Received {
        request_line: String,
        range: Option<String>,
    }

    /// A one-connection HTTP/1.1 server: reads the request head, hands it to `respond`, and
    /// returns it from the join handle.
    fn serve<F>(respond: F) -> (String, JoinHandle<Received>)
    where
        F: FnOnce(&Received, &mut TcpStream) + Send + 'static,
    {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("local addr");
        let handle = thread::spawn(move || {
            let (mut stream, _) = listener.accept().expect("accept");
            let received = read_head(&mut stream);
            respond(&received, &mut stream);
            received
        });
        (format!("http://{addr}"), handle)
    }

    fn read_head(stream: &mut TcpStream) -> Received {
        let mut head = Vec::new();
        let mut byte = [0u8; 1];
        while !head.ends_with(b"\r\n\r\n") {
            match stream.read(&mut byte) {
                Ok(1) => head.push(byte[0]),
                _ => break,
            }
        }
        let text = String::from_utf8_lossy(&head).into_owned();
        let mut lines = text.split("\r\n");
        let request_line = lines.next().unwrap_or_default().to_string();
        let range = lines
            .filter_map(|l| l.split_once(':'))
            .find(|(name, _)| name.trim().eq_ignore_ascii_case("range"))
            .map(|(_, value)| value.trim().to_string());
        Received {
            request_line,
            range,
        }
    }

    /// `bytes=S-E` → (S, E).
    fn parse_range(value: &str) -> (usize, usize) {
        let (s, e) = value
            .strip_prefix("bytes=")
            .and_then(|r| r.split_once('-'))
            .expect("range syntax");
        (s.parse().expect("start"), e.parse().expect("end"))
    }

    fn respond(stream: &mut TcpStream, status: &str, headers: &str, body: &[u8]) {
        let head = format!("HTTP/1.1 {status}\r\n{headers}Connection: close\r\n\r\n");
        // The client may hang up early (cancel, too long); that is the test's business.
        let _ = stream.write_all(head.as_bytes());
        let _ = stream.write_all(body);
    }

    fn respond_body(stream: &mut TcpStream, body: &[u8]) {
        let len = format!("Content-Length: {}\r\n", body.len());
        respond(stream, "200 OK", &len, body);
    }

    /// Serves ranges of `data` like a file server: 206 with the part of the range that exists.
    fn range_server(data: Vec<u8>) -> (String, JoinHandle<Received>) {
        serve(move |req, stream| {
            let (start, end) = parse_range(req.range.as_deref().expect("a Range header"));
            let end = end.min(data.len() - 1);
            let body = &data[start..=end];
            let headers = format!(
                "Content-Range: bytes {start}-{end}/{}\r\nContent-Length: {}\r\n",
                data.len(),
                body.len()
            );
            respond(stream, "206 Partial Content", &headers, body);
        })
    }

    fn pattern(len: usize) -> Vec<u8> {
        (0..len).map(|i| (i * 7 + i / 251) as u8).collect()
    }

    fn job(template: &str, dir: &Path, slot_index: u64, slot_size: u64) -> DownloadJob {
        DownloadJob {
            source: Arc::new(DataSource::parse(template).expect("template")),
            cid: "zDvZRwzmTestCid".to_string(),
            slot_index,
            slot_size,
            path: slot_path(dir, "0xabcd"),
            stall_timeout: Duration::from_secs(10),
            cancel: Arc::new(AtomicBool::new(false)),
        }
    }

    fn no_progress() -> impl FnMut(u64) {
        |_| {}
    }

    fn assert_nothing_left(job: &DownloadJob) {
        assert!(!job.path.exists(), "{} exists", job.path.display());
        let part = part_path(&job.path);
        assert!(!part.exists(), "{} exists", part.display());
    }

    #[test]
    fn templates_are_validated() {
        let err = DataSource::parse("http://x/data").unwrap_err();
        assert_eq!(
            err.to_string(),
            r#"--data-source "http://x/data" has no {cid} placeholder"#
        );
        assert!(matches!(
            DataSource::parse("ftp://x/{cid}"),
            Err(DataSourceError::NotHttp(_))
        ));
        assert!(matches!(
            DataSource::parse("/data/{cid}"),
            Err(DataSourceError::NotHttp(_))
        ));
        assert!(matches!(
            DataSource::parse("http://x/{cid}/{slotIndex}"),
            Err(DataSourceError::UnknownPlaceholder(_))
        ));
        assert!(matches!(
            DataSource::parse("http:///{cid}"),
            Err(DataSourceError::BadUrl { .. })
        ));
        assert!(matches!(
            DataSource::parse("http://x/a b/{cid}"),
            Err(DataSourceError::BadUrl { .. })
        ));

        let whole = DataSource::parse("https://x:8080/data/{cid}").expect("valid");
        assert!(!whole.per_slot());
        assert_eq!(whole.url("zAb", 7), "https://x:8080/data/zAb");
        let slots = DataSource::parse("HTTP://x/{cid}/slots/{slot}?c={cid}").expect("valid");
        assert!(slots.per_slot());
        assert_eq!(slots.url("zAb", 7), "HTTP://x/zAb/slots/7?c=zAb");
        // A CID cannot change the URL's structure or smuggle in a placeholder.
        assert_eq!(
            slots.url("a/b{slot}", 1),
            "HTTP://x/a%2Fb%7Bslot%7D/slots/1?c=a%2Fb%7Bslot%7D"
        );
    }

    #[test]
    fn per_slot_template_fetches_the_slot_without_range() {
        let data = pattern(5000);
        let body = data.clone();
        let (base, server) = serve(move |_, stream| respond_body(stream, &body));
        let dir = tempfile::tempdir().expect("tempdir");
        let job = job(
            &format!("{base}/{{cid}}/slots/{{slot}}"),
            dir.path(),
            3,
            5000,
        );

        let n = download(&job, &mut no_progress()).expect("download");

        assert_eq!(n, 5000);
        assert_eq!(fs::read(&job.path).expect("slot file"), data);
        assert!(!part_path(&job.path).exists());
        let received = server.join().expect("server");
        assert_eq!(
            received.request_line,
            "GET /zDvZRwzmTestCid/slots/3 HTTP/1.1"
        );
        assert_eq!(received.range, None);
    }

    #[test]
    fn range_template_asks_for_the_slots_bytes() {
        let data = pattern(3000);
        let (base, server) = range_server(data.clone());
        let dir = tempfile::tempdir().expect("tempdir");
        let job = job(&format!("{base}/data/{{cid}}"), dir.path(), 1, 1000);

        let n = download(&job, &mut no_progress()).expect("download");

        assert_eq!(n, 1000);
        assert_eq!(fs::read(&job.path).expect("slot file"), &data[1000..2000]);
        let received = server.join().expect("server");
        assert_eq!(received.request_line, "GET /data/zDvZRwzmTestCid HTTP/1.1");
        assert_eq!(received.range.as_deref(), Some("bytes=1000-1999"));
    }

    #[test]
    fn short_last_slot_is_zero_padded() {
        let data = pattern(2500);
        let (base, server) = range_server(data.clone());
        let dir = tempfile::tempdir().expect("tempdir");
        let job = job(&format!("{base}/data/{{cid}}"), dir.path(), 2, 1000);
        let mut reported = 0;

        let n = download(&job, &mut |b| reported += b).expect("download");

        assert_eq!((n, reported), (1000, 1000));
        let got = fs::read(&job.path).expect("slot file");
        assert_eq!(got.len(), 1000);
        assert_eq!(&got[..500], &data[2000..]);
        assert!(got[500..].iter().all(|&b| b == 0));
        let received = server.join().expect("server");
        assert_eq!(received.range.as_deref(), Some("bytes=2000-2999"));
    }

    #[test]
    fn non_2xx_status_is_an_error_naming_status_and_url() {
        let (base, server) = serve(|_, stream| respond(stream, "404 Not Found", "", b""));
        let dir = tempfile::tempdir().expect("tempdir");
        let job = job(&format!("{base}/{{cid}}/{{slot}}"), dir.path(), 0, 100);

        let err = download(&job, &mut no_progress()).unwrap_err();

        assert!(
            matches!(err, DownloadError::Status { status: 404, .. }),
            "{err:?}"
        );
        assert!(!err.is_transient());
        let msg = err.to_string();
        assert!(msg.contains("404 Not Found"), "{msg}");
        assert!(msg.contains(&format!("{base}/zDvZRwzmTestCid/0")), "{msg}");
        assert_nothing_left(&job);
        server.join().expect("server");
    }

    #[test]
    fn a_range_request_answered_with_200_is_an_error() {
        let (base, server) = serve(|_, stream| respond_body(stream, &[1u8; 100]));
        let dir = tempfile::tempdir().expect("tempdir");
        let job = job(&format!("{base}/{{cid}}"), dir.path(), 0, 100);

        let err = download(&job, &mut no_progress()).unwrap_err();

        assert!(
            matches!(err, DownloadError::NotPartial { status: 200, .. }),
            "{err:?}"
        );
        assert_nothing_left(&job);
        server.join().expect("server");
    }

    #[test]
    fn more_bytes_than_the_slot_is_an_error() {
        let dir = tempfile::tempdir().expect("tempdir");
        // Announced by Content-Length: refused before anything is written.
        let (base, server) = serve(|_, stream| respond_body(stream, &[1u8; 101]));
        let announced = job(&format!("{base}/{{cid}}/{{slot}}"), dir.path(), 0, 100);
        let err = download(&announced, &mut no_progress()).unwrap_err();
        assert!(
            matches!(err, DownloadError::TooLong { slot_size: 100, .. }),
            "{err:?}"
        );
        assert!(
            err.to_string().contains("more than the slot's 100 bytes"),
            "{err}"
        );
        assert_nothing_left(&announced);
        server.join().expect("server");

        // Not announced (the body ends when the connection closes): noticed while streaming.
        let (base, server) = serve(|_, stream| respond(stream, "200 OK", "", &[1u8; 200_000]));
        let streamed = job(&format!("{base}/{{cid}}/{{slot}}"), dir.path(), 0, 100_000);
        let err = download(&streamed, &mut no_progress()).unwrap_err();
        assert!(matches!(err, DownloadError::TooLong { .. }), "{err:?}");
        assert_nothing_left(&streamed);
        server.join().expect("server");
    }

    #[test]
    fn a_stalled_data_source_ends_in_an_error() {
        let dir = tempfile::tempdir().expect("tempdir");
        for headers_first in [true, false] {
            let (release_server, wait) = mpsc::channel::<()>();
            let (base, server) = serve(move |_, stream| {
                if headers_first {
                    let _ = stream.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n");
                    let _ = stream.write_all(&[1u8; 10]);
                }
                // Hold the connection open, silent, until the test is done.
                let _ = wait.recv();
            });
            let mut job = job(&format!("{base}/{{cid}}/{{slot}}"), dir.path(), 0, 1000);
            job.stall_timeout = Duration::from_millis(300);
            let started = Instant::now();

            let err = download(&job, &mut no_progress()).unwrap_err();

            assert!(matches!(err, DownloadError::Stalled { .. }), "{err:?}");
            assert!(err.is_transient());
            assert!(started.elapsed() < Duration::from_secs(5));
            assert_nothing_left(&job);
            drop(release_server);
            server.join().expect("server");
        }
    }

    #[test]
    fn cancel_stops_the_download_and_removes_the_part_file() {
        let body = pattern(4 << 20);
        let (base, server) = serve(move |_, stream| respond_body(stream, &body));
        let dir = tempfile::tempdir().expect("tempdir");
        let job = job(&format!("{base}/{{cid}}/{{slot}}"), dir.path(), 0, 4 << 20);
        let cancel = Arc::clone(&job.cancel);
        let mut calls = 0;

        let err = download(&job, &mut |_| {
            calls += 1;
            cancel.store(true, Ordering::Relaxed);
        })
        .unwrap_err();

        assert!(matches!(err, DownloadError::Cancelled), "{err:?}");
        assert_eq!(calls, 1);
        assert_nothing_left(&job);
        server.join().expect("server");

        // Already cancelled: no request at all (nothing listens on this port's template).
        let job = job_for_unreachable(dir.path());
        job.cancel.store(true, Ordering::Relaxed);
        assert!(matches!(
            download(&job, &mut no_progress()),
            Err(DownloadError::Cancelled)
        ));
    }

    fn job_for_unreachable(dir: &Path) -> DownloadJob {
        job("http://127.0.0.1:1/{cid}", dir, 0, 100)
    }

    #[test]
    fn progress_is_reported_in_batches() {
        let size = (3 << 20) + 100;
        let body = pattern(size);
        let (base, server) = serve(move |_, stream| respond_body(stream, &body));
        let dir = tempfile::tempdir().expect("tempdir");
        let job = job(
            &format!("{base}/{{cid}}/{{slot}}"),
            dir.path(),
            0,
            size as u64,
        );
        let mut calls = Vec::new();

        let n = download(&job, &mut |b| calls.push(b)).expect("download");

        assert_eq!(n, size as u64);
        assert_eq!(calls.iter().sum::<u64>(), n);
        let chunks = size.div_ceil(CHUNK);
        assert!(calls.len() <= 4 && calls.len() < chunks, "{calls:?}");
        let (last, batches) = calls.split_last().expect("at least one call");
        assert!(*last > 0);
        assert!(batches.iter().all(|&b| b >= PROGRESS_BATCH), "{calls:?}");
        server.join().expect("server");
    }

    #[test]
    fn a_slot_without_a_byte_range_is_refused_before_any_request() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut job = job_for_unreachable(dir.path());
        job.slot_index = u64::MAX;
        job.slot_size = 2;
        let err = download(&job, &mut no_progress()).unwrap_err();
        assert!(matches!(err, DownloadError::BadSlot { .. }), "{err:?}");
        job.slot_index = 0;
        job.slot_size = 0;
        let err = download(&job, &mut no_progress()).unwrap_err();
        assert!(matches!(err, DownloadError::BadSlot { .. }), "{err:?}");
    }

    #[test]
    fn release_deletes_the_slot_and_its_part_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = slot_path(dir.path(), "0x01");
        assert_eq!(path, dir.path().join("slots").join("0x01"));
        release(&path).expect("nothing to release is fine");
        fs::create_dir_all(dir.path().join("slots")).expect("mkdir");
        fs::write(&path, b"x").expect("write");
        fs::write(part_path(&path), b"y").expect("write");
        release(&path).expect("release");
        assert!(!path.exists() && !part_path(&path).exists());
    }

    #[test]
    fn content_range_start_parses_the_first_byte() {
        assert_eq!(content_range_start("bytes 1000-1999/3000"), Some(1000));
        assert_eq!(content_range_start("bytes 0-9/*"), Some(0));
        assert_eq!(content_range_start("bytes */3000"), None);
    }
}
