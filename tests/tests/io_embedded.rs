//! Two embedded RocketMQ instances run side by side in one process, each a
//! working cluster of its own, and stopping one leaves the other serving.

use std::time::{Duration, Instant};

use bytes::Bytes;
use rocketmq_streams_io::{Admin, ClientConfig, EmbeddedRocketMQ, IoRuntime, OutRecord, Sink, Source, SourceConfig};
use rocketmq_streams_tests::unique;

/// Creates a topic, sends one record and reads it back through `namesrv`.
fn round_trip(io: &std::sync::Arc<IoRuntime>, namesrv: &str, body: &str) -> Vec<Bytes> {
    let client = ClientConfig::new(namesrv);
    let io2 = io.clone();
    let body = Bytes::from(body.to_string());
    io.block_on(async move {
        let topic = unique("side-by-side");
        let admin = Admin::start(io2.clone(), &client).await.expect("admin");
        admin.create_topic(&topic, 2).await.expect("create topic");
        let queues = admin.route(&topic).await.expect("route");
        let sink = Sink::start(io2.clone(), &client, &unique("side-producer"))
            .await
            .expect("sink");
        sink.send(queues[0].clone(), vec![OutRecord::new(body)])
            .await
            .expect("bridge")
            .expect("send");
        let source = Source::start(io2, &client, SourceConfig::new(unique("side-group"), [topic]))
            .await
            .expect("source");
        let mut got = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(30);
        while got.is_empty() && Instant::now() < deadline {
            for b in source.poll().await.expect("poll") {
                got.extend(b.records.into_iter().map(|r| r.body));
            }
        }
        source.shutdown().await;
        sink.shutdown().await;
        got
    })
    .expect("round trip task")
}

#[test]
fn two_embedded_brokers_run_side_by_side_and_stop_independently() {
    rocketmq_streams_io::init_logging();
    let a = EmbeddedRocketMQ::start().expect("first broker");
    let b = EmbeddedRocketMQ::start().expect("second broker");
    assert_ne!(a.namesrv_addr(), b.namesrv_addr());
    assert_ne!(a.broker_addr(), b.broker_addr());

    let io = IoRuntime::new(1).expect("I/O runtime");
    assert_eq!(round_trip(&io, a.namesrv_addr(), "to-a"), vec![Bytes::from("to-a")]);
    assert_eq!(round_trip(&io, b.namesrv_addr(), "to-b"), vec![Bytes::from("to-b")]);

    // Stopping one broker leaves the other serving, and frees its port.
    let a_addr = a.namesrv_addr().to_string();
    a.stop();
    assert!(
        std::net::TcpStream::connect(&a_addr).is_err(),
        "the stopped name server no longer listens"
    );
    assert_eq!(
        round_trip(&io, b.namesrv_addr(), "still-b"),
        vec![Bytes::from("still-b")]
    );
}
