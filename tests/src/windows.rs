//! The windowed jobs of the window tests: Nexmark-style bids, a
//! hopping-window count per auction (Nexmark q5's "hot items"), and its
//! reference computed without the engine.

use std::collections::BTreeMap;
use std::time::Duration;

use bytes::Bytes;
use rocketmq_streams::prelude::*;
use rocketmq_streams::window::FixedWindows;
use serde::{Deserialize, Serialize};

/// Auctions the bids go to.
pub const AUCTIONS: u64 = 30;
/// Far after every bid: a bid at this time closes every window of the
/// bids before it.
pub const CLOSER: i64 = 10_000_000;
/// q5's window: 4 s, advancing by 2 s.
pub const SIZE_MS: i64 = 4_000;
/// q5's window advance.
pub const ADVANCE_MS: i64 = 2_000;
/// The grace of the crash tests' q5 (`window-job`): more than the bids'
/// disorder, so no bid is late however the job is interrupted.
pub const CRASH_GRACE: Duration = Duration::from_secs(1);

/// A bid, as JSON on the input topic.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Bid {
    /// The auction bid on.
    pub auction: u64,
    /// The price.
    pub price: u64,
    /// Event time, ms.
    pub time: i64,
}

/// `n` bids 3 ms apart, each up to `disorder_ms` later than its place
/// (so out of order by at most that much), over [`AUCTIONS`] auctions.
pub fn bids(n: usize, disorder_ms: u64) -> Vec<Bid> {
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    (0..n)
        .map(|i| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            Bid {
                auction: x % AUCTIONS,
                price: (x >> 8) % 10_000,
                time: i as i64 * 3 + ((x >> 20) % disorder_ms) as i64,
            }
        })
        .collect()
}

/// One bid per auction at [`CLOSER`].
pub fn closers() -> Vec<Bid> {
    (0..AUCTIONS)
        .map(|auction| Bid {
            auction,
            price: 0,
            time: CLOSER,
        })
        .collect()
}

/// The bids as message bodies.
pub fn json(bids: &[Bid]) -> Vec<Bytes> {
    bids.iter()
        .map(|b| Bytes::from(serde_json::to_vec(b).expect("a bid is JSON")))
        .collect()
}

/// The bids per (auction, window start) of q5's hopping windows.
pub fn q5_reference(bids: &[Bid]) -> BTreeMap<(u64, i64), u64> {
    let mut counts = BTreeMap::new();
    for b in bids {
        let last = b.time.div_euclid(ADVANCE_MS) * ADVANCE_MS;
        let mut start = last;
        while start > b.time - SIZE_MS {
            *counts.entry((b.auction, start)).or_default() += 1;
            start -= ADVANCE_MS;
        }
    }
    counts
}

/// q5 on `builder`: bids of `input` (event time their `time`), counted
/// per auction in hopping windows with `grace`.
pub fn q5(builder: &StreamBuilder, input: &str, grace: Duration) -> GroupedStream<Windowed<u64>, u64> {
    builder
        .source(input, Json::<Bid>::new())
        .select_timestamp(|b: &Bid| b.time)
        .key_by(|b: &Bid| b.auction)
        .window(q5_window(grace))
        .count()
}

/// q5's hopping windows, with `grace`.
pub fn q5_window(grace: Duration) -> FixedWindows {
    Window::hopping(
        Duration::from_millis(SIZE_MS as u64),
        Duration::from_millis(ADVANCE_MS as u64),
    )
    .grace(grace)
}

/// Every window's result in `results` (JSON `[windowed, count]`, in any
/// order, repeats allowed), by (auction, window start); a window that
/// comes twice with two values is a panic (results may repeat after a
/// crash, never change).
///
/// # Panics
///
/// On a body that is no result, or a window with two values.
pub fn q5_results(results: &[Bytes]) -> BTreeMap<(u64, i64), u64> {
    let mut out = BTreeMap::new();
    for body in results {
        let (w, n): (Windowed<u64>, u64) = serde_json::from_slice(body).expect("a windowed count");
        if let Some(old) = out.insert((w.key, w.window.start), n) {
            assert_eq!(old, n, "window {w:?} emitted {old}, then {n}");
        }
    }
    out
}
