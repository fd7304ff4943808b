//! `select_timestamp`: event time from the value.

use std::sync::Arc;

use crate::error::StreamsError;
use crate::processor::{BoxProcessor, Context, Processor, Record};

/// Replaces each record's event time with `f(value)` (ms since the epoch).
pub struct SelectTimestamp<T> {
    pub(crate) f: Arc<dyn Fn(&T) -> i64 + Send + Sync>,
    pub(crate) next: BoxProcessor<T>,
}

impl<T> Processor<T> for SelectTimestamp<T> {
    fn process(&mut self, mut record: Record<T>, ctx: &mut Context) -> Result<(), StreamsError> {
        record.timestamp = (self.f)(&record.value);
        self.next.process(record, ctx)
    }

    fn flush(&mut self, ctx: &mut Context) -> Result<(), StreamsError> {
        self.next.flush(ctx)
    }

    fn advance(&mut self, ctx: &mut Context) -> Result<(), StreamsError> {
        self.next.advance(ctx)
    }
}
