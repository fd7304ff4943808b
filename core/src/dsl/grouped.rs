//! `GroupedStream<K, V>`: the keyed stage after `key_by`.

use std::fmt::Debug;
use std::marker::PhantomData;
use std::ops::Add;
use std::sync::Arc;

use serde::de::DeserializeOwned;
use serde::Serialize;

use super::builder::lock;
use super::rstream::RStream;
use super::windowed::{WindowSpec, WindowStream};
use crate::accumulator::{Accumulator, Avg, Count, Extreme, Reduce, Sum};
use crate::emit::Emit;
use crate::error::StreamsError;
use crate::operators::aggregate::Aggregate;
use crate::processor::{BoxProcessor, Keyed};
use crate::serde::Serializer;

/// A stream grouped by key: every record of a key is processed on the one
/// shard that owns the key's shuffle queue, where its aggregations keep
/// their state.
///
/// Aggregations emit an update — the key and its new result — for every
/// input record, or the latest per key once per commit after
/// [`emit`](Self::emit)`(`[`Emit::OnCommit`]`)`. `to_rstream` turns the
/// updates back into an [`RStream`] of `(key, value)` pairs.
pub struct GroupedStream<K, V> {
    inner: RStream<Keyed<K, V>>,
    /// When the aggregations declared on this stream emit.
    emit: Emit,
}

impl<K, V> GroupedStream<K, V>
where
    K: Clone + 'static,
    V: Clone + 'static,
{
    pub(crate) fn new(inner: RStream<Keyed<K, V>>) -> Self {
        Self {
            inner,
            emit: Emit::OnUpdate,
        }
    }

    /// The same stream, whose aggregations (declared on the returned
    /// stream) emit as `emit` says; the default is [`Emit::OnUpdate`].
    pub fn emit(&self, emit: Emit) -> GroupedStream<K, V> {
        GroupedStream {
            inner: self.inner.clone(),
            emit,
        }
    }

    /// Folds the values of each key with `acc`; emits each key's new result
    /// (when, [`emit`](Self::emit) says).
    pub fn aggregate<A: Accumulator<V>>(&self, acc: A) -> GroupedStream<K, A::Output> {
        self.aggregate_as("Aggregate", acc)
    }

    fn aggregate_as<A: Accumulator<V>>(&self, kind: &'static str, acc: A) -> GroupedStream<K, A::Output> {
        let acc = Arc::new(acc);
        let acc_for_reads = acc.clone();
        let emit = self.emit;
        self.inner.refuse_after_on_commit(kind);
        self.inner.refuse_after_window(kind);
        let grouped = GroupedStream::new(self.inner.then_node(kind, move |node, next| {
            Box::new(Aggregate {
                prefix: store_prefix(node),
                acc: acc.clone(),
                next,
                key_buf: Vec::new(),
                emit,
                held: Default::default(),
            }) as BoxProcessor<Keyed<K, V>>
        }));
        if emit == Emit::OnCommit {
            grouped.inner.mark_on_commit();
        }
        let node = grouped.inner.node_id();
        let prefix = store_prefix(node);
        let reader: crate::query::StoreReader = Arc::new(move |store, raw_key| {
            let mut key = prefix.to_vec();
            key.extend_from_slice(raw_key);
            store
                .read::<crate::codec::StateCodec<A::State>, _>(u32::from(u16::from_be_bytes(prefix)), &key, |state| {
                    state.map(|s| Box::new(acc_for_reads.result(s)) as Box<dyn std::any::Any>)
                })
                .map_err(|e| crate::operators::aggregate::state_error(raw_key, e))
        });
        lock(grouped.inner.graph()).readers.insert(node, reader);
        grouped
    }

    /// Makes this aggregation's result queryable as `name` while the job
    /// runs: [`StreamRuntime::query`](crate::StreamRuntime::query)`(name, &key)`
    /// reads a key's current value. Only the result of an aggregation
    /// (count, sum, min, max, avg, aggregate, reduce) not in a window can
    /// be: `build` refuses anything else, and a name used twice.
    ///
    /// ```
    /// use rocketmq_streams::prelude::*;
    ///
    /// let builder = StreamBuilder::new("word-count");
    /// builder
    ///     .source("lines", Utf8)
    ///     .flat_map(|l: String| l.split_whitespace().map(str::to_owned).collect::<Vec<_>>())
    ///     .key_by(|w: &String| w.clone())
    ///     .count()
    ///     .queryable("word-counts")
    ///     .sink("counts", Json::<(String, u64)>::new());
    /// assert_eq!(builder.build().unwrap().stores(), ["word-counts"]);
    /// ```
    pub fn queryable(&self, name: &str) -> GroupedStream<K, V>
    where
        V: Serialize,
    {
        let node = self.inner.node_id();
        let mut graph = lock(self.inner.graph());
        let reader = graph.readers.get(&node).cloned();
        match reader {
            _ if graph.stores.contains_key(name) => {
                graph
                    .errors
                    .push(format!("queryable({name:?}): the name is used twice"));
            }
            None => {
                let kind = graph.nodes[node].kind;
                graph.errors.push(format!(
                    "queryable({name:?}) follows {kind}, not an aggregation: only the result of count, sum, \
                     min, max, avg, aggregate or reduce (not in a window) can be queried"
                ));
            }
            Some(reader) => {
                let store = name.to_string();
                let encoded: crate::query::EncodedReader = Arc::new(move |queue_store, raw_key| {
                    let Some(value) = reader(queue_store, raw_key)? else {
                        return Ok(None);
                    };
                    let value = value.downcast::<V>().map_err(|_| {
                        StreamsError::Topology(format!("store {store}: the aggregation's result is not of this type"))
                    })?;
                    let mut buf = Vec::new();
                    crate::codec::encode_into(&mut buf, &*value, "queried value")?;
                    Ok(Some(bytes::Bytes::from(buf)))
                });
                graph.stores.insert(name.to_string(), encoded);
            }
        }
        drop(graph);
        GroupedStream {
            inner: self.inner.clone(),
            emit: self.emit,
        }
    }

    /// Combines the values of each key with `f`: the first value as it
    /// is, then `f(so_far, next)`.
    pub fn reduce<F>(&self, f: F) -> GroupedStream<K, V>
    where
        V: Serialize + DeserializeOwned,
        F: Fn(&V, &V) -> V + Send + Sync + 'static,
    {
        self.aggregate_as("Reduce", Reduce { f })
    }

    /// Runs a processor of your own on every record of this keyed stage —
    /// RocketMQ Streams' `addGraphNode`, Kafka Streams' `process` — with a
    /// store of its own (see [`KeyedProcessor`](crate::KeyedProcessor) and
    /// its example). `factory` builds one processor per queue, on the
    /// shard that owns the queue. The step's store is as exact as an
    /// aggregation's: rolled back with a failed record, checkpointed and
    /// restored with its queue, and a record already applied to the
    /// restored state never reaches the processor again (records after the
    /// last checkpoint are processed again after a restart or a move: keep
    /// side effects idempotent). `name` names the step in the topology's
    /// description.
    pub fn process<P, F>(&self, name: &str, factory: F) -> GroupedStream<K, P::Out>
    where
        P: crate::KeyedProcessor<K, V> + 'static,
        P::Out: Clone + 'static,
        F: Fn() -> P + Send + Sync + 'static,
    {
        let kind = "Process";
        self.inner.refuse_after_on_commit(kind);
        self.inner.refuse_after_window(kind);
        let stream = self.inner.then_node_named(kind, name.to_string(), move |node, next| {
            Box::new(crate::operators::process::Process {
                prefix: store_prefix(node),
                user: factory(),
                next,
                key_buf: Vec::new(),
                _v: PhantomData,
            }) as BoxProcessor<Keyed<K, V>>
        });
        GroupedStream::new(stream).emit(self.emit)
    }

    /// Groups each key's values by event-time window as well: the
    /// aggregations of the returned [`WindowStream`] keep a state per key
    /// and window, and emit [`Windowed`](crate::Windowed) results (see
    /// [`crate::window`] for the semantics). They emit as the window's
    /// [`WindowEmit`](crate::WindowEmit) says; this stream's
    /// [`emit`](Self::emit) does not apply to them.
    ///
    /// ```
    /// use std::time::Duration;
    /// use rocketmq_streams::prelude::*;
    ///
    /// let builder = StreamBuilder::new("clicks");
    /// builder
    ///     .source("clicks", Utf8)
    ///     .key_by(|page: &String| page.clone())
    ///     .window(Window::tumbling(Duration::from_secs(60)).grace(Duration::from_secs(5)))
    ///     .count()
    ///     .sink("clicks-per-minute", Json::<(Windowed<String>, u64)>::new());
    /// builder.build().unwrap();
    /// ```
    pub fn window<W: WindowSpec>(&self, spec: W) -> WindowStream<K, V, W>
    where
        K: DeserializeOwned,
    {
        self.inner.refuse_after_on_commit("Window");
        self.inner.refuse_after_window("Window");
        WindowStream::new(self.inner.clone(), spec)
    }

    /// The number of values of each key so far.
    pub fn count(&self) -> GroupedStream<K, u64> {
        self.aggregate_as("Count", Count)
    }

    /// The sum of `f(value)` per key.
    pub fn sum<N, F>(&self, f: F) -> GroupedStream<K, N>
    where
        N: Add<Output = N> + Copy + Default + Serialize + DeserializeOwned + 'static,
        F: Fn(&V) -> N + Send + Sync + 'static,
    {
        self.aggregate_as(
            "Sum",
            Sum {
                selector: f,
                _n: PhantomData,
            },
        )
    }

    /// The least `f(value)` per key.
    pub fn min<N, F>(&self, f: F) -> GroupedStream<K, N>
    where
        N: PartialOrd + Copy + Default + Serialize + DeserializeOwned + 'static,
        F: Fn(&V) -> N + Send + Sync + 'static,
    {
        self.aggregate_as(
            "Min",
            Extreme::<F, N, false> {
                selector: f,
                _n: PhantomData,
            },
        )
    }

    /// The greatest `f(value)` per key.
    pub fn max<N, F>(&self, f: F) -> GroupedStream<K, N>
    where
        N: PartialOrd + Copy + Default + Serialize + DeserializeOwned + 'static,
        F: Fn(&V) -> N + Send + Sync + 'static,
    {
        self.aggregate_as(
            "Max",
            Extreme::<F, N, true> {
                selector: f,
                _n: PhantomData,
            },
        )
    }

    /// The mean of `f(value)` per key.
    pub fn avg<F>(&self, f: F) -> GroupedStream<K, f64>
    where
        F: Fn(&V) -> f64 + Send + Sync + 'static,
    {
        self.aggregate_as("Avg", Avg { selector: f })
    }

    /// Transforms every value, keeping its key.
    pub fn map<U, F>(&self, f: F) -> GroupedStream<K, U>
    where
        U: Clone + 'static,
        F: Fn(V) -> U + Send + Sync + 'static,
    {
        GroupedStream::new(self.inner.map(move |kv: Keyed<K, V>| Keyed {
            key: kv.key,
            raw_key: kv.raw_key,
            value: f(kv.value),
        }))
        .emit(self.emit)
    }

    /// Keeps the values for which `f` returns `true`.
    pub fn filter<F>(&self, f: F) -> GroupedStream<K, V>
    where
        F: Fn(&V) -> bool + Send + Sync + 'static,
    {
        GroupedStream::new(self.inner.filter(move |kv: &Keyed<K, V>| f(&kv.value))).emit(self.emit)
    }

    /// Replaces every value with the values `f` returns, each under the same key.
    pub fn flat_map<U, I, F>(&self, f: F) -> GroupedStream<K, U>
    where
        U: Clone + 'static,
        I: IntoIterator<Item = U>,
        I::IntoIter: 'static,
        F: Fn(V) -> I + Send + Sync + 'static,
    {
        let f = Arc::new(f);
        GroupedStream::new(self.inner.flat_map(move |kv: Keyed<K, V>| {
            let (key, raw_key) = (kv.key, kv.raw_key);
            f(kv.value).into_iter().map(move |value| Keyed {
                key: key.clone(),
                raw_key: raw_key.clone(),
                value,
            })
        }))
        .emit(self.emit)
    }

    /// The stream of `(key, value)` pairs (for aggregations: every update).
    pub fn to_rstream(&self) -> RStream<(K, V)> {
        self.inner.then("ToRStream", |next: BoxProcessor<(K, V)>| {
            Box::new(crate::operators::map::Map {
                f: Arc::new(|kv: Keyed<K, V>| (kv.key, kv.value)),
                next,
            }) as BoxProcessor<Keyed<K, V>>
        })
    }

    /// Writes every `(key, value)` to `topic` with `serializer`; ends the
    /// stream. The key is each message's key (a string key as it is, any
    /// other as its JSON text), so every result of a key goes to one queue
    /// of `topic`, by the key's hash (see [`Produced`](crate::Produced)).
    pub fn sink<S: Serializer<(K, V)>>(&self, topic: &str, serializer: S)
    where
        K: Serialize,
    {
        self.to_rstream().sink_with(
            topic,
            serializer,
            crate::Produced::new().key(|(k, _): &(K, V)| key_text(k)),
        );
    }

    /// Prints every `(key, value)`; ends the stream.
    pub fn print(&self)
    where
        K: Debug,
        V: Debug,
    {
        self.to_rstream().print();
    }
}

/// The prefix of node `node`'s keys in a queue's store: its id, two bytes
/// (a topology has far fewer nodes than the 65,534 this leaves before the
/// high-water marks' prefix).
pub(crate) fn store_prefix(node: usize) -> [u8; 2] {
    u16::try_from(node).unwrap_or(u16::MAX - 1).to_be_bytes()
}

/// A key as message-key text: a string as it is, anything else as JSON.
fn key_text<K: Serialize>(key: &K) -> String {
    match serde_json::to_value(key) {
        Ok(serde_json::Value::String(s)) => s,
        Ok(other) => other.to_string(),
        Err(e) => format!("<key: {e}>"),
    }
}
