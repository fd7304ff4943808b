//! Fault injection at each step of the commit protocol, on a real broker.
//!
//! The word-count job runs as a process of its own with a failpoint
//! (`RMQ_STREAMS_FAILPOINT`, see `rocketmq_streams_state::failpoint`) that
//! aborts it at one named step of a checkpoint, or in the middle of a
//! restore. Then the job is finished in-process from what the aborted one
//! left, and the final counts must equal a reference computed in the test.
//! Last, a new instance with an *empty* state directory restores every
//! queue from the state topic alone and counts one more line holding every
//! word once: each word's update must be its reference count plus one.

use std::os::unix::process::ExitStatusExt;
use std::sync::Arc;
use std::time::Duration;

use rocketmq_streams_tests::wordcount::{
    assert_output_counts, assert_state_by_probe, config, corpus_of, run_to_end, spawn_job, start, Latest,
};
use rocketmq_streams_tests::{unique, wait_for, TestCluster};

/// Words of the corpus (20 a line): a few seconds of work for the job
/// process, which checkpoints every 100 ms with a failpoint set (see
/// `spawn_job`): dozens of checkpoints.
const WORDS: usize = 200_000;
const DISTINCT: usize = 10_000;

/// Runs the job process until its failpoint aborts it.
fn run_until_aborted(cluster: &TestCluster, names: &Names, dir: &std::path::Path, failpoint: &str) {
    let mut child = spawn_job(
        env!("CARGO_BIN_EXE_wordcount-job"),
        &cluster.client.namesrv_addr,
        &names.job,
        &names.input,
        &names.output,
        dir,
        Some(failpoint),
    );
    let status = wait_for(Duration::from_secs(300), || {
        child.try_wait().expect("wait for the job process")
    });
    let Some(status) = status else {
        let _ = child.kill();
        let _ = child.wait();
        panic!("the job process did not reach failpoint {failpoint} within 300 s");
    };
    assert_eq!(
        status.signal(),
        Some(libc::SIGABRT),
        "the job process was aborted at {failpoint}, not {status}"
    );
}

struct Names {
    job: String,
    input: String,
    output: String,
}

/// Aborts the job at each of `failpoints` in turn (each run restoring what
/// the one before left), finishes it, and checks the counts twice: in the
/// output topic, and restored from the state topic alone.
fn crash_and_recover(failpoints: &[&str]) {
    let cluster = TestCluster::start();
    let names = Names {
        job: unique("fault-job"),
        input: unique("fault-lines"),
        output: unique("fault-counts"),
    };
    let (lines, reference) = corpus_of(WORDS, DISTINCT);
    cluster.produce(&names.input, 8, lines);
    let dir = tempfile::tempdir().expect("state dir");
    for failpoint in failpoints {
        run_until_aborted(&cluster, &names, dir.path(), failpoint);
    }

    // Finish in-process from what the aborted runs left.
    let latest: Latest = Arc::default();
    let job = start(
        &names.job,
        &names.input,
        Some(&names.output),
        config(&cluster, dir.path(), 2),
        &latest,
    );
    run_to_end(&[&job]);
    job.stop().expect("clean stop");
    assert_output_counts(&cluster, &names.output, &reference);

    // A new instance with no local state: everything from the state topic.
    let empty = tempfile::tempdir().expect("state dir");
    let probe: Latest = Arc::default();
    let job = start(
        &names.job,
        &names.input,
        None,
        config(&cluster, empty.path(), 2),
        &probe,
    );
    assert_state_by_probe(&cluster, &names.input, &probe, &reference);
    let m = job.stop().expect("clean stop");
    assert!(m.total(|s| s.restored) > 0, "state came from the state topic: {m:?}");
}

#[test]
fn counts_are_exact_after_an_abort_before_the_changelog() {
    crash_and_recover(&["checkpoint.before-changelog@12"]);
}

#[test]
fn counts_are_exact_after_an_abort_between_changelog_and_marker() {
    crash_and_recover(&["checkpoint.before-marker@12"]);
}

#[test]
fn counts_are_exact_after_an_abort_between_marker_and_rocksdb() {
    crash_and_recover(&["checkpoint.before-rocksdb@12"]);
}

#[test]
fn counts_are_exact_after_an_abort_between_rocksdb_and_offset_commit() {
    crash_and_recover(&["checkpoint.before-offset-commit@12"]);
}

/// The restore of the second run replays, on each of its 8 shuffle
/// queues, at least its own claim, and more on a queue whose last
/// checkpoint was cut before its marker: the 5th replayed message comes
/// before the restores end. (With one changelog message per key, this was
/// `@40`; a checkpoint's changes are now a few batch messages, and a run
/// whose restores replayed fewer than 40 messages never reached it.)
#[test]
fn counts_are_exact_after_an_abort_during_a_restore() {
    crash_and_recover(&["checkpoint.before-marker@12", "restore.replay@5"]);
}
