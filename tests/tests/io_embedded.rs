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

/// The inodes of the sockets this process has open (`/proc/self/fd`).
fn own_socket_inodes() -> std::collections::HashSet<u64> {
    let mut inodes = std::collections::HashSet::new();
    for entry in std::fs::read_dir("/proc/self/fd").expect("/proc/self/fd").flatten() {
        if let Ok(target) = std::fs::read_link(entry.path()) {
            let t = target.to_string_lossy();
            if let Some(n) = t.strip_prefix("socket:[").and_then(|r| r.strip_suffix(']')) {
                if let Ok(n) = n.parse() {
                    inodes.insert(n);
                }
            }
        }
    }
    inodes
}

/// Listening TCP sockets of this process: (local address in hex as
/// `/proc/net/tcp*` gives it, port).
fn own_listeners() -> Vec<(String, u16)> {
    let inodes = own_socket_inodes();
    let mut out = Vec::new();
    for file in ["/proc/net/tcp", "/proc/net/tcp6"] {
        let Ok(table) = std::fs::read_to_string(file) else {
            continue;
        };
        for line in table.lines().skip(1) {
            let f: Vec<&str> = line.split_whitespace().collect();
            // sl local_address rem_address st tx:rx tr:when retrnsmt uid timeout inode
            if f.len() < 10 || f[3] != "0A" {
                continue;
            }
            let Ok(inode) = f[9].parse::<u64>() else { continue };
            if !inodes.contains(&inode) {
                continue;
            }
            let (addr, port) = f[1].split_once(':').expect("addr:port");
            out.push((addr.to_string(), u16::from_str_radix(port, 16).expect("hex port")));
        }
    }
    out
}

#[test]
fn every_listener_of_the_embedded_broker_is_on_loopback() {
    rocketmq_streams_io::init_logging();
    let mq = EmbeddedRocketMQ::start().expect("broker");
    let io = IoRuntime::new(1).expect("I/O runtime");
    // A round trip, so every service that listens has started.
    assert_eq!(round_trip(&io, mq.namesrv_addr(), "up"), vec![Bytes::from("up")]);
    let listeners = own_listeners();
    let namesrv_port: u16 = mq
        .namesrv_addr()
        .rsplit_once(':')
        .and_then(|(_, p)| p.parse().ok())
        .expect("namesrv port");
    assert!(
        listeners.iter().any(|(_, p)| *p == namesrv_port),
        "the name server's socket was found: {listeners:?}"
    );
    // 127.0.0.1 is 0100007F in /proc/net/tcp; ::1 is 00000000000000000000000001000000.
    let loopback = |a: &str| a == "0100007F" || a == "00000000000000000000000001000000";
    let open: Vec<_> = listeners.iter().filter(|(a, _)| !loopback(a)).collect();
    eprintln!("listening sockets of the process: {listeners:?}");
    assert!(open.is_empty(), "listeners beyond loopback: {open:?}");
    mq.stop();
}
