//! `process`: a user-written step of a keyed stage, with a state store of
//! its own — the counterpart of RocketMQ Streams' `addGraphNode` and
//! Kafka Streams' `process`.
//!
//! The step's store lives in the queue's store, under the step's node id
//! (as an aggregation's states do): its writes are rolled back with a
//! failed record, checkpointed and change-logged with the queue, restored
//! where the queue moves, and a record already applied to the restored
//! state never reaches the processor again, so what it stores is exact as
//! a count is. Records processed after the last checkpoint are processed
//! again after a restart or a move (at-least-once): the store is exact, but
//! the processor's own fields and side effects see them twice.

use std::marker::PhantomData;

use bytes::Bytes;
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::codec;
use crate::error::StreamsError;
use crate::processor::{BoxProcessor, Context, Keyed, Processor, Record};

/// A user-written processor of a keyed stage, for
/// [`GroupedStream::process`](crate::GroupedStream::process): it sees every
/// record of the keys its queue owns, reads and writes its own store of
/// `State` values, and forwards any number of values under the record's
/// key.
///
/// Keep what must survive in the store: the processor itself is built
/// anew for every queue a shard takes (and after a restart or a
/// rebalance), so its fields are a per-queue scratch space only.
///
/// ```
/// use rocketmq_streams::prelude::*;
///
/// /// Forwards the first of each key's values, once: a deduplication
/// /// that survives restarts and rebalances.
/// struct FirstOnly;
///
/// impl KeyedProcessor<String, String> for FirstOnly {
///     type Out = String;
///     type State = bool;
///
///     fn process(
///         &mut self,
///         key: &String,
///         value: String,
///         ctx: &mut ProcessorContext<'_, String, bool, String>,
///     ) -> Result<(), StreamsError> {
///         if ctx.get(key)?.is_none() {
///             ctx.put(key, &true)?;
///             ctx.forward(value)?;
///         }
///         Ok(())
///     }
/// }
///
/// let builder = StreamBuilder::new("dedup");
/// builder
///     .source("orders", Utf8)
///     .key_by(|order: &String| order.clone())
///     .process("first-only", || FirstOnly)
///     .sink("unique-orders", Json::<(String, String)>::new());
/// builder.build().unwrap();
/// ```
pub trait KeyedProcessor<K, V> {
    /// The values it forwards.
    type Out;
    /// What its store keeps under each store key.
    type State: Serialize + DeserializeOwned;

    /// Processes `value` of `key`.
    ///
    /// # Errors
    ///
    /// An error fails this record (return
    /// [`StreamsError::Processor`] with your reason): its store writes and
    /// what it forwarded are undone, and the job's
    /// [`ErrorPolicy`](crate::ErrorPolicy) skips or dead-letters it. A store that fails (RocksDB) stops the
    /// queue, as for an aggregation.
    fn process(
        &mut self,
        key: &K,
        value: V,
        ctx: &mut ProcessorContext<'_, K, Self::State, Self::Out>,
    ) -> Result<(), StreamsError>;
}

/// What a [`KeyedProcessor`] sees besides the record: its store, the
/// record's event time, and where it forwards values.
pub struct ProcessorContext<'a, K, S, O> {
    ctx: &'a mut Context,
    next: &'a mut BoxProcessor<Keyed<K, O>>,
    key: &'a K,
    raw_key: &'a Bytes,
    timestamp: i64,
    prefix: [u8; 2],
    key_buf: &'a mut Vec<u8>,
    _state: PhantomData<fn() -> S>,
}

impl<K: Clone, S: Serialize + DeserializeOwned, O> ProcessorContext<'_, K, S, O> {
    /// The record's event time (milliseconds since the epoch).
    pub fn timestamp(&self) -> i64 {
        self.timestamp
    }

    /// Forwards `value` under the record's key, at the record's event time.
    ///
    /// # Errors
    ///
    /// What the next operator returns (the record then fails, see
    /// [`KeyedProcessor::process`]).
    pub fn forward(&mut self, value: O) -> Result<(), StreamsError> {
        self.forward_at(value, self.timestamp)
    }

    /// Forwards `value` under the record's key, at event time `timestamp`.
    ///
    /// # Errors
    ///
    /// As [`forward`](Self::forward).
    pub fn forward_at(&mut self, value: O, timestamp: i64) -> Result<(), StreamsError> {
        let record = Record {
            value: Keyed {
                key: self.key.clone(),
                raw_key: self.raw_key.clone(),
                value,
            },
            timestamp,
        };
        self.next.process(record, self.ctx)
    }

    /// The stored state of `key`, if any. Store keys are any serializable
    /// value (often the record's key); the store is this queue's, so keep
    /// in it what belongs to the keys this queue owns.
    ///
    /// # Errors
    ///
    /// A stored value that does not decode as `S` (written by another
    /// version of the processor) stops the queue with an error that names
    /// the store and the key, as a RocksDB failure does: skipping the
    /// record would leave that key's state frozen.
    pub fn get<Q: Serialize + ?Sized>(&mut self, key: &Q) -> Result<Option<S>, StreamsError> {
        self.store_key(key)?;
        let store_key = &self.key_buf[self.prefix.len()..];
        let stored = self
            .ctx
            .store()?
            .get(self.key_buf)
            .map_err(|e| super::aggregate::state_error(store_key, e))?;
        stored
            .map(|bytes| {
                codec::decode_state(&bytes).map_err(|e| {
                    let e = rocketmq_streams_state::StateError::Codec {
                        key: String::new(),
                        message: format!("store {}: {e}", u16::from_be_bytes(self.prefix)),
                    };
                    super::aggregate::state_error(store_key, e)
                })
            })
            .transpose()
    }

    /// Stores `state` under `key` (checkpointed with the queue).
    ///
    /// # Errors
    ///
    /// A key or state that does not serialize fails the record.
    pub fn put<Q: Serialize + ?Sized>(&mut self, key: &Q, state: &S) -> Result<(), StreamsError> {
        self.store_key(key)?;
        let value = codec::encode_state(state)?;
        self.ctx.store()?.put_slice(self.key_buf, value);
        Ok(())
    }

    /// Deletes the state of `key`.
    ///
    /// # Errors
    ///
    /// A key that does not serialize fails the record.
    pub fn delete<Q: Serialize + ?Sized>(&mut self, key: &Q) -> Result<(), StreamsError> {
        self.store_key(key)?;
        let key = Bytes::copy_from_slice(self.key_buf);
        self.ctx.store()?.delete(key);
        Ok(())
    }

    /// `key_buf` = this step's prefix, then `key` serialized as keys travel
    /// (MessagePack).
    fn store_key<Q: Serialize + ?Sized>(&mut self, key: &Q) -> Result<(), StreamsError> {
        self.key_buf.clear();
        self.key_buf.extend_from_slice(&self.prefix);
        codec::encode_into(self.key_buf, key, "store key")?;
        Ok(())
    }
}

/// The operator that runs a [`KeyedProcessor`].
pub struct Process<K, V, P: KeyedProcessor<K, V>> {
    /// Prefix of this step's keys in the store (its node id).
    pub(crate) prefix: [u8; 2],
    pub(crate) user: P,
    pub(crate) next: BoxProcessor<Keyed<K, P::Out>>,
    pub(crate) key_buf: Vec<u8>,
    pub(crate) _v: PhantomData<fn(V)>,
}

impl<K: Clone, V, P: KeyedProcessor<K, V>> Processor<Keyed<K, V>> for Process<K, V, P> {
    fn process(&mut self, record: Record<Keyed<K, V>>, ctx: &mut Context) -> Result<(), StreamsError> {
        let Keyed { key, raw_key, value } = record.value;
        let mut user_ctx = ProcessorContext {
            ctx,
            next: &mut self.next,
            key: &key,
            raw_key: &raw_key,
            timestamp: record.timestamp,
            prefix: self.prefix,
            key_buf: &mut self.key_buf,
            _state: PhantomData,
        };
        self.user.process(&key, value, &mut user_ctx)
    }

    fn flush(&mut self, ctx: &mut Context) -> Result<(), StreamsError> {
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
    use crate::topology::guarded;

    /// Collects what reaches it.
    struct Collect(std::rc::Rc<std::cell::RefCell<Vec<(String, u64)>>>);

    impl Processor<Keyed<String, u64>> for Collect {
        fn process(&mut self, r: Record<Keyed<String, u64>>, _: &mut Context) -> Result<(), StreamsError> {
            self.0.borrow_mut().push((r.value.key, r.value.value));
            Ok(())
        }
    }

    /// A running total per key that fails (after it stored and forwarded)
    /// on a value of 13.
    struct Total;

    impl KeyedProcessor<String, u64> for Total {
        type Out = u64;
        type State = u64;

        fn process(
            &mut self,
            key: &String,
            value: u64,
            ctx: &mut ProcessorContext<'_, String, u64, u64>,
        ) -> Result<(), StreamsError> {
            let total = ctx.get(key)?.unwrap_or(0) + value;
            ctx.put(key, &total)?;
            ctx.forward(total)?;
            if value == 13 {
                return Err(StreamsError::Processor("13 fails".into()));
            }
            Ok(())
        }
    }

    fn keyed(key: &str, value: u64) -> Record<Keyed<String, u64>> {
        Record {
            value: Keyed {
                key: key.to_string(),
                raw_key: Bytes::from(format!("{key:?}")),
                value,
            },
            timestamp: 7,
        }
    }

    #[test]
    fn a_failed_record_leaves_neither_state_nor_output_behind() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut ctx = Context::new(0);
        ctx.store = Some(QueueStore::open(dir.path().join("q"), 100).expect("open"));
        let seen = std::rc::Rc::default();
        let mut step: Process<String, u64, Total> = Process {
            prefix: [0, 3],
            user: Total,
            next: Box::new(Collect(std::rc::Rc::clone(&seen))),
            key_buf: Vec::new(),
            _v: PhantomData,
        };
        for value in [1, 2, 13, 4] {
            let _ = guarded(&mut ctx, |ctx| step.process(keyed("k", value), ctx));
        }
        guarded(&mut ctx, |ctx| step.process(keyed("j", 5), ctx)).expect("j");
        // The failed record forwarded 16 before it failed; the output
        // buffers are rolled back by the runtime, the store here.
        let totals: Vec<u64> = seen
            .borrow()
            .iter()
            .filter(|(k, _)| k == "k")
            .map(|(_, v)| *v)
            .collect();
        assert_eq!(totals, [1, 3, 16, 7]);
        let changes = ctx.store().expect("store").changes(0);
        let mut stored: Vec<(Vec<u8>, u64)> = changes
            .iter()
            .map(|c| match c {
                rocketmq_streams_state::Change::Put { key, value, .. } => {
                    (key.to_vec(), codec::decode_state::<u64>(value).expect("a total"))
                }
                other => panic!("{other:?}"),
            })
            .collect();
        stored.sort();
        let key = |k: &str| {
            let mut buf = vec![0, 3];
            codec::encode_into(&mut buf, k, "key").expect("encode");
            buf
        };
        assert_eq!(stored, [(key("j"), 5), (key("k"), 7)], "13 was rolled back");
    }
}
