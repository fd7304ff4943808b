//! `sink`: serialize and buffer for a topic.

use std::sync::Arc;

use crate::error::StreamsError;
use crate::processor::{Context, Output, Processor, Record};
use crate::serde::Serializer;

/// Serializes every value into the output buffer of sink `id`; ends the stream.
pub struct SinkOp<T> {
    pub(crate) id: usize,
    pub(crate) serializer: Arc<dyn Serializer<T>>,
}

impl<T: 'static> Processor<T> for SinkOp<T> {
    fn process(&mut self, record: Record<T>, ctx: &mut Context) -> Result<(), StreamsError> {
        let body = self.serializer.serialize(&record.value)?;
        ctx.outputs[self.id].push(Output {
            body,
            timestamp: record.timestamp,
        });
        ctx.records_out += 1;
        Ok(())
    }
}
