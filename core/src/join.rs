//! Stream-stream joins: which records of two streams join, how long their
//! state lives, and when an unmatched record of a left or outer join is
//! emitted.
//!
//! ```text
//!  left  ──key_by(left key)──┐                       ┌─► matches of the other side in the store
//!                            ├─► shuffle topic ──► join (one per shuffle queue) ──► joiner(l, r) ──► RStream<O>
//!  right ──key_by(right key)─┘   (same key, same queue)   │
//!                                                         └─► after each frame: records whose window has
//!                                                             closed go (left/outer: unmatched ones first
//!                                                             emitted as joiner(l, None) / joiner(None, r))
//! ```
//!
//! Both sides are re-keyed through the job's shuffle topic, so the records
//! of a key meet in one shuffle queue whichever side they come from; each
//! record is kept in the queue's store (RocksDB, change-logged and
//! checkpointed with the queue like every other state) until no record
//! that can still come may join it. A record that arrives joins every
//! record of the other side kept under its key that its window admits; a
//! pair is emitted once, when its second record arrives, stamped with the
//! later of the two event times.
//!
//! **Windows** ([`RStream::join`](crate::RStream::join) `.on(..).within(..)`):
//! - [`JoinWindows::of(d)`](JoinWindows::of) (Kafka Streams' `JoinWindows`):
//!   `l` and `r` join when `r.t - l.t` is in `[-before, after]` (both `d`
//!   by default), ends included.
//! - [`Window::tumbling(size)`](crate::Window::tumbling) (Nexmark q8's
//!   window join): `l` and `r` join when they fall in the same tumbling
//!   window.
//!
//! Without a window the join is **unwindowed**: any two records of a key
//! join. Their state lives until the stream time passes the record's time
//! plus the retention ([`KeyedJoin::retain`](crate::KeyedJoin::retain));
//! without one it is never deleted (as in RocketMQ Streams, whose join
//! state grows without end), so a left or outer unwindowed join, whose
//! unmatched records are emitted when their state goes, needs one. Without
//! a retention, memory grows as well as disk (each kept record has an entry
//! in the operator's index), and each arriving record reads every record of
//! its key on the other side: give a long-running unwindowed join a
//! retention.
//!
//! **Time** is event time, per shuffle queue: the stream time is the
//! largest event time either side has brought (state of the queue, like a
//! window's). A record is *late* once its own join window has closed
//! (its end plus the grace is at or below the stream time): counted and
//! sent to the error policy (reason `late`), as a late windowed record. A
//! kept record goes once no record that is not late could still join it:
//!
//! | window | a record at `t` is late from stream time | its state goes (left/outer: emitted if unmatched) at |
//! |---|---|---|
//! | `JoinWindows` | `t + after + grace + 1` (right side: `t + before + ..`) | `t + before + after + grace + 1` |
//! | tumbling | `end + grace` of its window | `end + grace` |
//! | unwindowed | `t + retention + 1` | `t + retention + 1` |
//!
//! **Left and outer joins** emit an unmatched record when its state goes,
//! never on arrival, so no `(l, None)` is followed by `(l, r)` (Kafka
//! Streams' behaviour since 3.1). It is stamped with the unmatched record's
//! own event time, which is behind the stream time by the window and grace
//! when it comes out: a window downstream of the join needs a grace at
//! least that long not to count it late. A quiet queue's stream time follows the
//! wall clock after the idle timeout, as for windows (see
//! [`crate::window`]), so its last unmatched records come out without new
//! input.

use std::time::Duration;

use crate::window::{Common, FixedWindows};

/// Kafka Streams' join window: `l` and `r` join when `r.t - l.t` is in
/// `[-before, after]`, both ends included.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct JoinWindows {
    before: i64,
    after: i64,
    common: Common,
}

impl JoinWindows {
    /// Records at most `difference` apart join, whichever comes first in
    /// event time.
    pub fn of(difference: Duration) -> JoinWindows {
        let d = millis(difference);
        JoinWindows {
            before: d,
            after: d,
            common: Common::default(),
        }
    }

    /// A right record joins a left one up to `before` earlier than it.
    pub fn before(mut self, before: Duration) -> JoinWindows {
        self.before = millis(before);
        self
    }

    /// A right record joins a left one up to `after` later than it.
    pub fn after(mut self, after: Duration) -> JoinWindows {
        self.after = millis(after);
        self
    }

    /// How long after its window a record may still come (the allowed
    /// lateness). Default: none.
    pub fn grace(mut self, grace: Duration) -> JoinWindows {
        self.common.grace = millis(grace);
        self
    }

    /// After how long without records a shuffle queue's stream time
    /// follows the wall clock (see [`FixedWindows::idle_timeout`]).
    /// Default: 2 s; `Duration::MAX` turns it off.
    pub fn idle_timeout(mut self, idle: Duration) -> JoinWindows {
        self.common.idle_timeout = millis(idle);
        self
    }
}

fn millis(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

/// Which records join, in milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum JoinKind {
    /// `r.t - l.t` in `[-before, after]`.
    Interval { before: i64, after: i64 },
    /// In the same window `[k size, (k + 1) size)`.
    Tumbling { size: i64 },
    /// Any two; kept until `t + retention` (`i64::MAX`: forever).
    Unwindowed { retention: i64 },
}

/// A join's window, grace and idle timeout (what a [`JoinWindowSpec`]
/// stands for inside).
#[doc(hidden)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct JoinSpec {
    pub(crate) kind: JoinKind,
    pub(crate) grace: i64,
    pub(crate) idle_timeout: i64,
}

/// The left side of a join.
pub(crate) const LEFT: usize = 0;
/// The right side of a join.
pub(crate) const RIGHT: usize = 1;

impl JoinSpec {
    /// An unwindowed join that keeps its state `retention` ms (`i64::MAX`: forever).
    pub(crate) fn unwindowed(retention: i64) -> JoinSpec {
        let common = Common::default();
        JoinSpec {
            kind: JoinKind::Unwindowed { retention },
            grace: 0,
            idle_timeout: common.idle_timeout,
        }
    }

    /// The stream time from which a record of `side` at `t` is late.
    pub(crate) fn late_at(&self, side: usize, t: i64) -> i64 {
        match self.kind {
            JoinKind::Interval { before, after } => {
                let reach = if side == LEFT { after } else { before };
                t.saturating_add(reach).saturating_add(self.grace).saturating_add(1)
            }
            JoinKind::Tumbling { .. } | JoinKind::Unwindowed { .. } => self.expires_at(t),
        }
    }

    /// The stream time from which no record that is not late can join a
    /// record at `t`: its state goes.
    pub(crate) fn expires_at(&self, t: i64) -> i64 {
        match self.kind {
            JoinKind::Interval { before, after } => t
                .saturating_add(before)
                .saturating_add(after)
                .saturating_add(self.grace)
                .saturating_add(1),
            JoinKind::Tumbling { size } => window_start(t, size).saturating_add(size).saturating_add(self.grace),
            JoinKind::Unwindowed { retention } => t.saturating_add(retention).saturating_add(1),
        }
    }

    /// The event times of the other side that a record of `side` at `t`
    /// joins, ends included.
    pub(crate) fn partners(&self, side: usize, t: i64) -> (i64, i64) {
        match self.kind {
            JoinKind::Interval { before, after } => {
                let (back, ahead) = if side == LEFT { (before, after) } else { (after, before) };
                (t.saturating_sub(back), t.saturating_add(ahead))
            }
            JoinKind::Tumbling { size } => {
                let start = window_start(t, size);
                (start, start.saturating_add(size - 1))
            }
            JoinKind::Unwindowed { .. } => (i64::MIN, i64::MAX),
        }
    }

    /// Whether state is ever deleted.
    pub(crate) fn expires(&self) -> bool {
        !matches!(self.kind, JoinKind::Unwindowed { retention: i64::MAX })
    }
}

fn window_start(t: i64, size: i64) -> i64 {
    t.div_euclid(size).saturating_mul(size)
}

mod sealed {
    pub trait Sealed {
        fn spec(&self) -> Result<super::JoinSpec, String>;
    }
}

/// What a join may be windowed by: [`JoinWindows`] or tumbling
/// [`FixedWindows`] (a hopping window, where a pair could share several
/// windows, is refused by `build`).
pub trait JoinWindowSpec: sealed::Sealed + Copy + Send + Sync + 'static {}

impl sealed::Sealed for JoinWindows {
    fn spec(&self) -> Result<JoinSpec, String> {
        // `before` and `after` come from `Duration`s: never negative.
        Ok(JoinSpec {
            kind: JoinKind::Interval {
                before: self.before,
                after: self.after,
            },
            grace: self.common.grace,
            idle_timeout: self.common.idle_timeout,
        })
    }
}

impl JoinWindowSpec for JoinWindows {}

impl sealed::Sealed for FixedWindows {
    fn spec(&self) -> Result<JoinSpec, String> {
        if self.advance != self.size {
            return Err(format!(
                "a join within hopping windows (size {} ms, advance {} ms): a pair could share several \
                 windows; join within a tumbling window or JoinWindows",
                self.size, self.advance
            ));
        }
        Ok(JoinSpec {
            kind: JoinKind::Tumbling { size: self.size },
            grace: self.common.grace,
            idle_timeout: self.common.idle_timeout,
        })
    }
}

impl JoinWindowSpec for FixedWindows {}

pub(crate) fn spec_of<W: JoinWindowSpec>(w: &W) -> Result<JoinSpec, String> {
    sealed::Sealed::spec(w)
}

/// Marks an inner join: only pairs are emitted (`joiner(&l, &r)`).
#[derive(Debug, Clone, Copy)]
pub enum Inner {}

/// Marks a left join: pairs, and each left record that found no match
/// when its state goes (`joiner(&l, None)`).
#[derive(Debug, Clone, Copy)]
pub enum Left {}

/// Marks an outer join: pairs, and each record of either side that found
/// no match when its state goes.
#[derive(Debug, Clone, Copy)]
pub enum Outer {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_interval_join_keeps_a_record_while_a_record_not_late_can_join_it() {
        let spec = sealed::Sealed::spec(
            &JoinWindows::of(Duration::from_millis(10))
                .after(Duration::from_millis(20))
                .grace(Duration::from_millis(5)),
        )
        .expect("valid");
        // l at 100 joins r in [90, 120]; r at 100 joins l in [80, 110].
        assert_eq!(spec.partners(LEFT, 100), (90, 120));
        assert_eq!(spec.partners(RIGHT, 100), (80, 110));
        assert_eq!(spec.late_at(LEFT, 100), 126);
        assert_eq!(spec.late_at(RIGHT, 100), 116);
        // The last right record to join l at 100 is at 120, late from 136:
        // l's state goes then, and not before.
        assert_eq!(spec.expires_at(100), spec.late_at(RIGHT, 120));
        assert_eq!(spec.expires_at(100), spec.late_at(LEFT, 110), "and symmetrically for r");
    }

    #[test]
    fn a_tumbling_join_pairs_records_of_one_window() {
        let spec = sealed::Sealed::spec(&crate::Window::tumbling(Duration::from_millis(10))).expect("tumbling");
        assert_eq!(spec.partners(LEFT, 13), (10, 19));
        assert_eq!(spec.partners(RIGHT, -1), (-10, -1));
        assert_eq!(spec.expires_at(13), 20);
        let hopping = crate::Window::hopping(Duration::from_millis(10), Duration::from_millis(5));
        assert!(sealed::Sealed::spec(&hopping).is_err());
    }

    #[test]
    fn an_unwindowed_join_without_retention_keeps_everything() {
        let spec = JoinSpec::unwindowed(i64::MAX);
        assert!(!spec.expires());
        assert_eq!(spec.expires_at(5), i64::MAX);
        assert_eq!(spec.partners(LEFT, 5), (i64::MIN, i64::MAX));
        assert!(JoinSpec::unwindowed(100).expires());
        assert_eq!(JoinSpec::unwindowed(100).expires_at(5), 106);
    }
}
