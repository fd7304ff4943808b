//! Every event a job logs names its job, shard and queue: the runtime's
//! spans (job, shard, queue) are enabled whatever the log level, so a
//! subscriber at `warn` prints them around each warning.

use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use rocketmq_streams::prelude::*;
use rocketmq_streams::RuntimeConfig;
use rocketmq_streams_tests::{unique, wait_for, TestCluster};

/// A writer into a shared buffer (what the subscriber prints).
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[test]
fn a_skipped_record_is_logged_with_its_job_shard_and_queue() {
    let captured = Captured::default();
    let writer = captured.clone();
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new(
            rocketmq_streams::io::DEFAULT_LOG_FILTER,
        ))
        .with_ansi(false)
        .with_writer(move || writer.clone())
        .init();

    let cluster = TestCluster::start();
    let (input, output, job) = (unique("trace-in"), unique("trace-out"), unique("trace-job"));
    let mut bodies: Vec<Bytes> = (0..20u64).map(|i| Bytes::from(i.to_string())).collect();
    bodies.push(Bytes::from_static(b"not a number"));
    cluster.produce(&input, 1, bodies);

    let builder = StreamBuilder::new(job.clone());
    builder
        .source(&input, Json::<u64>::new())
        .map(|n: u64| n * 2)
        .sink(&output, Json::<u64>::new());
    let mut config = RuntimeConfig::new(cluster.client.clone());
    config.shards = 1;
    let runtime = StreamRuntime::start(builder.build().expect("topology"), config).expect("start");
    let skipped = wait_for(Duration::from_secs(60), || {
        (runtime.metrics().total(|s| s.skipped) == 1).then_some(())
    });
    runtime.stop().expect("stop");
    assert!(skipped.is_some(), "the malformed record was skipped");

    let log = String::from_utf8_lossy(&captured.0.lock().unwrap_or_else(|p| p.into_inner())).into_owned();
    let line = log
        .lines()
        .find(|l| l.contains("record skipped"))
        .unwrap_or_else(|| panic!("no 'record skipped' line in:\n{log}"));
    assert!(
        line.contains(&format!("shard{{job={job} shard=0 instance=")),
        "names the job, shard and instance: {line}"
    );
    assert!(
        line.contains(&format!("queue{{queue={input}@")),
        "names the queue: {line}"
    );
}
