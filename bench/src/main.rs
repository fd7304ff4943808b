//! The end-to-end harness: runs one scenario and prints its report.
//!
//! ```text
//! cargo run -p rocketmq-streams-bench --release -- <scenario> [options]
//!
//! scenarios (on a broker: embedded by default, or --namesrv host:port):
//!   pipe-baseline   consume → produce on rocketmq-client-rust, no engine
//!   stateless       filter → map → sink on the engine
//!   wordcount       flat_map → key_by → count (state + changelog) → sink
//!   nexmark-q5 --on-broker | nexmark-q7 --on-broker
//!                   stamped bids → key_by → window (hopping / tumbling, early results) → sink
//!   nexmark-q3 --on-broker | nexmark-q8 --on-broker
//!                   stamped persons and auctions → join (unwindowed / tumbling 10 s) → sink
//!   soak            wordcount flat out (--repeats), then at --percent of it for --minutes,
//!                   sampling RSS, lag, throughput and p99 every 10 s (broker in its own process)
//! in-process scenarios (no broker; one shard's work through the test driver):
//!   nexmark-q0 | nexmark-q1 | nexmark-q2 | nexmark-count   Nexmark bids, generated before timing
//!   nexmark-q5 | nexmark-q7                                windowed: hot items, highest bid
//!   nexmark-q3 | nexmark-q8                                joins: local item suggestion, new users
//!   inproc-wordcount                                       lines of 10 words
//!   (nexmark-q1 and inproc-wordcount also run a timely-dataflow peer; ratio = engine ÷ timely)
//! options:
//!   --records N       records per flat-out run (default 200000)
//!   --size BYTES      record size of the binary scenarios (default 100)
//!   --shards N        engine shards (default 2)
//!   --repeats N       runs of every measurement; figures are median (min–max) (default 3)
//!   --rates A,B,C     offered rates in % of the median flat-out rate (default 25,50,90; "none" for none)
//!   --seconds S       how long a rated run offers records (default 10)
//!   --words N         words per line, wordcount (default 10)
//!   --vocabulary N    distinct words, wordcount (default 10000)
//!   --hand-off MODE   direct | writer-shard, wordcount (default direct)
//!   --emit MODE       on-update | on-commit, wordcount's count updates (default on-update)
//!   --poll-batch N    records per poll (default 1024)
//!   --send-batch N    most messages per send (default 512)
//!   --commit-ms N     commit interval in ms (default 1000)
//!   --shuffle-queues N  queues of the shuffle and state topics, wordcount (default 8)
//!   --cache N         keys per queue's write-back cache, wordcount (default 100000)
//!   --write-buffer-mb N  RocksDB memtable size per queue, wordcount (default 8)
//!   --block-cache-mb N   RocksDB block cache per queue, wordcount (default 8)
//!   --compression C   none | lz4 | zstd, RocksDB files, wordcount (default lz4)
//!   --on-broker       nexmark-q3, -q5, -q7 and -q8 on the broker instead of in-process
//!   --minutes N       how long the soak offers records (default 10)
//!   --percent P       the soak's rate in % of the median flat-out rate (default 50)
//!   --embedded        the soak's broker in this process instead of its own
//!   --namesrv ADDR    an external cluster instead of the embedded broker
//!   --out DIR         where the JSON and SVG go (default bench/results)
//! ```

use std::path::PathBuf;
use std::time::Duration;

use rocketmq_streams::{Compression, Emit, ShuffleHandOff};
use rocketmq_streams_bench::broker::{self, Scenario};
use rocketmq_streams_bench::inproc::{self, Query};
use rocketmq_streams_bench::machine::Machine;
use rocketmq_streams_bench::report::Report;
use rocketmq_streams_bench::soak::{self, BrokerProcess, LocalBroker, SoakOptions};
use rocketmq_streams_io::{ClientConfig, EmbeddedConfig, EmbeddedRocketMQ, IoRuntime};

fn usage() -> String {
    let doc = include_str!("main.rs");
    doc.lines()
        .skip_while(|l| !l.starts_with("//! cargo run"))
        .take_while(|l| !l.starts_with("//! ```"))
        .map(|l| l.trim_start_matches("//! ").trim_start_matches("//!"))
        .collect::<Vec<_>>()
        .join("\n")
}

fn main() -> std::process::ExitCode {
    let mut args = std::env::args().skip(1);
    if args.next().as_deref() == Some(soak::BROKER_PROCESS) {
        // The soak's broker, in a process of its own (`BrokerProcess`).
        return rocketmq_streams_io::standalone_main(args);
    }
    match real_main() {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}\n\n{}", usage());
            std::process::ExitCode::from(2)
        }
    }
}

fn real_main() -> Result<(), String> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some(scenario) = args.first() else {
        return Err("no scenario given".into());
    };
    if matches!(scenario.as_str(), "help" | "--help" | "-h") {
        println!("{}", usage());
        return Ok(());
    }
    let on_broker = args.iter().any(|a| a == "--on-broker");
    let is_soak = scenario == "soak";
    let in_process = match scenario.as_str() {
        "nexmark-q0" => Some(Query::Q0),
        "nexmark-q1" => Some(Query::Q1),
        "nexmark-q2" => Some(Query::Q2),
        "nexmark-count" => Some(Query::Count),
        "inproc-wordcount" => Some(Query::WordCount),
        "nexmark-q5" if !on_broker => Some(Query::Q5),
        "nexmark-q7" if !on_broker => Some(Query::Q7),
        "nexmark-q3" if !on_broker => Some(Query::Q3),
        "nexmark-q8" if !on_broker => Some(Query::Q8),
        _ => None,
    };
    let scenario = match scenario.as_str() {
        "pipe-baseline" => Scenario::PipeBaseline,
        "stateless" => Scenario::Stateless,
        "wordcount" | "soak" => Scenario::WordCount,
        "nexmark-q5" if on_broker => Scenario::Q5,
        "nexmark-q7" if on_broker => Scenario::Q7,
        "nexmark-q3" if on_broker => Scenario::Q3,
        "nexmark-q8" if on_broker => Scenario::Q8,
        _ if in_process.is_some() => Scenario::PipeBaseline,
        other => return Err(format!("unknown scenario {other:?}")),
    };
    let mut options = broker::Options::default();
    let mut soak_options = SoakOptions::default();
    let mut embedded = !is_soak;
    let mut namesrv: Option<String> = None;
    let mut out = PathBuf::from("bench/results");
    let mut rest = args[1..].iter();
    while let Some(flag) = rest.next() {
        let mut value = || rest.next().cloned().ok_or_else(|| format!("{flag} needs a value"));
        let number = |v: String| v.parse::<u64>().map_err(|e| format!("{flag}: {e}"));
        match flag.as_str() {
            "--records" => options.records = number(value()?)?,
            "--size" => options.size = number(value()?)? as usize,
            "--shards" => options.shards = number(value()?)? as usize,
            "--repeats" => options.repeats = number(value()?)?.max(1) as usize,
            "--seconds" => options.rated_for = Duration::from_secs(number(value()?)?),
            "--words" => options.words = number(value()?)? as usize,
            "--vocabulary" => options.vocabulary = number(value()?)?,
            "--rates" => {
                let v = value()?;
                options.rates = if v == "none" {
                    Vec::new()
                } else {
                    v.split(',')
                        .map(|r| r.trim().parse::<f64>().map_err(|e| format!("--rates: {e}")))
                        .collect::<Result<_, _>>()?
                };
            }
            "--hand-off" => {
                options.hand_off = match value()?.as_str() {
                    "direct" => ShuffleHandOff::Direct,
                    "writer-shard" => ShuffleHandOff::WriterShard,
                    other => return Err(format!("--hand-off: {other:?} is not direct or writer-shard")),
                }
            }
            "--emit" => {
                options.emit = match value()?.as_str() {
                    "on-update" => Emit::OnUpdate,
                    "on-commit" => Emit::OnCommit,
                    other => return Err(format!("--emit: {other:?} is not on-update or on-commit")),
                }
            }
            "--poll-batch" => options.poll_batch = number(value()?)?.max(1) as usize,
            "--send-batch" => options.send_batch = number(value()?)?.max(1) as usize,
            "--commit-ms" => options.commit_interval = Duration::from_millis(number(value()?)?.max(1)),
            "--shuffle-queues" => options.shuffle_queues = number(value()?)?.clamp(1, 1024) as u32,
            "--cache" => options.cache_capacity = number(value()?)? as usize,
            "--write-buffer-mb" => options.rocksdb.write_buffer_bytes = (number(value()?)? as usize) << 20,
            "--block-cache-mb" => options.rocksdb.block_cache_bytes = (number(value()?)? as usize) << 20,
            "--compression" => {
                options.rocksdb.compression = match value()?.as_str() {
                    "none" => Compression::None,
                    "lz4" => Compression::Lz4,
                    "zstd" => Compression::Zstd,
                    other => return Err(format!("--compression: {other:?} is not none, lz4 or zstd")),
                }
            }
            "--on-broker" => {}
            "--minutes" => soak_options.duration = Duration::from_secs(number(value()?)?.max(1) * 60),
            "--percent" => {
                soak_options.percent = value()?
                    .parse::<f64>()
                    .ok()
                    .filter(|p| *p > 0.0)
                    .ok_or_else(|| format!("{flag}: a share above 0 %"))?
            }
            "--embedded" => embedded = true,
            "--namesrv" => namesrv = Some(value()?),
            "--out" => out = PathBuf::from(value()?),
            other => return Err(format!("unknown option {other:?}")),
        }
    }
    rocketmq_streams_io::init_logging();
    let command = format!("cargo run -p rocketmq-streams-bench --release -- {}", args.join(" "));
    if let Some(query) = in_process {
        return run_in_process(query, options.records as usize, options.repeats, command, &out);
    }
    let mut broker_process = None;
    let (_broker, client, broker_kind) = match namesrv {
        Some(addr) => (None, ClientConfig::new(addr.as_str()), format!("external {addr}")),
        None if !embedded => {
            // Its log beside the report: a broker that fails says why there.
            let process = BrokerProcess::start(&out.join("broker-process.log"))?;
            let client = ClientConfig::new(process.namesrv_addr.as_str());
            broker_process = Some(process);
            (None, client, "its own process (same machine, same cores)".to_string())
        }
        None => {
            let mq = EmbeddedRocketMQ::start_with(EmbeddedConfig::default()).map_err(|e| e.to_string())?;
            let client = ClientConfig::new(mq.namesrv_addr());
            (Some(mq), client, "embedded (same process, same cores)".to_string())
        }
    };
    // The load producer's runtime: its threads count as the harness's.
    let io = IoRuntime::named("bench-load", 1).map_err(|e| e.to_string())?;
    let (runs, samples) = if is_soak {
        let broker = broker_process.as_ref().map(|p| LocalBroker {
            pid: p.pid(),
            store: Some(p.store()),
        });
        soak::run(&io, &client, &options, &soak_options, broker)?
    } else {
        (broker::run(&io, &client, scenario, &options)?, Vec::new())
    };
    let mut settings = vec![
        ("broker".to_string(), broker_kind),
        ("shards".into(), options.shards.to_string()),
        ("records".into(), options.records.to_string()),
        ("repeats".into(), options.repeats.to_string()),
        ("poll batch".into(), options.poll_batch.to_string()),
        ("send batch".into(), format!("≤{} messages", options.send_batch)),
        (
            "commit interval".into(),
            format!("{} ms", options.commit_interval.as_millis()),
        ),
        if is_soak {
            (
                "soak".into(),
                format!(
                    "{} min at {}% of the median flat-out rate after a {} s warm-up, sampled every {} s",
                    soak_options.duration.as_secs() / 60,
                    soak_options.percent,
                    broker::WARM_UP.as_secs(),
                    soak_options.every.as_secs()
                ),
            )
        } else {
            (
                "rated for".into(),
                format!(
                    "{} s after a {} s warm-up",
                    options.rated_for.as_secs(),
                    broker::WARM_UP.as_secs()
                ),
            )
        },
    ];
    match scenario {
        Scenario::WordCount => {
            settings.push(("words per line".into(), options.words.to_string()));
            settings.push(("vocabulary".into(), options.vocabulary.to_string()));
            settings.push(("hand-off".into(), format!("{:?}", options.hand_off)));
            settings.push(("emit".into(), format!("{:?}", options.emit)));
            settings.push(("shuffle queues".into(), options.shuffle_queues.to_string()));
            settings.push(("cache".into(), format!("{} keys per queue", options.cache_capacity)));
            let r = &options.rocksdb;
            settings.push((
                "rocksdb".into(),
                format!(
                    "memtable {} MiB ×{}, block cache {} MiB, {:?}",
                    r.write_buffer_bytes >> 20,
                    r.max_write_buffers,
                    r.block_cache_bytes >> 20,
                    r.compression
                ),
            ));
        }
        Scenario::Q5 | Scenario::Q7 => {
            settings.push(("event time".into(), "the bid's produce stamp".into()));
            settings.push(("emit".into(), "OnUpdate (early results), grace 30 s".into()));
            settings.push(("shuffle queues".into(), options.shuffle_queues.to_string()));
        }
        Scenario::Q3 | Scenario::Q8 => {
            settings.push((
                "event time".into(),
                format!(
                    "{} records a ms (a function of the sequence number)",
                    rocketmq_streams_bench::joins::PER_MS
                ),
            ));
            settings.push((
                "join".into(),
                if scenario == Scenario::Q3 {
                    "unwindowed inner, state kept".into()
                } else {
                    "inner within tumbling 10 s, grace 30 s".into()
                },
            ));
            settings.push(("shuffle queues".into(), options.shuffle_queues.to_string()));
        }
        _ => settings.push(("message size".into(), format!("{} B", options.size))),
    }
    let report = Report {
        scenario: if is_soak {
            "wordcount-soak".to_string()
        } else {
            scenario.name().to_string()
        },
        command,
        machine: Machine::detect(),
        settings,
        // The soak calibrates without the baseline.
        baseline: (!is_soak).then(|| runs.first().map(|r| r.label.clone())).flatten(),
        runs,
        samples,
    };
    print_and_write(&report, &out)
}

fn print_and_write(report: &Report, out: &std::path::Path) -> Result<(), String> {
    println!("{}", report.table());
    let written = report
        .write(out)
        .map_err(|e| format!("writing the report to {}: {e}", out.display()))?;
    for path in written {
        println!("wrote {}", path.display());
    }
    Ok(())
}

/// An in-process scenario: the input generated first, then `repeats` times
/// the timely peer (if any) and the engine over the same bodies.
fn run_in_process(
    query: Query,
    records: usize,
    repeats: usize,
    command: String,
    out: &std::path::Path,
) -> Result<(), String> {
    eprintln!("generating {records} input records in memory");
    let input = match query {
        Query::WordCount => inproc::lines(records),
        Query::Q3 | Query::Q8 => rocketmq_streams_bench::joins::events(records),
        _ => inproc::bids(records),
    };
    let bytes: usize = input.iter().map(|b| b.len()).sum();
    let mut runs = Vec::new();
    for repeat in 1..=repeats.max(1) {
        if query.has_timely_peer() {
            eprintln!("running the timely peer ({repeat} of {repeats})");
            runs.push(inproc::timely_peer(query, &input)?.0);
        }
        eprintln!("running the engine ({repeat} of {repeats})");
        runs.push(inproc::engine(query, &input)?.0);
    }
    let report = Report {
        scenario: query.name().to_string(),
        command,
        machine: Machine::detect(),
        settings: vec![
            ("broker".into(), "none (in-process)".into()),
            (
                "engine path".into(),
                "test driver: a shard's operators on one thread, framed in-memory shuffle, cache over RocksDB".into(),
            ),
            ("records".into(), input.len().to_string()),
            ("repeats".into(), repeats.to_string()),
            ("mean record size".into(), format!("{} B", bytes / input.len().max(1))),
        ],
        baseline: query.has_timely_peer().then(|| runs[0].label.clone()),
        runs,
        samples: Vec::new(),
    };
    print_and_write(&report, out)
}
