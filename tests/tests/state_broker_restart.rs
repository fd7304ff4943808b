//! The broker runs in a process of its own (`src/bin/test-broker.rs`, the
//! `rocketmq-streams-broker` command) and
//! is killed with SIGKILL and started again on the same store and ports
//! while the word count runs. The job rides the outage out (its sends retry
//! up to `RuntimeConfig::outage_deadline`), resumes, and its counts equal
//! a reference computed in the test.

use std::sync::Arc;
use std::time::Duration;

use rocketmq_streams_tests::processes::ServerProcess;
use rocketmq_streams_tests::wordcount::{assert_counts, config, corpus_of, run_to_end, start, Latest};
use rocketmq_streams_tests::{unique, wait_for, TestCluster};

const WORDS: usize = 300_000;
const DISTINCT: usize = 20_000;

#[test]
fn counts_are_exact_when_the_broker_is_killed_and_restarted_mid_stream() {
    let store = tempfile::tempdir().expect("broker store");
    let mut broker = ServerProcess::both(env!("CARGO_BIN_EXE_test-broker"), store.path());
    let addr = broker.namesrv_addr.clone();
    let cluster = TestCluster::external(&addr);
    let (input, job) = (unique("outage-lines"), unique("outage-job"));
    let (lines, reference) = corpus_of(WORDS, DISTINCT);
    cluster.produce(&input, 8, lines);
    let dir = tempfile::tempdir().expect("state dir");
    let latest: Latest = Arc::default();
    let job = start(&job, &input, None, config(&cluster, dir.path(), 2), &latest);
    let counted = || latest.lock().unwrap_or_else(|p| p.into_inner()).values().sum::<u64>();
    let midway = wait_for(Duration::from_secs(300), || {
        (counted() >= WORDS as u64 / 4).then_some(())
    });
    assert!(midway.is_some(), "the job made no progress within 300 s");

    broker.kill();
    std::thread::sleep(Duration::from_secs(3));
    broker.restart();
    assert_eq!(broker.namesrv_addr, addr, "the broker came back on its ports");

    run_to_end(&[&job]);
    let m = job.stop().expect("the job rode the outage out");
    assert_counts(&latest, &reference);
    eprintln!(
        "after the broker restart: {} records in, {} restored",
        m.total(|s| s.records_in),
        m.total(|s| s.restored)
    );
    drop(cluster);
    drop(broker);
}
