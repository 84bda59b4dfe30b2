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
//! HTTPS and `follow_redirects` keep the shared reqwest client ([`super::client`]).

use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body_util::{BodyExt as _, Empty};
use hyper::body::Incoming;
use hyper::header::{HOST, HeaderMap, HeaderValue};
use hyper::{Method, Request, Response, Uri};
use hyper_util::rt::TokioIo;
use tokio::net::TcpSocket;

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
    target: SocketAddr,
    source: Option<IpAddr>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
}

impl Lean {
    /// The request `method` of `path` (origin form, with query) to `target`, with `headers` (Host
    /// included), connecting from `source` if set. `None` if the path is not a valid request target
    /// (validated in config; the caller then keeps reqwest).
    pub(super) fn new(
        target: SocketAddr,
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
            target,
            source,
            method,
            uri,
            headers,
        })
    }

    /// Connects, sends the request and hands the answer to `on_response`, driving the connection
    /// until `on_response` is done; the connection is closed when this returns.
    ///
    /// # Errors
    /// [`LeanError`] if no answer came (the body's errors are `on_response`'s to report).
    pub(super) async fn exchange<T, F, Fut>(&self, on_response: F) -> Result<T, LeanError>
    where
        F: FnOnce(Response<Incoming>) -> Fut,
        Fut: Future<Output = T>,
    {
        let socket = match self.target {
            SocketAddr::V4(_) => TcpSocket::new_v4()?,
            SocketAddr::V6(_) => TcpSocket::new_v6()?,
        };
        if let Some(source) = self.source {
            socket.bind(SocketAddr::new(source, 0))?;
        }
        // The connection ends after the answer is read (or the probe gave up): no TIME_WAIT.
        crate::observe::probe::close_with_reset(&socket);
        let stream = socket.connect(self.target).await?;
        // A request is one small write: do not wait for more to send.
        stream.set_nodelay(true)?;
        let (mut sender, conn) = hyper::client::conn::http1::Builder::new()
            .handshake::<_, Empty<Bytes>>(NoShutdown(TokioIo::new(stream)))
            .await?;
        let mut request = Request::new(Empty::new());
        *request.method_mut() = self.method.clone();
        *request.uri_mut() = self.uri.clone();
        *request.headers_mut() = self.headers.clone();
        let work = async move {
            let response = sender.send_request(request).await?;
            Ok(on_response(response).await)
        };
        let mut work = std::pin::pin!(work);
        let mut conn = std::pin::pin!(conn);
        tokio::select! {
            biased;
            done = &mut work => done,
            // The connection ended (closed by the server after the answer, or failed): whatever it
            // delivered, or its error, reaches `work`.
            _ = &mut conn => work.await,
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
