//! `split`: send each record to the first branch whose predicate accepts it.

use std::sync::Arc;

use crate::error::StreamsError;
use crate::processor::{BoxProcessor, Context, Processor, Record};

/// A predicate of one branch.
pub(crate) type Predicate<T> = Arc<dyn Fn(&T) -> bool + Send + Sync>;

/// Passes each record to `next[i]` for the first `predicates[i]` that
/// accepts it; a record no predicate accepts goes to the default branch
/// (`next[predicates.len()]`) if there is one, and is dropped otherwise.
pub struct Branch<T> {
    pub(crate) predicates: Arc<Vec<Predicate<T>>>,
    pub(crate) next: Vec<BoxProcessor<T>>,
}

impl<T> Processor<T> for Branch<T> {
    fn process(&mut self, record: Record<T>, ctx: &mut Context) -> Result<(), StreamsError> {
        let i = self
            .predicates
            .iter()
            .position(|p| p(&record.value))
            .unwrap_or(self.predicates.len());
        match self.next.get_mut(i) {
            Some(next) => next.process(record, ctx),
            None => Ok(()),
        }
    }

    fn flush(&mut self, ctx: &mut Context) -> Result<(), StreamsError> {
        super::tee::flush_all(&mut self.next, ctx)
    }

    fn advance(&mut self, ctx: &mut Context) -> Result<(), StreamsError> {
        super::tee::advance_all(&mut self.next, ctx)
    }
}
