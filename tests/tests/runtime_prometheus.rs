//! The Prometheus endpoint of a running job on the embedded broker, scraped
//! over HTTP: the counters match what was sent (records in, out, skipped),
//! lag is reported per queue, checkpoints and latency histograms are there.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use bytes::Bytes;
use rocketmq_streams::prelude::*;
use rocketmq_streams::RuntimeConfig;
use rocketmq_streams_tests::{unique, wait_for, TestCluster};

const WORDS: u64 = 3_000;
const DISTINCT: u64 = 50;

/// `GET /metrics` over HTTP/1.1; the body.
fn scrape(addr: SocketAddr) -> String {
    let mut stream = TcpStream::connect(addr).expect("connect");
    stream.set_read_timeout(Some(Duration::from_secs(10))).expect("timeout");
    write!(
        stream,
        "GET /metrics HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .expect("request");
    let mut response = String::new();
    stream.read_to_string(&mut response).expect("response");
    let (head, body) = response.split_once("\r\n\r\n").expect("an HTTP response");
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(head.to_lowercase().contains("content-type: text/plain"), "{head}");
    body.to_string()
}

/// The sum over label sets of the samples of `name` (exact name, any labels).
fn total(text: &str, name: &str) -> f64 {
    text.lines()
        .filter(|l| l.starts_with(&format!("{name}{{")))
        .filter_map(|l| l.rsplit(' ').next().and_then(|v| v.parse::<f64>().ok()))
        .sum()
}

#[test]
fn the_metrics_endpoint_reports_what_the_job_did() {
    let cluster = TestCluster::start();
    let (input, output, job) = (unique("prom-in"), unique("prom-out"), unique("prom-job"));
    let mut bodies: Vec<Bytes> = (0..WORDS)
        .map(|i| Bytes::from(format!("\"w{}\"", i % DISTINCT)))
        .collect();
    bodies.push(Bytes::from_static(b"not json"));
    cluster.produce(&input, 4, bodies);

    let builder = StreamBuilder::new(job.clone());
    builder
        .source(&input, Json::<String>::new())
        .key_by(|w: &String| w.clone())
        .count()
        .sink(&output, Json::<(String, u64)>::new());
    let mut config = RuntimeConfig::new(cluster.client.clone());
    config.shards = 2;
    config.metrics_addr = Some("127.0.0.1:0".parse().expect("addr"));
    let runtime = StreamRuntime::start(builder.build().expect("topology"), config).expect("start");
    let addr = runtime.metrics_addr().expect("the endpoint is on");

    // Every word counted, then a commit interval for the histograms.
    let done = wait_for(Duration::from_secs(120), || {
        let m = runtime.metrics();
        (m.total(|s| s.records_out) == WORDS && m.caught_up() && m.lag.len() >= 12).then_some(())
    });
    assert!(done.is_some(), "the job counted every word: {:?}", runtime.metrics());
    let text = wait_for(Duration::from_secs(30), || {
        let text = scrape(addr);
        (total(&text, "rocketmq_streams_end_to_end_seconds_count") >= WORDS as f64).then_some(text)
    })
    .expect("the latencies of every input message were published");
    let metrics = runtime.metrics();

    let prefix = "rocketmq_streams_";
    // In: every input message plus every shuffled record; skipped: the one malformed.
    assert_eq!(
        total(&text, &format!("{prefix}records_in_total")),
        (2 * WORDS + 1) as f64
    );
    assert_eq!(total(&text, &format!("{prefix}shuffled_total")), WORDS as f64);
    assert_eq!(total(&text, &format!("{prefix}records_out_total")), WORDS as f64);
    assert_eq!(total(&text, &format!("{prefix}skipped_total")), 1.0);
    assert!(total(&text, &format!("{prefix}checkpoints_total")) >= 1.0);
    assert!(total(&text, &format!("{prefix}processing_seconds_count")) >= 1.0);
    assert!(total(&text, &format!("{prefix}checkpoint_seconds_count")) >= 1.0);
    let lag_lines: Vec<&str> = text
        .lines()
        .filter(|l| l.starts_with(&format!("{prefix}lag{{")))
        .collect();
    assert_eq!(
        lag_lines.len(),
        metrics.lag.len(),
        "one lag sample a queue: {lag_lines:?}"
    );
    assert!(
        lag_lines.iter().all(|l| l.contains(&format!("job=\"{job}\""))),
        "{lag_lines:?}"
    );
    let shards: HashMap<&str, ()> = text
        .lines()
        .filter(|l| l.starts_with(&format!("{prefix}records_in_total{{")))
        .filter_map(|l| l.split("shard=\"").nth(1)?.split('"').next())
        .map(|s| (s, ()))
        .collect();
    assert_eq!(shards.len(), 2, "one series a shard");
    runtime.stop().expect("stop");
}
