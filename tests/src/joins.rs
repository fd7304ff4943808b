//! The joins of the join tests: a Nexmark-style event stream (new persons
//! and their auctions, in one topic), Nexmark q3 (an unwindowed join of
//! auctions with their sellers) and q8 (new persons who opened an auction
//! in the same tumbling window, as a left join: those who did not come out
//! unmatched), and their references computed without the engine.

use std::collections::BTreeSet;
use std::path::Path;
use std::time::Duration;

use bytes::Bytes;
use rocketmq_streams::join::JoinWindows;
use rocketmq_streams::prelude::*;
use serde::{Deserialize, Serialize};

/// A new person.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Person {
    /// Person id.
    pub id: u64,
    /// Name.
    pub name: String,
    /// US state.
    pub state: String,
    /// Event time, ms.
    pub time: i64,
}

/// A new auction.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Auction {
    /// Auction id.
    pub id: u64,
    /// The person selling.
    pub seller: u64,
    /// Category.
    pub category: u64,
    /// Event time, ms.
    pub time: i64,
}

/// One event of the stream.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Event {
    /// A person joined.
    Person(Person),
    /// An auction opened.
    Auction(Auction),
}

impl Event {
    /// Event time, ms.
    pub fn time(&self) -> i64 {
        match self {
            Event::Person(p) => p.time,
            Event::Auction(a) => a.time,
        }
    }
}

const STATES: [&str; 6] = ["OR", "ID", "CA", "WA", "NY", "TX"];

/// q8's window: 2 s tumbling.
pub const Q8_WINDOW_MS: i64 = 2_000;
/// q8's grace: more than the events' disorder, so none is late.
pub const Q8_GRACE: Duration = Duration::from_secs(1);

/// `n` events 3 ms apart, each up to `disorder_ms` later than its place:
/// one in 8 a new person (ids from 1, in order), the others auctions by a
/// recent person, or by one that never joins (id 0: an auction with no
/// seller, unmatched).
pub fn events(n: usize, disorder_ms: u64) -> Vec<Event> {
    let mut x: u64 = 0x2545_F491_4F6C_DD1D;
    let mut persons = 0u64;
    (0..n)
        .map(|i| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let time = i as i64 * 3 + ((x >> 20) % disorder_ms.max(1)) as i64;
            if i % 8 == 0 {
                persons += 1;
                Event::Person(Person {
                    id: persons,
                    name: format!("p{persons}"),
                    state: STATES[(x % STATES.len() as u64) as usize].to_string(),
                    time,
                })
            } else {
                // One of the last 20 persons (or not yet a person: some
                // auctions find no seller in their window).
                let back = (x >> 8) % 24;
                Event::Auction(Auction {
                    id: i as u64,
                    seller: persons.saturating_sub(back),
                    category: (x >> 32) % 12,
                    time,
                })
            }
        })
        .collect()
}

/// The events as message bodies.
pub fn json(events: &[Event]) -> Vec<Bytes> {
    events
        .iter()
        .map(|e| Bytes::from(serde_json::to_vec(e).expect("an event is JSON")))
        .collect()
}

/// The two sides of `input`'s events, stamped with their event time.
pub fn sides(builder: &StreamBuilder, input: &str) -> (RStream<Person>, RStream<Auction>) {
    let events = builder
        .source(input, Json::<Event>::new())
        .select_timestamp(Event::time);
    let persons = events.flat_map(|e: Event| match e {
        Event::Person(p) => Some(p),
        Event::Auction(_) => None,
    });
    let auctions = events.flat_map(|e: Event| match e {
        Event::Auction(a) => Some(a),
        Event::Person(_) => None,
    });
    (persons, auctions)
}

/// q3's result: (auction id, seller name, seller state).
pub type Q3 = (u64, String, String);

fn q3_person(p: &Person) -> bool {
    ["OR", "ID", "CA"].contains(&p.state.as_str())
}

fn q3_auction(a: &Auction) -> bool {
    a.category == 10
}

/// Nexmark q3: auctions of category 10 joined (unwindowed) with their
/// sellers from Oregon, Idaho or California.
pub fn q3(builder: &StreamBuilder, input: &str) -> RStream<Q3> {
    let (persons, auctions) = sides(builder, input);
    auctions
        .filter(q3_auction)
        .join(&persons.filter(q3_person))
        .on(|a: &Auction| a.seller, |p: &Person| p.id)
        .apply(|a, p| (a.id, p.name.clone(), p.state.clone()))
}

/// q3's results, computed without the engine.
pub fn q3_reference(events: &[Event]) -> BTreeSet<Q3> {
    let persons: Vec<&Person> = events
        .iter()
        .filter_map(|e| match e {
            Event::Person(p) if q3_person(p) => Some(p),
            _ => None,
        })
        .collect();
    let mut out = BTreeSet::new();
    for e in events {
        if let Event::Auction(a) = e {
            if q3_auction(a) {
                for p in persons.iter().filter(|p| p.id == a.seller) {
                    out.insert((a.id, p.name.clone(), p.state.clone()));
                }
            }
        }
    }
    out
}

/// q8's result: (person id, window start, auction id; `None` for a person
/// who opened no auction in the window).
pub type Q8 = (u64, i64, Option<u64>);

fn window_start(t: i64) -> i64 {
    t.div_euclid(Q8_WINDOW_MS) * Q8_WINDOW_MS
}

/// Nexmark q8 as a left join: each new person with each auction they
/// opened in the same tumbling window, and those who opened none there
/// (a quiet stream's windows close after `idle`; `Duration::MAX`: on
/// records only).
pub fn q8(builder: &StreamBuilder, input: &str, idle: Duration) -> RStream<Q8> {
    let (persons, auctions) = sides(builder, input);
    persons
        .left_join(&auctions)
        .on(|p: &Person| p.id, |a: &Auction| a.seller)
        .within(
            Window::tumbling(Duration::from_millis(Q8_WINDOW_MS as u64))
                .grace(Q8_GRACE)
                .idle_timeout(idle),
        )
        .apply(|p, a| (p.id, window_start(p.time), a.map(|a| a.id)))
}

/// q8's results, computed without the engine.
pub fn q8_reference(events: &[Event]) -> BTreeSet<Q8> {
    let auctions: Vec<&Auction> = events
        .iter()
        .filter_map(|e| match e {
            Event::Auction(a) => Some(a),
            Event::Person(_) => None,
        })
        .collect();
    let mut out = BTreeSet::new();
    for e in events {
        if let Event::Person(p) = e {
            let w = window_start(p.time);
            let mut matched = false;
            for a in auctions
                .iter()
                .filter(|a| a.seller == p.id && window_start(a.time) == w)
            {
                out.insert((p.id, w, Some(a.id)));
                matched = true;
            }
            if !matched {
                out.insert((p.id, w, None));
            }
        }
    }
    out
}

/// The q8 results in `bodies` (JSON, repeats allowed), as a set.
///
/// # Panics
///
/// On a body that is no result, or a person both matched and unmatched
/// in one window (an unmatched record emitted too early).
pub fn q8_results(bodies: &[Bytes]) -> BTreeSet<Q8> {
    let out: BTreeSet<Q8> = bodies
        .iter()
        .map(|b| serde_json::from_slice(b).expect("a q8 result"))
        .collect();
    for &(p, w, a) in &out {
        if a.is_none() {
            assert!(
                !out.iter().any(|&(q, v, b)| q == p && v == w && b.is_some()),
                "person {p} emitted unmatched in window {w}, and matched"
            );
        }
    }
    out
}

/// A windowed join whose unmatched records must come out by idle firing:
/// times within 500 ms, a 1 s window and a 2 s grace.
pub fn quick_window() -> JoinWindows {
    JoinWindows::of(Duration::from_secs(1)).grace(Duration::from_secs(2))
}

/// Waits (at most 60 s) until no shard of `runtimes` keeps a join record
/// (the `join_records` gauge): the last windows' state went, by records
/// or by idle steps, which emit nothing for records that joined. What is
/// on disk then is for [`kept_join_records`] to say, the jobs stopped.
pub fn await_join_state_gone(runtimes: &[&StreamRuntime]) -> bool {
    crate::wait_for(Duration::from_secs(60), || {
        let kept: u64 = runtimes.iter().map(|r| r.metrics().total(|s| s.join_records)).sum();
        (kept == 0).then_some(())
    })
    .is_some()
}

/// How many join records (a side's kept record) the stores under
/// `state_dir` hold, the job stopped: keys `[node][0x10 | 0x11]...`
/// longer than the engine's own.
///
/// # Panics
///
/// If a store cannot be opened or read.
pub fn kept_join_records(state_dir: &Path) -> usize {
    let mut n = 0;
    for entry in std::fs::read_dir(state_dir).expect("state dir") {
        let path = entry.expect("entry").path();
        if !path.is_dir() {
            continue;
        }
        let store = rocketmq_streams_state::QueueStore::open(&path, 16).expect("open a queue's store");
        n += store
            .keys_with_prefix(&[])
            .expect("keys")
            .iter()
            .filter(|k| k.len() > 7 && k[0] != 0xFF && (k[2] == 0x10 || k[2] == 0x11))
            .count();
    }
    n
}
