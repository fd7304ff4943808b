//! `aggregate` (and `count`, `sum`, `min`, `max`, `avg`): keyed state.

use std::sync::Arc;

use bytes::Bytes;

use crate::accumulator::Accumulator;
use crate::error::{SerdeError, StreamsError};
use crate::processor::{BoxProcessor, Context, Keyed, Processor, Record};

/// Folds each value into its key's state (read from and written to the
/// queue's store) and emits the key's new result.
pub struct Aggregate<K, V, A: Accumulator<V>> {
    /// Prefix of this operator's keys in the store (its node id).
    pub(crate) prefix: [u8; 2],
    pub(crate) acc: Arc<A>,
    pub(crate) next: BoxProcessor<Keyed<K, A::Output>>,
    pub(crate) key_buf: Vec<u8>,
}

impl<K, V, A: Accumulator<V>> Processor<Keyed<K, V>> for Aggregate<K, V, A> {
    fn process(&mut self, record: Record<Keyed<K, V>>, ctx: &mut Context) -> Result<(), StreamsError> {
        let Keyed { key, raw_key, value } = record.value;
        self.key_buf.clear();
        self.key_buf.extend_from_slice(&self.prefix);
        self.key_buf.extend_from_slice(&raw_key);
        let store = ctx.store()?;
        let mut state = match store.get(&self.key_buf)? {
            // A value that no longer decodes (written by another version of
            // the accumulator) fails this record, through the error policy;
            // the stored value stays as it was.
            Some(bytes) => serde_json::from_slice(&bytes).map_err(|e| {
                SerdeError::new("state", format!("stored state of key {raw_key:?} does not decode: {e}"))
            })?,
            None => self.acc.init(),
        };
        self.acc.add(&mut state, &value);
        let encoded = serde_json::to_vec(&state).map_err(|e| SerdeError::new("json", e.to_string()))?;
        store.put_slice(&self.key_buf, Bytes::from(encoded));
        let out = Keyed {
            key,
            raw_key,
            value: self.acc.result(&state),
        };
        self.next.process(
            Record {
                value: out,
                timestamp: record.timestamp,
            },
            ctx,
        )
    }
}

#[cfg(test)]
mod tests {
    use rocketmq_streams_state::QueueStore;

    use super::*;
    use crate::accumulator::Count;

    /// Passes results on to nowhere.
    struct Nowhere;

    impl Processor<Keyed<String, u64>> for Nowhere {
        fn process(&mut self, _: Record<Keyed<String, u64>>, _: &mut Context) -> Result<(), StreamsError> {
            Ok(())
        }
    }

    #[test]
    fn a_stored_value_that_no_longer_decodes_fails_the_record_not_the_job() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut store = QueueStore::open(dir.path().join("q"), 10).expect("open");
        store.put(
            Bytes::from_static(b"\x00\x01\"k\""),
            Bytes::from_static(b"{not a count"),
        );
        let mut ctx = Context::new(0);
        ctx.store = Some(store);
        let mut count: Aggregate<String, (), Count> = Aggregate {
            prefix: [0, 1],
            acc: Arc::new(Count),
            next: Box::new(Nowhere),
            key_buf: Vec::new(),
        };
        let record = Record {
            value: Keyed {
                key: "k".to_string(),
                raw_key: Bytes::from_static(b"\"k\""),
                value: (),
            },
            timestamp: 0,
        };
        let err = count.process(record, &mut ctx).expect_err("the record fails");
        // A per-record error: the error policy skips or dead-letters it.
        assert!(matches!(err, StreamsError::Serde(_)), "{err}");
        let store = ctx.store().expect("store");
        assert_eq!(
            store.get(b"\x00\x01\"k\"").expect("get"),
            Some(Bytes::from_static(b"{not a count")),
            "the stored value is left as it was"
        );
    }
}
