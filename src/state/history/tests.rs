use super::*;
use redb::{ReadableTableMetadata, TableHandle};

const T0: u64 = 1_800_000_000_000; // a slot boundary (multiple of RESOLUTION_MS)

fn ip(n: u8) -> IpAddr {
    IpAddr::from([127, 0, 0, n])
}

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

fn one(service: &str, eps: &[IpAddr]) -> History {
    let mut h = History::default();
    h.retain([(service, eps)]);
    h
}

#[test]
fn a_bucket_and_a_transition_have_the_documented_size() {
    assert_eq!(std::mem::size_of::<Bucket>(), 16);
    assert_eq!(std::mem::size_of::<Transition>(), 48);
    assert_eq!(std::mem::size_of::<Block>(), 8);
    // Nothing is allocated for the buckets before the first probe.
    assert_eq!(EndpointHistory::default().buckets.capacity(), 0);
    assert_eq!(BUCKETS as u64 * RESOLUTION_MS, 3_600_000);
    assert_eq!(BLOCK_BUCKETS * (BLOCKS as u64 - 1), BUCKETS as u64);
}

#[test]
fn stored_buckets_leave_memory_and_unstored_ones_never_do() {
    let mut e = EndpointHistory::default();
    let slot0 = T0 / RESOLUTION_MS;
    for i in 0..20u64 {
        e.record_probe(T0 + i * RESOLUTION_MS, true, ms(5));
    }
    // No store has committed anything: the whole span stays.
    assert_eq!(e.buckets.len(), 20);
    // A copy is taken (as the store's thread does), then more probes land before it commits.
    let mut h = History::default();
    h.services
        .entry("www.".into())
        .or_default()
        .insert(ip(2), e);
    let copied = h.take_dirty();
    assert_eq!(copied.endpoints[0].buckets.len(), 20);
    let head = copied.endpoints[0].head;
    h.record_probe("www.", ip(2), true, ms(5), T0 + 19 * RESOLUTION_MS);
    h.record_probe("www.", ip(2), true, ms(5), T0 + 20 * RESOLUTION_MS);
    let e = h.services.get_mut("www.").unwrap().get_mut(&ip(2)).unwrap();
    e.mark_stored(head);
    // Stored and older than the recent ones: gone. Slot 19 changed after the copy: kept, and every
    // newer one with it.
    assert_eq!(e.first, slot0 + 15);
    assert_eq!(e.buckets.len(), RECENT_BUCKETS);
    assert_eq!(e.dirty_from, Some(slot0 + 19));
    // A probe for a slot that left memory is dropped, not written over the stored bucket.
    e.record_probe(T0, true, ms(5));
    assert_eq!(e.first, slot0 + 15);
    // Once the rest is stored, only the recent buckets stay, however long it runs.
    for i in 21..400u64 {
        e.record_probe(T0 + i * RESOLUTION_MS, true, ms(5));
        e.dirty_from = None;
        e.mark_stored(e.head);
    }
    assert_eq!(e.buckets.len(), RECENT_BUCKETS);
    assert!(e.buckets.capacity() <= 4 * RECENT_BUCKETS);
}

#[test]
fn probes_fall_into_buckets_with_figures_over_passed_probes() {
    let mut h = one("www.", &[ip(2)]);
    h.record_probe("www.", ip(2), true, ms(10), T0);
    h.record_probe("www.", ip(2), true, ms(30), T0 + 9_999);
    h.record_probe("www.", ip(2), false, ms(500), T0 + 5_000);
    h.record_probe("www.", ip(2), false, ms(500), T0 + 10_000);
    // Not configured: ignored.
    h.record_probe("www.", ip(9), true, ms(1), T0);
    h.record_probe("api.", ip(2), true, ms(1), T0);
    let (buckets, summary, _) = h.get("www.", ip(2)).unwrap().document(T0 + 10_000);
    assert_eq!(buckets.len(), 2);
    let b = &buckets[0];
    assert_eq!(
        (b.start_unix_ms, b.probes, b.failures),
        (T0, 3, 1),
        "{buckets:?}"
    );
    assert_eq!(
        (b.min_ms, b.mean_ms, b.max_ms),
        (Some(10.0), Some(20.0), Some(30.0))
    );
    let b = &buckets[1];
    assert_eq!(
        (b.start_unix_ms, b.probes, b.failures, b.mean_ms),
        (T0 + 10_000, 1, 1, None)
    );
    assert_eq!(
        (summary.probes, summary.failures, summary.mean_ms),
        (4, 2, Some(20.0))
    );
    assert!(h.get("www.", ip(9)).is_none());
}

#[test]
fn the_ring_keeps_one_hour_and_forgets_older_buckets() {
    let mut h = one("www.", &[ip(2)]);
    // One probe per bucket for 2 hours.
    for i in 0..(2 * BUCKETS as u64) {
        h.record_probe("www.", ip(2), true, ms(i), T0 + i * RESOLUTION_MS);
    }
    let now = T0 + (2 * BUCKETS as u64 - 1) * RESOLUTION_MS;
    let (buckets, summary, _) = h.get("www.", ip(2)).unwrap().document(now);
    assert_eq!(buckets.len(), BUCKETS);
    assert_eq!(
        buckets[0].start_unix_ms,
        T0 + BUCKETS as u64 * RESOLUTION_MS
    );
    assert_eq!(buckets[0].min_ms, Some(BUCKETS as f64));
    assert_eq!(summary.probes, BUCKETS as u64);
    // A jump ahead of more than the ring clears it all; a probe from before the ring is ignored.
    h.record_probe("www.", ip(2), true, ms(7), now + 10 * 3_600_000);
    h.record_probe("www.", ip(2), true, ms(7), now);
    let (buckets, _, _) = h.get("www.", ip(2)).unwrap().document(now + 10 * 3_600_000);
    assert_eq!(buckets.len(), 1);
    // Time passing without probes empties the view, too.
    let (buckets, _, _) = h.get("www.", ip(2)).unwrap().document(now + 12 * 3_600_000);
    assert!(buckets.is_empty());
}

#[test]
fn transitions_are_recorded_on_change_only_and_bounded() {
    let mut h = one("www.", &[ip(2)]);
    h.record_agreed("www.", ip(2), true, "agreed by a", T0);
    h.record_agreed("www.", ip(2), true, "agreed by a", T0 + 1);
    h.record_standing("www.", ip(2), true, "verdict", "up", T0 + 2);
    h.record_standing("www.", ip(2), true, "verdict", "up", T0 + 3);
    h.record_agreed("www.", ip(2), false, "agreed by a", T0 + 4);
    h.record_standing("www.", ip(2), false, "verdict", "down", T0 + 5);
    // Same state, another rule: recorded.
    h.record_standing(
        "www.",
        ip(2),
        false,
        "damped",
        "é".repeat(1000).as_str(),
        T0 + 6,
    );
    let (_, _, t) = h.get("www.", ip(2)).unwrap().document(T0);
    let seen: Vec<(&str, &str, u64)> = t
        .iter()
        .map(|t| (t.state.as_str(), t.reason_kind.as_str(), t.unix_ms - T0))
        .collect();
    assert_eq!(
        seen,
        vec![
            ("up", "agreed", 0),
            ("published", "verdict", 2),
            ("down", "agreed", 4),
            ("excluded", "verdict", 5),
            ("excluded", "damped", 6)
        ]
    );
    assert_eq!(t[4].reason.len(), REASON_MAX_BYTES);
    assert!(t[4].reason.chars().all(|c| c == 'é'));
    for i in 0..(3 * TRANSITIONS as u64) {
        h.record_agreed("www.", ip(2), i % 2 == 0, "flap", T0 + 100 + i);
    }
    let (_, _, t) = h.get("www.", ip(2)).unwrap().document(T0);
    assert_eq!(t.len(), TRANSITIONS);
    assert_eq!(
        t.last().unwrap().unix_ms,
        T0 + 100 + 3 * TRANSITIONS as u64 - 1
    );
}

#[test]
fn long_term_means_come_from_the_passed_probes() {
    let mut h = one("www.", &[ip(2), ip(3), ip(4)]);
    for i in 0..10 {
        h.record_probe("www.", ip(2), true, ms(100), T0 + i * 1000);
        h.record_probe("www.", ip(3), true, ms(20), T0 + i * 1000);
        h.record_probe("www.", ip(3), false, ms(900), T0 + i * 1000);
        h.record_probe("www.", ip(4), false, ms(900), T0 + i * 1000);
    }
    assert_eq!(
        h.long_term_means("www.", T0 + 10_000),
        vec![(ip(2), ms(100)), (ip(3), ms(20))]
    );
    assert!(h.long_term_means("nope.", T0).is_empty());
}

#[test]
fn long_term_means_cover_the_hour_and_forget_what_is_older() {
    let mut h = one("www.", &[ip(2)]);
    // Two hours: 900 ms in the first, 100 ms in the second.
    for i in 0..(2 * BUCKETS as u64) {
        let latency = if i < BUCKETS as u64 { 900 } else { 100 };
        h.record_probe("www.", ip(2), true, ms(latency), T0 + i * RESOLUTION_MS);
    }
    let end = T0 + (2 * BUCKETS as u64 - 1) * RESOLUTION_MS;
    assert_eq!(h.long_term_means("www.", end), vec![(ip(2), ms(100))]);
    // Forty minutes later without a probe: the last 20 minutes of it are left.
    assert_eq!(
        h.long_term_means("www.", end + 40 * 60_000),
        vec![(ip(2), ms(100))]
    );
    // Over an hour later: nothing.
    assert!(h.long_term_means("www.", end + 71 * 60_000).is_empty());
}

#[test]
fn retain_forgets_endpoints_no_longer_configured() {
    let mut h = one("www.", &[ip(2), ip(3)]);
    h.record_probe("www.", ip(3), true, ms(1), T0);
    h.retain([("www.", &[ip(3)][..]), ("api.", &[ip(2)][..])]);
    assert!(h.get("www.", ip(2)).is_none());
    assert_eq!(h.get("www.", ip(3)).unwrap().document(T0).1.probes, 1);
    assert!(h.get("api.", ip(2)).is_some());
    // Without a store nothing is kept for it to delete; with one, the dropped endpoint is.
    assert!(h.forgotten.is_empty());
    h.restore(HashMap::new());
    h.retain([("api.", &[ip(2)][..])]);
    assert_eq!(h.forgotten, vec![store_key("www.", ip(3))]);
}

fn open(dir: &Path, history: &Arc<Mutex<History>>, now: u64) -> HistoryStore {
    // The previous store's thread lets go of the database once its last handle is gone.
    for _ in 0..100 {
        if let Ok(s) = HistoryStore::open(dir, history.clone(), now) {
            return s;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    panic!("cannot reopen the history store");
}

/// The store's file itself, once the store's thread has let go of it.
fn open_file(dir: &Path) -> Database {
    (0..100)
        .find_map(|_| {
            std::thread::sleep(Duration::from_millis(20));
            Database::open(dir.join(FILE_NAME)).ok()
        })
        .expect("the store lets go of the file")
}

#[test]
fn the_store_keeps_buckets_and_transitions_across_a_reopen_and_bounds_them() {
    let dir = tempfile::tempdir().unwrap();
    let now = T0 + (2 * BUCKETS as u64 - 1) * RESOLUTION_MS;
    let (doc, means);
    {
        let history = Arc::new(Mutex::new(one("www.", &[ip(2), ip(3)])));
        let store = open(dir.path(), &history, now);
        {
            let mut h = history.lock().unwrap();
            // Two hours of probes: only the last hour may stay on disk.
            for i in 0..(2 * BUCKETS as u64) {
                h.record_probe(
                    "www.",
                    ip(2),
                    i % 7 != 0,
                    ms(i % 50),
                    T0 + i * RESOLUTION_MS,
                );
            }
            h.record_agreed("www.", ip(2), true, "agreed by a", T0);
            h.record_standing(
                "www.",
                ip(2),
                false,
                "not_fastest",
                "not among the fastest 1",
                T0,
            );
            h.record_probe("www.", ip(3), true, ms(3), now - 1);
        }
        // Before the commit the hour is in memory; after it, only the last minute is.
        doc = history
            .lock()
            .unwrap()
            .get("www.", ip(2))
            .unwrap()
            .document(now);
        assert_eq!(doc.0.len(), BUCKETS);
        store.flush();
        let e = history.lock().unwrap().get("www.", ip(2)).unwrap().clone();
        assert_eq!(e.buckets.len(), RECENT_BUCKETS);
        assert_eq!(
            read(&history, Some(&store), "www.", ip(2), now).unwrap(),
            doc
        );
        // ip(3) is dropped from the configuration: its stored copy goes at the next commit.
        history.lock().unwrap().retain([("www.", &[ip(2)][..])]);
        means = history.lock().unwrap().long_term_means("www.", now);
        store.flush();
    }
    let history = Arc::new(Mutex::new(History::default()));
    let store = open(dir.path(), &history, now);
    assert_eq!(
        read(&history, Some(&store), "www.", ip(2), now).unwrap(),
        doc
    );
    let h = history.lock().unwrap();
    assert_eq!(h.get("www.", ip(2)).unwrap().buckets.len(), RECENT_BUCKETS);
    assert_eq!(h.long_term_means("www.", now), means);
    assert_eq!(doc.2.len(), 2);
    assert!(h.get("www.", ip(3)).is_none());
    drop(h);
    drop(store);
    // On disk: exactly the ring of the one endpoint left, and its transitions.
    let db = open_file(dir.path());
    let txn = db.begin_read().unwrap();
    let records = txn.open_table(RECORD_TABLE).unwrap();
    let mut keys = Vec::new();
    let mut slots = Vec::new();
    for e in records.iter().unwrap() {
        let (k, v) = e.unwrap();
        let (key, record) = k.value();
        keys.push((key.to_owned(), record));
        slots.extend(buckets_of(record, v.value()).map(|(slot, _)| slot));
    }
    // The hour is six whole records here (T0 is a record boundary): the seventh, older one went.
    assert_eq!(keys.len(), BUCKETS / RECORD_BUCKETS as usize);
    assert!(keys.iter().all(|(k, _)| *k == store_key("www.", ip(2))));
    let head = now / RESOLUTION_MS;
    assert_eq!(
        slots,
        ((head + 1 - BUCKETS as u64)..=head).collect::<Vec<_>>()
    );
    assert!(!txn.list_tables().unwrap().any(|t| t.name() == "buckets"));
    assert_eq!(txn.open_table(TRANSITION_TABLE).unwrap().len().unwrap(), 1);
}

#[test]
fn restored_transitions_do_not_repeat_the_current_state() {
    let dir = tempfile::tempdir().unwrap();
    {
        let history = Arc::new(Mutex::new(one("www.", &[ip(2)])));
        let store = open(dir.path(), &history, T0);
        history
            .lock()
            .unwrap()
            .record_agreed("www.", ip(2), true, "agreed", T0);
        store.flush();
    }
    let history = Arc::new(Mutex::new(History::default()));
    let _store = open(dir.path(), &history, T0 + 1000);
    let mut h = history.lock().unwrap();
    h.retain([("www.", &[ip(2)][..])]);
    h.record_agreed("www.", ip(2), true, "agreed", T0 + 1000);
    h.record_agreed("www.", ip(2), false, "agreed", T0 + 2000);
    let (_, _, t) = h.get("www.", ip(2)).unwrap().document(T0);
    let states: Vec<&str> = t.iter().map(|t| t.state.as_str()).collect();
    assert_eq!(states, vec!["up", "down"]);
}

#[test]
fn a_damaged_bucket_is_dropped() {
    let mut b = Bucket::default();
    b.add(true, 5.0);
    assert_eq!(Bucket::decode(b.encode()), Some(b));
    let mut raw = b.encode();
    raw[2] = 9; // more failures than probes
    assert_eq!(Bucket::decode(raw), None);
    let mut raw = b.encode();
    raw[4..8].copy_from_slice(&f32::NAN.to_le_bytes());
    assert_eq!(Bucket::decode(raw), None);
}

#[test]
fn a_store_of_the_first_layout_is_moved_into_records_on_open() {
    let dir = tempfile::tempdir().unwrap();
    let now = T0 + 100 * RESOLUTION_MS;
    let key = store_key("www.", ip(2));
    let mut written = Vec::new();
    {
        // One record per bucket, as rrguard wrote them before: slots 0..=100 from T0, one of them
        // damaged and one older than the hour.
        let db = Database::create(dir.path().join(FILE_NAME)).unwrap();
        let txn = db.begin_write().unwrap();
        {
            let mut legacy = txn.open_table(LEGACY_BUCKET_TABLE).unwrap();
            let mut old = Bucket::default();
            old.add(true, 1.0);
            legacy
                .insert(
                    (key.as_str(), T0 / RESOLUTION_MS - BUCKETS as u64),
                    old.encode(),
                )
                .unwrap();
            for i in 0..=100u64 {
                let slot = T0 / RESOLUTION_MS + i;
                let mut b = Bucket::default();
                b.add(i % 3 != 0, i as f32);
                let mut raw = b.encode();
                if i == 50 {
                    raw[2] = 9; // more failures than probes
                } else {
                    written.push((slot, b));
                }
                legacy.insert((key.as_str(), slot), raw).unwrap();
            }
        }
        txn.commit().unwrap();
    }
    let history = Arc::new(Mutex::new(History::default()));
    let store = open(dir.path(), &history, now);
    history.lock().unwrap().retain([("www.", &[ip(2)][..])]);
    let (buckets, summary, _) = read(&history, Some(&store), "www.", ip(2), now).unwrap();
    let want = document_of(written.clone(), Vec::new());
    assert_eq!(buckets.len(), 100);
    assert_eq!((buckets, summary), (want.0, want.1));
    // The recent ones are back in memory, the older ones answered by the records.
    assert_eq!(
        history
            .lock()
            .unwrap()
            .get("www.", ip(2))
            .unwrap()
            .buckets
            .len(),
        RECENT_BUCKETS
    );
    drop(store);
    let db = open_file(dir.path());
    let txn = db.begin_read().unwrap();
    assert!(!txn.list_tables().unwrap().any(|t| t.name() == "buckets"));
    // Slots T0.. fill the record of T0 (a record boundary) and part of the next.
    assert_eq!(txn.open_table(RECORD_TABLE).unwrap().len().unwrap(), 3);
}

#[test]
fn a_commit_keeps_the_other_slots_of_a_record() {
    let dir = tempfile::tempdir().unwrap();
    let history = Arc::new(Mutex::new(one("www.", &[ip(2)])));
    let store = open(dir.path(), &history, T0);
    // Committed one slot at a time, every slot of one record (and the first of the next).
    for i in 0..=RECORD_BUCKETS {
        history.lock().unwrap().record_probe(
            "www.",
            ip(2),
            true,
            ms(i + 1),
            T0 + i * RESOLUTION_MS,
        );
        store.flush();
    }
    let now = T0 + RECORD_BUCKETS * RESOLUTION_MS;
    let (buckets, summary, _) = read(&history, Some(&store), "www.", ip(2), now).unwrap();
    let means: Vec<f64> = buckets.iter().map(|b| b.mean_ms.unwrap()).collect();
    assert_eq!(
        means,
        (1..=RECORD_BUCKETS + 1)
            .map(|n| n as f64)
            .collect::<Vec<_>>()
    );
    assert_eq!(summary.probes, RECORD_BUCKETS + 1);
}
