//! `foreach` and `print`: terminal side effects.

use std::io::Write;
use std::sync::Arc;

use crate::error::StreamsError;
use crate::processor::{Context, Processor, Record};

/// Calls `f` on every value; ends the stream.
pub struct Foreach<T> {
    pub(crate) f: Arc<dyn Fn(&T) + Send + Sync>,
}

impl<T> Processor<T> for Foreach<T> {
    fn process(&mut self, record: Record<T>, _ctx: &mut Context) -> Result<(), StreamsError> {
        (self.f)(&record.value);
        Ok(())
    }
}

/// Writes every value to standard output, one `Debug` line each, with a
/// prefix; ends the stream. Write errors (a closed pipe) are ignored: printing
/// is best effort and never fails the job.
pub struct Print {
    pub(crate) prefix: Arc<str>,
}

impl<T: std::fmt::Debug> Processor<T> for Print {
    fn process(&mut self, record: Record<T>, _ctx: &mut Context) -> Result<(), StreamsError> {
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "{}{:?}", self.prefix, record.value);
        Ok(())
    }
}
