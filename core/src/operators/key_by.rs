//! `key_by`: the edge that leaves the shard, through the shuffle topic.

use std::sync::Arc;

use bytes::Bytes;
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
}

fn json<X: Serialize>(x: &X) -> Result<Bytes, StreamsError> {
    serde_json::to_vec(x)
        .map(Bytes::from)
        .map_err(|e| SerdeError::new("json", e.to_string()).into())
}

impl<T: Serialize, K: Serialize> Processor<T> for KeyBy<T, K> {
    fn process(&mut self, record: Record<T>, ctx: &mut Context) -> Result<(), StreamsError> {
        let key = json(&(self.selector)(&record.value))?;
        let value = json(&record.value)?;
        let (queue, offset) = ctx.origin;
        let shuffled = ShuffleRecord {
            node: self.node,
            origin: Origin {
                queue,
                offset,
                seq: ctx.seq,
            },
            timestamp: record.timestamp,
            key,
            value,
        };
        ctx.seq += 1;
        ctx.shuffle.push(ShuffleOutput {
            key_hash: stable_hash(&shuffled.key),
            body: shuffled.encode(),
        });
        Ok(())
    }
}
