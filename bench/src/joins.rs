//! The join scenarios, Nexmark q3 and q8, in-process and on the broker.
//!
//! - **q3** (local item suggestion): auctions of category 10 joined with
//!   their sellers from Oregon, Idaho or California; an unwindowed inner
//!   join whose state is never deleted (Nexmark's q3 joins against every
//!   person so far).
//! - **q8** (monitor new users): each new person with each auction they
//!   opened in the same 10 s tumbling window; a windowed inner join whose
//!   state goes as windows close. (Nexmark's q8 emits a person once per
//!   window; this one emits the pairs, one per auction, which is the
//!   join's own work.)
//!
//! In-process, the events are the `nexmark` crate's persons and auctions
//! (its generator's proportions, 1 person to 3 auctions, bids left out),
//! their event time the generator's `date_time`. On the broker they are
//! [`StampedEvent`]s: a person every 4th record, the others auctions by
//! one of the 10 newest persons; each result carries the produce stamp of
//! the later of its two records, the one whose arrival made it, so its
//! latency is measured from there. Their event time there is not their
//! stamp but a function of the sequence number ([`PER_MS`] records a
//! millisecond), so which records share a window, and so how many results
//! a run has, does not depend on when they were sent.

use std::time::Duration;

use bytes::Bytes;
use nexmark::event::{Auction, Event, EventType, Person};
use rocketmq_streams::prelude::*;

/// q8's window.
pub const Q8_WINDOW: Duration = Duration::from_secs(10);

/// Broker join scenarios: records per millisecond of event time (a q8
/// window holds 100,000; the grace allows 300,000 of disorder).
pub const PER_MS: u64 = 10;

/// Lateness the broker join scenarios allow: the input queues' records
/// interleave out of event-time order through the shuffle.
const GRACE: Duration = Duration::from_secs(30);

/// `n` persons and auctions, in event-time order, as JSON `Event`s.
pub fn events(n: usize) -> Vec<Bytes> {
    let config = nexmark::config::NexmarkConfig::default;
    let of = |kind: EventType, n: usize| nexmark::EventGenerator::new(config()).with_type_filter(kind).take(n);
    // The generator's proportions: 1 person to 3 auctions.
    let persons: Vec<Event> = of(EventType::Person, n / 4).collect();
    let auctions: Vec<Event> = of(EventType::Auction, n - n / 4).collect();
    let mut all: Vec<Event> = persons.into_iter().chain(auctions).collect();
    all.sort_by_key(Event::timestamp);
    all.iter()
        .filter_map(|e| serde_json::to_vec(e).ok().map(Bytes::from))
        .collect()
}

fn person(e: Event) -> Option<Person> {
    match e {
        Event::Person(p) => Some(p),
        _ => None,
    }
}

fn auction(e: Event) -> Option<Auction> {
    match e {
        Event::Auction(a) => Some(a),
        _ => None,
    }
}

fn q3_person(p: &Person) -> bool {
    ["or", "id", "ca"].contains(&p.state.to_ascii_lowercase().as_str())
}

fn q3_auction(a: &Auction) -> bool {
    a.category == 10
}

fn window_start(t: i64) -> i64 {
    let size = Q8_WINDOW.as_millis() as i64;
    t.div_euclid(size) * size
}

/// In-process q3 on `builder`, from `input` to `output`: (name, city,
/// state, auction id).
pub fn q3(builder: &StreamBuilder, input: &str, output: &str) {
    let events = builder
        .source(input, Json::<Event>::new())
        .select_timestamp(|e: &Event| e.timestamp() as i64);
    let persons = events.flat_map(person).filter(q3_person);
    events
        .flat_map(auction)
        .filter(q3_auction)
        .join(&persons)
        .on(|a: &Auction| a.seller, |p: &Person| p.id)
        .apply(|a, p| (p.name.clone(), p.city.clone(), p.state.clone(), a.id))
        .sink(output, Json::<(String, String, String, usize)>::new());
}

/// In-process q8 on `builder`: (person id, name, window start, auction id).
pub fn q8(builder: &StreamBuilder, input: &str, output: &str) {
    let events = builder
        .source(input, Json::<Event>::new())
        .select_timestamp(|e: &Event| e.timestamp() as i64);
    events
        .flat_map(person)
        .join(&events.flat_map(auction))
        .on(|p: &Person| p.id, |a: &Auction| a.seller)
        .within(Window::tumbling(Q8_WINDOW))
        .apply(|p, a| (p.id, p.name.clone(), window_start(p.date_time as i64), a.id))
        .sink(output, Json::<(usize, String, i64, usize)>::new());
}

/// What q3 and q8 give on `input` (of [`events`]), computed without the
/// engine: (q3 results, q8 results).
pub fn reference(input: &[Bytes]) -> (u64, u64) {
    let events: Vec<Event> = input.iter().filter_map(|b| serde_json::from_slice(b).ok()).collect();
    let persons: Vec<&Person> = events
        .iter()
        .filter_map(|e| match e {
            Event::Person(p) => Some(p),
            _ => None,
        })
        .collect();
    let (mut q3, mut q8) = (0, 0);
    for e in &events {
        if let Event::Auction(a) = e {
            for p in persons.iter().filter(|p| p.id == a.seller) {
                q3 += u64::from(q3_auction(a) && q3_person(p));
                q8 += u64::from(window_start(p.date_time as i64) == window_start(a.date_time as i64));
            }
        }
    }
    (q3, q8)
}

/// An event of the broker join scenarios, as JSON.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub enum StampedEvent {
    /// A new person.
    Person {
        /// Person id.
        id: u64,
        /// US state.
        state: String,
        /// Produce stamp, ns since the epoch.
        stamp: u64,
        /// Sequence number (its event time is `seq / PER_MS` ms).
        seq: u64,
    },
    /// A new auction.
    Auction {
        /// Auction id.
        id: u64,
        /// The person selling.
        seller: u64,
        /// Category, 10 to 14.
        category: u64,
        /// Produce stamp, ns since the epoch.
        stamp: u64,
        /// Sequence number (its event time is `seq / PER_MS` ms).
        seq: u64,
    },
}

impl StampedEvent {
    fn seq(&self) -> u64 {
        match self {
            StampedEvent::Person { seq, .. } | StampedEvent::Auction { seq, .. } => *seq,
        }
    }

    fn stamp(&self) -> u64 {
        match self {
            StampedEvent::Person { stamp, .. } | StampedEvent::Auction { stamp, .. } => *stamp,
        }
    }

    fn event_time(&self) -> i64 {
        (self.seq() / PER_MS) as i64
    }
}

const STATES: [&str; 6] = ["AZ", "CA", "ID", "OR", "WA", "WY"];

fn mix(seq: u64) -> u64 {
    let mut x = seq.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    x
}

/// Person `id`'s state.
fn state_of(id: u64) -> &'static str {
    STATES[(mix(id ^ 0x5555) % STATES.len() as u64) as usize]
}

/// Event `seq`: a person every 4th (id `seq / 4`), the others auctions
/// (id `seq`) by one of the 10 newest persons.
fn stamped(seq: u64, stamp: u64) -> StampedEvent {
    let x = mix(seq);
    if seq.is_multiple_of(4) {
        StampedEvent::Person {
            id: seq / 4,
            state: state_of(seq / 4).to_string(),
            stamp,
            seq,
        }
    } else {
        StampedEvent::Auction {
            id: seq,
            seller: (seq / 4).saturating_sub(x % 10),
            category: 10 + (x >> 8) % 5,
            stamp,
            seq,
        }
    }
}

/// Event `seq`, stamped `stamp`, as JSON.
pub fn stamped_event(seq: u64, stamp: u64) -> Bytes {
    Bytes::from(serde_json::to_vec(&stamped(seq, stamp)).unwrap_or_default())
}

/// Results of the broker q3 and q8 on events `0..n`: (q3, q8).
pub fn stamped_expected(n: u64) -> (u64, u64) {
    let (mut q3, mut q8) = (0, 0);
    for seq in 0..n {
        if let StampedEvent::Auction { seller, category, .. } = stamped(seq, 0) {
            // The seller's record: `seller * 4 ≤ seq`, sent before.
            let person = stamped(seller * 4, 0);
            q3 += u64::from(category == 10 && ["OR", "ID", "CA"].contains(&state_of(seller)));
            q8 += u64::from(window_start(person.event_time()) == window_start((seq / PER_MS) as i64));
        }
    }
    (q3, q8)
}

/// The broker q3 (`q8: false`) or q8 on `builder`: results `[[ids], stamp]`,
/// the stamp the later record's.
pub fn stamped_query(builder: &StreamBuilder, input: &str, output: &str, q8: bool) {
    let events = builder
        .source(input, Json::<StampedEvent>::new())
        .select_timestamp(StampedEvent::event_time);
    let persons = events.filter(|e| matches!(e, StampedEvent::Person { .. }));
    let auctions = events.filter(|e| matches!(e, StampedEvent::Auction { .. }));
    let seller = |e: &StampedEvent| match e {
        StampedEvent::Auction { seller, .. } => *seller,
        StampedEvent::Person { id, .. } => *id,
    };
    let ids = move |p: &StampedEvent, a: &StampedEvent| ((seller(p), a.seq()), p.stamp().max(a.stamp()));
    if q8 {
        persons
            .join(&auctions)
            .on(seller, seller)
            .within(Window::tumbling(Q8_WINDOW).grace(GRACE))
            .apply(ids)
            .sink(output, Json::<((u64, u64), u64)>::new());
    } else {
        let local = |e: &StampedEvent| match e {
            StampedEvent::Person { state, .. } => ["OR", "ID", "CA"].contains(&state.as_str()),
            StampedEvent::Auction { category, .. } => *category == 10,
        };
        auctions
            .filter(local)
            .join(&persons.filter(local))
            .on(seller, seller)
            .apply(move |a, p| ids(p, a))
            .sink(output, Json::<((u64, u64), u64)>::new());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(query: fn(&StreamBuilder, &str, &str), input: &[Bytes]) -> u64 {
        let builder = StreamBuilder::new("joins");
        query(&builder, "in", "out");
        let mut driver = TopologyTestDriver::new(builder.build().expect("topology"));
        for (i, body) in input.iter().enumerate() {
            driver.pipe_input("in", body.clone(), i as i64).expect("pipe");
        }
        driver.read_output("out").len() as u64
    }

    #[test]
    fn the_in_process_joins_give_what_their_reference_gives() {
        let input = events(20_000);
        let (q3_ref, q8_ref) = reference(&input);
        assert!(q3_ref > 10 && q8_ref > 1_000, "{q3_ref} {q8_ref}");
        assert_eq!(run(q3, &input), q3_ref);
        assert_eq!(run(q8, &input), q8_ref);
    }

    #[test]
    fn the_broker_joins_give_what_their_reference_gives_in_any_order() {
        let n = 4_000u64;
        // Auctions may come before their seller (another input queue).
        let mut order: Vec<u64> = (0..n).collect();
        order.sort_by_key(|&s| mix(s) % 64 + s / 64);
        let input: Vec<Bytes> = order.iter().map(|&s| stamped_event(s, s)).collect();
        let (q3_ref, q8_ref) = stamped_expected(n);
        assert!(q3_ref > 50 && q8_ref > 2_000, "{q3_ref} {q8_ref}");
        for (q8, want) in [(false, q3_ref), (true, q8_ref)] {
            let builder = StreamBuilder::new("joins");
            stamped_query(&builder, "in", "out", q8);
            let mut driver = TopologyTestDriver::new(builder.build().expect("topology"));
            for body in &input {
                driver.pipe_input("in", body.clone(), 0).expect("pipe");
            }
            assert_eq!(driver.read_output("out").len() as u64, want, "q8: {q8}");
        }
    }
}
