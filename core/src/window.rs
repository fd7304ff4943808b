//! Event-time windows: what a windowed aggregation groups by, and what its
//! results carry.
//!
//! A windowed aggregation (`GroupedStream::window(spec)` then `count`,
//! `sum`, ...) keeps one state per key and window, in the queue's store
//! like every other state. Time is **event time**: the record's timestamp
//! (`select_timestamp`, or the message's born timestamp), which travels
//! with the record through the shuffle.
//!
//! ```text
//!  records of a shuffle queue ──► stream time = max event time seen (state of the queue;
//!                                   on a quiet queue, the wall clock moves it on)
//!                                   watermark  = stream time − grace
//!  record at t ──► its windows ──► late (end + grace ≤ stream time)? ── counted, error policy ("late")
//!                                   else: fold into the window's state
//!  after each shuffle frame: windows with end ≤ watermark fire (emit, then their state is deleted)
//! ```
//!
//! Windows are half-open, `[start, end)` in milliseconds. Fixed windows
//! (tumbling, hopping) are aligned to the epoch: a hopping window of size
//! 10 s advancing by 5 s covers `[0, 10 s)`, `[5 s, 15 s)`, ...
//!
//! **Late records.** A record is late for a window once that window has
//! closed: its end plus the grace period is at or below the stream time
//! (so the window has fired and its state is gone). Comparing the record's
//! own time with the watermark instead, as RocketMQ Streams does (its
//! issue #290), drops records whose window is still open. A record late
//! for every one of its windows goes to the error policy (skipped or
//! dead-lettered, with the reason `late`; under `ErrorPolicy::Fail` it
//! stops the job like any failed record); a hopping record late for some
//! of its windows only is folded into the others.
//!
//! **Sliding windows** ([`Window::sliding`]) are Kafka Streams': driven by
//! the records, one window per distinct set of a key's records at most
//! the difference apart. The operator keeps one state per key and record
//! time and merges them when a window closes.
//!
//! **Idle firing.** A stream that goes quiet would leave its last windows
//! open until its next record. Once a shuffle queue has had no record for
//! the window's idle timeout (default 2 s, RocketMQ Streams'
//! `idleTimeToFireWindow`; [`FixedWindows::idle_timeout`]), and the job's
//! whole input is consumed (the queue, and the consumer group's committed
//! offsets on every source topic, the shuffle topic included, at their
//! ends), its stream time follows the wall clock: the stream time its
//! records made plus the time it has been idle. The step is checkpointed
//! before the windows it closes fire, and numbered, so a restart in
//! between fires the same results under the same numbers. A record that
//! comes later for a window fired that way is late, like any other.
//!
//! **Processing time** instead of event time:
//! `RStream::with_processing_time` stamps each record with the wall clock
//! where it is processed (a replay after a failure may stamp it again,
//! into another window).
//!
//! **Stream time is state**: it is kept in the queue's store, checkpointed
//! and restored with the window states, so a restarted or migrated queue
//! fires and drops exactly as the uninterrupted one would (RocketMQ
//! Streams lost it on migration, its issue #265). Windows fire after the
//! shuffle frame whose records moved the stream time, each result
//! numbered by its place after that frame: a replay emits the same results
//! (at-least-once, never with other values).

use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// A window's bounds: event times in `[start, end)`, milliseconds since the
/// epoch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct TimeWindow {
    /// The first instant in the window.
    pub start: i64,
    /// The first instant after it.
    pub end: i64,
}

impl TimeWindow {
    /// Whether `t` is in the window.
    pub fn contains(&self, t: i64) -> bool {
        self.start <= t && t < self.end
    }
}

impl fmt::Display for TimeWindow {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "[{}, {})", self.start, self.end)
    }
}

/// The key of a windowed result: the grouping key and the window.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Windowed<K> {
    /// The key the records were grouped by.
    pub key: K,
    /// The window the result is for.
    pub window: TimeWindow,
}

impl<K: fmt::Display> fmt::Display for Windowed<K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}@{}", self.key, self.window)
    }
}

/// When a window's result is emitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum WindowEmit {
    /// Once, when the watermark passes the window's end (after its grace):
    /// the final result. The default.
    #[default]
    OnClose,
    /// On every update (early results), and nothing more at the close.
    OnUpdate,
}

/// Window specifications: `Window::tumbling(size)`, `Window::hopping(size,
/// advance)`, `Window::sliding(max_difference)`, `Window::session(gap)`.
#[derive(Debug, Clone, Copy)]
pub struct Window;

impl Window {
    /// Fixed windows of `size` that do not overlap: `[0, size)`,
    /// `[size, 2 size)`, ...
    ///
    /// # Panics
    ///
    /// If `size` is under 1 ms.
    pub fn tumbling(size: Duration) -> FixedWindows {
        Self::hopping(size, size)
    }

    /// Fixed windows of `size` starting every `advance` (RocketMQ Streams
    /// calls them sliding): a record belongs to `size / advance` of them.
    ///
    /// # Panics
    ///
    /// If `size` or `advance` is under 1 ms, or `advance` is over `size`.
    pub fn hopping(size: Duration, advance: Duration) -> FixedWindows {
        let size = millis(size);
        let advance = millis(advance);
        assert!(size >= 1 && advance >= 1, "a window is at least 1 ms");
        assert!(advance <= size, "a hopping window advances by at most its size");
        FixedWindows {
            size,
            advance,
            common: Common::default(),
        }
    }

    /// Session windows: a key's records at most `gap` apart share a
    /// window, `[first, last + 1)` (windows being half-open); it closes at
    /// `last + 1 + gap` (plus the grace), when no record can join it any
    /// more. Under [`WindowEmit::OnUpdate`] the results of two sessions a
    /// record merges stay emitted (no retraction): the merged session's
    /// results follow.
    ///
    /// # Panics
    ///
    /// If `gap` is under 1 ms.
    pub fn session(gap: Duration) -> SessionWindows {
        let gap = millis(gap);
        assert!(gap >= 1, "a session gap is at least 1 ms");
        SessionWindows {
            gap,
            common: Common::default(),
        }
    }
}

impl Window {
    /// Kafka Streams' sliding windows, driven by the records: a window
    /// for each distinct set of a key's records at most `max_difference`
    /// apart. Each record at `t` makes the window ending with it,
    /// `[t - max_difference, t]`, and the one starting just after it,
    /// `[t + 1, t + 1 + max_difference]` when a record falls in it; both
    /// ends are inclusive, so as half-open [`TimeWindow`]s they are
    /// `max_difference + 1` ms long. Empty windows never emit. Unlike
    /// hopping windows, the result count depends on the records, not on
    /// an advance. A record counts in the windows that were open when it
    /// came (within the grace), as in Kafka Streams; unlike Kafka
    /// Streams, records before `max_difference` ms after the epoch get
    /// windows that start before it (Kafka folds them into one
    /// `[0, max_difference]`).
    ///
    /// # Panics
    ///
    /// If `max_difference` is under 1 ms.
    pub fn sliding(max_difference: Duration) -> SlidingWindows {
        let difference = millis(max_difference);
        assert!(difference >= 1, "a sliding window's difference is at least 1 ms");
        SlidingWindows {
            difference,
            common: Common::default(),
        }
    }
}

/// What every window specification has: its grace, when it emits, and
/// after how long an idle queue's stream time follows the wall clock.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Common {
    pub(crate) grace: i64,
    pub(crate) emit: WindowEmit,
    /// Milliseconds; `i64::MAX`: never.
    pub(crate) idle_timeout: i64,
}

/// RocketMQ Streams' `idleTimeToFireWindow` default.
pub(crate) const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(2);

impl Default for Common {
    fn default() -> Self {
        Common {
            grace: 0,
            emit: WindowEmit::default(),
            idle_timeout: millis(DEFAULT_IDLE_TIMEOUT),
        }
    }
}

fn millis(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

macro_rules! common_settings {
    ($t:ty) => {
        impl $t {
            /// How long after its end a window still takes records (the
            /// allowed lateness): it fires, and its state goes, once the
            /// stream time passes its end plus `grace`. Default: none.
            pub fn grace(mut self, grace: Duration) -> Self {
                self.common.grace = millis(grace);
                self
            }

            /// When results are emitted (default [`WindowEmit::OnClose`]).
            pub fn emit(mut self, emit: WindowEmit) -> Self {
                self.common.emit = emit;
                self
            }

            /// After how long without records a shuffle queue's stream
            /// time starts to follow the wall clock, so that the last
            /// windows of a quiet stream fire (RocketMQ Streams'
            /// `idleTimeToFireWindow`). Default: 2 s. `Duration::MAX`
            /// turns it off: windows then fire on records only, as in
            /// Kafka Streams.
            pub fn idle_timeout(mut self, idle: Duration) -> Self {
                self.common.idle_timeout = millis(idle);
                self
            }
        }
    };
}

/// Tumbling or hopping windows (see [`Window::tumbling`], [`Window::hopping`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FixedWindows {
    pub(crate) size: i64,
    pub(crate) advance: i64,
    pub(crate) common: Common,
}

common_settings!(FixedWindows);

impl FixedWindows {
    /// Appends the windows `t` falls in to `out`, earliest first: those
    /// starting at a multiple of the advance in `(t - size, t]`.
    pub(crate) fn windows_of(&self, t: i64, out: &mut Vec<TimeWindow>) {
        // In i128: no overflow near the ends of i64's range.
        let (t, size, advance) = (i128::from(t), i128::from(self.size), i128::from(self.advance));
        let clamp = |v: i128| i64::try_from(v).unwrap_or(if v < 0 { i64::MIN } else { i64::MAX });
        let mut start = (t - size).div_euclid(advance) * advance + advance;
        while start <= t {
            out.push(TimeWindow {
                start: clamp(start),
                end: clamp(start + size),
            });
            start += advance;
        }
    }
}

/// Session windows (see [`Window::session`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SessionWindows {
    pub(crate) gap: i64,
    pub(crate) common: Common,
}

common_settings!(SessionWindows);

/// Record-driven sliding windows (see [`Window::sliding`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SlidingWindows {
    pub(crate) difference: i64,
    pub(crate) common: Common,
}

common_settings!(SlidingWindows);

#[cfg(test)]
mod tests {
    use super::*;

    fn of(spec: FixedWindows, t: i64) -> Vec<(i64, i64)> {
        let mut out = Vec::new();
        spec.windows_of(t, &mut out);
        out.into_iter().map(|w| (w.start, w.end)).collect()
    }

    #[test]
    fn tumbling_windows_are_aligned_and_half_open() {
        let w = Window::tumbling(Duration::from_millis(10));
        assert_eq!(of(w, 0), [(0, 10)]);
        assert_eq!(of(w, 9), [(0, 10)]);
        assert_eq!(of(w, 10), [(10, 20)], "a record exactly at an end opens the next");
        assert_eq!(of(w, -1), [(-10, 0)]);
    }

    #[test]
    fn hopping_windows_cover_each_instant_size_over_advance_times() {
        let w = Window::hopping(Duration::from_millis(10), Duration::from_millis(5));
        assert_eq!(of(w, 0), [(-5, 5), (0, 10)]);
        assert_eq!(of(w, 4), [(-5, 5), (0, 10)]);
        assert_eq!(of(w, 5), [(0, 10), (5, 15)]);
        assert_eq!(of(w, 12), [(5, 15), (10, 20)]);
        let uneven = Window::hopping(Duration::from_millis(10), Duration::from_millis(3));
        for t in -20..40 {
            let windows = of(uneven, t);
            assert!(
                windows.iter().all(|&(s, e)| s <= t && t < e && s.rem_euclid(3) == 0),
                "{t}: {windows:?}"
            );
            // Every window containing t, and no other.
            let expected = (-40..40).filter(|s| s % 3 == 0 && *s <= t && t < s + 10).count();
            assert_eq!(windows.len(), expected, "{t}: {windows:?}");
        }
    }
}
