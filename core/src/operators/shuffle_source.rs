//! Where shuffled records re-enter: decode frames, drop replays, dispatch by node.

use bytes::Bytes;
use rocketmq_streams_shuffle::{DecodeError, Frame, ShuffleRecord};
use serde::de::DeserializeOwned;

use crate::codec;
use crate::error::StreamsError;
use crate::processor::{BoxProcessor, Context, Keyed, Record};
use crate::topology::{guarded, OnFailure, SourcePipeline};

/// The keyed chain after one `key_by`: decodes the key and value.
pub(crate) trait KeyedEntry {
    fn process(&mut self, record: &ShuffleRecord, ctx: &mut Context) -> Result<(), StreamsError>;
    fn flush(&mut self, ctx: &mut Context) -> Result<(), StreamsError>;
    fn advance(&mut self, ctx: &mut Context) -> Result<(), StreamsError>;
}

/// The chain after a `key_by` of keys `K` and values `V`.
pub(crate) struct TypedKeyedEntry<K, V> {
    pub(crate) next: BoxProcessor<Keyed<K, V>>,
}

impl<K: DeserializeOwned, V: DeserializeOwned> KeyedEntry for TypedKeyedEntry<K, V> {
    fn process(&mut self, record: &ShuffleRecord, ctx: &mut Context) -> Result<(), StreamsError> {
        let key = codec::decode(&record.key, "shuffled key")?;
        let value = codec::decode(&record.value, "shuffled value")?;
        self.next.process(
            Record {
                value: Keyed {
                    key,
                    raw_key: record.key.clone(),
                    value,
                },
                timestamp: record.timestamp,
            },
            ctx,
        )
    }

    fn flush(&mut self, ctx: &mut Context) -> Result<(), StreamsError> {
        self.next.flush(ctx)
    }

    fn advance(&mut self, ctx: &mut Context) -> Result<(), StreamsError> {
        self.next.advance(ctx)
    }
}

/// The store key of the highest origin applied, per `key_by` node and
/// origin queue. `0xFFFE` never starts an operator's key (node ids are small).
fn high_water_key(node: u16, origin_queue: u64) -> [u8; 12] {
    let mut k = [0u8; 12];
    k[..2].copy_from_slice(&[0xFF, 0xFE]);
    k[2..4].copy_from_slice(&node.to_be_bytes());
    k[4..].copy_from_slice(&origin_queue.to_le_bytes());
    k
}

/// The store key of the queue's last idle step: the offset the queue had
/// reached and the step's number there, with [`PENDING`] while what it
/// made due has not fired (see [`ShuffleSource::idle`]).
const IDLE_MARK: [u8; 2] = [0xFF, 0xFD];

/// In an idle mark's step: the step's windows have not fired yet.
const PENDING: u64 = 1 << 63;

/// `Origin::seq` of what idle step `n` fires: above every seq of the
/// records of the queue's last message and of its frame's advance
/// (`index × 2³²`, `count × 2³²`), so downstream high-water marks take
/// them, in step order.
fn idle_seq(n: u64) -> u64 {
    1 << 63 | (n & 0x7FFF_FFFF) << 32
}

fn encode_mark((offset, seq): (i64, u64)) -> Bytes {
    let mut v = Vec::with_capacity(16);
    v.extend_from_slice(&offset.to_le_bytes());
    v.extend_from_slice(&seq.to_le_bytes());
    Bytes::from(v)
}

fn decode_mark(b: &[u8]) -> Option<(i64, u64)> {
    if b.len() != 16 {
        return None;
    }
    Some((
        i64::from_le_bytes(b.get(..8)?.try_into().ok()?),
        u64::from_le_bytes(b.get(8..16)?.try_into().ok()?),
    ))
}

/// The highest origin (offset, seq) of one node applied from a frame's
/// origin queue: read from the store once per frame, written back once.
struct FrameMark {
    node: u16,
    applied: Option<(i64, u64)>,
    moved: bool,
}

/// The pipeline of a shuffle-topic queue.
pub(crate) struct ShuffleSource {
    /// The keyed chains: one per `key_by` node, but one for both sides of a join.
    pub(crate) entries: Vec<Box<dyn KeyedEntry>>,
    /// Indexed by `key_by` node: its chain in `entries`.
    route: Vec<usize>,
    /// The nodes the current frame touched (few; searched in order).
    marks: Vec<FrameMark>,
    /// Whether what a durable idle step left unfired was fired since the
    /// pipeline started.
    resumed: bool,
}

impl ShuffleSource {
    /// The pipeline of `entries`, where the records of `key_by` node `n`
    /// go to `entries[route[n]]`.
    pub(crate) fn new(entries: Vec<Box<dyn KeyedEntry>>, route: Vec<usize>) -> ShuffleSource {
        ShuffleSource {
            entries,
            route,
            marks: Vec::new(),
            resumed: false,
        }
    }

    /// The index in `marks` of `node`'s mark for origin `origin`, read
    /// from the store the first time the frame touches `node`.
    fn mark_of(&mut self, ctx: &mut Context, node: u16, origin: u64) -> Result<usize, StreamsError> {
        if let Some(i) = self.marks.iter().position(|m| m.node == node) {
            return Ok(i);
        }
        let applied = match ctx.store()?.get(&high_water_key(node, origin))? {
            None => None,
            Some(bytes) => Some(decode_mark(&bytes).ok_or_else(|| {
                StreamsError::State(rocketmq_streams_state::StateError::Malformed(
                    "origin high-water mark".into(),
                ))
            })?),
        };
        self.marks.push(FrameMark {
            node,
            applied,
            moved: false,
        });
        Ok(self.marks.len() - 1)
    }

    /// Lets event time act after a frame (see [`Processor::advance`]):
    /// what it emits is numbered as if by a record just after the frame's
    /// last, and results that fail go to `failed` with their serialized
    /// key.
    ///
    /// [`Processor::advance`]: crate::Processor::advance
    fn advance(&mut self, frame: &Frame, ctx: &mut Context, failed: &mut OnFailure<'_>) -> Result<(), StreamsError> {
        ctx.seq = u64::from(frame.count) << 32;
        self.advance_entries(ctx)?;
        for (key, error) in std::mem::take(&mut ctx.flush_failures) {
            failed(&key, None, error)?;
        }
        Ok(())
    }

    /// [`Processor::advance`](crate::Processor::advance) of every keyed
    /// chain, stopping at the first error.
    fn advance_entries(&mut self, ctx: &mut Context) -> Result<(), StreamsError> {
        for entry in &mut self.entries {
            entry.advance(ctx)?;
        }
        Ok(())
    }

    /// The queue's last idle step: (offset, number), if it had one.
    fn idle_mark(ctx: &mut Context) -> Result<Option<(i64, u64)>, StreamsError> {
        match ctx.store()?.get(&IDLE_MARK)? {
            None => Ok(None),
            Some(bytes) => decode_mark(&bytes)
                .map(Some)
                .ok_or_else(|| StreamsError::State(rocketmq_streams_state::StateError::Malformed("idle mark".into()))),
        }
    }

    /// Runs the frame's records; returns at the first `Err` of `failed`.
    fn run(
        &mut self,
        frame: &Frame,
        body: &Bytes,
        ctx: &mut Context,
        failed: &mut OnFailure<'_>,
    ) -> Result<(), StreamsError> {
        for (index, item) in frame.records().enumerate() {
            let index = u32::try_from(index).unwrap_or(u32::MAX);
            let record = match item {
                Ok(record) => record,
                Err(e) => {
                    // The records from a broken one on cannot be found: the
                    // frame goes to the policy (a dead letter keeps it whole).
                    ctx.unframed += 1;
                    let left = frame.count.saturating_sub(index);
                    let error = DecodeError::Malformed(format!(
                        "record {index} of {}: {e}; it and the {} after it cannot be read",
                        frame.count,
                        left.saturating_sub(1)
                    ));
                    return failed(body, Some(index), error.into());
                }
            };
            ctx.unframed += 1;
            let node = usize::from(record.node);
            let Some(&chain) = self.route.get(node) else {
                let error = StreamsError::Topology(format!(
                    "shuffled record for key_by node {node}, which this topology does not have"
                ));
                failed(&record.to_frame(), Some(index), error)?;
                continue;
            };
            let m = match self.mark_of(ctx, record.node, frame.origin) {
                Ok(m) => m,
                Err(e) => return failed(body, Some(index), e),
            };
            let at = (record.origin.offset, record.origin.seq);
            if self.marks[m].applied.is_some_and(|applied| at <= applied) {
                ctx.duplicates += 1;
                continue;
            }
            // Outputs are numbered by the record's place in the frame.
            ctx.seq = u64::from(index) << 32;
            let entry = &mut self.entries[chain];
            if let Err(e) = guarded(ctx, |ctx| entry.process(&record, ctx)) {
                failed(&record.to_frame(), Some(index), e)?;
            }
            // Applied, or judged by the policy (skipped or dead-lettered):
            // a replay takes it no more.
            self.marks[m].applied = Some(at);
            self.marks[m].moved = true;
        }
        Ok(())
    }
}

impl SourcePipeline for ShuffleSource {
    /// Processes a shuffle frame record by record: each goes through the
    /// error policy on its own, and a replayed one (at or below its
    /// node's high-water mark for the frame's origin) is dropped. The
    /// marks are read and written once per frame and node.
    fn process(
        &mut self,
        _queue: &rocketmq_streams_io::QueueId,
        message: &rocketmq_streams_io::Record,
        ctx: &mut Context,
        failed: &mut OnFailure<'_>,
    ) -> Result<(), StreamsError> {
        let body = &message.body;
        let frame = match Frame::decode(body) {
            Ok(frame) => frame,
            Err(e) => {
                ctx.unframed += 1;
                return failed(body, None, e.into());
            }
        };
        self.resume(ctx, failed)?;
        self.marks.clear();
        let mut outcome = self.run(&frame, body, ctx, failed);
        if outcome.is_ok() {
            outcome = self.advance(&frame, ctx, failed);
        }
        // Every record taken (applied, or judged by the policy) moves the
        // mark: a replay of the frame applies none of them again.
        if self.marks.iter().any(|m| m.moved) {
            let store = ctx.store()?;
            for m in self.marks.iter().filter(|m| m.moved) {
                if let Some(applied) = m.applied {
                    store.put_slice(&high_water_key(m.node, frame.origin), encode_mark(applied));
                }
            }
        }
        outcome
    }

    fn flush(&mut self, ctx: &mut Context) -> Result<(), StreamsError> {
        for entry in &mut self.entries {
            entry.flush(ctx)?;
        }
        Ok(())
    }

    /// Fires what a durable idle step left unfired (the job stopped
    /// between the two), numbered as that step would have numbered it.
    fn resume(&mut self, ctx: &mut Context, failed: &mut OnFailure<'_>) -> Result<(), StreamsError> {
        if self.resumed {
            return Ok(());
        }
        self.resumed = true;
        self.fire_idle(ctx, failed)
    }

    /// An idle step: the windowed operators move their stream time on by
    /// the wall-clock time the queue has been idle; when that closes a
    /// window, the step is numbered (after the queue's last step at the
    /// same offset, `ctx.origin`'s) and recorded in the store, and `true`
    /// says so. The caller makes that durable, then calls
    /// [`fire_idle`](SourcePipeline::fire_idle): a restart in between
    /// fires the same windows, numbered the same, before anything else.
    fn idle(&mut self, idle_ms: i64, ctx: &mut Context) -> Result<bool, StreamsError> {
        ctx.idle = Some(idle_ms);
        ctx.due = false;
        let outcome = self.advance_entries(ctx);
        ctx.idle = None;
        outcome?;
        if !std::mem::take(&mut ctx.due) {
            return Ok(false);
        }
        let offset = ctx.origin.1;
        let step = match Self::idle_mark(ctx)? {
            Some((at, n)) if at == offset => (n & !PENDING) + 1,
            _ => 1,
        };
        ctx.store()?
            .put_slice(&IDLE_MARK, encode_mark((offset, step | PENDING)));
        Ok(true)
    }

    fn fire_idle(&mut self, ctx: &mut Context, failed: &mut OnFailure<'_>) -> Result<(), StreamsError> {
        // Only a step whose windows have not fired: other windows due now
        // (none after a frame, which fires what it closes) wait for the next
        // frame, numbered by it.
        let Some((offset, step)) = Self::idle_mark(ctx)?.filter(|&(_, step)| step & PENDING != 0) else {
            return Ok(());
        };
        let step = step & !PENDING;
        let at = ctx.origin;
        ctx.origin.1 = offset;
        ctx.seq = idle_seq(step);
        ctx.idle_firing = true;
        let outcome = self.advance_entries(ctx);
        ctx.idle_firing = false;
        ctx.origin = at;
        outcome?;
        for (key, error) in std::mem::take(&mut ctx.flush_failures) {
            failed(&key, None, error)?;
        }
        // Fired: a restart from a checkpoint after this does not fire again.
        ctx.store()?.put_slice(&IDLE_MARK, encode_mark((offset, step)));
        Ok(())
    }
}
