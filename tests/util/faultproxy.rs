//! A fault-injecting HTTP/1.1 proxy between gatevault and an object store emulator (moto for S3,
//! Azurite for Azure Blob), on a free loopback port.
//!
//! Each client connection is served request by request (keep-alive): the proxy reads the request head
//! and its body (by `Content-Length` or chunked encoding), forwards it to the upstream on a fresh
//! connection of its own, reads the whole response (by `Content-Length`, chunked encoding or end of
//! stream) and sends it back with a `Content-Length`. With the probabilities of [`Faults`] it instead:
//!
//! - answers 500 or 503 itself, with the store's XML error body, without forwarding (`error_before`);
//! - forwards, so the write happens, and then answers 500 or 503 (`error_after`): the client retries a
//!   request that already took effect, which a create-only write then sees as "already exists";
//! - resets the connection (TCP RST) before or after forwarding (`reset_before`, `reset_after`);
//! - sends the full `Content-Length` of a response with a body, half the body, and closes (`truncate`);
//! - holds the response back for [`Faults::delay_for`] (`delay`);
//! - or, under [`Forbid`], answers 403 to every matching request: a permanent error, never forwarded.
//!
//! At most one fault per request, drawn from a seeded generator so that a run is reproducible (up to
//! the order in which concurrent requests arrive). [`FaultProxy::injected`] counts what was done, so a
//! test can assert that each kind of fault actually happened.

use std::io::{self, BufRead, BufReader, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::Rng;

/// Which store's error bodies the proxy imitates.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Flavor {
    /// S3: `<Error><Code>SlowDown</Code>...`.
    S3,
    /// Azure Blob: `<Error><Code>ServerBusy</Code>...` and an `x-ms-error-code` header.
    Azure,
}

/// Requests answered with a permanent 403 (never forwarded).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Forbid {
    /// None.
    Nothing,
    /// Every request.
    Everything,
    /// Writes and removals (`PUT`, `POST`, `DELETE`, `PATCH`) whose path contains the string (`""`:
    /// every write), like a credential that may read but not write there.
    WritesTo(String),
}

/// What the proxy does to requests: the probability of each fault (at most one per request; their
/// sum must not exceed 1).
#[derive(Clone, Debug)]
pub struct Faults {
    /// Seed of the generator that draws the faults.
    pub seed: u64,
    /// Answer 500/503 without forwarding.
    pub error_before: f64,
    /// Forward, then answer 500/503.
    pub error_after: f64,
    /// Reset the connection without forwarding.
    pub reset_before: f64,
    /// Forward, then reset the connection.
    pub reset_after: f64,
    /// Send half of a response body after its full `Content-Length`, then close.
    pub truncate: f64,
    /// Hold the response back for `delay_for`.
    pub delay: f64,
    /// How long a delayed response waits.
    pub delay_for: Duration,
    /// Permanent 403s.
    pub forbid: Forbid,
}

impl Faults {
    /// No faults: a plain forwarding proxy.
    pub fn none(seed: u64) -> Self {
        Self {
            seed,
            error_before: 0.0,
            error_after: 0.0,
            reset_before: 0.0,
            reset_after: 0.0,
            truncate: 0.0,
            delay: 0.0,
            delay_for: Duration::from_millis(300),
            forbid: Forbid::Nothing,
        }
    }

    /// Every kind of fault, `rate` of the requests faulted in all, split evenly among the six kinds.
    pub fn mixed(seed: u64, rate: f64) -> Self {
        let each = rate / 6.0;
        Self {
            error_before: each,
            error_after: each,
            reset_before: each,
            reset_after: each,
            truncate: each,
            delay: each,
            ..Self::none(seed)
        }
    }

    /// Only permanent 403s, for requests `forbid` matches.
    pub fn forbidden(seed: u64, forbid: Forbid) -> Self {
        Self {
            forbid,
            ..Self::none(seed)
        }
    }
}

/// What the proxy did, by kind.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Injected {
    /// Requests received.
    pub requests: u64,
    /// Requests forwarded to the upstream.
    pub forwarded: u64,
    /// 500/503 answered without forwarding.
    pub error_before: u64,
    /// 500/503 answered after forwarding.
    pub error_after: u64,
    /// Connections reset before forwarding.
    pub reset_before: u64,
    /// Connections reset after forwarding.
    pub reset_after: u64,
    /// Response bodies cut short.
    pub truncated: u64,
    /// Responses delayed.
    pub delayed: u64,
    /// 403s answered.
    pub forbidden: u64,
}

impl Injected {
    /// Requests that saw a transient fault (every kind but delays and 403s).
    pub fn failed(&self) -> u64 {
        self.error_before + self.error_after + self.reset_before + self.reset_after + self.truncated
    }
}

#[derive(Default)]
struct Counters([AtomicU64; 9]);

#[derive(Clone, Copy)]
enum Kind {
    Requests,
    Forwarded,
    ErrorBefore,
    ErrorAfter,
    ResetBefore,
    ResetAfter,
    Truncated,
    Delayed,
    Forbidden,
}

impl Counters {
    fn bump(&self, k: Kind) {
        self.0[k as usize].fetch_add(1, Ordering::Relaxed);
    }

    fn get(&self, k: Kind) -> u64 {
        self.0[k as usize].load(Ordering::Relaxed)
    }
}

struct Shared {
    upstream: SocketAddr,
    flavor: Flavor,
    faults: Mutex<(Faults, Rng)>,
    counts: Counters,
    stop: AtomicBool,
}

/// The proxy; it stops accepting connections when dropped.
pub struct FaultProxy {
    shared: Arc<Shared>,
    /// Its port on 127.0.0.1.
    pub port: u16,
}

impl FaultProxy {
    /// Starts a proxy to `127.0.0.1:upstream_port` on a free loopback port.
    pub fn start(upstream_port: u16, flavor: Flavor, faults: Faults) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the fault proxy");
        let port = listener.local_addr().expect("proxy address").port();
        let rng = Rng::new(faults.seed);
        let shared = Arc::new(Shared {
            upstream: SocketAddr::from(([127, 0, 0, 1], upstream_port)),
            flavor,
            faults: Mutex::new((faults, rng)),
            counts: Counters::default(),
            stop: AtomicBool::new(false),
        });
        let s = shared.clone();
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                if s.stop.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(conn) = conn else { continue };
                let s = s.clone();
                std::thread::spawn(move || {
                    let _ = serve(&s, conn);
                });
            }
        });
        Self { shared, port }
    }

    /// `http://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Replaces the fault settings (and reseeds), for example to lift a 403.
    pub fn set(&self, faults: Faults) {
        let rng = Rng::new(faults.seed);
        *self.shared.faults.lock().unwrap_or_else(|e| e.into_inner()) = (faults, rng);
    }

    /// What was injected so far.
    pub fn injected(&self) -> Injected {
        let c = &self.shared.counts;
        Injected {
            requests: c.get(Kind::Requests),
            forwarded: c.get(Kind::Forwarded),
            error_before: c.get(Kind::ErrorBefore),
            error_after: c.get(Kind::ErrorAfter),
            reset_before: c.get(Kind::ResetBefore),
            reset_after: c.get(Kind::ResetAfter),
            truncated: c.get(Kind::Truncated),
            delayed: c.get(Kind::Delayed),
            forbidden: c.get(Kind::Forbidden),
        }
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        // Wake the accept loop so that it sees the flag.
        let _ = TcpStream::connect(("127.0.0.1", self.port));
    }
}

/// A request or response head.
#[derive(Debug)]
pub struct Head {
    /// `GET /path HTTP/1.1` or `HTTP/1.1 200 OK`.
    pub start: String,
    /// Headers in order, names as sent.
    pub headers: Vec<(String, String)>,
}

impl Head {
    /// The first value of header `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.trim())
    }

    fn chunked(&self) -> bool {
        self.header("transfer-encoding")
            .is_some_and(|v| v.to_ascii_lowercase().contains("chunked"))
    }

    fn content_length(&self) -> io::Result<Option<usize>> {
        self.header("content-length")
            .map(|v| {
                v.parse()
                    .map_err(|_| bad(format!("bad Content-Length {v:?}")))
            })
            .transpose()
    }

    /// The status of a response head.
    pub fn status(&self) -> u16 {
        self.start
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or(0)
    }
}

fn bad(msg: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg)
}

/// Reads a head; `None` at a clean end of stream before it.
pub fn read_head(r: &mut impl BufRead) -> io::Result<Option<Head>> {
    let mut start = String::new();
    if r.read_line(&mut start)? == 0 {
        return Ok(None);
    }
    let start = start.trim_end().to_string();
    let mut headers = Vec::new();
    loop {
        let mut line = String::new();
        if r.read_line(&mut line)? == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        let line = line.trim_end();
        if line.is_empty() {
            break;
        }
        let (k, v) = line
            .split_once(':')
            .ok_or_else(|| bad(format!("bad header line {line:?}")))?;
        headers.push((k.trim().to_string(), v.trim().to_string()));
        if headers.len() > 200 {
            return Err(bad("too many headers".into()));
        }
    }
    Ok(Some(Head { start, headers }))
}

/// Reads a body framed by `Content-Length` or chunked encoding (decoded); with neither, an empty body
/// for a request and everything up to the end of stream for a response (`to_eof`).
pub fn read_body(r: &mut impl BufRead, head: &Head, to_eof: bool) -> io::Result<Vec<u8>> {
    if head.chunked() {
        let mut body = Vec::new();
        loop {
            let mut line = String::new();
            r.read_line(&mut line)?;
            let size = line.trim().split(';').next().unwrap_or("");
            let size = usize::from_str_radix(size, 16)
                .map_err(|_| bad(format!("bad chunk size {line:?}")))?;
            if size == 0 {
                // Trailers, up to an empty line.
                loop {
                    let mut t = String::new();
                    if r.read_line(&mut t)? == 0 || t.trim().is_empty() {
                        return Ok(body);
                    }
                }
            }
            let at = body.len();
            body.resize(at + size, 0);
            r.read_exact(&mut body[at..])?;
            let mut crlf = [0u8; 2];
            r.read_exact(&mut crlf)?;
        }
    }
    if let Some(n) = head.content_length()? {
        let mut body = vec![0; n];
        r.read_exact(&mut body)?;
        return Ok(body);
    }
    let mut body = Vec::new();
    if to_eof {
        r.read_to_end(&mut body)?;
    }
    Ok(body)
}

/// Hop-by-hop headers and framing the proxy sets itself.
fn hop_by_hop(name: &str) -> bool {
    [
        "connection",
        "keep-alive",
        "transfer-encoding",
        "te",
        "trailer",
        "upgrade",
        "expect",
        "proxy-connection",
    ]
    .iter()
    .any(|h| name.eq_ignore_ascii_case(h))
}

fn write_head(
    w: &mut impl Write,
    start: &str,
    headers: &[(String, String)],
    content_length: Option<usize>,
    close: bool,
) -> io::Result<()> {
    let mut out = format!("{start}\r\n");
    for (k, v) in headers {
        if hop_by_hop(k) || (content_length.is_some() && k.eq_ignore_ascii_case("content-length")) {
            continue;
        }
        out.push_str(&format!("{k}: {v}\r\n"));
    }
    if let Some(n) = content_length {
        out.push_str(&format!("Content-Length: {n}\r\n"));
    }
    out.push_str(if close {
        "Connection: close\r\n\r\n"
    } else {
        "Connection: keep-alive\r\n\r\n"
    });
    w.write_all(out.as_bytes())
}

/// The fault drawn for one request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Fault {
    None,
    Forbidden,
    ErrorBefore(u16),
    ErrorAfter(u16),
    ResetBefore,
    ResetAfter,
    Truncate,
    Delay(Duration),
}

fn draw(shared: &Shared, method: &str, path: &str) -> Fault {
    let mut g = shared.faults.lock().unwrap_or_else(|e| e.into_inner());
    let (f, rng) = &mut *g;
    let write = matches!(method, "PUT" | "POST" | "DELETE" | "PATCH");
    let forbidden = match &f.forbid {
        Forbid::Nothing => false,
        Forbid::Everything => true,
        Forbid::WritesTo(p) => write && path.contains(p.as_str()),
    };
    if forbidden {
        return Fault::Forbidden;
    }
    let u = rng.unit();
    let status = if rng.below(2) == 0 { 500 } else { 503 };
    let mut acc = 0.0;
    for (p, fault) in [
        (f.error_before, Fault::ErrorBefore(status)),
        (f.error_after, Fault::ErrorAfter(status)),
        (f.reset_before, Fault::ResetBefore),
        (f.reset_after, Fault::ResetAfter),
        (f.truncate, Fault::Truncate),
        (f.delay, Fault::Delay(f.delay_for)),
    ] {
        acc += p;
        if u < acc {
            return fault;
        }
    }
    Fault::None
}

/// The store's error response for `status`.
fn error_response(flavor: Flavor, status: u16, head_only: bool) -> Vec<u8> {
    let (reason, code, message) = match (flavor, status) {
        (Flavor::S3, 403) => ("Forbidden", "AccessDenied", "Access Denied"),
        (Flavor::S3, 503) => (
            "Service Unavailable",
            "SlowDown",
            "Please reduce your request rate.",
        ),
        (Flavor::S3, _) => (
            "Internal Server Error",
            "InternalError",
            "We encountered an internal error. Please try again.",
        ),
        (Flavor::Azure, 403) => (
            "Forbidden",
            "AuthorizationPermissionMismatch",
            "This request is not authorized to perform this operation using this permission.",
        ),
        (Flavor::Azure, 503) => (
            "Service Unavailable",
            "ServerBusy",
            "The server is currently unable to receive requests. Please retry your request.",
        ),
        (Flavor::Azure, _) => (
            "Internal Server Error",
            "InternalError",
            "The server encountered an internal error. Please retry the request.",
        ),
    };
    let body = match flavor {
        Flavor::S3 => format!(
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>{code}</Code><Message>{message}</Message><RequestId>faultproxy</RequestId><HostId>faultproxy</HostId></Error>"
        ),
        Flavor::Azure => format!(
            "\u{feff}<?xml version=\"1.0\" encoding=\"utf-8\"?><Error><Code>{code}</Code><Message>{message}\nRequestId:faultproxy</Message></Error>"
        ),
    };
    let mut out = format!(
        "HTTP/1.1 {status} {reason}\r\nContent-Type: application/xml\r\nContent-Length: {}\r\n",
        body.len()
    );
    if flavor == Flavor::Azure {
        out.push_str(&format!("x-ms-error-code: {code}\r\n"));
    }
    out.push_str("\r\n");
    let mut out = out.into_bytes();
    if !head_only {
        out.extend_from_slice(body.as_bytes());
    }
    out
}

/// Closes `conn` with a TCP reset instead of an orderly close.
fn reset(conn: TcpStream) {
    let _ = socket2::SockRef::from(&conn).set_linger(Some(Duration::ZERO));
    drop(conn);
}

/// An upstream response, read whole.
struct Response {
    head: Head,
    body: Vec<u8>,
    /// Whether it may carry a body at all (not for HEAD, 1xx, 204, 304).
    has_body: bool,
}

fn forward(shared: &Shared, req: &Head, body: &[u8], method: &str) -> io::Result<Response> {
    let mut up = TcpStream::connect(shared.upstream)?;
    up.set_read_timeout(Some(Duration::from_secs(120)))?;
    let mut headers = req.headers.clone();
    let length = if req.chunked() {
        Some(body.len())
    } else {
        None
    };
    if length.is_some() {
        headers.retain(|(k, _)| !k.eq_ignore_ascii_case("content-length"));
    }
    let mut buf = Vec::with_capacity(body.len() + 1024);
    write_head(&mut buf, &req.start, &headers, length, true)?;
    buf.extend_from_slice(body);
    up.write_all(&buf)?;
    let mut r = BufReader::new(up);
    loop {
        let head = read_head(&mut r)?.ok_or(io::ErrorKind::UnexpectedEof)?;
        let status = head.status();
        if (100..200).contains(&status) {
            continue; // an interim 100 Continue
        }
        let has_body = method != "HEAD" && status != 204 && status != 304;
        let body = if has_body {
            read_body(&mut r, &head, true)?
        } else {
            Vec::new()
        };
        shared.counts.bump(Kind::Forwarded);
        return Ok(Response {
            head,
            body,
            has_body,
        });
    }
}

fn serve(shared: &Shared, conn: TcpStream) -> io::Result<()> {
    let mut out = conn.try_clone()?;
    let mut r = BufReader::new(conn);
    loop {
        let Some(req) = read_head(&mut r)? else {
            return Ok(());
        };
        if req
            .header("expect")
            .is_some_and(|v| v.eq_ignore_ascii_case("100-continue"))
        {
            out.write_all(b"HTTP/1.1 100 Continue\r\n\r\n")?;
        }
        let body = read_body(&mut r, &req, false)?;
        shared.counts.bump(Kind::Requests);
        let mut parts = req.start.split_whitespace();
        let method = parts.next().unwrap_or("").to_string();
        let path = parts.next().unwrap_or("").to_string();
        let close = req
            .header("connection")
            .is_some_and(|v| v.eq_ignore_ascii_case("close"))
            || req.start.ends_with("HTTP/1.0");
        let head_only = method == "HEAD";
        let fault = draw(shared, &method, &path);
        match fault {
            Fault::Forbidden => {
                shared.counts.bump(Kind::Forbidden);
                out.write_all(&error_response(shared.flavor, 403, head_only))?;
                continue;
            }
            Fault::ErrorBefore(status) => {
                shared.counts.bump(Kind::ErrorBefore);
                out.write_all(&error_response(shared.flavor, status, head_only))?;
                continue;
            }
            Fault::ResetBefore => {
                shared.counts.bump(Kind::ResetBefore);
                reset(out);
                return Ok(());
            }
            _ => {}
        }
        let resp = match forward(shared, &req, &body, &method) {
            Ok(resp) => resp,
            Err(_) => {
                // The upstream failed: tell the client so, as a gateway would.
                out.write_all(&error_response(shared.flavor, 502, head_only))?;
                continue;
            }
        };
        match fault {
            Fault::ErrorAfter(status) => {
                shared.counts.bump(Kind::ErrorAfter);
                out.write_all(&error_response(shared.flavor, status, head_only))?;
                continue;
            }
            Fault::ResetAfter => {
                shared.counts.bump(Kind::ResetAfter);
                reset(out);
                return Ok(());
            }
            Fault::Truncate if resp.has_body && resp.body.len() >= 2 => {
                shared.counts.bump(Kind::Truncated);
                let mut buf = Vec::new();
                write_head(
                    &mut buf,
                    &resp.head.start,
                    &resp.head.headers,
                    Some(resp.body.len()),
                    true,
                )?;
                buf.extend_from_slice(&resp.body[..resp.body.len() / 2]);
                out.write_all(&buf)?;
                out.flush()?;
                let _ = out.shutdown(Shutdown::Both);
                return Ok(());
            }
            Fault::Delay(d) => {
                shared.counts.bump(Kind::Delayed);
                std::thread::sleep(d);
            }
            _ => {}
        }
        let mut buf = Vec::with_capacity(resp.body.len() + 1024);
        // A response without a body keeps its own Content-Length (a HEAD tells the object's size).
        let length = resp.has_body.then_some(resp.body.len());
        write_head(
            &mut buf,
            &resp.head.start,
            &resp.head.headers,
            length,
            close,
        )?;
        buf.extend_from_slice(&resp.body);
        out.write_all(&buf)?;
        if close {
            let _ = out.shutdown(Shutdown::Both);
            return Ok(());
        }
    }
}

/// A raw HTTP/1.1 exchange on a new connection (`Connection: close`): the status, head and body, or
/// the I/O error a fault caused (a reset, or a body shorter than its `Content-Length`).
pub fn exchange(
    port: u16,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> io::Result<(u16, Head, Vec<u8>)> {
    let mut s = TcpStream::connect(("127.0.0.1", port))?;
    s.set_read_timeout(Some(Duration::from_secs(60)))?;
    let mut req = format!(
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Length: {}\r\nConnection: close\r\n",
        body.len()
    );
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    let mut buf = req.into_bytes();
    buf.extend_from_slice(body);
    s.write_all(&buf)?;
    let mut r = BufReader::new(s);
    let head = read_head(&mut r)?.ok_or(io::ErrorKind::UnexpectedEof)?;
    let body = if method == "HEAD" {
        Vec::new()
    } else {
        read_body(&mut r, &head, true)?
    };
    Ok((head.status(), head, body))
}
