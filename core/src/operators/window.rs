//! Windowed aggregations: fixed (tumbling, hopping) and session windows,
//! their state per key and window, and the queue's stream time.
//!
//! State, in the queue's store (see [`crate::window`] for the semantics):
//!
//! ```text
//!  [node 2 B][0x00][end 8 B][start 8 B][serialized key]  → the accumulator's state   (decoded layer `node`)
//!  [node 2 B][0x01]                                       → the stream time (i64)     (decoded layer `node | 1 << 16`)
//!  [node 2 B][0x02]                                       → sliding: fired through (i64) (decoded layer `node | 2 << 16`)
//! ```
//!
//! Sliding windows keep no state per window: their states are the records
//! of one time `t` that arrived while the watermark was `a` ("parts",
//! stored as the window `[t, max(a, t) + 1)`: one part per time for records
//! in order). A window `[s, e)` is a left window of a part at `e - 1` or a
//! right window of a part at `s - 1`; when it closes its result merges the
//! parts with `t` in it that arrived while it was open (`max(a, t) < e`),
//! so what it holds never depends on how records were batched into
//! frames. The last watermark the windows were fired through is state too:
//! the index rebuilt after a restart holds every window not fired yet.
//!
//! Times are stored big-endian with the sign bit flipped, so keys sort by
//! end, then start: the open windows are read back in firing order when a
//! queue's pipeline starts ([`QueueStore::keys_with_prefix`]). In memory the
//! operator keeps an index of the open windows by closing time (and, for
//! sessions, per key); it may hold windows a rolled-back record created
//! (their state is then absent), never miss one, and every use checks the
//! state.
//!
//! [`QueueStore::keys_with_prefix`]: rocketmq_streams_state::QueueStore::keys_with_prefix

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use bytes::Bytes;
use rocketmq_streams_state::{QueueStore, StateError};
use serde::de::DeserializeOwned;

use crate::accumulator::Accumulator;
use crate::codec::{self, StateCodec};
use crate::error::StreamsError;
use crate::operators::aggregate::state_error;
use crate::operators::stream_time::{encode_layers, ordered, read_time, unordered, StreamClock};
use crate::processor::{BoxProcessor, Context, Keyed, Processor, Record};
use crate::topology::guarded;
use crate::window::{FixedWindows, SessionWindows, SlidingWindows, TimeWindow, WindowEmit, Windowed};

/// Which windows a record falls in (what a [`WindowSpec`](crate::WindowSpec)
/// stands for inside).
#[doc(hidden)]
#[derive(Debug, Clone, Copy)]
pub enum Kind {
    /// Tumbling or hopping windows.
    Fixed(FixedWindows),
    /// Session windows.
    Session(SessionWindows),
    /// Record-driven sliding windows.
    Sliding(SlidingWindows),
}

impl Kind {
    fn grace(&self) -> i64 {
        match self {
            Kind::Fixed(f) => f.common.grace,
            Kind::Session(s) => s.common.grace,
            Kind::Sliding(s) => s.common.grace,
        }
    }

    fn emit(&self) -> WindowEmit {
        match self {
            Kind::Fixed(f) => f.common.emit,
            Kind::Session(s) => s.common.emit,
            Kind::Sliding(s) => s.common.emit,
        }
    }

    fn idle_timeout(&self) -> i64 {
        match self {
            Kind::Fixed(f) => f.common.idle_timeout,
            Kind::Session(s) => s.common.idle_timeout,
            Kind::Sliding(s) => s.common.idle_timeout,
        }
    }

    /// When a window closes: its end, or for a session its end plus the
    /// gap (until then a record can still extend it).
    fn closes_at(&self, w: TimeWindow) -> i64 {
        match self {
            Kind::Fixed(_) | Kind::Sliding(_) => w.end,
            Kind::Session(s) => w.end.saturating_add(s.gap),
        }
    }
}

/// Combines two states of one key (session windows that a record joins).
pub(crate) type MergeFn<S> = Arc<dyn Fn(&mut S, S) + Send + Sync>;

/// What the operator indexes in memory: the open windows.
#[derive(Default)]
pub(crate) struct Open {
    /// By closing time, then start, then key.
    by_close: BTreeSet<(i64, i64, Bytes)>,
    /// Per serialized key, (start, end) of each state: the sessions, or
    /// the sliding windows' buckets.
    sessions: HashMap<Bytes, BTreeSet<(i64, i64)>, ahash::RandomState>,
    /// Sliding windows: each bucket by when no open window holds it any
    /// more, then its time, then its key.
    expiring: BTreeSet<(i64, i64, Bytes)>,
}

impl Open {
    /// Indexes `raw_key`'s state `w`: a window (a session), or for sliding
    /// windows a bucket (the records at one time) and the two windows it
    /// makes, those still open at `watermark`: the one ending with it and
    /// the one starting just after it.
    fn add(&mut self, kind: Kind, w: TimeWindow, raw_key: &Bytes, watermark: i64) {
        match kind {
            Kind::Fixed(_) => {
                self.by_close.insert((w.end, w.start, raw_key.clone()));
            }
            Kind::Session(_) => {
                self.by_close.insert((kind.closes_at(w), w.start, raw_key.clone()));
                self.sessions
                    .entry(raw_key.clone())
                    .or_default()
                    .insert((w.start, w.end));
            }
            Kind::Sliding(s) => {
                let (b, d) = (w.start, s.difference);
                self.sessions
                    .entry(raw_key.clone())
                    .or_default()
                    .insert((w.start, w.end));
                // After the last window holding b (the one just after it,
                // which closes at b + d + 2) has fired.
                self.expiring
                    .insert((b.saturating_add(d).saturating_add(2), w.end, raw_key.clone()));
                for start in [b.saturating_sub(d), b.saturating_add(1)] {
                    let end = start.saturating_add(d).saturating_add(1);
                    if end > watermark {
                        self.by_close.insert((end, start, raw_key.clone()));
                    }
                }
            }
        }
    }
}

/// A windowed aggregation of `A` over keyed values of `V`.
pub struct WindowAggregate<K, V, A: Accumulator<V>> {
    pub(crate) node: u16,
    pub(crate) kind: Kind,
    pub(crate) acc: Arc<A>,
    /// Sessions only.
    pub(crate) merge: Option<MergeFn<A::State>>,
    pub(crate) next: BoxProcessor<Keyed<Windowed<K>, A::Output>>,
    /// The windows of the record being processed.
    pub(crate) windows: Vec<TimeWindow>,
    pub(crate) key_buf: Vec<u8>,
    /// `None` until the first use after the pipeline starts.
    pub(crate) open: Option<Open>,
    pub(crate) clock: StreamClock,
}

impl<K, V, A: Accumulator<V>> WindowAggregate<K, V, A> {
    pub(crate) fn new(
        node: u16,
        kind: Kind,
        acc: Arc<A>,
        merge: Option<MergeFn<A::State>>,
        next: BoxProcessor<Keyed<Windowed<K>, A::Output>>,
    ) -> Self {
        WindowAggregate {
            node,
            kind,
            acc,
            merge,
            next,
            windows: Vec::new(),
            key_buf: Vec::new(),
            open: None,
            clock: StreamClock::new(node),
        }
    }
}

impl<K, V, A> WindowAggregate<K, V, A>
where
    K: Clone + DeserializeOwned + 'static,
    A: Accumulator<V>,
{
    fn states(&self) -> u32 {
        u32::from(self.node)
    }

    /// Sliding windows: the watermark the windows were fired through.
    fn fired_layer(&self) -> u32 {
        u32::from(self.node) | 2 << 16
    }

    fn fired_key(&self) -> [u8; 3] {
        let [a, b] = self.node.to_be_bytes();
        [a, b, 0x02]
    }

    /// The watermark sliding windows were last fired through (`i64::MIN`
    /// before any firing).
    fn fired_through(&self, store: &mut QueueStore) -> Result<i64, StreamsError> {
        read_time(store, self.fired_layer(), &self.fired_key())
    }

    fn state_prefix(&self) -> [u8; 3] {
        let [a, b] = self.node.to_be_bytes();
        [a, b, 0x00]
    }

    /// Sets `key_buf` to the store key of `raw_key`'s state in `w`.
    fn state_key(key_buf: &mut Vec<u8>, prefix: [u8; 3], w: TimeWindow, raw_key: &[u8]) {
        key_buf.clear();
        key_buf.extend_from_slice(&prefix);
        key_buf.extend_from_slice(&ordered(w.end));
        key_buf.extend_from_slice(&ordered(w.start));
        key_buf.extend_from_slice(raw_key);
    }

    /// The open windows, read from the store on first use.
    fn open(&mut self, store: &mut QueueStore) -> Result<&mut Open, StreamsError> {
        if self.open.is_none() {
            let mut open = Open::default();
            // Windows not fired yet: for sliding windows, those ending after
            // the last firing (the stream time may have moved on since).
            let watermark = match self.kind {
                Kind::Sliding(_) => self.fired_through(store)?,
                _ => i64::MIN,
            };
            let prefix = self.state_prefix();
            for key in store.keys_with_prefix(&prefix)? {
                let parsed = (|| {
                    let end = unordered(key.get(3..11)?)?;
                    let start = unordered(key.get(11..19)?)?;
                    Some((TimeWindow { start, end }, key.slice(19..)))
                })();
                let Some((w, raw_key)) = parsed else {
                    return Err(StateError::Malformed(format!("window state key {key:?}")).into());
                };
                open.add(self.kind, w, &raw_key, watermark);
            }
            self.open = Some(open);
        }
        Ok(self.open.get_or_insert_with(Open::default))
    }

    /// The queue's stream time (`i64::MIN` before any record).
    fn stream_time(&self, store: &mut QueueStore) -> Result<i64, StreamsError> {
        self.clock.now(store)
    }

    /// The windows of a session key's record at `t`: the open sessions it
    /// joins (within the gap of it), which it merges into one. A session
    /// closed by stream time `now` is not joined even before it has fired
    /// (it fires after this frame): what a record joins must not depend on
    /// how records were batched into frames.
    fn sessions_of(
        &mut self,
        store: &mut QueueStore,
        raw_key: &Bytes,
        t: i64,
        gap: i64,
        now: i64,
    ) -> Result<(), StreamsError> {
        let grace = self.kind.grace();
        self.windows.clear();
        let prefix = self.state_prefix();
        let candidates: Vec<(i64, i64)> = match self.open(store)?.sessions.get(raw_key) {
            // A session [s, e) holds records from s to e - 1: t joins it
            // when s - gap ≤ t ≤ e - 1 + gap.
            Some(sessions) => sessions
                .range(..=(t.saturating_add(gap), i64::MAX))
                .filter(|&&(_, e)| e.saturating_sub(1).saturating_add(gap) >= t)
                .filter(|&&(_, e)| e.saturating_add(gap).saturating_add(grace) > now)
                .copied()
                .collect(),
            None => Vec::new(),
        };
        for (start, end) in candidates {
            let w = TimeWindow { start, end };
            Self::state_key(&mut self.key_buf, prefix, w, raw_key);
            // The index may hold sessions a rolled-back record made.
            if store
                .read::<StateCodec<A::State>, _>(self.states(), &self.key_buf, |s| s.is_some())
                .map_err(|e| state_error(raw_key, e))?
            {
                self.windows.push(w);
            }
        }
        Ok(())
    }

    /// Folds `value` into `raw_key`'s state in `w`, creating it (and
    /// indexing the window) if new; returns the new result when
    /// [`WindowEmit::OnUpdate`].
    fn fold(
        &mut self,
        store: &mut QueueStore,
        raw_key: &Bytes,
        w: TimeWindow,
        value: &V,
    ) -> Result<Option<A::Output>, StreamsError> {
        let prefix = self.state_prefix();
        Self::state_key(&mut self.key_buf, prefix, w, raw_key);
        let sliding = matches!(self.kind, Kind::Sliding(_));
        let (acc, on_update) = (&self.acc, self.kind.emit() == WindowEmit::OnUpdate && !sliding);
        let (created, result) = store
            .update::<StateCodec<A::State>, _>(self.states(), &self.key_buf, |state| {
                let created = state.is_none();
                let state = state.get_or_insert_with(|| acc.init());
                acc.add(state, value);
                (created, on_update.then(|| acc.result(state)))
            })
            .map_err(|e| state_error(raw_key, e))?;
        if created {
            self.index(store, raw_key, w)?;
        }
        Ok(result)
    }

    fn index(&mut self, store: &mut QueueStore, raw_key: &Bytes, w: TimeWindow) -> Result<(), StreamsError> {
        // A window a new part makes that is closed already is not one the
        // part can be in (see `content`): not indexed.
        let watermark = match self.kind {
            Kind::Sliding(_) => self.stream_time(store)?.saturating_sub(self.kind.grace()),
            _ => i64::MIN,
        };
        let kind = self.kind;
        self.open(store)?.add(kind, w, raw_key, watermark);
        Ok(())
    }

    /// Merges the sessions in `self.windows` and a record at `t` into one
    /// session: their states are combined (in start order) under the
    /// merged bounds, the old ones deleted. Returns the merged window.
    fn merge_sessions(&mut self, store: &mut QueueStore, raw_key: &Bytes, t: i64) -> Result<TimeWindow, StreamsError> {
        let merged = self.windows.iter().fold(
            TimeWindow {
                start: t,
                end: t.saturating_add(1),
            },
            |m, w| TimeWindow {
                start: m.start.min(w.start),
                end: m.end.max(w.end),
            },
        );
        if self.windows.is_empty() || self.windows == [merged] {
            return Ok(merged);
        }
        let prefix = self.state_prefix();
        let mut combined: Option<A::State> = None;
        let mut parts = std::mem::take(&mut self.windows);
        parts.sort_unstable();
        for &w in &parts {
            Self::state_key(&mut self.key_buf, prefix, w, raw_key);
            let state = store
                .update::<StateCodec<A::State>, _>(self.states(), &self.key_buf, Option::take)
                .map_err(|e| state_error(raw_key, e))?;
            match (combined.as_mut(), state) {
                (_, None) => {}
                (None, Some(state)) => combined = Some(state),
                (Some(c), Some(state)) => match &self.merge {
                    Some(merge) => merge(c, state),
                    None => return Err(StreamsError::Topology("session windows need a merge".into())),
                },
            }
        }
        self.windows = parts;
        if let Some(combined) = combined {
            Self::state_key(&mut self.key_buf, prefix, merged, raw_key);
            store
                .update::<StateCodec<A::State>, _>(self.states(), &self.key_buf, |s| *s = Some(combined))
                .map_err(|e| state_error(raw_key, e))?;
            self.index(store, raw_key, merged)?;
        }
        Ok(merged)
    }

    /// Emits (when [`WindowEmit::OnClose`]) and deletes every window the
    /// watermark has closed, each guarded as a record of its own.
    fn fire(&mut self, ctx: &mut Context) -> Result<(), StreamsError> {
        let kind = self.kind;
        let watermark = self.stream_time(ctx.store()?)?.saturating_sub(kind.grace());
        if let Kind::Sliding(_) = kind {
            return self.fire_sliding(ctx, watermark);
        }
        let prefix = self.state_prefix();
        let (states, on_close) = (self.states(), kind.emit() == WindowEmit::OnClose);
        loop {
            let open = self.open(ctx.store()?)?;
            let Some((closes, start, raw_key)) = open.by_close.first().cloned() else {
                return Ok(());
            };
            if closes > watermark {
                return Ok(());
            }
            let end = match kind {
                Kind::Fixed(f) => start.saturating_add(f.size),
                Kind::Session(s) => closes.saturating_sub(s.gap),
                Kind::Sliding(_) => closes,
            };
            let window = TimeWindow { start, end };
            Self::state_key(&mut self.key_buf, prefix, window, &raw_key);
            let live = ctx
                .store()?
                .read::<StateCodec<A::State>, _>(states, &self.key_buf, |s| s.is_some())
                .map_err(|e| state_error(&raw_key, e))?;
            if !live {
                // Made by a record that was rolled back, or merged away.
                self.forget(closes, window, &raw_key);
                continue;
            }
            let (acc, next, key_buf) = (&self.acc, &mut self.next, &self.key_buf);
            let emitted = guarded(ctx, |ctx| {
                let result = ctx
                    .store()?
                    .update::<StateCodec<A::State>, _>(states, key_buf, |s| {
                        let state = s.take();
                        // `result` is user code: not run for nothing.
                        if on_close {
                            state.map(|s| acc.result(&s))
                        } else {
                            None
                        }
                    })
                    .map_err(|e| state_error(&raw_key, e))?;
                match result {
                    Some(value) => {
                        let key: K = codec::decode(&raw_key, "windowed key")?;
                        let out = Keyed {
                            key: Windowed { key, window },
                            raw_key: raw_key.clone(),
                            value,
                        };
                        next.process(
                            Record {
                                value: out,
                                timestamp: window.end.saturating_sub(1),
                            },
                            ctx,
                        )
                    }
                    _ => Ok(()),
                }
            });
            match emitted {
                Ok(()) => {}
                // Still indexed: the next advance fires it.
                Err(e @ StreamsError::State(_)) => return Err(e),
                Err(e) => {
                    // Rolled back: the window is closed all the same, its
                    // result goes to the error policy.
                    ctx.store()?
                        .update::<StateCodec<A::State>, _>(states, &self.key_buf, |s| *s = None)
                        .map_err(|e| state_error(&raw_key, e))?;
                    ctx.flush_failures.push((raw_key.clone(), e));
                }
            }
            self.forget(closes, window, &raw_key);
        }
    }

    /// The queue has had no record for `idle` ms of wall-clock time: once
    /// that reaches the idle timeout, the stream time follows the wall
    /// clock (the records' stream time plus `idle`), but only when that
    /// closes a window (`ctx.due` is then set; firing is the caller's next
    /// step, after the moved stream time is durable).
    fn idle(&mut self, ctx: &mut Context, idle: i64) -> Result<(), StreamsError> {
        if idle < self.kind.idle_timeout() {
            return Ok(());
        }
        let store = ctx.store()?;
        let Some(target) = self.clock.idle_target(store, idle)? else {
            return Ok(());
        };
        let first = self.open(store)?.by_close.first().map(|(closes, _, _)| *closes);
        if first.is_none_or(|closes| closes > target.saturating_sub(self.kind.grace())) {
            return Ok(());
        }
        self.clock.set(store, target)?;
        ctx.due = true;
        Ok(())
    }

    /// The state of `raw_key`'s records in `w`: its sliding parts there
    /// that arrived while `w` was open, merged in time order (`None` if
    /// none).
    fn content(
        &mut self,
        store: &mut QueueStore,
        raw_key: &Bytes,
        w: TimeWindow,
    ) -> Result<Option<A::State>, StreamsError> {
        let buckets: Vec<(i64, i64)> = match self.open(store)?.sessions.get(raw_key) {
            // The parts of times in w that came while w was open.
            Some(buckets) => buckets
                .range((w.start, i64::MIN)..(w.end, i64::MIN))
                .filter(|&&(_, arrived)| arrived <= w.end)
                .copied()
                .collect(),
            None => return Ok(None),
        };
        let prefix = self.state_prefix();
        let mut merged: Option<A::State> = None;
        for (start, end) in buckets {
            Self::state_key(&mut self.key_buf, prefix, TimeWindow { start, end }, raw_key);
            let Some(state) = store
                .read::<StateCodec<A::State>, _>(self.states(), &self.key_buf, |s| s.cloned())
                .map_err(|e| state_error(raw_key, e))?
            else {
                continue;
            };
            match (merged.as_mut(), &self.merge) {
                (None, _) => merged = Some(state),
                (Some(m), Some(merge)) => merge(m, state),
                (Some(_), None) => return Err(StreamsError::Topology("sliding windows need a merge".into())),
            }
        }
        Ok(merged)
    }

    /// [`WindowEmit::OnUpdate`] of sliding windows: the new result of each
    /// open window holding the record at `t`, those of the key's buckets
    /// (a window starts `d` before a bucket, or just after one), and, when
    /// the record made a new bucket, the window just after it (which the
    /// key's later records, come earlier, may already fill).
    fn sliding_updates(
        &mut self,
        ctx: &mut Context,
        key: &K,
        raw_key: &Bytes,
        t: i64,
        d: i64,
        new_bucket: bool,
    ) -> Result<(), StreamsError> {
        let store = ctx.store()?;
        let watermark = self.stream_time(store)?.saturating_sub(self.kind.grace());
        let first = t.saturating_sub(d).saturating_sub(1);
        let mut windows = BTreeSet::new();
        if let Some(buckets) = self.open(store)?.sessions.get(raw_key) {
            let near = (first.saturating_sub(d), i64::MIN)..=(t.saturating_add(d).saturating_add(1), i64::MAX);
            for &(b, _) in buckets.range(near) {
                for start in [b.saturating_sub(d), b.saturating_add(1)] {
                    let end = start.saturating_add(d).saturating_add(1);
                    let after = new_bucket && start == t.saturating_add(1);
                    if (start <= t && t < end || after) && end > watermark {
                        windows.insert(TimeWindow { start, end });
                    }
                }
            }
        }
        for w in windows {
            if !self.is_window(ctx.store()?, raw_key, w)? {
                continue;
            }
            let Some(state) = self.content(ctx.store()?, raw_key, w)? else {
                continue;
            };
            let out = Keyed {
                key: Windowed {
                    key: key.clone(),
                    window: w,
                },
                raw_key: raw_key.clone(),
                value: self.acc.result(&state),
            };
            self.next.process(
                Record {
                    value: out,
                    timestamp: t,
                },
                ctx,
            )?;
        }
        Ok(())
    }

    /// Fires the sliding windows the watermark closed (each guarded, as in
    /// [`fire`](Self::fire)), then deletes the buckets no open window holds.
    fn fire_sliding(&mut self, ctx: &mut Context, watermark: i64) -> Result<(), StreamsError> {
        let on_close = self.kind.emit() == WindowEmit::OnClose;
        loop {
            let Some((end, start, raw_key)) = self.open(ctx.store()?)?.by_close.first().cloned() else {
                break;
            };
            if end > watermark {
                break;
            }
            let window = TimeWindow { start, end };
            let state = if on_close && self.is_window(ctx.store()?, &raw_key, window)? {
                self.content(ctx.store()?, &raw_key, window)?
            } else {
                None
            };
            if let Some(state) = state {
                let (acc, next) = (&self.acc, &mut self.next);
                let emitted = guarded(ctx, |ctx| {
                    let key: K = codec::decode(&raw_key, "windowed key")?;
                    let out = Keyed {
                        key: Windowed { key, window },
                        raw_key: raw_key.clone(),
                        value: acc.result(&state),
                    };
                    next.process(
                        Record {
                            value: out,
                            timestamp: end.saturating_sub(1),
                        },
                        ctx,
                    )
                });
                match emitted {
                    Ok(()) => {}
                    Err(e @ StreamsError::State(_)) => return Err(e),
                    Err(e) => ctx.flush_failures.push((raw_key.clone(), e)),
                }
            }
            if let Some(open) = self.open.as_mut() {
                open.by_close.remove(&(end, start, raw_key));
            }
        }
        if watermark > self.fired_through(ctx.store()?)? {
            let key = self.fired_key();
            ctx.store()?
                .update::<StateCodec<i64>, _>(self.fired_layer(), &key, |f| *f = Some(watermark))
                .map_err(|e| state_error(&key, e))?;
        }
        let prefix = self.state_prefix();
        let d = match self.kind {
            Kind::Sliding(s) => s.difference,
            _ => 0,
        };
        loop {
            let Some((expires, arrived, raw_key)) = self.open(ctx.store()?)?.expiring.first().cloned() else {
                return Ok(());
            };
            if expires > watermark {
                return Ok(());
            }
            let bucket = TimeWindow {
                start: expires.saturating_sub(d).saturating_sub(2),
                end: arrived,
            };
            Self::state_key(&mut self.key_buf, prefix, bucket, &raw_key);
            ctx.store()?
                .update::<StateCodec<A::State>, _>(self.states(), &self.key_buf, |s| *s = None)
                .map_err(|e| state_error(&raw_key, e))?;
            if let Some(open) = self.open.as_mut() {
                open.expiring.remove(&(expires, arrived, raw_key.clone()));
                if let Some(parts) = open.sessions.get_mut(&raw_key) {
                    parts.remove(&(bucket.start, bucket.end));
                    if parts.is_empty() {
                        open.sessions.remove(&raw_key);
                    }
                }
            }
        }
    }

    /// Whether `w` is a sliding window of `raw_key`'s live records: the one
    /// ending with a record (at `end - 1`) or the one starting just after
    /// one (at `start - 1`). The index may hold windows of parts a
    /// rolled-back record made.
    fn is_window(&mut self, store: &mut QueueStore, raw_key: &Bytes, w: TimeWindow) -> Result<bool, StreamsError> {
        let parts: Vec<(i64, i64)> = match self.open(store)?.sessions.get(raw_key) {
            Some(parts) => [w.end.saturating_sub(1), w.start.saturating_sub(1)]
                .into_iter()
                .flat_map(|t| parts.range((t, i64::MIN)..=(t, i64::MAX)).copied().collect::<Vec<_>>())
                .collect(),
            None => return Ok(false),
        };
        let prefix = self.state_prefix();
        for (start, end) in parts {
            Self::state_key(&mut self.key_buf, prefix, TimeWindow { start, end }, raw_key);
            if store
                .read::<StateCodec<A::State>, _>(self.states(), &self.key_buf, |s| s.is_some())
                .map_err(|e| state_error(raw_key, e))?
            {
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// Drops a fired (or phantom) window from the index.
    fn forget(&mut self, closes: i64, window: TimeWindow, raw_key: &Bytes) {
        let Some(open) = self.open.as_mut() else { return };
        open.by_close.remove(&(closes, window.start, raw_key.clone()));
        if let Some(sessions) = open.sessions.get_mut(raw_key) {
            sessions.remove(&(window.start, window.end));
            if sessions.is_empty() {
                open.sessions.remove(raw_key);
            }
        }
    }
}

impl<K, V, A> Processor<Keyed<K, V>> for WindowAggregate<K, V, A>
where
    K: Clone + DeserializeOwned + 'static,
    A: Accumulator<V>,
{
    fn process(&mut self, record: Record<Keyed<K, V>>, ctx: &mut Context) -> Result<(), StreamsError> {
        let Keyed { key, raw_key, value } = record.value;
        let t = record.timestamp;
        self.clock.on_record();
        let store = ctx.store()?;
        let before = self.stream_time(store)?;
        let now = before.max(t);
        let grace = self.kind.grace();
        let closed = |closes: i64| closes.saturating_add(grace) <= now;
        let mut new_bucket = false;
        match self.kind {
            Kind::Fixed(f) => {
                self.windows.clear();
                f.windows_of(t, &mut self.windows);
                self.windows.retain(|&w| !closed(w.end));
                if self.windows.is_empty() {
                    ctx.late += 1;
                    return Err(StreamsError::Late {
                        timestamp: t,
                        closed_at: t
                            .div_euclid(f.advance)
                            .saturating_mul(f.advance)
                            .saturating_add(f.size)
                            .saturating_add(grace),
                        stream_time: now,
                    });
                }
            }
            Kind::Session(s) => {
                self.sessions_of(store, &raw_key, t, s.gap, now)?;
                let own = TimeWindow {
                    start: t,
                    end: t.saturating_add(1),
                };
                let merged_end = self.windows.iter().map(|w| w.end).max().unwrap_or(own.end).max(own.end);
                let closes = merged_end.saturating_add(s.gap);
                if closed(closes) {
                    ctx.late += 1;
                    return Err(StreamsError::Late {
                        timestamp: t,
                        closed_at: closes.saturating_add(grace),
                        stream_time: now,
                    });
                }
                let merged = self.merge_sessions(store, &raw_key, t)?;
                self.windows.clear();
                self.windows.push(merged);
            }
            Kind::Sliding(sl) => {
                // The windows holding t end in (t, t + d + 1].
                let last_end = t.saturating_add(sl.difference).saturating_add(1);
                if closed(last_end) {
                    ctx.late += 1;
                    return Err(StreamsError::Late {
                        timestamp: t,
                        closed_at: last_end.saturating_add(grace),
                        stream_time: now,
                    });
                }
                // The record goes into the part of its time that arrived
                // under this watermark (the in-order part when its windows
                // are all open).
                let arrived = now.saturating_sub(grace).max(t);
                let part = TimeWindow {
                    start: t,
                    end: arrived.saturating_add(1),
                };
                new_bucket = self
                    .open(store)?
                    .sessions
                    .get(&raw_key)
                    .is_none_or(|parts| parts.range((t, i64::MIN)..=(t, i64::MAX)).next().is_none());
                self.windows.clear();
                self.windows.push(part);
            }
        }
        if now > before {
            self.clock.set(store, now)?;
        }
        let windows = std::mem::take(&mut self.windows);
        let mut outcome = Ok(());
        for &w in &windows {
            let store = ctx.store()?;
            match self.fold(store, &raw_key, w, &value) {
                Ok(None) => {}
                Ok(Some(result)) => {
                    let out = Keyed {
                        key: Windowed {
                            key: key.clone(),
                            window: w,
                        },
                        raw_key: raw_key.clone(),
                        value: result,
                    };
                    if let Err(e) = self.next.process(
                        Record {
                            value: out,
                            timestamp: t,
                        },
                        ctx,
                    ) {
                        outcome = Err(e);
                        break;
                    }
                }
                Err(e) => {
                    outcome = Err(e);
                    break;
                }
            }
        }
        self.windows = windows;
        if outcome.is_ok() && self.kind.emit() == WindowEmit::OnUpdate {
            if let Kind::Sliding(sl) = self.kind {
                outcome = self.sliding_updates(ctx, &key, &raw_key, t, sl.difference, new_bucket);
            }
        }
        outcome
    }

    /// Encodes the window states and the stream time updated since the
    /// last flush; a state that does not encode fails the flush (and the
    /// checkpoint), as for [`Aggregate`](crate::operators::aggregate::Aggregate).
    fn flush(&mut self, ctx: &mut Context) -> Result<(), StreamsError> {
        let layers = [self.states(), self.clock.layer(), self.fired_layer()];
        encode_layers(ctx.store()?, &layers, "the window state")?;
        self.next.flush(ctx)
    }

    fn advance(&mut self, ctx: &mut Context) -> Result<(), StreamsError> {
        match ctx.idle {
            Some(idle) => self.idle(ctx, idle)?,
            None => {
                // After a frame (not an idle firing): the queue had records,
                // so the next idle time counts from the stream time they made.
                self.clock.on_advance(ctx);
                self.fire(ctx)?;
            }
        }
        self.next.advance(ctx)
    }
}

#[cfg(test)]
mod tests {
    use std::cell::RefCell;
    use std::rc::Rc;
    use std::time::Duration;

    use rocketmq_streams_state::Checkpoint;

    use super::*;
    use crate::accumulator::Count;
    use crate::prelude::*;
    use crate::window::Window;
    use crate::WindowSpec;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    type Out = (Windowed<String>, u64);

    /// Words of topic `in`, counted per window of `spec`.
    fn counted<W: WindowSpec>(builder: &StreamBuilder, spec: W) -> GroupedStream<Windowed<String>, u64> {
        builder
            .source("in", Utf8)
            .key_by(|w: &String| w.clone())
            .window(spec)
            .count()
    }

    fn counting<W: WindowSpec>(spec: W) -> TopologyTestDriver {
        let builder = StreamBuilder::new("win");
        counted(&builder, spec).sink("out", Json::<Out>::new());
        TopologyTestDriver::new(builder.build().expect("topology"))
    }

    fn pipe(d: &mut TopologyTestDriver, key: &str, t: i64) {
        d.pipe_input("in", key.to_string(), t).expect("pipe");
    }

    /// (key, start, end, count) of what the sink got since the last read.
    fn read(d: &mut TopologyTestDriver) -> Vec<(String, i64, i64, u64)> {
        d.read_values("out", &Json::<Out>::new())
            .into_iter()
            .map(|(w, n)| (w.key, w.window.start, w.window.end, n))
            .collect()
    }

    fn w(key: &str, start: i64, end: i64, n: u64) -> (String, i64, i64, u64) {
        (key.to_string(), start, end, n)
    }

    #[test]
    fn a_tumbling_window_fires_once_the_stream_passes_its_end_and_then_forgets_it() {
        let mut d = counting(Window::tumbling(ms(10)));
        for t in [0, 5, 9] {
            pipe(&mut d, "a", t);
        }
        assert!(read(&mut d).is_empty(), "open windows emit nothing");
        // Exactly at the end: the record opens the next window and closes this one.
        pipe(&mut d, "a", 10);
        assert_eq!(read(&mut d), [w("a", 0, 10, 3)]);
        pipe(&mut d, "a", 25);
        assert_eq!(read(&mut d), [w("a", 10, 20, 1)]);
        // [20, 30) holds the record at 25, plus the stream time.
        assert_eq!(d.state_len().expect("state"), 2);
        // Its window closed at 10 (stream time 25): late, counted, skipped.
        pipe(&mut d, "a", 3);
        assert!(read(&mut d).is_empty());
        assert_eq!((d.metrics().late, d.metrics().skipped), (1, 1));
        pipe(&mut d, "a", 100);
        assert_eq!(read(&mut d), [w("a", 20, 30, 1)]);
        assert_eq!(d.state_len().expect("state"), 2, "closed windows leave no state");
    }

    #[test]
    fn grace_keeps_a_window_open_for_late_records() {
        let mut d = counting(Window::tumbling(ms(10)).grace(ms(5)));
        pipe(&mut d, "a", 0);
        pipe(&mut d, "a", 12);
        pipe(&mut d, "a", 8);
        assert!(read(&mut d).is_empty(), "[0, 10) closes at 15");
        pipe(&mut d, "a", 15);
        assert_eq!(read(&mut d), [w("a", 0, 10, 2)]);
        pipe(&mut d, "a", 9);
        assert_eq!(d.metrics().late, 1);
        pipe(&mut d, "a", 40);
        assert_eq!(read(&mut d), [w("a", 10, 20, 2)]);
    }

    #[test]
    fn hopping_windows_count_what_a_reference_counts() {
        let mut d = counting(Window::hopping(ms(10), ms(3)));
        let mut times = Vec::new();
        let mut t = 0i64;
        for i in 0..300i64 {
            t += (i * 7919) % 5;
            times.push(t);
            pipe(&mut d, "k", t);
        }
        // Far ahead: every window of the records above closes.
        pipe(&mut d, "k", t + 1_000);
        let mut got = read(&mut d);
        got.sort();
        let mut expected = Vec::new();
        let mut start = (times[0] - 10).div_euclid(3) * 3 + 3;
        while start <= t {
            let n = times.iter().filter(|&&x| start <= x && x < start + 10).count() as u64;
            if n > 0 {
                expected.push(w("k", start, start + 10, n));
            }
            start += 3;
        }
        assert_eq!(got, expected);
        assert_eq!(d.metrics().late, 0);
    }

    #[test]
    fn sessions_merge_as_records_bridge_them_and_fire_after_their_gap() {
        // A grace of 20 keeps [0, 6) open (it closes at 16 + 20) while 30 comes.
        let mut d = counting(Window::session(ms(10)).grace(ms(20)));
        for t in [0, 5, 30, 15] {
            pipe(&mut d, "a", t);
        }
        assert!(read(&mut d).is_empty(), "[0, 16) and [30, 31) are open");
        // 22 is within the gap of both: one session.
        pipe(&mut d, "a", 22);
        pipe(&mut d, "a", 60);
        assert!(read(&mut d).is_empty(), "[0, 31) closes at 41 + 20");
        pipe(&mut d, "a", 61);
        assert_eq!(read(&mut d), [w("a", 0, 31, 5)]);
        // Sessions far apart stay apart.
        pipe(&mut d, "a", 200);
        assert_eq!(read(&mut d), [w("a", 60, 62, 2)]);
        assert_eq!(d.metrics().late, 0);
        assert_eq!(d.state_len().expect("state"), 2, "[200, 201) and the stream time");
    }

    #[test]
    fn a_session_record_that_comes_after_its_session_closed_is_late() {
        let mut d = counting(Window::session(ms(10)));
        pipe(&mut d, "a", 0);
        pipe(&mut d, "a", 50);
        assert_eq!(read(&mut d), [w("a", 0, 1, 1)]);
        // It would have joined [0, 1), closed since 11.
        pipe(&mut d, "a", 3);
        assert_eq!(d.metrics().late, 1);
        // Before the open session, within its gap: it joins it.
        pipe(&mut d, "a", 45);
        pipe(&mut d, "a", 100);
        assert_eq!(read(&mut d), [w("a", 45, 51, 2)]);
    }

    #[test]
    fn on_update_emits_every_change_and_nothing_more_at_the_close() {
        let mut d = counting(Window::tumbling(ms(10)).emit(WindowEmit::OnUpdate));
        pipe(&mut d, "a", 1);
        pipe(&mut d, "a", 2);
        pipe(&mut d, "a", 11);
        assert_eq!(read(&mut d), [w("a", 0, 10, 1), w("a", 0, 10, 2), w("a", 10, 20, 1)]);
        pipe(&mut d, "a", 50);
        assert_eq!(read(&mut d), [w("a", 50, 60, 1)]);
        assert_eq!(d.state_len().expect("state"), 2);
    }

    #[test]
    fn a_result_that_fails_downstream_goes_to_the_policy_and_its_window_still_closes() {
        let builder = StreamBuilder::new("win");
        counted(&builder, Window::tumbling(ms(10)))
            .to_rstream()
            .map(|(w, n): (Windowed<String>, u64)| {
                assert!(n != 2, "two is too many");
                (w, n)
            })
            .sink("out", Json::<Out>::new());
        let mut d = TopologyTestDriver::new(builder.build().expect("topology"));
        for t in [1, 2, 11, 12, 13, 30] {
            pipe(&mut d, "a", t);
        }
        assert_eq!(read(&mut d), [w("a", 10, 20, 3)]);
        assert_eq!(d.metrics().skipped, 1);
        assert_eq!(d.state_len().expect("state"), 2, "[30, 40) and the stream time");
    }

    #[test]
    fn an_aggregation_may_not_follow_a_window_in_its_stage_but_may_after_a_key_by() {
        let builder = StreamBuilder::new("win");
        counted(&builder, Window::tumbling(ms(10)))
            .count()
            .sink("bad", Json::<(Windowed<String>, u64)>::new());
        let err = builder.build().expect_err("refused");
        assert!(err.to_string().contains("windowed aggregation"), "{err}");

        let builder = StreamBuilder::new("win");
        counted(&builder, Window::tumbling(ms(10)))
            .to_rstream()
            .key_by(|(w, _): &(Windowed<String>, u64)| w.window.start)
            .sum(|(_, n): &(Windowed<String>, u64)| *n)
            .sink("per-window", Json::<(i64, u64)>::new());
        builder.build().expect("a key_by starts a new stage");
    }

    #[test]
    fn what_a_session_record_joins_does_not_depend_on_how_records_share_frames() {
        let run = |lines: &[&str]| {
            let builder = StreamBuilder::new("win");
            builder
                .source("in", Utf8)
                .flat_map(|line: String| {
                    line.split(' ')
                        .filter_map(|t| t.parse::<i64>().ok())
                        .collect::<Vec<_>>()
                })
                .select_timestamp(|t: &i64| *t)
                .key_by(|_: &i64| "a".to_string())
                .window(Window::session(ms(10)))
                .count()
                .sink("out", Json::<Out>::new());
            let mut d = TopologyTestDriver::new(builder.build().expect("topology"));
            for line in lines {
                d.pipe_input("in", line.to_string(), 0).expect("pipe");
            }
            d.pipe_input("in", "1000", 0).expect("pipe");
            (read(&mut d), d.metrics().late)
        };
        // 15 closes [0, 1) (at 11): 7 may not join it, in one frame or not.
        let apart = run(&["0", "15", "7"]);
        let together = run(&["0 15 7"]);
        assert_eq!(apart, (vec![w("a", 0, 1, 1), w("a", 7, 16, 2)], 0));
        assert_eq!(together, apart);
    }

    #[test]
    fn an_idle_queue_fires_its_last_windows_as_the_wall_clock_moves_on() {
        let mut d = counting(Window::tumbling(ms(10)));
        for t in [0, 5] {
            pipe(&mut d, "a", t);
        }
        d.advance_wall_clock(ms(1_999)).expect("advance");
        assert!(read(&mut d).is_empty(), "idle for less than the 2 s default");
        assert_eq!(d.stream_time(queue_of("a")).expect("time"), Some(5));
        d.advance_wall_clock(ms(1)).expect("advance");
        assert_eq!(read(&mut d), [w("a", 0, 10, 2)]);
        // The records' stream time plus the idle wall-clock time.
        assert_eq!(d.stream_time(queue_of("a")).expect("time"), Some(2_005));
        // Its window fired: a record for it now is late.
        pipe(&mut d, "a", 7);
        assert_eq!(d.metrics().late, 1);
        // A record resets the idle time: [2000, 2010) waits 2 s more.
        pipe(&mut d, "a", 2_001);
        d.advance_wall_clock(ms(1_000)).expect("advance");
        assert!(read(&mut d).is_empty());
        d.advance_wall_clock(ms(1_000)).expect("advance");
        assert_eq!(read(&mut d), [w("a", 2_000, 2_010, 1)]);
        assert_eq!(d.state_len().expect("state"), 1, "only the stream time is left");
    }

    #[test]
    fn idle_firing_can_be_turned_off_and_waits_for_the_grace() {
        let mut off = counting(Window::tumbling(ms(10)).idle_timeout(Duration::MAX));
        pipe(&mut off, "a", 0);
        off.advance_wall_clock(Duration::from_secs(3_600)).expect("advance");
        assert!(read(&mut off).is_empty());
        assert_eq!(off.stream_time(queue_of("a")).expect("time"), Some(0));

        let mut graced = counting(Window::session(ms(10)).grace(ms(1_000)).idle_timeout(ms(100)));
        pipe(&mut graced, "a", 0);
        // [0, 1) closes at 11, plus 1 s of grace: 1,011 ms of idle time.
        graced.advance_wall_clock(ms(1_010)).expect("advance");
        assert!(read(&mut graced).is_empty());
        graced.advance_wall_clock(ms(1)).expect("advance");
        assert_eq!(read(&mut graced), [w("a", 0, 1, 1)]);
    }

    /// Kafka Streams' sliding windows by their definition: a window
    /// `[s, s + d]` (inclusive) for each start `t - d` and `t + 1` of a
    /// record time `t`, with the records it holds, if any.
    fn sliding_reference(times: &[i64], d: i64) -> Vec<(String, i64, i64, u64)> {
        let starts: BTreeSet<i64> = times.iter().flat_map(|&t| [t - d, t + 1]).collect();
        starts
            .into_iter()
            .filter_map(|start| {
                let n = times.iter().filter(|&&t| start <= t && t <= start + d).count() as u64;
                (n > 0).then(|| w("k", start, start + d + 1, n))
            })
            .collect()
    }

    #[test]
    fn sliding_windows_follow_the_records() {
        let mut d = counting(Window::sliding(ms(10)));
        for t in [0, 5, 11] {
            pipe(&mut d, "k", t);
        }
        d.advance_wall_clock(Duration::from_secs(60)).expect("advance");
        let mut got = read(&mut d);
        got.sort();
        // [1, 11] is both the window after 0 and the one ending at 11: once.
        assert_eq!(
            got,
            [w("k", -10, 1, 1), w("k", -5, 6, 2), w("k", 1, 12, 2), w("k", 6, 17, 1)]
        );
        assert_eq!(got, sliding_reference(&[0, 5, 11], 10));
        assert_eq!(
            d.state_len().expect("state"),
            2,
            "only the stream time and the firing mark are left"
        );
    }

    #[test]
    fn sliding_windows_count_what_a_reference_counts_out_of_order() {
        // Records up to 13 ms back, a grace of 15: none comes after a
        // window holding it closed (that takes 16), so every window is whole.
        let (diff, grace) = (10, 15);
        let spec = Window::sliding(ms(diff as u64)).grace(ms(grace as u64));
        let mut d = counting(spec);
        let mut updates = counting(spec.emit(WindowEmit::OnUpdate));
        let mut times = Vec::new();
        for i in 0..400i64 {
            let t = i * 2 - if i % 7 == 0 { (i * 31) % 13 } else { 0 } + (i * 7919) % 4;
            times.push(t);
            pipe(&mut d, "k", t);
            pipe(&mut updates, "k", t);
        }
        d.advance_wall_clock(Duration::from_secs(60)).expect("advance");
        updates.advance_wall_clock(Duration::from_secs(60)).expect("advance");
        assert_eq!(d.metrics().late, 0);
        let mut got = read(&mut d);
        got.sort();
        assert_eq!(got, sliding_reference(&times, diff));
        // Early results end where the final ones are, and no other window
        // was ever emitted.
        let mut last = std::collections::BTreeMap::new();
        for (_, s, e, n) in read(&mut updates) {
            last.insert((s, e), n);
        }
        let finals: std::collections::BTreeMap<(i64, i64), u64> =
            got.iter().map(|(_, s, e, n)| ((*s, *e), *n)).collect();
        assert_eq!(last, finals);
        assert_eq!(
            d.state_len().expect("state"),
            2,
            "only the stream time and the firing mark are left"
        );
    }

    #[test]
    fn a_sliding_record_joins_the_windows_still_open_and_is_late_when_none_is() {
        let mut d = counting(Window::sliding(ms(10)));
        for t in [0, 30, 25, 5] {
            pipe(&mut d, "k", t);
        }
        // 30 closed every window holding 5 (they end by 16): late. 25's
        // own window [15, 25] closed at 26, but [20, 30] and [26, 36] are open.
        assert_eq!(d.metrics().late, 1);
        d.advance_wall_clock(Duration::from_secs(60)).expect("advance");
        let mut got = read(&mut d);
        got.sort();
        assert_eq!(got, [w("k", -10, 1, 1), w("k", 20, 31, 2), w("k", 26, 37, 1)]);
    }

    /// The shuffle queue the driver sends `key` to.
    fn queue_of(key: &str) -> u32 {
        rocketmq_streams_shuffle::partition(&rmp_serde::to_vec(key).expect("key"), 8)
    }

    #[test]
    fn a_restart_between_an_idle_step_and_its_firing_fires_the_same_results_numbered_the_same() {
        // Window counts, re-keyed: what the window fires goes to the
        // shuffle topic, numbered (origin offset, seq).
        let builder = StreamBuilder::new("win");
        counted(&builder, Window::tumbling(ms(10)))
            .to_rstream()
            .key_by(|(w, _): &(Windowed<String>, u64)| w.key.clone())
            .sum(|(_, n): &(Windowed<String>, u64)| *n)
            .sink("out", Json::<(String, u64)>::new());
        let topology = builder.build().expect("topology");
        let shuffle = topology.shuffle_topic().expect("keyed").to_string();
        let key = Bytes::from(rmp_serde::to_vec("k").expect("key"));
        let mut framer = rocketmq_streams_shuffle::Framer::new();
        for (i, t) in [1i64, 2, 3].into_iter().enumerate() {
            framer.push(7, 0, i as i64, 0, t, &key, &rmp_serde::to_vec(&"k").expect("value"));
        }
        let frame = framer.finish().remove(0);
        let run = |restart: bool| -> Vec<Bytes> {
            let dir = tempfile::tempdir().expect("tempdir");
            let mut ctx = Context::new(topology.sink_topics().len());
            ctx.store = Some(QueueStore::open(dir.path().join("q"), 100).expect("open"));
            let mut fail = |_: &Bytes, _: Option<u32>, e: StreamsError| Err(e);
            let mut pipeline = topology.pipeline(&shuffle).expect("pipeline");
            ctx.begin_record(42, 0);
            pipeline
                .process(&test_queue(), &frame_message(&frame), &mut ctx, &mut fail)
                .expect("frame");
            assert!(ctx.shuffle.is_empty(), "[0, 10) is open");
            ctx.begin_record(42, 0);
            pipeline.resume(&mut ctx, &mut fail).expect("resume");
            assert!(pipeline.idle(2_000, &mut ctx).expect("idle step"), "[0, 10) is due");
            assert!(ctx.shuffle.is_empty(), "an idle step only writes state");
            if restart {
                // The step is durable, the firing never happened: a new
                // pipeline on the same state fires first thing.
                pipeline = topology.pipeline(&shuffle).expect("pipeline");
                ctx.begin_record(42, 1);
                pipeline.resume(&mut ctx, &mut fail).expect("resume");
            } else {
                pipeline.fire_idle(&mut ctx, &mut fail).expect("fire");
            }
            let frames: Vec<Bytes> = ctx.shuffle.take_frames(1).into_iter().flat_map(|(f, _)| f).collect();
            assert!(!frames.is_empty(), "the window fired");
            // Fired, so no longer pending: a later restart fires nothing.
            pipeline = topology.pipeline(&shuffle).expect("pipeline");
            ctx.begin_record(42, 1);
            pipeline.resume(&mut ctx, &mut fail).expect("resume");
            assert!(ctx.shuffle.is_empty(), "fired once");
            frames
        };
        let fired = run(false);
        assert_eq!(run(true), fired);
        let frame = rocketmq_streams_shuffle::Frame::decode(&fired[0]).expect("frame");
        let record = frame.records().next().expect("a record").expect("decodes");
        assert_eq!(record.origin.offset, 0, "the queue's last offset");
        assert_eq!(
            record.origin.seq,
            1 << 63 | 1 << 32,
            "above the frame's records and its advance: idle step 1"
        );
    }

    /// Times up to 30 ms out of order (grace 5, difference 10): some
    /// records come after some of their windows closed, some after all.
    fn disordered(n: i64) -> Vec<i64> {
        (0..n).map(|i| i * 3 - (i * 7_919) % 61 / 2).collect()
    }

    /// The sliding count of `times` (key "k"), the times cut into shuffle
    /// frames of `per_frame`, the pipeline restarted on the same store
    /// before frame `restart_at` (`usize::MAX`: between the last idle step
    /// and its firing), then the rest fired by the wall clock;
    /// returns the results and the late count.
    fn sliding_run(times: &[i64], per_frame: usize, restart_at: Option<usize>) -> (Vec<(i64, i64, u64)>, u64) {
        let builder = StreamBuilder::new("win");
        counted(&builder, Window::sliding(ms(10)).grace(ms(5)).idle_timeout(ms(1))).sink("out", Json::<Out>::new());
        let topology = builder.build().expect("topology");
        let shuffle = topology.shuffle_topic().expect("keyed").to_string();
        let key = rmp_serde::to_vec("k").expect("key");
        let dir = tempfile::tempdir().expect("tempdir");
        let mut ctx = Context::new(topology.sink_topics().len());
        ctx.store = Some(QueueStore::open(dir.path().join("q"), 10_000).expect("open"));
        let mut fail = |_: &Bytes, _: Option<u32>, e: StreamsError| match e {
            StreamsError::Late { .. } => Ok(()),
            e => Err(e),
        };
        let mut pipeline = topology.pipeline(&shuffle).expect("pipeline");
        let mut offset = 0i64;
        for (i, chunk) in times.chunks(per_frame).enumerate() {
            if restart_at == Some(i) {
                pipeline = topology.pipeline(&shuffle).expect("pipeline");
            }
            let mut framer = rocketmq_streams_shuffle::Framer::new();
            for &t in chunk {
                framer.push(7, 0, offset, 0, t, &key, &key);
                offset += 1;
            }
            for frame in framer.finish() {
                ctx.begin_record(42, offset);
                pipeline
                    .process(&test_queue(), &frame_message(&frame), &mut ctx, &mut fail)
                    .expect("frame");
            }
        }
        ctx.begin_record(42, offset);
        if pipeline.idle(1_000, &mut ctx).expect("idle step") {
            if restart_at == Some(usize::MAX) {
                // Between the idle step and its firing: the new pipeline's
                // index is built under the moved stream time.
                pipeline = topology.pipeline(&shuffle).expect("pipeline");
                pipeline.resume(&mut ctx, &mut fail).expect("resume");
            } else {
                pipeline.fire_idle(&mut ctx, &mut fail).expect("fire");
            }
        }
        let json = Json::<Out>::new();
        let mut got: Vec<(i64, i64, u64)> = ctx.outputs[0]
            .iter()
            .map(|o| {
                let (w, n) = json.deserialize(&o.body).expect("result");
                (w.window.start, w.window.end, n)
            })
            .collect();
        got.sort_unstable();
        (got, ctx.late)
    }

    #[test]
    fn sliding_results_do_not_depend_on_frames_or_on_a_restart() {
        let times = disordered(300);
        let one_by_one = sliding_run(&times, 1, None);
        assert!(one_by_one.1 > 0, "some records are late");
        assert!(one_by_one.0.len() > 100, "{} windows", one_by_one.0.len());
        for per_frame in [7, 50, 300] {
            assert_eq!(sliding_run(&times, per_frame, None), one_by_one, "{per_frame} a frame");
        }
        for restart_at in [1, 13, 40, usize::MAX] {
            assert_eq!(
                sliding_run(&times, 7, Some(restart_at)),
                one_by_one,
                "restart at frame {restart_at}"
            );
        }
    }

    /// Collects what reaches it.
    struct Collect(Rc<RefCell<Vec<(Windowed<String>, u64)>>>);

    impl Processor<Keyed<Windowed<String>, u64>> for Collect {
        fn process(&mut self, r: Record<Keyed<Windowed<String>, u64>>, _: &mut Context) -> Result<(), StreamsError> {
            self.0.borrow_mut().push((r.value.key, r.value.value));
            Ok(())
        }
    }

    #[test]
    fn a_new_pipeline_on_a_restored_store_fires_and_drops_as_the_old_one_would() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut ctx = Context::new(0);
        ctx.store = Some(QueueStore::open(dir.path().join("q"), 100).expect("open"));
        let seen = Rc::new(RefCell::new(Vec::new()));
        let spec = Kind::Fixed(Window::tumbling(ms(10)));
        let make = |seen: &Rc<RefCell<Vec<_>>>| {
            WindowAggregate::<String, (), Count>::new(3, spec, Arc::new(Count), None, Box::new(Collect(seen.clone())))
        };
        let record = |t: i64| Record {
            value: Keyed {
                key: "k".to_string(),
                raw_key: Bytes::from(rmp_serde::to_vec("k").expect("key")),
                value: (),
            },
            timestamp: t,
        };
        let mut first = make(&seen);
        for t in [1, 2, 15, 16] {
            guarded(&mut ctx, |ctx| first.process(record(t), ctx)).expect("process");
            first.advance(&mut ctx).expect("advance");
        }
        assert_eq!(seen.borrow().len(), 1, "[0, 10) fired");
        first.flush(&mut ctx).expect("flush");
        let store = ctx.store().expect("store");
        store
            .commit(Checkpoint {
                state_next: 1,
                source_next: Some(4),
                epoch: 0,
                token: 1,
            })
            .expect("commit");
        drop(first);
        // Reopened as a restore leaves it: nothing cached.
        ctx.store = None;
        ctx.store = Some(QueueStore::open(dir.path().join("q"), 100).expect("reopen"));
        let mut second = make(&seen);
        // Stream time 16 was restored: 5 is late.
        let late = guarded(&mut ctx, |ctx| second.process(record(5), ctx));
        assert!(
            matches!(late, Err(StreamsError::Late { stream_time: 16, .. })),
            "{late:?}"
        );
        guarded(&mut ctx, |ctx| second.process(record(30), ctx)).expect("process");
        second.advance(&mut ctx).expect("advance");
        let seen = seen.borrow();
        let fired: Vec<(i64, i64, u64)> = seen.iter().map(|(w, n)| (w.window.start, w.window.end, *n)).collect();
        assert_eq!(
            fired,
            [(0, 10, 2), (10, 20, 2)],
            "the window restored from RocksDB fired"
        );
    }

    fn test_queue() -> rocketmq_streams_io::QueueId {
        rocketmq_streams_io::QueueId::new("job-shuffle", "test", 0)
    }

    fn frame_message(frame: &Bytes) -> rocketmq_streams_io::Record {
        rocketmq_streams_io::Record::new(rocketmq_streams_io::Offset(0), frame.clone(), 0)
    }
}
