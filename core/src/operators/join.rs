//! The stream-stream join of one shuffle queue: both sides' records kept
//! in the queue's store until their window closes, each arriving record
//! joined with the other side's kept under its key.
//!
//! State, in the queue's store (see [`crate::join`] for the semantics):
//!
//! ```text
//!  [node 2 B][0x10 + side][key length 4 B][serialized key][t 8 B][offset 8 B][seq 8 B] → [matched 1 B][value]
//!  [node 2 B][0x01]                                                                   → the stream time (see `stream_time`)
//! ```
//!
//! A kept record is named by its place in the shuffle queue (the offset of
//! its frame and its index there), so a replay writes the same keys. The
//! value is the record's serialized value as it travelled through the
//! shuffle, after a byte that says whether it has joined (what a left or
//! outer join needs when its state goes). Times are stored big-endian with
//! the sign bit flipped, so a key's records sort by time.
//!
//! In memory the operator indexes the kept records per side and key, and
//! by when they go; the index is rebuilt from the store when the pipeline
//! starts. It may hold a record whose write was rolled back (its failure
//! undid it), never miss one, and every use reads the store.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

use bytes::{BufMut, Bytes, BytesMut};
use rocketmq_streams_shuffle::ShuffleRecord;
use rocketmq_streams_state::StateError;
use serde::de::DeserializeOwned;

use crate::codec;
use crate::error::StreamsError;
use crate::join::{JoinSpec, LEFT, RIGHT};
use crate::operators::shuffle_source::KeyedEntry;
use crate::operators::stream_time::{encode_layers, ordered, unordered, StreamClock};
use crate::processor::{BoxProcessor, Context, Record};
use crate::runtime::metrics::Gauge;
use crate::topology::guarded;

/// Builds a join's output from a left and a right value, either absent
/// for an unmatched record of a left or outer join; `None`: nothing to
/// emit (an inner join's unmatched record).
pub(crate) type Joiner<L, R, O> = Arc<dyn Fn(Option<&L>, Option<&R>) -> Option<O> + Send + Sync>;

/// A kept record: its event time and its place in the shuffle queue.
type Entry = (i64, i64, u64);

/// The kept records, indexed.
struct Kept {
    /// How many records `by_key` holds, also counted in the shard's
    /// gauge (given back when the pipeline goes). A record whose write was
    /// rolled back counts until a partner finds it gone or its window closes.
    len: i64,
    gauge: Gauge,
    /// Per side, per serialized key: the records kept, in time order.
    by_key: [HashMap<Bytes, BTreeSet<Entry>, ahash::RandomState>; 2],
    /// When each record goes, then its side and entry (unique: its place
    /// in the queue), to its key. Ordered by numbers alone: records that
    /// go together (a tumbling window's) are told apart without comparing
    /// keys, in an order that depends on the state only, so a replay
    /// emits them as the first run did.
    expiring: BTreeMap<(i64, usize, Entry), Bytes>,
}

impl Kept {
    fn new(gauge: Gauge) -> Self {
        Kept {
            len: 0,
            gauge,
            by_key: Default::default(),
            expiring: BTreeMap::new(),
        }
    }

    fn add(&mut self, spec: &JoinSpec, side: usize, raw_key: &Bytes, e: Entry) {
        // One copy of the key per kept key: a slice of a shuffle frame
        // would keep the whole frame in memory.
        let key = match self.by_key[side].get_key_value(raw_key) {
            Some((k, _)) => k.clone(),
            None => Bytes::copy_from_slice(raw_key),
        };
        if spec.expires() {
            self.expiring.insert((spec.expires_at(e.0), side, e), key.clone());
        }
        if self.by_key[side].entry(key).or_default().insert(e) {
            self.count(1);
        }
    }

    fn remove(&mut self, side: usize, raw_key: &Bytes, e: Entry) {
        let Some(set) = self.by_key[side].get_mut(raw_key) else {
            return;
        };
        let removed = set.remove(&e);
        if set.is_empty() {
            self.by_key[side].remove(raw_key);
        }
        if removed {
            self.count(-1);
        }
    }

    fn count(&mut self, n: i64) {
        self.len += n;
        self.gauge.add(n);
    }
}

impl Drop for Kept {
    fn drop(&mut self) {
        self.gauge.add(-self.len);
    }
}

/// A join of left values `L` and right values `R` into `O`: the keyed
/// entry of both sides' `key_by` nodes (records of `left_node` are left).
pub(crate) struct Join<L, R, O> {
    pub(crate) node: u16,
    pub(crate) left_node: u16,
    pub(crate) spec: JoinSpec,
    pub(crate) joiner: Joiner<L, R, O>,
    /// Per side: whether its unmatched records are emitted (left, outer).
    pub(crate) unmatched: [bool; 2],
    pub(crate) next: BoxProcessor<O>,
    /// `None` until the first use after the pipeline starts.
    kept: Option<Kept>,
    clock: StreamClock,
    /// The partners of the record being joined (reused).
    partners: Vec<Entry>,
    key_buf: Vec<u8>,
}

const MATCHED: u8 = 1;

/// What a side's decoded value is.
enum Value<L, R> {
    Left(L),
    Right(R),
}

impl<L, R, O> Join<L, R, O>
where
    L: DeserializeOwned + 'static,
    R: DeserializeOwned + 'static,
    O: 'static,
{
    pub(crate) fn new(
        node: u16,
        left_node: u16,
        spec: JoinSpec,
        joiner: Joiner<L, R, O>,
        unmatched: [bool; 2],
        next: BoxProcessor<O>,
    ) -> Self {
        Join {
            node,
            left_node,
            spec,
            joiner,
            unmatched,
            next,
            kept: None,
            clock: StreamClock::new(node),
            partners: Vec::new(),
            key_buf: Vec::new(),
        }
    }

    fn side_prefix(&self, side: usize) -> [u8; 3] {
        let [a, b] = self.node.to_be_bytes();
        [a, b, 0x10 + side as u8]
    }

    /// Sets `key_buf` to the store key of a kept record of `side`.
    fn state_key(&mut self, side: usize, raw_key: &[u8], (t, offset, seq): Entry) {
        let prefix = self.side_prefix(side);
        let key_buf = &mut self.key_buf;
        key_buf.clear();
        key_buf.extend_from_slice(&prefix);
        key_buf.extend_from_slice(&u32::try_from(raw_key.len()).unwrap_or(u32::MAX).to_be_bytes());
        key_buf.extend_from_slice(raw_key);
        key_buf.extend_from_slice(&ordered(t));
        key_buf.extend_from_slice(&ordered(offset));
        key_buf.extend_from_slice(&seq.to_be_bytes());
    }

    /// The kept records, read from the store on first use.
    fn kept(&mut self, ctx: &mut Context) -> Result<&mut Kept, StreamsError> {
        if self.kept.is_none() {
            let mut kept = Kept::new(ctx.join_records.clone());
            let store = ctx.store()?;
            for side in [LEFT, RIGHT] {
                for key in store.keys_with_prefix(&self.side_prefix(side))? {
                    let parsed = (|| {
                        let len = u32::from_be_bytes(key.get(3..7)?.try_into().ok()?) as usize;
                        let rest = 7usize.checked_add(len)?;
                        if key.len() != rest.checked_add(24)? {
                            return None;
                        }
                        let t = unordered(&key[rest..rest + 8])?;
                        let offset = unordered(&key[rest + 8..rest + 16])?;
                        let seq = u64::from_be_bytes(key[rest + 16..rest + 24].try_into().ok()?);
                        Some((key.slice(7..rest), (t, offset, seq)))
                    })();
                    let Some((raw_key, entry)) = parsed else {
                        return Err(StateError::Malformed(format!("join state key {key:?}")).into());
                    };
                    kept.add(&self.spec, side, &raw_key, entry);
                }
            }
            return Ok(self.kept.insert(kept));
        }
        Ok(self.kept.get_or_insert_with(|| Kept::new(Gauge::default())))
    }

    fn decode(side: usize, bytes: &[u8]) -> Result<Value<L, R>, StreamsError> {
        Ok(if side == LEFT {
            Value::Left(codec::decode(bytes, "left join value")?)
        } else {
            Value::Right(codec::decode(bytes, "right join value")?)
        })
    }

    /// The joiner's result for `a` of `side` with its partner `b` (of the
    /// other side; `None`: unmatched).
    fn join(&self, a: &Value<L, R>, b: Option<&Value<L, R>>) -> Option<O> {
        let (mut l, mut r) = (None, None);
        for v in std::iter::once(a).chain(b) {
            match v {
                Value::Left(v) => l = Some(v),
                Value::Right(v) => r = Some(v),
            }
        }
        (self.joiner)(l, r)
    }

    /// Joins a record of `side` with the other side's kept under its key,
    /// then keeps it.
    fn process_side(&mut self, side: usize, record: &ShuffleRecord, ctx: &mut Context) -> Result<(), StreamsError> {
        let t = record.timestamp;
        // Its place in the shuffle queue: the frame's offset, its index.
        let entry = (t, ctx.origin.1, ctx.seq);
        let value = Self::decode(side, &record.value)?;
        self.clock.on_record();
        let store = ctx.store()?;
        let before = self.clock.now(store)?;
        let now = before.max(t);
        let late_at = self.spec.late_at(side, t);
        if late_at <= now {
            ctx.late += 1;
            return Err(StreamsError::Late {
                timestamp: t,
                closed_at: late_at,
                stream_time: now,
            });
        }
        if now > before {
            self.clock.set(store, now)?;
        }
        let other = 1 - side;
        let (from, to) = self.spec.partners(side, t);
        let mut partners = std::mem::take(&mut self.partners);
        partners.clear();
        if let Some(set) = self.kept(ctx)?.by_key[other].get(&record.key) {
            partners.extend(set.range((from, i64::MIN, 0)..=(to, i64::MAX, u64::MAX)));
        }
        let mut matched = false;
        let mut outcome = Ok(());
        for &p in &partners {
            // Gone for a record that is not late (the frame moved the
            // stream time past it): joins nothing, as after its deletion.
            if self.spec.expires_at(p.0) <= now {
                continue;
            }
            match self.join_partner(side, &value, &record.key, p, t, ctx) {
                Ok(joined) => matched |= joined,
                Err(e) => {
                    outcome = Err(e);
                    break;
                }
            }
        }
        self.partners = partners;
        outcome?;
        let mut kept = BytesMut::with_capacity(1 + record.value.len());
        kept.put_u8(if matched { MATCHED } else { 0 });
        kept.put_slice(&record.value);
        self.state_key(side, &record.key, entry);
        ctx.store()?.put_slice(&self.key_buf, kept.freeze());
        let spec = self.spec;
        self.kept(ctx)?.add(&spec, side, &record.key, entry);
        Ok(())
    }

    /// Joins the arriving `value` (of `side`, at `t`) with the kept
    /// partner `p`: emits the pair, marks the partner matched. Returns
    /// whether the partner was there (a rolled-back write leaves none).
    fn join_partner(
        &mut self,
        side: usize,
        value: &Value<L, R>,
        raw_key: &Bytes,
        p: Entry,
        t: i64,
        ctx: &mut Context,
    ) -> Result<bool, StreamsError> {
        let other = 1 - side;
        self.state_key(other, raw_key, p);
        let Some(stored) = ctx.store()?.get(&self.key_buf)? else {
            self.kept(ctx)?.remove(other, raw_key, p);
            return Ok(false);
        };
        let Some((&flags, bytes)) = stored.split_first() else {
            return Err(StateError::Malformed(format!("join state of key {raw_key:?}: empty")).into());
        };
        let partner = Self::decode(other, bytes)?;
        if self.unmatched[other] && flags & MATCHED == 0 {
            let mut marked = BytesMut::from(stored.as_ref());
            marked[0] |= MATCHED;
            ctx.store()?.put_slice(&self.key_buf, marked.freeze());
        }
        if let Some(out) = self.join(value, Some(&partner)) {
            self.next.process(
                Record {
                    value: out,
                    timestamp: t.max(p.0),
                },
                ctx,
            )?;
        }
        Ok(true)
    }

    /// Deletes the kept records whose window the stream time has closed,
    /// first emitting (left, outer) those that never joined, each guarded
    /// as a record of its own.
    fn expire(&mut self, ctx: &mut Context) -> Result<(), StreamsError> {
        if !self.spec.expires() {
            return Ok(());
        }
        let now = self.clock.now(ctx.store()?)?;
        loop {
            let Some((&(goes, side, e), raw_key)) = self.kept(ctx)?.expiring.first_key_value() else {
                return Ok(());
            };
            if goes > now {
                return Ok(());
            }
            let raw_key = raw_key.clone();
            self.state_key(side, &raw_key, e);
            // Nothing to emit for an inner side: no need to read it.
            let stored = match self.unmatched[side] {
                true => ctx.store()?.get(&self.key_buf)?,
                false => None,
            };
            if let Some(stored) = stored.filter(|s| s.first().is_some_and(|flags| flags & MATCHED == 0)) {
                let emitted = guarded(ctx, |ctx| {
                    let value = Self::decode(side, &stored[1..])?;
                    match self.join(&value, None) {
                        Some(out) => self.next.process(
                            Record {
                                value: out,
                                timestamp: e.0,
                            },
                            ctx,
                        ),
                        None => Ok(()),
                    }
                });
                match emitted {
                    Ok(()) => {}
                    // Still indexed: the queue stops here.
                    Err(e @ StreamsError::State(_)) => return Err(e),
                    // Its state goes all the same; the result goes to the
                    // error policy.
                    Err(e) => ctx.flush_failures.push((raw_key.clone(), e)),
                }
            }
            ctx.store()?.delete(Bytes::copy_from_slice(&self.key_buf));
            let kept = self.kept(ctx)?;
            kept.expiring.pop_first();
            kept.remove(side, &raw_key, e);
        }
    }

    /// An idle step (see [`SourcePipeline::idle`](crate::topology::SourcePipeline::idle)):
    /// once the queue has been quiet for the idle timeout, the stream time
    /// follows the wall clock, but only when that lets a kept record go.
    fn idle(&mut self, ctx: &mut Context, idle: i64) -> Result<(), StreamsError> {
        if idle < self.spec.idle_timeout || !self.spec.expires() {
            return Ok(());
        }
        let Some(target) = self.clock.idle_target(ctx.store()?, idle)? else {
            return Ok(());
        };
        let first = self.kept(ctx)?.expiring.first_key_value().map(|(f, _)| f.0);
        if first.is_none_or(|goes| goes > target) {
            return Ok(());
        }
        self.clock.set(ctx.store()?, target)?;
        ctx.due = true;
        Ok(())
    }
}

impl<L, R, O> KeyedEntry for Join<L, R, O>
where
    L: DeserializeOwned + 'static,
    R: DeserializeOwned + 'static,
    O: 'static,
{
    fn process(&mut self, record: &ShuffleRecord, ctx: &mut Context) -> Result<(), StreamsError> {
        let side = if record.node == self.left_node { LEFT } else { RIGHT };
        self.process_side(side, record, ctx)
    }

    /// Encodes the stream time; passes the flush on.
    fn flush(&mut self, ctx: &mut Context) -> Result<(), StreamsError> {
        encode_layers(ctx.store()?, &[self.clock.layer()], "the join's stream time")?;
        self.next.flush(ctx)
    }

    fn advance(&mut self, ctx: &mut Context) -> Result<(), StreamsError> {
        match ctx.idle {
            Some(idle) => self.idle(ctx, idle)?,
            None => {
                self.clock.on_advance(ctx);
                self.expire(ctx)?;
            }
        }
        self.next.advance(ctx)
    }
}

#[cfg(test)]
mod tests {
    use std::cell::RefCell;
    use std::collections::BTreeSet;
    use std::rc::Rc;
    use std::time::Duration;

    use rocketmq_streams_state::{Checkpoint, QueueStore};

    use super::*;
    use crate::join::{spec_of, JoinWindows};
    use crate::prelude::*;
    use crate::processor::Processor;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    /// A record of either side: its key and an id.
    type Side = (String, u32);
    /// A result: the ids joined (`None`: unmatched).
    type Pair = (Option<u32>, Option<u32>);

    fn sides(builder: &StreamBuilder) -> (RStream<Side>, RStream<Side>) {
        (
            builder.source("left", Json::<Side>::new()),
            builder.source("right", Json::<Side>::new()),
        )
    }

    fn driver(builder: &StreamBuilder) -> TopologyTestDriver {
        TopologyTestDriver::new(builder.build().expect("topology"))
    }

    fn inner(window: Option<JoinWindows>) -> TopologyTestDriver {
        let builder = StreamBuilder::new("join");
        let (l, r) = sides(&builder);
        let join = l.join(&r).on(|l| l.0.clone(), |r| r.0.clone());
        let join = match window {
            Some(w) => join.within(w),
            None => join,
        };
        join.apply(|l, r| (Some(l.1), Some(r.1)))
            .sink("out", Json::<Pair>::new());
        driver(&builder)
    }

    fn pipe(d: &mut TopologyTestDriver, topic: &str, key: &str, id: u32, t: i64) {
        let body = serde_json::to_vec(&(key, id)).expect("json");
        d.pipe_input(topic, body, t).expect("pipe");
    }

    fn read(d: &mut TopologyTestDriver) -> Vec<Pair> {
        d.read_values("out", &Json::<Pair>::new())
    }

    fn sorted(mut v: Vec<Pair>) -> Vec<Pair> {
        v.sort();
        v
    }

    /// The shuffle queue the driver sends `key` to.
    fn queue_of(key: &str) -> u32 {
        rocketmq_streams_shuffle::partition(&rmp_serde::to_vec(key).expect("key"), 8)
    }

    /// Clocks left once every record's state has gone: one per shuffle
    /// queue the keys went to.
    fn clocks(keys: &[&str]) -> usize {
        keys.iter().map(|k| queue_of(k)).collect::<BTreeSet<_>>().len()
    }

    #[test]
    fn a_windowed_inner_join_pairs_what_a_reference_pairs_once_each() {
        let mut d = inner(Some(JoinWindows::of(ms(10))));
        // (side, key, id, time), times in order: nothing is late.
        let mut input = Vec::new();
        let keys = ["a", "b", "c"];
        let mut x = 7u64;
        for i in 0..300u32 {
            x = x
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            let side = if x >> 63 == 0 { "right" } else { "left" };
            input.push((side, keys[(x >> 33) as usize % 3], i, i64::from(i) * 3));
        }
        for &(side, key, id, t) in &input {
            pipe(&mut d, side, key, id, t);
        }
        let mut expected = Vec::new();
        for l in input.iter().filter(|x| x.0 == "left") {
            for r in input.iter().filter(|x| x.0 == "right") {
                if l.1 == r.1 && (r.3 - l.3).abs() <= 10 {
                    expected.push((Some(l.2), Some(r.2)));
                }
            }
        }
        assert!(expected.len() > 100, "the input makes pairs: {}", expected.len());
        assert_eq!(sorted(read(&mut d)), sorted(expected));
        assert_eq!(d.metrics().late, 0);
    }

    #[test]
    fn a_record_whose_window_has_closed_is_late_and_joins_nothing() {
        let mut d = inner(Some(JoinWindows::of(ms(10)).grace(ms(5))));
        pipe(&mut d, "left", "a", 1, 100);
        pipe(&mut d, "right", "a", 2, 130);
        // Left at 100 keeps until 126: gone at 130, so no pair.
        assert!(read(&mut d).is_empty());
        // A right record at 114 would join the left one, but its window
        // [104, 124] closed at 130 (124 + 5 + 1 ≤ 130): late.
        pipe(&mut d, "right", "a", 3, 114);
        assert!(read(&mut d).is_empty());
        assert_eq!((d.metrics().late, d.metrics().skipped), (1, 1));
        // Within the grace: a left record at 121 joins the right at 130.
        pipe(&mut d, "left", "a", 4, 121);
        assert_eq!(read(&mut d), [(Some(4), Some(2))]);
    }

    #[test]
    fn join_state_goes_once_no_record_can_join_it() {
        let mut d = inner(Some(JoinWindows::of(ms(10))));
        for i in 0..20u32 {
            pipe(&mut d, "left", "a", i, i64::from(i));
            pipe(&mut d, "right", "b", i, i64::from(i));
        }
        assert_eq!(d.state_len().expect("state"), 40 + clocks(&["a", "b"]));
        assert_eq!(d.join_records(), 40);
        // Kept until t + 21: a record at 40 on each queue lets all go.
        pipe(&mut d, "left", "a", 100, 40);
        pipe(&mut d, "left", "b", 101, 40);
        assert_eq!(d.state_len().expect("state"), 2 + clocks(&["a", "b"]));
        assert_eq!(d.join_records(), 2);
        pipe(&mut d, "left", "a", 102, 100);
        pipe(&mut d, "left", "b", 103, 100);
        assert_eq!(
            d.state_len().expect("state"),
            2 + clocks(&["a", "b"]),
            "the state falls back"
        );
    }

    fn left_or_outer(outer: bool, window: JoinWindows) -> TopologyTestDriver {
        let builder = StreamBuilder::new("join");
        let (l, r) = sides(&builder);
        if outer {
            l.outer_join(&r)
                .on(|l| l.0.clone(), |r| r.0.clone())
                .within(window)
                .apply(|l, r| (l.map(|l| l.1), r.map(|r| r.1)))
                .sink("out", Json::<Pair>::new());
        } else {
            l.left_join(&r)
                .on(|l| l.0.clone(), |r| r.0.clone())
                .within(window)
                .apply(|l, r| (Some(l.1), r.map(|r| r.1)))
                .sink("out", Json::<Pair>::new());
        }
        driver(&builder)
    }

    #[test]
    fn a_left_join_emits_an_unmatched_left_record_once_its_window_has_closed_never_before() {
        let mut d = left_or_outer(false, JoinWindows::of(ms(10)).idle_timeout(Duration::MAX));
        pipe(&mut d, "left", "a", 1, 100);
        pipe(&mut d, "left", "a", 2, 101);
        pipe(&mut d, "right", "z", 9, 105);
        assert!(read(&mut d).is_empty(), "nothing on arrival");
        // The right record at 110 joins the left one at 101 (and 100).
        pipe(&mut d, "right", "a", 3, 110);
        assert_eq!(sorted(read(&mut d)), [(Some(1), Some(3)), (Some(2), Some(3))]);
        pipe(&mut d, "left", "a", 4, 125);
        pipe(&mut d, "right", "a", 5, 145);
        assert!(read(&mut d).is_empty(), "left 4 could still join a right record at 135");
        pipe(&mut d, "right", "a", 5, 150);
        // Left 4 at 125 joined nothing: emitted once the stream time
        // reaches 125 + 21; the matched ones are not.
        assert_eq!(read(&mut d), [(Some(4), None)]);
        // The unmatched right record of a left join is not emitted.
        pipe(&mut d, "right", "a", 6, 1_000);
        assert!(read(&mut d).is_empty());
        pipe(&mut d, "right", "z", 7, 1_000);
        assert!(read(&mut d).is_empty());
        assert_eq!(d.state_len().expect("state"), 2 + clocks(&["a", "z"]));
    }

    #[test]
    fn an_outer_join_emits_the_unmatched_records_of_both_sides() {
        let mut d = left_or_outer(true, JoinWindows::of(ms(10)));
        pipe(&mut d, "left", "a", 1, 100);
        pipe(&mut d, "right", "a", 2, 105);
        pipe(&mut d, "left", "b", 3, 100);
        pipe(&mut d, "right", "c", 4, 100);
        assert_eq!(read(&mut d), [(Some(1), Some(2))]);
        for key in ["a", "b", "c"] {
            pipe(&mut d, "left", key, 0, 1_000);
        }
        assert_eq!(sorted(read(&mut d)), [(None, Some(4)), (Some(3), None)]);
    }

    #[test]
    fn a_quiet_queue_emits_its_unmatched_records_as_the_wall_clock_moves_on() {
        let mut d = left_or_outer(false, JoinWindows::of(ms(10)));
        pipe(&mut d, "left", "a", 1, 100);
        d.advance_wall_clock(ms(1_999)).expect("advance");
        assert!(read(&mut d).is_empty());
        d.advance_wall_clock(ms(1)).expect("advance");
        assert_eq!(read(&mut d), [(Some(1), None)]);
        assert_eq!(d.state_len().expect("state"), clocks(&["a"]));
        // Its window closed: a right record for it now is late.
        pipe(&mut d, "right", "a", 2, 105);
        assert_eq!(d.metrics().late, 1);
    }

    #[test]
    fn a_tumbling_join_pairs_the_records_of_one_window() {
        let builder = StreamBuilder::new("join");
        let (l, r) = sides(&builder);
        l.join(&r)
            .on(|l| l.0.clone(), |r| r.0.clone())
            .within(Window::tumbling(ms(10)))
            .apply(|l, r| (Some(l.1), Some(r.1)))
            .sink("out", Json::<Pair>::new());
        let mut d = driver(&builder);
        pipe(&mut d, "left", "a", 1, 9);
        pipe(&mut d, "right", "a", 2, 10);
        assert!(read(&mut d).is_empty(), "1 ms apart, in two windows");
        pipe(&mut d, "right", "a", 3, 0);
        assert_eq!(d.metrics().late, 1, "[0, 10) closed at 10");
        pipe(&mut d, "left", "a", 4, 19);
        assert_eq!(read(&mut d), [(Some(4), Some(2))]);
        pipe(&mut d, "left", "a", 5, 20);
        assert_eq!(d.state_len().expect("state"), 1 + clocks(&["a"]));
    }

    #[test]
    fn an_unwindowed_join_pairs_any_times_until_its_retention() {
        let mut d = inner(None);
        pipe(&mut d, "left", "a", 1, 0);
        pipe(&mut d, "right", "a", 2, 1_000_000);
        pipe(&mut d, "left", "a", 3, 5);
        assert_eq!(read(&mut d), [(Some(1), Some(2)), (Some(3), Some(2))]);
        assert_eq!(d.state_len().expect("state"), 3 + clocks(&["a"]), "never deleted");

        let builder = StreamBuilder::new("join");
        let (l, r) = sides(&builder);
        l.join(&r)
            .on(|l| l.0.clone(), |r| r.0.clone())
            .retain(ms(100))
            .apply(|l, r| (Some(l.1), Some(r.1)))
            .sink("out", Json::<Pair>::new());
        let mut d = driver(&builder);
        pipe(&mut d, "left", "a", 1, 0);
        pipe(&mut d, "right", "a", 2, 100);
        pipe(&mut d, "right", "a", 3, 101);
        assert_eq!(read(&mut d), [(Some(1), Some(2))], "gone at 101");
        pipe(&mut d, "left", "a", 4, 0);
        assert_eq!(d.metrics().late, 1);
    }

    #[test]
    fn build_refuses_joins_that_could_not_work() {
        let builder = StreamBuilder::new("join");
        let (l, r) = sides(&builder);
        l.left_join(&r)
            .on(|l| l.0.clone(), |r| r.0.clone())
            .apply(|l, _| l.1)
            .sink("out", Json::<u32>::new());
        let err = builder.build().expect_err("unmatched records never emitted");
        assert!(err.to_string().contains("retain"), "{err}");

        let builder = StreamBuilder::new("join");
        let (l, r) = sides(&builder);
        l.join(&r)
            .on(|l| l.0.clone(), |r| r.0.clone())
            .within(Window::hopping(ms(10), ms(5)))
            .apply(|l, _| l.1)
            .sink("out", Json::<u32>::new());
        assert!(builder.build().expect_err("hopping").to_string().contains("hopping"));

        let other = StreamBuilder::new("other");
        let builder = StreamBuilder::new("join");
        let l = builder.source("left", Json::<Side>::new());
        l.join(&other.source("right", Json::<Side>::new()))
            .on(|l| l.0.clone(), |r| r.0.clone())
            .apply(|l, _| l.1)
            .sink("out", Json::<u32>::new());
        assert!(builder.build().is_err());
        assert!(other.build().is_err(), "neither builder builds half a join");
    }

    /// Collects what a join emits.
    struct Collect(Rc<RefCell<Vec<Pair>>>);

    impl Processor<Pair> for Collect {
        fn process(&mut self, r: Record<Pair>, _: &mut Context) -> Result<(), StreamsError> {
            self.0.borrow_mut().push(r.value);
            Ok(())
        }
    }

    #[test]
    fn a_new_pipeline_on_a_restored_store_joins_and_expires_as_the_old_one_would() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut ctx = Context::new(0);
        ctx.store = Some(QueueStore::open(dir.path().join("q"), 100).expect("open"));
        let seen = Rc::new(RefCell::new(Vec::new()));
        let spec = spec_of(&JoinWindows::of(ms(10))).expect("spec");
        let make = |seen: &Rc<RefCell<Vec<Pair>>>| {
            let joiner: Joiner<Side, Side, Pair> = Arc::new(|l, r| Some((l.map(|l| l.1), r.map(|r| r.1))));
            Join::new(5, 1, spec, joiner, [true, false], Box::new(Collect(seen.clone())))
        };
        let mut offset = 0;
        let mut send = |join: &mut Join<Side, Side, Pair>, ctx: &mut Context, node: u16, id: u32, t: i64| {
            offset += 1;
            ctx.begin_record(7, offset);
            let record = ShuffleRecord {
                node,
                origin: rocketmq_streams_shuffle::Origin {
                    queue: 7,
                    offset,
                    seq: 0,
                },
                timestamp: t,
                key: Bytes::from(rmp_serde::to_vec("k").expect("key")),
                value: Bytes::from(rmp_serde::to_vec(&("k", id)).expect("value")),
            };
            let r = guarded(ctx, |ctx| join.process(&record, ctx));
            join.advance(ctx).expect("advance");
            r
        };
        let (left, right) = (1, 2);
        let mut first = make(&seen);
        // Left 9 joins nothing; it goes at 111.
        send(&mut first, &mut ctx, left, 9, 90).expect("left 9");
        send(&mut first, &mut ctx, left, 1, 100).expect("left 1");
        send(&mut first, &mut ctx, left, 2, 101).expect("left 2");
        send(&mut first, &mut ctx, right, 3, 105).expect("right 3");
        assert_eq!(*seen.borrow(), [(Some(1), Some(3)), (Some(2), Some(3))]);
        send(&mut first, &mut ctx, left, 4, 108).expect("left 4");
        assert_eq!(ctx.join_records.get(), 5);
        first.flush(&mut ctx).expect("flush");
        ctx.store()
            .expect("store")
            .commit(Checkpoint {
                state_next: 1,
                source_next: Some(100),
                epoch: 0,
                token: 1,
            })
            .expect("commit");
        drop(first);
        assert_eq!(ctx.join_records.get(), 0, "a pipeline that goes gives its count back");
        // Reopened as a restore leaves it: nothing cached, nothing indexed.
        ctx.store = None;
        ctx.store = Some(QueueStore::open(dir.path().join("q"), 100).expect("reopen"));
        seen.borrow_mut().clear();
        let mut second = make(&seen);
        // The restored stream time (108) makes a right record at 80 late.
        let late = send(&mut second, &mut ctx, right, 5, 80);
        assert!(
            matches!(late, Err(StreamsError::Late { stream_time: 108, .. })),
            "{late:?}"
        );
        // The restored left 4 joins right 6; the stream time 112 then
        // lets the restored, unmatched left 9 go, emitted.
        send(&mut second, &mut ctx, right, 6, 112).expect("right 6");
        assert_eq!(*seen.borrow(), [(Some(4), Some(6)), (Some(9), None)]);
        assert_eq!(
            ctx.join_records.get(),
            5,
            "the index rebuilt from the store, right 6 in, left 9 out"
        );
        // Left 7 joins the restored right 3 and right 6; right 8 at 500
        // closes every window.
        send(&mut second, &mut ctx, left, 7, 115).expect("left 7");
        send(&mut second, &mut ctx, right, 8, 500).expect("right 8");
        // Left 1, 2 and 4 joined before the restart (their flags were
        // restored): no `(l, None)` for them.
        assert_eq!(
            *seen.borrow(),
            [
                (Some(4), Some(6)),
                (Some(9), None),
                (Some(7), Some(3)),
                (Some(7), Some(6))
            ]
        );
        assert_eq!(ctx.join_records.get(), 1, "only right 8 is kept");
    }

    #[test]
    fn a_joiner_that_panics_fails_its_record_and_leaves_no_state_behind() {
        let builder = StreamBuilder::new("join");
        let (l, r) = sides(&builder);
        l.join(&r)
            .on(|l| l.0.clone(), |r| r.0.clone())
            .within(JoinWindows::of(ms(10)))
            .apply(|l, r| {
                assert!(r.1 != 13, "unlucky");
                (Some(l.1), Some(r.1))
            })
            .sink("out", Json::<Pair>::new());
        let mut d = driver(&builder);
        pipe(&mut d, "left", "a", 1, 0);
        pipe(&mut d, "right", "a", 13, 1);
        assert_eq!(d.metrics().skipped, 1);
        // The failed right record was not kept: a later left record
        // finds nothing to join.
        pipe(&mut d, "left", "a", 2, 2);
        pipe(&mut d, "right", "a", 3, 3);
        assert_eq!(sorted(read(&mut d)), [(Some(1), Some(3)), (Some(2), Some(3))]);
    }
}
