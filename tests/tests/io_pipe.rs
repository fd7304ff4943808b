//! The first end-to-end slice on a real broker: 100,000 records piped through
//! an uppercase transform arrive exactly once, and the pipe's committed
//! offsets equal the input's end offsets.

use std::collections::HashMap;
use std::time::Duration;

use bytes::Bytes;
use rocketmq_streams_io::pipe::{self, PipeConfig};
use rocketmq_streams_io::{Admin, OutRecord, Sink, Source, SourceConfig};
use rocketmq_streams_tests::{unique, wait_for, TestCluster};

const RECORDS: u64 = 100_000;
const QUEUES: u32 = 8;

#[test]
fn pipe_delivers_every_record_exactly_once_and_commits_end_offsets() {
    let cluster = TestCluster::start();
    let (input, output) = (unique("pipe-in"), unique("pipe-out"));
    let group = unique("pipe-group");
    let io = cluster.io.clone();
    let client = cluster.client.clone();

    let ex = glommio::LocalExecutorBuilder::default()
        .name("test-shard")
        .make()
        .expect("glommio executor");
    let (admin, stats) = ex.run({
        let (input, output, group) = (input.clone(), output.clone(), group.clone());
        async move {
            rocketmq_streams_io::keep_awake();
            let admin = Admin::start(io.clone(), &client).await.expect("admin");
            admin.create_topic(&input, QUEUES).await.expect("create input");
            admin.create_topic(&output, QUEUES).await.expect("create output");
            // Idempotent: creating again with the same queue count succeeds.
            admin.create_topic(&input, QUEUES).await.expect("create input again");
            let in_queues = admin.route(&input).await.expect("input route");
            let out_queues = admin.route(&output).await.expect("output route");
            assert_eq!(in_queues.len(), QUEUES as usize);
            assert_eq!(out_queues.len(), QUEUES as usize);

            let sink = Sink::start(io.clone(), &client, &unique("pipe-producer"))
                .await
                .expect("sink");
            let records: Vec<OutRecord> = (0..RECORDS)
                .map(|i| OutRecord::new(Bytes::from(format!("record-{i:07}"))))
                .collect();
            let stored = sink.send_spread(&in_queues, records).await.expect("produce input");
            assert_eq!(stored as u64, RECORDS);

            let mut source = Source::start(io.clone(), &client, SourceConfig::new(group, [input]))
                .await
                .expect("source");
            let stats = pipe::run(
                &mut source,
                &sink,
                &PipeConfig {
                    output_queues: out_queues,
                    commit_interval: Duration::from_millis(500),
                    max_records: Some(RECORDS),
                    max_duration: Duration::from_secs(300),
                },
                |body| Bytes::from(body.to_ascii_uppercase()),
            )
            .await
            .expect("pipe");
            source.shutdown().await;
            sink.shutdown().await;
            (admin, stats)
        }
    });
    assert_eq!(
        stats.consumed, RECORDS,
        "the pipe consumed every input record: {stats:?}"
    );
    assert_eq!(stats.produced, RECORDS, "every output was acknowledged: {stats:?}");

    // The input holds exactly what was produced.
    let a = admin.clone();
    let inp = input.clone();
    let in_offsets = cluster
        .block_on(async move { a.queue_offsets(&inp).await })
        .expect("input offsets");
    let input_total: i64 = in_offsets.iter().map(|q| q.max.0 - q.min.0).sum();
    assert_eq!(input_total, RECORDS as i64);

    // Read the whole output back with a fresh group and compare multisets.
    let mut expected: HashMap<Bytes, u32> = HashMap::new();
    for i in 0..RECORDS {
        *expected.entry(Bytes::from(format!("RECORD-{i:07}"))).or_default() += 1;
    }
    let mut seen: HashMap<Bytes, u32> = HashMap::new();
    for r in cluster.read_topic(&output, RECORDS as usize, Duration::from_secs(180)) {
        *seen.entry(r.body).or_default() += 1;
    }
    let total: u64 = seen.values().map(|&c| u64::from(c)).sum();
    assert_eq!(total, RECORDS, "the output holds exactly one record per input record");
    assert!(
        seen == expected,
        "the output multiset equals the uppercased input multiset"
    );

    // Committed offsets reach the broker asynchronously: wait (bounded).
    let end: HashMap<_, _> = in_offsets.iter().map(|q| (q.queue.clone(), q.max)).collect();
    let mut last = HashMap::new();
    let reached = wait_for(Duration::from_secs(30), || {
        let a = admin.clone();
        let (g, t) = (group.clone(), input.clone());
        last = cluster
            .block_on(async move { a.committed_offsets(&g, &t).await })
            .unwrap_or_default();
        (last == end).then_some(())
    });
    assert!(
        reached.is_some(),
        "committed offsets {last:?} of {group} equal the end offsets {end:?}"
    );
}
