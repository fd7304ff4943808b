//! The edge to several consumers of one stream.

use crate::error::StreamsError;
use crate::processor::{BoxProcessor, Context, Processor, Record};

/// Passes a clone of every record to each downstream processor in turn (the
/// last one gets the original).
pub struct Tee<T> {
    pub(crate) next: Vec<BoxProcessor<T>>,
}

impl<T: Clone> Processor<T> for Tee<T> {
    fn process(&mut self, record: Record<T>, ctx: &mut Context) -> Result<(), StreamsError> {
        if let Some((last, rest)) = self.next.split_last_mut() {
            for p in rest {
                p.process(record.clone(), ctx)?;
            }
            last.process(record, ctx)?;
        }
        Ok(())
    }

    fn flush(&mut self, ctx: &mut Context) -> Result<(), StreamsError> {
        flush_all(&mut self.next, ctx)
    }

    fn advance(&mut self, ctx: &mut Context) -> Result<(), StreamsError> {
        advance_all(&mut self.next, ctx)
    }
}

/// Passes a flush to each of `next` in turn (an edge to several streams).
pub(crate) fn flush_all<T>(next: &mut [BoxProcessor<T>], ctx: &mut Context) -> Result<(), StreamsError> {
    for p in next {
        p.flush(ctx)?;
    }
    Ok(())
}

/// Passes an advance to each of `next` in turn (an edge to several streams).
pub(crate) fn advance_all<T>(next: &mut [BoxProcessor<T>], ctx: &mut Context) -> Result<(), StreamsError> {
    for p in next {
        p.advance(ctx)?;
    }
    Ok(())
}
