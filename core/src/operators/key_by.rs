//! `key_by`: the edge that leaves the shard, through the shuffle topic.

use std::sync::Arc;

use rocketmq_streams_shuffle::{stable_hash, Origin, ShuffleRecord};
use serde::Serialize;

use crate::error::{SerdeError, StreamsError};
use crate::processor::{Context, Processor, Record, ShuffleOutput};

/// Serializes the key and the value (JSON) and appends an encoded shuffle
/// record to the context; the runtime sends it to the shuffle queue of the
/// key's hash.
pub struct KeyBy<T, K> {
    pub(crate) node: u16,
    pub(crate) selector: Arc<dyn Fn(&T) -> K + Send + Sync>,
    /// The size of the last body encoded: the next one's first allocation.
    pub(crate) size_hint: usize,
}

impl<T: Serialize, K: Serialize> Processor<T> for KeyBy<T, K> {
    fn process(&mut self, record: Record<T>, ctx: &mut Context) -> Result<(), StreamsError> {
        let (queue, offset) = ctx.origin;
        let origin = Origin {
            queue,
            offset,
            seq: ctx.seq,
        };
        let value = &record.value;
        let selector = &self.selector;
        // Key and value are serialized straight into the shuffle record.
        let (body, key) = ShuffleRecord::encode_with(
            self.node,
            origin,
            record.timestamp,
            self.size_hint,
            |buf| serde_json::to_writer(buf, &selector(value)),
            |buf| serde_json::to_writer(buf, value),
        )
        .map_err(|e| SerdeError::new("json", e.to_string()))?;
        self.size_hint = body.len();
        ctx.seq += 1;
        ctx.shuffle.push(ShuffleOutput {
            key_hash: stable_hash(&key),
            body,
        });
        Ok(())
    }
}
