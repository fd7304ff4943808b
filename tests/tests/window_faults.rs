//! Windows stay exact when the job dies or moves: the q5-like hopping count
//! (`rocketmq_streams_tests::windows`) against its reference after the
//! job's process is killed with SIGKILL midway, and when a second instance
//! takes shuffle queues (their window states and stream times) over
//! midway. Results may be emitted twice, never with two values.
//!
//! The bids are in one input queue, at most 400 ms out of order, with a
//! grace of 1 s: no bid is late however the job is interrupted, and
//! windows fire as the stream moves on, so the interruptions come while
//! windows are firing. The closers' own windows (the last of each
//! auction) fire once the input is consumed and the stream stays quiet
//! (idle firing, after the interruption).

use std::collections::BTreeMap;
use std::time::Duration;

use rocketmq_streams::prelude::*;
use rocketmq_streams_tests::windows::{bids, closers, json, q5, q5_reference, q5_results, CRASH_GRACE};
use rocketmq_streams_tests::wordcount::kill_job_midway;
use rocketmq_streams_tests::{unique, wait_for, TestCluster};

const BIDS: usize = 12_000;

/// The input (bids, then a closer per auction, in one queue) and the
/// reference of every window, the closers' included.
fn setup(cluster: &TestCluster, input: &str) -> BTreeMap<(u64, i64), u64> {
    let mut data = bids(BIDS, 400);
    data.extend(closers());
    cluster.produce(input, 1, json(&data));
    q5_reference(&data)
}

fn start(cluster: &TestCluster, job: &str, input: &str, output: &str, dir: &std::path::Path) -> StreamRuntime {
    let builder = StreamBuilder::new(job);
    q5(&builder, input, CRASH_GRACE).sink(output, Json::<(Windowed<u64>, u64)>::new());
    let mut config = RuntimeConfig::new(cluster.client.clone());
    config.shards = 2;
    config.state_dir = Some(dir.to_path_buf());
    StreamRuntime::start(builder.build().expect("topology"), config).expect("start")
}

/// Waits until `jobs` together have committed the input queue and the 8
/// shuffle queues to their ends.
fn caught_up(jobs: &[&StreamRuntime]) -> bool {
    wait_for(Duration::from_secs(300), || {
        let metrics: Vec<_> = jobs.iter().map(|j| j.metrics()).collect();
        let queues: usize = metrics.iter().map(|m| m.lag.len()).sum();
        (queues >= 9 && metrics.iter().all(JobMetrics::caught_up)).then_some(())
    })
    .is_some()
}

/// Reads the results (while the job runs) until every window of the
/// reference is there, the last ones fired by idle firing, or 180 s pass.
fn await_results(
    cluster: &TestCluster,
    output: &str,
    reference: &BTreeMap<(u64, i64), u64>,
) -> BTreeMap<(u64, i64), u64> {
    let limit = Duration::from_secs(180);
    let read = cluster.read_until(output, reference.len(), limit, q5_results, |last, n| {
        eprintln!("{n} results for {} of {} windows", last.len(), reference.len());
        reference.keys().all(|k| last.contains_key(k))
    });
    match read {
        Ok((last, _)) => last,
        Err(last) => panic!(
            "not every window fired within 180 s: {} of {}",
            last.len(),
            reference.len()
        ),
    }
}

#[test]
fn windows_are_exact_after_the_job_process_is_killed_while_they_fire() {
    let cluster = TestCluster::start();
    let (input, output, job) = (unique("wf-bids"), unique("wf-counts"), unique("wf-job"));
    let reference = setup(&cluster, &input);
    let dir = tempfile::tempdir().expect("state dir");
    kill_job_midway(
        env!("CARGO_BIN_EXE_window-job"),
        &cluster,
        [&job, &input, &output],
        dir.path(),
        || cluster.topic_size(&output) >= (reference.len() / 3) as u64,
    );
    eprintln!("killed after {} results", cluster.topic_size(&output));

    let runtime = start(&cluster, &job, &input, &output, dir.path());
    let done = caught_up(&[&runtime]);
    assert!(
        done,
        "the restarted job did not catch up within 300 s: {:?}",
        runtime.metrics()
    );
    let results = await_results(&cluster, &output, &reference);
    let m = runtime.stop().expect("clean stop");
    assert_eq!(m.total(|s| s.late), 0, "no bid is late: {m:?}");
    assert_eq!(results, reference, "every window once, with its reference count");
}

#[test]
fn windows_are_exact_when_a_second_instance_takes_queues_over_while_they_fire() {
    let cluster = TestCluster::start();
    let (input, output, job) = (unique("wt-bids"), unique("wt-counts"), unique("wt-job"));
    let reference = setup(&cluster, &input);
    let (dir_a, dir_b) = (tempfile::tempdir().expect("dir"), tempfile::tempdir().expect("dir"));
    let a = start(&cluster, &job, &input, &output, dir_a.path());
    let midway = wait_for(Duration::from_secs(300), || {
        (cluster.topic_size(&output) >= (reference.len() / 3) as u64).then_some(())
    });
    assert!(midway.is_some(), "no progress within 300 s: {:?}", a.metrics());
    let b = start(&cluster, &job, &input, &output, dir_b.path());
    let done = caught_up(&[&a, &b]);
    assert!(
        done,
        "the two instances did not catch up within 300 s: {:?} {:?}",
        a.metrics(),
        b.metrics()
    );
    let results = await_results(&cluster, &output, &reference);
    let (ma, mb) = (a.stop().expect("stop a"), b.stop().expect("stop b"));
    assert!(
        mb.total(|s| s.restored) > 0 || mb.shards.iter().any(|s| !s.queues.is_empty()),
        "the second instance took queues: {mb:?}"
    );
    assert_eq!(ma.total(|s| s.late) + mb.total(|s| s.late), 0);
    assert_eq!(results, reference, "every window once, with its reference count");
}
