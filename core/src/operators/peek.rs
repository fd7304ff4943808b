//! `peek`: look at every record and pass it on unchanged.

use std::sync::Arc;

use crate::error::StreamsError;
use crate::processor::{BoxProcessor, Context, Processor, Record};

/// Calls `f` on every value, then passes the record on.
pub struct Peek<T> {
    pub(crate) f: Arc<dyn Fn(&T) + Send + Sync>,
    pub(crate) next: BoxProcessor<T>,
}

impl<T> Processor<T> for Peek<T> {
    fn process(&mut self, record: Record<T>, ctx: &mut Context) -> Result<(), StreamsError> {
        (self.f)(&record.value);
        self.next.process(record, ctx)
    }

    fn flush(&mut self, ctx: &mut Context) -> Result<(), StreamsError> {
        self.next.flush(ctx)
    }

    fn advance(&mut self, ctx: &mut Context) -> Result<(), StreamsError> {
        self.next.advance(ctx)
    }
}
