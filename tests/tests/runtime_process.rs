//! `GroupedStream::process` on a real broker: a user-written
//! deduplication keeps the ids it has seen in its store. The job runs over
//! a first batch of orders, stops, and a new instance with an empty state
//! directory (its store restored from the state topic) runs over a second
//! batch that repeats half of the first: every id reaches the output
//! exactly once, and a record the processor fails is skipped with its
//! store write undone (the same id is refused again after the restore).

use std::collections::BTreeMap;
use std::time::Duration;

use bytes::Bytes;
use rocketmq_streams::prelude::*;
use rocketmq_streams_tests::{unique, TestCluster};

/// Forwards an order id the first time it is seen; counts every sighting
/// in its store. An id starting with `bad` fails, after its store write,
/// when the store says it was never seen.
struct FirstOnly;

impl KeyedProcessor<String, String> for FirstOnly {
    type Out = u32;
    type State = u32;

    fn process(
        &mut self,
        key: &String,
        _value: String,
        ctx: &mut ProcessorContext<'_, String, u32, u32>,
    ) -> Result<(), StreamsError> {
        let seen = ctx.get(key)?.unwrap_or(0);
        ctx.put(key, &(seen + 1))?;
        if key.starts_with("bad") && seen == 0 {
            // Refused at its first sighting only: a second one is refused
            // again only if this write was undone.
            return Err(StreamsError::Processor(format!("{key} is refused")));
        }
        if seen == 0 {
            ctx.forward(seen + 1)?;
        }
        Ok(())
    }
}

/// Ids `range`, each twice, interleaved.
fn orders(range: std::ops::Range<u32>) -> Vec<Bytes> {
    range
        .clone()
        .chain(range)
        .map(|i| Bytes::from(format!("order-{i}")))
        .collect()
}

fn run(cluster: &TestCluster, job: &str, input: &str, output: &str, expected: usize) -> JobMetrics {
    let builder = StreamBuilder::new(job);
    builder
        .source(input, Utf8)
        .key_by(|id: &String| id.clone())
        .process("first-only", || FirstOnly)
        .sink(output, Json::<(String, u32)>::new());
    let dir = tempfile::tempdir().expect("state dir");
    let mut config = RuntimeConfig::new(cluster.client.clone());
    config.shards = 2;
    config.shuffle_queues = 4;
    config.state_dir = Some(dir.path().to_path_buf());
    let runtime = StreamRuntime::start(builder.build().expect("topology"), config).expect("start");
    let read = cluster.read_until(
        output,
        expected,
        Duration::from_secs(180),
        |bodies| bodies.len(),
        |&n, _| n >= expected,
    );
    assert!(read.is_ok(), "{expected} outputs within 180 s, read {read:?}");
    let ended =
        rocketmq_streams_tests::wait_for(Duration::from_secs(120), || runtime.metrics().caught_up().then_some(()));
    assert!(ended.is_some(), "the job caught up within 120 s");
    runtime.stop().expect("stop")
}

#[test]
fn a_user_processor_keeps_exact_state_across_a_restore() {
    let cluster = TestCluster::start();
    let (input, output, job) = (unique("proc-orders"), unique("proc-first"), unique("proc-job"));

    let mut first = orders(0..1_000);
    first.push(Bytes::from_static(b"bad-1"));
    cluster.produce(&input, 4, first);
    let m1 = run(&cluster, &job, &input, &output, 1_000);
    assert_eq!(m1.total(|s| s.skipped), 1, "the failed record is skipped, once");

    let mut second = orders(500..1_500);
    second.push(Bytes::from_static(b"bad-1"));
    cluster.produce(&input, 4, second);
    let m2 = run(&cluster, &job, &input, &output, 1_500);
    assert!(m2.total(|s| s.restored) > 0, "the second instance restored the store");
    assert_eq!(
        m2.total(|s| s.skipped),
        1,
        "bad-1 refused again: the first refusal's store write was undone"
    );

    let mut seen: BTreeMap<String, Vec<u32>> = BTreeMap::new();
    for r in cluster.read_topic(&output, 1_500, Duration::from_secs(60)) {
        let (id, sightings) = Json::<(String, u32)>::new().deserialize(&r.body).expect("an output");
        seen.entry(id).or_default().push(sightings);
    }
    let expected: BTreeMap<String, Vec<u32>> = (0..1_500).map(|i| (format!("order-{i}"), vec![1])).collect();
    assert_eq!(seen, expected, "every id once, at its first sighting; bad-1 never");
}
