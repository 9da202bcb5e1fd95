//! The small subset of HTTP/1.1 that KMS clients speak: one request with a
//! `Content-Length` body per connection, answered with `Connection: close`.
//!
//! An acceptor thread hands connections to a fixed pool of workers through
//! a bounded queue (a full queue is answered 503 at once). Every socket has
//! read and write timeouts, and a whole request must arrive within
//! [`Limits::request_deadline`], so a slow client holds a worker for a
//! bounded time. Headers are limited to [`MAX_HEADER_BYTES`], bodies to
//! [`Limits::max_body`] (413 above it, before the body is read).

use std::io::{self, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::mpsc::{Receiver, SyncSender, TrySendError, sync_channel};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

/// The most bytes of request line and headers accepted.
pub const MAX_HEADER_BYTES: usize = 16 * 1024;

/// Limits of the server.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Largest request body in bytes.
    pub max_body: usize,
    /// Timeout of each socket read and write.
    pub io_timeout: Duration,
    /// Time allowed for a whole request (headers and body) to arrive.
    pub request_deadline: Duration,
    /// Worker threads.
    pub workers: usize,
    /// Connections waiting for a worker before new ones get a 503.
    pub queue: usize,
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

/// Serves `listener` until the process ends, calling `handle` for every
/// well-formed request on one of `limits.workers` threads.
pub fn serve<H>(listener: TcpListener, limits: Limits, handle: H) -> io::Result<()>
where
    H: Fn(Request) -> Response + Send + Sync + 'static,
{
    let handle = Arc::new(handle);
    let (tx, rx): (SyncSender<TcpStream>, Receiver<TcpStream>) = sync_channel(limits.queue);
    let rx = Arc::new(Mutex::new(rx));
    for i in 0..limits.workers.max(1) {
        let rx = rx.clone();
        let handle = handle.clone();
        thread::Builder::new()
            .name(format!("kms-worker-{i}"))
            .spawn(move || {
                loop {
                    // A poisoned lock only means another worker panicked
                    // while waiting; the receiver itself is intact.
                    let next = rx.lock().unwrap_or_else(|p| p.into_inner()).recv();
                    match next {
                        Ok(stream) => connection(stream, &limits, handle.as_ref()),
                        Err(_) => return,
                    }
                }
            })?;
    }
    for stream in listener.incoming() {
        let Ok(stream) = stream else {
            // Out of descriptors or a dropped handshake: back off briefly
            // rather than spin.
            thread::sleep(Duration::from_millis(10));
            continue;
        };
        match tx.try_send(stream) {
            Ok(()) => {}
            Err(TrySendError::Full(mut s)) => {
                let _ = s.set_write_timeout(Some(limits.io_timeout));
                let _ = write_response(
                    &mut s,
                    &plain(503, "server busy: too many concurrent requests"),
                );
            }
            Err(TrySendError::Disconnected(_)) => break,
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

fn connection(mut stream: TcpStream, limits: &Limits, handle: &dyn Fn(Request) -> Response) {
    let _ = stream.set_read_timeout(Some(limits.io_timeout));
    let _ = stream.set_write_timeout(Some(limits.io_timeout));
    let _ = stream.set_nodelay(true);
    let response = match read_request(&mut stream, limits) {
        Ok(req) => {
            // A panic in a handler must not take the worker (and the
            // connection) with it: answer 500 and go on.
            match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| handle(req))) {
                Ok(r) => r,
                Err(_) => plain(500, "internal error"),
            }
        }
        Err(ReadError::Gone) => return,
        Err(ReadError::Bad(why)) => plain(400, why),
        Err(ReadError::TooLarge) => plain(413, "request body too large"),
        Err(ReadError::LengthRequired) => plain(411, "Content-Length required"),
        Err(ReadError::HeadersTooLarge) => plain(431, "request headers too large"),
    };
    let mut response = response;
    let _ = write_response(&mut stream, &response);
    // The body may hold a plaintext or a data key.
    zeroize::Zeroize::zeroize(&mut response.body);
    let _ = stream.flush();
    let _ = stream.shutdown(std::net::Shutdown::Write);
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

fn write_response(w: &mut impl Write, r: &Response) -> io::Result<()> {
    let head = format!(
        "HTTP/1.1 {} {}\r\nContent-Type: {}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        r.status,
        reason(r.status),
        r.content_type,
        r.body.len()
    );
    w.write_all(head.as_bytes())?;
    w.write_all(&r.body)
}

/// Reads into `buf` from `stream`, failing once `deadline` has passed.
fn read_some(
    stream: &mut impl Read,
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

/// Reads one request: request line, headers, then exactly `Content-Length`
/// body bytes.
pub fn read_request(stream: &mut impl Read, limits: &Limits) -> Result<Request, ReadError> {
    let deadline = Instant::now() + limits.request_deadline;
    let mut buf = Vec::with_capacity(2048);
    let mut chunk = [0u8; 4096];
    let header_end = loop {
        if let Some(i) = find(&buf, b"\r\n\r\n") {
            break i;
        }
        if buf.len() > MAX_HEADER_BYTES {
            return Err(ReadError::HeadersTooLarge);
        }
        let n = read_some(stream, &mut chunk, deadline)?;
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
    let mut req = Request {
        method: method.to_string(),
        path: String::new(),
        query: String::new(),
        headers,
        body: Vec::new(),
    };
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    req.path = path.to_string();
    req.query = query.to_string();
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
    let mut body = buf.split_off(header_end + 4);
    if body.len() > len {
        // Pipelined data after the body: not spoken (one request per connection).
        return Err(ReadError::Bad("data after the request body"));
    }
    body.reserve_exact(len - body.len());
    while body.len() < len {
        let want = (len - body.len()).min(chunk.len());
        let n = read_some(stream, &mut chunk[..want], deadline)?;
        if n == 0 {
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
            workers: 1,
            queue: 1,
        }
    }

    #[test]
    fn parses_a_post_with_body() {
        let raw = b"POST /?a=b HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello";
        let r = read_request(&mut &raw[..], &limits()).unwrap();
        assert_eq!(
            (r.method.as_str(), r.path.as_str(), r.query.as_str()),
            ("POST", "/", "a=b")
        );
        assert_eq!(r.header("HOST"), Some("x"));
        assert_eq!(r.body, b"hello");
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
            let got = read_request(&mut &raw[..], &limits()).unwrap_err();
            assert!(format!("{got:?}").starts_with(want), "{got:?} for {raw:?}");
        }
        let mut big = b"POST / HTTP/1.1\r\nX: ".to_vec();
        big.extend(std::iter::repeat_n(b'a', MAX_HEADER_BYTES + 10));
        big.extend_from_slice(b"\r\n\r\n");
        assert!(matches!(
            read_request(&mut &big[..], &limits()),
            Err(ReadError::HeadersTooLarge)
        ));
    }
}
