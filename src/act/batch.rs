//! Batching of writes across services: [`Batched`] wraps a writer that declares
//! [`Capabilities::batches`] and turns the `apply` calls of many services into few
//! [`Writer::apply_batch`] calls.
//!
//! Every service's lane calls `apply` as usual and waits for its own result. The calls go to one queue
//! per writer; a worker task takes everything that queued while the previous batch was being written
//! (at most [`MAX_BATCH`] changes) and writes it as one batch. So a lone change goes out at once, with
//! no added delay, and a mass failure — a hundred names of one zone changing within milliseconds —
//! becomes a few writes per zone instead of one per name. Each lane has at most one change in
//! flight, so a batch never holds two changes of one name.

use std::sync::Arc;

use async_trait::async_trait;
use tokio::sync::{mpsc, oneshot};

use super::{Capabilities, Published, RecordChange, WriteError, Writer};

/// Most changes handed to one [`Writer::apply_batch`] call. The writer still splits a batch to fit
/// its message limits; this bounds how long the first change of a batch waits for the last.
pub const MAX_BATCH: usize = 500;

type Job = (RecordChange, oneshot::Sender<Result<(), WriteError>>);

/// A writer whose `apply` calls are batched; every other call goes straight to the wrapped writer.
pub struct Batched {
    inner: Arc<dyn Writer>,
    queue: mpsc::UnboundedSender<Job>,
}

impl Batched {
    /// Wraps `inner` and spawns its batching worker on the current tokio runtime. The worker ends
    /// when the last clone of the returned writer is dropped.
    ///
    /// # Panics
    /// Outside a tokio runtime.
    pub fn spawn(inner: Arc<dyn Writer>) -> Arc<dyn Writer> {
        let (queue, jobs) = mpsc::unbounded_channel();
        tokio::spawn(work(inner.clone(), jobs));
        Arc::new(Batched { inner, queue })
    }
}

/// Takes whatever is queued (waiting for the first), writes it as one batch, answers each caller.
async fn work(inner: Arc<dyn Writer>, mut jobs: mpsc::UnboundedReceiver<Job>) {
    while let Some(first) = jobs.recv().await {
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match jobs.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
        let (changes, replies): (Vec<RecordChange>, Vec<_>) = batch.into_iter().unzip();
        let results = inner.apply_batch(&changes).await;
        let mut results = results.into_iter();
        for reply in replies {
            // A writer that returned too few results fails the rest rather than leaving them hanging.
            let result = results.next().unwrap_or_else(|| {
                Err(WriteError::Transient(format!(
                    "writer {:?} returned no result for this change",
                    inner.name()
                )))
            });
            // The caller may have gone (shutdown); nothing to do then.
            let _ = reply.send(result);
        }
    }
}

#[async_trait]
impl Writer for Batched {
    fn name(&self) -> &str {
        self.inner.name()
    }

    fn capabilities(&self) -> Capabilities {
        self.inner.capabilities()
    }

    async fn read(&self, fqdn: &str, zone: &str) -> Result<Published, WriteError> {
        self.inner.read(fqdn, zone).await
    }

    async fn apply(&self, change: &RecordChange) -> Result<(), WriteError> {
        let (reply, answer) = oneshot::channel();
        self.queue
            .send((change.clone(), reply))
            .map_err(|_| WriteError::Transient("the batching worker has stopped".to_owned()))?;
        answer
            .await
            .map_err(|_| WriteError::Transient("the batching worker has stopped".to_owned()))?
    }

    async fn apply_batch(&self, changes: &[RecordChange]) -> Vec<Result<(), WriteError>> {
        self.inner.apply_batch(changes).await
    }

    fn start(&self) -> Result<(), String> {
        self.inner.start()
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;
    use std::sync::Mutex;

    use super::*;
    use crate::act::Precondition;

    /// Records the size of every batch; applies nothing.
    struct Counting {
        batches: Mutex<Vec<usize>>,
    }

    #[async_trait]
    impl Writer for Counting {
        fn name(&self) -> &str {
            "counting"
        }
        async fn read(&self, _: &str, _: &str) -> Result<Published, WriteError> {
            Ok(Published::default())
        }
        async fn apply(&self, _: &RecordChange) -> Result<(), WriteError> {
            unreachable!("Batched sends every change through apply_batch")
        }
        async fn apply_batch(&self, changes: &[RecordChange]) -> Vec<Result<(), WriteError>> {
            self.batches.lock().unwrap().push(changes.len());
            // Slow enough for the others to queue meanwhile.
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            changes
                .iter()
                .map(|c| {
                    if c.fqdn.starts_with("bad") {
                        Err(WriteError::Conflict("changed".to_owned()))
                    } else {
                        Ok(())
                    }
                })
                .collect()
        }
    }

    fn change(fqdn: &str) -> RecordChange {
        RecordChange {
            fqdn: fqdn.to_owned(),
            zone: "example.test.".to_owned(),
            ttl: 30,
            precondition: Precondition::RrsetEquals(BTreeSet::new()),
            add: ["192.0.2.1".parse().unwrap()].into_iter().collect(),
            remove: BTreeSet::new(),
            rettl: BTreeSet::new(),
            weights: Default::default(),
        }
    }

    #[tokio::test]
    async fn changes_that_queue_meanwhile_go_out_together_each_with_its_result() {
        let inner = Arc::new(Counting {
            batches: Mutex::new(Vec::new()),
        });
        let w = Batched::spawn(inner.clone());
        let mut tasks = tokio::task::JoinSet::new();
        for i in 0..50 {
            let w = w.clone();
            let name = if i == 7 {
                "bad.example.test.".to_owned()
            } else {
                format!("n{i}.example.test.")
            };
            tasks.spawn(async move { (name.clone(), w.apply(&change(&name)).await) });
        }
        let mut conflicts = 0;
        while let Some(joined) = tasks.join_next().await {
            let (name, result) = joined.unwrap();
            match result {
                Ok(()) => assert!(!name.starts_with("bad")),
                Err(WriteError::Conflict(_)) => {
                    assert!(name.starts_with("bad"));
                    conflicts += 1;
                }
                Err(e) => panic!("{e}"),
            }
        }
        assert_eq!(conflicts, 1);
        let batches = inner.batches.lock().unwrap().clone();
        assert_eq!(batches.iter().sum::<usize>(), 50);
        // The first goes alone (nothing queued yet); the rest queue behind it.
        assert!(batches.len() <= 3, "{batches:?}");
    }
}
