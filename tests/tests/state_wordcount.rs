//! Word count on a real broker: key_by through the shuffle topic, counts in
//! RocksDB with a changelog in the state topic, 2 shards, on a corpus of
//! 1,000,000 words (50,000 distinct, skewed). Final counts must equal a
//! reference computed in the test, exactly — across a graceful stop and
//! restart, across a SIGKILL of the job's process, and when a second
//! instance takes queues (and their state) over midway.

use std::sync::Arc;
use std::time::Duration;

use rocketmq_streams::prelude::*;
use rocketmq_streams_tests::wordcount::{
    assert_counts, assert_output_counts, config, corpus, kill_job_midway, run_to_end, start, Latest, WORDS,
};
use rocketmq_streams_tests::{unique, wait_for, TestCluster};

fn shuffled(job: &StreamRuntime) -> u64 {
    job.metrics().total(|s| s.shuffled)
}

#[test]
fn word_count_equals_the_reference_across_a_graceful_restart() {
    let cluster = TestCluster::start();
    let (input, job) = (unique("wc-lines"), unique("wc-job"));
    let (lines, reference) = corpus();
    cluster.produce(&input, 8, lines);
    let dir = tempfile::tempdir().expect("state dir");
    let latest: Latest = Arc::default();

    // First run: stop midway, once half the words have been shuffled.
    let first = start(&job, &input, None, config(&cluster, dir.path(), 2), &latest);
    wait_for(Duration::from_secs(300), || {
        (shuffled(&first) >= (WORDS / 2) as u64).then_some(())
    });
    let m = first.stop().expect("clean stop");
    assert!(m.total(|s| s.checkpoints) > 0, "state was checkpointed: {m:?}");

    // Second run: restores its state and finishes, handing shuffled records
    // to writer shards this time (the mode is each instance's own choice).
    let mut writer_shards = config(&cluster, dir.path(), 2);
    writer_shards.shuffle_hand_off = ShuffleHandOff::WriterShard;
    let second = start(&job, &input, None, writer_shards, &latest);
    run_to_end(&[&second]);
    let m = second.stop().expect("clean stop");
    assert_counts(&latest, &reference);
    assert!(m.total(|s| s.shuffled) > 0);
    assert_eq!(m.total_lag(), 0, "everything committed: {:?}", m.lag);
}

#[test]
fn word_count_equals_the_reference_after_the_job_process_is_killed() {
    let cluster = TestCluster::start();
    let (input, output, job) = (unique("wc-lines"), unique("wc-counts"), unique("wc-job"));
    let (lines, reference) = corpus();
    cluster.produce(&input, 8, lines);
    let dir = tempfile::tempdir().expect("state dir");

    // The job in a process of its own, killed with SIGKILL once a third of
    // the words are counted: no stop, no final checkpoint, no commit.
    kill_job_midway(
        env!("CARGO_BIN_EXE_wordcount-job"),
        &cluster,
        [&job, &input, &output],
        dir.path(),
        || cluster.topic_size(&output) >= (WORDS / 3) as u64,
    );
    let before = cluster.topic_size(&output);

    // Finish in-process from what the killed job left: the local RocksDB
    // of its last checkpoint, the state topic, the committed offsets.
    let latest: Latest = Arc::default();
    let job = start(&job, &input, Some(&output), config(&cluster, dir.path(), 2), &latest);
    run_to_end(&[&job]);
    let m = job.stop().expect("clean stop");
    eprintln!(
        "after SIGKILL: {} updates before the kill; restart restored {} entries, dropped {} replayed records",
        before,
        m.total(|s| s.restored),
        m.total(|s| s.duplicates)
    );

    // The final count of a word is its last update in the output topic
    // (a word's updates all go to one queue, in order).
    assert_output_counts(&cluster, &output, &reference);
}

#[test]
fn word_count_stays_exact_when_a_second_instance_takes_queues_over() {
    let cluster = TestCluster::start();
    let (input, job) = (unique("wc-lines"), unique("wc-job"));
    let (lines, reference) = corpus();
    cluster.produce(&input, 8, lines);
    let (dir_a, dir_b) = (
        tempfile::tempdir().expect("state dir"),
        tempfile::tempdir().expect("state dir"),
    );
    let latest: Latest = Arc::default();

    let a = start(&job, &input, None, config(&cluster, dir_a.path(), 1), &latest);
    // Wait until the first instance has counted a quarter of the words and
    // checkpointed: there is state in the state topic to move.
    let counted = || latest.lock().unwrap_or_else(|p| p.into_inner()).values().sum::<u64>();
    let started = wait_for(Duration::from_secs(300), || {
        (counted() >= (WORDS / 4) as u64 && a.metrics().total(|s| s.checkpoints) >= 8).then_some(())
    });
    assert!(started.is_some(), "the first instance made no progress within 300 s");

    // Same job, another instance (its own state directory, as on another
    // machine): the rebalance gives it half the queues, their state is
    // restored from the state topic.
    let b = start(&job, &input, None, config(&cluster, dir_b.path(), 1), &latest);
    run_to_end(&[&a, &b]);
    let (ma, mb) = (a.stop().expect("clean stop"), b.stop().expect("clean stop"));
    assert_counts(&latest, &reference);
    assert!(!mb.lag.is_empty(), "the second instance was given queues: {:?}", ma.lag);
    assert!(
        mb.total(|s| s.restored) > 0,
        "the second instance restored moved state from the state topic: {mb:?}"
    );
}
