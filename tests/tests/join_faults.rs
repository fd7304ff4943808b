//! Joins stay exact when the job dies or moves: q8 as a left join
//! (`rocketmq_streams_tests::joins`) against its reference after the
//! job's process is killed with SIGKILL midway, and when a second
//! instance takes shuffle queues (their join state and stream times)
//! over midway. Results may be emitted twice, never differently: a
//! person is never emitted unmatched in a window where it matched.
//!
//! The events are in one input queue, at most 400 ms out of order, with a
//! grace of 1 s: none is late however the job is interrupted; windows
//! close (and unmatched persons come out, and state goes) while the job
//! runs, so the interruptions come while they do. The last windows close
//! by idle firing once the input is consumed.

use std::collections::BTreeSet;
use std::time::Duration;

use rocketmq_streams::prelude::*;
use rocketmq_streams_tests::joins::{
    await_join_state_gone, events, json, kept_join_records, q8, q8_reference, q8_results, Q8,
};
use rocketmq_streams_tests::wordcount::kill_job_midway;
use rocketmq_streams_tests::{unique, wait_for, TestCluster};

const EVENTS: usize = 12_000;

fn setup(cluster: &TestCluster, input: &str) -> BTreeSet<Q8> {
    let data = events(EVENTS, 400);
    cluster.produce(input, 1, json(&data));
    q8_reference(&data)
}

fn start(cluster: &TestCluster, job: &str, input: &str, output: &str, dir: &std::path::Path) -> StreamRuntime {
    let builder = StreamBuilder::new(job);
    q8(&builder, input, Duration::from_secs(2)).sink(output, Json::<Q8>::new());
    let mut config = RuntimeConfig::new(cluster.client.clone());
    config.shards = 2;
    config.state_dir = Some(dir.to_path_buf());
    StreamRuntime::start(builder.build().expect("topology"), config).expect("start")
}

/// Reads the results (while the job runs) until every one of the
/// reference is there, or 240 s pass.
fn await_results(cluster: &TestCluster, output: &str, reference: &BTreeSet<Q8>) -> BTreeSet<Q8> {
    let limit = Duration::from_secs(240);
    let read = cluster.read_until(output, reference.len(), limit, q8_results, |last, n| {
        eprintln!("{n} results, {} distinct of {}", last.len(), reference.len());
        reference.is_subset(last)
    });
    match read {
        Ok((last, _)) => last,
        Err(last) => panic!(
            "not every result came within 240 s: {} of {}",
            last.len(),
            reference.len()
        ),
    }
}

#[test]
fn joins_are_exact_after_the_job_process_is_killed_midway() {
    let cluster = TestCluster::start();
    let (input, output, job) = (unique("jf-events"), unique("jf-out"), unique("jf-job"));
    let reference = setup(&cluster, &input);
    let dir = tempfile::tempdir().expect("state dir");
    kill_job_midway(
        env!("CARGO_BIN_EXE_join-job"),
        &cluster,
        [&job, &input, &output],
        dir.path(),
        || cluster.topic_size(&output) >= (reference.len() / 3) as u64,
    );
    eprintln!("killed after {} results", cluster.topic_size(&output));

    let runtime = start(&cluster, &job, &input, &output, dir.path());
    let results = await_results(&cluster, &output, &reference);
    let gone = await_join_state_gone(&[&runtime]);
    let m = runtime.stop().expect("clean stop");
    assert_eq!(m.total(|s| s.late), 0, "no event is late: {m:?}");
    assert!(gone, "join state left after 60 s: {m:?}");
    assert_eq!(results, reference, "every result, with nothing else");
    assert_eq!(
        kept_join_records(dir.path()),
        0,
        "every window closed: no join state left"
    );
}

#[test]
fn joins_are_exact_when_a_second_instance_takes_queues_over_midway() {
    let cluster = TestCluster::start();
    let (input, output, job) = (unique("jt-events"), unique("jt-out"), unique("jt-job"));
    let reference = setup(&cluster, &input);
    let (dir_a, dir_b) = (tempfile::tempdir().expect("dir"), tempfile::tempdir().expect("dir"));
    let a = start(&cluster, &job, &input, &output, dir_a.path());
    let midway = wait_for(Duration::from_secs(300), || {
        (cluster.topic_size(&output) >= (reference.len() / 3) as u64).then_some(())
    });
    assert!(midway.is_some(), "no progress within 300 s: {:?}", a.metrics());
    let b = start(&cluster, &job, &input, &output, dir_b.path());
    let results = await_results(&cluster, &output, &reference);
    let gone = await_join_state_gone(&[&a, &b]);
    let (ma, mb) = (a.stop().expect("stop a"), b.stop().expect("stop b"));
    assert!(gone, "join state left after 60 s: {ma:?} {mb:?}");
    assert!(
        mb.total(|s| s.restored) > 0 || mb.shards.iter().any(|s| !s.queues.is_empty()),
        "the second instance took queues: {mb:?}"
    );
    assert_eq!(ma.total(|s| s.late) + mb.total(|s| s.late), 0);
    assert_eq!(results, reference, "every result, with nothing else");
}
