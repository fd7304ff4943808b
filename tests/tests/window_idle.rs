//! Idle firing judged on what the job consumes (issue 28), on a real
//! broker: the last windows of a quiet stream fire although
//!
//! - a tagged source's queue ends in messages of another tag, which the
//!   consumer never delivers (the group's offset used to stop at the last
//!   message that matched, so the job never counted as caught up), and
//! - a `ConsumeFrom::Last` source has a queue that gets nothing after the
//!   job starts (no offset was ever committed for it, so its old messages
//!   counted as not consumed, forever).
//!
//! Each window's count is checked against a reference computed here.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use rocketmq_streams::io::{Admin, ConsumeFrom, OutRecord, QueueId, Sink};
use rocketmq_streams::prelude::*;
use rocketmq_streams_tests::{unique, wait_for, TestCluster};
use serde::{Deserialize, Serialize};

const WINDOW_MS: i64 = 500;

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Click {
    user: u64,
    time: i64,
}

/// `n` clicks of 4 users, 10 ms apart from `from`.
fn clicks(from: i64, n: usize) -> Vec<Click> {
    (0..n)
        .map(|i| Click {
            user: i as u64 % 4,
            time: from + i as i64 * 10,
        })
        .collect()
}

/// Counts per (user, window start).
fn reference(clicks: &[Click]) -> BTreeMap<(u64, i64), u64> {
    let mut counts = BTreeMap::new();
    for c in clicks {
        *counts
            .entry((c.user, c.time - c.time.rem_euclid(WINDOW_MS)))
            .or_insert(0) += 1;
    }
    counts
}

fn message(click: &Click, tag: &str) -> OutRecord {
    OutRecord {
        tags: Some(tag.to_string()),
        ..OutRecord::new(Bytes::from(serde_json::to_vec(click).expect("JSON")))
    }
}

/// Creates `topic` with `queues` queues; returns them in order.
fn create(cluster: &TestCluster, topic: &str, queues: u32) -> Vec<QueueId> {
    let (io, client, topic) = (cluster.io.clone(), cluster.client.clone(), topic.to_string());
    cluster.block_on(async move {
        let admin = Admin::start(io, &client).await.expect("admin");
        admin.create_topic(&topic, queues).await.expect("create topic");
        let mut route = admin.route(&topic).await.expect("route");
        route.sort();
        route
    })
}

/// Sends `records` to `queue`, in order.
fn send(cluster: &TestCluster, queue: &QueueId, records: Vec<OutRecord>) {
    let (io, client, queue) = (cluster.io.clone(), cluster.client.clone(), queue.clone());
    cluster.block_on(async move {
        let sink = Sink::start(io, &client, &unique("idle-producer"))
            .await
            .expect("producer");
        sink.send(queue, records).await.expect("bridge").expect("send");
        sink.shutdown().await;
    });
}

/// A job counting `clicks` per user in tumbling windows that fire when the
/// stream goes quiet; what it emitted, by (user, window start).
type Emitted = Arc<Mutex<BTreeMap<(u64, i64), u64>>>;

fn start(
    cluster: &TestCluster,
    job: &str,
    source: impl FnOnce(&StreamBuilder) -> RStream<Click>,
    consume_from: ConsumeFrom,
) -> (StreamRuntime, Emitted) {
    let emitted: Emitted = Arc::default();
    let into = emitted.clone();
    let builder = StreamBuilder::new(job);
    source(&builder)
        .select_timestamp(|c: &Click| c.time)
        .key_by(|c: &Click| c.user)
        .window(
            Window::tumbling(Duration::from_millis(WINDOW_MS as u64))
                .grace(Duration::ZERO)
                .idle_timeout(Duration::from_secs(1)),
        )
        .count()
        .to_rstream()
        .foreach(move |(w, n): &(Windowed<u64>, u64)| {
            into.lock()
                .unwrap_or_else(|p| p.into_inner())
                .insert((w.key, w.window.start), *n);
        });
    let mut config = RuntimeConfig::new(cluster.client.clone());
    config.shards = 2;
    config.shuffle_queues = 2;
    config.consume_from = consume_from;
    let runtime = StreamRuntime::start(builder.build().expect("topology"), config).expect("start");
    (runtime, emitted)
}

/// Waits until every window of `expected` was emitted (at most 120 s) and
/// checks the counts.
fn assert_all_fire(runtime: StreamRuntime, emitted: &Emitted, expected: &BTreeMap<(u64, i64), u64>) {
    let all = wait_for(Duration::from_secs(120), || {
        let e = emitted.lock().expect("lock");
        expected.keys().all(|k| e.contains_key(k)).then_some(())
    });
    let m = runtime.stop().expect("clean stop");
    let got = emitted.lock().expect("lock").clone();
    assert!(
        all.is_some(),
        "{} of {} windows fired within 120 s (the last ones wait for idle firing); missing {:?}; lag {:?}",
        got.len(),
        expected.len(),
        expected.keys().filter(|k| !got.contains_key(k)).collect::<Vec<_>>(),
        m.lag
    );
    assert_eq!(&got, expected, "counts per user and window");
    assert_eq!(m.total(|s| s.late), 0, "nothing late");
}

#[test]
fn the_last_windows_fire_although_a_tagged_queue_ends_in_other_tags() {
    let cluster = TestCluster::start();
    let (input, job) = (unique("idle-tagged"), unique("idle-tagged-job"));
    let queues = create(&cluster, &input, 2);
    let data = clicks(0, 200);
    // Each queue: its half of the clicks, tagged `keep`, then messages of
    // another tag that the job's subscription does not take.
    for (i, queue) in queues.iter().enumerate() {
        let mut records: Vec<OutRecord> = data.iter().skip(i).step_by(2).map(|c| message(c, "keep")).collect();
        records.extend(clicks(0, 20).iter().map(|c| message(c, "other")));
        send(&cluster, queue, records);
    }
    let (runtime, emitted) = start(
        &cluster,
        &job,
        |b| b.source_with_tags(&input, "keep", Json::<Click>::new()),
        ConsumeFrom::First,
    );
    assert_all_fire(runtime, &emitted, &reference(&data));
}

#[test]
fn the_last_windows_fire_although_a_last_source_queue_gets_nothing_new() {
    let cluster = TestCluster::start();
    let (input, job) = (unique("idle-last"), unique("idle-last-job"));
    let queues = create(&cluster, &input, 2);
    // Before the job: old clicks in both queues, which `Last` skips.
    for queue in &queues {
        send(
            &cluster,
            queue,
            clicks(0, 50).iter().map(|c| message(c, "old")).collect(),
        );
    }
    let (runtime, emitted) = start(
        &cluster,
        &job,
        |b| b.source(&input, Json::<Click>::new()),
        ConsumeFrom::Last,
    );
    // Every source queue is committed at its end: where a queue without a
    // committed offset starts under `Last`, the job commits it (queue 1
    // would otherwise stay without one, and idle firing wait for it
    // forever). The broker answers a new group's offset query with 0 while
    // a queue's messages from offset 0 are in memory (RocketMQ's own rule,
    // `check_in_mem_by_consume_offset`), so here the client reads both
    // queues from their start, as a Java client would, and commits them as
    // it goes; past retention or page-out it starts at the end, and the
    // job's own commit of that end is what this waits for.
    let (io, client, group, topic) = (cluster.io.clone(), cluster.client.clone(), job.clone(), input.clone());
    let admin = cluster.block_on(async move { Admin::start(io, &client).await.expect("admin") });
    let pinned = wait_for(Duration::from_secs(60), || {
        let (admin, group, topic) = (admin.clone(), group.clone(), topic.clone());
        let committed =
            cluster.block_on(async move { admin.committed_offsets(&group, &topic).await.unwrap_or_default() });
        queues
            .iter()
            .all(|q| committed.get(q).is_some_and(|o| o.0 == 50))
            .then_some(())
    });
    assert!(pinned.is_some(), "the job did not commit where its Last queues start");
    // New clicks, all to queue 0; queue 1 stays quiet.
    let data = clicks(10_000, 200);
    send(&cluster, &queues[0], data.iter().map(|c| message(c, "new")).collect());
    // The old clicks' windows (start 0) were counted whole or not at all.
    let mut expected = reference(&data);
    let old = reference(&clicks(0, 50));
    let read_old = wait_for(Duration::from_secs(30), || {
        let e = emitted.lock().expect("lock");
        old.keys().all(|k| e.contains_key(k)).then_some(())
    });
    if read_old.is_some() {
        expected.extend(old.iter().map(|(k, n)| (*k, n * 2)));
    }
    assert_all_fire(runtime, &emitted, &expected);
}
