//! In-process scenarios: no broker, the engine alone on one shard's worth
//! of work, with a timely-dataflow peer in the same process.
//!
//! The engine path measured is the [`TopologyTestDriver`]: the same
//! operators a shard runs, single-threaded, with keyed records framed into
//! an in-memory shuffle topic (encoded and decoded as on a broker, high-water
//! marks included) and real stores (write-back cache over RocksDB) for keyed
//! stages; no broker, no bridge, no shard scheduling. Inputs are generated
//! into memory (JSON bodies) before the clock starts, so the generator is
//! not measured; outputs are counted and dropped every 1,024 inputs, not
//! kept; the driver commits every 65,536 inputs and at the end, as the
//! runtime checkpoints every interval. The timely peer gets the same bodies
//! and does the same work (parse the JSON, compute, serialize) on one
//! timely worker; its word count
//! exchanges words by key (an `Exchange` pact on the word's hash) into an
//! operator that keeps a count per word.
//!
//! Queries (Nexmark bids, from the `nexmark` crate's generator):
//! - q0: pass-through (parse and serialize the bid);
//! - q1: currency conversion (price × 0.908);
//! - q2: selection (auction % 123 == 0, keep auction and price);
//! - count: bids per auction (`key_by → count`);
//! - wordcount: lines of words → `key_by → count`;
//! - q5: bids per auction in hopping windows (10 s every 2 s) of the bids'
//!   event time, emitted as windows close (`key_by → window → count`);
//! - q7: the highest bid per tumbling window of 10 s (`key_by` one key →
//!   `window → max`);
//! - q3, q8: joins of persons and auctions (see [`crate::joins`]).
//!
//! The windowed queries' results come as windows close (a window's end
//! passes the stream time of its shuffle queue); the last windows of the
//! input stay open and are not counted.

use std::cell::Cell;
use std::collections::HashMap;
use std::rc::Rc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use nexmark::event::{Bid, Event, EventType};
use rocketmq_streams::prelude::*;

use crate::machine::{Meter, ThreadClass};
use crate::report::Run;

/// Inputs (in chunks of 1,024) between two commits of the test driver,
/// which encode the keyed state updated since the last (as a checkpoint
/// does): 64 chunks, 65,536 inputs, under a second's worth at the rates
/// measured, so state is encoded at least as often as on a broker.
const COMMIT_EVERY_CHUNKS: usize = 64;

/// An in-process query.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Query {
    /// Pass-through.
    Q0,
    /// Currency conversion.
    Q1,
    /// Selection.
    Q2,
    /// Bids per auction.
    Count,
    /// Word count over lines.
    WordCount,
    /// Hot items: bids per auction in hopping windows of 10 s every 2 s
    /// (event time: the bid's `date_time`).
    Q5,
    /// Highest bid in tumbling windows of 10 s.
    Q7,
    /// Auctions of category 10 with their sellers of OR, ID or CA
    /// (unwindowed join).
    Q3,
    /// New persons with the auctions they opened in the same 10 s window
    /// (tumbling-window join).
    Q8,
}

impl Query {
    /// The scenario name.
    pub fn name(self) -> &'static str {
        match self {
            Query::Q0 => "nexmark-q0",
            Query::Q1 => "nexmark-q1",
            Query::Q2 => "nexmark-q2",
            Query::Count => "nexmark-count",
            Query::WordCount => "inproc-wordcount",
            Query::Q5 => "nexmark-q5",
            Query::Q7 => "nexmark-q7",
            Query::Q3 => "nexmark-q3",
            Query::Q8 => "nexmark-q8",
        }
    }

    /// Whether a timely peer of this query exists.
    pub fn has_timely_peer(self) -> bool {
        matches!(self, Query::Q1 | Query::WordCount)
    }
}

/// `n` bids as JSON bodies, generated before any timing.
pub fn bids(n: usize) -> Vec<Bytes> {
    // Bids only, through the generator's type filter (it computes each bid's
    // event number instead of generating and discarding the other events).
    // `EventGenerator::new`, not `default()`: the derived default has a step
    // of 0 and yields the same event forever.
    nexmark::EventGenerator::new(nexmark::config::NexmarkConfig::default())
        .with_type_filter(EventType::Bid)
        .take(n)
        .filter_map(|e| match e {
            Event::Bid(b) => serde_json::to_vec(&b).ok().map(Bytes::from),
            _ => None,
        })
        .collect()
}

/// `n` lines of 10 words over a vocabulary of 10,000.
pub fn lines(n: usize) -> Vec<Bytes> {
    (0..n as u64)
        .map(|i| crate::load::stamped_line(i, 0, 10, 10_000))
        .collect()
}

fn euro(price: usize) -> usize {
    price * 908 / 1000
}

fn hash(word: &str) -> u64 {
    use std::hash::{BuildHasher, BuildHasherDefault, DefaultHasher};
    BuildHasherDefault::<DefaultHasher>::default().hash_one(word)
}

fn words(line: &str) -> impl Iterator<Item = &str> {
    // The leading `@stamp` token is not a word.
    line.split(' ').skip(1)
}

/// Runs `query` on the engine (the test driver) over `input`.
///
/// # Errors
///
/// A topology that does not build or a record the driver rejects.
pub fn engine(query: Query, input: &[Bytes]) -> Result<(Run, u64), String> {
    let builder = StreamBuilder::new("inproc");
    match query {
        Query::Q0 => builder.source("in", Json::<Bid>::new()).sink("out", Json::<Bid>::new()),
        Query::Q1 => builder
            .source("in", Json::<Bid>::new())
            .map(|mut b: Bid| {
                b.price = euro(b.price);
                b
            })
            .sink("out", Json::<Bid>::new()),
        Query::Q2 => builder
            .source("in", Json::<Bid>::new())
            .filter(|b: &Bid| b.auction % 123 == 0)
            .map(|b: Bid| (b.auction, b.price))
            .sink("out", Json::<(usize, usize)>::new()),
        Query::Count => builder
            .source("in", Json::<Bid>::new())
            .key_by(|b: &Bid| b.auction)
            .count()
            .sink("out", Json::<(usize, u64)>::new()),
        Query::Q5 => builder
            .source("in", Json::<Bid>::new())
            .select_timestamp(|b: &Bid| b.date_time as i64)
            .key_by(|b: &Bid| b.auction)
            .window(Window::hopping(Duration::from_secs(10), Duration::from_secs(2)))
            .count()
            .sink("out", Json::<(Windowed<usize>, u64)>::new()),
        Query::Q7 => builder
            .source("in", Json::<Bid>::new())
            .select_timestamp(|b: &Bid| b.date_time as i64)
            .key_by(|_: &Bid| 0u8)
            .window(Window::tumbling(Duration::from_secs(10)))
            .max(|b: &Bid| b.price)
            .sink("out", Json::<(Windowed<u8>, usize)>::new()),
        Query::Q3 => crate::joins::q3(&builder, "in", "out"),
        Query::Q8 => crate::joins::q8(&builder, "in", "out"),
        Query::WordCount => builder
            .source("in", Utf8)
            .flat_map(|line: String| words(&line).map(str::to_owned).collect::<Vec<_>>())
            .key_by(|w: &String| w.clone())
            .count()
            .sink("out", Json::<(String, u64)>::new()),
    }
    let mut driver = TopologyTestDriver::new(builder.build().map_err(|e| e.to_string())?);
    measure(&format!("{} engine (test driver)", query.name()), input.len(), || {
        let mut out = 0;
        for (round, chunk) in input.chunks(1024).enumerate() {
            for (i, body) in chunk.iter().enumerate() {
                driver
                    .pipe_input("in", body.clone(), (round * 1024 + i) as i64)
                    .map_err(|e| e.to_string())?;
            }
            // The runtime commits every interval (1 s by default, tens of
            // thousands of inputs here): keyed state is encoded then.
            if round % COMMIT_EVERY_CHUNKS == COMMIT_EVERY_CHUNKS - 1 {
                driver.commit().map_err(|e| e.to_string())?;
            }
            out += driver.read_output("out").len() as u64;
        }
        driver.commit().map_err(|e| e.to_string())?;
        out += driver.read_output("out").len() as u64;
        Ok(out)
    })
}

/// Runs `query` on one timely-dataflow worker over `input`.
///
/// # Errors
///
/// A query without a timely peer.
pub fn timely_peer(query: Query, input: &[Bytes]) -> Result<(Run, u64), String> {
    if !query.has_timely_peer() {
        return Err(format!("{} has no timely peer", query.name()));
    }
    let bodies: Vec<Vec<u8>> = input.iter().map(|b| b.to_vec()).collect();
    measure(
        &format!("{} timely (1 worker)", query.name()),
        bodies.len(),
        move || {
            Ok(timely::execute_directly(move |worker| {
                use timely::dataflow::channels::pact::Exchange;
                use timely::dataflow::operators::vec::Map;
                use timely::dataflow::operators::{Inspect, Operator, Probe};
                use timely::dataflow::{InputHandle, ProbeHandle};

                let mut input = InputHandle::new();
                let probe = ProbeHandle::new();
                let out = Rc::new(Cell::new(0u64));
                let seen = out.clone();
                worker.dataflow::<usize, _, _>(|scope| {
                    let stream = input.to_stream(scope);
                    match query {
                        Query::Q1 => {
                            stream
                                .flat_map(|body: Vec<u8>| {
                                    serde_json::from_slice::<Bid>(&body).ok().and_then(|mut b| {
                                        b.price = euro(b.price);
                                        serde_json::to_vec(&b).ok()
                                    })
                                })
                                .inspect(move |_| seen.set(seen.get() + 1))
                                .probe_with(&probe);
                        }
                        _ => {
                            stream
                                .flat_map(|body: Vec<u8>| {
                                    String::from_utf8(body)
                                        .map(|line| words(&line).map(str::to_owned).collect::<Vec<_>>())
                                        .unwrap_or_default()
                                })
                                .unary(
                                    Exchange::new(|w: &String| hash(w)),
                                    "WordCount",
                                    |_capability, _info| {
                                        let mut counts: HashMap<String, u64> = HashMap::new();
                                        move |input, output| {
                                            input.for_each_stamp(|cap, data| {
                                                let mut session = output.session(&cap);
                                                for batch in data {
                                                    for word in batch.drain(..) {
                                                        let count = counts.entry(word.clone()).or_insert(0);
                                                        *count += 1;
                                                        if let Ok(update) = serde_json::to_vec(&(word, *count)) {
                                                            session.give(update);
                                                        }
                                                    }
                                                }
                                            });
                                        }
                                    },
                                )
                                .container::<Vec<_>>()
                                .inspect(move |_| seen.set(seen.get() + 1))
                                .probe_with(&probe);
                        }
                    }
                });
                for (round, chunk) in bodies.chunks(1024).enumerate() {
                    for body in chunk {
                        input.send(body.clone());
                    }
                    input.advance_to(round + 1);
                    while probe.less_than(input.time()) {
                        worker.step();
                    }
                }
                out.get()
            }))
        },
    )
}

/// Times `work`, which returns how many records came out; the run and that
/// count.
fn measure(label: &str, records: usize, work: impl FnOnce() -> Result<u64, String>) -> Result<(Run, u64), String> {
    let meter = Meter::start();
    let started = Instant::now();
    let out = work()?;
    let seconds = started.elapsed().as_secs_f64();
    if out == 0 {
        return Err(format!("{label}: no output from {records} records"));
    }
    let run = Run {
        label: label.to_string(),
        offered_rate: None,
        records: records as u64,
        seconds,
        latency: None,
        cost: {
            // In-process, the whole process is the job.
            let mut cost = meter.cost();
            cost.cpu_by_class = [(ThreadClass::Job, cost.cpu_seconds)].into();
            cost
        },
    };
    Ok((run, out))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_engine_and_the_timely_peer_agree_on_q1_and_wordcount() {
        let input = bids(2_000);
        assert_eq!(input.len(), 2_000);
        let (_, engine_out) = engine(Query::Q1, &input).expect("engine");
        let (_, timely_out) = timely_peer(Query::Q1, &input).expect("timely");
        assert_eq!((engine_out, timely_out), (2_000, 2_000));
        let text = lines(500);
        let (_, engine_out) = engine(Query::WordCount, &text).expect("engine");
        let (_, timely_out) = timely_peer(Query::WordCount, &text).expect("timely");
        assert_eq!((engine_out, timely_out), (5_000, 5_000), "one update per word");
        let (_, counts) = engine(Query::Count, &input).expect("count");
        assert_eq!(counts, 2_000, "one count update per bid");
        assert!(timely_peer(Query::Q0, &input).is_err(), "no timely q0");
    }

    #[test]
    fn the_windowed_queries_emit_closed_windows() {
        // The generator's bids are 11 µs apart: 200,000 span 22 s.
        let input = bids(200_000);
        let times: Vec<i64> = input
            .iter()
            .map(|b| serde_json::from_slice::<Bid>(b).expect("a bid").date_time as i64)
            .collect();
        let span = times.iter().max().expect("bids") - times.iter().min().expect("bids");
        assert!(span > 20_000, "the bids span {span} ms: windows close");
        let (_, windows) = engine(Query::Q7, &input).expect("q7");
        // Every 10 s window but the last, which stays open.
        assert!(
            windows >= (span / 10_000) as u64 - 1 && windows <= (span / 10_000) as u64 + 1,
            "{windows}"
        );
        let (_, counts) = engine(Query::Q5, &input).expect("q5");
        assert!(counts > windows, "per auction and window: {counts}");
    }

    #[test]
    fn generated_bids_spread_over_auctions_so_q2_selects_some() {
        let input = bids(20_000);
        let auctions: std::collections::HashSet<usize> = input
            .iter()
            .map(|b| serde_json::from_slice::<Bid>(b).expect("a bid").auction)
            .collect();
        assert!(auctions.len() > 100, "only {} distinct auctions", auctions.len());
        let (_, selected) = engine(Query::Q2, &input).expect("q2");
        let expected = input
            .iter()
            .filter(|b| serde_json::from_slice::<Bid>(b).expect("a bid").auction % 123 == 0)
            .count() as u64;
        assert!(expected > 0);
        assert_eq!(selected, expected);
    }
}
