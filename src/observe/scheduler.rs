//! The probe scheduler: one task per endpoint, in its owner's `JoinSet` (a service controller's), so
//! that the loops end with the generation that started them.
//!
//! Each task runs its probe every `interval`, starting after a per-endpoint offset so that the endpoints
//! of a service are spread across the interval instead of probed in a burst. A probe never overlaps the
//! previous one of the same endpoint (the loop awaits it), and is cut off at the hard `timeout`. If a
//! probe overruns the interval the next one starts right after it, and missed ticks are not made up.

use std::net::IpAddr;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::task::{AbortHandle, JoinSet};
use tokio::time::{Instant, MissedTickBehavior};
use tokio_util::sync::CancellationToken;

use super::probe::{self, Probe, ProbeResult};

/// One probe result, tagged with its endpoint.
#[derive(Debug, Clone)]
pub struct ProbeReport {
    /// The endpoint probed.
    pub endpoint: IpAddr,
    /// What happened.
    pub result: ProbeResult,
    /// When the probe finished.
    pub at: Instant,
}

/// Timing of one endpoint's probe loop.
#[derive(Debug, Clone, Copy)]
pub struct Schedule {
    /// Time between probe starts.
    pub interval: Duration,
    /// Hard limit of one probe.
    pub timeout: Duration,
    /// Delay of the first probe.
    pub offset: Duration,
}

impl Schedule {
    /// The schedule of endpoint `index` of `count`, offsets spread evenly over one interval.
    pub fn staggered(interval: Duration, timeout: Duration, index: usize, count: usize) -> Self {
        let count = count.max(1) as u32;
        Schedule {
            interval,
            timeout,
            offset: interval / count * (index as u32 % count),
        }
    }
}

/// Spawns the probe loop of one endpoint into `tasks`. It ends when `cancel` fires, the receiver is
/// dropped, or `tasks` is dropped or shut down.
pub fn spawn_probe_loop(
    tasks: &mut JoinSet<()>,
    endpoint: IpAddr,
    probe: Box<dyn Probe>,
    schedule: Schedule,
    report_tx: mpsc::Sender<ProbeReport>,
    cancel: CancellationToken,
) -> AbortHandle {
    tasks.spawn(async move {
        let mut ticker =
            tokio::time::interval_at(Instant::now() + schedule.offset, schedule.interval);
        ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = ticker.tick() => {}
            }
            let result = tokio::select! {
                _ = cancel.cancelled() => return,
                r = tokio::time::timeout(schedule.timeout, probe.probe()) => {
                    r.unwrap_or_else(|_| probe::timed_out(schedule.timeout))
                }
            };
            let report = ProbeReport {
                endpoint,
                result,
                at: Instant::now(),
            };
            if report_tx.send(report).await.is_err() {
                return;
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use async_trait::async_trait;

    use super::*;

    /// Takes `delay` per probe and records the peak number of concurrent runs.
    struct SlowProbe {
        delay: Duration,
        running: Arc<AtomicUsize>,
        peak: Arc<AtomicUsize>,
    }

    #[async_trait]
    impl Probe for SlowProbe {
        async fn probe(&self) -> ProbeResult {
            let now = self.running.fetch_add(1, Ordering::SeqCst) + 1;
            self.peak.fetch_max(now, Ordering::SeqCst);
            // A timed-out probe is dropped mid-sleep: count it as finished then too.
            let _running = Running(self.running.clone());
            tokio::time::sleep(self.delay).await;
            ProbeResult {
                ok: true,
                latency: self.delay,
                detail: "slow".to_owned(),
            }
        }
    }

    struct Running(Arc<AtomicUsize>);

    impl Drop for Running {
        fn drop(&mut self) {
            self.0.fetch_sub(1, Ordering::SeqCst);
        }
    }

    fn slow(delay: Duration) -> (Box<dyn Probe>, Arc<AtomicUsize>) {
        let peak = Arc::new(AtomicUsize::new(0));
        let p = SlowProbe {
            delay,
            running: Arc::new(AtomicUsize::new(0)),
            peak: peak.clone(),
        };
        (Box::new(p), peak)
    }

    #[tokio::test(start_paused = true)]
    async fn probes_every_interval_after_offset() {
        let (tx, mut rx) = mpsc::channel(16);
        let cancel = CancellationToken::new();
        let (probe, _) = slow(Duration::from_millis(10));
        let start = Instant::now();
        let schedule = Schedule {
            interval: Duration::from_secs(1),
            timeout: Duration::from_millis(500),
            offset: Duration::from_millis(250),
        };
        let mut tasks = JoinSet::new();
        spawn_probe_loop(
            &mut tasks,
            "192.0.2.1".parse().unwrap(),
            probe,
            schedule,
            tx,
            cancel.clone(),
        );
        let mut at = Vec::new();
        for _ in 0..3 {
            at.push(rx.recv().await.unwrap().at - start);
        }
        cancel.cancel();
        assert_eq!(
            at,
            vec![
                Duration::from_millis(260),
                Duration::from_millis(1260),
                Duration::from_millis(2260)
            ]
        );
    }

    #[tokio::test(start_paused = true)]
    async fn hard_timeout_cuts_probe_and_never_overlaps() {
        let (tx, mut rx) = mpsc::channel(16);
        let cancel = CancellationToken::new();
        // The probe would take 5 s; the interval is 1 s and the timeout 300 ms.
        let (probe, peak) = slow(Duration::from_secs(5));
        let schedule = Schedule {
            interval: Duration::from_secs(1),
            timeout: Duration::from_millis(300),
            offset: Duration::ZERO,
        };
        let mut tasks = JoinSet::new();
        spawn_probe_loop(
            &mut tasks,
            "192.0.2.1".parse().unwrap(),
            probe,
            schedule,
            tx,
            cancel.clone(),
        );
        for _ in 0..4 {
            let r = rx.recv().await.unwrap();
            assert!(!r.result.ok);
            assert_eq!(r.result.detail, "timed out after 300ms");
        }
        cancel.cancel();
        assert_eq!(peak.load(Ordering::SeqCst), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn slow_probe_delays_next_instead_of_overlapping() {
        let (tx, mut rx) = mpsc::channel(16);
        let cancel = CancellationToken::new();
        let (probe, peak) = slow(Duration::from_millis(1500));
        let start = Instant::now();
        let schedule = Schedule {
            interval: Duration::from_secs(1),
            timeout: Duration::from_secs(10),
            offset: Duration::ZERO,
        };
        let mut tasks = JoinSet::new();
        spawn_probe_loop(
            &mut tasks,
            "192.0.2.1".parse().unwrap(),
            probe,
            schedule,
            tx,
            cancel.clone(),
        );
        let a = rx.recv().await.unwrap().at - start;
        let b = rx.recv().await.unwrap().at - start;
        cancel.cancel();
        assert_eq!(a, Duration::from_millis(1500));
        assert_eq!(b, Duration::from_millis(3000));
        assert_eq!(peak.load(Ordering::SeqCst), 1);
    }

    #[test]
    fn staggered_offsets_spread_over_interval() {
        let i = Duration::from_secs(1);
        let offs: Vec<Duration> = (0..4)
            .map(|k| Schedule::staggered(i, i, k, 4).offset)
            .collect();
        assert_eq!(
            offs,
            vec![
                Duration::ZERO,
                Duration::from_millis(250),
                Duration::from_millis(500),
                Duration::from_millis(750)
            ]
        );
    }
}
