//! Poison records on a real broker — invalid JSON, and a value on which the
//! user's closure panics — under each error policy. All other records
//! arrive; `Skip` counts the poison, `DeadLetter` puts it in `<job>-dlq`
//! with the reason, `Fail` stops the job with an error naming the record.

use std::time::{Duration, Instant};

use bytes::Bytes;
use rocketmq_streams::prelude::*;
use rocketmq_streams::{RuntimeConfig, StreamRuntime, DLQ_ERROR_PROPERTY, DLQ_ORIGIN_PROPERTY};
use rocketmq_streams_tests::{unique, TestCluster};

const GOOD: u64 = 200;

#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
struct Reading {
    sensor: u32,
    value: i64,
}

/// Good readings 0..GOOD, plus one invalid JSON and one that panics (value 13_000).
fn inputs() -> Vec<Bytes> {
    let mut v: Vec<Bytes> = (0..GOOD)
        .map(|i| {
            Bytes::from(
                serde_json::to_vec(&Reading {
                    sensor: i as u32,
                    value: i as i64,
                })
                .unwrap_or_default(),
            )
        })
        .collect();
    v.insert(50, Bytes::from_static(b"{\"sensor\": oops"));
    v.insert(120, Bytes::from_static(b"{\"sensor\":7,\"value\":13000}"));
    v
}

fn job(cluster: &TestCluster, policy: ErrorPolicy) -> (String, String, StreamRuntime) {
    let (input, output, job) = (unique("poison-in"), unique("poison-out"), unique("poison-job"));
    cluster.produce(&input, 2, inputs());
    let builder = StreamBuilder::new(job.clone());
    builder
        .source(&input, Json::<Reading>::new())
        .map(|r: Reading| {
            assert!(r.value != 13_000, "sensor fault value");
            r.value * 10
        })
        .map(|v: i64| v.to_string())
        .sink(&output, Utf8);
    let mut config = RuntimeConfig::new(cluster.client.clone());
    config.shards = 2;
    config.error_policy = policy;
    let runtime = StreamRuntime::start(builder.build().expect("topology"), config).expect("start");
    (output, job, runtime)
}

fn good_outputs(cluster: &TestCluster, output: &str) -> Vec<i64> {
    let mut values: Vec<i64> = cluster
        .read_topic(output, GOOD as usize, Duration::from_secs(60))
        .iter()
        .filter_map(|r| std::str::from_utf8(&r.body).ok()?.parse().ok())
        .collect();
    values.sort_unstable();
    values
}

fn expected() -> Vec<i64> {
    (0..GOOD as i64).map(|v| v * 10).collect()
}

fn wait_until(limit: Duration, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !done() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn skip_counts_the_poison_and_delivers_the_rest() {
    let cluster = TestCluster::start();
    let (output, _job, runtime) = job(&cluster, ErrorPolicy::Skip);
    assert_eq!(good_outputs(&cluster, &output), expected());
    wait_until(Duration::from_secs(30), || runtime.metrics().total(|s| s.skipped) == 2);
    let metrics = runtime.stop().expect("clean stop");
    assert_eq!(metrics.total(|s| s.skipped), 2);
    assert_eq!(metrics.total(|s| s.records_in), GOOD + 2);
    assert_eq!(metrics.total(|s| s.records_out), GOOD);
}

#[test]
fn dead_letter_sends_the_original_bytes_and_the_reason() {
    let cluster = TestCluster::start();
    let (output, job, runtime) = job(&cluster, ErrorPolicy::DeadLetter);
    assert_eq!(good_outputs(&cluster, &output), expected());
    let dead = cluster.read_topic(&format!("{job}-dlq"), 2, Duration::from_secs(60));
    let metrics = runtime.stop().expect("clean stop");
    assert_eq!(metrics.total(|s| s.dead_lettered), 2);
    assert_eq!(dead.len(), 2, "exactly the two poison records are dead-lettered");
    let prop = |r: &rocketmq_streams_io::Record, k: &str| {
        r.properties
            .iter()
            .find(|(key, _)| key == k)
            .map(|(_, v)| v.clone())
            .unwrap_or_default()
    };
    let mut by_body: Vec<(Bytes, String, String)> = dead
        .iter()
        .map(|r| {
            (
                r.body.clone(),
                prop(r, DLQ_ERROR_PROPERTY),
                prop(r, DLQ_ORIGIN_PROPERTY),
            )
        })
        .collect();
    by_body.sort();
    // Sorted by body: `{"sensor": oops` sorts before `{"sensor":7,...`.
    assert_eq!(by_body[0].0, Bytes::from_static(b"{\"sensor\": oops"));
    assert!(by_body[0].1.contains("json"), "reason: {}", by_body[0].1);
    assert_eq!(by_body[1].0, Bytes::from_static(b"{\"sensor\":7,\"value\":13000}"));
    assert!(by_body[1].1.contains("sensor fault value"), "reason: {}", by_body[1].1);
    assert!(
        by_body.iter().all(|(_, _, origin)| origin.contains("poison-in")),
        "origins name the input: {by_body:?}"
    );
}

#[test]
fn fail_stops_the_job_with_an_error_naming_the_record() {
    let cluster = TestCluster::start();
    let (_output, _job, runtime) = job(&cluster, ErrorPolicy::Fail);
    wait_until(Duration::from_secs(60), || runtime.has_stopped());
    assert!(runtime.has_stopped(), "the job stopped by itself");
    match runtime.stop() {
        Err(StreamsError::RecordFailed { origin, cause }) => {
            assert!(origin.contains("poison-in"), "origin names the record: {origin}");
            assert!(
                cause.contains("json") || cause.contains("sensor fault value"),
                "cause: {cause}"
            );
        }
        other => panic!("expected RecordFailed, got {other:?}"),
    }
}
