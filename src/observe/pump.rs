//! Probe reports on their way from the probe engine to the services, many per wake-up.
//!
//! A report used to go through a channel of its service's controller, on the main runtime: the
//! probe thread woke that runtime (an eventfd write), whose thread ran one controller for one
//! report and parked again, once per report. At 10,000 new-connection probes a second that was
//! ~3 % of a 2-CPU machine in parking and waking alone (docs/benchmarks.md, "where a new
//! connection's time goes"), and the wake-ups of 100 services cannot be merged per service: each
//! gets a report every few milliseconds.
//!
//! The pump takes the reports of every service into one queue. The first report into an empty
//! queue wakes the pump's task on the main runtime; it waits [`GATHER`] for more, then hands the
//! whole batch to the services' channels (tasks of its own runtime, woken without a system call)
//! and waits for the next report. Under load one wake-up carries every report of [`GATHER`]; a
//! lone report waits at most that long, far below any probe interval.
//!
//! A report that changes an endpoint's up or down verdict ([`Slot::send_urgent`]) does not wait:
//! it ends the gathering at once, and goes with whatever the batch holds. Its service writes DNS
//! from it, so the gathering time would add to every failover (2-3 ms with tokio's 1 ms timer, as
//! much as the whole RFC 2136 write on loopback). Verdict changes are rare beside the reports
//! that confirm a verdict, so batches stay large under load.
//!
//! The queue holds at most [`QUEUE_MAX`] reports: a probe loop whose report finds it full waits for
//! room ([`ReportSink::reserve`]), as it waited for room in its controller's channel before, so a
//! main runtime that cannot keep up slows the probes instead of growing the queue.

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::sync::{Notify, Semaphore, TryAcquireError, mpsc};
use tokio_util::sync::CancellationToken;

use super::scheduler::ProbeReport;

/// How long the pump gathers reports after the first one of a batch: 2 ms.
pub const GATHER: Duration = Duration::from_millis(2);

/// Most reports queued at once: 65,536, 6.5 s of reports at 10,000 probes a second (a report is
/// ~100 bytes plus its detail text, so at most a few MB).
pub const QUEUE_MAX: usize = 65_536;

/// The pump: cheap to clone. Services register with [`ReportPump::route`]; [`ReportPump::run`]
/// moves the reports.
#[derive(Debug, Clone)]
pub struct ReportPump {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    /// Reports not yet handed over, with the route each goes to.
    queue: Mutex<Vec<(u64, ProbeReport)>>,
    /// Wakes the pump when a report enters the empty queue.
    arrived: Notify,
    /// Ends the gathering: an urgent report is queued. One that came while the pump was not
    /// gathering leaves a permit, which ends the next gathering at once: that batch holds the
    /// report, or (when it came just as a batch was being taken) goes ungathered, once.
    hurry: Notify,
    /// Room in the queue: a report takes a permit, the pump gives them back once it handed the
    /// reports over.
    room: Semaphore,
    /// Where each route's reports go.
    routes: Mutex<HashMap<u64, mpsc::UnboundedSender<ProbeReport>>>,
    next_route: AtomicU64,
}

impl Default for ReportPump {
    fn default() -> Self {
        ReportPump::new()
    }
}

impl ReportPump {
    /// An empty pump with room for [`QUEUE_MAX`] reports.
    pub fn new() -> Self {
        ReportPump {
            inner: Arc::new(Inner {
                queue: Mutex::new(Vec::new()),
                arrived: Notify::new(),
                hurry: Notify::new(),
                room: Semaphore::new(QUEUE_MAX),
                routes: Mutex::new(HashMap::new()),
                next_route: AtomicU64::new(0),
            }),
        }
    }

    /// Sends the reports of the returned route's sinks to `tx`, until the route is dropped (reports
    /// still queued for it then are dropped too).
    pub fn route(&self, tx: mpsc::UnboundedSender<ProbeReport>) -> Route {
        let id = self.inner.next_route.fetch_add(1, Ordering::Relaxed);
        lock(&self.inner.routes).insert(id, tx.clone());
        Route {
            sink: ReportSink(Arc::new(SinkShared {
                inner: self.inner.clone(),
                id,
                tx,
            })),
        }
    }

    /// Moves the reports until `cancel`: waits for a first one, gathers for [`GATHER`] or until an
    /// urgent report comes, hands the batch to the routes' channels.
    pub async fn run(self, cancel: CancellationToken) {
        let inner = &self.inner;
        let mut batch = Vec::new();
        loop {
            // A permit stored by a report that came while the pump was busy wakes it for an empty
            // queue at worst: it looks again.
            while lock(&inner.queue).is_empty() {
                tokio::select! {
                    _ = cancel.cancelled() => return,
                    _ = inner.arrived.notified() => {}
                }
            }
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = tokio::time::sleep(GATHER) => {}
                _ = inner.hurry.notified() => {}
            }
            std::mem::swap(&mut batch, &mut *lock(&inner.queue));
            let taken = batch.len();
            {
                let routes = lock(&inner.routes);
                for (id, report) in batch.drain(..) {
                    if let Some(tx) = routes.get(&id) {
                        let _ = tx.send(report);
                    }
                }
            }
            inner.room.add_permits(taken);
        }
    }

    /// Reports queued now.
    #[cfg(test)]
    fn queued(&self) -> usize {
        lock(&self.inner.queue).len()
    }
}

/// One service's registration; dropping it unregisters the service.
#[derive(Debug)]
pub struct Route {
    sink: ReportSink,
}

impl Route {
    /// Where the service's probe loops put their reports.
    pub fn sink(&self) -> ReportSink {
        self.sink.clone()
    }
}

impl Drop for Route {
    fn drop(&mut self) {
        lock(&self.sink.0.inner.routes).remove(&self.sink.0.id);
    }
}

/// A probe loop's way into the pump: one pointer, as every endpoint's loop holds one.
#[derive(Debug, Clone)]
pub struct ReportSink(Arc<SinkShared>);

#[derive(Debug)]
struct SinkShared {
    inner: Arc<Inner>,
    id: u64,
    /// The route's channel, only to tell that its receiver is gone.
    tx: mpsc::UnboundedSender<ProbeReport>,
}

/// The route's receiver is gone: its service stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Closed;

/// The wait for room in a full queue: boxed, so that a probe loop's state holds a pointer, not
/// the semaphore's waiter (every endpoint has a loop; the queue is almost never full).
pub type Reserve<'a> = Pin<Box<dyn Future<Output = Result<Slot<'a>, Closed>> + Send + 'a>>;

impl ReportSink {
    /// Room for one report at once, if the queue has it: `Ok(None)` when it is full
    /// ([`ReportSink::reserve`] waits then).
    ///
    /// # Errors
    /// [`Closed`] once the route's receiver is gone.
    pub fn try_reserve(&self) -> Result<Option<Slot<'_>>, Closed> {
        if self.0.tx.is_closed() {
            return Err(Closed);
        }
        match self.0.inner.room.try_acquire() {
            Ok(permit) => {
                permit.forget();
                Ok(Some(Slot { sink: self }))
            }
            Err(TryAcquireError::NoPermits) => Ok(None),
            Err(TryAcquireError::Closed) => Err(Closed),
        }
    }

    /// Waits for room for one report (cancel-safe).
    ///
    /// # Errors
    /// [`Closed`] once the route's receiver is gone.
    pub fn reserve(&self) -> Reserve<'_> {
        Box::pin(async move {
            if self.0.tx.is_closed() {
                return Err(Closed);
            }
            let permit = self.0.inner.room.acquire().await.map_err(|_| Closed)?;
            permit.forget();
            Ok(Slot { sink: self })
        })
    }
}

/// Room for one report in the queue.
#[derive(Debug)]
pub struct Slot<'a> {
    sink: &'a ReportSink,
}

impl Slot<'_> {
    /// Queues `report`; wakes the pump if it is the first one of a batch.
    pub fn send(self, report: ProbeReport) {
        self.queue(report);
    }

    /// Queues `report`, which changes its endpoint's verdict, and ends the pump's gathering: the
    /// batch goes to the services at once.
    pub fn send_urgent(self, report: ProbeReport) {
        let sink = self.sink;
        self.queue(report);
        sink.0.inner.hurry.notify_one();
    }

    fn queue(self, report: ProbeReport) {
        let inner = &self.sink.0.inner;
        let first = {
            let mut queue = lock(&inner.queue);
            queue.push((self.sink.0.id, report));
            queue.len() == 1
        };
        if first {
            inner.arrived.notify_one();
        }
        std::mem::forget(self);
    }
}

impl Drop for Slot<'_> {
    /// A slot given up (the loop was cancelled while holding it) returns its room.
    fn drop(&mut self) {
        self.sink.0.inner.room.add_permits(1);
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::observe::probe::ProbeResult;
    use tokio::time::Instant;

    fn report(last: u8) -> ProbeReport {
        let now = Instant::now();
        ProbeReport {
            endpoint: std::net::IpAddr::from([192, 0, 2, last]),
            result: ProbeResult {
                ok: true,
                latency: Duration::from_millis(1),
                detail: String::new(),
            },
            started: now,
            at: now,
        }
    }

    /// Reports reach their own service, in order, a batch per wake-up at most [`GATHER`] after the
    /// first; a dropped route's reports go nowhere.
    #[tokio::test(start_paused = true)]
    async fn reports_reach_their_route_in_batches() {
        let pump = ReportPump::new();
        let cancel = CancellationToken::new();
        tokio::spawn(pump.clone().run(cancel.clone()));
        let (tx_a, mut rx_a) = mpsc::unbounded_channel();
        let (tx_b, mut rx_b) = mpsc::unbounded_channel();
        let a = pump.route(tx_a);
        let b = pump.route(tx_b);
        let t0 = Instant::now();
        for i in 1..=3 {
            a.sink().reserve().await.unwrap().send(report(i));
        }
        b.sink().reserve().await.unwrap().send(report(9));
        assert_eq!(pump.queued(), 4);
        let first = rx_a.recv().await.unwrap();
        assert_eq!(first.endpoint, std::net::IpAddr::from([192, 0, 2, 1]));
        assert_eq!(
            Instant::now() - t0,
            GATHER,
            "one wake-up, after the gathering time"
        );
        for i in 2..=3 {
            assert_eq!(
                rx_a.try_recv().unwrap().endpoint.to_string(),
                format!("192.0.2.{i}")
            );
        }
        assert_eq!(rx_b.try_recv().unwrap().endpoint.to_string(), "192.0.2.9");
        assert_eq!(pump.queued(), 0);
        // A lone report later: at most GATHER on its way.
        tokio::time::sleep(Duration::from_secs(1)).await;
        let t1 = Instant::now();
        b.sink().reserve().await.unwrap().send(report(10));
        assert!(rx_b.recv().await.is_some());
        assert_eq!(Instant::now() - t1, GATHER);
        // A route dropped with reports queued: they are dropped, the other routes go on.
        let sink = a.sink();
        sink.reserve().await.unwrap().send(report(4));
        drop(a);
        drop(rx_a);
        assert_eq!(sink.reserve().await.err(), Some(Closed));
        b.sink().reserve().await.unwrap().send(report(11));
        assert_eq!(
            rx_b.recv().await.unwrap().endpoint.to_string(),
            "192.0.2.11"
        );
        cancel.cancel();
    }

    /// An urgent report (a verdict change) ends the gathering at once and takes the reports
    /// gathered so far along; the next batch gathers again.
    #[tokio::test(start_paused = true)]
    async fn an_urgent_report_ends_the_gathering() {
        let pump = ReportPump::new();
        let cancel = CancellationToken::new();
        tokio::spawn(pump.clone().run(cancel.clone()));
        let (tx, mut rx) = mpsc::unbounded_channel();
        let route = pump.route(tx);
        let sink = route.sink();
        // A lone urgent report: no wait at all.
        let t0 = Instant::now();
        sink.reserve().await.unwrap().send_urgent(report(1));
        assert_eq!(rx.recv().await.unwrap().endpoint.to_string(), "192.0.2.1");
        assert_eq!(Instant::now() - t0, Duration::ZERO);
        // A report gathering, then an urgent one 1 ms later: both go then, in order.
        let t1 = Instant::now();
        sink.reserve().await.unwrap().send(report(2));
        tokio::time::sleep(Duration::from_millis(1)).await;
        sink.reserve().await.unwrap().send_urgent(report(3));
        assert_eq!(rx.recv().await.unwrap().endpoint.to_string(), "192.0.2.2");
        assert_eq!(rx.recv().await.unwrap().endpoint.to_string(), "192.0.2.3");
        assert_eq!(Instant::now() - t1, Duration::from_millis(1));
        // Nothing urgent left over: a plain report gathers for the whole time again.
        tokio::time::sleep(Duration::from_secs(1)).await;
        let t2 = Instant::now();
        sink.reserve().await.unwrap().send(report(4));
        assert!(rx.recv().await.is_some());
        assert_eq!(Instant::now() - t2, GATHER);
        cancel.cancel();
    }

    /// A full queue makes the next report wait for room, which the pump gives back once it handed a
    /// batch over; a slot given up returns its room.
    #[tokio::test(start_paused = true)]
    async fn a_full_queue_makes_probe_loops_wait() {
        let pump = ReportPump::new();
        let (tx, mut rx) = mpsc::unbounded_channel();
        let route = pump.route(tx);
        let sink = route.sink();
        for _ in 0..QUEUE_MAX {
            sink.reserve().await.unwrap().send(report(1));
        }
        let waiting = tokio::time::timeout(Duration::from_secs(1), sink.reserve()).await;
        assert!(waiting.is_err(), "no room: the loop waits");
        let cancel = CancellationToken::new();
        tokio::spawn(pump.clone().run(cancel.clone()));
        let slot = sink
            .reserve()
            .await
            .expect("room once the pump handed the batch over");
        drop(slot);
        let mut got = 0;
        while rx.try_recv().is_ok() {
            got += 1;
        }
        assert_eq!(got, QUEUE_MAX);
        assert_eq!(pump.inner.room.available_permits(), QUEUE_MAX);
        cancel.cancel();
    }
}
