//! `StreamBuilder`: where a job's topology starts.

use std::sync::{Arc, Mutex};

use super::rstream::{RStream, Slot};
use rocketmq_streams_io::{QueueId, Record as InMessage};

use crate::error::{Result, StreamsError};
use crate::message::Message;
use crate::operators::shuffle_source::{KeyedEntry, ShuffleSource};
use crate::processor::{BoxProcessor, Context, Record};
use crate::serde::Deserializer;
use crate::topology::{guarded, NodeInfo, OnFailure, SourceDef, SourcePipeline, Topology};

/// Operators a topology may have: node ids below `0xFF00`.
const MAX_NODES: usize = 0xFF00;
/// The graph under construction, shared by the builder and its streams.
/// Only touched while the DSL is written, never on the record path.
#[derive(Default)]
pub(crate) struct Graph {
    pub(crate) nodes: Vec<NodeInfo>,
    pub(crate) sources: Vec<SourceDef>,
    pub(crate) sink_topics: Vec<String>,
    pub(crate) terminals: usize,
    /// The chains after each `key_by`, indexed by its shuffle node number.
    pub(crate) keyed: Vec<KeyedDef>,
    /// Nodes of joins (they keep a stream time, as windows do).
    pub(crate) joins: Vec<usize>,
    /// Nodes of `Emit::OnCommit` aggregations.
    pub(crate) on_commit: Vec<usize>,
    /// Nodes of windowed aggregations: no aggregation may follow one in
    /// its keyed stage (it would group by the key without its window).
    pub(crate) windowed: Vec<usize>,
    /// What `build` will refuse the graph for, found while it was written.
    pub(crate) errors: Vec<String>,
    /// How to read each (non-windowed) aggregation's result, by node.
    pub(crate) readers: std::collections::HashMap<usize, crate::query::StoreReader>,
    /// The queryable stores, by name.
    pub(crate) stores: std::collections::BTreeMap<String, crate::query::EncodedReader>,
}

pub(crate) type KeyedFactory = Arc<dyn Fn() -> Box<dyn KeyedEntry> + Send + Sync>;

/// Where the records of a `key_by` node go in a shuffle queue's pipeline.
#[derive(Clone)]
pub(crate) enum KeyedDef {
    /// A chain of their own, built by the factory.
    Chain(KeyedFactory),
    /// The chain of an earlier node (the right side of a join goes to the
    /// join its left side built).
    SharedWith(usize),
}

impl Graph {
    pub(crate) fn add_node(&mut self, kind: &'static str, detail: String, parent: Option<usize>) -> usize {
        self.nodes.push(NodeInfo { kind, detail, parent });
        self.nodes.len() - 1
    }
}

pub(crate) type SharedGraph = Arc<Mutex<Graph>>;

pub(crate) fn lock(graph: &SharedGraph) -> std::sync::MutexGuard<'_, Graph> {
    // Build time only; a poisoned lock means a panic in another DSL call,
    // whose graph is still consistent for our purposes.
    graph.lock().unwrap_or_else(|p| p.into_inner())
}

/// Starts a job's topology: declare sources, chain operators, then
/// [`build`](StreamBuilder::build).
///
/// ```
/// use rocketmq_streams::prelude::*;
///
/// let builder = StreamBuilder::new("uppercase");
/// builder
///     .source("input", Utf8)
///     .map(|line: String| line.to_uppercase())
///     .sink("output", Utf8);
/// let topology = builder.build().expect("valid topology");
/// assert!(topology.describe().contains("Sink"));
/// ```
pub struct StreamBuilder {
    job_id: String,
    graph: SharedGraph,
}

impl StreamBuilder {
    /// A builder for the job `job_id`. The job id names the consumer group
    /// and prefixes the job's own topics (`<job_id>-dlq`, ...).
    pub fn new(job_id: impl Into<String>) -> Self {
        Self {
            job_id: job_id.into(),
            graph: Arc::default(),
        }
    }

    /// Reads `topic`, decoding every message body with `deserializer`.
    pub fn source<T, D>(&self, topic: &str, deserializer: D) -> RStream<T>
    where
        T: Clone + 'static,
        D: Deserializer<T>,
    {
        self.typed_source(topic, None, deserializer)
    }

    /// Reads the messages of `topic` whose tag the expression `tags`
    /// names (RocketMQ's syntax: `"TagA || TagB"`; `"*"` is every
    /// message), decoding every body with `deserializer`. The broker
    /// filters: other messages never reach the job.
    ///
    /// A topic's committed offset only moves past the last message that
    /// matched: while the newest messages of a queue are ones filtered
    /// out, [`JobMetrics::lag`](crate::JobMetrics::lag) counts them.
    pub fn source_with_tags<T, D>(&self, topic: &str, tags: &str, deserializer: D) -> RStream<T>
    where
        T: Clone + 'static,
        D: Deserializer<T>,
    {
        self.typed_source(topic, Some(tags), deserializer)
    }

    /// Reads `topic` as [`Message`]s: each body decoded with
    /// `deserializer`, with the message's keys, tag, user properties,
    /// born and store times, queue and offset.
    ///
    /// ```
    /// use rocketmq_streams::prelude::*;
    ///
    /// let builder = StreamBuilder::new("audit");
    /// builder
    ///     .source_messages("orders", Utf8)
    ///     .filter(|m: &Message<String>| m.property("channel") == Some("web"))
    ///     .map(|m: Message<String>| format!("{:?} {}", m.keys, m.value))
    ///     .sink("web-orders", Utf8);
    /// builder.build().unwrap();
    /// ```
    pub fn source_messages<T, D>(&self, topic: &str, deserializer: D) -> RStream<Message<T>>
    where
        T: Clone + 'static,
        D: Deserializer<T>,
    {
        self.message_source(topic, None, deserializer)
    }

    /// As [`source_messages`](Self::source_messages), for the messages whose
    /// tag `tags` names (as [`source_with_tags`](Self::source_with_tags)).
    pub fn source_messages_with_tags<T, D>(&self, topic: &str, tags: &str, deserializer: D) -> RStream<Message<T>>
    where
        T: Clone + 'static,
        D: Deserializer<T>,
    {
        self.message_source(topic, Some(tags), deserializer)
    }

    fn typed_source<T, D>(&self, topic: &str, tags: Option<&str>, deserializer: D) -> RStream<T>
    where
        T: Clone + 'static,
        D: Deserializer<T>,
    {
        let de: Arc<dyn Deserializer<T>> = Arc::new(deserializer);
        let name = de.name();
        self.add_source(topic, tags, false, name, move |chain: &Arc<Slot<T>>| {
            Box::new(DecodingSource {
                de: de.clone(),
                wrap: |value, _, _| value,
                next: chain.build(),
            }) as Box<dyn SourcePipeline>
        })
    }

    fn message_source<T, D>(&self, topic: &str, tags: Option<&str>, deserializer: D) -> RStream<Message<T>>
    where
        T: Clone + 'static,
        D: Deserializer<T>,
    {
        let de: Arc<dyn Deserializer<T>> = Arc::new(deserializer);
        let name = de.name();
        self.add_source(topic, tags, true, name, move |chain: &Arc<Slot<Message<T>>>| {
            Box::new(DecodingSource {
                de: de.clone(),
                wrap: with_metadata,
                next: chain.build(),
            }) as Box<dyn SourcePipeline>
        })
    }

    /// Declares a source of `topic` whose pipeline `make` builds in front
    /// of the returned stream's consumers.
    fn add_source<T: Clone + 'static>(
        &self,
        topic: &str,
        tags: Option<&str>,
        metadata: bool,
        decoder: &str,
        make: impl Fn(&Arc<Slot<T>>) -> Box<dyn SourcePipeline> + Send + Sync + 'static,
    ) -> RStream<T> {
        let slot: Arc<Slot<T>> = Arc::default();
        let mut graph = lock(&self.graph);
        let filter = tags.map_or(String::new(), |t| format!(", tags {t}"));
        let node = graph.add_node("Source", format!("topic={topic} ({decoder}{filter})"), None);
        let chain = slot.clone();
        graph.sources.push(SourceDef {
            topic: topic.to_string(),
            tags: tags.map(str::to_string),
            metadata,
            factory: Arc::new(move || make(&chain)),
        });
        drop(graph);
        RStream::new(self.graph.clone(), slot, node)
    }

    /// Validates the graph and lowers it to a [`Topology`].
    ///
    /// # Errors
    ///
    /// [`StreamsError::Topology`] when the job id is empty or not usable in a
    /// topic name, there is no source, no stream ends in a sink, `foreach` or
    /// `print`, a topic name is one RocketMQ would reject, or two sources
    /// read the same topic (the job's shuffle topic `<job_id>-shuffle`
    /// included), or a `key_by` or an aggregation follows an
    /// [`Emit::OnCommit`](crate::Emit::OnCommit) aggregation, or it has
    /// more than 65,279 operators.
    pub fn build(&self) -> Result<Topology> {
        if self.job_id.is_empty() {
            return Err(StreamsError::Topology("the job id is empty".into()));
        }
        rocketmq_streams_io::validate_topic_name(&format!("{}-dlq", self.job_id)).map_err(|e| {
            StreamsError::Topology(format!(
                "job id {:?} cannot prefix topic names: {}",
                self.job_id,
                e.message()
            ))
        })?;
        let graph = lock(&self.graph);
        if let Some(error) = graph.errors.first() {
            return Err(StreamsError::Topology(error.clone()));
        }
        let mut sources = graph.sources.clone();
        let shuffle_topic = (!graph.keyed.is_empty()).then(|| format!("{}-shuffle", self.job_id));
        if let Some(topic) = &shuffle_topic {
            let keyed = graph.keyed.clone();
            for (i, def) in keyed.iter().enumerate() {
                if let KeyedDef::SharedWith(node) = def {
                    if *node >= i || !matches!(keyed[*node], KeyedDef::Chain(_)) {
                        return Err(StreamsError::Topology(format!(
                            "key_by {i} shares the chain of key_by {node}, which is not an earlier chain"
                        )));
                    }
                }
            }
            sources.push(SourceDef {
                topic: topic.clone(),
                tags: None,
                metadata: false,
                factory: Arc::new(move || {
                    let mut entries = Vec::new();
                    let mut route: Vec<usize> = Vec::with_capacity(keyed.len());
                    for def in keyed.iter() {
                        match def {
                            KeyedDef::Chain(factory) => {
                                route.push(entries.len());
                                entries.push(factory());
                            }
                            // Checked above: an earlier chain of this graph.
                            KeyedDef::SharedWith(node) => route.push(route.get(*node).copied().unwrap_or(0)),
                        }
                    }
                    Box::new(ShuffleSource::new(entries, route)) as Box<dyn SourcePipeline>
                }),
            });
        }
        if graph.sources.is_empty() {
            return Err(StreamsError::Topology("the topology has no source".into()));
        }
        // A stateful operator's node id prefixes its store keys; ids from
        // 0xFF00 on are the engine's own (the shuffle's high-water marks).
        if graph.nodes.len() >= MAX_NODES {
            return Err(StreamsError::Topology(format!(
                "{} operators; a topology has at most {MAX_NODES}",
                graph.nodes.len()
            )));
        }
        if graph.terminals == 0 {
            return Err(StreamsError::Topology(
                "no stream ends in a sink, foreach or print: the job would compute nothing".into(),
            ));
        }
        let mut seen = std::collections::HashSet::new();
        for topic in sources.iter().map(|s| &s.topic).chain(graph.sink_topics.iter()) {
            rocketmq_streams_io::validate_topic_name(topic)
                .map_err(|e| StreamsError::Topology(e.message().to_string()))?;
        }
        for s in &sources {
            if !seen.insert(&s.topic) {
                return Err(StreamsError::Topology(format!("topic {} is a source twice", s.topic)));
            }
        }
        Ok(Topology {
            job_id: self.job_id.clone(),
            nodes: graph.nodes.clone(),
            sources,
            sink_topics: graph.sink_topics.clone(),
            shuffle_topic,
            stores: Arc::new(graph.stores.clone()),
            windowed: graph
                .windowed
                .iter()
                .chain(&graph.joins)
                .filter_map(|&n| u16::try_from(n).ok())
                .collect(),
        })
    }
}

/// A source chain: decodes each message body as `T`, makes the record's
/// value of it (`wrap`: the value itself, or a [`Message`] with the
/// message's metadata) and passes it on.
struct DecodingSource<T, U> {
    de: Arc<dyn Deserializer<T>>,
    wrap: fn(T, &QueueId, &InMessage) -> U,
    next: BoxProcessor<U>,
}

impl<T: 'static, U: 'static> SourcePipeline for DecodingSource<T, U> {
    fn process(
        &mut self,
        queue: &QueueId,
        message: &InMessage,
        ctx: &mut Context,
        failed: &mut OnFailure<'_>,
    ) -> Result<(), StreamsError> {
        let body = &message.body;
        let outcome = guarded(ctx, |ctx| {
            let value = (self.wrap)(self.de.deserialize(body)?, queue, message);
            self.next.process(
                Record {
                    value,
                    timestamp: message.born_timestamp,
                },
                ctx,
            )
        });
        match outcome {
            Ok(()) => Ok(()),
            Err(e) => failed(body, None, e),
        }
    }
}

/// A decoded value with the metadata of the message it came in.
fn with_metadata<T>(value: T, queue: &QueueId, message: &InMessage) -> Message<T> {
    Message {
        value,
        keys: message.keys.clone(),
        tags: message.tags.clone(),
        properties: message.properties.clone(),
        born_timestamp: message.born_timestamp,
        store_timestamp: message.store_timestamp,
        queue: queue.clone(),
        offset: message.offset,
    }
}
