//! The word count the state tests run: a generated corpus with its
//! reference counts, and the job itself.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use rocketmq_streams::prelude::*;

/// Distinct words of the corpus.
pub const DISTINCT: usize = 50_000;
/// Words in the corpus.
pub const WORDS: usize = 1_000_000;
/// Words per input line (one message per line).
pub const WORDS_PER_LINE: usize = 20;

/// Lines of a corpus of `WORDS` words: every one of `DISTINCT` words at least
/// once, the rest skewed (a few words very frequent, most rare), and the
/// reference counts, computed here independently of the engine.
pub fn corpus() -> (Vec<Bytes>, HashMap<String, u64>) {
    corpus_of(WORDS, DISTINCT)
}

/// Like [`corpus`], with `total` words of which `distinct` differ.
pub fn corpus_of(total: usize, distinct: usize) -> (Vec<Bytes>, HashMap<String, u64>) {
    let mut words = Vec::with_capacity(total);
    words.extend((0..distinct).map(|i| i as u64));
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    while words.len() < total {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let u = (x >> 11) as f64 / (1u64 << 53) as f64;
        words.push((u * u * u * distinct as f64) as u64);
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

/// `source(input) → flat_map(words) → key_by(word) → count → to_rstream`:
/// the stream of count updates `(word, count)`.
pub fn word_count(builder: &StreamBuilder, input: &str) -> RStream<(String, u64)> {
    builder
        .source(input, Utf8)
        .flat_map(|line: String| line.split_whitespace().map(str::to_owned).collect::<Vec<_>>())
        .key_by(|w: &String| w.clone())
        .count()
        .to_rstream()
}

/// The words whose count differs from the reference, at most five, as
/// `(word, expected, got)`; empty when every count is right.
pub fn wrong_counts(got: &HashMap<String, u64>, reference: &HashMap<String, u64>) -> Vec<(String, u64, Option<u64>)> {
    let mut wrong: Vec<_> = reference
        .iter()
        .filter(|(w, c)| got.get(*w) != Some(c))
        .map(|(w, c)| (w.clone(), *c, got.get(w).copied()))
        .collect();
    wrong.extend(
        got.iter()
            .filter(|(w, _)| !reference.contains_key(*w))
            .map(|(w, c)| (w.clone(), 0, Some(*c))),
    );
    wrong.truncate(5);
    wrong
}

/// The job process of `src/bin/wordcount-job.rs` (`bin`: its path, which
/// integration tests know as `env!("CARGO_BIN_EXE_wordcount-job")`),
/// started on the name server `namesrv` with its state in `state_dir`;
/// `failpoint` (a step of `rocketmq_streams_state::FAILPOINTS`, optionally
/// `@n`) makes it abort there.
///
/// # Panics
///
/// If the process cannot be started.
pub fn spawn_job(
    bin: &str,
    namesrv: &str,
    job: &str,
    input: &str,
    output: &str,
    state_dir: &std::path::Path,
    failpoint: Option<&str>,
) -> std::process::Child {
    let mut command = std::process::Command::new(bin);
    command
        .args([namesrv, job, input, output])
        .arg(state_dir)
        .stdout(std::process::Stdio::null());
    if let Some(step) = failpoint {
        command.env("RMQ_STREAMS_FAILPOINT", step);
        // Checkpoints every 100 ms: a failpoint at the n-th checkpoint is
        // reached while the input still flows, however fast the job runs.
        // At 1 s, a shuffle queue of framed records gets a few batches in
        // all, and a job that finished within fewer checkpoints than n
        // idled with its failpoint never reached.
        command.env("WORDCOUNT_COMMIT_MS", "100");
    }
    command.spawn().expect("spawn the job process")
}

/// Runs the job binary `bin` (see [`spawn_job`]; no failpoint) on
/// `cluster` until `midway` holds, then kills it with SIGKILL (see
/// [`kill_midway`](crate::kill_midway)).
///
/// # Panics
///
/// As [`kill_midway`](crate::kill_midway).
pub fn kill_job_midway(
    bin: &str,
    cluster: &crate::TestCluster,
    [job, input, output]: [&str; 3],
    state_dir: &std::path::Path,
    midway: impl FnMut() -> bool,
) {
    let mut child = spawn_job(bin, &cluster.client.namesrv_addr, job, input, output, state_dir, None);
    crate::kill_midway(&mut child, Duration::from_secs(300), midway);
}

/// The final count of every word in `updates` (JSON `[word, count]`): a
/// word's updates all go to one queue, in order, so its last one.
///
/// # Panics
///
/// If an update is not such a pair.
pub fn last_counts(updates: &[rocketmq_streams::io::Record]) -> HashMap<String, u64> {
    let mut last = HashMap::new();
    for u in updates {
        let (word, count): (String, u64) = serde_json::from_slice(&u.body).expect("a count update");
        last.insert(word, count);
    }
    last
}

/// The input and shuffle topics have 8 queues each: 16 queues to commit.
pub const QUEUES: usize = 16;

/// The highest count seen per word: counts only grow, so a replay counted
/// twice would show here as a count above the reference.
pub type Latest = Arc<Mutex<HashMap<String, u64>>>;

/// Folds the update `(word, count)` into `latest`.
pub fn record(latest: &Latest, word: &str, count: u64) {
    let mut map = latest.lock().unwrap_or_else(|p| p.into_inner());
    let slot = map.entry(word.to_owned()).or_insert(0);
    *slot = (*slot).max(count);
}

/// A runtime configuration for `cluster` with `shards` shards, its state in
/// `state_dir` and frequent snapshots ([`TEST_SNAPSHOT_AFTER`]).
pub fn config(cluster: &crate::TestCluster, state_dir: &std::path::Path, shards: usize) -> RuntimeConfig {
    let mut config = RuntimeConfig::new(cluster.client.clone());
    config.shards = shards;
    config.state_dir = Some(state_dir.to_path_buf());
    config.snapshot_after = TEST_SNAPSHOT_AFTER;
    config
}

/// The tests snapshot each state queue as often as the protocol allows
/// (every twice its keys in messages), so restores go through snapshots.
pub const TEST_SNAPSHOT_AFTER: u64 = 1;

/// The word count with its updates folded into `latest`, and sent to
/// `output` when given.
pub fn start(job: &str, input: &str, output: Option<&str>, config: RuntimeConfig, latest: &Latest) -> StreamRuntime {
    let builder = StreamBuilder::new(job);
    let counts = word_count(&builder, input);
    let sink = latest.clone();
    counts.foreach(move |(w, c): &(String, u64)| record(&sink, w, *c));
    if let Some(output) = output {
        counts.sink(output, Json::<(String, u64)>::new());
    }
    StreamRuntime::start(builder.build().expect("topology"), config).expect("start")
}

/// Waits (at most 600 s) until `jobs` together have committed every one of the 16 queues
/// to its end.
///
/// # Panics
///
/// When the time is up, or as soon as one of `jobs` stopped on its own.
pub fn run_to_end(jobs: &[&StreamRuntime]) {
    let mut last_report = std::time::Instant::now();
    let done = crate::wait_for(Duration::from_secs(600), || {
        // A stopped instance's metrics stand still: waiting on them would
        // only end at the time limit.
        if let Some(i) = jobs.iter().position(|j| j.has_stopped()) {
            panic!(
                "instance {i} stopped on its own before the end of its input (its 'the job stops' log line says why)"
            );
        }
        let metrics: Vec<_> = jobs.iter().map(|j| j.metrics()).collect();
        if last_report.elapsed() > Duration::from_secs(10) {
            last_report = std::time::Instant::now();
            for (i, m) in metrics.iter().enumerate() {
                eprintln!(
                    "instance {i}: in {} shuffled {} checkpoints {} restored {} duplicates {}, lag {} over {} queues, broker backlog {} bytes",
                    m.total(|s| s.records_in),
                    m.total(|s| s.shuffled),
                    m.total(|s| s.checkpoints),
                    m.total(|s| s.restored),
                    m.total(|s| s.duplicates),
                    m.total_lag(),
                    m.lag.len(),
                    m.dispatch_behind
                );
                let behind: Vec<_> = m.lag.iter().filter(|(_, l)| **l > 0).collect();
                if !behind.is_empty() {
                    eprintln!("instance {i}: behind {behind:?}");
                }
            }
        }
        let queues: usize = metrics.iter().map(|m| m.lag.len()).sum();
        (queues >= QUEUES && metrics.iter().all(JobMetrics::caught_up)).then_some(())
    });
    assert!(
        done.is_some(),
        "the job did not reach the end of its input within 600 s"
    );
}

/// Asserts that `latest` holds exactly the `reference` counts.
///
/// # Panics
///
/// When a count differs (naming up to five words).
pub fn assert_counts(latest: &Latest, reference: &HashMap<String, u64>) {
    let latest = latest.lock().unwrap_or_else(|p| p.into_inner());
    assert_eq!(latest.len(), reference.len(), "every distinct word counted");
    let wrong = wrong_counts(&latest, reference);
    assert!(
        wrong.is_empty(),
        "counts differ from the reference (word, expected, got): {wrong:?}"
    );
}

/// Counts one more line, holding every word of `reference` once, through a
/// running job whose updates go to `latest`, and asserts that every word's
/// update is its reference count plus one: the job's state (restored, or
/// built) holds exactly the reference.
///
/// # Panics
///
/// If the line is not counted within 300 s, or a count is wrong.
pub fn assert_state_by_probe(
    cluster: &crate::TestCluster,
    input: &str,
    latest: &Latest,
    reference: &HashMap<String, u64>,
) {
    latest.lock().unwrap_or_else(|p| p.into_inner()).clear();
    let mut every_word: Vec<&String> = reference.keys().collect();
    every_word.sort();
    let line = every_word.iter().map(|w| w.as_str()).collect::<Vec<_>>().join(" ");
    cluster.send_to(input, Bytes::from(line));
    let seen = crate::wait_for(Duration::from_secs(300), || {
        (latest.lock().unwrap_or_else(|p| p.into_inner()).len() >= reference.len()).then_some(())
    });
    assert!(seen.is_some(), "the probe line was not counted within 300 s");
    let plus_one: HashMap<String, u64> = reference.iter().map(|(w, c)| (w.clone(), c + 1)).collect();
    assert_counts(latest, &plus_one);
}

/// How many words' last update in the `output` topic differs from its
/// `reference` count (a word with no update counts too): a figure for the
/// log where the test does not assert it.
pub fn output_differences(cluster: &crate::TestCluster, output: &str, reference: &HashMap<String, u64>) -> usize {
    let (_, _, last, _) = read_output_counts(cluster, output, reference);
    reference.iter().filter(|(w, c)| last.get(*w) != Some(c)).count()
}

/// What [`read_output_counts`] found.
type OutputCounts = (
    u64,
    Vec<rocketmq_streams_io::Record>,
    HashMap<String, u64>,
    Vec<(String, u64, Option<u64>)>,
);

/// Reads the whole `output` topic: how many updates it stores, the
/// updates read, every word's last count and the first few that differ
/// from `reference`.
fn read_output_counts(cluster: &crate::TestCluster, output: &str, reference: &HashMap<String, u64>) -> OutputCounts {
    let stored = cluster.topic_size(output);
    let updates = cluster.read_topic(output, stored as usize, Duration::from_secs(300));
    let last = last_counts(&updates);
    let wrong = wrong_counts(&last, reference);
    (stored, updates, last, wrong)
}

/// Asserts that the last update of every word in the `output` topic is
/// its `reference` count (and that every word has one).
///
/// # Panics
///
/// When a count differs (naming up to five words) or a word is missing.
pub fn assert_output_counts(cluster: &crate::TestCluster, output: &str, reference: &HashMap<String, u64>) {
    let (stored, updates, last, wrong) = read_output_counts(cluster, output, reference);
    if let Some((word, _, _)) = wrong.first() {
        // What tells a reader's fault (the right count is there, or the
        // read stopped short) from a lost update (it is nowhere).
        let of_word: Vec<(i64, u64)> = updates
            .iter()
            .filter_map(|u| {
                let (w, count): (String, u64) = serde_json::from_slice(&u.body).ok()?;
                (&w == word).then_some((u.offset.0, count))
            })
            .collect();
        let all_wrong = reference.iter().filter(|(w, c)| last.get(*w) != Some(c)).count();
        panic!(
            "final counts differ from the reference (word, expected, got): {wrong:?}; {all_wrong} words wrong \
             in all; read {} updates of {stored} stored; the updates of {word:?} (offset, count) in read \
             order: {of_word:?}",
            updates.len()
        );
    }
    assert_eq!(last.len(), reference.len(), "every distinct word counted");
}
