//! A 3-stage stateless job (map → filter → flat_map → sink) with 2 shards on
//! a real broker: 200,000 records over 8 queues; the sink holds exactly the
//! expected multiset, every queue is processed by exactly one shard thread,
//! and the committed offsets reach the end of the input.

use std::collections::{BTreeSet, HashMap};
use std::time::{Duration, Instant};

use bytes::Bytes;
use rocketmq_streams::prelude::*;
use rocketmq_streams::RuntimeConfig;
use rocketmq_streams_tests::{unique, TestCluster};

const RECORDS: u64 = 200_000;
const QUEUES: u32 = 8;

#[test]
fn three_stage_job_on_two_shards_delivers_the_exact_multiset() {
    let cluster = TestCluster::start();
    let (input, output, job) = (unique("stateless-in"), unique("stateless-out"), unique("stateless-job"));
    let queues = cluster.produce(
        &input,
        QUEUES,
        (0..RECORDS).map(|i| Bytes::from(format!("r{i}"))).collect(),
    );

    let builder = StreamBuilder::new(job.clone());
    builder
        .source(&input, Utf8)
        .map(|s: String| s.trim_start_matches('r').parse::<u64>().unwrap_or(u64::MAX))
        .filter(|n: &u64| n % 3 != 0)
        .flat_map(|n: u64| [format!("{n}-a"), format!("{n}-b")])
        .sink(&output, Utf8);
    let mut config = RuntimeConfig::new(cluster.client.clone());
    config.shards = 2;
    let runtime = StreamRuntime::start(builder.build().expect("topology"), config).expect("start");

    let mut expected: HashMap<Bytes, u32> = HashMap::new();
    for n in (0..RECORDS).filter(|n| n % 3 != 0) {
        for suffix in ["a", "b"] {
            *expected.entry(Bytes::from(format!("{n}-{suffix}"))).or_default() += 1;
        }
    }
    let expected_total: usize = expected.values().map(|&c| c as usize).sum();
    let output_records = cluster.read_topic(&output, expected_total, Duration::from_secs(300));

    // Wait (bounded) until the job has committed everything, then stop it.
    let deadline = Instant::now() + Duration::from_secs(60);
    while runtime.metrics().committed.values().map(|o| o.0 as u64).sum::<u64>() < RECORDS && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(200));
    }
    let metrics = runtime.stop().expect("clean stop");

    let mut seen: HashMap<Bytes, u32> = HashMap::new();
    for r in output_records {
        *seen.entry(r.body).or_default() += 1;
    }
    assert_eq!(seen.values().map(|&c| c as usize).sum::<usize>(), expected_total);
    assert!(seen == expected, "the sink holds exactly the expected multiset");

    assert_eq!(metrics.total(|s| s.records_in), RECORDS);
    assert_eq!(metrics.total(|s| s.records_out), expected_total as u64);
    assert_eq!(metrics.total(|s| s.skipped), 0);

    // Ownership: each queue was processed by exactly one shard, each shard on
    // a thread of its own.
    let mut owners: HashMap<QueueId, Vec<Option<String>>> = HashMap::new();
    for shard in &metrics.shards {
        for q in &shard.queues {
            owners.entry(q.clone()).or_default().push(shard.thread.clone());
        }
    }
    assert_eq!(
        owners.keys().cloned().collect::<BTreeSet<_>>(),
        queues.iter().cloned().collect::<BTreeSet<_>>()
    );
    assert!(owners.values().all(|o| o.len() == 1), "one owner per queue: {owners:?}");
    let threads: BTreeSet<_> = metrics.shards.iter().map(|s| s.thread.clone()).collect();
    assert_eq!(threads.len(), 2, "two distinct shard threads: {threads:?}");
    assert!(
        metrics.shards.iter().all(|s| !s.queues.is_empty()),
        "both shards own queues"
    );

    let committed: u64 = metrics.committed.values().map(|o| o.0 as u64).sum();
    assert_eq!(committed, RECORDS, "committed offsets reach the end of every queue");
    assert_eq!(
        metrics.lag.len(),
        8,
        "lag is reported for every owned queue: {:?}",
        metrics.lag
    );
    assert_eq!(metrics.total_lag(), 0, "nothing is left behind: {:?}", metrics.lag);
}
