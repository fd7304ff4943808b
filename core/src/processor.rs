//! The one small trait every operator implements, and what it writes into.
//!
//! A pipeline is a chain of [`Processor`]s built per owned queue, on the
//! shard that owns it. A record is pushed through the chain by plain method
//! calls — no queue, no lock, no allocation beyond what the user's closures
//! do. Operators that end the chain (sinks) append serialized records to the
//! [`Context`]'s per-sink output buffers, which the runtime (or the test
//! driver) sends after the batch.

use bytes::Bytes;
use rocketmq_streams_state::QueueStore;

use crate::error::StreamsError;
use crate::runtime::metrics::Gauge;

/// A value with its event time.
#[derive(Debug, Clone, PartialEq)]
pub struct Record<T> {
    /// The value.
    pub value: T,
    /// Event time in milliseconds since the epoch: the message's born
    /// timestamp (when its producer created it) unless `select_timestamp`
    /// chose one from the value.
    pub timestamp: i64,
}

/// One serialized output record, waiting to be sent to a sink topic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Output {
    /// The message body.
    pub body: Bytes,
    /// The event time it carries.
    pub timestamp: i64,
    /// The message key (it also picks the queue), if the sink sets one.
    pub key: Option<String>,
    /// The message tag, if the sink sets one.
    pub tags: Option<String>,
    /// User properties the sink sets (the event time is added on sending).
    pub properties: Vec<(String, String)>,
}

impl Output {
    /// An output with `body` at `timestamp`, and no key, tag or property.
    pub fn new(body: Bytes, timestamp: i64) -> Self {
        Self {
            body,
            timestamp,
            key: None,
            tags: None,
            properties: Vec::new(),
        }
    }
}

/// One keyed record waiting in a [`ShuffleBuffer`]: where its key and
/// value bytes are, and what its frame record carries besides.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct PendingShuffle {
    /// The stable hash of the serialized key: the shuffle queue is
    /// `key_hash % queues` (see `rocketmq_streams_shuffle::partition`).
    pub(crate) key_hash: u64,
    /// `origin_id` of the queue of the input record.
    pub(crate) origin: u64,
    /// The input record's offset.
    pub(crate) offset: i64,
    /// Index among the input record's `key_by` outputs (see `Origin::seq`).
    pub(crate) seq: u64,
    /// The `key_by` node.
    pub(crate) node: u16,
    /// Event time.
    pub(crate) timestamp: i64,
    /// `bytes[start..key_end]` is the key, `bytes[key_end..end]` the value.
    pub(crate) start: usize,
    pub(crate) key_end: usize,
    pub(crate) end: usize,
}

/// Keyed records bound for the job's shuffle topic, in the order emitted:
/// their keys and values in one growing buffer (no allocation per record),
/// framed per shuffle queue when the batch is sent.
#[derive(Debug, Default)]
pub(crate) struct ShuffleBuffer {
    pub(crate) bytes: Vec<u8>,
    pub(crate) records: Vec<PendingShuffle>,
}

impl ShuffleBuffer {
    /// Records waiting.
    pub(crate) fn len(&self) -> usize {
        self.records.len()
    }

    /// Whether no record waits.
    pub(crate) fn is_empty(&self) -> bool {
        self.records.is_empty()
    }

    /// Drops the records from `len` on and the bytes from `bytes` on (a
    /// failed input record's, even half-written).
    pub(crate) fn truncate(&mut self, len: usize, bytes: usize) {
        self.records.truncate(len);
        self.bytes.truncate(bytes);
    }

    /// The key of a waiting record.
    pub(crate) fn key(&self, r: &PendingShuffle) -> &[u8] {
        &self.bytes[r.start..r.key_end]
    }

    /// The value of a waiting record.
    pub(crate) fn value(&self, r: &PendingShuffle) -> &[u8] {
        &self.bytes[r.key_end..r.end]
    }

    /// Takes every waiting record, framed per shuffle queue of `queues`
    /// (index `key_hash % queues`), records of one origin in one frame up
    /// to `MAX_FRAME_BYTES`; with each queue's frames, how many records
    /// they hold. Keeps the buffers' capacity.
    ///
    /// # Panics
    ///
    /// If `queues` is 0.
    pub(crate) fn take_frames(&mut self, queues: usize) -> Vec<(Vec<Bytes>, usize)> {
        assert!(queues > 0, "a shuffle topic has at least one queue");
        let mut framers: Vec<rocketmq_streams_shuffle::Framer> = (0..queues).map(|_| Default::default()).collect();
        let mut counts = vec![0usize; queues];
        for r in &self.records {
            let queue = (r.key_hash % queues as u64) as usize;
            counts[queue] += 1;
            framers[queue].push(
                r.origin,
                r.node,
                r.offset,
                r.seq,
                r.timestamp,
                self.key(r),
                self.value(r),
            );
        }
        self.records.clear();
        self.bytes.clear();
        framers
            .into_iter()
            .map(rocketmq_streams_shuffle::Framer::finish)
            .zip(counts)
            .collect()
    }
}

/// Where a record's outputs started: what [`Context::rollback`] cuts back
/// to. The sinks' buffer lengths are kept in the context (marks do not
/// nest: one input record is processed at a time).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Mark {
    shuffle: usize,
    shuffle_bytes: usize,
}

/// What a pipeline writes into while it processes a batch.
#[derive(Debug, Default)]
pub struct Context {
    /// Output buffers, one per sink of the topology (indexed by sink id).
    pub outputs: Vec<Vec<Output>>,
    /// Records emitted by sinks (serialized), counted for metrics.
    pub records_out: u64,
    /// Keyed records for the shuffle topic.
    pub(crate) shuffle: ShuffleBuffer,
    /// The input record being processed: [`origin_id`](rocketmq_streams_shuffle::origin_id)
    /// of its queue and its offset; outputs of `key_by` carry it.
    pub(crate) origin: (u64, i64),
    /// The `Origin::seq` the current input record's next `key_by` output
    /// gets: 0 for a record of its own message, the record's index in its
    /// frame × 2³² in a keyed stage. Depends only on the record's place in
    /// its message, never on what other records did, so a replay numbers
    /// every output as the first run did.
    pub(crate) seq: u64,
    /// The state of the queue being processed (keyed stages only).
    pub(crate) store: Option<QueueStore>,
    /// Shuffled records dropped as already applied (replays).
    pub(crate) duplicates: u64,
    /// Keyed records taken out of shuffle frames.
    pub(crate) unframed: u64,
    /// Records late for every window they belong to (see
    /// [`StreamsError::Late`]).
    pub(crate) late: u64,
    /// Records kept in join state by the shard's queues.
    pub(crate) join_records: Gauge,
    /// Set for an idle step ([`Processor::advance`] of a queue that has had
    /// no record for this many ms of wall-clock time): windowed operators
    /// move their stream time on instead of firing.
    pub(crate) idle: Option<i64>,
    /// Set by an idle step that closed a window.
    pub(crate) due: bool,
    /// Set while what an idle step made due fires.
    pub(crate) idle_firing: bool,
    /// The sinks' buffer lengths at the last [`mark`](Self::mark).
    marked: Vec<usize>,
    /// Held results that failed when a flush emitted them: what a dead
    /// letter carries (the serialized key) and why.
    pub(crate) flush_failures: Vec<(Bytes, StreamsError)>,
}

impl Context {
    /// A context with one empty buffer per sink.
    pub fn new(sinks: usize) -> Self {
        Self {
            outputs: vec![Vec::new(); sinks],
            marked: Vec::with_capacity(sinks),
            ..Self::default()
        }
    }

    /// Starts the input record at `offset` of the queue `origin_queue`.
    pub(crate) fn begin_record(&mut self, origin_queue: u64, offset: i64) {
        self.origin = (origin_queue, offset);
        self.seq = 0;
    }

    /// Drops every output not sent yet (after an error that ends the
    /// work they came from: they must not go out with another queue's).
    pub(crate) fn discard_outputs(&mut self) {
        for buffer in &mut self.outputs {
            buffer.clear();
        }
        self.records_out = 0;
        self.shuffle.truncate(0, 0);
        self.flush_failures.clear();
    }

    /// The store of the queue being processed.
    ///
    /// # Errors
    ///
    /// [`StreamsError::Topology`] outside a keyed stage (a bug in the runtime).
    pub(crate) fn store(&mut self) -> Result<&mut QueueStore, StreamsError> {
        self.store
            .as_mut()
            .ok_or_else(|| StreamsError::Topology("a stateful operator ran outside a keyed stage".into()))
    }

    /// Marks where the next record's outputs and state writes start, to
    /// roll a failed record back. No allocation: the sinks' lengths go
    /// into a buffer the context keeps.
    pub(crate) fn mark(&mut self) -> Mark {
        if let Some(store) = self.store.as_mut() {
            store.begin_record();
        }
        self.marked.clear();
        self.marked.extend(self.outputs.iter().map(Vec::len));
        Mark {
            shuffle: self.shuffle.len(),
            shuffle_bytes: self.shuffle.bytes.len(),
        }
    }

    /// The largest message a record emitted since `mark` makes (0 if
    /// none): a sink body, or a shuffled record in a frame of its own.
    pub(crate) fn largest_since(&self, mark: Mark) -> usize {
        let outputs = self
            .outputs
            .iter()
            .zip(&self.marked)
            .flat_map(|(buffer, &len)| buffer[len..].iter().map(|o| o.body.len()));
        let shuffled = self.shuffle.records[mark.shuffle..].iter().map(|r| {
            r.end - r.start + rocketmq_streams_shuffle::HEADER + rocketmq_streams_shuffle::MAX_RECORD_OVERHEAD
        });
        outputs.chain(shuffled).max().unwrap_or(0)
    }

    /// Drops what was emitted since `mark`: a record that failed half-way
    /// leaves no partial output behind.
    pub(crate) fn rollback(&mut self, mark: Mark) {
        if let Some(store) = self.store.as_mut() {
            store.rollback_record();
        }
        let mut dropped = 0u64;
        for (buffer, &len) in self.outputs.iter_mut().zip(&self.marked) {
            dropped += (buffer.len() - len) as u64;
            buffer.truncate(len);
        }
        self.records_out -= dropped;
        self.shuffle.truncate(mark.shuffle, mark.shuffle_bytes);
    }
}

/// An operator: takes records of `T`, does its work, passes results on.
pub trait Processor<T> {
    /// Processes one record.
    ///
    /// # Errors
    ///
    /// Returns an error when the record cannot be processed (for example it
    /// cannot be serialized); the record then goes through the error policy.
    fn process(&mut self, record: Record<T>, ctx: &mut Context) -> Result<(), StreamsError>;

    /// Makes the operator's state ready for a checkpoint (an aggregation
    /// encodes the states it keeps decoded) and emits what it held back
    /// (the latest results of an [`Emit::OnCommit`](crate::Emit::OnCommit)
    /// aggregation), then passes the flush on. The runtime calls it on a queue's pipeline before each
    /// checkpoint of the queue; the test driver on
    /// [`commit`](crate::TopologyTestDriver::commit). An operator with a
    /// next one passes it on; the default, for operators that end a
    /// stream, does nothing.
    ///
    /// # Errors
    ///
    /// A failure that is no one record's (the state store, a state that
    /// does not encode: the checkpoint must not run). A held result
    /// that fails downstream is rolled back and left in the context for
    /// the error policy.
    fn flush(&mut self, ctx: &mut Context) -> Result<(), StreamsError> {
        let _ = ctx;
        Ok(())
    }

    /// Lets event time act: a windowed aggregation emits the windows the
    /// watermark has closed and deletes their state. The runtime (and the
    /// test driver) calls it on a keyed queue's pipeline after each
    /// shuffle frame, outside any one record; what it emits is numbered by
    /// its place after that frame, so a replay emits the same. An operator
    /// with a next one passes it on; the default, for operators that end a
    /// stream, does nothing.
    ///
    /// # Errors
    ///
    /// As [`flush`](Self::flush): a failure that is no one record's. A
    /// result that fails downstream is rolled back and left in the
    /// context for the error policy.
    fn advance(&mut self, ctx: &mut Context) -> Result<(), StreamsError> {
        let _ = ctx;
        Ok(())
    }
}

/// A processor that drops everything: the end of a stream nobody consumes.
pub(crate) struct Discard;

impl<T> Processor<T> for Discard {
    fn process(&mut self, _record: Record<T>, _ctx: &mut Context) -> Result<(), StreamsError> {
        Ok(())
    }
}

/// Boxed processor, the edge between two operators.
pub type BoxProcessor<T> = Box<dyn Processor<T>>;

/// A value with its key, after `key_by`: the key as a value and as the
/// bytes it was shuffled (and is stored) under.
#[derive(Debug, Clone, PartialEq)]
pub struct Keyed<K, V> {
    /// The key.
    pub key: K,
    /// The serialized key (MessagePack, see `codec`), as it travelled
    /// through the shuffle and as the store keys its state.
    pub raw_key: Bytes,
    /// The value.
    pub value: V,
}
