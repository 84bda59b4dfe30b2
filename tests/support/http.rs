//! Tiny HTTP/1.1 servers, one per IP address and all on the same port, that can be stopped, resumed
//! and switched to another status code one address at a time: the "backends" rrguard probes.

use std::collections::{HashMap, VecDeque};
use std::io::{ErrorKind, Read, Write};
use std::net::{IpAddr, Shutdown, SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, AtomicU16, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use super::procnet::{socket_inode, wait_socket_gone};
use super::util::claim_port;

/// How often a listener checks its stop flag (it is nonblocking so that stopping needs no wake-up).
const POLL: Duration = Duration::from_millis(5);
/// How long a connection may take to send its request head before it is dropped.
const READ_TIMEOUT: Duration = Duration::from_secs(2);
/// Request heads larger than this are answered anyway (the harness does not care about headers).
const MAX_HEAD: usize = 16 * 1024;

/// How long `stop` waits for copies of the closed listener in forked children to disappear.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(5);

/// The serving thread of one listening socket.
struct Server {
    stop: Arc<AtomicBool>,
    thread: JoinHandle<()>,
    /// A second descriptor of the listening socket, to shut it down from `stop` (see
    /// [`Server::kill`]).
    listener: TcpListener,
    /// The listening socket's inode, to see when it is really gone (see `Server::shut`).
    inode: Option<u64>,
}

impl Server {
    /// Makes the endpoint dead at once, without waiting for anything: shuts the listening socket
    /// down (Linux moves a listening socket to CLOSE on `shutdown(SHUT_RD)`, resets the connections
    /// in its accept queue and refuses new ones, whichever process still holds a descriptor of it:
    /// a child forked just before would otherwise keep it listening until it execs, and accepted
    /// handshakes would wait unanswered), shuts down every accepted connection of `endpoint` (an
    /// answer still pending or a connection held open ends now, not when its thread gets to it),
    /// and tells the listener thread to stop.
    fn kill(&self, endpoint: &Endpoint) {
        // The flag first: a connection the thread registers after the loop below sees it.
        self.stop.store(true, Ordering::SeqCst);
        let _ = socket2::SockRef::from(&self.listener).shutdown(Shutdown::Both);
        for stream in lock(&endpoint.open).values() {
            let _ = stream.shutdown(Shutdown::Both);
        }
    }

    /// After [`Server::kill`]: joins the thread, which closes its descriptor, then waits until the
    /// socket is gone everywhere (copies in forked children), so that its port is free again.
    fn shut(self) {
        drop(self.listener);
        let joined = self.thread.join();
        if let Some(inode) = self.inode {
            wait_socket_gone(inode, CLOSE_TIMEOUT);
        }
        joined.expect("HTTP listener thread panicked");
    }
}

/// Answers each endpoint remembers for [`HttpEndpoints::answers`].
const ANSWERS_KEPT: usize = 256;

/// State of one IP address's server, shared with its threads.
struct Endpoint {
    ip: IpAddr,
    status: AtomicU16,
    hits: AtomicU64,
    connections: AtomicU64,
    delay_ms: AtomicU64,
    /// Alternate mode: requests are answered 200, 503, 200, … regardless of `status`.
    alternate: AtomicBool,
    /// Requests answered in alternate mode so far (even: 200, odd: 503).
    turn: AtomicU64,
    body: Mutex<String>,
    /// The last [`ANSWERS_KEPT`] requests answered: when their head was read, and the status.
    answers: Mutex<VecDeque<(Instant, u16)>>,
    server: Mutex<Option<Server>>,
    /// Accepted connections not finished yet, by number (second descriptors, for `stop`).
    open: Mutex<HashMap<u64, TcpStream>>,
}

/// One HTTP/1.1 server per IP address, all on `port`. Every request gets `200 OK` (or the status set
/// with [`HttpEndpoints::set_status`]), `Content-Length`, `Connection: close` and the body `ok\n`.
/// Dropping it stops every server.
pub struct HttpEndpoints {
    /// The port all the servers listen on.
    pub port: u16,
    endpoints: Vec<Arc<Endpoint>>,
}

impl HttpEndpoints {
    /// Starts one server on each of `ips` (e.g. 127.0.0.2, 127.0.0.3, ::1), all on one free port.
    pub fn start(ips: &[IpAddr]) -> HttpEndpoints {
        assert!(
            !ips.is_empty(),
            "HttpEndpoints::start needs at least one IP"
        );
        for _ in 0..50 {
            // The kernel picks a port free on the first address; the others may still have it in
            // use, in which case everything is released and we try another port.
            let first = TcpListener::bind((ips[0], 0))
                .unwrap_or_else(|e| panic!("cannot bind {}: {e}", ips[0]));
            let port = first.local_addr().expect("local_addr").port();
            let mut listeners = vec![first];
            for ip in &ips[1..] {
                match TcpListener::bind((*ip, port)) {
                    Ok(l) => listeners.push(l),
                    Err(_) => break,
                }
            }
            if listeners.len() < ips.len() || !claim_port(port) {
                continue;
            }
            let endpoints: Vec<Arc<Endpoint>> = ips
                .iter()
                .zip(listeners)
                .map(|(ip, listener)| {
                    let endpoint = Arc::new(Endpoint {
                        ip: *ip,
                        status: AtomicU16::new(200),
                        hits: AtomicU64::new(0),
                        connections: AtomicU64::new(0),
                        delay_ms: AtomicU64::new(0),
                        alternate: AtomicBool::new(false),
                        turn: AtomicU64::new(0),
                        body: Mutex::new("ok\n".to_owned()),
                        answers: Mutex::new(VecDeque::new()),
                        server: Mutex::new(None),
                        open: Mutex::new(HashMap::new()),
                    });
                    *lock(&endpoint.server) = Some(serve(listener, Arc::clone(&endpoint)));
                    endpoint
                })
                .collect();
            return HttpEndpoints { port, endpoints };
        }
        panic!("could not bind all of {ips:?} on one common port in 50 tries");
    }

    /// `ip:port` of the server on `ip`.
    pub fn addr(&self, ip: IpAddr) -> SocketAddr {
        SocketAddr::new(self.endpoint(ip).ip, self.port)
    }

    /// Kills the server on `ip`: the listening socket is shut down first, so connections to
    /// `ip:port` are refused from the first microseconds of the call on, then every accepted
    /// connection is shut down (a request waiting for its answer gets none: the connection ends), and
    /// the call returns once the socket is gone. No-op if already stopped.
    pub fn stop(&self, ip: IpAddr) {
        let endpoint = self.endpoint(ip);
        let server = lock(&endpoint.server).take();
        if let Some(server) = server {
            server.kill(endpoint);
            server.shut();
        }
    }

    /// Closes the listening sockets of all `ips` at (nearly) the same moment: every serving thread is
    /// told to stop before any is waited for, so they close within one poll period of each other,
    /// where [`HttpEndpoints::stop`] one after another would spread the closes over the time each
    /// takes to be confirmed gone (a simultaneous failure, as opposed to a rolling one).
    pub fn stop_all(&self, ips: &[IpAddr]) {
        let servers: Vec<(&Endpoint, Server)> = ips
            .iter()
            .filter_map(|ip| {
                let endpoint = self.endpoint(*ip);
                lock(&endpoint.server).take().map(|s| (&**endpoint, s))
            })
            .collect();
        for (endpoint, server) in &servers {
            server.kill(endpoint);
        }
        for (_, server) in servers {
            server.shut();
        }
    }

    /// Binds `ip:port` again and serves (retrying for up to 5 s while the address is still in use).
    /// No-op if it is running.
    pub fn resume(&self, ip: IpAddr) {
        let endpoint = self.endpoint(ip);
        let mut server = lock(&endpoint.server);
        if server.is_some() {
            return;
        }
        let deadline = Instant::now() + Duration::from_secs(5);
        let listener = loop {
            match TcpListener::bind((ip, self.port)) {
                Ok(listener) => break listener,
                Err(e) if e.kind() == ErrorKind::AddrInUse && Instant::now() < deadline => {
                    thread::sleep(Duration::from_millis(20));
                }
                Err(e) => panic!("cannot bind {ip} port {} again: {e}", self.port),
            }
        };
        *server = Some(serve(listener, Arc::clone(endpoint)));
    }

    /// Answers requests on `ip` with `status` from now on.
    pub fn set_status(&self, ip: IpAddr, status: u16) {
        self.endpoint(ip).status.store(status, Ordering::SeqCst);
    }

    /// Alternate mode on `ip`: from now on requests are answered `200`, `503`, `200`, … in turn (the
    /// first one after this call gets `200`), whatever [`HttpEndpoints::set_status`] said. An endpoint
    /// that a health check can never settle on. `false` goes back to the configured status.
    pub fn set_alternate(&self, ip: IpAddr, on: bool) {
        let endpoint = self.endpoint(ip);
        endpoint.turn.store(0, Ordering::SeqCst);
        endpoint.alternate.store(on, Ordering::SeqCst);
    }

    /// Answers requests on `ip` with `body` from now on (default `ok\n`).
    pub fn set_body(&self, ip: IpAddr, body: &str) {
        *lock(&self.endpoint(ip).body) = body.to_owned();
    }

    /// Waits `delay` after reading a request on `ip` before answering it (for probe timeouts). The
    /// listener keeps accepting meanwhile.
    pub fn set_delay(&self, ip: IpAddr, delay: Duration) {
        let ms = u64::try_from(delay.as_millis()).unwrap_or(u64::MAX);
        self.endpoint(ip).delay_ms.store(ms, Ordering::SeqCst);
    }

    /// Requests served on `ip` so far (counted when the request head has been read, before the
    /// response is written, so a client that has its answer always sees its own hit).
    pub fn hits(&self, ip: IpAddr) -> u64 {
        self.endpoint(ip).hits.load(Ordering::SeqCst)
    }

    /// The last requests answered on `ip` (at most [`ANSWERS_KEPT`], oldest first): when each
    /// request's head was read, and the status it got.
    pub fn answers(&self, ip: IpAddr) -> Vec<(Instant, u16)> {
        lock(&self.endpoint(ip).answers).iter().copied().collect()
    }

    /// TCP connections accepted on `ip` so far, including ones that never sent a request (TCP probes).
    pub fn connections(&self, ip: IpAddr) -> u64 {
        self.endpoint(ip).connections.load(Ordering::SeqCst)
    }

    fn endpoint(&self, ip: IpAddr) -> &Arc<Endpoint> {
        self.endpoints
            .iter()
            .find(|e| e.ip == ip)
            .unwrap_or_else(|| panic!("{ip} is not one of the HttpEndpoints addresses"))
    }
}

impl Drop for HttpEndpoints {
    fn drop(&mut self) {
        let servers: Vec<(&Endpoint, Server)> = self
            .endpoints
            .iter()
            .filter_map(|e| lock(&e.server).take().map(|s| (&**e, s)))
            .collect();
        // Kill every server first so the listeners wind down in parallel, then join them all.
        for (endpoint, server) in &servers {
            server.kill(endpoint);
        }
        for (_, server) in servers {
            drop(server.listener);
            let _ = server.thread.join();
            if let Some(inode) = server.inode {
                wait_socket_gone(inode, CLOSE_TIMEOUT);
            }
        }
    }
}

/// Locks ignoring poison: a panicking test must not make `Drop` panic as well.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Starts the accept loop of `listener` on its own thread.
fn serve(listener: TcpListener, endpoint: Arc<Endpoint>) -> Server {
    listener
        .set_nonblocking(true)
        .expect("cannot make listener nonblocking");
    let inode = socket_inode(listener.as_raw_fd());
    let second = listener
        .try_clone()
        .expect("cannot duplicate the listening socket");
    let stop = Arc::new(AtomicBool::new(false));
    let flag = Arc::clone(&stop);
    let thread = thread::Builder::new()
        .name(format!("http-{}", endpoint.ip))
        .spawn(move || {
            while !flag.load(Ordering::SeqCst) {
                match listener.accept() {
                    Ok((stream, _)) => {
                        // The count so far numbers the connection (unique for the endpoint).
                        let id = endpoint.connections.fetch_add(1, Ordering::SeqCst);
                        // Registered before its thread starts, so that a stop() that follows
                        // finds it; a stop() that came first (the flag) ends it here.
                        if let Ok(copy) = stream.try_clone() {
                            lock(&endpoint.open).insert(id, copy);
                        }
                        if flag.load(Ordering::SeqCst) {
                            let _ = stream.shutdown(Shutdown::Both);
                            lock(&endpoint.open).remove(&id);
                            break;
                        }
                        let endpoint = Arc::clone(&endpoint);
                        // One short-lived thread per connection: a slow or silent client must not
                        // hold up the next one, nor a stop().
                        thread::spawn(move || {
                            handle(stream, &endpoint);
                            lock(&endpoint.open).remove(&id);
                        });
                    }
                    Err(e) if e.kind() == ErrorKind::WouldBlock => thread::sleep(POLL),
                    // E.g. ECONNABORTED or EMFILE: transient, keep serving.
                    Err(_) => thread::sleep(POLL),
                }
            }
            // `listener` is dropped here: the socket is closed before stop() returns.
        })
        .expect("cannot spawn HTTP listener thread");
    Server {
        stop,
        thread,
        listener: second,
        inode,
    }
}

/// Reads one request head and writes the configured response. Errors just drop the connection.
fn handle(mut stream: TcpStream, endpoint: &Endpoint) {
    // Accepted sockets do not inherit O_NONBLOCK on Linux, but say so explicitly.
    if stream.set_nonblocking(false).is_err()
        || stream.set_read_timeout(Some(READ_TIMEOUT)).is_err()
    {
        return;
    }
    let mut head = Vec::new();
    let mut buf = [0u8; 2048];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < MAX_HEAD {
        match stream.read(&mut buf) {
            Ok(0) | Err(_) => return, // closed (e.g. a TCP-only probe) or timed out
            Ok(n) => head.extend_from_slice(&buf[..n]),
        }
    }
    endpoint.hits.fetch_add(1, Ordering::SeqCst);
    let read_at = Instant::now();
    let delay = endpoint.delay_ms.load(Ordering::SeqCst);
    if delay > 0 {
        thread::sleep(Duration::from_millis(delay));
    }
    let status = if endpoint.alternate.load(Ordering::SeqCst) {
        if endpoint
            .turn
            .fetch_add(1, Ordering::SeqCst)
            .is_multiple_of(2)
        {
            200
        } else {
            503
        }
    } else {
        endpoint.status.load(Ordering::SeqCst)
    };
    {
        let mut answers = lock(&endpoint.answers);
        if answers.len() == ANSWERS_KEPT {
            answers.pop_front();
        }
        answers.push_back((read_at, status));
    }
    let body = lock(&endpoint.body).clone();
    let is_head = head.starts_with(b"HEAD ");
    let response = format!(
        "HTTP/1.1 {status} {}\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{}",
        reason(status),
        body.len(),
        if is_head { "" } else { &body }
    );
    if stream.write_all(response.as_bytes()).is_err() {
        return;
    }
    // Half-close and drain briefly instead of closing at once: closing a socket with unread request
    // bytes (say, a body we ignored) sends RST, which can destroy the response before it is read.
    let _ = stream.shutdown(Shutdown::Write);
    let _ = stream.set_read_timeout(Some(Duration::from_millis(200)));
    while matches!(stream.read(&mut buf), Ok(n) if n > 0) {}
}

/// Reason phrase for the status line (clients ignore it, humans reading captures do not).
fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        204 => "No Content",
        301 => "Moved Permanently",
        302 => "Found",
        400 => "Bad Request",
        403 => "Forbidden",
        404 => "Not Found",
        429 => "Too Many Requests",
        500 => "Internal Server Error",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        _ => "Status",
    }
}

/// Reads an HTTP request's head from `s`, up to and with the blank line (and whatever came with it
/// in the same reads); `None` if the connection ended or failed first. For the async test servers
/// that answer one request per connection.
pub async fn read_head<S: tokio::io::AsyncRead + Unpin>(s: &mut S) -> Option<Vec<u8>> {
    use tokio::io::AsyncReadExt as _;
    let mut head = Vec::new();
    let mut buf = [0u8; 2048];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        match s.read(&mut buf).await {
            Ok(0) | Err(_) => return None,
            Ok(n) => head.extend_from_slice(&buf[..n]),
        }
    }
    Some(head)
}
