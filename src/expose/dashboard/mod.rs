//! The dashboard: `GET /` (a server-rendered page, readable without JavaScript) and
//! `GET /dashboard/events` (Server-Sent Events that keep it current without reloading), both behind
//! the read access of the API (`[api] read`).
//!
//! The page shows every service with its published records (with TTL) per writer, and per endpoint
//! its agreed state, each node's vote as a dot that fades with the vote's age, a latency sparkline
//! of this node's recent probes, since when the state holds, why it is in or out of DNS, and the
//! operator's overrides; the recent events; the cluster members with the elected node marked. A
//! small script (`dashboard.js`, embedded) sets and clears overrides through `POST/DELETE
//! /api/v1/overrides` with the bearer token the operator types (kept in `sessionStorage`).
//!
//! One [`Board`] per HTTP server renders the markup ([`render`]) at most every [`REFRESH`] and
//! remembers, per endpoint row and per block, the version at which it last changed. The page
//! carries the version it was rendered at; each event stream sends, at most every [`REFRESH`], only
//! what changed since the version its client has (`event: update`, JSON `{"v", "rows", "blocks"}`),
//! so a page with 1,000 endpoints replaces a handful of rows per update, never the whole page. When
//! services or endpoints are added or removed (a reload) the stream sends `event: reload`.

pub mod render;

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::convert::Infallible;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use axum::Router;
use axum::extract::{Query, State};
use axum::http::{StatusCode, header};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use serde::{Deserialize, Serialize};
use tokio::sync::broadcast::{self, error::TryRecvError};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::state::{NodeState, ProbeSample, now_unix_ms};

/// How often the markup is rebuilt and streams send updates, at most.
pub const REFRESH: Duration = Duration::from_millis(500);
/// Latencies kept per endpoint for its sparkline (this node's most recent probes).
pub const SPARK_SAMPLES: usize = 30;

const STYLE: &str = include_str!("dashboard.css");
const SCRIPT: &str = include_str!("dashboard.js");

/// The dashboard's routes, with the read access check of the API.
pub fn routes<S: Clone + Send + Sync + 'static>(
    state: &NodeState,
    shutdown: CancellationToken,
) -> Router<S> {
    let board = Board {
        node: state.clone(),
        cache: Arc::new(Mutex::new(Cache::new(state.subscribe_probes()))),
        shutdown,
    };
    Router::new()
        .route("/", get(page))
        .route("/dashboard/events", get(stream))
        .route_layer(axum::middleware::from_fn_with_state(
            state.clone(),
            super::auth::require_read,
        ))
        .with_state(board)
}

#[derive(Clone)]
struct Board {
    node: NodeState,
    cache: Arc<Mutex<Cache>>,
    shutdown: CancellationToken,
}

/// One piece of markup and the version at which it last changed.
#[derive(Default)]
struct Piece {
    html: String,
    v: u64,
}

/// One endpoint's row: the row (with [`render::SPARK_SLOT`]) and its latency cell, versioned apart.
#[derive(Default)]
struct Row {
    main: Piece,
    spark: Piece,
}

struct Service {
    fqdn: String,
    zone: String,
    check: String,
    /// Row ids, in status order.
    rows: Vec<String>,
}

struct Cache {
    refreshed: Option<Instant>,
    /// Bumped whenever anything changes.
    v: u64,
    /// Bumped when the set of services or rows changes: the page must be reloaded.
    layout: u64,
    services: Vec<Service>,
    rows: HashMap<String, Row>,
    /// Blocks by element id: the cluster members, the events, each service's records.
    blocks: BTreeMap<String, Piece>,
    /// (service, endpoint) → recent latencies in ms, oldest first.
    latencies: HashMap<(String, String), VecDeque<f64>>,
    probes_rx: broadcast::Receiver<ProbeSample>,
    /// False until a status was rendered.
    ready: bool,
}

impl Cache {
    fn new(probes_rx: broadcast::Receiver<ProbeSample>) -> Cache {
        Cache {
            refreshed: None,
            v: 0,
            layout: 0,
            services: Vec::new(),
            rows: HashMap::new(),
            blocks: BTreeMap::new(),
            latencies: HashMap::new(),
            probes_rx,
            ready: false,
        }
    }

    /// Takes the probes recorded since the last call into the latency rings.
    fn drain_probes(&mut self) {
        loop {
            match self.probes_rx.try_recv() {
                Ok(p) => {
                    let ring = self
                        .latencies
                        .entry((p.service, p.endpoint.to_string()))
                        .or_default();
                    if ring.len() == SPARK_SAMPLES {
                        ring.pop_front();
                    }
                    ring.push_back(p.latency.as_secs_f64() * 1000.0);
                }
                // Missed samples only thin the sparkline.
                Err(TryRecvError::Lagged(_)) => {}
                Err(TryRecvError::Empty | TryRecvError::Closed) => break,
            }
        }
    }

    /// Rebuilds the markup from the node's status if the last rebuild is older than [`REFRESH`].
    fn refresh(&mut self, node: &NodeState) {
        let now = Instant::now();
        if self.refreshed.is_some_and(|t| now - t < REFRESH) {
            return;
        }
        self.refreshed = Some(now);
        self.drain_probes();
        let Some(status) = node.snapshot() else {
            return;
        };
        let since = node.cluster_since();
        let cx = render::Context {
            status: &status,
            since: &since,
            now_unix_ms: now_unix_ms(),
        };
        let next = self.v + 1;
        let mut changed = false;
        let mut set = |piece: &mut Piece, html: String| {
            if piece.html != html {
                piece.html = html;
                piece.v = next;
                changed = true;
            }
        };
        let mut services = Vec::with_capacity(status.services.len());
        let mut seen = HashMap::with_capacity(self.rows.len());
        for svc in &status.services {
            let mut ids = Vec::new();
            // In address order: the status does not promise one, and a changed order would look
            // like a new layout (and reload every client).
            let mut eps: Vec<&crate::state::EndpointStatus> = status
                .endpoints
                .iter()
                .filter(|e| e.service == svc.fqdn)
                .collect();
            eps.sort_by_key(|e| {
                (
                    e.endpoint.parse::<std::net::IpAddr>().ok(),
                    e.endpoint.clone(),
                )
            });
            for e in eps {
                let id = render::row_id(&e.service, &e.endpoint);
                let mut row = self.rows.remove(&id).unwrap_or_default();
                set(&mut row.main, render::endpoint_row(&cx, svc, e));
                let empty = VecDeque::new();
                let ring = self
                    .latencies
                    .get(&(e.service.clone(), e.endpoint.clone()))
                    .unwrap_or(&empty);
                set(&mut row.spark, render::spark_cell(ring));
                seen.insert(id.clone(), row);
                ids.push(id);
            }
            let rec = render::records_id(&svc.fqdn);
            set(self.blocks.entry(rec).or_default(), render::records(svc));
            services.push(Service {
                fqdn: svc.fqdn.clone(),
                zone: svc.zone.clone(),
                check: svc.check.clone(),
                rows: ids,
            });
        }
        set(
            self.blocks.entry("members".to_owned()).or_default(),
            render::members(&status),
        );
        set(
            self.blocks.entry("events".to_owned()).or_default(),
            render::events(&status),
        );
        let same_layout = self.ready
            && self.services.len() == services.len()
            && self
                .services
                .iter()
                .zip(&services)
                .all(|(a, b)| a.fqdn == b.fqdn && a.rows == b.rows);
        if !same_layout {
            self.layout += 1;
            changed = true;
            let live: std::collections::HashSet<String> = services
                .iter()
                .map(|s| render::records_id(&s.fqdn))
                .collect();
            self.blocks
                .retain(|k, _| live.contains(k) || k == "members" || k == "events");
            let keys: std::collections::HashSet<(String, String)> = status
                .endpoints
                .iter()
                .map(|e| (e.service.clone(), e.endpoint.clone()))
                .collect();
            self.latencies.retain(|k, _| keys.contains(k));
        }
        self.rows = seen;
        self.services = services;
        self.ready = true;
        if changed {
            self.v = next;
        }
    }

    fn row_html(&self, row: &Row) -> String {
        row.main
            .html
            .replacen(render::SPARK_SLOT, &row.spark.html, 1)
    }

    /// The whole page.
    fn page(&self, node_id: &str) -> String {
        let mut h = String::with_capacity(2048 + self.rows.len() * 1400);
        h.push_str("<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">");
        h.push_str("<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">");
        h.push_str(&format!(
            "<title>rrguard · {}</title><style>{STYLE}</style></head>",
            render::esc(node_id)
        ));
        h.push_str(&format!(
            "<body data-v=\"{}\" data-layout=\"{}\"><header><h1>rrguard <small>{}</small></h1>\
             <label class=\"js-only\">API token <input id=\"token\" type=\"password\" autocomplete=\"off\" \
             placeholder=\"needed to change overrides\"></label>\
             <span id=\"live\" class=\"js-only\" title=\"live updates\">○</span></header>\
             <p id=\"msg\" role=\"status\"></p><main>",
            self.v,
            self.layout,
            render::esc(node_id)
        ));
        if let Some(b) = self.blocks.get("members") {
            h.push_str(&b.html);
        }
        h.push_str("<section id=\"services\"><h2>Services</h2>");
        if !self.ready {
            h.push_str("<p>The node is starting; reload in a moment.</p>");
        }
        for s in &self.services {
            h.push_str(&format!(
                "<article class=\"service\" data-service=\"{f}\"><h3>{f} <small>zone {} · check {}</small></h3>",
                render::esc(&s.zone),
                render::esc(&s.check),
                f = render::esc(&s.fqdn),
            ));
            if let Some(b) = self.blocks.get(&render::records_id(&s.fqdn)) {
                h.push_str(&b.html);
            }
            h.push_str(
                "<table><thead><tr><th>endpoint</th><th>state</th><th>votes</th><th>latency</th>\
                 <th>since</th><th>in or out, and why</th><th>overrides</th></tr></thead><tbody>",
            );
            for id in &s.rows {
                if let Some(r) = self.rows.get(id) {
                    h.push_str(&self.row_html(r));
                }
            }
            h.push_str("</tbody></table></article>");
        }
        h.push_str("</section>");
        if let Some(b) = self.blocks.get("events") {
            h.push_str(&b.html);
        }
        h.push_str(OVERRIDE_FORM);
        h.push_str("</main><script>");
        h.push_str(SCRIPT);
        h.push_str("</script></body></html>");
        h
    }

    /// What changed after version `since`.
    fn update_since(&self, since: u64) -> Update {
        let mut rows = Vec::new();
        for s in &self.services {
            for id in &s.rows {
                let Some(r) = self.rows.get(id) else { continue };
                if r.main.v > since {
                    rows.push(RowUpdate {
                        id: id.clone(),
                        html: Some(self.row_html(r)),
                        spark: None,
                    });
                } else if r.spark.v > since {
                    rows.push(RowUpdate {
                        id: id.clone(),
                        html: None,
                        spark: Some(r.spark.html.clone()),
                    });
                }
            }
        }
        let blocks = self
            .blocks
            .iter()
            .filter(|(_, b)| b.v > since)
            .map(|(id, b)| BlockUpdate {
                id: id.clone(),
                html: b.html.clone(),
            })
            .collect();
        Update {
            v: self.v,
            rows,
            blocks,
        }
    }
}

/// The override form, one for the page, filled in by the row whose button opened it.
const OVERRIDE_FORM: &str = "<dialog id=\"override\"><form id=\"override-form\">\
<h2>Override <span id=\"ov-target\"></span></h2>\
<input type=\"hidden\" name=\"endpoint\"><input type=\"hidden\" name=\"service\">\
<label>Kind <select name=\"kind\"><option value=\"drain\">drain (out of DNS, never below min_healthy)</option>\
<option value=\"maintenance\">maintenance (failures ignored)</option>\
<option value=\"force_up\">force up</option><option value=\"force_down\">force down</option></select></label>\
<label>For <input name=\"for\" value=\"1h\" required placeholder=\"1h, 30m, 90s\"></label>\
<label>Comment <input name=\"comment\" required placeholder=\"why (required)\"></label>\
<label>API token <input name=\"token\" type=\"password\" autocomplete=\"off\" placeholder=\"[api] token_file\"></label>\
<p id=\"ov-error\" class=\"err\"></p>\
<button type=\"submit\">Set override</button> <button type=\"button\" id=\"ov-cancel\">Cancel</button>\
</form></dialog>";

#[derive(Serialize)]
struct Update {
    v: u64,
    rows: Vec<RowUpdate>,
    blocks: Vec<BlockUpdate>,
}

#[derive(Serialize)]
struct RowUpdate {
    id: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    html: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    spark: Option<String>,
}

#[derive(Serialize)]
struct BlockUpdate {
    id: String,
    html: String,
}

async fn page(State(board): State<Board>) -> Response {
    let html = {
        let mut cache = board.cache.lock().unwrap_or_else(PoisonError::into_inner);
        cache.refresh(&board.node);
        let node = board
            .node
            .snapshot()
            .map_or_else(|| "starting".to_owned(), |s| s.node);
        cache.page(&node)
    };
    ([(header::CACHE_CONTROL, "no-store")], Html(html)).into_response()
}

/// `GET /dashboard/events` parameters: the version and layout the client's page shows.
#[derive(Deserialize)]
struct StreamQuery {
    #[serde(default)]
    v: u64,
    #[serde(default)]
    layout: u64,
}

struct Cursor {
    board: Board,
    v: u64,
    layout: u64,
    ticker: tokio::time::Interval,
    done: bool,
}

async fn stream(
    State(board): State<Board>,
    q: Result<Query<StreamQuery>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let Ok(Query(q)) = q else {
        return (
            StatusCode::BAD_REQUEST,
            "v and layout must be non-negative integers (the page's data-v and data-layout)",
        )
            .into_response();
    };
    let mut ticker = tokio::time::interval(REFRESH);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let cursor = Cursor {
        board,
        v: q.v,
        layout: q.layout,
        ticker,
        done: false,
    };
    let events = futures_util::stream::unfold(cursor, |mut c| async move {
        loop {
            if c.done {
                return None;
            }
            tokio::select! {
                () = c.board.shutdown.cancelled() => return None,
                _ = c.ticker.tick() => {}
            }
            let event = {
                let mut cache = c.board.cache.lock().unwrap_or_else(PoisonError::into_inner);
                cache.refresh(&c.board.node);
                if cache.layout != c.layout {
                    c.done = true;
                    Some(
                        SseEvent::default()
                            .event("reload")
                            .data(cache.layout.to_string()),
                    )
                } else if cache.v > c.v {
                    let update = cache.update_since(c.v);
                    c.v = update.v;
                    serde_json::to_string(&update)
                        .ok()
                        .map(|json| SseEvent::default().event("update").data(json))
                } else {
                    None
                }
            };
            if let Some(e) = event {
                return Some((Ok::<_, Infallible>(e), c));
            }
        }
    });
    Sse::new(events)
        .keep_alive(KeepAlive::default())
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::ConfiguredService;

    fn node_with(endpoints: &[&str]) -> NodeState {
        let node = NodeState::new();
        node.set_services([ConfiguredService {
            fqdn: "www.example.test".to_owned(),
            zone: "example.test".to_owned(),
            writers: vec!["primary".to_owned()],
            check: "http".to_owned(),
            endpoints: endpoints.iter().map(|e| e.parse().unwrap()).collect(),
        }]);
        node
    }

    fn cluster(e3: &str) -> crate::state::ClusterStatus {
        use crate::observe::health::Health;
        let ep = |addr: &str, state: &str| {
            let state = match state {
                "up" => Health::Up,
                "down" => Health::Down,
                _ => Health::Unknown,
            };
            let node = || vec!["n1".to_owned()];
            let tally = crate::agree::Tally {
                state,
                up: if state == Health::Up { node() } else { vec![] },
                down: if state == Health::Down {
                    node()
                } else {
                    vec![]
                },
                needed: 1,
            };
            (
                ("www.example.test".to_owned(), addr.parse().unwrap()),
                tally,
            )
        };
        crate::state::ClusterStatus {
            node: "n1".to_owned(),
            generation: 1,
            isolated: None,
            self_check_targets: vec![],
            leader: Some("n1".to_owned()),
            am_leader: true,
            term: 1,
            live_nodes: vec!["n1".to_owned()],
            peers: vec![],
            rejected_messages: BTreeMap::new(),
            tallies: [ep("127.0.0.2", "up"), ep("127.0.0.3", e3)]
                .into_iter()
                .collect(),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn updates_carry_only_what_changed() {
        let node = node_with(&["127.0.0.2", "127.0.0.3"]);
        let mut cache = Cache::new(node.subscribe_probes());
        cache.refresh(&node);
        assert!(cache.page("n1").contains("starting"));
        node.set_cluster(cluster("up"));
        tokio::time::advance(REFRESH).await;
        cache.refresh(&node);
        let page = cache.page("n1");
        assert!(
            page.contains("id=\"ep-www-example-test-127-0-0-3\""),
            "{page}"
        );
        assert!(page.contains("★ elected"), "{page}");
        let (v, layout) = (cache.v, cache.layout);

        // Nothing changed: nothing to send.
        tokio::time::advance(REFRESH).await;
        cache.refresh(&node);
        assert_eq!(cache.v, v);
        assert!(cache.update_since(v).rows.is_empty());

        // Within REFRESH of the last rebuild, a change waits (the throttle).
        node.set_cluster(cluster("down"));
        cache.refresh(&node);
        assert_eq!(cache.v, v);
        // Then only the row of 127.0.0.3 is sent, whole, with its new state; the layout holds.
        tokio::time::advance(REFRESH).await;
        cache.refresh(&node);
        let u = cache.update_since(v);
        assert_eq!(u.v, v + 1);
        let ids: Vec<&str> = u.rows.iter().map(|r| r.id.as_str()).collect();
        assert_eq!(ids, ["ep-www-example-test-127-0-0-3"]);
        let html = u.rows[0].html.as_deref().unwrap();
        assert!(html.contains("class=\"state down\""), "{html}");
        assert!(!html.contains(render::SPARK_SLOT), "{html}");
        assert_eq!(cache.layout, layout);

        // An endpoint removed by a reload changes the layout: clients reload.
        node.set_services([ConfiguredService {
            fqdn: "www.example.test".to_owned(),
            zone: "example.test".to_owned(),
            writers: vec!["primary".to_owned()],
            check: "http".to_owned(),
            endpoints: vec!["127.0.0.2".parse().unwrap()],
        }]);
        let mut one = cluster("up");
        one.tallies = one
            .tallies
            .iter()
            .take(1)
            .map(|((s, ip), t)| ((s.to_owned(), ip), t.clone()))
            .collect();
        node.set_cluster(one);
        tokio::time::advance(REFRESH).await;
        cache.refresh(&node);
        assert_eq!(cache.layout, layout + 1);
    }
}
