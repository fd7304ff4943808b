//! Keyed aggregations on a real broker: `sum`, `min`, `max`, `avg` and a
//! custom accumulator over one keyed stream, each against a reference; a
//! malformed message in the shuffle topic and one in the state topic are
//! skipped by the policy and counted, and nothing else is lost.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use rocketmq_streams::prelude::*;
use rocketmq_streams_tests::{unique, wait_for, TestCluster};
use serde::{Deserialize, Serialize};

const READINGS: usize = 20_000;
const SENSORS: usize = 50;

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Reading {
    sensor: String,
    value: i64,
}

/// Custom accumulator: the spread (max − min) of a sensor's readings.
struct Spread;

impl Accumulator<Reading> for Spread {
    type State = Option<(i64, i64)>;
    type Output = i64;
    fn init(&self) -> Self::State {
        None
    }
    fn add(&self, state: &mut Self::State, r: &Reading) {
        *state = Some(match *state {
            None => (r.value, r.value),
            Some((lo, hi)) => (lo.min(r.value), hi.max(r.value)),
        });
    }
    fn result(&self, state: &Self::State) -> i64 {
        state.map_or(0, |(lo, hi)| hi - lo)
    }
}

fn readings() -> Vec<Reading> {
    let mut x: u64 = 0x2545_F491_4F6C_DD1D;
    (0..READINGS)
        .map(|i| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            Reading {
                sensor: format!("s{}", i % SENSORS),
                value: (x % 2001) as i64 - 1000,
            }
        })
        .collect()
}

type Results<T> = Arc<Mutex<HashMap<String, T>>>;

fn keep<T: Clone + Send + 'static>(results: &Results<T>) -> impl Fn(&(String, T)) + Send + Sync + 'static {
    let results = results.clone();
    move |(k, v): &(String, T)| {
        results
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(k.clone(), v.clone());
    }
}

fn get<T: Clone>(results: &Results<T>) -> HashMap<String, T> {
    results.lock().unwrap_or_else(|p| p.into_inner()).clone()
}

#[test]
fn keyed_aggregations_match_their_references_and_malformed_state_is_counted() {
    let cluster = TestCluster::start();
    let (input, job) = (unique("agg-readings"), unique("agg-job"));
    let data = readings();
    cluster.produce(
        &input,
        8,
        data.iter()
            .map(|r| Bytes::from(serde_json::to_vec(r).expect("json")))
            .collect(),
    );
    // Garbage where the job's own topics are: one message in its shuffle
    // topic, one in its state topic (read when a shuffle queue's state is
    // restored). Both topics exist already, so the job uses them as found.
    cluster.produce(
        &format!("{job}-shuffle"),
        8,
        vec![Bytes::from_static(b"not a shuffled record")],
    );
    cluster.produce(
        &format!("{job}-state"),
        8,
        vec![Bytes::from_static(b"\xffnot a state change")],
    );

    let (sums, mins, maxs): (Results<i64>, Results<i64>, Results<i64>) = Default::default();
    let (avgs, spreads): (Results<f64>, Results<i64>) = Default::default();
    let builder = StreamBuilder::new(&job);
    let by_sensor = builder
        .source(&input, Json::<Reading>::new())
        .key_by(|r: &Reading| r.sensor.clone());
    by_sensor.sum(|r: &Reading| r.value).to_rstream().foreach(keep(&sums));
    by_sensor.min(|r: &Reading| r.value).to_rstream().foreach(keep(&mins));
    by_sensor.max(|r: &Reading| r.value).to_rstream().foreach(keep(&maxs));
    by_sensor
        .avg(|r: &Reading| r.value as f64)
        .to_rstream()
        .foreach(keep(&avgs));
    by_sensor.aggregate(Spread).to_rstream().foreach(keep(&spreads));
    let mut config = RuntimeConfig::new(cluster.client.clone());
    config.shards = 2;
    let dir = tempfile::tempdir().expect("state dir");
    config.state_dir = Some(dir.path().to_path_buf());
    let runtime = StreamRuntime::start(builder.build().expect("topology"), config).expect("start");
    let done = wait_for(Duration::from_secs(300), || {
        let m = runtime.metrics();
        (m.lag.len() >= 16 && m.caught_up() && get(&spreads).len() == SENSORS).then_some(())
    });
    let m = runtime.stop().expect("clean stop");
    assert!(done.is_some(), "the job did not finish within 300 s: {m:?}");

    // References, computed without the engine.
    let mut by: HashMap<String, Vec<i64>> = HashMap::new();
    for r in &data {
        by.entry(r.sensor.clone()).or_default().push(r.value);
    }
    let (sums, mins, maxs, avgs, spreads) = (get(&sums), get(&mins), get(&maxs), get(&avgs), get(&spreads));
    assert_eq!(sums.len(), SENSORS);
    for (sensor, values) in &by {
        let (lo, hi) = (
            *values.iter().min().expect("values"),
            *values.iter().max().expect("values"),
        );
        let sum: i64 = values.iter().sum();
        assert_eq!(sums.get(sensor), Some(&sum), "sum of {sensor}");
        assert_eq!(mins.get(sensor), Some(&lo), "min of {sensor}");
        assert_eq!(maxs.get(sensor), Some(&hi), "max of {sensor}");
        assert_eq!(spreads.get(sensor), Some(&(hi - lo)), "spread of {sensor}");
        let avg = sum as f64 / values.len() as f64;
        let got = avgs.get(sensor).copied().unwrap_or(f64::NAN);
        assert!((got - avg).abs() < 1e-9, "avg of {sensor}: {got} vs {avg}");
    }
    // The garbage: counted as skipped (the default policy), one each.
    assert_eq!(
        m.total(|s| s.skipped),
        2,
        "the malformed shuffle and state messages: {m:?}"
    );
}

/// Shuffle queue *i* keeps its state in state queue *i*: a state topic with
/// fewer queues (created before, or by someone else) would silently put two
/// shuffle queues' state in one. The job refuses to start, saying why.
#[test]
fn a_state_topic_with_another_queue_count_is_refused_at_start() {
    let cluster = TestCluster::start();
    let (input, job) = (unique("mismatch-in"), unique("mismatch-job"));
    cluster.produce(&input, 2, vec![Bytes::from_static(b"a")]);
    cluster.produce(&format!("{job}-state"), 4, Vec::new());
    let builder = StreamBuilder::new(&job);
    builder
        .source(&input, Utf8)
        .key_by(|w: &String| w.clone())
        .count()
        .to_rstream()
        .foreach(|_: &(String, u64)| {});
    let mut config = RuntimeConfig::new(cluster.client.clone());
    config.shuffle_queues = 8;
    let dir = tempfile::tempdir().expect("state dir");
    config.state_dir = Some(dir.path().to_path_buf());
    let err = match StreamRuntime::start(builder.build().expect("topology"), config) {
        Ok(job) => {
            let _ = job.stop();
            panic!("a job whose state topic has 4 queues for 8 shuffle queues started");
        }
        Err(e) => e.to_string(),
    };
    assert!(
        err.contains("has 8 queues") && err.contains("has 4"),
        "the error names both counts: {err}"
    );
}
