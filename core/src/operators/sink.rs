//! `sink`: serialize and buffer for a topic.

use std::sync::Arc;

use crate::error::StreamsError;
use crate::message::Produced;
use crate::processor::{Context, Output, Processor, Record};
use crate::serde::Serializer;

/// Serializes every value into the output buffer of sink `id`, with the
/// key, tag and properties `produced` takes from it; ends the stream.
pub struct SinkOp<T> {
    pub(crate) id: usize,
    pub(crate) serializer: Arc<dyn Serializer<T>>,
    pub(crate) produced: Produced<T>,
}

impl<T: 'static> Processor<T> for SinkOp<T> {
    fn process(&mut self, record: Record<T>, ctx: &mut Context) -> Result<(), StreamsError> {
        let value = &record.value;
        let body = self.serializer.serialize(value)?;
        let p = &self.produced;
        ctx.outputs[self.id].push(Output {
            body,
            timestamp: record.timestamp,
            key: p.key.as_ref().and_then(|f| f(value)),
            tags: p.tags.as_ref().and_then(|f| f(value)),
            properties: p
                .properties
                .iter()
                .filter_map(|(name, f)| f(value).map(|v| (name.clone(), v)))
                .collect(),
        });
        ctx.records_out += 1;
        Ok(())
    }
}
