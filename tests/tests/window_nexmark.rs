//! Windows on a real broker: Nexmark-style bids through a hopping-window
//! count per auction (q5-like) and a tumbling-window highest bid (q7-like),
//! against references computed here, across a graceful restart midway;
//! and the stream time surviving a migration (a record late before the
//! queue moved is late on the instance it moved to).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use rocketmq_streams::prelude::*;
use rocketmq_streams_tests::windows::{bids, closers, json, q5_reference, q5_window, Bid};
use rocketmq_streams_tests::{unique, wait_for, TestCluster};

const BIDS: usize = 12_000;

/// What the job emitted per (key, window start); a window emitted twice
/// with two values is a conflict (results may repeat, never change).
#[derive(Default)]
struct Emitted<K> {
    values: BTreeMap<(K, i64), u64>,
    conflicts: Vec<String>,
}

type Shared<K> = Arc<Mutex<Emitted<K>>>;

fn keep<K: Ord + Clone + std::fmt::Debug + Send + 'static>(
    into: &Shared<K>,
) -> impl Fn(&(Windowed<K>, u64)) + Send + Sync + 'static {
    let into = into.clone();
    move |(w, v): &(Windowed<K>, u64)| {
        let mut e = into.lock().unwrap_or_else(|p| p.into_inner());
        let at = (w.key.clone(), w.window.start);
        if let Some(old) = e.values.insert(at.clone(), *v) {
            if old != *v {
                e.conflicts.push(format!("{at:?}: {old} then {v}"));
            }
        }
    }
}

fn start(
    cluster: &TestCluster,
    job: &str,
    input: &str,
    dir: &std::path::Path,
) -> (StreamRuntime, Shared<u64>, Shared<u8>) {
    let (counts, highest): (Shared<u64>, Shared<u8>) = Default::default();
    let builder = StreamBuilder::new(job);
    let bids = builder
        .source(input, Json::<Bid>::new())
        .select_timestamp(|b: &Bid| b.time);
    // A grace longer than the bids' span: however the input queues
    // interleave, no bid is late, and only the closers close windows.
    let grace = Duration::from_secs(120);
    bids.key_by(|b: &Bid| b.auction)
        .window(q5_window(grace))
        .count()
        .to_rstream()
        .foreach(keep(&counts));
    bids.key_by(|_: &Bid| 0u8)
        .window(Window::tumbling(Duration::from_secs(2)).grace(grace))
        .max(|b: &Bid| b.price)
        .to_rstream()
        .foreach(keep(&highest));
    let mut config = RuntimeConfig::new(cluster.client.clone());
    config.shards = 2;
    config.state_dir = Some(dir.to_path_buf());
    let runtime = StreamRuntime::start(builder.build().expect("topology"), config).expect("start");
    (runtime, counts, highest)
}

#[test]
fn hopping_counts_and_tumbling_maxima_match_their_references_across_a_restart() {
    let cluster = TestCluster::start();
    let (input, job) = (unique("win-bids"), unique("win-job"));
    let data = bids(BIDS, 400);
    let (first, second) = data.split_at(BIDS / 2);
    cluster.produce(&input, 4, json(first));
    let dir = tempfile::tempdir().expect("state dir");

    let (runtime, counts_1, highest_1) = start(&cluster, &job, &input, dir.path());
    let caught_up = wait_for(Duration::from_secs(180), || {
        let m = runtime.metrics();
        (m.lag.len() >= 4 && m.caught_up() && m.total(|s| s.records_in) >= (BIDS / 2 * 3) as u64).then_some(())
    });
    let m1 = runtime.stop().expect("clean stop");
    assert!(caught_up.is_some(), "the first run did not catch up: {m1:?}");
    // Nothing closed yet (grace), so nothing was emitted.
    assert!(counts_1.lock().expect("lock").values.is_empty());
    assert!(highest_1.lock().expect("lock").values.is_empty());

    cluster.produce(&input, 4, json(second));

    // References, without the engine.
    let counts_ref = q5_reference(&data);
    let mut highest_ref: BTreeMap<(u8, i64), u64> = BTreeMap::new();
    for b in &data {
        let top = highest_ref.entry((0, b.time.div_euclid(2_000) * 2_000)).or_default();
        *top = (*top).max(b.price);
    }

    let (runtime, counts, highest) = start(&cluster, &job, &input, dir.path());
    // Once every bid is in, a closer per auction: its time closes every
    // window of the bids (in every shuffle queue that holds an auction).
    // Sent earlier, one input queue's closer could overtake another
    // queue's bids and make them late.
    let in_before = BIDS as u64 / 2 * 3;
    let all_in = wait_for(Duration::from_secs(180), || {
        let m = runtime.metrics();
        (m.lag.len() >= 4 && m.caught_up() && m.total(|s| s.records_in) >= in_before).then_some(())
    });
    assert!(
        all_in.is_some(),
        "the second half was not consumed: {:?}",
        runtime.metrics()
    );
    cluster.produce(&input, 4, json(&closers()));
    let done = wait_for(Duration::from_secs(240), || {
        let c = counts.lock().expect("lock").values.len();
        let h = highest.lock().expect("lock").values.len();
        (c >= counts_ref.len() && h >= highest_ref.len()).then_some(())
    });
    let m = runtime.stop().expect("clean stop");
    let counts = std::mem::take(&mut *counts.lock().expect("lock"));
    let highest = std::mem::take(&mut *highest.lock().expect("lock"));
    assert!(
        done.is_some(),
        "not every window fired within 240 s: {} of {} counts, {} of {} maxima; {m:?}",
        counts.values.len(),
        counts_ref.len(),
        highest.values.len(),
        highest_ref.len()
    );
    assert!(counts.conflicts.is_empty(), "{:?}", counts.conflicts);
    assert!(highest.conflicts.is_empty(), "{:?}", highest.conflicts);
    assert_eq!(counts.values, counts_ref, "hopping counts per auction");
    assert_eq!(highest.values, highest_ref, "tumbling maxima");
    assert_eq!(m.total(|s| s.late) + m1.total(|s| s.late), 0, "no bid was late");
}

#[test]
fn the_stream_time_survives_a_migration() {
    let cluster = TestCluster::start();
    let (input, job) = (unique("win-time"), unique("win-time-job"));
    let run = |bodies: Vec<Bytes>, expect_in: u64| {
        // Each run is a new instance, with a state directory of its own:
        // the queue's state comes from the state topic, as after a move.
        let dir = tempfile::tempdir().expect("state dir");
        cluster.produce(&input, 1, bodies);
        let seen: Shared<String> = Default::default();
        let builder = StreamBuilder::new(&job);
        builder
            .source(&input, Json::<Bid>::new())
            .select_timestamp(|b: &Bid| b.time)
            .key_by(|_: &Bid| "k".to_string())
            // Windows close on records only: what closes must not depend
            // on how long a run idles before it stops.
            .window(Window::tumbling(Duration::from_secs(1)).idle_timeout(Duration::MAX))
            .count()
            .to_rstream()
            .foreach(keep(&seen));
        let mut config = RuntimeConfig::new(cluster.client.clone());
        config.shards = 1;
        config.state_dir = Some(dir.path().to_path_buf());
        let runtime = StreamRuntime::start(builder.build().expect("topology"), config).expect("start");
        let done = wait_for(Duration::from_secs(120), || {
            let m = runtime.metrics();
            (m.caught_up() && !m.lag.is_empty() && m.total(|s| s.records_in) >= expect_in).then_some(())
        });
        let m = runtime.stop().expect("clean stop");
        assert!(done.is_some(), "the run did not catch up: {m:?}");
        let seen = std::mem::take(&mut *seen.lock().expect("lock"));
        (seen, m)
    };
    let bid = |time: i64| Bid {
        auction: 1,
        price: 1,
        time,
    };
    // In order on one queue: [0, 1 s) and [1 s, 2 s) close; stream time 5 s.
    let (seen, m) = run(json(&[bid(10), bid(500), bid(1_500), bid(5_000)]), 2 * 4);
    assert_eq!(
        seen.values.into_iter().collect::<Vec<_>>(),
        [(("k".to_string(), 0), 2), (("k".to_string(), 1_000), 1)]
    );
    assert_eq!(m.total(|s| s.late), 0);
    // On the new instance, 700 is late: its window closed at 1 s, on the
    // old one. A job that lost its stream time in the move would take it.
    let (seen, m) = run(json(&[bid(700), bid(9_000)]), 2 * 2);
    assert_eq!(m.total(|s| s.late), 1, "{m:?}");
    assert_eq!(
        seen.values.into_iter().collect::<Vec<_>>(),
        [(("k".to_string(), 5_000), 1)],
        "only [5 s, 6 s) closes"
    );
}
