//! The one small trait every operator implements, and what it writes into.
//!
//! A pipeline is a chain of [`Processor`]s built per owned queue, on the
//! shard that owns it. A record is pushed through the chain by plain method
//! calls — no queue, no lock, no allocation beyond what the user's closures
//! do. Operators that end the chain (sinks) append serialized records to the
//! [`Context`]'s per-sink output buffers, which the runtime (or the test
//! driver) sends after the batch.

use bytes::Bytes;

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

/// What a pipeline writes into while it processes a batch.
#[derive(Debug, Default)]
pub struct Context {
    /// Output buffers, one per sink of the topology (indexed by sink id).
    pub outputs: Vec<Vec<Output>>,
    /// Records emitted by sinks (serialized), counted for metrics.
    pub records_out: u64,
}

impl Context {
    /// A context with one empty buffer per sink.
    pub fn new(sinks: usize) -> Self {
        Self {
            outputs: vec![Vec::new(); sinks],
            records_out: 0,
        }
    }

    /// The lengths of all output buffers, to roll back a failed record.
    pub(crate) fn mark(&self) -> Vec<usize> {
        self.outputs.iter().map(Vec::len).collect()
    }

    /// Drops what was emitted since `mark`: a record that failed half-way
    /// leaves no partial output behind.
    pub(crate) fn rollback(&mut self, mark: &[usize]) {
        let mut dropped = 0u64;
        for (buffer, &len) in self.outputs.iter_mut().zip(mark) {
            dropped += (buffer.len() - len) as u64;
            buffer.truncate(len);
        }
        self.records_out -= dropped;
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
