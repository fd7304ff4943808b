//! The broker runs in a process of its own (`src/bin/test-broker.rs`, the
//! `rocketmq-streams-broker` command) and
//! is killed with SIGKILL and started again on the same store and ports
//! while the word count runs. The job rides the outage out (its sends retry
//! up to `RuntimeConfig::outage_deadline`), resumes, and its counts equal
//! a reference computed in the test.

use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use rocketmq_streams_tests::wordcount::{assert_counts, config, corpus_of, run_to_end, start, Latest};
use rocketmq_streams_tests::{unique, wait_for, TestCluster};

const WORDS: usize = 300_000;
const DISTINCT: usize = 20_000;

/// A free loopback port `p` with `p - 2` free too (the broker's fast port).
fn free_ports() -> (u16, u16) {
    let namesrv = TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port();
    loop {
        let broker = TcpListener::bind("127.0.0.1:0")
            .expect("bind")
            .local_addr()
            .expect("addr")
            .port();
        if broker > 1026
            && broker != namesrv
            && broker - 2 != namesrv
            && TcpListener::bind(("127.0.0.1", broker - 2)).is_ok()
        {
            return (namesrv, broker);
        }
    }
}

/// Starts the broker process and waits for its address line.
fn start_broker(store: &std::path::Path, namesrv: u16, broker: u16) -> (Child, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_test-broker"))
        .args([
            "--namesrv-port",
            &namesrv.to_string(),
            "--broker-port",
            &broker.to_string(),
            "--store",
        ])
        .arg(store)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn the broker");
    let stdout = child.stdout.take().expect("broker stdout");
    let mut lines = BufReader::new(stdout).lines();
    let addr = loop {
        match lines.next() {
            Some(Ok(line)) => {
                if let Some(addr) = line.strip_prefix("ROCKETMQ_NAMESRV_ADDR=") {
                    break addr.to_string();
                }
            }
            _ => panic!("the broker process exited before it was ready: {:?}", child.wait()),
        }
    };
    (child, addr)
}

#[test]
fn counts_are_exact_when_the_broker_is_killed_and_restarted_mid_stream() {
    let store = tempfile::tempdir().expect("broker store");
    let (namesrv_port, broker_port) = free_ports();
    let (mut broker, addr) = start_broker(store.path(), namesrv_port, broker_port);
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

    broker.kill().expect("SIGKILL the broker");
    broker.wait().expect("reap the broker");
    std::thread::sleep(Duration::from_secs(3));
    let (mut broker, again) = start_broker(store.path(), namesrv_port, broker_port);
    assert_eq!(again, addr, "the broker came back on its ports");

    run_to_end(&[&job]);
    let m = job.stop().expect("the job rode the outage out");
    assert_counts(&latest, &reference);
    eprintln!(
        "after the broker restart: {} records in, {} restored",
        m.total(|s| s.records_in),
        m.total(|s| s.restored)
    );
    drop(cluster);
    let _ = broker.kill();
    let _ = broker.wait();
}
