//! `aggregate` (and `count`, `sum`, `min`, `max`, `avg`): keyed state.

use std::sync::Arc;

use std::collections::HashMap;

use bytes::Bytes;
use rocketmq_streams_state::StateError;

use crate::accumulator::Accumulator;
use crate::codec::StateCodec;
use crate::emit::Emit;
use crate::error::StreamsError;
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

    /// This operator's decoded layer in the store.
    fn layer(&self) -> u32 {
        u32::from(u16::from_be_bytes(self.prefix))
    }
}

/// A store failure as the record sees it: always the store's, never the
/// record's, so it stops the queue whatever the error policy. A stored
/// value that no longer decodes (a state type changed across deploys, or
/// another release's format) is no exception: skipping the record would
/// leave the key's state frozen while the queue's offsets moved past its
/// updates, every later update of the key skipped the same way (issue 28).
/// The error names the store and the key, as a restore's does.
pub(crate) fn state_error(raw_key: &[u8], e: StateError) -> StreamsError {
    match e {
        StateError::Codec { message, .. } => StateError::Codec {
            key: format!("{:?}", Bytes::copy_from_slice(raw_key)),
            message: format!(
                "the stored state does not decode ({message}); the queue stops rather than skip the key's \
                 updates (was the state type changed? deploy the release that wrote it, or give the job a \
                 new id)"
            ),
        }
        .into(),
        e => e.into(),
    }
}

impl<K, V, A: Accumulator<V>> Processor<Keyed<K, V>> for Aggregate<K, V, A> {
    /// Folds the value into its key's state, in place in the store's
    /// decoded layer: no decode, encode or allocation per record (the state
    /// is encoded once per key at the next flush).
    fn process(&mut self, record: Record<Keyed<K, V>>, ctx: &mut Context) -> Result<(), StreamsError> {
        let Keyed { key, raw_key, value } = record.value;
        self.store_key(&raw_key);
        let (acc, emit, layer) = (&self.acc, self.emit, self.layer());
        let result = ctx
            .store()?
            .update::<StateCodec<A::State>, _>(layer, &self.key_buf, |state| {
                let state = state.get_or_insert_with(|| acc.init());
                acc.add(state, &value);
                (emit == Emit::OnUpdate).then(|| acc.result(state))
            })
            .map_err(|e| state_error(&raw_key, e))?;
        match result {
            Some(value) => self.next.process(
                Record {
                    value: Keyed { key, raw_key, value },
                    timestamp: record.timestamp,
                },
                ctx,
            ),
            None => {
                self.held.note(key, raw_key, record.timestamp);
                Ok(())
            }
        }
    }

    /// Encodes the states updated since the last flush into the store;
    /// then emits the result of every key held, read from the store, each
    /// guarded as a record of its own; then passes the flush on.
    ///
    /// A state that cannot be encoded (its `Serialize` fails or panics)
    /// fails the flush, and so the queue's checkpoint: the state is never
    /// checkpointed without it, and nothing is emitted from it.
    fn flush(&mut self, ctx: &mut Context) -> Result<(), StreamsError> {
        let layer = self.layer();
        let mut failure = None;
        ctx.store()?.encode_decoded(layer, |key, message| {
            failure.get_or_insert((key, message));
        });
        if let Some((key, message)) = failure {
            let raw_key = key.slice(self.prefix.len().min(key.len())..);
            return Err(StateError::Codec {
                key: format!("{raw_key:?}"),
                message: format!("the state does not encode, so the queue cannot checkpoint: {message}"),
            }
            .into());
        }
        for (key, raw_key, timestamp) in self.held.take() {
            self.store_key(&raw_key);
            let (acc, next, store_key) = (&self.acc, &mut self.next, &self.key_buf);
            // `result` is user code: guarded like the rest of the emission.
            let emitted = guarded(ctx, |ctx| {
                let result = ctx
                    .store()?
                    .read::<StateCodec<A::State>, _>(layer, store_key, |state| state.map(|s| acc.result(s)))
                    .map_err(|e| state_error(&raw_key, e))?;
                // `None`: rolled back since, nothing of its own to emit.
                let Some(value) = result else { return Ok(()) };
                let out = Keyed {
                    key,
                    raw_key: raw_key.clone(),
                    value,
                };
                next.process(Record { value: out, timestamp }, ctx)
            });
            match emitted {
                Ok(()) => {}
                Err(e @ StreamsError::State(_)) => return Err(e),
                Err(e) => ctx.flush_failures.push((raw_key, e)),
            }
        }
        self.next.flush(ctx)
    }

    fn advance(&mut self, ctx: &mut Context) -> Result<(), StreamsError> {
        self.next.advance(ctx)
    }
}

#[cfg(test)]
mod tests {
    use rocketmq_streams_state::QueueStore;

    use super::*;
    use crate::accumulator::Count;
    use crate::codec;

    /// Passes results on to nowhere.
    struct Nowhere;

    impl Processor<Keyed<String, u64>> for Nowhere {
        fn process(&mut self, _: Record<Keyed<String, u64>>, _: &mut Context) -> Result<(), StreamsError> {
            Ok(())
        }
    }

    /// Issue 28: this test once showed a per-record error here, which the
    /// default `Skip` policy skipped on every update of the key while the
    /// offsets moved on: the key's state froze. It now stops the queue.
    #[test]
    fn a_stored_value_that_no_longer_decodes_stops_the_queue_naming_store_and_key() {
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
        // The store's error, not the record's: no policy skips it.
        assert!(matches!(err, StreamsError::State(StateError::Codec { .. })), "{err}");
        let verdict = crate::policy::ErrorPolicy::Skip.judge(&Bytes::new(), &err, "q:0".into());
        assert!(
            matches!(verdict, crate::policy::Verdict::Fail(_)),
            "Skip does not skip it"
        );
        let text = err.to_string();
        assert!(
            text.contains("store 1") && text.contains(r#"b"\"k\"""#),
            "names store and key: {text}"
        );
        let store = ctx.store().expect("store");
        assert_eq!(
            store.get(b"\x00\x01\"k\"").expect("get"),
            Some(Bytes::from_static(b"{not a count")),
            "the stored value is left as it was"
        );
    }

    /// Fails on the 13th record it is given.
    struct FailsAt13(u64);

    impl Processor<Keyed<String, u64>> for FailsAt13 {
        fn process(&mut self, _: Record<Keyed<String, u64>>, _: &mut Context) -> Result<(), StreamsError> {
            self.0 += 1;
            if self.0 == 13 {
                return Err(crate::error::SerdeError::new("test", "downstream failed").into());
            }
            Ok(())
        }
    }

    /// A count that cannot be serialized once it reaches 13.
    #[derive(Clone, serde::Deserialize)]
    struct Unlucky(u64);

    impl serde::Serialize for Unlucky {
        fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
            if self.0 == 13 {
                return Err(serde::ser::Error::custom("13 is unlucky"));
            }
            s.serialize_u64(self.0)
        }
    }

    struct UnluckyCount;

    impl Accumulator<()> for UnluckyCount {
        type State = Unlucky;
        type Output = u64;
        fn init(&self) -> Unlucky {
            Unlucky(0)
        }
        fn add(&self, state: &mut Unlucky, _: &()) {
            state.0 += 1;
        }
        fn result(&self, state: &Unlucky) -> u64 {
            state.0
        }
    }

    fn unit(key: &str) -> Record<Keyed<String, ()>> {
        Record {
            value: Keyed {
                key: key.to_string(),
                raw_key: Bytes::from(format!("{key:?}")),
                value: (),
            },
            timestamp: 0,
        }
    }

    fn aggregate<A: Accumulator<()>>(acc: A, next: BoxProcessor<Keyed<String, A::Output>>) -> Aggregate<String, (), A> {
        Aggregate {
            prefix: [0, 1],
            acc: Arc::new(acc),
            next,
            key_buf: Vec::new(),
            emit: Emit::OnUpdate,
            held: Held::default(),
        }
    }

    fn context(dir: &tempfile::TempDir) -> Context {
        let mut ctx = Context::new(0);
        ctx.store = Some(QueueStore::open(dir.path().join("q"), 100).expect("open"));
        ctx
    }

    #[test]
    fn a_record_failing_downstream_leaves_its_key_uncounted() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut ctx = context(&dir);
        let mut count = aggregate(Count, Box::new(FailsAt13(0)));
        let mut failed = 0;
        for _ in 0..20 {
            if guarded(&mut ctx, |ctx| count.process(unit("k"), ctx)).is_err() {
                failed += 1;
            }
        }
        assert_eq!(failed, 1);
        count.flush(&mut ctx).expect("flush");
        let stored = ctx.store().expect("store").changes(0);
        assert_eq!(stored.len(), 1);
        let rocketmq_streams_state::Change::Put { value, .. } = &stored[0] else {
            panic!("{stored:?}")
        };
        assert_eq!(codec::decode_state::<u64>(value).expect("a count"), 19);
    }

    #[test]
    fn a_state_that_does_not_encode_fails_the_flush_and_keeps_its_value() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut ctx = context(&dir);
        let mut count = aggregate(UnluckyCount, Box::new(Nowhere));
        for _ in 0..13 {
            guarded(&mut ctx, |ctx| count.process(unit("k"), ctx)).expect("counted");
        }
        let err = count.flush(&mut ctx).expect_err("13 does not encode");
        assert!(matches!(err, StreamsError::State(StateError::Codec { .. })), "{err}");
        assert!(!err.is_retriable());
        let store = ctx.store().expect("store");
        assert!(store.changes(0).is_empty(), "nothing to checkpoint");
        assert_eq!(store.decoded_dirty(), 1, "the count is kept");
        // One more record, and the state encodes again.
        guarded(&mut ctx, |ctx| count.process(unit("k"), ctx)).expect("counted");
        count.flush(&mut ctx).expect("flush");
        assert_eq!(ctx.store().expect("store").changes(0).len(), 1);
    }
}
