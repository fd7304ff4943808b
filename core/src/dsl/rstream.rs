//! `RStream<T>`: a stream of values of `T`, and its stateless operators.

use std::fmt::Debug;
use std::sync::{Arc, Mutex};

use super::builder::{lock, Graph, KeyedDef, SharedGraph};
use crate::operators::{
    branch::{Branch, Predicate},
    filter::Filter,
    flat_map::FlatMap,
    foreach::Foreach,
    foreach::Print,
    map::Map,
    peek::Peek,
    select_timestamp::SelectTimestamp,
    sink::SinkOp,
    tee::Tee,
};
use serde::de::DeserializeOwned;
use serde::Serialize;

use super::grouped::GroupedStream;
use super::join::JoinBuilder;
use crate::join::{Inner, Left, Outer};
use crate::message::Produced;
use crate::operators::key_by::KeyBy;
use crate::operators::shuffle_source::{KeyedEntry, TypedKeyedEntry};
use crate::processor::{BoxProcessor, Discard, Keyed};
use crate::serde::Serializer;

type Factory<T> = Arc<dyn Fn() -> BoxProcessor<T> + Send + Sync>;

/// The consumers registered on one stream: how to build what comes after it.
pub(crate) struct Slot<T> {
    consumers: Mutex<Vec<Factory<T>>>,
}

impl<T> Default for Slot<T> {
    fn default() -> Self {
        Self {
            consumers: Mutex::new(Vec::new()),
        }
    }
}

impl<T: Clone + 'static> Slot<T> {
    fn push(&self, factory: Factory<T>) {
        self.consumers.lock().unwrap_or_else(|p| p.into_inner()).push(factory);
    }

    /// Builds the processor(s) consuming this stream: nothing, one, or a
    /// tee to several.
    pub(crate) fn build(&self) -> BoxProcessor<T> {
        let consumers = self.consumers.lock().unwrap_or_else(|p| p.into_inner());
        match consumers.len() {
            0 => Box::new(Discard),
            1 => consumers[0](),
            _ => Box::new(Tee {
                next: consumers.iter().map(|f| f()).collect(),
            }),
        }
    }
}

/// A stream of values of type `T`.
///
/// Each operator returns a new stream (or ends this one); a stream may feed
/// several operators, each of which then sees every record (values are
/// cloned for all but the last, hence `T: Clone`).
pub struct RStream<T> {
    graph: SharedGraph,
    slot: Arc<Slot<T>>,
    node: usize,
}

impl<T> Clone for RStream<T> {
    /// Another handle to the same stream.
    fn clone(&self) -> Self {
        Self {
            graph: self.graph.clone(),
            slot: self.slot.clone(),
            node: self.node,
        }
    }
}

impl<T: Clone + 'static> RStream<T> {
    pub(crate) fn new(graph: SharedGraph, slot: Arc<Slot<T>>, node: usize) -> Self {
        Self { graph, slot, node }
    }

    /// The graph this stream is part of.
    pub(crate) fn graph(&self) -> &SharedGraph {
        &self.graph
    }

    /// The graph node this stream comes out of.
    pub(crate) fn node_id(&self) -> usize {
        self.node
    }

    /// Joins this stream (the left side) with `other` (the right side):
    /// pairs of records whose keys are equal and, once windowed, whose
    /// event times the window admits. Then `.on(left_key, right_key)`,
    /// optionally `.within(window)` or `.retain(retention)`, and
    /// `.apply(joiner)`. See [`crate::join`] for the semantics.
    ///
    /// ```
    /// use std::time::Duration;
    /// use rocketmq_streams::prelude::*;
    ///
    /// let builder = StreamBuilder::new("clicks-with-views");
    /// let views = builder.source("views", Json::<(String, u64)>::new());
    /// let clicks = builder.source("clicks", Json::<(String, u64)>::new());
    /// views
    ///     .join(&clicks)
    ///     .on(|v| v.0.clone(), |c| c.0.clone())
    ///     .within(JoinWindows::of(Duration::from_secs(10)))
    ///     .apply(|v, c| (v.0.clone(), v.1, c.1))
    ///     .sink("clicked-views", Json::<(String, u64, u64)>::new());
    /// builder.build().unwrap();
    /// ```
    pub fn join<R: Clone + 'static>(&self, other: &RStream<R>) -> JoinBuilder<T, R, Inner> {
        JoinBuilder::new(self.clone(), other.clone())
    }

    /// A left join: as [`join`](Self::join), and a left record that joins
    /// nothing is emitted with `None` once its window has closed (never
    /// on arrival).
    pub fn left_join<R: Clone + 'static>(&self, other: &RStream<R>) -> JoinBuilder<T, R, Left> {
        JoinBuilder::new(self.clone(), other.clone())
    }

    /// An outer join: as [`left_join`](Self::left_join), for records of
    /// either side.
    pub fn outer_join<R: Clone + 'static>(&self, other: &RStream<R>) -> JoinBuilder<T, R, Outer> {
        JoinBuilder::new(self.clone(), other.clone())
    }

    /// Records a build error if this stream comes after an
    /// `Emit::OnCommit` aggregation: `kind` (a `key_by` or an aggregation)
    /// would see results whose number depends on when commits happen.
    pub(crate) fn refuse_after_on_commit(&self, kind: &str) {
        let mut graph = lock(&self.graph);
        let mut node = Some(self.node);
        while let Some(n) = node {
            if graph.on_commit.contains(&n) {
                let message = format!(
                    "{kind} after the Emit::OnCommit aggregation {}[{n}]: its results depend on when \
                     commits happen, so a replay could not be recognised; only stateless operators, \
                     sinks, foreach and print may follow it",
                    graph.nodes[n].kind
                );
                graph.errors.push(message);
                return;
            }
            node = graph.nodes[n].parent;
        }
    }

    /// Records a build error if this stream follows a windowed
    /// aggregation in the same keyed stage (no `key_by` in between): `kind`
    /// (an aggregation or a window) would group windowed results by their
    /// key alone.
    pub(crate) fn refuse_after_window(&self, kind: &str) {
        let mut graph = lock(&self.graph);
        let mut node = Some(self.node);
        while let Some(n) = node {
            if graph.nodes[n].kind == "KeyBy" {
                return;
            }
            if graph.windowed.contains(&n) {
                let message = format!(
                    "{kind} after the windowed aggregation {}[{n}] in the same keyed stage: it would group \
                     the windows' results by key alone; re-key them first (to_rstream().key_by(..))",
                    graph.nodes[n].kind
                );
                graph.errors.push(message);
                return;
            }
            node = graph.nodes[n].parent;
        }
    }

    /// Marks this stream's node as a windowed aggregation.
    pub(crate) fn mark_windowed(&self) {
        lock(&self.graph).windowed.push(self.node);
    }

    /// Marks this stream's node as an `Emit::OnCommit` aggregation.
    pub(crate) fn mark_on_commit(&self) {
        lock(&self.graph).on_commit.push(self.node);
    }

    pub(crate) fn node(&self, kind: &'static str, detail: String, terminal: bool) -> usize {
        let mut graph = lock(&self.graph);
        if terminal {
            graph.terminals += 1;
        }
        graph.add_node(kind, detail, Some(self.node))
    }

    pub(crate) fn then<U: Clone + 'static>(
        &self,
        kind: &'static str,
        make: impl Fn(BoxProcessor<U>) -> BoxProcessor<T> + Send + Sync + 'static,
    ) -> RStream<U> {
        self.then_node(kind, move |_, next| make(next))
    }

    /// As `then`, and `make` also gets the new node's id.
    pub(crate) fn then_node<U: Clone + 'static>(
        &self,
        kind: &'static str,
        make: impl Fn(usize, BoxProcessor<U>) -> BoxProcessor<T> + Send + Sync + 'static,
    ) -> RStream<U> {
        self.then_node_named(kind, String::new(), make)
    }

    /// As [`then_node`](Self::then_node), with `detail` (a user's name for
    /// the step) in the topology's description.
    pub(crate) fn then_node_named<U: Clone + 'static>(
        &self,
        kind: &'static str,
        detail: String,
        make: impl Fn(usize, BoxProcessor<U>) -> BoxProcessor<T> + Send + Sync + 'static,
    ) -> RStream<U> {
        let node = self.node(kind, detail, false);
        let slot: Arc<Slot<U>> = Arc::default();
        let next = slot.clone();
        self.slot.push(Arc::new(move || make(node, next.build())));
        RStream::new(self.graph.clone(), slot, node)
    }

    /// Groups the stream by the key `f` selects: every record is written to
    /// the job's shuffle topic (`<job_id>-shuffle`) in the queue of its
    /// key's stable hash, so all records of a key meet on one shard, where
    /// the returned stream's keyed operators (and their state) run.
    ///
    /// Keys and values travel as MessagePack (any serde type that JSON
    /// carries), with their event time and origin, framed: the records of
    /// one input batch bound for one shuffle queue share a message (see
    /// `rocketmq_streams_shuffle` for the format).
    pub fn key_by<K, F>(&self, f: F) -> GroupedStream<K, T>
    where
        K: Serialize + DeserializeOwned + Clone + 'static,
        T: Serialize + DeserializeOwned,
        F: Fn(&T) -> K + Send + Sync + 'static,
    {
        let slot: Arc<Slot<Keyed<K, T>>> = Arc::default();
        let chain = slot.clone();
        let (node, _) = self.shuffle_edge(f, move |_| {
            let chain = chain.clone();
            KeyedDef::Chain(Arc::new(move || {
                Box::new(TypedKeyedEntry { next: chain.build() }) as Box<dyn KeyedEntry>
            }))
        });
        GroupedStream::new(RStream::new(self.graph.clone(), slot, node))
    }

    /// The edge to the shuffle topic: a `KeyBy` node writing every record
    /// under the key `f` selects; `keyed` gets the node's shuffle number
    /// and says where its records go in a shuffle queue's pipeline.
    /// Returns the graph node and the shuffle number.
    pub(crate) fn shuffle_edge<K, F>(&self, f: F, keyed: impl FnOnce(u16) -> KeyedDef) -> (usize, u16)
    where
        K: Serialize + 'static,
        T: Serialize,
        F: Fn(&T) -> K + Send + Sync + 'static,
    {
        self.refuse_after_on_commit("KeyBy");
        let selector: Arc<dyn Fn(&T) -> K + Send + Sync> = Arc::new(f);
        let (node, index) = {
            let mut graph = lock(&self.graph);
            let index = u16::try_from(graph.keyed.len()).unwrap_or(u16::MAX);
            let node = graph.add_node("KeyBy", format!("shuffle node {index}"), Some(self.node));
            graph.keyed.push(keyed(index));
            (node, index)
        };
        self.slot.push(Arc::new(move || {
            Box::new(KeyBy {
                node: index,
                selector: selector.clone(),
            }) as BoxProcessor<T>
        }));
        (node, index)
    }

    /// Transforms every value with `f`.
    pub fn map<U, F>(&self, f: F) -> RStream<U>
    where
        U: Clone + 'static,
        F: Fn(T) -> U + Send + Sync + 'static,
    {
        let f: Arc<dyn Fn(T) -> U + Send + Sync> = Arc::new(f);
        self.then("Map", move |next| {
            Box::new(Map { f: f.clone(), next }) as BoxProcessor<T>
        })
    }

    /// Keeps the values for which `f` returns `true`.
    pub fn filter<F>(&self, f: F) -> RStream<T>
    where
        F: Fn(&T) -> bool + Send + Sync + 'static,
    {
        let f: Arc<dyn Fn(&T) -> bool + Send + Sync> = Arc::new(f);
        self.then("Filter", move |next| {
            Box::new(Filter { f: f.clone(), next }) as BoxProcessor<T>
        })
    }

    /// Replaces every value with the values `f` returns (zero or more).
    ///
    /// **Before a `key_by`, `f` must be deterministic:** the same value
    /// must yield the same outputs in the same order every time. Exact
    /// state recognises a record replayed after a crash by its origin
    /// (source queue, offset, and the output's index among those of its
    /// record); an `f` whose outputs change order or number between runs
    /// (iterating a `HashMap`, reading the clock, random sampling) can have
    /// a replayed output counted twice or missed. Sort what comes from an
    /// unordered collection.
    pub fn flat_map<U, I, F>(&self, f: F) -> RStream<U>
    where
        U: Clone + 'static,
        I: IntoIterator<Item = U>,
        I::IntoIter: 'static,
        F: Fn(T) -> I + Send + Sync + 'static,
    {
        let f = Arc::new(f);
        self.then("FlatMap", move |next| {
            Box::new(FlatMap {
                f: f.clone(),
                next,
                input: std::marker::PhantomData,
            }) as BoxProcessor<T>
        })
    }

    /// Calls `f` on every value and passes the record on unchanged (a
    /// [`foreach`](Self::foreach) that does not end the stream): for
    /// logging or metrics along the way.
    ///
    /// `f` runs again for records replayed after a failure
    /// (at-least-once), as every side effect of a stream does.
    pub fn peek<F>(&self, f: F) -> RStream<T>
    where
        F: Fn(&T) + Send + Sync + 'static,
    {
        let f: Arc<dyn Fn(&T) + Send + Sync> = Arc::new(f);
        self.then("Peek", move |next| {
            Box::new(Peek { f: f.clone(), next }) as BoxProcessor<T>
        })
    }

    /// One stream of the records of this stream and of `other`, in the
    /// order each arrives (no order between the two).
    ///
    /// Both must come from the same [`StreamBuilder`](crate::StreamBuilder):
    /// `build` refuses a merge across builders (both builders do).
    ///
    /// ```
    /// use rocketmq_streams::prelude::*;
    ///
    /// let builder = StreamBuilder::new("all-orders");
    /// let web = builder.source("web-orders", Utf8);
    /// let shop = builder.source("shop-orders", Utf8);
    /// web.merge(&shop).sink("orders", Utf8);
    /// builder.build().unwrap();
    /// ```
    pub fn merge(&self, other: &RStream<T>) -> RStream<T> {
        let slot: Arc<Slot<T>> = Arc::default();
        if !Arc::ptr_eq(&self.graph, &other.graph) {
            let message = "Merge: the two streams come from different StreamBuilders".to_string();
            lock(&other.graph).errors.push(message.clone());
            lock(&self.graph).errors.push(message);
            let node = self.node("Merge", "refused".into(), false);
            return RStream::new(self.graph.clone(), slot, node);
        }
        let node = self.node("Merge", format!("with node {}", other.node), false);
        {
            // What the ancestors of `other` forbid downstream, the merged
            // stream forbids too (the checks walk first parents only).
            let mut graph = lock(&self.graph);
            if first_marked(&graph, other.node, |g, n| g.on_commit.contains(&n), false).is_some() {
                graph.on_commit.push(node);
            }
            if first_marked(&graph, other.node, |g, n| g.windowed.contains(&n), true).is_some() {
                graph.windowed.push(node);
            }
        }
        for parent in [&self.slot, &other.slot] {
            let next = slot.clone();
            parent.push(Arc::new(move || next.build()));
        }
        RStream::new(self.graph.clone(), slot, node)
    }

    /// Splits the stream by predicates: `.branch(p)` for each, then
    /// [`default_branch`](Split::default_branch) or
    /// [`no_default_branch`](Split::no_default_branch). Each record goes to
    /// the first branch whose predicate accepts it (Kafka Streams'
    /// `split()`).
    ///
    /// ```
    /// use rocketmq_streams::prelude::*;
    ///
    /// let builder = StreamBuilder::new("triage");
    /// let [errors, warnings, rest] = builder
    ///     .source("logs", Utf8)
    ///     .split()
    ///     .branch(|l: &String| l.starts_with("ERROR"))
    ///     .branch(|l: &String| l.starts_with("WARN"))
    ///     .default_branch()
    ///     .try_into()
    ///     .ok()
    ///     .unwrap();
    /// errors.sink("errors", Utf8);
    /// warnings.sink("warnings", Utf8);
    /// rest.sink("other", Utf8);
    /// builder.build().unwrap();
    /// ```
    pub fn split(&self) -> Split<T> {
        Split {
            stream: self.clone(),
            predicates: Vec::new(),
        }
    }

    /// Sets each record's event time to `f(&value)` (ms since the epoch);
    /// the default event time is the message's born timestamp (when its
    /// producer made it).
    pub fn select_timestamp<F>(&self, f: F) -> RStream<T>
    where
        F: Fn(&T) -> i64 + Send + Sync + 'static,
    {
        let f: Arc<dyn Fn(&T) -> i64 + Send + Sync> = Arc::new(f);
        self.then("SelectTimestamp", move |next| {
            Box::new(SelectTimestamp { f: f.clone(), next }) as BoxProcessor<T>
        })
    }

    /// Processing time: each record's event time becomes the wall-clock
    /// time at which this step sees it (Kafka Streams'
    /// `WallclockTimestampExtractor`). Windows then group records by when
    /// they were processed. A record processed again after a failure
    /// (at-least-once replay) gets a new time and may land in another
    /// window: unlike event time, processing-time windows are not
    /// reproducible.
    pub fn with_processing_time(&self) -> RStream<T> {
        self.select_timestamp(|_| crate::operators::stream_time::wall_clock_ms())
    }

    /// Calls `f` on every value; ends the stream.
    pub fn foreach<F>(&self, f: F)
    where
        F: Fn(&T) + Send + Sync + 'static,
    {
        self.node("Foreach", String::new(), true);
        let f: Arc<dyn Fn(&T) + Send + Sync> = Arc::new(f);
        self.slot
            .push(Arc::new(move || Box::new(Foreach { f: f.clone() }) as BoxProcessor<T>));
    }

    /// Prints every value (`Debug`) to standard output; ends the stream.
    pub fn print(&self)
    where
        T: Debug,
    {
        self.node("Print", String::new(), true);
        self.slot.push(Arc::new(|| {
            Box::new(Print { prefix: Arc::from("") }) as BoxProcessor<T>
        }));
    }

    /// Writes every value to `topic`, encoded with `serializer`; ends the
    /// stream. Each message carries the record's event time as the property
    /// [`EVENT_TIME_PROPERTY`](crate::EVENT_TIME_PROPERTY); a record goes to
    /// the queue of the same index as the queue it came from.
    pub fn sink<S>(&self, topic: &str, serializer: S)
    where
        S: Serializer<T>,
    {
        self.sink_with(topic, serializer, Produced::new());
    }

    /// As [`sink`](Self::sink), each message with the key, tag and
    /// properties `produced` takes from its value; a keyed message goes to
    /// the queue of its key's hash (see [`Produced`]).
    pub fn sink_with<S>(&self, topic: &str, serializer: S, produced: Produced<T>)
    where
        S: Serializer<T>,
    {
        let serializer: Arc<dyn Serializer<T>> = Arc::new(serializer);
        let id = {
            let mut graph = lock(&self.graph);
            for (name, _) in &produced.properties {
                if rocketmq_streams_io::is_system_property(name) || name == crate::EVENT_TIME_PROPERTY {
                    graph.errors.push(format!(
                        "sink to {topic}: the property {name:?} is RocketMQ's or the engine's own; name it otherwise"
                    ));
                }
            }
            graph.sink_topics.push(topic.to_string());
            graph.sink_topics.len() - 1
        };
        self.node("Sink", format!("topic={topic} ({})", serializer.name()), true);
        self.slot.push(Arc::new(move || {
            Box::new(SinkOp {
                id,
                serializer: serializer.clone(),
                produced: produced.clone(),
            }) as BoxProcessor<T>
        }));
    }
}

/// A stream being split by [`RStream::split`]: add branches, then end it.
#[must_use = "a split does nothing until default_branch() or no_default_branch()"]
pub struct Split<T> {
    stream: RStream<T>,
    predicates: Vec<Predicate<T>>,
}

impl<T: Clone + 'static> Split<T> {
    /// Adds a branch: the records `f` accepts that no earlier branch took.
    pub fn branch<F>(mut self, f: F) -> Self
    where
        F: Fn(&T) -> bool + Send + Sync + 'static,
    {
        self.predicates.push(Arc::new(f));
        self
    }

    /// The branches' streams in the order they were added, and last the
    /// stream of records no branch took.
    pub fn default_branch(self) -> Vec<RStream<T>> {
        self.finish(true)
    }

    /// The branches' streams in the order they were added; records no
    /// branch takes are dropped (as a filter drops them).
    pub fn no_default_branch(self) -> Vec<RStream<T>> {
        self.finish(false)
    }

    fn finish(self, default: bool) -> Vec<RStream<T>> {
        let n = self.predicates.len() + usize::from(default);
        let split = self.stream.node(
            "Split",
            format!(
                "{} branches{}",
                self.predicates.len(),
                if default { " and a default" } else { "" }
            ),
            false,
        );
        let slots: Vec<Arc<Slot<T>>> = (0..n).map(|_| Arc::default()).collect();
        let predicates = Arc::new(self.predicates);
        let next = slots.clone();
        self.stream.slot.push(Arc::new(move || {
            Box::new(Branch {
                predicates: predicates.clone(),
                next: next.iter().map(|s| s.build()).collect(),
            }) as BoxProcessor<T>
        }));
        let graph = self.stream.graph.clone();
        slots
            .into_iter()
            .enumerate()
            .map(|(i, slot)| {
                let node = lock(&graph).add_node("Branch", format!("{i}"), Some(split));
                RStream::new(graph.clone(), slot, node)
            })
            .collect()
    }
}

/// The first node from `node` up its first parents that `marked` holds,
/// stopping at a `KeyBy` when `stage` (the keyed stage only).
fn first_marked(graph: &Graph, node: usize, marked: impl Fn(&Graph, usize) -> bool, stage: bool) -> Option<usize> {
    let mut at = Some(node);
    while let Some(n) = at {
        if stage && graph.nodes[n].kind == "KeyBy" {
            return None;
        }
        if marked(graph, n) {
            return Some(n);
        }
        at = graph.nodes[n].parent;
    }
    None
}
