//! An old owner that comes back: two job processes share the queues; one is
//! frozen with SIGSTOP until the broker has dropped it and the other has
//! taken its queues (and claimed their state), then it is resumed and runs
//! on for a while with what it held — batches, cached state, a checkpoint
//! due. Its late writes must not count: a third instance that restores
//! every queue from the state topic alone has exact counts.

use std::process::Child;
use std::sync::Arc;
use std::time::Duration;

use rocketmq_streams_io::EmbeddedConfig;
use rocketmq_streams_tests::wordcount::{assert_state_by_probe, config, corpus_of, run_to_end, start, Latest};
use rocketmq_streams_tests::{unique, wait_for, TestCluster};

const WORDS: usize = 400_000;
const DISTINCT: usize = 20_000;
/// The broker drops a client this long after its last heartbeat.
const CLIENT_EXPIRY: Duration = Duration::from_secs(15);

fn spawn(cluster: &TestCluster, job: &str, input: &str, output: &str, dir: &std::path::Path) -> Child {
    std::process::Command::new(env!("CARGO_BIN_EXE_wordcount-job"))
        .args([&cluster.client.namesrv_addr, job, input, output])
        .arg(dir)
        .env("ROCKETMQ_STREAMS_TEST_METRICS", metrics_file(dir))
        // Heartbeat every 10 s (the client's minimum) and rebalance every
        // 2 s, so a frozen instance's queues move within ~40 s.
        .env("WORDCOUNT_HEARTBEAT_MS", "10000")
        .env("rocketmq.client.rebalance.waitInterval", "2000")
        .stdout(std::process::Stdio::null())
        .spawn()
        .expect("spawn the job process")
}

/// Where the job process in `dir` writes its counters.
fn metrics_file(dir: &std::path::Path) -> std::path::PathBuf {
    dir.join("metrics.txt")
}

/// How often the job process in `dir` found a queue claimed by a newer owner.
fn fenced(dir: &std::path::Path) -> u64 {
    std::fs::read_to_string(metrics_file(dir))
        .ok()
        .and_then(|t| t.strip_prefix("fenced ")?.trim().parse().ok())
        .unwrap_or(0)
}

fn signal(child: &Child, sig: libc::c_int) {
    let pid = libc::pid_t::try_from(child.id()).expect("pid");
    // SAFETY: kill(2) with a pid this test spawned and has not reaped.
    let rc = unsafe { libc::kill(pid, sig) };
    assert_eq!(rc, 0, "kill({pid}, {sig}) failed");
}

#[test]
fn a_resumed_old_owner_cannot_change_the_state_of_queues_it_lost() {
    let cluster = TestCluster::start_with(EmbeddedConfig {
        client_expiry: CLIENT_EXPIRY,
        ..EmbeddedConfig::default()
    });
    let (input, output, job) = (unique("owner-lines"), unique("owner-counts"), unique("owner-job"));
    let (lines, reference) = corpus_of(WORDS, DISTINCT);
    cluster.produce(&input, 8, lines);
    let (dir_a, dir_b) = (tempfile::tempdir().expect("dir"), tempfile::tempdir().expect("dir"));
    let mut a = spawn(&cluster, &job, &input, &output, dir_a.path());
    let mut b = spawn(&cluster, &job, &input, &output, dir_b.path());
    let started = wait_for(Duration::from_secs(300), || {
        (cluster.topic_size(&output) >= (WORDS / 20) as u64).then_some(())
    });
    assert!(started.is_some(), "the two instances made no progress within 300 s");

    // Freeze a; the broker drops it after CLIENT_EXPIRY (scanned every 10 s,
    // counted from a heartbeat up to 10 s old), b's next rebalance takes its
    // queues and b claims their state.
    signal(&a, libc::SIGSTOP);
    std::thread::sleep(CLIENT_EXPIRY + Duration::from_secs(25));
    // a runs on with what it held; its checkpoints meet b's claims.
    signal(&a, libc::SIGCONT);
    std::thread::sleep(Duration::from_secs(10));
    // It did meet a fence (issue 28: the test once passed without proving it).
    let a_fenced = fenced(dir_a.path());
    assert!(
        a_fenced >= 1,
        "the resumed owner never found its queues claimed (fenced {a_fenced})"
    );
    for child in [&mut a, &mut b] {
        signal(child, libc::SIGTERM);
        let stopped = wait_for(Duration::from_secs(60), || child.try_wait().expect("wait"));
        if stopped.is_none() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    // A third instance, no local state: finishes the input, then counts a
    // line holding every word once. Each update must be the reference + 1.
    let fresh = tempfile::tempdir().expect("dir");
    let latest: Latest = Arc::default();
    let c = start(&job, &input, None, config(&cluster, fresh.path(), 2), &latest);
    run_to_end(&[&c]);
    assert_state_by_probe(&cluster, &input, &latest, &reference);
    c.stop().expect("clean stop");
}
