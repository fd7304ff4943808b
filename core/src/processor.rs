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

/// A value with its event time.
#[derive(Debug, Clone, PartialEq)]
pub struct Record<T> {
    /// The value.
    pub value: T,
    /// Event time in milliseconds since the epoch: the message's store
    /// timestamp unless `select_timestamp` chose one from the value.
    pub timestamp: i64,
}

/// One serialized output record, waiting to be sent to a sink topic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Output {
    /// The message body.
    pub body: Bytes,
    /// The event time it carries.
    pub timestamp: i64,
}

/// A record bound for the job's shuffle topic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShuffleOutput {
    /// The stable hash of the serialized key: the shuffle queue is
    /// `key_hash % queues` (see `rocketmq_streams_shuffle::partition`).
    pub key_hash: u64,
    /// The encoded shuffle record.
    pub body: Bytes,
}

/// What a pipeline writes into while it processes a batch.
#[derive(Debug, Default)]
pub struct Context {
    /// Output buffers, one per sink of the topology (indexed by sink id).
    pub outputs: Vec<Vec<Output>>,
    /// Records emitted by sinks (serialized), counted for metrics.
    pub records_out: u64,
    /// Keyed records for the shuffle topic.
    pub shuffle: Vec<ShuffleOutput>,
    /// The input record being processed: [`origin_id`](rocketmq_streams_shuffle::origin_id)
    /// of its queue and its offset; outputs of `key_by` carry it.
    pub(crate) origin: (u64, i64),
    /// Outputs of `key_by` so far for the current input record.
    pub(crate) seq: u32,
    /// The state of the queue being processed (keyed stages only).
    pub(crate) store: Option<QueueStore>,
    /// Shuffled records dropped as already applied (replays).
    pub(crate) duplicates: u64,
}

impl Context {
    /// A context with one empty buffer per sink.
    pub fn new(sinks: usize) -> Self {
        Self {
            outputs: vec![Vec::new(); sinks],
            ..Self::default()
        }
    }

    /// Starts the input record at `offset` of the queue `origin_queue`.
    pub(crate) fn begin_record(&mut self, origin_queue: u64, offset: i64) {
        self.origin = (origin_queue, offset);
        self.seq = 0;
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

    /// The lengths of all output buffers (the shuffle buffer last), to roll
    /// back a failed record.
    pub(crate) fn mark(&mut self) -> Vec<usize> {
        if let Some(store) = self.store.as_mut() {
            store.begin_record();
        }
        let mut mark: Vec<usize> = self.outputs.iter().map(Vec::len).collect();
        mark.push(self.shuffle.len());
        mark
    }

    /// The largest body emitted since `mark` (0 if none).
    pub(crate) fn largest_since(&self, mark: &[usize]) -> usize {
        let outputs = self
            .outputs
            .iter()
            .zip(mark)
            .flat_map(|(buffer, &len)| buffer[len..].iter().map(|o| o.body.len()));
        let shuffled = self.shuffle[mark.get(self.outputs.len()).copied().unwrap_or(0)..]
            .iter()
            .map(|o| o.body.len());
        outputs.chain(shuffled).max().unwrap_or(0)
    }

    /// Drops what was emitted since `mark`: a record that failed half-way
    /// leaves no partial output behind.
    pub(crate) fn rollback(&mut self, mark: &[usize]) {
        if let Some(store) = self.store.as_mut() {
            store.rollback_record();
        }
        let mut dropped = 0u64;
        for (buffer, &len) in self.outputs.iter_mut().zip(mark) {
            dropped += (buffer.len() - len) as u64;
            buffer.truncate(len);
        }
        self.records_out -= dropped;
        if let Some(&len) = mark.get(self.outputs.len()) {
            self.shuffle.truncate(len);
        }
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
    /// The serialized key (JSON), as it travelled through the shuffle.
    pub raw_key: Bytes,
    /// The value.
    pub value: V,
}
