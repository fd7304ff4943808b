//! `aggregate` (and `count`, `sum`, `min`, `max`, `avg`): keyed state.

use std::sync::Arc;

use std::collections::HashMap;

use bytes::Bytes;

use crate::accumulator::Accumulator;
use crate::codec;
use crate::emit::Emit;
use crate::error::{SerdeError, StreamsError};
use crate::processor::{BoxProcessor, Context, Keyed, Processor, Record};
use crate::topology::guarded;

/// Folds each value into its key's state (read from and written to the
/// queue's store) and emits the key's new result: at once
/// ([`Emit::OnUpdate`]), or the latest one per key at the next flush
/// ([`Emit::OnCommit`]).
pub struct Aggregate<K, V, A: Accumulator<V>> {
    /// Prefix of this operator's keys in the store (its node id).
    pub(crate) prefix: [u8; 2],
    pub(crate) acc: Arc<A>,
    pub(crate) next: BoxProcessor<Keyed<K, A::Output>>,
    pub(crate) key_buf: Vec<u8>,
    pub(crate) emit: Emit,
    /// `OnCommit`: the keys updated since the last flush.
    pub(crate) held: Held<K>,
}

/// The keys an `OnCommit` aggregation updated since its last flush, in the
/// order first updated, each with the event time of its latest update.
/// Results are read from the store at the flush, so a record rolled back
/// after it updated a key leaves no result of its own behind.
pub(crate) struct Held<K> {
    keys: Vec<(K, Bytes, i64)>,
    index: HashMap<Bytes, usize, ahash::RandomState>,
}

impl<K> Default for Held<K> {
    fn default() -> Self {
        Held {
            keys: Vec::new(),
            index: HashMap::default(),
        }
    }
}

impl<K> Held<K> {
    fn note(&mut self, key: K, raw_key: Bytes, timestamp: i64) {
        match self.index.get(&raw_key) {
            Some(&i) => self.keys[i].2 = self.keys[i].2.max(timestamp),
            None => {
                self.index.insert(raw_key.clone(), self.keys.len());
                self.keys.push((key, raw_key, timestamp));
            }
        }
    }

    fn take(&mut self) -> Vec<(K, Bytes, i64)> {
        self.index.clear();
        std::mem::take(&mut self.keys)
    }
}

impl<K, V, A: Accumulator<V>> Aggregate<K, V, A> {
    fn store_key(&mut self, raw_key: &[u8]) {
        self.key_buf.clear();
        self.key_buf.extend_from_slice(&self.prefix);
        self.key_buf.extend_from_slice(raw_key);
    }

    /// The state of `raw_key`'s key, as stored.
    fn state(&mut self, raw_key: &[u8], ctx: &mut Context) -> Result<Option<A::State>, StreamsError> {
        self.store_key(raw_key);
        match ctx.store()?.get(&self.key_buf)? {
            // A value that no longer decodes (written by another version of
            // the accumulator) fails this record, through the error policy;
            // the stored value stays as it was.
            Some(bytes) => codec::decode_state(&bytes).map(Some).map_err(|e| {
                SerdeError::new("state", format!("stored state of key {raw_key:?} does not decode: {e}")).into()
            }),
            None => Ok(None),
        }
    }
}

impl<K, V, A: Accumulator<V>> Processor<Keyed<K, V>> for Aggregate<K, V, A> {
    fn process(&mut self, record: Record<Keyed<K, V>>, ctx: &mut Context) -> Result<(), StreamsError> {
        let Keyed { key, raw_key, value } = record.value;
        let mut state = match self.state(&raw_key, ctx)? {
            Some(state) => state,
            None => self.acc.init(),
        };
        self.acc.add(&mut state, &value);
        ctx.store()?.put_slice(&self.key_buf, codec::encode_state(&state)?);
        match self.emit {
            Emit::OnUpdate => {
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
            Emit::OnCommit => {
                self.held.note(key, raw_key, record.timestamp);
                Ok(())
            }
        }
    }

    /// Emits the result of every key held, read from the store, each
    /// guarded as a record of its own; then passes the flush on.
    fn flush(&mut self, ctx: &mut Context) -> Result<(), StreamsError> {
        for (key, raw_key, timestamp) in self.held.take() {
            let state = match self.state(&raw_key, ctx) {
                Ok(Some(state)) => state,
                // Rolled back since: nothing of its own to emit.
                Ok(None) => continue,
                Err(e @ StreamsError::State(_)) => return Err(e),
                Err(e) => {
                    ctx.flush_failures.push((raw_key, e));
                    continue;
                }
            };
            let (acc, next) = (&self.acc, &mut self.next);
            // `result` is user code: guarded like the rest of the emission.
            let emitted = guarded(ctx, |ctx| {
                let out = Keyed {
                    key,
                    raw_key: raw_key.clone(),
                    value: acc.result(&state),
                };
                next.process(Record { value: out, timestamp }, ctx)
            });
            if let Err(e) = emitted {
                ctx.flush_failures.push((raw_key, e));
            }
        }
        self.next.flush(ctx)
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
            emit: Emit::OnUpdate,
            held: Held::default(),
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
