//! `filter`: keep the values a predicate accepts.

use std::sync::Arc;

use crate::error::StreamsError;
use crate::processor::{BoxProcessor, Context, Processor, Record};

/// Passes on the records whose value satisfies `f`.
pub struct Filter<T> {
    pub(crate) f: Arc<dyn Fn(&T) -> bool + Send + Sync>,
    pub(crate) next: BoxProcessor<T>,
}

impl<T> Processor<T> for Filter<T> {
    fn process(&mut self, record: Record<T>, ctx: &mut Context) -> Result<(), StreamsError> {
        if (self.f)(&record.value) {
            self.next.process(record, ctx)
        } else {
            Ok(())
        }
    }

    fn flush(&mut self, ctx: &mut Context) -> Result<(), StreamsError> {
        self.next.flush(ctx)
    }

    fn advance(&mut self, ctx: &mut Context) -> Result<(), StreamsError> {
        self.next.advance(ctx)
    }
}
