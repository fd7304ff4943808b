//! Word count on a real broker: key_by through the shuffle topic, counts in
//! RocksDB with a changelog in the state topic, 2 shards. Final counts must
//! equal a reference computed here, exactly — also across a graceful stop
//! and restart midway (state restored from the local checkpoint and the
//! state topic, replays dropped).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use rocketmq_streams::prelude::*;
use rocketmq_streams_tests::{unique, TestCluster};

const DISTINCT: usize = 50_000;
const WORDS: usize = 1_000_000;
const WORDS_PER_LINE: usize = 20;

/// Lines of a corpus: every one of `DISTINCT` words at least once, the rest
/// skewed (a few words very frequent, most rare), and the reference counts.
fn corpus() -> (Vec<Bytes>, HashMap<String, u64>) {
    let mut words = Vec::with_capacity(WORDS);
    words.extend((0..DISTINCT).map(|i| i as u64));
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    while words.len() < WORDS {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let u = (x >> 11) as f64 / (1u64 << 53) as f64;
        words.push((u * u * u * DISTINCT as f64) as u64);
    }
    let mut reference = HashMap::new();
    for w in &words {
        *reference.entry(format!("w{w}")).or_insert(0u64) += 1;
    }
    let lines = words
        .chunks(WORDS_PER_LINE)
        .map(|chunk| Bytes::from(chunk.iter().map(|w| format!("w{w}")).collect::<Vec<_>>().join(" ")))
        .collect();
    (lines, reference)
}

type Latest = Arc<Mutex<HashMap<String, u64>>>;

fn start(cluster: &TestCluster, job: &str, input: &str, state_dir: &std::path::Path, latest: &Latest) -> StreamRuntime {
    let builder = StreamBuilder::new(job);
    let sink = latest.clone();
    builder
        .source(input, Utf8)
        .flat_map(|line: String| line.split_whitespace().map(str::to_owned).collect::<Vec<_>>())
        .key_by(|w: &String| w.clone())
        .count()
        .to_rstream()
        .foreach(move |(w, c): &(String, u64)| {
            sink.lock().unwrap_or_else(|p| p.into_inner()).insert(w.clone(), *c);
        });
    let mut config = RuntimeConfig::new(cluster.client.clone());
    config.shards = 2;
    config.state_dir = Some(state_dir.to_path_buf());
    StreamRuntime::start(builder.build().expect("topology"), config).expect("start")
}

fn run_to_end(job: &StreamRuntime, latest: &Latest, reference: &HashMap<String, u64>) {
    let total: u64 = reference.values().sum();
    let deadline = Instant::now() + Duration::from_secs(600);
    while Instant::now() < deadline {
        let sum: u64 = latest.lock().unwrap_or_else(|p| p.into_inner()).values().sum();
        if sum >= total || job.has_stopped() {
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn assert_counts(latest: &Latest, reference: &HashMap<String, u64>) {
    let latest = latest.lock().unwrap_or_else(|p| p.into_inner());
    assert_eq!(latest.len(), reference.len(), "every distinct word counted");
    let wrong: Vec<_> = reference
        .iter()
        .filter(|(w, c)| latest.get(*w) != Some(c))
        .take(5)
        .map(|(w, c)| (w.clone(), *c, latest.get(w).copied()))
        .collect();
    assert!(
        wrong.is_empty(),
        "counts differ from the reference (word, expected, got): {wrong:?}"
    );
}

#[test]
#[ignore = "issue 4 in progress: the keyed stage does not yet checkpoint on the broker (stage 1 shuffles; stage 2 stalls) — run with --ignored"]
fn word_count_equals_the_reference_across_a_graceful_restart() {
    let cluster = TestCluster::start();
    let (input, job) = (unique("wc-lines"), unique("wc-job"));
    let (lines, reference) = corpus();
    let line_count = lines.len() as u64;
    cluster.produce(&input, 8, lines);
    let dir = tempfile::tempdir().expect("state dir");
    let latest: Latest = Arc::default();

    // First run: stop midway.
    let first = start(&cluster, &job, &input, dir.path(), &latest);
    let deadline = Instant::now() + Duration::from_secs(300);
    while first
        .metrics()
        .shards
        .iter()
        .filter(|s| s.records_in > 0)
        .map(|s| s.records_in)
        .sum::<u64>()
        < line_count / 2
        && Instant::now() < deadline
    {
        std::thread::sleep(Duration::from_millis(500));
        let m = first.metrics();
        eprintln!(
            "progress: in {} shuffled {} duplicates {} checkpoints {} restored {} skipped {}",
            m.total(|s| s.records_in),
            m.total(|s| s.shuffled),
            m.total(|s| s.duplicates),
            m.total(|s| s.checkpoints),
            m.total(|s| s.restored),
            m.total(|s| s.skipped)
        );
    }
    let m = first.stop().expect("clean stop");
    assert!(m.total(|s| s.checkpoints) > 0, "state was checkpointed: {m:?}");

    // Second run: restores its state and finishes.
    let second = start(&cluster, &job, &input, dir.path(), &latest);
    run_to_end(&second, &latest, &reference);
    let m = second.stop().expect("clean stop");
    assert_counts(&latest, &reference);
    assert!(m.total(|s| s.shuffled) > 0);
    assert_eq!(m.total_lag(), 0, "everything committed: {:?}", m.lag);
}
