//! `flat_map`: one value in, any number out.

use std::sync::Arc;

use crate::error::StreamsError;
use crate::processor::{BoxProcessor, Context, Processor, Record};

/// Applies `f` and passes on every value of the iterator it returns, each
/// with the input's event time.
pub struct FlatMap<T, U> {
    pub(crate) f: Arc<dyn Fn(T) -> Box<dyn Iterator<Item = U>> + Send + Sync>,
    pub(crate) next: BoxProcessor<U>,
}

impl<T, U> Processor<T> for FlatMap<T, U> {
    fn process(&mut self, record: Record<T>, ctx: &mut Context) -> Result<(), StreamsError> {
        for value in (self.f)(record.value) {
            self.next.process(
                Record {
                    value,
                    timestamp: record.timestamp,
                },
                ctx,
            )?;
        }
        Ok(())
    }
}
