//! A fault-injecting HTTP/1.1 proxy for the S3 tests, between walship and
//! Garage on loopback: std threads and sockets only (plus `libc` for a reset
//! and for holding the port while the proxy is down).
//!
//! Every forwarded request and response is rewritten to `Connection: close`,
//! so each client connection carries exactly one request and a fault is
//! chosen per request (or, for [`Fault::Refuse`], per connection) from a
//! shared [`Plan`]: a queue of [`Rule`]s, each "fault the next N matching
//! requests" or "every k-th one", the front rule consumed first. A test
//! queues a burst, waits until it has fired, and heals. The proxy counts
//! requests and injected faults, so a test can prove its faults happened.
//!
//! It parses just enough HTTP: request and status lines, headers,
//! `Content-Length` (bodies with `Transfer-Encoding: chunked` are relayed
//! until the connection closes) and `100 Continue` answers relayed in
//! between. No pipelining, no TLS.

use std::collections::VecDeque;
use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream, ToSocketAddrs};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

/// Longest request or response head accepted.
const MAX_HEAD: usize = 64 * 1024;
/// A stalled request is held at most this long (far above walship's
/// `io_timeout` in the tests); the client normally gives up first.
const STALL_LIMIT: Duration = Duration::from_secs(15);
/// After answering a fault status, how long the client may take to read it.
const LINGER_AFTER_ANSWER: Duration = Duration::from_secs(2);

/// What the proxy does to a faulted request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    /// Accept the connection and reset it (RST) before reading anything.
    Refuse,
    /// Forward the request head and half the body, then reset both sides;
    /// a request without a body is reset without being forwarded.
    ResetMidBody,
    /// Read the request and never answer; the client's timeout ends it.
    Stall,
    /// Answer this status (500, 503) with an S3 error document, without
    /// forwarding.
    Status(u16),
    /// Answer 503 `SlowDown`, without forwarding.
    SlowDown,
    /// Answer 501 `NotImplemented`, without forwarding (a store that lacks
    /// the operation).
    NotImplemented,
    /// Forward the request, then relay the response head and only half of
    /// its body (half of the head when there is no body) and close.
    CutResponse,
}

/// Which requests a rule applies to: S3 operations told apart by method,
/// query and key.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Any,
    /// ListObjectsV2.
    List,
    /// ListMultipartUploads.
    ListUploads,
    Head,
    Get,
    /// PutObject of a batch (or any object outside `/manifest/`).
    PutObject,
    /// PutObject of a manifest record (a key under `/manifest/`).
    PutRecord,
    CreateUpload,
    PutPart,
    /// CompleteMultipartUpload.
    Complete,
    /// AbortMultipartUpload.
    Abort,
    /// DeleteObject(s).
    Delete,
    Other,
}

impl Kind {
    /// The kind of a request, from its method and target (`path?query`).
    pub fn of(method: &str, target: &str) -> Kind {
        let (path, query) = target.split_once('?').unwrap_or((target, ""));
        let has = |name: &str| query.split('&').any(|pair| pair.split('=').next() == Some(name));
        match method {
            "HEAD" => Kind::Head,
            "GET" if has("list-type") => Kind::List,
            "GET" if has("uploads") => Kind::ListUploads,
            "GET" => Kind::Get,
            "POST" if has("uploads") => Kind::CreateUpload,
            "POST" if has("uploadId") => Kind::Complete,
            "POST" if has("delete") => Kind::Delete,
            "PUT" if has("partNumber") => Kind::PutPart,
            "PUT" if path.contains("/manifest/") => Kind::PutRecord,
            "PUT" => Kind::PutObject,
            "DELETE" if has("uploadId") => Kind::Abort,
            "DELETE" => Kind::Delete,
            _ => Kind::Other,
        }
    }

    fn matches(self, request: Kind) -> bool {
        self == Kind::Any || self == request
    }
}

/// One entry of the plan: inject `fault` into `count` requests of `kind`,
/// every `every`-th matching one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Rule {
    pub fault: Fault,
    pub kind: Kind,
    pub every: u32,
    pub count: u32,
}

impl Rule {
    /// The next `count` requests of `kind`, one after another.
    pub fn burst(fault: Fault, kind: Kind, count: u32) -> Rule {
        Rule { fault, kind, every: 1, count }
    }

    /// Every `every`-th request of `kind`, `count` times.
    pub fn every(fault: Fault, kind: Kind, every: u32, count: u32) -> Rule {
        Rule { fault, kind, every, count }
    }
}

/// The rules still to fire and what has happened so far.
#[derive(Default)]
struct Plan {
    /// Front first; each with (matching requests seen, faults left).
    rules: VecDeque<(Rule, u32, u32)>,
    requests: u64,
    /// One line per injected fault: fault, kind, request line.
    injected: Vec<String>,
    /// Every request: its kind, request line and Range header (if any).
    seen: Vec<(Kind, String)>,
}

impl Plan {
    /// Whether this request (or, for `None`, a new connection) gets the
    /// front rule's fault. Refuse rules act on connections only; the
    /// others on requests.
    fn decide(&mut self, request: Option<(Kind, &str)>) -> Option<Fault> {
        let (rule, seen, left) = self.rules.front_mut()?;
        let (kind, line) = match request {
            None if rule.fault == Fault::Refuse => (Kind::Any, "(new connection)"),
            Some((kind, line)) if rule.fault != Fault::Refuse && rule.kind.matches(kind) => (kind, line),
            _ => return None,
        };
        *seen += 1;
        if *seen % rule.every.max(1) != 0 {
            return None;
        }
        *left -= 1;
        let fault = rule.fault;
        if *left == 0 {
            self.rules.pop_front();
        }
        self.injected.push(format!("{fault:?} on {kind:?}: {line}"));
        Some(fault)
    }
}

struct Shared {
    plan: Mutex<Plan>,
    upstream: SocketAddr,
    /// Set when the proxy is dropped: stalled connections let go.
    closed: AtomicBool,
}

impl Shared {
    fn plan(&self) -> MutexGuard<'_, Plan> {
        self.plan.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// The running proxy. Dropping it stops accepting (connections in flight
/// finish on their own).
pub struct FaultProxy {
    shared: Arc<Shared>,
    addr: SocketAddr,
    /// Bound, never listening: keeps the port ours while the proxy is down,
    /// so clients meet "connection refused" and the port can be reused.
    _port_holder: OwnedFd,
    acceptor: Option<(Arc<AtomicBool>, JoinHandle<()>)>,
}

impl FaultProxy {
    /// A proxy on 127.0.0.1 (a free port) in front of `upstream`, an
    /// `http://host:port` endpoint.
    pub fn start(upstream: &str) -> FaultProxy {
        let authority = upstream.strip_prefix("http://").expect("an http:// upstream").trim_end_matches('/');
        let upstream = authority.to_socket_addrs().expect("resolve upstream").next().expect("an address");
        let listener = reusable_socket(0, true).expect("bind the proxy");
        let addr = listener.local_addr().expect("proxy address");
        let holder = reusable_socket(addr.port(), false).expect("hold the proxy's port");
        let shared =
            Arc::new(Shared { plan: Mutex::new(Plan::default()), upstream, closed: AtomicBool::new(false) });
        let mut proxy = FaultProxy { shared, addr, _port_holder: holder.into(), acceptor: None };
        proxy.accept_on(listener);
        proxy
    }

    /// `http://127.0.0.1:PORT`, for walship's `endpoint`.
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Queue `rule` behind the rules already queued.
    pub fn push(&self, rule: Rule) {
        assert!(rule.count > 0 && rule.every > 0, "{rule:?}");
        assert!(rule.fault != Fault::Refuse || rule.kind == Kind::Any, "Refuse acts on connections only");
        self.shared.plan().rules.push_back((rule, 0, rule.count));
    }

    /// Drop every queued rule: from now on, everything passes through.
    pub fn heal(&self) {
        self.shared.plan().rules.clear();
    }

    /// Faults still queued.
    pub fn pending(&self) -> u32 {
        self.shared.plan().rules.iter().map(|(_, _, left)| left).sum()
    }

    /// The rules still queued, with their faults left.
    pub fn pending_rules(&self) -> Vec<String> {
        self.shared.plan().rules.iter().map(|(rule, _, left)| format!("{rule:?} ({left} left)")).collect()
    }

    /// Requests seen (refused connections included).
    pub fn requests(&self) -> u64 {
        self.shared.plan().requests
    }

    /// The requests of `kind` so far: request line and Range header.
    pub fn seen(&self, kind: Kind) -> Vec<String> {
        self.shared
            .plan()
            .seen
            .iter()
            .filter(|(k, _)| kind.matches(*k))
            .map(|(_, line)| line.clone())
            .collect()
    }

    /// Faults injected so far, one line each.
    pub fn injected(&self) -> Vec<String> {
        self.shared.plan().injected.clone()
    }

    /// Stop listening: new connections are refused by the kernel
    /// (ECONNREFUSED) until [`FaultProxy::resume`].
    pub fn go_down(&mut self) {
        if let Some((stop, handle)) = self.acceptor.take() {
            stop.store(true, Ordering::SeqCst);
            // Wake the blocked accept; the acceptor then drops the listener.
            let _ = TcpStream::connect_timeout(&self.addr, Duration::from_secs(1));
            let _ = handle.join();
        }
    }

    /// Listen again on the same port.
    pub fn resume(&mut self) {
        if self.acceptor.is_none() {
            let listener = reusable_socket(self.addr.port(), true).expect("listen again on the proxy port");
            self.accept_on(listener);
        }
    }

    fn accept_on(&mut self, listener: TcpListener) {
        let stop = Arc::new(AtomicBool::new(false));
        let (shared, stopping) = (Arc::clone(&self.shared), Arc::clone(&stop));
        let handle = thread::Builder::new()
            .name("faultproxy-accept".into())
            .spawn(move || {
                for connection in listener.incoming() {
                    if stopping.load(Ordering::SeqCst) {
                        break;
                    }
                    let Ok(client) = connection else { continue };
                    let shared = Arc::clone(&shared);
                    let _ = thread::Builder::new().name("faultproxy-conn".into()).spawn(move || {
                        let _ = serve(client, &shared);
                    });
                }
            })
            .expect("start the proxy's accept thread");
        self.acceptor = Some((stop, handle));
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.shared.closed.store(true, Ordering::SeqCst);
        self.go_down();
    }
}

/// A TCP socket on 127.0.0.1:`port` with SO_REUSEADDR and SO_REUSEPORT, so
/// a bound, non-listening holder and a listener can share the port;
/// listening when `listen`.
fn reusable_socket(port: u16, listen: bool) -> io::Result<TcpListener> {
    let check = |rc: libc::c_int| if rc < 0 { Err(io::Error::last_os_error()) } else { Ok(rc) };
    // SAFETY: plain socket syscalls on a descriptor we own; every pointer
    // passed points to a live, fully initialised value of the stated size.
    unsafe {
        let fd = check(libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0))?;
        let owned = OwnedFd::from_raw_fd(fd);
        let one: libc::c_int = 1;
        for option in [libc::SO_REUSEADDR, libc::SO_REUSEPORT] {
            check(libc::setsockopt(
                fd,
                libc::SOL_SOCKET,
                option,
                (&one as *const libc::c_int).cast(),
                size_of::<libc::c_int>() as libc::socklen_t,
            ))?;
        }
        let address = libc::sockaddr_in {
            sin_family: libc::AF_INET as libc::sa_family_t,
            sin_port: port.to_be(),
            sin_addr: libc::in_addr { s_addr: u32::from_be_bytes([127, 0, 0, 1]).to_be() },
            sin_zero: [0; 8],
        };
        check(libc::bind(
            fd,
            (&address as *const libc::sockaddr_in).cast(),
            size_of::<libc::sockaddr_in>() as libc::socklen_t,
        ))?;
        if listen {
            check(libc::listen(fd, 128))?;
        }
        Ok(TcpListener::from(owned))
    }
}

/// Close `stream` with a TCP reset (SO_LINGER 0) instead of a FIN.
fn reset(stream: TcpStream) {
    let linger = libc::linger { l_onoff: 1, l_linger: 0 };
    // SAFETY: setsockopt on a descriptor `stream` owns, with a live value of
    // the stated size.
    unsafe {
        libc::setsockopt(
            stream.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            (&linger as *const libc::linger).cast(),
            size_of::<libc::linger>() as libc::socklen_t,
        );
    }
    drop(stream);
}

/// A request or response head.
struct Head {
    /// Request line or status line.
    start: String,
    headers: Vec<(String, String)>,
}

impl Head {
    fn parse(bytes: &[u8]) -> Head {
        let text = String::from_utf8_lossy(bytes);
        let mut lines = text.split("\r\n").filter(|line| !line.is_empty());
        let start = lines.next().unwrap_or_default().to_string();
        let headers = lines
            .filter_map(|line| line.split_once(':'))
            .map(|(name, value)| (name.trim().to_string(), value.trim().to_string()))
            .collect();
        Head { start, headers }
    }

    fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }

    /// The body length: `None` for a chunked body (read until close), and
    /// the Content-Length otherwise (`default` when absent).
    fn body_len(&self, default: Option<u64>) -> Option<u64> {
        if self.header("transfer-encoding").is_some_and(|v| v.to_ascii_lowercase().contains("chunked")) {
            return None;
        }
        self.header("content-length").and_then(|v| v.parse().ok()).or(default)
    }

    /// The status code of a response head.
    fn status(&self) -> u16 {
        self.start.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap_or(0)
    }

    /// The head as bytes, with `Connection: close` instead of any
    /// connection header.
    fn closing(&self) -> Vec<u8> {
        let mut text = format!("{}\r\n", self.start);
        for (name, value) in &self.headers {
            if !["connection", "keep-alive", "proxy-connection"].iter().any(|h| name.eq_ignore_ascii_case(h))
            {
                text.push_str(&format!("{name}: {value}\r\n"));
            }
        }
        text.push_str("Connection: close\r\n\r\n");
        text.into_bytes()
    }
}

/// A socket with the bytes read past the last head.
struct Conn {
    stream: TcpStream,
    buffered: Vec<u8>,
}

impl Conn {
    fn new(stream: TcpStream) -> Conn {
        Conn { stream, buffered: Vec::new() }
    }

    /// The next head's bytes; `None` at a clean end of stream.
    fn read_head(&mut self) -> io::Result<Option<Vec<u8>>> {
        loop {
            if let Some(end) = self.buffered.windows(4).position(|w| w == b"\r\n\r\n") {
                return Ok(Some(self.buffered.drain(..end + 4).collect()));
            }
            if self.buffered.len() > MAX_HEAD {
                return Err(io::Error::new(io::ErrorKind::InvalidData, "head too large"));
            }
            let mut chunk = [0u8; 16 * 1024];
            match self.stream.read(&mut chunk)? {
                0 if self.buffered.is_empty() => return Ok(None),
                0 => return Err(io::ErrorKind::UnexpectedEof.into()),
                n => self.buffered.extend_from_slice(&chunk[..n]),
            }
        }
    }

    /// Copy up to `limit` body bytes (`None`: until end of stream) to `out`,
    /// buffered bytes first. Returns the bytes copied.
    fn copy_body(&mut self, out: &mut TcpStream, limit: Option<u64>) -> io::Result<u64> {
        let limit = limit.unwrap_or(u64::MAX);
        let from_buffer = (self.buffered.len() as u64).min(limit) as usize;
        out.write_all(&self.buffered[..from_buffer])?;
        self.buffered.drain(..from_buffer);
        let rest = io::copy(&mut (&self.stream).take(limit - from_buffer as u64), out)?;
        Ok(from_buffer as u64 + rest)
    }
}

/// Handle one client connection: one request.
fn serve(client: TcpStream, shared: &Shared) -> io::Result<()> {
    let refused = {
        let mut plan = shared.plan();
        let refused = plan.decide(None).is_some();
        plan.requests += u64::from(refused);
        refused
    };
    if refused {
        reset(client);
        return Ok(());
    }
    client.set_read_timeout(Some(Duration::from_secs(60)))?;
    let mut client = Conn::new(client);
    let Some(head_bytes) = client.read_head()? else { return Ok(()) };
    let request = Head::parse(&head_bytes);
    let mut words = request.start.split(' ');
    let (method, target) = (words.next().unwrap_or(""), words.next().unwrap_or(""));
    let kind = Kind::of(method, target);
    let fault = {
        let mut plan = shared.plan();
        plan.requests += 1;
        let range = request.header("range").map(|r| format!(" range: {r}")).unwrap_or_default();
        plan.seen.push((kind, format!("{method} {target}{range}")));
        plan.decide(Some((kind, &format!("{method} {target}"))))
    };
    match fault {
        None => forward(client, &request, shared, false),
        Some(Fault::CutResponse) => forward(client, &request, shared, true),
        Some(Fault::ResetMidBody) => reset_mid_body(client, &request, shared),
        Some(Fault::Stall) => {
            drain(&client.stream, STALL_LIMIT, &shared.closed);
            Ok(())
        }
        Some(Fault::Status(status)) => {
            let code = if status == 503 { "ServiceUnavailable" } else { "InternalError" };
            answer(client.stream, status, code, method == "HEAD", &shared.closed)
        }
        Some(Fault::SlowDown) => answer(client.stream, 503, "SlowDown", method == "HEAD", &shared.closed),
        Some(Fault::NotImplemented) => {
            answer(client.stream, 501, "NotImplemented", method == "HEAD", &shared.closed)
        }
        Some(Fault::Refuse) => {
            reset(client.stream);
            Ok(())
        }
    }
}

/// Relay one request upstream and its response back; with `cut`, only part
/// of the response.
fn forward(mut client: Conn, request: &Head, shared: &Shared, cut: bool) -> io::Result<()> {
    let server = TcpStream::connect_timeout(&shared.upstream, Duration::from_secs(5))?;
    server.set_read_timeout(Some(Duration::from_secs(60)))?;
    let mut server = Conn::new(server);
    server.stream.write_all(&request.closing())?;
    // The body goes up on its own thread: the server may answer `100
    // Continue` (relayed below) before the client sends it.
    let body_len = request.body_len(Some(0));
    let mut upload_to = server.stream.try_clone()?;
    let mut upload_from =
        Conn { stream: client.stream.try_clone()?, buffered: std::mem::take(&mut client.buffered) };
    let uploader = thread::spawn(move || upload_from.copy_body(&mut upload_to, body_len));
    let result = relay_response(&mut server, &mut client.stream, request.start.starts_with("HEAD "), cut);
    let _ = client.stream.shutdown(Shutdown::Both);
    let _ = server.stream.shutdown(Shutdown::Both);
    let _ = uploader.join();
    result
}

/// Relay `100 Continue` heads as they come, then the final response (or,
/// with `cut`, half of it).
fn relay_response(
    server: &mut Conn,
    client: &mut TcpStream,
    head_request: bool,
    cut: bool,
) -> io::Result<()> {
    loop {
        let bytes = server.read_head()?.ok_or(io::ErrorKind::UnexpectedEof)?;
        let response = Head::parse(&bytes);
        let status = response.status();
        if (100..200).contains(&status) {
            client.write_all(&bytes)?;
            continue;
        }
        let body_len =
            if head_request || status == 204 || status == 304 { Some(0) } else { response.body_len(None) };
        let head = response.closing();
        if !cut {
            client.write_all(&head)?;
            server.copy_body(client, body_len)?;
        } else if let Some(len @ 1..) = body_len {
            client.write_all(&head)?;
            server.copy_body(client, Some(len / 2))?;
        } else if body_len == Some(0) {
            client.write_all(&head[..head.len() / 2])?;
        } else {
            client.write_all(&head)?;
            let half = server.buffered.len() as u64 / 2;
            server.copy_body(client, Some(half))?;
        }
        return Ok(());
    }
}

/// Send the request head and half its body upstream, then reset both
/// connections. A request without a body is reset without forwarding.
fn reset_mid_body(mut client: Conn, request: &Head, shared: &Shared) -> io::Result<()> {
    let body_len = request.body_len(Some(0)).unwrap_or(64 * 1024);
    if body_len == 0 {
        reset(client.stream);
        return Ok(());
    }
    let server = TcpStream::connect_timeout(&shared.upstream, Duration::from_secs(5))?;
    server.set_read_timeout(Some(Duration::from_secs(60)))?;
    let mut server = Conn::new(server);
    server.stream.write_all(&request.closing())?;
    client.stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    let expects_continue = request.header("expect").is_some_and(|v| v.eq_ignore_ascii_case("100-continue"));
    if expects_continue && client.buffered.is_empty() {
        // Relay the server's go-ahead (or its refusal) so the client sends.
        if let Some(head) = server.read_head()? {
            client.stream.write_all(&head)?;
        }
    }
    client.copy_body(&mut server.stream, Some(body_len / 2))?;
    reset(server.stream);
    reset(client.stream);
    Ok(())
}

/// Answer `status` with an S3 error document and close; the request is
/// not forwarded.
fn answer(
    mut client: TcpStream,
    status: u16,
    code: &str,
    head_request: bool,
    closed: &AtomicBool,
) -> io::Result<()> {
    let reason = if status == 503 { "Service Unavailable" } else { "Internal Server Error" };
    let body = format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>{code}</Code>\
         <Message>injected by the test proxy</Message><RequestId>faultproxy</RequestId></Error>"
    );
    let length = if head_request { 0 } else { body.len() };
    let mut response = format!(
        "HTTP/1.1 {status} {reason}\r\nContent-Type: application/xml\r\nContent-Length: {length}\r\n\
         Connection: close\r\n\r\n"
    );
    if !head_request {
        response.push_str(&body);
    }
    client.write_all(response.as_bytes())?;
    client.shutdown(Shutdown::Write)?;
    // Read what the client still sends, so closing does not reset the
    // connection before it has read the answer.
    drain(&client, LINGER_AFTER_ANSWER, closed);
    Ok(())
}

/// Read and discard from `stream` until it ends, `limit` passes or the
/// proxy closes.
fn drain(mut stream: &TcpStream, limit: Duration, closed: &AtomicBool) {
    let deadline = Instant::now() + limit;
    let _ = stream.set_read_timeout(Some(Duration::from_millis(100)));
    let mut sink = [0u8; 64 * 1024];
    while Instant::now() < deadline && !closed.load(Ordering::SeqCst) {
        match stream.read(&mut sink) {
            Ok(0) => return,
            Ok(_) => {}
            Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut) => {}
            Err(_) => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_are_told_apart_by_operation() {
        let cases = [
            ("HEAD", "/b/p/s/batches/1-5", Kind::Head),
            ("GET", "/b?list-type=2&prefix=p%2Fs%2Fmanifest%2F", Kind::List),
            ("GET", "/b?prefix=p%2Fs%2F&uploads=", Kind::ListUploads),
            ("GET", "/b/p/s/manifest/1-5.batch", Kind::Get),
            ("POST", "/b/p/s/batches/1-5?uploads=", Kind::CreateUpload),
            ("PUT", "/b/p/s/batches/1-5?partNumber=2&uploadId=x", Kind::PutPart),
            ("POST", "/b/p/s/batches/1-5?uploadId=x", Kind::Complete),
            ("DELETE", "/b/p/s/batches/1-5?uploadId=x", Kind::Abort),
            ("PUT", "/b/p/s/manifest/1-5.batch", Kind::PutRecord),
            ("PUT", "/b/p/s/batches/1-5", Kind::PutObject),
            ("POST", "/b?delete=", Kind::Delete),
        ];
        for (method, target, kind) in cases {
            assert_eq!(Kind::of(method, target), kind, "{method} {target}");
        }
    }

    #[test]
    fn the_plan_fires_in_order_and_every_kth() {
        let mut plan = Plan::default();
        for rule in [Rule::burst(Fault::Stall, Kind::Head, 2), Rule::every(Fault::SlowDown, Kind::Any, 2, 2)]
        {
            plan.rules.push_back((rule, 0, rule.count));
        }
        let put = Some((Kind::PutObject, "PUT /x"));
        let head = Some((Kind::Head, "HEAD /x"));
        assert_eq!(plan.decide(put), None, "a PUT waits behind the HEAD rule");
        assert_eq!(plan.decide(None), None, "connections are not refused");
        assert_eq!(plan.decide(head), Some(Fault::Stall));
        assert_eq!(plan.decide(head), Some(Fault::Stall));
        let fired: Vec<_> = (0..5).map(|_| plan.decide(put)).collect();
        assert_eq!(fired, [None, Some(Fault::SlowDown), None, Some(Fault::SlowDown), None]);
        assert!(plan.rules.is_empty());
        assert_eq!(plan.injected.len(), 4);
    }
}
