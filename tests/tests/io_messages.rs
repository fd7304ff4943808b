//! Records as RocketMQ messages, on a real broker: a source subscribed by tag
//! expression sees only the tags it names, with each message's keys, tag
//! and user properties; a sink sets key, tag and properties, a keyed
//! message lands in the queue of its key's hash (RocketMQ's
//! `SelectMessageQueueByHash`), and every output carries its event time.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use bytes::Bytes;
use rocketmq_streams::prelude::*;
use rocketmq_streams::EVENT_TIME_PROPERTY;
use rocketmq_streams_io::OutRecord;
use rocketmq_streams_tests::{unique, TestCluster};

const ORDERS: usize = 600;
const CUSTOMERS: usize = 13;
const TAGS: [&str; 3] = ["big", "small", "urgent"];
const SINK_QUEUES: u32 = 8;

/// Java's `String.hashCode`, to check the queue a key went to.
fn java_hash(s: &str) -> i32 {
    s.encode_utf16()
        .fold(0i32, |h, u| h.wrapping_mul(31).wrapping_add(i32::from(u)))
}

#[test]
fn tags_keys_and_properties_travel_with_records() {
    let cluster = TestCluster::start();
    let (input, output, counts, job) = (
        unique("msg-in"),
        unique("msg-out"),
        unique("msg-counts"),
        unique("msg-job"),
    );
    let records: Vec<OutRecord> = (0..ORDERS)
        .map(|i| OutRecord {
            body: Bytes::from(format!("order-{i}")),
            key: Some(format!("c{}", i % CUSTOMERS)),
            tags: Some(TAGS[i % TAGS.len()].to_string()),
            properties: vec![(
                "channel".to_string(),
                if i % 2 == 0 { "web" } else { "shop" }.to_string(),
            )],
        })
        .collect();
    cluster.produce_records(&input, 4, records);

    type Row = (String, String, String, String);
    let builder = StreamBuilder::new(job.clone());
    let seen = builder
        .source_messages_with_tags(&input, "big || urgent", Utf8)
        .map(|m: Message<String>| -> Row {
            let channel = m.property("channel").unwrap_or("-").to_string();
            (m.value, m.keys.unwrap_or_default(), m.tags.unwrap_or_default(), channel)
        });
    seen.sink_with(
        &output,
        Json::<Row>::new(),
        Produced::new()
            .key(|r: &Row| r.1.clone())
            .tags(|r: &Row| format!("seen-{}", r.2))
            .property("channel", |r: &Row| r.3.clone()),
    );
    seen.key_by(|r: &Row| r.1.clone())
        .count()
        .sink(&counts, Json::<(String, u64)>::new());
    let mut config = RuntimeConfig::new(cluster.client.clone());
    config.shards = 2;
    config.default_topic_queues = SINK_QUEUES;
    let runtime = StreamRuntime::start(builder.build().expect("topology"), config).expect("start");

    let expected: Vec<Row> = (0..ORDERS)
        .filter(|i| TAGS[i % TAGS.len()] != "small")
        .map(|i| {
            (
                format!("order-{i}"),
                format!("c{}", i % CUSTOMERS),
                TAGS[i % TAGS.len()].to_string(),
                if i % 2 == 0 { "web" } else { "shop" }.to_string(),
            )
        })
        .collect();
    let mut per_customer: HashMap<String, u64> = HashMap::new();
    for r in &expected {
        *per_customer.entry(r.1.clone()).or_default() += 1;
    }
    let read = cluster.read_topic_queues(&output, expected.len(), Duration::from_secs(120));
    let count_updates = cluster.read_topic(&counts, expected.len(), Duration::from_secs(120));
    runtime.stop().expect("stop");

    let queues: BTreeMap<u32, ()> = read.iter().map(|(q, _)| (q.queue(), ())).collect();
    let mut rows: Vec<Row> = Vec::new();
    for (queue, r) in &read {
        let row: Row = Json::<Row>::new().deserialize(&r.body).expect("json");
        let property = |name: &str| r.properties.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone());
        assert_eq!(r.keys.as_deref(), Some(row.1.as_str()), "the key is set");
        assert_eq!(r.tags, Some(format!("seen-{}", row.2)), "the tag is set");
        assert_eq!(property("channel"), Some(row.3.clone()), "the property is set");
        let event_time: i64 = property(EVENT_TIME_PROPERTY)
            .expect("event time")
            .parse()
            .expect("number");
        assert!(
            event_time > 0 && event_time <= r.store_timestamp,
            "the input's born time"
        );
        let hash = java_hash(&row.1);
        assert_eq!(
            queue.queue() as i32,
            (hash % SINK_QUEUES as i32).abs(),
            "{} goes to the queue of its hash",
            row.1
        );
        rows.push(row);
    }
    rows.sort();
    let mut expected_sorted = expected.clone();
    expected_sorted.sort();
    assert_eq!(
        rows, expected_sorted,
        "only big and urgent orders, each once, with their metadata"
    );
    assert!(queues.len() > 1, "keys spread over queues: {queues:?}");

    let mut latest: HashMap<String, u64> = HashMap::new();
    for r in &count_updates {
        let (customer, n): (String, u64) = Json::new().deserialize(&r.body).expect("json");
        assert_eq!(
            r.keys.as_deref(),
            Some(customer.as_str()),
            "a grouped sink keys its messages"
        );
        latest.insert(customer, n);
    }
    assert_eq!(latest, per_customer);
}
