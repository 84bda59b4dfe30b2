//! The plain `http` exchange on hyper's HTTP/1.1 connection directly, for checks that follow no
//! redirect: what most probes at scale are.
//!
//! reqwest's client does the same exchange with much around it that a probe never uses: URL parsing
//! and a name resolution per request, a header map built and cloned per request, a pool checkout, a
//! spawned task per connection and the redirect machinery. At 10,000 endpoints per second that
//! overhead was most of rrguard's CPU per probe (`docs/benchmarks.md`, "Probe engine at 10,000
//! endpoints"). Here each probe's request is prepared once (method, path, headers), and one probe
//! is: connect to the endpoint (from `source_address` if set), HTTP/1.1 handshake, send, read the
//! answer, close. The connection is driven inside the probe's own future (no spawned task) and
//! dropped with it, so, as with the shared reqwest client, every probe makes a fresh connection and a
//! dead listener is never hidden by a reused one. It closes with a reset
//! ([`crate::observe::probe::close_with_reset`]): no `TIME_WAIT` socket per probe.
//!
//! With `keep_alive = true` the connection outlives the probe when the answer allows it (HTTP/1.1
//! without `Connection: close`, body read to its end): hyper's connection is taken apart
//! (`into_parts`) and the socket kept for the next probe's handshake, so the connection costs
//! nothing while idle but its socket. A kept connection that turns out closed is replaced within
//! the same probe ([`Lean::exchange`]).
//!
//! HTTPS and `follow_redirects` keep the shared reqwest client ([`super::client`]).

use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::{Mutex, PoisonError};
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body_util::{BodyExt as _, Empty};
use hyper::body::Incoming;
use hyper::header::{HOST, HeaderMap, HeaderValue};
use hyper::{Method, Request, Response, Uri};
use hyper_util::rt::TokioIo;
use tokio::net::{TcpSocket, TcpStream};

use super::Chunks;

/// Why an exchange produced no answer (or its body could not be read).
#[derive(Debug, thiserror::Error)]
pub(super) enum LeanError {
    /// Connecting (or binding `source_address`) failed.
    #[error("{0}")]
    Connect(#[from] std::io::Error),
    /// The HTTP exchange failed: the connection closed or reset, a malformed answer.
    #[error("{0}")]
    Http(#[from] hyper::Error),
}

/// One endpoint's prepared request.
pub(super) struct Lean {
    source: Option<IpAddr>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
}

/// One endpoint's side of a [`Lean`] exchange: where it connects, and with `keep_alive` the
/// connection the last answer left open.
#[derive(Debug)]
pub(super) struct Peer {
    target: SocketAddr,
    idle: Option<Mutex<Option<TcpStream>>>,
}

impl Peer {
    /// `target`, keeping the connection open between probes if `keep_alive`.
    pub(super) fn new(target: SocketAddr, keep_alive: bool) -> Self {
        Peer {
            target,
            idle: keep_alive.then(|| Mutex::new(None)),
        }
    }
}

/// Most body bytes read after the probe has judged an answer, to leave a kept-alive connection at
/// the start of the next answer; a longer rest closes the connection instead.
const DRAIN_MAX_BYTES: usize = 64 * 1024;

/// How one exchange on one connection ended.
enum Attempt<T, F> {
    Done(T),
    /// A kept-alive connection failed before any answer (the server closed it meanwhile): the
    /// probe is not judged by it; `on_response` comes back for a new connection.
    Stale(F, LeanError),
    Failed(LeanError),
}

impl Lean {
    /// The request `method` of `path` (origin form, with query), with `headers` (Host included),
    /// connecting from `source` if set; one for every endpoint of a check ([`Peer`] is each one's
    /// own part). `None` if the path is not a valid request target (validated in config; the
    /// caller then keeps reqwest).
    pub(super) fn new(
        source: Option<IpAddr>,
        method: Method,
        path: &str,
        headers: HeaderMap,
    ) -> Option<Self> {
        let uri: Uri = path.parse().ok()?;
        // Origin form only: an absolute URI here would be sent as a proxy request.
        if uri.scheme().is_some() || !headers.contains_key(HOST) {
            return None;
        }
        Some(Lean {
            source,
            method,
            uri,
            headers,
        })
    }

    /// Connects (or, with `keep_alive`, takes the connection the last answer left open), sends the
    /// request and hands the answer to `on_response`, driving the connection until `on_response`
    /// is done and gives the answer back. The connection is closed when this returns, or kept for
    /// the next probe when `keep_alive` is on, the answer was HTTP/1.1 without `Connection: close`,
    /// and its body could be read to the end (at most [`DRAIN_MAX_BYTES`] after `on_response`).
    /// A kept connection that fails before an answer (the server closed it while idle) is replaced
    /// by a new one within the same probe, so only a new connection's failure counts.
    ///
    /// # Errors
    /// [`LeanError`] if no answer came (the body's errors are `on_response`'s to report).
    pub(super) async fn exchange<T, F, Fut>(
        &self,
        peer: &Peer,
        on_response: F,
    ) -> Result<T, LeanError>
    where
        F: FnOnce(Response<Incoming>) -> Fut,
        Fut: Future<Output = (T, Response<Incoming>)>,
    {
        let kept = take_idle(peer);
        let on_response = match kept {
            Some(stream) => match self.attempt(peer, stream, true, on_response).await {
                Attempt::Done(t) => return Ok(t),
                Attempt::Failed(e) => return Err(e),
                Attempt::Stale(f, _) => f,
            },
            None => on_response,
        };
        let stream = self.connect(peer.target).await?;
        match self.attempt(peer, stream, false, on_response).await {
            Attempt::Done(t) => Ok(t),
            // A new connection: its failure is the endpoint's.
            Attempt::Stale(_, e) | Attempt::Failed(e) => Err(e),
        }
    }

    async fn connect(&self, target: SocketAddr) -> Result<TcpStream, LeanError> {
        let socket = match target {
            SocketAddr::V4(_) => TcpSocket::new_v4()?,
            SocketAddr::V6(_) => TcpSocket::new_v6()?,
        };
        if let Some(source) = self.source {
            socket.bind(SocketAddr::new(source, 0))?;
        }
        // The connection ends after the answer is read (or the probe gave up): no TIME_WAIT.
        crate::observe::probe::close_with_reset(&socket);
        // No TCP_NODELAY: a request is one write of its head (the body is always empty), and
        // Nagle's algorithm holds a write back only while earlier data is unacknowledged, which a
        // new connection, or a kept one whose last answer was read in full, never has. One
        // system call per probe less (`setsockopt`, ~1 µs under this kernel's mitigations).
        Ok(socket.connect(target).await?)
    }

    /// One exchange on `stream` to `peer`, a kept connection if `reused`.
    async fn attempt<T, F, Fut>(
        &self,
        peer: &Peer,
        stream: TcpStream,
        reused: bool,
        on_response: F,
    ) -> Attempt<T, F>
    where
        F: FnOnce(Response<Incoming>) -> Fut,
        Fut: Future<Output = (T, Response<Incoming>)>,
    {
        let (mut sender, mut conn) = match hyper::client::conn::http1::Builder::new()
            .handshake::<_, Empty<Bytes>>(NoShutdown(TokioIo::new(stream)))
            .await
        {
            Ok(pair) => pair,
            Err(e) => return Attempt::Failed(e.into()),
        };
        let mut request = Request::new(Empty::new());
        *request.method_mut() = self.method.clone();
        *request.uri_mut() = self.uri.clone();
        *request.headers_mut() = self.headers.clone();
        let mut conn_ended = false;
        let answer = alongside(sender.send_request(request), &mut conn, &mut conn_ended).await;
        let response = match answer {
            Ok(r) => r,
            Err(e) if reused => return Attempt::Stale(on_response, e.into()),
            Err(e) => return Attempt::Failed(e.into()),
        };
        let keep = peer.idle.is_some() && !conn_ended && reusable(&response);
        let work = async move {
            let (t, mut response) = on_response(response).await;
            let drained = keep && drain(response.body_mut()).await;
            (t, drained)
        };
        let (t, drained) = alongside(work, &mut conn, &mut conn_ended).await;
        if drained && !conn_ended {
            drop(sender);
            let parts = conn.into_parts();
            if parts.read_buf.is_empty()
                && let Some(idle) = &peer.idle
            {
                *idle.lock().unwrap_or_else(PoisonError::into_inner) =
                    Some(parts.io.0.into_inner());
            }
        }
        Attempt::Done(t)
    }
}

/// `peer`'s kept connection, if one is kept and still open as far as this end knows.
fn take_idle(peer: &Peer) -> Option<TcpStream> {
    let stream = peer
        .idle
        .as_ref()?
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .take()?;
    // Nothing may arrive on an idle connection: end-of-stream, a reset or stray bytes mean it
    // cannot carry the next exchange.
    let mut probe = [0u8; 1];
    match stream.try_read(&mut probe) {
        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => Some(stream),
        _ => None,
    }
}

/// Runs `work` while driving the connection `conn`, which `work` needs to make progress; `ended`
/// records that the connection finished (closed by the server, or failed), after which it is not
/// polled again and whatever it delivered, or its error, reaches `work`.
async fn alongside<W: Future, C: Future + Unpin>(
    work: W,
    conn: &mut C,
    ended: &mut bool,
) -> W::Output {
    let mut work = std::pin::pin!(work);
    if *ended {
        return work.await;
    }
    tokio::select! {
        biased;
        done = &mut work => done,
        _ = conn => {
            *ended = true;
            work.await
        }
    }
}

/// Whether the server left the connection open after `response`: HTTP/1.1 without
/// `Connection: close` (RFC 9112 §9.3).
fn reusable(response: &Response<Incoming>) -> bool {
    response.version() == hyper::Version::HTTP_11
        && !response
            .headers()
            .get_all(hyper::header::CONNECTION)
            .iter()
            .any(|v| {
                v.to_str()
                    .is_ok_and(|v| v.split(',').any(|t| t.trim().eq_ignore_ascii_case("close")))
            })
}

/// Reads the rest of `body` to its end; `false` if it errs or goes past [`DRAIN_MAX_BYTES`].
async fn drain(body: &mut Incoming) -> bool {
    let mut read = 0;
    loop {
        match body.next_chunk().await {
            Ok(None) => return true,
            Ok(Some(chunk)) => {
                read += chunk.len();
                if read > DRAIN_MAX_BYTES {
                    return false;
                }
            }
            Err(_) => return false,
        }
    }
}

/// A probe connection's I/O whose write half hyper never shuts down. hyper shuts it down (sends a
/// FIN) once an answer says `Connection: close`; the probe closes the socket with a reset right
/// after anyway. The FIN was one more segment for both ends to process: at 10,000 probes/s against
/// servers that close, 10 % of rrguard's CPU (perf, `docs/benchmarks.md`).
struct NoShutdown<T>(T);

impl<T: hyper::rt::Read + Unpin> hyper::rt::Read for NoShutdown<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: hyper::rt::ReadBufCursor<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.0).poll_read(cx, buf)
    }
}

impl<T: hyper::rt::Write + Unpin> hyper::rt::Write for NoShutdown<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.0).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn is_write_vectored(&self) -> bool {
        self.0.is_write_vectored()
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.0).poll_write_vectored(cx, bufs)
    }
}

impl Chunks for Incoming {
    type Error = hyper::Error;

    async fn next_chunk(&mut self) -> Result<Option<Bytes>, hyper::Error> {
        while let Some(frame) = self.frame().await {
            // Trailers carry no body bytes.
            if let Ok(data) = frame?.into_data() {
                return Ok(Some(data));
            }
        }
        Ok(None)
    }
}

/// The `Host` value of `host` as reqwest would send it.
pub(super) fn host_value(host: &str, port: u16) -> Option<HeaderValue> {
    HeaderValue::from_str(&super::host_header(host, port, false)).ok()
}
