//! `merge`, `split` (branches and a default), `peek` and `reduce` on a real
//! broker: two order topics merged, split by amount into big orders (a sink)
//! and the rest (re-keyed by region and reduced to a total per region), a
//! peek counting every merged record on the way.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use rocketmq_streams::prelude::*;
use rocketmq_streams::RuntimeConfig;
use rocketmq_streams_tests::{unique, TestCluster};

const ORDERS: u64 = 3_000;
const REGIONS: u64 = 7;

/// Order `i` of `topic`: `region,amount`.
fn order(i: u64, offset: u64) -> String {
    format!("r{},{}", i % REGIONS, (i * 37 + offset) % 200)
}

fn parse(line: &str) -> (String, u64) {
    let (region, amount) = line.split_once(',').unwrap_or((line, "0"));
    (region.to_string(), amount.parse().unwrap_or(0))
}

#[test]
fn merged_split_peeked_and_reduced_on_the_broker() {
    let cluster = TestCluster::start();
    let (web, shop) = (unique("ops-web"), unique("ops-shop"));
    let (big, totals, job) = (unique("ops-big"), unique("ops-totals"), unique("ops-job"));
    cluster.produce(&web, 4, (0..ORDERS).map(|i| Bytes::from(order(i, 0))).collect());
    cluster.produce(&shop, 4, (0..ORDERS).map(|i| Bytes::from(order(i, 11))).collect());

    let peeked = Arc::new(AtomicU64::new(0));
    let builder = StreamBuilder::new(job.clone());
    let counter = peeked.clone();
    let branches = builder
        .source(&web, Utf8)
        .merge(&builder.source(&shop, Utf8))
        .peek(move |_| {
            counter.fetch_add(1, Ordering::Relaxed);
        })
        .map(|line: String| parse(&line))
        .split()
        .branch(|(_, amount): &(String, u64)| *amount >= 150)
        .default_branch();
    branches[0]
        .map(|(region, amount): (String, u64)| format!("{region},{amount}"))
        .sink(&big, Utf8);
    branches[1]
        .key_by(|(region, _): &(String, u64)| region.clone())
        .map(|(_, amount): (String, u64)| amount)
        .reduce(|a: &u64, b: &u64| a + b)
        .sink(&totals, Json::<(String, u64)>::new());
    let mut config = RuntimeConfig::new(cluster.client.clone());
    config.shards = 2;
    let runtime = StreamRuntime::start(builder.build().expect("topology"), config).expect("start");

    let mut big_expected: Vec<String> = Vec::new();
    let mut totals_expected: HashMap<String, u64> = HashMap::new();
    for line in (0..ORDERS)
        .map(|i| order(i, 0))
        .chain((0..ORDERS).map(|i| order(i, 11)))
    {
        let (region, amount) = parse(&line);
        if amount >= 150 {
            big_expected.push(line);
        } else {
            *totals_expected.entry(region).or_default() += amount;
        }
    }
    big_expected.sort();
    let small = 2 * ORDERS as usize - big_expected.len();

    let latest = |bodies: &[Bytes]| {
        let mut latest: HashMap<String, u64> = HashMap::new();
        for b in bodies {
            if let Ok((region, total)) = Json::<(String, u64)>::new().deserialize(b) {
                latest.insert(region, total);
            }
        }
        latest
    };
    let reduced = cluster.read_until(&totals, small, Duration::from_secs(180), latest, |l, _| {
        *l == totals_expected
    });
    let mut big_read: Vec<String> = cluster
        .read_topic(&big, big_expected.len(), Duration::from_secs(60))
        .iter()
        .map(|r| String::from_utf8_lossy(&r.body).into_owned())
        .collect();
    big_read.sort();
    let metrics = runtime.stop().expect("stop");

    assert_eq!(
        reduced.as_ref().map(|(l, _)| l),
        Ok(&totals_expected),
        "each region's last total is the sum of its small orders"
    );
    assert_eq!(big_read, big_expected, "every big order once, from both topics");
    assert_eq!(
        peeked.load(Ordering::Relaxed),
        2 * ORDERS,
        "peek saw every merged record once"
    );
    assert_eq!(metrics.total(|s| s.skipped), 0);
}
