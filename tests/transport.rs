//! One battery written against `&dyn Transport`, run for every peer transport: `HttpTransport` posting
//! to a real axum server on 127.0.0.1 port 0, and the in-process `MemoryTransport`. A new transport
//! adds a constructor of its [`Side`] and a one-line test.

use std::any::Any;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use rrguard::agree::transport::{Delivered, HttpTransport, MemoryTransport, Transport};
use rrguard::agree::wire;
use rrguard::config::PeerConfig;
use tokio::time::Instant;

/// The transports' timeout.
const TIMEOUT: Duration = Duration::from_secs(2);
/// How late an unreachable peer may be reported on a busy machine.
const MARGIN: Duration = Duration::from_millis(700);
/// What the refusing peer says.
const REASON: &str = "replayed message from node-a";
const MAC: &str = "3q2+7w==";

/// Everything a transport's test needs: the transport, three peers and what the accepting one got.
struct Side {
    transport: Box<dyn Transport>,
    /// Accepts everything and records it in `received`.
    accepting: PeerConfig,
    /// Refuses everything with [`REASON`].
    refusing: PeerConfig,
    /// Cannot be reached.
    unreachable: PeerConfig,
    received: Arc<Mutex<Vec<Delivered>>>,
    /// Keeps the receiving side alive.
    _guard: Box<dyn Any>,
}

async fn battery(side: Side) {
    let t = &*side.transport;
    let received = || side.received.lock().unwrap().clone();

    let body = br#"{"v":1,"from":"node-a","votes":[]}"#.to_vec();
    delivers_intact(t, &side.accepting, &body).await;
    assert_eq!(received().last(), Some(&delivered(&body)));

    refused_with_reason(t, &side.refusing).await;
    unreachable_fails_quickly(t, &side.unreachable).await;

    let large: Vec<u8> = (0..200 * 1024).map(|i| (i % 251) as u8).collect();
    match t.send(&side.accepting, &large, MAC).await {
        Ok(()) => assert_eq!(received().last(), Some(&delivered(&large))),
        Err(e) => assert!(!e.is_empty(), "a refusal of 200 KiB says why"),
    }

    let before = received().len();
    let oversized = vec![b' '; wire::MAX_BODY_BYTES + 1];
    let r = t.send(&side.accepting, &oversized, MAC).await;
    assert!(r.is_err(), "a body over wire::MAX_BODY_BYTES is refused");
    assert_eq!(
        received().len(),
        before,
        "the oversized body reached the peer"
    );
}

async fn delivers_intact(t: &dyn Transport, peer: &PeerConfig, body: &[u8]) {
    let r = t.send(peer, body, MAC).await;
    assert_eq!(r, Ok(()), "delivery to an accepting peer");
}

async fn refused_with_reason(t: &dyn Transport, peer: &PeerConfig) {
    let e = t
        .send(peer, b"{}", MAC)
        .await
        .expect_err("a refusing peer is an error");
    assert!(e.contains(REASON), "the refusal lost its reason: {e}");
}

async fn unreachable_fails_quickly(t: &dyn Transport, peer: &PeerConfig) {
    let start = Instant::now();
    let r = t.send(peer, b"{}", MAC).await;
    let took = start.elapsed();
    let e = r.expect_err("an unreachable peer is an error");
    assert!(!e.is_empty());
    assert!(
        took < TIMEOUT + MARGIN,
        "reporting an unreachable peer took {took:?}"
    );
}

fn delivered(body: &[u8]) -> Delivered {
    Delivered {
        body: body.to_vec(),
        mac: MAC.to_owned(),
    }
}

fn peer(id: &str, url: String) -> PeerConfig {
    PeerConfig {
        id: id.to_owned(),
        url,
    }
}

#[tokio::test]
async fn http() {
    battery(http_side().await).await;
}

#[tokio::test]
async fn memory() {
    battery(memory_side()).await;
}

/// What one test HTTP peer does with a message.
#[derive(Clone)]
struct Peer {
    refuse: Option<&'static str>,
    received: Arc<Mutex<Vec<Delivered>>>,
}

async fn votes(State(peer): State<Peer>, headers: HeaderMap, body: Bytes) -> (StatusCode, String) {
    if let Some(reason) = peer.refuse {
        return (StatusCode::CONFLICT, reason.to_owned());
    }
    let mac = headers
        .get(wire::MAC_HEADER)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    peer.received.lock().unwrap().push(Delivered {
        body: body.to_vec(),
        mac: mac.to_owned(),
    });
    (StatusCode::NO_CONTENT, String::new())
}

/// Serves `peer` on 127.0.0.1, port 0, with the body limit of the real receiver; returns its base URL
/// and the server task (aborted when dropped).
async fn serve(peer: Peer) -> (String, AbortOnDrop) {
    let app = axum::Router::new()
        .route(wire::VOTES_PATH, post(votes))
        .layer(DefaultBodyLimit::max(wire::MAX_BODY_BYTES))
        .with_state(peer);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let task = tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    (url, AbortOnDrop(task))
}

struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

async fn http_side() -> Side {
    let received = Arc::new(Mutex::new(Vec::new()));
    let (ok_url, ok_server) = serve(Peer {
        refuse: None,
        received: received.clone(),
    })
    .await;
    let (refusing_url, refusing_server) = serve(Peer {
        refuse: Some(REASON),
        received: Arc::new(Mutex::new(Vec::new())),
    })
    .await;
    // A port nobody listens on: bound, then closed.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let closed_url = format!("http://{}", closed.local_addr().unwrap());
    drop(closed);
    Side {
        transport: Box::new(HttpTransport::new(TIMEOUT)),
        accepting: peer("node-b", ok_url),
        refusing: peer("node-c", refusing_url),
        unreachable: peer("node-d", closed_url),
        received,
        _guard: Box::new((ok_server, refusing_server)),
    }
}

fn memory_side() -> Side {
    let net = MemoryTransport::new();
    let received = Arc::new(Mutex::new(Vec::new()));
    let log = received.clone();
    net.register("node-b", move |m| {
        log.lock().unwrap().push(m);
        Ok(())
    });
    net.register("node-c", |_| Err(REASON.to_owned()));
    // Registered but cut off: the receiver must not see anything.
    net.register("node-d", |_| {
        panic!("a message reached an unreachable peer")
    });
    net.set_reachable("node-d", false);
    let url = |id: &str| format!("memory://{id}");
    Side {
        transport: Box::new(net),
        accepting: peer("node-b", url("node-b")),
        refusing: peer("node-c", url("node-c")),
        unreachable: peer("node-d", url("node-d")),
        received,
        _guard: Box::new(()),
    }
}

/// The memory transport's own knobs: channels, unregistering, a dropped receiver, reachable again.
#[tokio::test]
async fn memory_knobs() {
    let net = MemoryTransport::new();
    let b = peer("node-b", "memory://node-b".to_owned());
    assert!(net.send(&b, b"1", MAC).await.is_err(), "nobody registered");

    let mut rx = net.channel("node-b");
    net.send(&b, b"1", MAC).await.unwrap();
    assert_eq!(rx.recv().await, Some(delivered(b"1")));

    net.set_reachable("node-b", false);
    assert!(net.send(&b, b"2", MAC).await.is_err());
    net.set_reachable("node-b", true);
    net.send(&b, b"3", MAC).await.unwrap();
    assert_eq!(rx.recv().await, Some(delivered(b"3")), "2 was dropped");

    drop(rx);
    let e = net.send(&b, b"4", MAC).await.unwrap_err();
    assert!(e.contains("gone"), "{e}");

    let _rx = net.channel("node-b");
    net.unregister("node-b");
    assert!(net.send(&b, b"5", MAC).await.is_err(), "unregistered");
}
