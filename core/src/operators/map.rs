//! `map`: one value in, one value out.

use std::sync::Arc;

use crate::error::StreamsError;
use crate::processor::{BoxProcessor, Context, Processor, Record};

/// Applies `f` to every value.
pub struct Map<T, U> {
    pub(crate) f: Arc<dyn Fn(T) -> U + Send + Sync>,
    pub(crate) next: BoxProcessor<U>,
}

impl<T, U> Processor<T> for Map<T, U> {
    fn process(&mut self, record: Record<T>, ctx: &mut Context) -> Result<(), StreamsError> {
        let value = (self.f)(record.value);
        self.next.process(
            Record {
                value,
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
