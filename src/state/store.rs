//! What the redb files in `state_dir` have in common: the audit log (`audit.redb`,
//! [`super::audit`]) and the endpoint history (`history.redb`, [`super::history`]).
//!
//! Contract:
//! - [`open`] creates `state_dir` if needed and opens (or creates) one file in it; redb repairs a
//!   database left by a crash on open. A failure names the file and what went wrong.
//! - [`spawn_committer`] starts the thread that owns a file's writes. Its handle
//!   ([`CommitterHandle`]) queues items without blocking and waits for a flush; the thread hands
//!   everything queued so far (at most [`MAX_BATCH`] items), in order, to the file's commit
//!   function in one call, so one transaction and one fsync cover the batch. With a `linger`, the
//!   thread waits that long after the first item for more before it commits (a flush ends the
//!   wait): items that trickle in share a commit instead of paying one each. With an interval it
//!   also calls it (with what is queued, possibly nothing) every interval; once the last handle is
//!   dropped it calls it a last time and ends, which closes the database it owns.
//!
//! What each file holds, its bounds, and what a failed commit means (logged every time, or once
//! until it recovers) stay with its module; so does what the daemon does when a file cannot be
//! opened.

use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::Duration;

use redb::Database;

/// Most items one commit takes; the rest wait for the next one (a bound on one transaction).
pub const MAX_BATCH: usize = 10_000;

/// Why a file could not be opened or its thread started: the module turns it into its own error.
#[derive(Debug)]
pub struct OpenError {
    /// The database file.
    pub path: PathBuf,
    /// What failed.
    pub message: String,
}

/// redb's page cache per database, bytes (2 MiB). redb's default is 1 GiB, filled by the pages
/// each commit writes: with the endpoint history of 10,000 endpoints it held 56 MB after a minute
/// (heaptrack, `docs/benchmarks.md`). The stores are written every few seconds from a thread of
/// their own and read only on start-up and by the API, which the kernel's page cache serves as well.
/// Against 8 MiB (`benches/history.rs`, 10,000 endpoints, an hour): 12.8 instead of 19.6 MB with
/// the history store, for 67 instead of 48 s of commits in the hour (~0.4 % of what probing them
/// costs) and 0.2 instead of 0.1 ms to read an endpoint's hour.
pub const CACHE_BYTES: usize = 2 * 1024 * 1024;

/// Creates `state_dir` if needed and opens (or creates) `state_dir/file_name`; returns its path and
/// the database.
///
/// # Errors
/// [`OpenError`] when the directory cannot be created or the file cannot be opened (not writable,
/// another process holds it, not a redb file).
pub fn open(state_dir: &Path, file_name: &str) -> Result<(PathBuf, Database), OpenError> {
    let path = state_dir.join(file_name);
    let fail = |message: String| OpenError {
        path: path.clone(),
        message,
    };
    std::fs::create_dir_all(state_dir)
        .map_err(|e| fail(format!("cannot create {}: {e}", state_dir.display())))?;
    let db = redb::Builder::new()
        .set_cache_size(CACHE_BYTES)
        .create(&path)
        .map_err(|e| fail(e.to_string()))?;
    Ok((path, db))
}

enum Message<T> {
    Item(T),
    /// Reply once everything queued before has been committed.
    Flush(mpsc::Sender<()>),
}

/// The handle of a committer thread: cheap to clone; the thread makes its last commit and ends
/// when the last handle is dropped.
pub struct CommitterHandle<T> {
    path: PathBuf,
    tx: mpsc::Sender<Message<T>>,
}

impl<T> Clone for CommitterHandle<T> {
    fn clone(&self) -> Self {
        CommitterHandle {
            path: self.path.clone(),
            tx: self.tx.clone(),
        }
    }
}

impl<T> std::fmt::Debug for CommitterHandle<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CommitterHandle")
            .field("path", &self.path)
            .finish()
    }
}

impl<T> CommitterHandle<T> {
    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Queues `item` for the next commit; returns at once. `false` when the thread has stopped
    /// (the item is dropped).
    pub fn send(&self, item: T) -> bool {
        self.tx.send(Message::Item(item)).is_ok()
    }

    /// Blocks until everything queued before has been committed (or the thread has stopped). Call
    /// from a blocking context (`spawn_blocking`), as on shutdown.
    pub fn flush(&self) {
        let (done_tx, done_rx) = mpsc::channel();
        if self.tx.send(Message::Flush(done_tx)).is_ok() {
            let _ = done_rx.recv();
        }
    }
}

/// Starts the thread `thread_name` that calls `commit` with the items queued through the returned
/// handle, as the module documentation describes; `path` is the file it writes, for messages.
///
/// # Errors
/// [`OpenError`] when the thread cannot be started.
pub fn spawn_committer<T: Send + 'static>(
    thread_name: &str,
    path: PathBuf,
    interval: Option<Duration>,
    linger: Duration,
    commit: impl FnMut(Vec<T>) + Send + 'static,
) -> Result<CommitterHandle<T>, OpenError> {
    let (tx, rx) = mpsc::channel();
    std::thread::Builder::new()
        .name(thread_name.to_owned())
        .spawn(move || run(&rx, interval, linger, commit))
        .map_err(|e| OpenError {
            path: path.clone(),
            message: format!("cannot start the writer thread: {e}"),
        })?;
    Ok(CommitterHandle { path, tx })
}

fn run<T>(
    rx: &mpsc::Receiver<Message<T>>,
    interval: Option<Duration>,
    linger: Duration,
    mut commit: impl FnMut(Vec<T>),
) {
    loop {
        let first = match interval {
            Some(every) => rx.recv_timeout(every),
            None => rx
                .recv()
                .map_err(|mpsc::RecvError| mpsc::RecvTimeoutError::Disconnected),
        };
        let last = matches!(first, Err(mpsc::RecvTimeoutError::Disconnected));
        let mut batch = Vec::new();
        let mut flushes = Vec::new();
        let mut next = first.ok();
        let mut linger_until = (!linger.is_zero()).then(|| tokio::time::Instant::now() + linger);
        while let Some(message) = next {
            match message {
                Message::Item(item) => batch.push(item),
                Message::Flush(done) => {
                    // Someone waits: commit what is queued now.
                    linger_until = None;
                    flushes.push(done);
                }
            }
            // Everything already queued (or, lingering, arriving until then) goes into the same
            // commit (one fsync).
            next = if batch.len() >= MAX_BATCH {
                None
            } else if let Some(until) = linger_until {
                let left = until.saturating_duration_since(tokio::time::Instant::now());
                rx.recv_timeout(left).ok()
            } else {
                rx.try_recv().ok()
            };
        }
        commit(batch);
        for done in flushes {
            let _ = done.send(());
        }
        if last {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use super::*;

    /// The batches a committer was called with.
    type Calls = Arc<Mutex<Vec<Vec<u32>>>>;

    /// A committer that records its calls; the receiver disconnects when its thread has ended.
    fn recording(
        interval: Option<Duration>,
        linger: Duration,
    ) -> (CommitterHandle<u32>, Calls, mpsc::Receiver<()>) {
        let calls = Calls::default();
        let seen = calls.clone();
        let (alive_tx, ended_rx) = mpsc::channel::<()>();
        let handle = spawn_committer(
            "test-committer",
            PathBuf::from("x"),
            interval,
            linger,
            move |b| {
                let _alive = &alive_tx;
                seen.lock().unwrap().push(b);
            },
        )
        .unwrap();
        (handle, calls, ended_rx)
    }

    fn ended(rx: &mpsc::Receiver<()>) -> bool {
        rx.recv_timeout(Duration::from_secs(5)) == Err(mpsc::RecvTimeoutError::Disconnected)
    }

    #[test]
    fn a_flush_returns_after_everything_queued_before_was_committed_in_order() {
        let (handle, calls, _ended) = recording(None, Duration::ZERO);
        for i in 0..1000 {
            assert!(handle.send(i));
        }
        handle.flush();
        let calls = calls.lock().unwrap();
        assert_eq!(calls.concat(), (0..1000).collect::<Vec<_>>());
        // Batched: fewer commits than items, and none larger than the bound.
        assert!(calls.iter().all(|b| b.len() <= MAX_BATCH));
        assert!(calls.len() < 1000, "{} commits", calls.len());
    }

    #[test]
    fn lingering_items_that_trickle_in_share_a_commit_and_a_flush_ends_the_wait() {
        // Without a linger each item that arrives alone is a commit of its own.
        for (linger, most) in [(Duration::ZERO, None), (Duration::from_secs(3600), Some(1))] {
            let (handle, calls, _ended) = recording(None, linger);
            for i in 0..20 {
                assert!(handle.send(i));
                std::thread::sleep(Duration::from_millis(5));
            }
            // A flush ends the hour-long linger at once.
            handle.flush();
            let calls = calls.lock().unwrap();
            assert_eq!(calls.concat(), (0..20).collect::<Vec<_>>());
            match most {
                Some(most) => assert!(calls.len() <= most, "{} commits", calls.len()),
                None => assert!(calls.len() > 10, "{} commits", calls.len()),
            }
        }
    }

    #[test]
    fn without_an_interval_the_thread_waits_for_items_and_ends_with_the_last_handle() {
        let (handle, calls, ended_rx) = recording(None, Duration::ZERO);
        std::thread::sleep(Duration::from_millis(50));
        assert!(
            calls.lock().unwrap().is_empty(),
            "committed without a message"
        );
        let clone = handle.clone();
        drop(handle);
        assert!(clone.send(7));
        clone.flush();
        assert_eq!(calls.lock().unwrap().concat(), vec![7]);
        drop(clone);
        assert!(ended(&ended_rx), "the thread outlived its handles");
    }

    #[test]
    fn with_an_interval_the_thread_commits_on_each_tick_and_once_more_at_the_end() {
        let (handle, calls, ended_rx) = recording(Some(Duration::from_millis(10)), Duration::ZERO);
        let ticked = (0..200).any(|_| {
            std::thread::sleep(Duration::from_millis(10));
            calls.lock().unwrap().len() >= 3
        });
        assert!(ticked, "{:?}", calls.lock().unwrap());
        // An interval longer than the test: the only call is the last one, when the handle goes.
        let (handle2, calls2, ended2) = recording(Some(Duration::from_secs(3600)), Duration::ZERO);
        drop(handle2);
        assert!(ended(&ended2));
        assert_eq!(*calls2.lock().unwrap(), vec![Vec::<u32>::new()]);
        drop(handle);
        assert!(ended(&ended_rx));
    }

    #[test]
    fn open_names_the_file_it_cannot_create() {
        let dir = tempfile::tempdir().unwrap();
        // A directory where the file should be.
        std::fs::create_dir(dir.path().join("x.redb")).unwrap();
        let err = open(dir.path(), "x.redb").unwrap_err();
        assert_eq!(err.path, dir.path().join("x.redb"));
        assert!(!err.message.is_empty());
        let (path, _db) = open(&dir.path().join("sub"), "y.redb").unwrap();
        assert!(path.exists(), "{}", path.display());
    }
}
