//! Where shuffled records re-enter: decode, drop replays, dispatch by node.

use bytes::Bytes;
use rocketmq_streams_shuffle::{Origin, ShuffleRecord};
use serde::de::DeserializeOwned;

use crate::error::{SerdeError, StreamsError};
use crate::processor::{BoxProcessor, Context, Keyed, Record};
use crate::topology::SourcePipeline;

/// The keyed chain after one `key_by`: decodes the key and value.
pub(crate) trait KeyedEntry {
    fn process(&mut self, record: ShuffleRecord, ctx: &mut Context) -> Result<(), StreamsError>;
}

/// The chain after a `key_by` of keys `K` and values `V`.
pub(crate) struct TypedKeyedEntry<K, V> {
    pub(crate) next: BoxProcessor<Keyed<K, V>>,
}

impl<K: DeserializeOwned, V: DeserializeOwned> KeyedEntry for TypedKeyedEntry<K, V> {
    fn process(&mut self, record: ShuffleRecord, ctx: &mut Context) -> Result<(), StreamsError> {
        let key = serde_json::from_slice(&record.key).map_err(|e| SerdeError::new("json", format!("key: {e}")))?;
        let value =
            serde_json::from_slice(&record.value).map_err(|e| SerdeError::new("json", format!("value: {e}")))?;
        self.next.process(
            Record {
                value: Keyed {
                    key,
                    raw_key: record.key,
                    value,
                },
                timestamp: record.timestamp,
            },
            ctx,
        )
    }
}

/// The store key of the highest origin applied, per `key_by` node and
/// origin queue. `0xFFFE` never starts an operator's key (node ids are small).
fn high_water_key(node: u16, origin_queue: u64) -> [u8; 12] {
    let mut k = [0u8; 12];
    k[..2].copy_from_slice(&[0xFF, 0xFE]);
    k[2..4].copy_from_slice(&node.to_be_bytes());
    k[4..].copy_from_slice(&origin_queue.to_le_bytes());
    k
}

fn encode_mark(o: &Origin) -> Bytes {
    let mut v = Vec::with_capacity(12);
    v.extend_from_slice(&o.offset.to_le_bytes());
    v.extend_from_slice(&o.seq.to_le_bytes());
    Bytes::from(v)
}

fn decode_mark(b: &[u8]) -> Option<(i64, u32)> {
    Some((
        i64::from_le_bytes(b.get(..8)?.try_into().ok()?),
        u32::from_le_bytes(b.get(8..12)?.try_into().ok()?),
    ))
}

/// The pipeline of a shuffle-topic queue.
pub(crate) struct ShuffleSource {
    /// Indexed by `key_by` node.
    pub(crate) entries: Vec<Box<dyn KeyedEntry>>,
}

impl SourcePipeline for ShuffleSource {
    fn process(&mut self, body: &Bytes, _timestamp: i64, ctx: &mut Context) -> Result<(), StreamsError> {
        let record = ShuffleRecord::decode(body)?;
        let node = record.node;
        let Some(entry) = self.entries.get_mut(usize::from(node)) else {
            return Err(StreamsError::Topology(format!(
                "shuffled record for key_by node {node}, which this topology does not have"
            )));
        };
        let hw_key = high_water_key(node, record.origin.queue);
        let store = ctx.store()?;
        if let Some(mark) = store.get(&hw_key)? {
            let Some(applied) = decode_mark(&mark) else {
                return Err(rocketmq_streams_state::StateError::Malformed("origin high-water mark".into()).into());
            };
            if (record.origin.offset, record.origin.seq) <= applied {
                ctx.duplicates += 1;
                return Ok(());
            }
        }
        store.put_slice(&hw_key, encode_mark(&record.origin));
        entry.process(record, ctx)
    }
}
