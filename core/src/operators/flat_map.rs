//! `flat_map`: one value in, any number out.

use std::marker::PhantomData;
use std::sync::Arc;

use crate::error::StreamsError;
use crate::processor::{BoxProcessor, Context, Processor, Record};

/// Applies `f` and pushes every value of what it returns on down the
/// chain as it comes, each with the input's event time: no collection and
/// no boxed iterator per record.
pub struct FlatMap<T, F, U> {
    pub(crate) f: Arc<F>,
    pub(crate) next: BoxProcessor<U>,
    pub(crate) input: PhantomData<fn(T)>,
}

impl<T, U, I, F> Processor<T> for FlatMap<T, F, U>
where
    F: Fn(T) -> I,
    I: IntoIterator<Item = U>,
{
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

    fn flush(&mut self, ctx: &mut Context) -> Result<(), StreamsError> {
        self.next.flush(ctx)
    }

    fn advance(&mut self, ctx: &mut Context) -> Result<(), StreamsError> {
        self.next.advance(ctx)
    }
}
