//! The small subset of HTTP/1.1 that KMS clients speak: requests with a
//! `Content-Length` body, several per connection (keep-alive, as the AWS
//! SDKs pool their connections), over plain TCP or TLS (rustls).
//!
//! The acceptor gives every connection its own thread, up to
//! [`Limits::max_connections`] at once (one more is answered 503 and
//! closed), so a slow or idle client never holds anyone else up. Every
//! socket has read and write timeouts; a whole request must arrive within
//! [`Limits::request_deadline`] of its first byte; a connection waits at
//! most [`Limits::idle_timeout`] for its next request and serves at most
//! [`Limits::max_requests_per_connection`]. Headers are limited to
//! [`MAX_HEADER_BYTES`], bodies to [`Limits::max_body`] (413 above it,
//! before the body is read). An error answer closes the connection.

use std::io::{self, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread;
use std::time::{Duration, Instant};
use zeroize::Zeroize;

/// The most bytes of request line and headers accepted.
pub const MAX_HEADER_BYTES: usize = 16 * 1024;

/// Limits of the server.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Largest request body in bytes.
    pub max_body: usize,
    /// Timeout of each socket read and write.
    pub io_timeout: Duration,
    /// Time allowed for a whole request (headers and body) to arrive, from
    /// its first byte (from the accept for a connection's first request).
    pub request_deadline: Duration,
    /// How long a connection may wait for its next request.
    pub idle_timeout: Duration,
    /// Requests served on one connection before it is closed.
    pub max_requests_per_connection: usize,
    /// Connections served at once (one thread each).
    pub max_connections: usize,
}

/// A parsed request.
#[derive(Debug)]
pub struct Request {
    /// `POST`, `GET`...
    pub method: String,
    /// The path, without the query.
    pub path: String,
    /// The raw query string (may be empty).
    pub query: String,
    /// Headers in order, names as sent.
    pub headers: Vec<(String, String)>,
    /// The body.
    pub body: Vec<u8>,
    /// Whether the client keeps the connection open after the answer
    /// (HTTP/1.1 without `Connection: close`, or HTTP/1.0 with
    /// `Connection: keep-alive`).
    pub keep_alive: bool,
}

impl Request {
    /// The first value of a header (case-insensitive name).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// A response.
#[derive(Debug)]
pub struct Response {
    /// Status code.
    pub status: u16,
    /// Content type.
    pub content_type: &'static str,
    /// Body.
    pub body: Vec<u8>,
}

/// Why a request could not be read: answered with a plain status, the
/// handler never runs.
#[derive(Debug)]
pub enum ReadError {
    /// Malformed request (400).
    Bad(&'static str),
    /// Body over the limit (413).
    TooLarge,
    /// No `Content-Length` on a request with a body (411).
    LengthRequired,
    /// Headers over the limit (431).
    HeadersTooLarge,
    /// The client closed, timed out or the socket failed: nothing to answer.
    Gone,
}

/// A connection, plain or TLS, and its socket (for timeouts).
trait Conn: Read + Write {
    fn socket(&self) -> &TcpStream;
}

impl Conn for TcpStream {
    fn socket(&self) -> &TcpStream {
        self
    }
}

impl Conn for rustls::StreamOwned<rustls::ServerConnection, TcpStream> {
    fn socket(&self) -> &TcpStream {
        &self.sock
    }
}

/// Decrements the count of open connections when the connection's thread
/// ends, however it ends.
struct Slot(Arc<AtomicUsize>);

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Serves `listener` until the process ends, calling `handle` for every
/// well-formed request. With `tls`, every connection must open with a TLS
/// handshake.
pub fn serve<H>(
    listener: TcpListener,
    limits: Limits,
    tls: Option<Arc<rustls::ServerConfig>>,
    handle: H,
) -> io::Result<()>
where
    H: Fn(Request) -> Response + Send + Sync + 'static,
{
    let handle = Arc::new(handle);
    let open = Arc::new(AtomicUsize::new(0));
    for stream in listener.incoming() {
        let Ok(mut stream) = stream else {
            // Out of descriptors or a dropped handshake: back off briefly
            // rather than spin.
            thread::sleep(Duration::from_millis(10));
            continue;
        };
        if open.fetch_add(1, Ordering::AcqRel) >= limits.max_connections.max(1) {
            open.fetch_sub(1, Ordering::AcqRel);
            if tls.is_none() {
                // A short write timeout: the acceptor must not wait on a
                // client that does not read.
                let _ = stream.set_write_timeout(Some(Duration::from_millis(200)));
                let _ = write_response(
                    &mut stream,
                    &plain(503, "server busy: too many connections"),
                    false,
                );
            }
            continue;
        }
        let slot = Slot(open.clone());
        let handle = handle.clone();
        let tls = tls.clone();
        let spawned = thread::Builder::new()
            .name("kms-connection".into())
            .spawn(move || {
                let _slot = slot;
                connection(stream, tls, &limits, handle.as_ref());
            });
        if spawned.is_err() {
            // Out of threads: the connection (moved into the failed
            // closure) is closed and its slot released with it.
            thread::sleep(Duration::from_millis(10));
        }
    }
    Ok(())
}

/// A `text/plain` response.
pub fn plain(status: u16, msg: &str) -> Response {
    Response {
        status,
        content_type: "text/plain; charset=utf-8",
        body: msg.as_bytes().to_vec(),
    }
}

fn connection(
    stream: TcpStream,
    tls: Option<Arc<rustls::ServerConfig>>,
    limits: &Limits,
    handle: &dyn Fn(Request) -> Response,
) {
    let _ = stream.set_read_timeout(Some(limits.io_timeout));
    let _ = stream.set_write_timeout(Some(limits.io_timeout));
    let _ = stream.set_nodelay(true);
    match tls {
        None => {
            let mut s = stream;
            requests(&mut s, limits, handle);
            let _ = s.shutdown(std::net::Shutdown::Write);
        }
        Some(config) => {
            let Ok(conn) = rustls::ServerConnection::new(config) else {
                return;
            };
            let mut s = rustls::StreamOwned::new(conn, stream);
            requests(&mut s, limits, handle);
            s.conn.send_close_notify();
            let _ = s.flush();
            let _ = s.sock.shutdown(std::net::Shutdown::Write);
        }
    }
}

/// Serves the requests of one connection until the client closes, an error
/// is answered, the connection idles too long or has served its share.
fn requests(stream: &mut dyn Conn, limits: &Limits, handle: &dyn Fn(Request) -> Response) {
    // Bytes read past the previous request (a pipelined next one).
    let mut carry = Vec::new();
    for served in 0..limits.max_requests_per_connection.max(1) {
        let idle = (served > 0).then_some(limits.idle_timeout);
        let read = read_request_from(stream, limits, &mut carry, idle);
        let (mut response, keep) = match read {
            Ok(req) => {
                let keep = req.keep_alive && served + 1 < limits.max_requests_per_connection;
                // A panic in a handler must not take the connection's
                // thread down silently: answer 500 and close.
                match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| handle(req))) {
                    Ok(r) => (r, keep),
                    Err(_) => (plain(500, "internal error"), false),
                }
            }
            Err(ReadError::Gone) => break,
            Err(ReadError::Bad(why)) => (plain(400, why), false),
            Err(ReadError::TooLarge) => (plain(413, "request body too large"), false),
            Err(ReadError::LengthRequired) => (plain(411, "Content-Length required"), false),
            Err(ReadError::HeadersTooLarge) => (plain(431, "request headers too large"), false),
        };
        let written = write_response(stream, &response, keep).and_then(|()| stream.flush());
        // The body may hold a plaintext or a data key.
        response.body.zeroize();
        if written.is_err() || !keep {
            break;
        }
    }
    carry.zeroize();
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        400 => "Bad Request",
        404 => "Not Found",
        405 => "Method Not Allowed",
        411 => "Length Required",
        413 => "Payload Too Large",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        503 => "Service Unavailable",
        _ => "Unknown",
    }
}

fn write_response(w: &mut (impl Write + ?Sized), r: &Response, keep_alive: bool) -> io::Result<()> {
    let head = format!(
        "HTTP/1.1 {} {}\r\nContent-Type: {}\r\nContent-Length: {}\r\nConnection: {}\r\n\r\n",
        r.status,
        reason(r.status),
        r.content_type,
        r.body.len(),
        if keep_alive { "keep-alive" } else { "close" },
    );
    // One write of head and body: with TLS one record, on TCP one segment
    // for small answers (no delayed-ACK stall between the two).
    let mut out = Vec::with_capacity(head.len() + r.body.len());
    out.extend_from_slice(head.as_bytes());
    out.extend_from_slice(&r.body);
    let res = w.write_all(&out);
    out.zeroize();
    res
}

/// Reads into `buf` from `stream`, failing once `deadline` has passed.
fn read_some(
    stream: &mut (impl Read + ?Sized),
    buf: &mut [u8],
    deadline: Instant,
) -> Result<usize, ReadError> {
    if Instant::now() > deadline {
        return Err(ReadError::Gone);
    }
    loop {
        match stream.read(buf) {
            Ok(n) => return Ok(n),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(_) => return Err(ReadError::Gone),
        }
    }
}

/// Capacity of the header buffer: the header limit plus one read, so the
/// buffer is never reallocated (a reallocation would leave request bytes
/// behind in freed memory).
const HEAD_BUF: usize = MAX_HEADER_BYTES + 2 * 4096;

/// Reads a connection's next request. After the first (`idle` set), waits
/// up to `idle` for its first byte; the request's deadline starts then.
fn read_request_from(
    stream: &mut dyn Conn,
    limits: &Limits,
    carry: &mut Vec<u8>,
    idle: Option<Duration>,
) -> Result<Request, ReadError> {
    if let Some(idle) = idle
        && carry.is_empty()
    {
        let _ = stream.socket().set_read_timeout(Some(idle));
        let mut chunk = [0u8; 4096];
        let n = read_some(stream, &mut chunk, Instant::now() + idle);
        let _ = stream.socket().set_read_timeout(Some(limits.io_timeout));
        let n = n?;
        if n == 0 {
            return Err(ReadError::Gone);
        }
        carry.reserve_exact(HEAD_BUF);
        carry.extend_from_slice(&chunk[..n]);
        chunk.zeroize();
    }
    read_request(stream, limits, carry)
}

/// Reads one request: request line, headers, then exactly `Content-Length`
/// body bytes. `carry` holds bytes already read from the connection; on
/// return it holds those read past this request (the next one's start).
pub fn read_request(
    stream: &mut (impl Read + ?Sized),
    limits: &Limits,
    carry: &mut Vec<u8>,
) -> Result<Request, ReadError> {
    let mut buf = Vec::with_capacity(HEAD_BUF);
    buf.extend_from_slice(carry);
    carry.zeroize();
    let mut chunk = [0u8; 4096];
    let result = read_request_into(stream, limits, &mut buf, &mut chunk, carry);
    buf.zeroize();
    chunk.zeroize();
    result
}

fn read_request_into(
    stream: &mut (impl Read + ?Sized),
    limits: &Limits,
    buf: &mut Vec<u8>,
    chunk: &mut [u8; 4096],
    carry: &mut Vec<u8>,
) -> Result<Request, ReadError> {
    let deadline = Instant::now() + limits.request_deadline;
    let header_end = loop {
        if let Some(i) = find(buf, b"\r\n\r\n") {
            break i;
        }
        if buf.len() > MAX_HEADER_BYTES {
            return Err(ReadError::HeadersTooLarge);
        }
        let n = read_some(stream, chunk, deadline)?;
        if n == 0 {
            return Err(ReadError::Gone);
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    if header_end > MAX_HEADER_BYTES {
        return Err(ReadError::HeadersTooLarge);
    }
    let head = std::str::from_utf8(&buf[..header_end])
        .map_err(|_| ReadError::Bad("request headers are not UTF-8"))?;
    let mut lines = head.split("\r\n");
    let request_line = lines.next().unwrap_or_default();
    let mut parts = request_line.split(' ');
    let (method, target, version) = match (parts.next(), parts.next(), parts.next(), parts.next()) {
        (Some(m), Some(t), Some(v), None) if !m.is_empty() && t.starts_with('/') => (m, t, v),
        _ => return Err(ReadError::Bad("malformed request line")),
    };
    if version != "HTTP/1.1" && version != "HTTP/1.0" {
        return Err(ReadError::Bad("only HTTP/1.0 and HTTP/1.1 are spoken"));
    }
    let mut headers = Vec::new();
    for line in lines {
        let (name, value) = line
            .split_once(':')
            .ok_or(ReadError::Bad("malformed header line"))?;
        if name.is_empty() || name.contains(' ') {
            return Err(ReadError::Bad("malformed header name"));
        }
        headers.push((name.to_string(), value.trim().to_string()));
    }
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    let mut req = Request {
        method: method.to_string(),
        path: path.to_string(),
        query: query.to_string(),
        headers,
        body: Vec::new(),
        keep_alive: false,
    };
    let connection = req.header("connection").unwrap_or("").to_ascii_lowercase();
    req.keep_alive = if version == "HTTP/1.1" {
        !connection.split(',').any(|t| t.trim() == "close")
    } else {
        connection.split(',').any(|t| t.trim() == "keep-alive")
    };
    if req.header("transfer-encoding").is_some() {
        // Chunked bodies are not spoken: KMS clients send Content-Length.
        return Err(ReadError::LengthRequired);
    }
    let lengths: Vec<&str> = req
        .headers
        .iter()
        .filter(|(n, _)| n.eq_ignore_ascii_case("content-length"))
        .map(|(_, v)| v.as_str())
        .collect();
    let len = match lengths.as_slice() {
        [] if req.method == "POST" => return Err(ReadError::LengthRequired),
        [] => 0,
        [one] => one
            .parse::<usize>()
            .map_err(|_| ReadError::Bad("malformed Content-Length"))?,
        _ => return Err(ReadError::Bad("more than one Content-Length")),
    };
    if len > limits.max_body {
        return Err(ReadError::TooLarge);
    }
    // The body, allocated once at its final size; bytes past it are the
    // next request's (pipelining) and go back to `carry`.
    let after_head = &buf[header_end + 4..];
    let mut body = Vec::with_capacity(len);
    let take = after_head.len().min(len);
    body.extend_from_slice(&after_head[..take]);
    if after_head.len() > len {
        carry.reserve_exact(HEAD_BUF);
        carry.extend_from_slice(&after_head[len..]);
    }
    while body.len() < len {
        let want = (len - body.len()).min(chunk.len());
        let n = match read_some(stream, &mut chunk[..want], deadline) {
            Ok(n) => n,
            Err(e) => {
                body.zeroize();
                return Err(e);
            }
        };
        if n == 0 {
            body.zeroize();
            return Err(ReadError::Gone);
        }
        body.extend_from_slice(&chunk[..n]);
    }
    req.body = body;
    Ok(req)
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> Limits {
        Limits {
            max_body: 100,
            io_timeout: Duration::from_secs(1),
            request_deadline: Duration::from_secs(5),
            idle_timeout: Duration::from_secs(1),
            max_requests_per_connection: 10,
            max_connections: 1,
        }
    }

    #[test]
    fn parses_a_post_with_body() {
        let raw = b"POST /?a=b HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello";
        let r = read_request(&mut &raw[..], &limits(), &mut Vec::new()).unwrap();
        assert_eq!(
            (r.method.as_str(), r.path.as_str(), r.query.as_str()),
            ("POST", "/", "a=b")
        );
        assert_eq!(r.header("HOST"), Some("x"));
        assert_eq!(r.body, b"hello");
        assert!(r.keep_alive);
    }

    #[test]
    fn pipelined_requests_and_connection_close() {
        let raw = b"POST / HTTP/1.1\r\nContent-Length: 2\r\n\r\nabPOST /x HTTP/1.1\r\nConnection: close\r\nContent-Length: 3\r\n\r\ncde";
        let mut input = &raw[..];
        let mut carry = Vec::new();
        let first = read_request(&mut input, &limits(), &mut carry).unwrap();
        assert_eq!(
            (first.body.as_slice(), first.keep_alive),
            (&b"ab"[..], true)
        );
        let second = read_request(&mut input, &limits(), &mut carry).unwrap();
        assert_eq!(second.path, "/x");
        assert_eq!(
            (second.body.as_slice(), second.keep_alive),
            (&b"cde"[..], false)
        );
        assert!(carry.is_empty());
        assert!(matches!(
            read_request(&mut input, &limits(), &mut carry),
            Err(ReadError::Gone)
        ));
        let old = b"POST / HTTP/1.0\r\nContent-Length: 0\r\n\r\n";
        assert!(
            !read_request(&mut &old[..], &limits(), &mut Vec::new())
                .unwrap()
                .keep_alive
        );
        let old_keep = b"POST / HTTP/1.0\r\nConnection: Keep-Alive\r\nContent-Length: 0\r\n\r\n";
        assert!(
            read_request(&mut &old_keep[..], &limits(), &mut Vec::new())
                .unwrap()
                .keep_alive
        );
    }

    #[test]
    fn refuses_bad_requests() {
        let cases: &[(&[u8], &str)] = &[
            (
                b"POST / HTTP/1.1\r\nContent-Length: 500\r\n\r\n",
                "TooLarge",
            ),
            (b"POST / HTTP/1.1\r\n\r\n", "LengthRequired"),
            (
                b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n",
                "LengthRequired",
            ),
            (b"POST / HTTP/1.1\r\nContent-Length: x\r\n\r\n", "Bad"),
            (b"GARBAGE\r\n\r\n", "Bad"),
            (b"POST / HTTP/1.1\r\nContent-Length: 9\r\n\r\nshort", "Gone"),
        ];
        for (raw, want) in cases {
            let got = read_request(&mut &raw[..], &limits(), &mut Vec::new()).unwrap_err();
            assert!(format!("{got:?}").starts_with(want), "{got:?} for {raw:?}");
        }
        let mut big = b"POST / HTTP/1.1\r\nX: ".to_vec();
        big.extend(std::iter::repeat_n(b'a', MAX_HEADER_BYTES + 10));
        big.extend_from_slice(b"\r\n\r\n");
        assert!(matches!(
            read_request(&mut &big[..], &limits(), &mut Vec::new()),
            Err(ReadError::HeadersTooLarge)
        ));
    }
}
