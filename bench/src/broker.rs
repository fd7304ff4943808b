//! Scenarios on a broker: `pipe-baseline`, `stateless`, `wordcount`, the
//! windowed `nexmark-q5` and `nexmark-q7`, and the joins `nexmark-q3` and
//! `nexmark-q8` (`--on-broker`; see [`crate::joins`]).
//!
//! The windowed scenarios run on stamped bids whose event time is their
//! produce stamp, with early results ([`WindowEmit::OnUpdate`]): every
//! bid updates each of its windows and each update is an output carrying
//! the newest stamp it counts, so throughput, latency and completeness
//! are measured as for the word count. q5 counts bids per auction in
//! hopping windows of 10 s every 2 s (5 updates a bid); q7 keeps the
//! highest price per tumbling window of 10 s (1 update a bid). Both
//! allow 30 s of lateness: the input queues' records interleave, out of
//! event-time order, on their way through the shuffle.
//!
//! Every measurement is repeated ([`Options::repeats`], 3 by default) and
//! reported as its median with min and max. Each flat-out repeat of a
//! scenario runs right after a flat-out repeat of `pipe-baseline` on the
//! same broker, so its throughput is given as a ratio to the baseline of
//! the same moment. A flat-out run preloads its input, then times from the
//! first to the last record its output reader sees. A rated run starts the
//! engine, waits a warm-up (its consumer group settles), then offers
//! records for [`Options::rated_for`] at a share of the scenario's *median*
//! flat-out throughput, and records each output record's latency from its
//! produce stamp to the moment the reader (on a thread of its own) polled
//! it. CPU is read per thread, so the job's share is reported apart from
//! the broker's and the harness's.

use std::collections::HashMap;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use rocketmq_streams::prelude::*;
use rocketmq_streams::{RocksDbOptions, ShuffleHandOff};
use rocketmq_streams_io::{ClientConfig, IoRuntime};

use crate::baseline::{Baseline, BaselineConfig};
use crate::load::{self, Offer, Reader};
use crate::machine::{Cost, Meter};
use crate::progress::Progress;
use crate::report::{Run, Spread};

/// The broker scenarios.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scenario {
    /// Consume → produce on the client, no engine.
    PipeBaseline,
    /// `filter → map → sink` on the engine.
    Stateless,
    /// `flat_map → key_by → count → sink` with state and changelog.
    WordCount,
    /// Bids per auction in hopping windows (`key_by → window → aggregate`).
    Q5,
    /// The highest bid per tumbling window (`key_by` one key → `window →
    /// aggregate`).
    Q7,
    /// Auctions with their sellers (unwindowed join).
    Q3,
    /// New persons with their auctions of the same window (tumbling join).
    Q8,
}

impl Scenario {
    /// The scenario's command-line name.
    pub fn name(self) -> &'static str {
        match self {
            Scenario::PipeBaseline => "pipe-baseline",
            Scenario::Stateless => "stateless",
            Scenario::WordCount => "wordcount",
            Scenario::Q5 => "nexmark-q5",
            Scenario::Q7 => "nexmark-q7",
            Scenario::Q3 => "nexmark-q3",
            Scenario::Q8 => "nexmark-q8",
        }
    }
}

/// A bid of the windowed broker scenarios, as JSON.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct StampedBid {
    /// The auction, skewed towards low numbers (hot items).
    pub auction: u64,
    /// The price.
    pub price: u64,
    /// Produce stamp, ns since the epoch; its ms are the event time.
    pub stamp: u64,
}

/// Auctions of the windowed broker scenarios.
const AUCTIONS: u64 = 1_000;
/// Lateness the windowed broker scenarios allow.
const WINDOW_GRACE: Duration = Duration::from_secs(30);

/// Bid `seq`, stamped `stamp`, as JSON.
pub fn stamped_bid(seq: u64, stamp: u64) -> Bytes {
    let mut x = seq.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    let u = (x >> 11) as f64 / (1u64 << 53) as f64;
    let bid = StampedBid {
        auction: (u * u * AUCTIONS as f64) as u64,
        price: (x >> 20) % 10_000,
        stamp,
    };
    Bytes::from(serde_json::to_vec(&bid).unwrap_or_default())
}

/// A window's count (q5) or highest price (q7), with the newest stamp it
/// has seen: each early result carries the stamp of the bid that made it.
struct WithStamp<const MAX: bool>;

impl<const MAX: bool> Accumulator<StampedBid> for WithStamp<MAX> {
    type State = (u64, u64);
    type Output = (u64, u64);
    fn init(&self) -> (u64, u64) {
        (0, 0)
    }
    fn add(&self, state: &mut (u64, u64), bid: &StampedBid) {
        state.0 = if MAX { state.0.max(bid.price) } else { state.0 + 1 };
        state.1 = state.1.max(bid.stamp);
    }
    fn result(&self, state: &(u64, u64)) -> (u64, u64) {
        *state
    }
}

/// Settings of the broker scenarios.
#[derive(Debug, Clone)]
pub struct Options {
    /// Records per flat-out run.
    pub records: u64,
    /// Bytes per record (binary scenarios).
    pub size: usize,
    /// Engine shards.
    pub shards: usize,
    /// Offered rates, in percent of the median flat-out throughput.
    pub rates: Vec<f64>,
    /// Runs of every measurement (at least 1).
    pub repeats: usize,
    /// How long a rated run offers records.
    pub rated_for: Duration,
    /// Words per line (`wordcount`).
    pub words: usize,
    /// Distinct words (`wordcount`).
    pub vocabulary: u64,
    /// Shuffle hand-off (`wordcount`).
    pub hand_off: ShuffleHandOff,
    /// Records per poll.
    pub poll_batch: usize,
    /// Most messages per send.
    pub send_batch: usize,
    /// Queues of the shuffle and state topics (`wordcount`).
    pub shuffle_queues: u32,
    /// Keys each queue's write-back cache holds (`wordcount`).
    pub cache_capacity: usize,
    /// How often offsets (and state) are committed.
    pub commit_interval: Duration,
    /// RocksDB settings (`wordcount`).
    pub rocksdb: RocksDbOptions,
    /// When the word count emits its updates (`wordcount`).
    pub emit: Emit,
    /// Longest a single run may take.
    pub limit: Duration,
}

impl Default for Options {
    fn default() -> Self {
        // The engine's own defaults, so a run without options measures them.
        let engine = RuntimeConfig::new(ClientConfig::new("127.0.0.1:9876"));
        Options {
            records: 200_000,
            size: 100,
            shards: 2,
            rates: vec![25.0, 50.0, 90.0],
            repeats: 3,
            rated_for: Duration::from_secs(10),
            words: 10,
            vocabulary: 10_000,
            hand_off: engine.shuffle_hand_off,
            poll_batch: engine.poll_batch,
            send_batch: engine.send_batch,
            shuffle_queues: engine.shuffle_queues,
            cache_capacity: engine.cache_capacity,
            commit_interval: engine.commit_interval,
            rocksdb: engine.rocksdb,
            emit: Emit::OnUpdate,
            limit: Duration::from_secs(600),
        }
    }
}

/// A running engine (or the baseline loop).
pub(crate) enum Running {
    Baseline(Baseline),
    Job(StreamRuntime),
}

impl Running {
    /// The engine's job, if this is one.
    pub(crate) fn job(&self) -> Option<&StreamRuntime> {
        match self {
            Running::Job(j) => Some(j),
            Running::Baseline(_) => None,
        }
    }

    pub(crate) fn stop(self) -> Result<(), String> {
        match self {
            Running::Baseline(b) => b.stop(),
            Running::Job(j) => j.stop().map(|_| ()).map_err(|e| e.to_string()),
        }
    }
}

/// Count and the stamp of the record that made the last update.
struct CountWithStamp;

impl Accumulator<(String, u64)> for CountWithStamp {
    type State = (u64, u64);
    type Output = (u64, u64);
    fn init(&self) -> (u64, u64) {
        (0, 0)
    }
    fn add(&self, state: &mut (u64, u64), value: &(String, u64)) {
        state.0 += 1;
        // The latest stamp: under `Emit::OnCommit` the update's latency is
        // that of the newest record it carries.
        state.1 = state.1.max(value.1);
    }
    fn result(&self, state: &(u64, u64)) -> (u64, u64) {
        *state
    }
}

/// A run under way ([`Ctx::offer`]).
pub(crate) struct Offered {
    /// Records the producer offers.
    pub(crate) n: u64,
    pub(crate) reader: Reader,
    pub(crate) engine: Running,
    /// Started after the warm-up, with the offering.
    pub(crate) meter: Meter,
    /// When the offering started.
    pub(crate) started: Instant,
    /// The producer: how long it took to offer every record.
    pub(crate) producer: std::thread::JoinHandle<Result<Duration, String>>,
}

/// What every run of one invocation shares.
pub(crate) struct Ctx<'a> {
    pub(crate) io: &'a Arc<IoRuntime>,
    pub(crate) client: &'a ClientConfig,
    pub(crate) options: &'a Options,
    run_id: String,
    /// Runs so far: each run has topics and a job of its own.
    runs: std::cell::Cell<u32>,
}

impl<'a> Ctx<'a> {
    pub(crate) fn new(io: &'a Arc<IoRuntime>, client: &'a ClientConfig, options: &'a Options) -> Ctx<'a> {
        Ctx {
            io,
            client,
            options,
            run_id: format!("{}-{}", std::process::id(), load::now_nanos() % 1_000_000),
            runs: std::cell::Cell::new(0),
        }
    }
}

impl Ctx<'_> {
    pub(crate) fn topics(&self, label: &str) -> (String, String, String) {
        self.runs.set(self.runs.get() + 1);
        let tag = format!(
            "{}-{}-{}",
            label.replace([' ', '%', '.'], "-"),
            self.run_id,
            self.runs.get()
        );
        (
            format!("bench-in-{tag}"),
            format!("bench-out-{tag}"),
            format!("bench-job-{tag}"),
        )
    }

    pub(crate) fn start(&self, scenario: Scenario, input: &str, output: &str, job: &str) -> Result<Running, String> {
        let builder = StreamBuilder::new(job);
        match scenario {
            Scenario::PipeBaseline => {
                let config = BaselineConfig {
                    poll_batch: self.options.poll_batch,
                    send_batch: self.options.send_batch,
                    commit_interval: self.options.commit_interval,
                };
                return Baseline::start(self.client, job, input, output, config).map(Running::Baseline);
            }
            Scenario::Stateless => {
                builder
                    .source(input, Raw)
                    .filter(|b: &Bytes| load::binary_stamp(b).is_none_or(|(_, seq)| seq % 10 != 0))
                    .map(|b: Bytes| {
                        let mut v = BytesMut::from(&b[..]);
                        if v.len() > 16 {
                            v[16..].make_ascii_uppercase();
                        }
                        v.freeze()
                    })
                    .sink(output, Raw);
            }
            Scenario::WordCount => {
                builder
                    .source(input, Utf8)
                    .flat_map(|line: String| {
                        let mut parts = line.split(' ');
                        let stamp = parts
                            .next()
                            .and_then(|s| s.strip_prefix('@'))
                            .and_then(|s| s.parse::<u64>().ok())
                            .unwrap_or(0);
                        parts.map(|w| (w.to_string(), stamp)).collect::<Vec<_>>()
                    })
                    .key_by(|(w, _): &(String, u64)| w.clone())
                    .emit(self.options.emit)
                    .aggregate(CountWithStamp)
                    .to_rstream()
                    .sink(output, Json::<(String, (u64, u64))>::new());
            }
            Scenario::Q5 | Scenario::Q7 => {
                let bids = builder
                    .source(input, Json::<StampedBid>::new())
                    .select_timestamp(|b: &StampedBid| (b.stamp / 1_000_000) as i64);
                let ten = Duration::from_secs(10);
                if scenario == Scenario::Q5 {
                    bids.key_by(|b: &StampedBid| b.auction)
                        .window(
                            Window::hopping(ten, Duration::from_secs(2))
                                .grace(WINDOW_GRACE)
                                .emit(WindowEmit::OnUpdate),
                        )
                        .aggregate(WithStamp::<false>)
                        .to_rstream()
                        .sink(output, Json::<(Windowed<u64>, (u64, u64))>::new());
                } else {
                    bids.key_by(|_: &StampedBid| 0u8)
                        .window(Window::tumbling(ten).grace(WINDOW_GRACE).emit(WindowEmit::OnUpdate))
                        .aggregate(WithStamp::<true>)
                        .to_rstream()
                        .sink(output, Json::<(Windowed<u8>, (u64, u64))>::new());
                }
            }
            Scenario::Q3 | Scenario::Q8 => {
                crate::joins::stamped_query(&builder, input, output, scenario == Scenario::Q8);
            }
        }
        let mut config = RuntimeConfig::new(self.client.clone());
        config.shards = self.options.shards;
        config.shuffle_hand_off = self.options.hand_off;
        config.poll_batch = self.options.poll_batch;
        config.send_batch = self.options.send_batch;
        config.shuffle_queues = self.options.shuffle_queues;
        config.cache_capacity = self.options.cache_capacity;
        config.commit_interval = self.options.commit_interval;
        config.rocksdb = self.options.rocksdb.clone();
        config.state_dir = Some(std::env::temp_dir().join("rocketmq-streams-bench").join(job));
        let topology = builder.build().map_err(|e| e.to_string())?;
        StreamRuntime::start(topology, config)
            .map(Running::Job)
            .map_err(|e| e.to_string())
    }

    pub(crate) fn make(&self, scenario: Scenario) -> impl Fn(u64, u64) -> Bytes + Send + 'static {
        let (size, words, vocabulary) = (self.options.size, self.options.words, self.options.vocabulary);
        move |seq, stamp| match scenario {
            Scenario::WordCount => load::stamped_line(seq, stamp, words, vocabulary),
            Scenario::Q5 | Scenario::Q7 => stamped_bid(seq, stamp),
            Scenario::Q3 | Scenario::Q8 => crate::joins::stamped_event(seq, stamp),
            _ => load::stamped_binary(seq, stamp, size),
        }
    }

    pub(crate) fn expected(&self, scenario: Scenario, offered: u64) -> u64 {
        match scenario {
            Scenario::PipeBaseline => offered,
            Scenario::Stateless => offered - offered.div_ceil(10),
            Scenario::WordCount => offered * self.options.words as u64,
            // Each bid is in 5 hopping windows, one tumbling window.
            Scenario::Q5 => offered * 5,
            Scenario::Q7 => offered,
            Scenario::Q3 => crate::joins::stamped_expected(offered).0,
            Scenario::Q8 => crate::joins::stamped_expected(offered).1,
        }
    }

    /// How an output of `scenario` is weighed: its stamp and the input
    /// records it stands for.
    pub(crate) fn weigh(&self, scenario: Scenario) -> impl FnMut(&[u8]) -> (Option<u64>, u64) + Send + 'static {
        let on_commit = self.options.emit == Emit::OnCommit;
        // With `Emit::OnCommit` an update stands for every word counted
        // since the word's previous update: the rise of its count.
        let mut counted: HashMap<String, u64> = HashMap::new();
        move |body: &[u8]| -> (Option<u64>, u64) {
            match scenario {
                Scenario::WordCount => match serde_json::from_slice::<(String, (u64, u64))>(body) {
                    Ok((word, (count, stamp))) if on_commit => {
                        let before = counted.insert(word, count).unwrap_or(0);
                        (Some(stamp), count.saturating_sub(before))
                    }
                    Ok((_, (_, stamp))) => (Some(stamp), 1),
                    Err(_) => (None, 1),
                },
                Scenario::Q5 | Scenario::Q7 => {
                    match serde_json::from_slice::<(serde::de::IgnoredAny, (u64, u64))>(body) {
                        Ok((_, (_, stamp))) => (Some(stamp), 1),
                        Err(_) => (None, 1),
                    }
                }
                Scenario::Q3 | Scenario::Q8 => match serde_json::from_slice::<(serde::de::IgnoredAny, u64)>(body) {
                    Ok((_, stamp)) => (Some(stamp), 1),
                    Err(_) => (None, 1),
                },
                _ => (load::binary_stamp(body).map(|(s, _)| s), 1),
            }
        }
    }

    /// Starts the reader of `output` (which creates the topic, so the
    /// baseline never sends to a topic the broker would make with its
    /// default queue count).
    pub(crate) fn reader(&self, output: &str) -> Result<Reader, String> {
        Reader::start(self.client, output).map_err(|e| e.to_string())
    }

    /// Reads the outputs of a started job until `expected` came, reads the
    /// run's cost while every measured thread still lives, then stops the
    /// job and the reader whatever the read gave. The run counts only if
    /// everything came out.
    fn finish(
        &self,
        scenario: Scenario,
        label: &str,
        mut reader: Reader,
        engine: Running,
        meter: &Meter,
        expected: u64,
    ) -> Result<(load::Output, Cost), String> {
        let seen = Arc::new(AtomicU64::new(0));
        let bar = Progress::start(label, seen.clone(), expected);
        let out = reader.read(expected, self.options.limit, self.weigh(scenario), seen);
        let cost = meter.cost();
        drop(bar);
        let stopped = engine.stop();
        // Stops its consumer, about one long poll: after the cost is read.
        drop(reader);
        let out = out.map_err(|e| e.to_string())?;
        stopped?;
        complete(&out, expected, label)?;
        Ok((out, cost))
    }

    /// Preloads the input, then times the engine from its first output
    /// record to its last.
    pub(crate) fn flat_out(&self, scenario: Scenario) -> Result<Run, String> {
        let label = format!("{} flat out", scenario.name());
        let (input, output, job) = self.topics(&label);
        let n = self.options.records;
        let sent = Arc::new(AtomicU64::new(0));
        {
            let _bar = Progress::start("preloading input", sent.clone(), n);
            load::produce(
                self.io,
                self.client,
                &input,
                n,
                Offer::FlatOut,
                self.make(scenario),
                sent,
            )
            .map_err(|e| e.to_string())?;
        }
        let reader = self.reader(&output)?;
        let meter = Meter::start();
        let engine = self.start(scenario, &input, &output, &job)?;
        let (out, cost) = self.finish(scenario, &label, reader, engine, &meter, self.expected(scenario, n))?;
        let seconds = match (out.first, out.last) {
            (Some(a), Some(b)) => b.duration_since(a).as_secs_f64(),
            _ => 0.0,
        };
        Ok(Run {
            label,
            offered_rate: None,
            records: n,
            seconds,
            latency: None,
            cost,
        })
    }

    /// Starts a run of `scenario` under `label` on topics of its own: the
    /// output's reader, the engine, a warm-up, then a producer offering
    /// `rate` records a second for `lasting` (on a thread of its own).
    pub(crate) fn offer(
        &self,
        scenario: Scenario,
        label: &str,
        rate: f64,
        lasting: Duration,
    ) -> Result<Offered, String> {
        let (input, output, job) = self.topics(label);
        // The run lasts its stated time, whatever `records` says.
        let n = ((rate * lasting.as_secs_f64()) as u64).max(1);
        // The input exists before the engine subscribes to it.
        load::create_topic(self.io, self.client, &input, 8).map_err(|e| e.to_string())?;
        let reader = self.reader(&output)?;
        let engine = self.start(scenario, &input, &output, &job)?;
        std::thread::sleep(WARM_UP);
        let meter = Meter::start();
        let started = Instant::now();
        let (io, client, make) = (self.io.clone(), self.client.clone(), self.make(scenario));
        let producer = std::thread::spawn(move || {
            load::produce(&io, &client, &input, n, Offer::Rate(rate), make, Arc::default()).map_err(|e| e.to_string())
        });
        Ok(Offered {
            n,
            reader,
            engine,
            meter,
            started,
            producer,
        })
    }

    /// Offers `rate` records per second to a running engine for
    /// [`Options::rated_for`] and measures the latency of what comes out.
    fn rated(&self, scenario: Scenario, rate: f64, percent: f64) -> Result<Run, String> {
        let label = format!("{} at {percent}%", scenario.name());
        let Offered {
            n,
            reader,
            engine,
            meter,
            started,
            producer,
        } = self.offer(scenario, &label, rate, self.options.rated_for)?;
        let finished = self.finish(scenario, &label, reader, engine, &meter, self.expected(scenario, n));
        let took = producer
            .join()
            .map_err(|_| "the producer thread panicked".to_string())??;
        let (out, cost) = finished?;
        Ok(Run {
            label,
            // What the producer achieved: below the target when it fell
            // behind (its records are stamped when due, so that shows as
            // latency too).
            offered_rate: Some(n as f64 / took.as_secs_f64().max(self.options.rated_for.as_secs_f64())),
            records: n,
            seconds: out.last.map_or(0.0, |t| t.duration_since(started).as_secs_f64()),
            latency: Some(out.latency),
            cost,
        })
    }
}

/// A run counts only if everything it offered came out.
fn complete(out: &load::Output, expected: u64, label: &str) -> Result<(), String> {
    if out.records < expected {
        return Err(format!(
            "{label}: only {} of {expected} output records arrived in time",
            out.records
        ));
    }
    Ok(())
}

/// How long a rated run's engine runs on an empty input before records are
/// offered: its consumer group's rebalance settles in this time.
pub const WARM_UP: Duration = Duration::from_secs(5);

/// Runs `scenario`: [`Options::repeats`] times the baseline flat out then
/// the scenario flat out, then the scenario at each rate (a share of its
/// median flat-out throughput), each as many times. Returns every run in
/// the order they ran.
///
/// # Errors
///
/// What failed, as text: a run that could not start or finish.
pub fn run(
    io: &Arc<IoRuntime>,
    client: &ClientConfig,
    scenario: Scenario,
    options: &Options,
) -> Result<Vec<Run>, String> {
    let ctx = Ctx::new(io, client, options);
    let mut runs = Vec::new();
    let mut flat_out = Vec::new();
    for _ in 0..options.repeats.max(1) {
        runs.push(ctx.flat_out(Scenario::PipeBaseline)?);
        if scenario != Scenario::PipeBaseline {
            runs.push(ctx.flat_out(scenario)?);
        }
        flat_out.push(runs.last().map_or(0.0, Run::throughput));
    }
    let median = Spread::of(flat_out).map_or(0.0, |s| s.median);
    for &percent in &options.rates {
        let rate = median * percent / 100.0;
        for _ in 0..options.repeats.max(1) {
            if rate >= 1.0 {
                runs.push(ctx.rated(scenario, rate, percent)?);
            }
        }
    }
    Ok(runs)
}

/// What the harness's broker-backed unit tests share: an embedded broker,
/// a client of it, a load runtime, and small word-count options (2,000
/// lines of 5 words over 50: over the reader's poll of 1,024, so every
/// run's outputs arrive in more than one poll and first ≠ last).
#[cfg(test)]
pub(crate) fn small_setup() -> (
    rocketmq_streams_io::EmbeddedRocketMQ,
    ClientConfig,
    Arc<IoRuntime>,
    Options,
) {
    let mq = rocketmq_streams_io::EmbeddedRocketMQ::start_with(rocketmq_streams_io::EmbeddedConfig::default())
        .expect("embedded broker");
    let client = ClientConfig::new(mq.namesrv_addr());
    let io = IoRuntime::named("bench-load", 1).expect("runtime");
    let options = Options {
        records: 2_000,
        words: 5,
        vocabulary: 50,
        shards: 1,
        limit: Duration::from_secs(120),
        ..Options::default()
    };
    (mq, client, io, options)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The harness end to end on a real (embedded) broker, kept small: the
    /// baseline and a scenario flat out twice (so repeats pair up), then one
    /// rated run.
    #[test]
    fn a_scenario_runs_with_repeats_against_the_baseline_on_a_broker() {
        let (_mq, client, io, small) = small_setup();
        let options = Options {
            repeats: 2,
            rates: vec![50.0],
            rated_for: Duration::from_secs(1),
            ..small
        };
        let runs = run(&io, &client, Scenario::WordCount, &options).expect("the runs complete");
        let labels: Vec<&str> = runs.iter().map(|r| r.label.as_str()).collect();
        assert_eq!(
            labels,
            [
                "pipe-baseline flat out",
                "wordcount flat out",
                "pipe-baseline flat out",
                "wordcount flat out",
                "wordcount at 50%",
                "wordcount at 50%",
            ]
        );
        for r in &runs {
            assert!(r.throughput() > 0.0, "{}: no throughput", r.label);
            assert!(r.cost.cpu_seconds > 0.0, "{}: no CPU counted", r.label);
        }
        // The job's threads did work in every run, counted apart.
        for r in &runs {
            let job = r
                .cost
                .cpu_by_class
                .get(&crate::machine::ThreadClass::Job)
                .copied()
                .unwrap_or(0.0);
            assert!(job > 0.0, "{}: {:?}", r.label, r.cost.cpu_by_thread);
        }
        let rated = &runs[4];
        let latency = rated.latency.as_ref().expect("rated runs measure latency");
        // Every word of every line offered came out with its stamp.
        assert_eq!(latency.len(), rated.records * 5);
        assert!(rated.offered_rate.is_some_and(|r| r > 0.0));
    }
}
