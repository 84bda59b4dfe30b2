//! DNS listeners: for each `listen` address one UDP socket served by one task per CPU, and one TCP
//! listener with a task per connection (RFC 7766: two-byte length framing, several queries per
//! connection, an idle timeout, a cap on open connections).
//!
//! Tasks read the current [`Snapshot`] through [`Served`] and end when their cancellation token is
//! cancelled (the store is dropped, or the address left `listen`). Nothing a client sends can end
//! them: bad packets get FORMERR or nothing ([`respond`]), socket errors are logged and survived.

use std::io::ErrorKind;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use socket2::{Domain, Protocol, Socket, Type};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use super::answer::{MAX_UDP_PAYLOAD, Snapshot, Transport, respond};

/// Open TCP connections per address beyond which new ones are closed at once.
pub const MAX_TCP_CONNECTIONS: usize = 512;
/// Kernel receive buffer asked for each UDP socket, so bursts are queued rather than dropped.
const UDP_RECV_BUFFER: usize = 4 << 20;
/// Pending TCP connections the kernel queues (`listen(2)` backlog).
const TCP_BACKLOG: i32 = 1024;

/// What the listener tasks read: the current snapshot, and settings that may change on reload.
#[derive(Debug, Default)]
pub(crate) struct Served {
    snapshot: RwLock<Arc<Snapshot>>,
    /// Bumped after every new snapshot, so tasks reload only when it changed.
    generation: AtomicU64,
    tcp_idle_ms: AtomicU64,
}

impl Served {
    /// Makes `snapshot` the one answered from.
    pub fn publish(&self, snapshot: Snapshot) {
        *self.snapshot.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(snapshot);
        self.generation.fetch_add(1, Ordering::Release);
    }

    /// The current snapshot and its generation.
    pub fn current(&self) -> (u64, Arc<Snapshot>) {
        let generation = self.generation.load(Ordering::Acquire);
        let snap = self
            .snapshot
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        (generation, snap)
    }

    /// Sets the TCP idle timeout of new and waiting connections.
    pub fn set_tcp_idle(&self, idle: Duration) {
        let ms = u64::try_from(idle.as_millis()).unwrap_or(u64::MAX);
        self.tcp_idle_ms.store(ms, Ordering::Relaxed);
    }

    fn tcp_idle(&self) -> Duration {
        Duration::from_millis(self.tcp_idle_ms.load(Ordering::Relaxed))
    }
}

/// The sockets of one address, bound but not yet served.
pub(crate) struct Bound {
    udp: std::net::UdpSocket,
    tcp: std::net::TcpListener,
}

/// Binds `addr` over UDP and TCP (IPv6 sockets IPv6-only, so `0.0.0.0:53` and `[::]:53` can both
/// be listed, as Knot and BIND do).
///
/// # Errors
/// `cannot listen on ADDR (UDP|TCP): why; fix`.
pub(crate) fn bind(addr: SocketAddr) -> Result<Bound, String> {
    let domain = Domain::for_address(addr);
    let open = |ty: Type, proto: Protocol, name: &str| -> Result<Socket, String> {
        let s = Socket::new(domain, ty, Some(proto)).map_err(|e| describe(addr, name, &e))?;
        if addr.is_ipv6() {
            s.set_only_v6(true).map_err(|e| describe(addr, name, &e))?;
        }
        Ok(s)
    };
    let udp = open(Type::DGRAM, Protocol::UDP, "UDP")?;
    let _ = udp.set_recv_buffer_size(UDP_RECV_BUFFER);
    udp.bind(&addr.into())
        .and_then(|()| udp.set_nonblocking(true))
        .map_err(|e| describe(addr, "UDP", &e))?;
    let tcp = open(Type::STREAM, Protocol::TCP, "TCP")?;
    tcp.set_reuse_address(true)
        .and_then(|()| tcp.bind(&addr.into()))
        .and_then(|()| tcp.listen(TCP_BACKLOG))
        .and_then(|()| tcp.set_nonblocking(true))
        .map_err(|e| describe(addr, "TCP", &e))?;
    Ok(Bound {
        udp: udp.into(),
        tcp: tcp.into(),
    })
}

/// A bind error as a person needs it: what, why, and the fix.
fn describe(addr: SocketAddr, proto: &str, e: &std::io::Error) -> String {
    let what = format!("cannot listen on {addr} ({proto})");
    match e.kind() {
        ErrorKind::AddrInUse => format!(
            "{what}: address in use; another DNS server (or another rrguard) listens there: stop it, or change this writer's `listen`"
        ),
        ErrorKind::PermissionDenied => format!(
            "{what}: permission denied; ports below 1024 need root or CAP_NET_BIND_SERVICE (systemd: AmbientCapabilities=CAP_NET_BIND_SERVICE)"
        ),
        ErrorKind::AddrNotAvailable => format!(
            "{what}: no interface of this host has that address; use one of its addresses, or 0.0.0.0 / [::]"
        ),
        _ => format!("{what}: {e}"),
    }
}

/// Serves `bound` on the current runtime until `cancel` is cancelled.
///
/// # Errors
/// When there is no tokio runtime to serve on.
pub(crate) fn spawn(
    addr: SocketAddr,
    bound: Bound,
    served: &Arc<Served>,
    cancel: &CancellationToken,
) -> Result<(), String> {
    let rt = tokio::runtime::Handle::try_current()
        .map_err(|_| format!("cannot serve DNS on {addr}: no async runtime (a bug)"))?;
    let _guard = rt.enter();
    let udp = UdpSocket::from_std(bound.udp).map_err(|e| describe(addr, "UDP", &e))?;
    let tcp = TcpListener::from_std(bound.tcp).map_err(|e| describe(addr, "TCP", &e))?;
    let udp = Arc::new(udp);
    let workers = std::thread::available_parallelism().map_or(1, |n| n.get().min(8));
    for _ in 0..workers {
        let (udp, served, cancel) = (udp.clone(), served.clone(), cancel.clone());
        rt.spawn(async move {
            tokio::select! {
                () = cancel.cancelled() => {}
                () = udp_worker(&udp, &served) => {}
            }
        });
    }
    let (served, cancel) = (served.clone(), cancel.clone());
    rt.spawn(async move {
        let inner = cancel.clone();
        tokio::select! {
            () = cancel.cancelled() => {}
            () = tcp_acceptor(tcp, served, inner) => {}
        }
    });
    Ok(())
}

/// Answers datagrams until the task is dropped.
async fn udp_worker(sock: &UdpSocket, served: &Served) {
    let mut buf = vec![0u8; 65_535];
    let mut out = Vec::with_capacity(usize::from(MAX_UDP_PAYLOAD) + 64);
    let (mut generation, mut snap) = served.current();
    let mut errors = 0u32;
    loop {
        let (n, peer) = match sock.recv_from(&mut buf).await {
            Ok(got) => got,
            Err(e) => {
                // E.g. ECONNREFUSED left by an ICMP error: the socket is fine. Back off only if it
                // repeats, so that a broken socket cannot spin a CPU.
                errors += 1;
                debug!(error = %e, "DNS UDP receive failed");
                if errors.is_multiple_of(100) {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
                continue;
            }
        };
        errors = 0;
        if served.generation.load(Ordering::Acquire) != generation {
            (generation, snap) = served.current();
        }
        if respond(&snap, &buf[..n], Transport::Udp, &mut out)
            && let Err(e) = sock.send_to(&out, peer).await
        {
            debug!(%peer, error = %e, "DNS UDP send failed");
        }
    }
}

/// Accepts connections until the task is dropped; each runs until it idles out or `cancel`.
async fn tcp_acceptor(listener: TcpListener, served: Arc<Served>, cancel: CancellationToken) {
    let slots = Arc::new(Semaphore::new(MAX_TCP_CONNECTIONS));
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(got) => got,
            Err(e) => {
                // EMFILE and friends: wait for connections to close instead of spinning.
                warn!(error = %e, "DNS TCP accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            debug!(%peer, "too many DNS TCP connections, closing the new one");
            continue;
        };
        let (served, cancel) = (served.clone(), cancel.clone());
        tokio::spawn(async move {
            tokio::select! {
                () = cancel.cancelled() => {}
                () = tcp_connection(stream, &served) => {}
            }
            drop(slot);
        });
    }
}

/// Answers length-prefixed queries on one connection until the client closes it, idles out, sends
/// something that is not a query, or a read or write fails.
async fn tcp_connection(mut stream: TcpStream, served: &Served) {
    let _ = stream.set_nodelay(true);
    let mut buf = Vec::new();
    let mut out = Vec::new();
    let mut framed = Vec::new();
    loop {
        let idle = served.tcp_idle();
        let mut len = [0u8; 2];
        if !matches!(
            tokio::time::timeout(idle, stream.read_exact(&mut len)).await,
            Ok(Ok(_))
        ) {
            return;
        }
        buf.resize(usize::from(u16::from_be_bytes(len)), 0);
        if !matches!(
            tokio::time::timeout(idle, stream.read_exact(&mut buf)).await,
            Ok(Ok(_))
        ) {
            return;
        }
        let (_, snap) = served.current();
        if !respond(&snap, &buf, Transport::Tcp, &mut out) {
            return;
        }
        let Ok(n) = u16::try_from(out.len()) else {
            return;
        };
        framed.clear();
        framed.extend_from_slice(&n.to_be_bytes());
        framed.extend_from_slice(&out);
        if !matches!(
            tokio::time::timeout(idle, stream.write_all(&framed)).await,
            Ok(Ok(()))
        ) {
            return;
        }
    }
}
