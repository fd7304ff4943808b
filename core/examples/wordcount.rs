//! Word count on an embedded RocketMQ — the quick-start.
//!
//! Starts an embedded broker (or uses `ROCKETMQ_NAMESRV_ADDR`), writes a
//! sample text (the opening of Dickens' *A Tale of Two Cities*, many times
//! over) to a topic, and runs
//!
//! ```text
//! source(lines) → flat_map(words) → key_by(word) → count → to_rstream → sink(word-counts)
//!                                                                     ↘ foreach(remember)
//! ```
//!
//! on 2 pinned shards: the words go through the shuffle topic, the counts
//! live in RocksDB with their changelog in the state topic. When every
//! queue is committed to its end it prints the top words, checks them
//! against a count made here without the engine, and prints the metrics.
//! Ctrl-C stops the job early, cleanly.
//!
//! ```text
//! cargo run -p rocketmq-streams --example wordcount \
//!     [-- <repetitions> [direct|writer-shard [<commit ms> [<cache keys> [<vocabulary ×> [on-update|on-commit]]]]]]
//! ```
//!
//! The optional arguments set `RuntimeConfig::shuffle_hand_off`,
//! `commit_interval` and `cache_capacity`, multiply the vocabulary (each
//! repetition's words tagged `word_<r mod ×>`), and choose when the counts
//! go out (`Emit`), for the measurements in `tuning.md`.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use rocketmq_streams::io::{Interrupt, OutRecord, Sink};
use rocketmq_streams::prelude::*;

const TEXT: &str = "It was the best of times, it was the worst of times,
it was the age of wisdom, it was the age of foolishness,
it was the epoch of belief, it was the epoch of incredulity,
it was the season of Light, it was the season of Darkness,
it was the spring of hope, it was the winter of despair,
we had everything before us, we had nothing before us,
we were all going direct to Heaven, we were all going direct the other way;
in short, the period was so far like the present period,
that some of its noisiest authorities insisted on its being received,
for good or for evil, in the superlative degree of comparison only.
There were a king with a large jaw and a queen with a plain face,
on the throne of England; there were a king with a large jaw and a queen
with a fair face, on the throne of France. In both countries it was
clearer than crystal to the lords of the State preserves of loaves and
fishes, that things in general were settled for ever.";

/// The words of a line: lower case, letters (digits and `_` of tagged words).
fn words(line: &str) -> Vec<String> {
    line.split(|c: char| !(c.is_alphanumeric() || c == '_'))
        .filter(|w| !w.is_empty())
        .map(str::to_lowercase)
        .collect()
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    rocketmq_streams::io::init_logging();
    let repetitions: usize = match std::env::args().nth(1) {
        Some(n) => n.parse().map_err(|e| format!("repetitions must be a number: {e}"))?,
        None => 2_000,
    };
    let hand_off = match std::env::args().nth(2).as_deref() {
        None | Some("direct") => ShuffleHandOff::Direct,
        Some("writer-shard") => ShuffleHandOff::WriterShard,
        Some(other) => return Err(format!("hand-off must be direct or writer-shard, not {other}").into()),
    };
    let number = |i: usize, what: &str| -> Result<Option<u64>, String> {
        std::env::args()
            .nth(i)
            .map(|n| n.parse::<u64>().map_err(|e| format!("{what} must be a number: {e}")))
            .transpose()
    };
    let commit_interval = number(3, "commit interval (ms)")?.map(Duration::from_millis);
    let cache_capacity = number(4, "cache capacity")?;
    let vocabulary = number(5, "vocabulary multiplier")?.unwrap_or(1) as usize;
    let emit = match std::env::args().nth(6).as_deref() {
        None | Some("on-update") => Emit::OnUpdate,
        Some("on-commit") => Emit::OnCommit,
        Some(other) => return Err(format!("emit must be on-update or on-commit, not {other}").into()),
    };
    let (_broker, client) = EmbeddedRocketMQ::unless_env()?;
    let suffix = std::process::id();
    let (lines_topic, counts_topic) = (format!("lines-{suffix}"), format!("word-counts-{suffix}"));

    // The sample text, and the counts the job must arrive at.
    // Every repetition of the text, its words tagged `word_<r % vocabulary>`
    // when a vocabulary multiplier is given (more distinct keys).
    let lines: Vec<String> = (0..repetitions)
        .flat_map(|r| {
            TEXT.lines().map(move |line| {
                if vocabulary > 1 {
                    words(line)
                        .iter()
                        .map(|w| format!("{w}_{}", r % vocabulary))
                        .collect::<Vec<_>>()
                        .join(" ")
                } else {
                    line.to_owned()
                }
            })
        })
        .collect();
    let mut expected: HashMap<String, u64> = HashMap::new();
    for line in &lines {
        for w in words(line) {
            *expected.entry(w).or_insert(0) += 1;
        }
    }
    let total_words: u64 = expected.values().sum();
    let io = IoRuntime::new(1)?;
    {
        let (io2, client2, topic) = (io.clone(), client.clone(), lines_topic.clone());
        let records: Vec<OutRecord> = lines.iter().map(|l| OutRecord::new(Bytes::from(l.clone()))).collect();
        println!(
            "writing {} lines ({total_words} words, {} distinct) to {topic}",
            records.len(),
            expected.len()
        );
        io.block_on(async move {
            let admin = Admin::start(io2.clone(), &client2).await?;
            admin.create_topic(&topic, 8).await?;
            let route = admin.route(&topic).await?;
            let sink = Sink::start(io2, &client2, "wordcount-text-producer").await?;
            sink.send_spread(&route, records).await?;
            sink.shutdown().await;
            Ok::<_, rocketmq_streams::io::Error>(())
        })??;
    }

    // The job.
    let latest: Arc<Mutex<HashMap<String, u64>>> = Arc::default();
    let builder = StreamBuilder::new(format!("wordcount-{suffix}"));
    let counts = builder
        .source(&lines_topic, Utf8)
        .flat_map(|line: String| words(&line))
        .key_by(|w: &String| w.clone())
        .emit(emit)
        .count()
        .to_rstream();
    let remember = latest.clone();
    counts.foreach(move |(w, c): &(String, u64)| {
        remember.lock().unwrap_or_else(|p| p.into_inner()).insert(w.clone(), *c);
    });
    counts.sink(&counts_topic, Json::<(String, u64)>::new());
    let topology = builder.build()?;
    println!("{}", topology.describe());

    let mut config = RuntimeConfig::new(client);
    config.shards = 2;
    config.shuffle_hand_off = hand_off;
    if let Some(interval) = commit_interval {
        config.commit_interval = interval;
    }
    if let Some(cache) = cache_capacity {
        config.cache_capacity = cache as usize;
    }
    let interrupt = Interrupt::install()?;
    let started = Instant::now();
    let job = StreamRuntime::start(topology, config)?;
    // Done when all 16 queues (8 of text, 8 of the shuffle topic) are
    // committed to their end and every word is counted.
    loop {
        let m = job.metrics();
        let counted: u64 = latest.lock().unwrap_or_else(|p| p.into_inner()).values().sum();
        if (m.lag.len() >= 16 && m.caught_up() && counted >= total_words)
            || interrupt.is_set()
            || job.has_stopped()
            || started.elapsed() > Duration::from_secs(600)
        {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    if interrupt.is_set() {
        println!("Ctrl-C: stopping the job");
    }
    let metrics = job.stop()?;
    let elapsed = started.elapsed();

    let latest = latest.lock().unwrap_or_else(|p| p.into_inner());
    let mut top: Vec<(&String, &u64)> = latest.iter().collect();
    top.sort_by(|a, b| b.1.cmp(a.1).then(a.0.cmp(b.0)));
    println!("top words:");
    for (word, count) in top.iter().take(15) {
        println!("  {word:<12} {count:>8}");
    }
    let wrong = expected.iter().filter(|(w, c)| latest.get(*w) != Some(c)).count();
    println!(
        "{} distinct words, {} counted in {elapsed:.2?} ({hand_off:?} hand-off); {}",
        latest.len(),
        latest.values().sum::<u64>(),
        if wrong == 0 && latest.len() == expected.len() {
            "every count matches the reference".to_string()
        } else {
            format!("{wrong} counts differ from the reference")
        }
    );
    println!(
        "metrics: {} records in, {} shuffled, {} count updates to {counts_topic}, {} checkpoints, {} replays dropped",
        metrics.total(|s| s.records_in),
        metrics.total(|s| s.shuffled),
        metrics.total(|s| s.records_out),
        metrics.total(|s| s.checkpoints),
        metrics.total(|s| s.duplicates)
    );
    if wrong != 0 {
        return Err("the counts do not match the reference".into());
    }
    Ok(())
}
