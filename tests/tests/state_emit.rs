//! `Emit::OnCommit` on a real broker: a word count whose updates go out
//! once per commit per key ends in the same state and the same final
//! outputs as the reference (which `state_wordcount.rs` checks
//! `Emit::OnUpdate` against), through a graceful restart, with far fewer
//! outputs than words.

use std::sync::Arc;
use std::time::Duration;

use rocketmq_streams::prelude::*;
use rocketmq_streams_tests::wordcount::{
    assert_output_counts, assert_state_by_probe, config, corpus_of, record, run_to_end, Latest,
};
use rocketmq_streams_tests::{unique, wait_for, TestCluster};

const WORDS: usize = 200_000;
const DISTINCT: usize = 2_000;

fn start(job: &str, input: &str, output: &str, config: RuntimeConfig, latest: &Latest) -> StreamRuntime {
    let builder = StreamBuilder::new(job);
    let counts = builder
        .source(input, Utf8)
        .flat_map(|line: String| line.split_whitespace().map(str::to_owned).collect::<Vec<_>>())
        .key_by(|w: &String| w.clone())
        .emit(Emit::OnCommit)
        .count()
        .to_rstream();
    let sink = latest.clone();
    counts.foreach(move |(w, c): &(String, u64)| record(&sink, w, *c));
    counts.sink(output, Json::<(String, u64)>::new());
    StreamRuntime::start(builder.build().expect("topology"), config).expect("start")
}

#[test]
fn on_commit_ends_in_the_reference_state_and_outputs_with_fewer_outputs() {
    let cluster = TestCluster::start();
    let (input, output, job) = (unique("emit-lines"), unique("emit-counts"), unique("emit-job"));
    let (lines, reference) = corpus_of(WORDS, DISTINCT);
    cluster.produce(&input, 8, lines);
    let dir = tempfile::tempdir().expect("state dir");
    let latest: Latest = Arc::default();

    // First run: stopped once some counts went out (a stop flushes and
    // checkpoints); the second restores the state and finishes.
    // A commit every 5 s: a flush emits each key updated since the last
    // one, so at most DISTINCT outputs per 5 s, however slow the machine.
    let config = || {
        let mut c = config(&cluster, dir.path(), 2);
        c.commit_interval = Duration::from_secs(5);
        c
    };
    let first = start(&job, &input, &output, config(), &latest);
    let midway = wait_for(Duration::from_secs(300), || {
        (cluster.topic_size(&output) >= DISTINCT as u64 / 2).then_some(())
    });
    assert!(midway.is_some(), "no counts went out within 300 s");
    first.stop().expect("clean stop");
    let second = start(&job, &input, &output, config(), &latest);
    run_to_end(&[&second]);

    let outputs = cluster.topic_size(&output);
    assert_output_counts(&cluster, &output, &reference);
    assert!(
        outputs < (WORDS / 2) as u64,
        "{outputs} outputs for {WORDS} words: OnCommit should emit about one per key per commit"
    );
    // The state itself: one more line of every word must count each to
    // its reference count plus one.
    assert_state_by_probe(&cluster, &input, &latest, &reference);
    second.stop().expect("clean stop");
}
