//! The logical graph a `StreamBuilder` lowers to, and how a record enters it.

use std::fmt;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Arc;

use bytes::Bytes;

use rocketmq_streams_io::{QueueId, Record};

use crate::error::StreamsError;
use crate::processor::Context;

/// One named node of the logical graph.
#[derive(Debug, Clone)]
pub(crate) struct NodeInfo {
    pub(crate) kind: &'static str,
    pub(crate) detail: String,
    pub(crate) parent: Option<usize>,
}

/// Where records enter: a source topic and how to build its chain.
#[derive(Clone)]
pub(crate) struct SourceDef {
    pub(crate) topic: String,
    /// The tag expression the source subscribes with (`None`: every tag).
    pub(crate) tags: Option<String>,
    /// The chain reads the messages' keys, tags and properties.
    pub(crate) metadata: bool,
    pub(crate) factory: Arc<dyn Fn() -> Box<dyn SourcePipeline> + Send + Sync>,
}

/// What a pipeline does with a record that failed (rolled back already):
/// the error policy. It gets what a dead letter carries (the message body,
/// or one record of a shuffle frame framed alone), the record's index in a
/// frame, and the error; an `Err` stops the batch (policy `Fail`, or a
/// failed store).
pub(crate) type OnFailure<'a> = dyn FnMut(&Bytes, Option<u32>, StreamsError) -> Result<(), StreamsError> + 'a;

/// A built chain for one source: takes raw message bodies.
pub(crate) trait SourcePipeline {
    /// Processes one message: one record, or every record of a shuffle
    /// frame, each guarded by [`guarded`] and handed to `failed` if it fails.
    ///
    /// # Errors
    ///
    /// The first `Err` of `failed`, or a store that is not there.
    fn process(
        &mut self,
        queue: &QueueId,
        message: &Record,
        ctx: &mut Context,
        failed: &mut OnFailure<'_>,
    ) -> Result<(), StreamsError>;

    /// Passes a flush (see [`Processor::flush`](crate::Processor::flush))
    /// down the chain. Only keyed stages hold results; the default is for
    /// source chains.
    ///
    /// # Errors
    ///
    /// A failure of the state store.
    fn flush(&mut self, ctx: &mut Context) -> Result<(), StreamsError> {
        let _ = ctx;
        Ok(())
    }

    /// Once after the pipeline starts, before any message or idle step
    /// (the first `process` calls it too): fires what a durable idle step
    /// left unfired, as [`fire_idle`](Self::fire_idle) would have.
    ///
    /// # Errors
    ///
    /// A failure of the state store, or the first `Err` of `failed`.
    fn resume(&mut self, ctx: &mut Context, failed: &mut OnFailure<'_>) -> Result<(), StreamsError> {
        let _ = (ctx, failed);
        Ok(())
    }

    /// An idle step of a keyed queue that has had no message for
    /// `idle_ms` of wall-clock time, `ctx.origin` set to its last offset
    /// (after [`resume`](Self::resume)): returns whether windows are due,
    /// to fire with [`fire_idle`](Self::fire_idle) once the step is
    /// durable. It only writes to the store (nothing is emitted), so a
    /// caller may roll it back. Only keyed stages have windows; the
    /// default is for source chains.
    ///
    /// # Errors
    ///
    /// A failure of the state store.
    fn idle(&mut self, idle_ms: i64, ctx: &mut Context) -> Result<bool, StreamsError> {
        let _ = (idle_ms, ctx);
        Ok(false)
    }

    /// Fires the windows the last idle step made due (results that fail
    /// go to `failed`).
    ///
    /// # Errors
    ///
    /// A failure of the state store, or the first `Err` of `failed`.
    fn fire_idle(&mut self, ctx: &mut Context, failed: &mut OnFailure<'_>) -> Result<(), StreamsError> {
        let _ = (ctx, failed);
        Ok(())
    }
}

/// A validated, runnable description of a job: its sources, operators and
/// sinks. Built by [`StreamBuilder::build`](crate::StreamBuilder::build);
/// run by the runtime or by the [`TopologyTestDriver`](crate::TopologyTestDriver).
#[derive(Clone)]
pub struct Topology {
    pub(crate) job_id: String,
    pub(crate) nodes: Vec<NodeInfo>,
    pub(crate) sources: Vec<SourceDef>,
    pub(crate) sink_topics: Vec<String>,
    /// `<job_id>-shuffle` when the job has a `key_by`.
    pub(crate) shuffle_topic: Option<String>,
    /// The nodes of windowed aggregations and joins (their store key
    /// prefixes; each keeps its stream time under `[node][0x01]`).
    pub(crate) windowed: Vec<u16>,
    /// The queryable stores by name.
    pub(crate) stores: Arc<std::collections::BTreeMap<String, crate::query::EncodedReader>>,
}

impl Topology {
    /// Whether a keyed stage feeds another `key_by` (`to_rstream().key_by(..)`
    /// after an aggregation): its shuffle frames then come from other
    /// shuffle queues, not only from the source stage.
    pub(crate) fn chained_shuffle(&self) -> bool {
        self.nodes.iter().enumerate().any(|(i, node)| {
            node.kind == "KeyBy" && {
                let mut at = self.nodes[i].parent;
                let mut chained = false;
                while let Some(p) = at {
                    if self.nodes[p].kind == "KeyBy" {
                        chained = true;
                        break;
                    }
                    at = self.nodes[p].parent;
                }
                chained
            }
        })
    }

    /// The job's shuffle topic (`<job_id>-shuffle`), if it has a `key_by`.
    /// It is also one of the [`source_topics`](Self::source_topics).
    pub fn shuffle_topic(&self) -> Option<&str> {
        self.shuffle_topic.as_deref()
    }

    /// The job's state topic (`<job_id>-state`), if it has keyed state.
    pub fn state_topic(&self) -> Option<String> {
        self.shuffle_topic.as_ref().map(|_| format!("{}-state", self.job_id))
    }

    /// The job id (also the consumer group and the prefix of the job's topics).
    pub fn job_id(&self) -> &str {
        &self.job_id
    }

    /// The source topics, in the order they were declared (then the shuffle topic).
    pub fn source_topics(&self) -> Vec<&str> {
        self.sources.iter().map(|s| s.topic.as_str()).collect()
    }

    /// The tag expression each source topic subscribes with, for the
    /// topics that filter by tag.
    pub fn source_tags(&self) -> Vec<(&str, &str)> {
        self.sources
            .iter()
            .filter_map(|s| s.tags.as_deref().map(|t| (s.topic.as_str(), t)))
            .collect()
    }

    /// Whether some source reads the messages' keys, tags and properties
    /// (the consumer then copies them out of every message).
    pub fn reads_metadata(&self) -> bool {
        self.sources.iter().any(|s| s.metadata)
    }

    /// Whether the source of `topic` takes a message tagged `tag`: its tag
    /// expression (`A || B`) names the tag, or it takes every tag. A
    /// filtering source never takes an untagged message (RocketMQ's rule).
    pub(crate) fn accepts_tag(&self, topic: &str, tag: Option<&str>) -> bool {
        let Some(expression) = self
            .sources
            .iter()
            .find(|s| s.topic == topic)
            .and_then(|s| s.tags.as_deref())
        else {
            return true;
        };
        match rocketmq_streams_io::tag_set(expression) {
            None => true,
            Some(tags) => tag.is_some_and(|t| tags.contains(&t)),
        }
    }

    /// The names of the queryable stores
    /// ([`GroupedStream::queryable`](crate::GroupedStream::queryable)).
    pub fn stores(&self) -> Vec<&str> {
        self.stores.keys().map(String::as_str).collect()
    }

    /// The sink topics, indexed by sink id.
    pub fn sink_topics(&self) -> &[String] {
        &self.sink_topics
    }

    /// The dead-letter topic of the job: `<job_id>-dlq`.
    pub fn dead_letter_topic(&self) -> String {
        format!("{}-dlq", self.job_id)
    }

    /// A readable, indented drawing of the graph.
    pub fn describe(&self) -> String {
        self.to_string()
    }

    /// Builds the chain of the source reading `topic`, once per owned queue.
    pub(crate) fn pipeline(&self, topic: &str) -> Option<Box<dyn SourcePipeline>> {
        self.sources.iter().find(|s| s.topic == topic).map(|s| (s.factory)())
    }

    fn write_node(&self, f: &mut fmt::Formatter<'_>, id: usize, depth: usize) -> fmt::Result {
        let node = &self.nodes[id];
        let indent = "    ".repeat(depth + 1);
        let branch = if depth == 0 { "" } else { "└─ " };
        write!(f, "{indent}{branch}{}[{id}]", node.kind)?;
        if !node.detail.is_empty() {
            write!(f, " {}", node.detail)?;
        }
        writeln!(f)?;
        for (child, _) in self.nodes.iter().enumerate().filter(|(_, n)| n.parent == Some(id)) {
            self.write_node(f, child, depth + 1)?;
        }
        Ok(())
    }
}

impl fmt::Display for Topology {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "Topology job={}", self.job_id)?;
        for (id, _) in self.nodes.iter().enumerate().filter(|(_, n)| n.parent.is_none()) {
            self.write_node(f, id, 0)?;
        }
        Ok(())
    }
}

impl fmt::Debug for Topology {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// Runs one record's work `f`. A failure — an `Err`, a panic in user code,
/// or an output over the broker's message limit — leaves no partial
/// output or state write in `ctx`.
pub(crate) fn guarded(
    ctx: &mut Context,
    f: impl FnOnce(&mut Context) -> Result<(), StreamsError>,
) -> Result<(), StreamsError> {
    let mark = ctx.mark();
    let mut result = match catch_unwind(AssertUnwindSafe(|| f(ctx))) {
        Ok(result) => result,
        Err(panic) => Err(StreamsError::UserPanic(panic_message(panic.as_ref()))),
    };
    if result.is_ok() {
        let bytes = ctx.largest_since(mark);
        let limit = rocketmq_streams_io::MAX_MESSAGE_BYTES;
        if bytes > limit {
            result = Err(StreamsError::OutputTooLarge { bytes, limit });
        }
    }
    if result.is_err() {
        ctx.rollback(mark);
    }
    result
}

fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = panic.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = panic.downcast_ref::<String>() {
        s.clone()
    } else {
        "a panic with a non-string payload".to_string()
    }
}
