//! Counters kept for metrics beside the status snapshot: what a snapshot cannot show because it is a
//! running total (DNS writes by outcome, write durations). Plain values; [`super::NodeState`] owns
//! them and hands out copies.

/// Upper bounds (seconds) of the DNS write-duration histogram's buckets; `+Inf` is implied.
pub const WRITE_DURATION_BUCKETS: [f64; 10] =
    [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0];

/// DNS writes of one service through one writer.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct WriteCounters {
    /// Writes recorded as successful (the records are published).
    pub ok: u64,
    /// Attempts recorded as failed (the status API's `last_error`).
    pub error: u64,
    /// How long each write took, in seconds.
    pub duration: Histogram,
    /// Successful writes that restored records changed out of band (drift found by a reconcile
    /// read).
    pub drift_repaired: u64,
}

/// Peer messages received, by (kind, result, reason): kind `votes` or `overrides`, result
/// `accepted` or `rejected`, reason `none` for accepted ones, else why (`authentication`,
/// `malformed`, `replay`, `clock`, `unknown_node`, `version`, `not_clustered`).
pub type PeerMessageCounters = std::collections::BTreeMap<(String, String, String), u64>;

/// A histogram over [`WRITE_DURATION_BUCKETS`]: per-bucket (not cumulative) counts, the sum and the
/// count of observations.
#[derive(Debug, Clone, PartialEq)]
pub struct Histogram {
    /// Upper bounds, ascending.
    pub bounds: Vec<f64>,
    /// Observations per bucket: `counts[i]` fell in `(bounds[i-1], bounds[i]]`; the last entry (one
    /// more than `bounds`) counts those above every bound.
    pub counts: Vec<u64>,
    /// Sum of all observations.
    pub sum: f64,
    /// Number of observations.
    pub count: u64,
}

impl Default for Histogram {
    fn default() -> Self {
        Histogram::new(&WRITE_DURATION_BUCKETS)
    }
}

impl Histogram {
    /// An empty histogram with the given upper bounds (ascending).
    pub fn new(bounds: &[f64]) -> Histogram {
        Histogram {
            bounds: bounds.to_vec(),
            counts: vec![0; bounds.len() + 1],
            sum: 0.0,
            count: 0,
        }
    }

    /// Adds one observation.
    pub fn observe(&mut self, value: f64) {
        let i = self
            .bounds
            .iter()
            .position(|b| value <= *b)
            .unwrap_or(self.bounds.len());
        self.counts[i] += 1;
        self.sum += value;
        self.count += 1;
    }

    /// `(upper bound, observations at or below it)` for each bound, then `(+Inf, count)`.
    pub fn cumulative(&self) -> Vec<(f64, u64)> {
        let mut total = 0;
        let mut out: Vec<(f64, u64)> = self
            .bounds
            .iter()
            .zip(&self.counts)
            .map(|(b, c)| {
                total += c;
                (*b, total)
            })
            .collect();
        out.push((f64::INFINITY, self.count));
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_cumulative_and_end_with_the_count() {
        let mut h = Histogram::new(&[0.1, 1.0]);
        for v in [0.05, 0.1, 0.5, 3.0] {
            h.observe(v);
        }
        assert_eq!(h.cumulative(), vec![(0.1, 2), (1.0, 3), (f64::INFINITY, 4)]);
        assert_eq!(h.count, 4);
        assert!((h.sum - 3.65).abs() < 1e-9, "{}", h.sum);
    }
}
