//! State moves with its queues while the job runs: instances join and leave
//! under load (1 → 3 → 2), and the job process is killed 20 times at
//! pseudo-random moments of one run. Counts must equal a reference computed
//! in the test, exactly.

use std::sync::Arc;
use std::time::{Duration, Instant};

use rocketmq_streams_tests::wordcount::{
    assert_counts, assert_output_counts, config, corpus_of, run_to_end, spawn_job, start, Latest,
};
use rocketmq_streams_tests::{unique, wait_for, TestCluster};

const WORDS: usize = 300_000;
const DISTINCT: usize = 20_000;
/// Words of the 1 → 3 → 2 test: enough that records still flow when the
/// third instance's rebalance (up to the client's 20 s) gives it queues.
const REBALANCE_WORDS: usize = 1_000_000;

fn counted(latest: &Latest) -> u64 {
    latest.lock().unwrap_or_else(|p| p.into_inner()).values().sum()
}

#[test]
fn counts_stay_exact_from_one_to_three_to_two_instances() {
    let cluster = TestCluster::start();
    let (input, job) = (unique("rb-lines"), unique("rb-job"));
    let (lines, reference) = corpus_of(REBALANCE_WORDS, DISTINCT);
    cluster.produce(&input, 8, lines);
    let dirs: Vec<_> = (0..3).map(|_| tempfile::tempdir().expect("state dir")).collect();
    let latest: Latest = Arc::default();

    let a = start(&job, &input, None, config(&cluster, dirs[0].path(), 1), &latest);
    let progressed = |at_least: u64| {
        wait_for(Duration::from_secs(300), || {
            (counted(&latest) >= at_least).then_some(())
        })
    };
    assert!(
        progressed(REBALANCE_WORDS as u64 / 10).is_some(),
        "one instance made no progress"
    );
    // Its state in the state topic before the others join (a checkpoint
    // round: one per shuffle queue), so the queues that move take state
    // with them. A job this fast can count a tenth of the words before
    // its first checkpoint; its new owners would then replay the shuffle
    // queues from their start instead: exact too, but no state moved.
    let checkpointed = wait_for(Duration::from_secs(300), || {
        (a.metrics().total(|s| s.checkpoints) >= 8).then_some(())
    });
    assert!(checkpointed.is_some(), "one instance never checkpointed its queues");
    // Two more join: the rebalance spreads the queues, and their state, over three.
    let b = start(&job, &input, None, config(&cluster, dirs[1].path(), 1), &latest);
    let c = start(&job, &input, None, config(&cluster, dirs[2].path(), 1), &latest);
    let before = counted(&latest);
    assert!(
        progressed(before + REBALANCE_WORDS as u64 / 10).is_some(),
        "three instances made no progress"
    );
    // The third is given queues once the rebalance reaches it: wait for
    // its first records before it leaves.
    let joined = wait_for(Duration::from_secs(300), || {
        (c.metrics().total(|s| s.records_in) > 0).then_some(())
    });
    assert!(joined.is_some(), "the third instance was given no queues within 300 s");
    // One leaves (gracefully): its queues and state go to the other two.
    let mc = c.stop().expect("clean stop");
    assert!(
        mc.total(|s| s.records_in) > 0,
        "the third instance was given queues: {mc:?}"
    );
    run_to_end(&[&a, &b]);
    let (ma, mb) = (a.stop().expect("clean stop"), b.stop().expect("clean stop"));
    assert_counts(&latest, &reference);
    assert!(
        ma.total(|s| s.restored) + mb.total(|s| s.restored) > 0,
        "queues moved with their state: {ma:?} {mb:?}"
    );
}

#[test]
fn counts_stay_exact_across_twenty_kills_of_the_job_process() {
    let cluster = TestCluster::start();
    let (input, output, job) = (unique("kill-lines"), unique("kill-counts"), unique("kill-job"));
    let (lines, reference) = corpus_of(WORDS, DISTINCT);
    cluster.produce(&input, 8, lines);
    let dir = tempfile::tempdir().expect("state dir");
    // Kill moments from 0.5 s to 4 s after the start, from a fixed seed:
    // some during the restore, some mid-batch, some mid-checkpoint.
    let mut x: u64 = 0x2545_F491_4F6C_DD1D;
    for kill in 0..20 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let after = Duration::from_millis(500 + x % 3_500);
        let mut child = spawn_job(
            env!("CARGO_BIN_EXE_wordcount-job"),
            &cluster.client.namesrv_addr,
            &job,
            &input,
            &output,
            dir.path(),
            None,
        );
        let started = Instant::now();
        while started.elapsed() < after {
            if let Ok(Some(status)) = child.try_wait() {
                panic!("kill {kill}: the job process exited on its own: {status}");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        child.kill().expect("SIGKILL the job process");
        child.wait().expect("reap the job process");
    }
    let latest: Latest = Arc::default();
    let job = start(&job, &input, Some(&output), config(&cluster, dir.path(), 2), &latest);
    run_to_end(&[&job]);
    job.stop().expect("clean stop");
    assert_output_counts(&cluster, &output, &reference);
}
