//! Offset and assignment rules of the I/O layer on a real broker: the
//! rebalance reports every queue, commits cover all assigned queues, and an
//! admin reset moves a committed offset back so a restarted source re-reads
//! exactly from there.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use bytes::Bytes;
use rocketmq_streams_io::{Admin, AssignmentChange, Offset, OutRecord, QueueId, Sink, Source, SourceConfig};
use rocketmq_streams_tests::{unique, TestCluster};

const QUEUES: u32 = 4;
const PER_QUEUE: i64 = 10;

/// Polls until `n` records arrived or `limit` passed; returns them by queue.
async fn read(source: &mut Source, n: usize, limit: Duration) -> HashMap<QueueId, Vec<Offset>> {
    let mut got: HashMap<QueueId, Vec<Offset>> = HashMap::new();
    let mut count = 0;
    let deadline = Instant::now() + limit;
    while count < n && Instant::now() < deadline {
        for b in source.poll().await.expect("poll") {
            count += b.records.len();
            got.entry(b.queue.clone())
                .or_default()
                .extend(b.records.iter().map(|r| r.offset));
        }
    }
    got
}

#[test]
fn commits_cover_all_queues_and_admin_reset_rewinds_one_queue() {
    let cluster = TestCluster::start();
    let topic = unique("offsets");
    let group = unique("offsets-group");
    let (io, client) = (cluster.io.clone(), cluster.client.clone());
    let (t, g) = (topic.clone(), group.clone());
    cluster.block_on(async move {
        let admin = Admin::start(io.clone(), &client).await.expect("admin");
        admin.create_topic(&t, QUEUES).await.expect("create topic");
        let queues = admin.route(&t).await.expect("route");
        let sink = Sink::start(io.clone(), &client, &unique("offsets-producer"))
            .await
            .expect("sink");
        for q in &queues {
            let records = (0..PER_QUEUE)
                .map(|i| OutRecord::new(Bytes::from(format!("{q}-{i}"))))
                .collect();
            sink.send(q.clone(), records).await.expect("bridge").expect("send");
        }

        // 1. The rebalance hands every queue to the only instance.
        let mut source = Source::start(io.clone(), &client, SourceConfig::new(g.clone(), [t.clone()]))
            .await
            .expect("source");
        let mut assigned = HashSet::new();
        let deadline = Instant::now() + Duration::from_secs(30);
        while assigned.len() < QUEUES as usize && Instant::now() < deadline {
            for change in source.assignment_changes() {
                if let AssignmentChange::Assigned(q) = change {
                    assigned.insert(q);
                }
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert_eq!(assigned, queues.iter().cloned().collect::<HashSet<_>>());

        // 2. Everything is read from the first offset, in order per queue.
        let got = read(
            &mut source,
            (QUEUES as i64 * PER_QUEUE) as usize,
            Duration::from_secs(60),
        )
        .await;
        for q in &queues {
            let expected: Vec<Offset> = (0..PER_QUEUE).map(Offset).collect();
            assert_eq!(got.get(q), Some(&expected), "queue {q}");
        }

        // 3. Commit all, then commit one queue only: the others keep theirs.
        let all: HashMap<QueueId, Offset> = queues.iter().map(|q| (q.clone(), Offset(PER_QUEUE))).collect();
        source.commit(&all).await.expect("commit all");
        let one: HashMap<QueueId, Offset> = [(queues[0].clone(), Offset(PER_QUEUE))].into_iter().collect();
        source.commit(&one).await.expect("commit one");
        assert_eq!(source.committed(), &all);
        source.shutdown().await;

        let deadline = Instant::now() + Duration::from_secs(30);
        let mut committed = HashMap::new();
        while Instant::now() < deadline {
            committed = admin.committed_offsets(&g, &t).await.unwrap_or_default();
            if committed == all {
                break;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        assert_eq!(committed, all, "every queue's commit reached the broker");

        // 4. Rewind queue 1 to offset 3 with the admin reset; a restarted
        //    source re-reads exactly offsets 3..10 of that queue.
        admin.reset_offset(&g, &queues[1], Offset(3)).await.expect("reset");
        let mut source = Source::start(io.clone(), &client, SourceConfig::new(g.clone(), [t.clone()]))
            .await
            .expect("restart");
        let got = read(&mut source, (PER_QUEUE - 3) as usize, Duration::from_secs(60)).await;
        // Give a stray record of another queue the chance to show up.
        let extra = read(&mut source, 1, Duration::from_secs(3)).await;
        source.shutdown().await;
        sink.shutdown().await;
        let expected: HashMap<QueueId, Vec<Offset>> = [(queues[1].clone(), (3..PER_QUEUE).map(Offset).collect())]
            .into_iter()
            .collect();
        assert_eq!(got, expected);
        assert!(extra.is_empty(), "nothing else is re-read: {extra:?}");
    });
}

#[test]
fn a_send_acknowledges_the_offset_of_its_last_record() {
    let cluster = TestCluster::start();
    let topic = unique("send-offsets");
    let (io, client) = (cluster.io.clone(), cluster.client.clone());
    let acks = cluster.block_on(async move {
        let admin = Admin::start(io.clone(), &client).await.expect("admin");
        admin.create_topic(&topic, 1).await.expect("topic");
        let queue = admin.route(&topic).await.expect("route")[0].clone();
        let sink = Sink::start(io, &client, &unique("send-offsets-producer"))
            .await
            .expect("sink");
        let mut acks = Vec::new();
        for n in [1usize, 3, 2] {
            let records = (0..n).map(|i| OutRecord::new(Bytes::from(format!("r{i}")))).collect();
            let ack = sink.send(queue.clone(), records).await.expect("bridge").expect("send");
            acks.push((ack.last_chunk_offset.0, ack.last_offset.0));
        }
        sink.shutdown().await;
        acks
    });
    // Offsets 0 | 1 2 3 | 4 5: each ack names its first and last record's.
    assert_eq!(acks, [(0, 0), (1, 3), (4, 5)]);
}
