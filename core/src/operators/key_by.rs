//! `key_by`: the edge that leaves the shard, through the shuffle topic.

use std::sync::Arc;

use rocketmq_streams_shuffle::stable_hash;
use serde::Serialize;

use crate::codec;
use crate::error::StreamsError;
use crate::processor::{Context, PendingShuffle, Processor, Record};

/// Serializes the key and the value (MessagePack, see `codec`) straight
/// into the context's shuffle buffer; the runtime frames the buffer per
/// shuffle queue (the key's hash picks it) and sends the frames after the
/// batch. No allocation per record once the buffer has grown.
pub struct KeyBy<T, K> {
    pub(crate) node: u16,
    pub(crate) selector: Arc<dyn Fn(&T) -> K + Send + Sync>,
}

impl<T: Serialize, K: Serialize> Processor<T> for KeyBy<T, K> {
    fn process(&mut self, record: Record<T>, ctx: &mut Context) -> Result<(), StreamsError> {
        let (origin, offset) = ctx.origin;
        let buffer = &mut ctx.shuffle;
        let start = buffer.bytes.len();
        let written = codec::encode_into(&mut buffer.bytes, &(self.selector)(&record.value), "key").and_then(|()| {
            let key_end = buffer.bytes.len();
            codec::encode_into(&mut buffer.bytes, &record.value, "value").map(|()| key_end)
        });
        let key_end = match written {
            Ok(key_end) => key_end,
            Err(e) => {
                buffer.bytes.truncate(start);
                return Err(e.into());
            }
        };
        let end = buffer.bytes.len();
        buffer.records.push(PendingShuffle {
            key_hash: stable_hash(&buffer.bytes[start..key_end]),
            origin,
            offset,
            seq: ctx.seq,
            node: self.node,
            timestamp: record.timestamp,
            start,
            key_end,
            end,
        });
        ctx.seq += 1;
        Ok(())
    }
}
