//! Run a topology without a broker: the way to unit-test a job.

use bytes::Bytes;

use crate::error::{Result, StreamsError};
use crate::policy::{DeadLetter, ErrorPolicy, Verdict};
use rocketmq_streams_state::QueueStore;

use crate::processor::{Context, Output};
use crate::runtime::task::QueueTask;
use crate::serde::{Deserializer, Serializer};
use crate::topology::Topology;

/// Counters of a [`TopologyTestDriver`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DriverMetrics {
    /// Records piped in.
    pub records_in: u64,
    /// Records written to sink topics.
    pub records_out: u64,
    /// Failed records skipped (policy `Skip`).
    pub skipped: u64,
    /// Failed records dead-lettered (policy `DeadLetter`).
    pub dead_lettered: u64,
    /// Records late for every window they belong to (also skipped or
    /// dead-lettered, by the policy).
    pub late: u64,
}

/// A message to pipe into a [`TopologyTestDriver`] with the metadata a
/// RocketMQ message carries (see [`Message`](crate::Message)).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TestMessage {
    /// The body.
    pub body: Bytes,
    /// Its born and store timestamp (ms since the epoch).
    pub timestamp: i64,
    /// Its keys (space-separated), if any.
    pub keys: Option<String>,
    /// Its tag, if any.
    pub tags: Option<String>,
    /// Its user properties.
    pub properties: Vec<(String, String)>,
}

impl TestMessage {
    /// A message with `body` at `timestamp` and no metadata.
    pub fn new(body: impl Into<Bytes>, timestamp: i64) -> Self {
        Self {
            body: body.into(),
            timestamp,
            ..Self::default()
        }
    }

    /// The same message with `keys`.
    #[must_use]
    pub fn keys(mut self, keys: impl Into<String>) -> Self {
        self.keys = Some(keys.into());
        self
    }

    /// The same message tagged `tag`.
    #[must_use]
    pub fn tag(mut self, tag: impl Into<String>) -> Self {
        self.tags = Some(tag.into());
        self
    }

    /// The same message with the user property `name` = `value`.
    #[must_use]
    pub fn property(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.properties.push((name.into(), value.into()));
        self.properties.sort();
        self
    }
}

/// Runs a [`Topology`] in-process, single-threaded and deterministic, with
/// no broker: pipe records into source topics, read what the sinks wrote.
///
/// Each queue runs the per-queue task a shard runs (the same pipeline,
/// operators, error policy, shuffle deduplication and idle steps); only
/// RocketMQ is replaced by in-memory topics, and time by a wall clock the
/// test moves ([`advance_wall_clock`](Self::advance_wall_clock)). Records of a `key_by` go
/// through an in-memory shuffle topic of 8 queues (by the same key hash as
/// on a broker) right after the record that produced them, and keyed state
/// lives in real stores (cache over RocksDB) in a temporary directory. Use
/// it to unit-test jobs:
///
/// ```
/// use rocketmq_streams::prelude::*;
///
/// let builder = StreamBuilder::new("shout");
/// builder.source("in", Utf8).map(|s: String| s.to_uppercase()).sink("out", Utf8);
/// let mut driver = TopologyTestDriver::new(builder.build().unwrap());
/// driver.pipe_input("in", "hello", 1_000).unwrap();
/// assert_eq!(driver.read_values("out", &Utf8), vec!["HELLO".to_string()]);
/// ```
pub struct TopologyTestDriver {
    topology: Topology,
    policy: ErrorPolicy,
    /// One pipeline per (topic, queue); few, so a list searched in order
    /// (no allocation or hashing per record).
    queues: Vec<DriverQueue>,
    ctx: Context,
    /// What each sink wrote, by sink id (the order of
    /// [`Topology::sink_topics`]).
    outputs: Vec<Vec<Output>>,
    dead_letters: Vec<DeadLetter>,
    metrics: DriverMetrics,
    state_dir: tempfile::TempDir,
    /// The driver's wall clock, ms: moved only by
    /// [`advance_wall_clock`](Self::advance_wall_clock).
    wall: i64,
}

/// One in-memory queue of a source or the shuffle topic.
struct DriverQueue {
    topic: String,
    queue: u32,
    /// The same per-queue task a shard runs.
    task: QueueTask,
    /// The offset the next record gets.
    next_offset: i64,
    /// A shuffle queue's state: a real store (cache over RocksDB) in a
    /// temporary directory, without a changelog.
    store: Option<QueueStore>,
    /// The driver's wall clock when the queue last got a message.
    quiet_since: i64,
}

/// Shuffle queues of the driver's in-memory shuffle topic.
const DRIVER_SHUFFLE_QUEUES: u32 = 8;
/// Cache entries of the driver's stores.
const DRIVER_CACHE: usize = 10_000;

impl TopologyTestDriver {
    /// A driver with the default error policy ([`ErrorPolicy::Skip`]).
    pub fn new(topology: Topology) -> Self {
        Self::with_error_policy(topology, ErrorPolicy::default())
    }

    /// A driver with `policy`.
    ///
    /// # Panics
    ///
    /// Panics if no temporary directory can be created for keyed state.
    pub fn with_error_policy(topology: Topology, policy: ErrorPolicy) -> Self {
        let ctx = Context::new(topology.sink_topics().len());
        Self {
            outputs: vec![Vec::new(); topology.sink_topics().len()],
            state_dir: tempfile::tempdir().expect("a temporary directory for the driver's state"),
            topology,
            policy,
            queues: Vec::new(),
            ctx,
            dead_letters: Vec::new(),
            metrics: DriverMetrics::default(),
            wall: 0,
        }
    }

    /// Pipes one message body into queue 0 of `topic` with event time `timestamp`.
    ///
    /// # Errors
    ///
    /// [`StreamsError::Topology`] if no source reads `topic`;
    /// [`StreamsError::RecordFailed`] if the record fails and the policy is `Fail`.
    pub fn pipe_input(&mut self, topic: &str, body: impl Into<Bytes>, timestamp: i64) -> Result<()> {
        self.pipe_input_to_queue(topic, 0, body, timestamp)
    }

    /// Pipes one message body into `queue` of `topic`. Each queue has a
    /// pipeline of its own, as on a shard.
    ///
    /// # Errors
    ///
    /// As [`pipe_input`](Self::pipe_input).
    pub fn pipe_input_to_queue(
        &mut self,
        topic: &str,
        queue: u32,
        body: impl Into<Bytes>,
        timestamp: i64,
    ) -> Result<()> {
        self.pipe_message(topic, queue, TestMessage::new(body, timestamp))
    }

    /// Pipes one message with its metadata (keys, tag, properties) into
    /// `queue` of `topic`. A message whose tag the topic's source does not
    /// subscribe to is filtered out, as the broker would.
    ///
    /// # Errors
    ///
    /// As [`pipe_input`](Self::pipe_input).
    pub fn pipe_message(&mut self, topic: &str, queue: u32, message: TestMessage) -> Result<()> {
        if !self.topology.accepts_tag(topic, message.tags.as_deref()) {
            return Ok(());
        }
        let timestamp = message.timestamp;
        self.process_one(topic, queue, message)?;
        self.shuffle(timestamp)
    }

    /// Takes keyed records through the shuffle topic at once, in order, in
    /// frames as on a broker.
    fn shuffle(&mut self, timestamp: i64) -> Result<()> {
        let Some(shuffle_topic) = self.topology.shuffle_topic().map(str::to_owned) else {
            return Ok(());
        };
        while !self.ctx.shuffle.is_empty() {
            let frames = self.ctx.shuffle.take_frames(DRIVER_SHUFFLE_QUEUES as usize);
            for (queue, (frames, _)) in (0..DRIVER_SHUFFLE_QUEUES).zip(frames) {
                for frame in frames {
                    self.process_one(&shuffle_topic, queue, TestMessage::new(frame, timestamp))?;
                }
            }
        }
        Ok(())
    }

    /// Moves the driver's wall clock on by `by`, as time passes for a
    /// running job: each keyed queue that has had no record for a
    /// window's idle timeout (see `FixedWindows::idle_timeout`) takes an
    /// idle step, its stream time following the wall clock, and the
    /// windows that closes fire, as on a shard. The wall clock starts at
    /// 0 and moves only here: piping records does not move it.
    ///
    /// # Errors
    ///
    /// [`StreamsError::RecordFailed`] if a result fails downstream and the
    /// policy is `Fail`; [`StreamsError::State`] if a store fails.
    pub fn advance_wall_clock(&mut self, by: std::time::Duration) -> Result<()> {
        self.wall = self
            .wall
            .saturating_add(i64::try_from(by.as_millis()).unwrap_or(i64::MAX));
        for index in 0..self.queues.len() {
            let q = &mut self.queues[index];
            if q.store.is_none() {
                continue;
            }
            let idle_ms = self.wall.saturating_sub(q.quiet_since);
            let last = q.next_offset - 1;
            self.ctx.store = q.store.take();
            let (policy, metrics, dead_letters) = (&self.policy, &mut self.metrics, &mut self.dead_letters);
            let mut judge =
                |body: &Bytes, error: &StreamsError, at: String| judge(policy, metrics, dead_letters, body, error, at);
            let task = &mut q.task;
            // The driver's queues are always consumed: a due step is
            // durable at once (no broker, no crash), so it fires.
            let outcome = task.resume(last, &mut self.ctx, &mut judge).and_then(|()| {
                if task.idle(last, idle_ms, &mut self.ctx)? {
                    task.fire_idle(last, &mut self.ctx, &mut judge)?;
                }
                Ok(())
            });
            q.store = self.ctx.store.take();
            self.collect();
            outcome?;
            self.shuffle(self.wall)?;
        }
        Ok(())
    }

    /// The stream time of keyed queue `queue`: the latest event time its
    /// windowed aggregations and joins have seen, or the wall clock moved it to
    /// (the largest, if several); `None` before any windowed record. A
    /// window's watermark is this minus its grace.
    ///
    /// # Errors
    ///
    /// [`StreamsError::State`] if the store cannot be read.
    pub fn stream_time(&mut self, queue: u32) -> Result<Option<i64>> {
        let shuffle = self.topology.shuffle_topic();
        let Some(store) = self
            .queues
            .iter_mut()
            .find(|q| q.queue == queue && Some(q.topic.as_str()) == shuffle)
            .and_then(|q| q.store.as_mut())
        else {
            return Ok(None);
        };
        let mut latest = None;
        for &node in &self.topology.windowed {
            let t = crate::operators::stream_time::StreamClock::new(node).now(store)?;
            latest = latest.max(Some(t).filter(|&t| t != i64::MIN));
        }
        Ok(latest)
    }

    /// Moves what the context holds for the sinks to the driver's topics.
    fn collect(&mut self) {
        Self::collect_into(&mut self.ctx, &mut self.metrics, &mut self.outputs);
    }

    fn collect_into(ctx: &mut Context, metrics: &mut DriverMetrics, outputs: &mut [Vec<Output>]) {
        metrics.records_out = ctx.records_out;
        metrics.late += std::mem::take(&mut ctx.late);
        for (buffer, written) in ctx.outputs.iter_mut().zip(outputs) {
            written.append(buffer);
        }
    }

    fn process_one(&mut self, topic: &str, queue: u32, message: TestMessage) -> Result<()> {
        let index = match self.queues.iter().position(|q| q.queue == queue && q.topic == topic) {
            Some(i) => i,
            None => {
                let pipeline = self
                    .topology
                    .pipeline(topic)
                    .ok_or_else(|| StreamsError::Topology(format!("no source reads topic {topic}")))?;
                let store = if self.topology.shuffle_topic() == Some(topic) {
                    let dir = self.state_dir.path().join(format!("queue-{queue}"));
                    Some(QueueStore::open(dir, DRIVER_CACHE)?)
                } else {
                    None
                };
                self.queues.push(DriverQueue {
                    topic: topic.to_string(),
                    queue,
                    task: QueueTask::new(
                        rocketmq_streams_io::QueueId::new(topic, "driver", queue),
                        format!("{topic}#{queue}"),
                        pipeline,
                    ),
                    next_offset: 0,
                    store,
                    quiet_since: self.wall,
                });
                self.queues.len() - 1
            }
        };
        let q = &mut self.queues[index];
        let offset = q.next_offset;
        q.next_offset += 1;
        q.quiet_since = self.wall;
        self.ctx.store = q.store.take();
        let (policy, metrics, dead_letters) = (&self.policy, &mut self.metrics, &mut self.dead_letters);
        let record = rocketmq_streams_io::Record {
            keys: message.keys,
            tags: message.tags,
            properties: message.properties,
            ..rocketmq_streams_io::Record::new(rocketmq_streams_io::Offset(offset), message.body, message.timestamp)
        };
        let result = q.task.run([&record], &mut self.ctx, &mut |body, error, at| {
            judge(policy, metrics, dead_letters, body, error, at)
        });
        q.store = self.ctx.store.take();
        // A shuffle frame counts its records; any other message is one.
        self.metrics.records_in += match std::mem::take(&mut self.ctx.unframed) {
            0 => 1,
            n => n,
        };
        self.collect();
        result
    }

    /// Commits, as the runtime does every commit interval: every keyed
    /// queue's [`Emit::OnCommit`](crate::Emit::OnCommit) aggregations emit
    /// the latest result of each key they updated since the last commit.
    /// Without such aggregations it changes nothing.
    ///
    /// # Errors
    ///
    /// [`StreamsError::RecordFailed`] if a held result fails downstream and
    /// the policy is `Fail`; [`StreamsError::State`] if a store fails.
    pub fn commit(&mut self) -> Result<()> {
        for q in &mut self.queues {
            if q.store.is_none() {
                continue;
            }
            self.ctx.store = q.store.take();
            let mut outcome = q.task.flush(&mut self.ctx);
            q.store = self.ctx.store.take();
            for (body, error) in std::mem::take(&mut self.ctx.flush_failures) {
                let at = format!("{}#{}:commit", q.topic, q.queue);
                outcome = outcome.and_then(|()| {
                    judge(
                        &self.policy,
                        &mut self.metrics,
                        &mut self.dead_letters,
                        &body,
                        &error,
                        at,
                    )
                });
            }
            Self::collect_into(&mut self.ctx, &mut self.metrics, &mut self.outputs);
            outcome?;
        }
        Ok(())
    }

    /// Serializes `value` with `serializer` and pipes it into queue 0 of `topic`.
    ///
    /// # Errors
    ///
    /// As [`pipe_input`](Self::pipe_input), plus [`StreamsError::Serde`] if
    /// `value` cannot be serialized.
    pub fn pipe_value<T>(
        &mut self,
        topic: &str,
        serializer: &impl Serializer<T>,
        value: &T,
        timestamp: i64,
    ) -> Result<()> {
        let body = serializer.serialize(value)?;
        self.pipe_input(topic, body, timestamp)
    }

    /// How many keys the job's operators hold in state, over every
    /// shuffle queue (the engine's own bookkeeping, the shuffle's
    /// high-water marks, not counted): what shows that windows delete
    /// their state once closed.
    ///
    /// # Errors
    ///
    /// [`StreamsError::State`] if a store cannot be read.
    pub fn state_len(&self) -> Result<usize> {
        let mut n = 0;
        for store in self.queues.iter().filter_map(|q| q.store.as_ref()) {
            n += store
                .keys_with_prefix(&[])?
                .iter()
                .filter(|k| k.first() != Some(&0xFF))
                .count();
        }
        Ok(n)
    }

    /// The current value of `key` in the queryable store `store`, as
    /// [`StreamRuntime::query`](crate::StreamRuntime::query) reads it on a
    /// running job (the driver owns every queue: the answer is `Found` or
    /// `Absent`).
    ///
    /// # Errors
    ///
    /// As [`StreamRuntime::query`](crate::StreamRuntime::query).
    pub fn query<K: serde::Serialize, V: serde::de::DeserializeOwned>(
        &mut self,
        store: &str,
        key: &K,
    ) -> Result<crate::QueryAnswer<V>> {
        let Some(read) = self.topology.stores.get(store).cloned() else {
            return Err(StreamsError::Topology(format!("no queryable store is named {store:?}")));
        };
        let mut raw_key = Vec::new();
        crate::codec::encode_into(&mut raw_key, key, "query key")?;
        let queue = (rocketmq_streams_shuffle::stable_hash(&raw_key) % u64::from(DRIVER_SHUFFLE_QUEUES)) as u32;
        let shuffle = self.topology.shuffle_topic().map(str::to_owned);
        let Some(q) = self
            .queues
            .iter_mut()
            .find(|q| Some(&q.topic) == shuffle.as_ref() && q.queue == queue)
        else {
            return Ok(crate::QueryAnswer::Absent);
        };
        let Some(store) = q.store.as_mut() else {
            return Ok(crate::QueryAnswer::Absent);
        };
        match read(store, &raw_key)? {
            Some(bytes) => Ok(crate::QueryAnswer::Found(crate::codec::decode(
                &bytes,
                "queried value",
            )?)),
            None => Ok(crate::QueryAnswer::Absent),
        }
    }

    /// Takes everything written to `topic` so far (oldest first).
    pub fn read_output(&mut self, topic: &str) -> Vec<Output> {
        self.topology
            .sink_topics()
            .iter()
            .position(|t| t == topic)
            .map(|id| std::mem::take(&mut self.outputs[id]))
            .unwrap_or_default()
    }

    /// Takes everything written to `topic` so far and decodes it.
    ///
    /// # Panics
    ///
    /// Panics if an output does not decode: in a test, that is a failure.
    pub fn read_values<T>(&mut self, topic: &str, deserializer: &impl Deserializer<T>) -> Vec<T> {
        self.read_output(topic)
            .into_iter()
            .map(|o| {
                deserializer
                    .deserialize(&o.body)
                    .unwrap_or_else(|e| panic!("output of {topic} does not decode: {e}"))
            })
            .collect()
    }

    /// Records sent to the dead-letter topic (policy `DeadLetter`).
    pub fn dead_letters(&self) -> &[DeadLetter] {
        &self.dead_letters
    }

    /// The counters so far.
    pub fn metrics(&self) -> &DriverMetrics {
        &self.metrics
    }

    /// Records kept in join state now (see
    /// [`ShardMetrics::join_records`](crate::ShardMetrics::join_records)).
    pub fn join_records(&self) -> u64 {
        self.ctx.join_records.get()
    }
}

/// The error policy's verdict on a failed record, counted; `Err` for `Fail`.
fn judge(
    policy: &ErrorPolicy,
    metrics: &mut DriverMetrics,
    dead_letters: &mut Vec<DeadLetter>,
    body: &Bytes,
    error: &StreamsError,
    at: String,
) -> Result<()> {
    match policy.judge(body, error, at) {
        Verdict::Skipped => metrics.skipped += 1,
        Verdict::DeadLetter(letter) => {
            metrics.dead_lettered += 1;
            dead_letters.push(letter);
        }
        Verdict::Fail(error) => return Err(error),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::{Arc, Mutex};

    use super::*;
    use crate::prelude::*;

    #[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
    struct Order {
        id: u32,
        amount: f64,
        ts: i64,
    }

    fn driver(build: impl FnOnce(&StreamBuilder)) -> TopologyTestDriver {
        let b = StreamBuilder::new("job");
        build(&b);
        TopologyTestDriver::new(b.build().expect("valid topology"))
    }

    #[test]
    fn map_filter_flat_map_chain() {
        let mut d = driver(|b| {
            b.source("in", Utf8)
                .map(|s: String| s.to_lowercase())
                .filter(|s: &String| !s.starts_with('#'))
                .flat_map(|s: String| s.split_whitespace().map(str::to_owned).collect::<Vec<_>>())
                .sink("out", Utf8)
        });
        for line in ["Hello World", "# comment", "A b"] {
            d.pipe_input("in", line, 5).expect("pipe");
        }
        assert_eq!(d.read_values("out", &Utf8), ["hello", "world", "a", "b"]);
        assert_eq!(d.metrics().records_in, 3);
        assert_eq!(d.metrics().records_out, 4);
        assert!(d.read_output("out").is_empty(), "reading drains the topic");
    }

    #[test]
    fn peek_sees_every_record_and_passes_it_on() {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let log = seen.clone();
        let mut d = driver(move |b| {
            b.source("in", Utf8)
                .peek(move |s: &String| log.lock().unwrap().push(s.clone()))
                .map(|s: String| s.len() as u64)
                .sink("out", Json::<u64>::new())
        });
        for line in ["a", "bb", "ccc"] {
            d.pipe_input("in", line, 1).expect("pipe");
        }
        assert_eq!(*seen.lock().unwrap(), ["a", "bb", "ccc"]);
        assert_eq!(d.read_values("out", &Json::<u64>::new()), [1, 2, 3]);
    }

    #[test]
    fn merge_takes_both_streams_and_split_sends_each_record_to_its_first_branch() {
        let mut d = driver(|b| {
            let web = b.source("web", Utf8);
            let shop = b.source("shop", Utf8).map(|s: String| s.to_uppercase());
            let all = web.merge(&shop);
            all.sink("all", Utf8);
            let branches = all
                .split()
                .branch(|s: &String| s.starts_with('E'))
                .branch(|s: &String| s.starts_with("EW") || s.starts_with('W'))
                .default_branch();
            assert_eq!(branches.len(), 3);
            branches[0].sink("e", Utf8);
            branches[1].sink("w", Utf8);
            branches[2].sink("rest", Utf8);
            let kept = b
                .source("kept", Utf8)
                .split()
                .branch(|s: &String| s == "x")
                .no_default_branch();
            assert_eq!(kept.len(), 1);
            kept[0].sink("x", Utf8);
        });
        for (topic, line) in [
            ("web", "Ewa"),
            ("shop", "ewan"),
            ("web", "Wu"),
            ("shop", "li"),
            ("web", "Ox"),
        ] {
            d.pipe_input(topic, line, 1).expect("pipe");
        }
        for line in ["x", "y", "x"] {
            d.pipe_input("kept", line, 1).expect("pipe");
        }
        assert_eq!(d.read_values("all", &Utf8), ["Ewa", "EWAN", "Wu", "LI", "Ox"]);
        // First match wins: "EWAN" matches both, goes to the first.
        assert_eq!(d.read_values("e", &Utf8), ["Ewa", "EWAN"]);
        assert_eq!(d.read_values("w", &Utf8), ["Wu"]);
        assert_eq!(d.read_values("rest", &Utf8), ["LI", "Ox"]);
        assert_eq!(d.read_values("x", &Utf8), ["x", "x"]);
    }

    #[test]
    fn a_merge_across_builders_is_refused_by_both() {
        let a = StreamBuilder::new("a");
        let b = StreamBuilder::new("b");
        let merged = a.source("in-a", Utf8).merge(&b.source("in-b", Utf8));
        merged.sink("out", Utf8);
        for builder in [a, b] {
            let error = builder.build().err().expect("refused");
            assert!(error.to_string().contains("different StreamBuilders"), "{error}");
        }
    }

    #[test]
    fn a_merge_carries_what_its_second_parent_forbids() {
        let b = StreamBuilder::new("job");
        let plain = b.source("a", Utf8);
        let on_commit = b
            .source("b", Utf8)
            .key_by(|s: &String| s.clone())
            .emit(Emit::OnCommit)
            .count()
            .to_rstream()
            .map(|(k, _): (String, u64)| k);
        plain
            .merge(&on_commit)
            .key_by(|s: &String| s.clone())
            .count()
            .sink("out", Json::<(String, u64)>::new());
        let error = b.build().err().expect("refused");
        assert!(error.to_string().contains("OnCommit"), "{error}");
    }

    #[test]
    fn sources_see_the_message_and_filter_by_tag_and_sinks_set_key_tag_properties() {
        let mut d = driver(|b| {
            b.source_messages_with_tags("in", "big || urgent", Utf8)
                .map(|m: Message<String>| {
                    let channel = m.property("channel").unwrap_or("-").to_string();
                    (
                        m.value,
                        m.keys.unwrap_or_default(),
                        m.tags.unwrap_or_default(),
                        channel,
                        m.offset.0,
                    )
                })
                .sink_with(
                    "out",
                    Json::<(String, String, String, String, i64)>::new(),
                    Produced::new()
                        .key(|v: &(String, String, String, String, i64)| v.1.clone())
                        .tags(|v: &(String, String, String, String, i64)| format!("seen-{}", v.2))
                        .property("channel", |v: &(String, String, String, String, i64)| v.3.clone()),
                );
            b.source_with_tags("plain", "a", Utf8).sink("plain-out", Utf8);
        });
        d.pipe_message(
            "in",
            0,
            TestMessage::new("o1", 5)
                .keys("k1")
                .tag("big")
                .property("channel", "web"),
        )
        .expect("pipe");
        d.pipe_message("in", 0, TestMessage::new("o2", 6).keys("k2").tag("small"))
            .expect("pipe");
        d.pipe_message("in", 0, TestMessage::new("o3", 7).tag("urgent"))
            .expect("pipe");
        d.pipe_message("in", 0, TestMessage::new("o4", 8)).expect("pipe");
        let out = d.read_output("out");
        let values: Vec<_> = out
            .iter()
            .map(|o| {
                Json::<(String, String, String, String, i64)>::new()
                    .deserialize(&o.body)
                    .expect("json")
            })
            .collect();
        assert_eq!(
            values,
            [
                ("o1".into(), "k1".into(), "big".into(), "web".into(), 0),
                ("o3".into(), String::new(), "urgent".into(), "-".into(), 1),
            ],
            "only the tags subscribed to reach the job (a filtered message takes no offset here)"
        );
        assert_eq!(out[0].key.as_deref(), Some("k1"));
        assert_eq!(out[0].tags.as_deref(), Some("seen-big"));
        assert_eq!(out[0].properties, [("channel".to_string(), "web".to_string())]);
        assert_eq!(out[0].timestamp, 5);

        d.pipe_message("plain", 0, TestMessage::new("x", 1).tag("a"))
            .expect("pipe");
        d.pipe_message("plain", 0, TestMessage::new("y", 1).tag("b"))
            .expect("pipe");
        d.pipe_message("plain", 0, TestMessage::new("z", 1)).expect("pipe");
        assert_eq!(d.read_values("plain-out", &Utf8), ["x"]);
    }

    #[test]
    fn a_grouped_sink_keys_its_messages_and_reserved_property_names_are_refused() {
        let mut d = driver(|b| {
            b.source("in", Utf8)
                .key_by(|w: &String| w.clone())
                .count()
                .sink("counts", Json::<(String, u64)>::new());
            b.source("in2", Json::<(u32, u64)>::new())
                .key_by(|p: &(u32, u64)| p.0)
                .count()
                .sink("by-number", Json::<(u32, u64)>::new());
        });
        d.pipe_input("in", "apple", 1).expect("pipe");
        d.pipe_value("in2", &Json::new(), &(7u32, 1u64), 1).expect("pipe");
        assert_eq!(d.read_output("counts")[0].key.as_deref(), Some("apple"));
        assert_eq!(
            d.read_output("by-number")[0].key.as_deref(),
            Some("7"),
            "a non-string key as JSON"
        );

        for name in ["KEYS", "TAGS", "rmq_streams_event_time"] {
            let b = StreamBuilder::new("job");
            b.source("in", Utf8)
                .sink_with("out", Utf8, Produced::new().property(name, |s: &String| s.clone()));
            let error = b.build().err().expect("refused");
            assert!(error.to_string().contains(name), "{error}");
        }
    }

    #[test]
    fn a_queryable_aggregation_answers_queries_and_only_aggregations_can_be() {
        let mut d = driver(|b| {
            let words = b.source("in", Utf8).key_by(|w: &String| w.clone());
            words
                .count()
                .queryable("counts")
                .sink("out", Json::<(String, u64)>::new());
            words
                .map(|w: String| w.len() as u64)
                .reduce(|a: &u64, b: &u64| a.max(b).to_owned())
                .queryable("longest")
                .sink("longest-out", Json::<(String, u64)>::new());
        });
        for w in ["apple", "pear", "apple", "fig", "apple"] {
            d.pipe_input("in", w, 1).expect("pipe");
        }
        assert_eq!(
            d.query::<String, u64>("counts", &"apple".into()).expect("query"),
            QueryAnswer::Found(3)
        );
        assert_eq!(
            d.query::<String, u64>("counts", &"fig".into()).expect("query"),
            QueryAnswer::Found(1)
        );
        assert_eq!(
            d.query::<String, u64>("counts", &"kiwi".into()).expect("query"),
            QueryAnswer::Absent
        );
        assert_eq!(
            d.query::<String, u64>("longest", &"pear".into()).expect("query"),
            QueryAnswer::Found(4)
        );
        assert!(
            d.query::<String, u64>("nope", &"apple".into()).is_err(),
            "an unknown store is an error"
        );
        assert!(
            d.query::<String, String>("counts", &"apple".into()).is_err(),
            "a value of another type does not decode"
        );

        for build in [
            (|b: &StreamBuilder| {
                b.source("in", Utf8)
                    .key_by(|w: &String| w.clone())
                    .map(|w: String| w)
                    .queryable("not-an-aggregation")
                    .sink("out", Json::<(String, String)>::new());
            }) as fn(&StreamBuilder),
            |b: &StreamBuilder| {
                let g = b.source("in", Utf8).key_by(|w: &String| w.clone());
                g.count().queryable("twice").sink("a", Json::<(String, u64)>::new());
                g.count().queryable("twice").sink("b", Json::<(String, u64)>::new());
            },
        ] {
            let b = StreamBuilder::new("job");
            build(&b);
            assert!(b.build().is_err(), "refused");
        }
    }

    fn now_ms() -> i64 {
        let since = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH);
        since.map_or(0, |d| d.as_millis() as i64)
    }

    #[test]
    fn event_time_defaults_to_the_input_and_select_timestamp_overrides_it() {
        let mut d = driver(|b| {
            let s = b.source("in", Json::<Order>::new());
            s.sink("as-is", Json::new());
            s.select_timestamp(|o: &Order| o.ts).sink("by-value", Json::new());
            s.with_processing_time().sink("processed", Json::new());
        });
        let order = Order {
            id: 1,
            amount: 2.0,
            ts: 42,
        };
        let before = now_ms();
        d.pipe_value("in", &Json::new(), &order, 1_000).expect("pipe");
        let after = now_ms();
        let processed = d.read_output("processed")[0].timestamp;
        assert!(
            (before..=after).contains(&processed),
            "{before} ≤ {processed} ≤ {after}"
        );
        assert_eq!(d.read_output("as-is")[0].timestamp, 1_000);
        let by_value = d.read_output("by-value");
        assert_eq!(by_value[0].timestamp, 42);
        assert_eq!(
            Json::<Order>::new().deserialize(&by_value[0].body).expect("json"),
            order
        );
    }

    #[test]
    fn one_stream_feeds_several_operators() {
        let seen = Arc::new(AtomicUsize::new(0));
        let counter = seen.clone();
        let mut d = driver(|b| {
            let s = b.source("in", Raw);
            s.sink("copy", Raw);
            s.map(|v: Bytes| Bytes::from(v.len().to_string())).sink("len", Raw);
            s.foreach(move |_| {
                counter.fetch_add(1, Ordering::Relaxed);
            });
            s.map(|v: Bytes| v.len()).print();
        });
        d.pipe_input("in", Bytes::from_static(b"abcd"), 0).expect("pipe");
        d.pipe_input("in", Bytes::from_static(b"xy"), 0).expect("pipe");
        assert_eq!(d.read_values("copy", &Raw), [Bytes::from("abcd"), Bytes::from("xy")]);
        assert_eq!(d.read_values("len", &Raw), [Bytes::from("4"), Bytes::from("2")]);
        assert_eq!(seen.load(Ordering::Relaxed), 2);
    }

    #[test]
    fn json_source_to_json_sink() {
        let mut d = driver(|b| {
            b.source("orders", Json::<Order>::new())
                .filter(|o: &Order| o.amount >= 10.0)
                .map(|o: Order| Order {
                    amount: o.amount * 2.0,
                    ..o
                })
                .sink("big", Json::new())
        });
        for (id, amount) in [(1, 5.0), (2, 10.0), (3, 20.5)] {
            d.pipe_value("orders", &Json::new(), &Order { id, amount, ts: 0 }, 0)
                .expect("pipe");
        }
        let out: Vec<Order> = d.read_values("big", &Json::new());
        assert_eq!(
            out.iter().map(|o| (o.id, o.amount)).collect::<Vec<_>>(),
            [(2, 20.0), (3, 41.0)]
        );
    }

    fn poison_topology() -> Topology {
        let b = StreamBuilder::new("poison");
        b.source("in", Json::<Order>::new())
            .flat_map(|o: Order| {
                // Emits once, then panics on id 13: the emitted copy must not survive.
                let mut v = vec![o.clone()];
                if o.id == 13 {
                    v.push(Order { id: 0, ..o });
                }
                v.into_iter().map(|o| {
                    assert!(o.id != 0, "unlucky order");
                    o
                })
            })
            .sink("out", Json::new());
        b.build().expect("valid")
    }

    fn pipe_poison(d: &mut TopologyTestDriver) -> Vec<Result<()>> {
        let inputs: Vec<Bytes> = vec![
            Bytes::from(r#"{"id":1,"amount":1.0,"ts":0}"#),
            Bytes::from("{not json"),
            Bytes::from(r#"{"id":13,"amount":1.0,"ts":0}"#),
            Bytes::from(r#"{"id":2,"amount":1.0,"ts":0}"#),
        ];
        inputs.into_iter().map(|b| d.pipe_input("in", b, 0)).collect()
    }

    #[test]
    fn skip_counts_poison_records_and_keeps_the_rest() {
        let mut d = TopologyTestDriver::new(poison_topology());
        assert!(pipe_poison(&mut d).iter().all(|r| r.is_ok()));
        let ids: Vec<u32> = d
            .read_values("out", &Json::<Order>::new())
            .iter()
            .map(|o| o.id)
            .collect();
        assert_eq!(ids, [1, 2], "the panicking record left no partial output");
        assert_eq!(d.metrics().skipped, 2);
        assert_eq!(d.metrics().records_out, 2);
    }

    #[test]
    fn an_output_over_the_message_limit_fails_its_record_not_the_job() {
        let builder = StreamBuilder::new("big");
        builder
            .source("in", Utf8)
            .map(|s: String| if s == "big" { "x".repeat(5 << 20) } else { s })
            .sink("out", Utf8);
        let mut d = TopologyTestDriver::new(builder.build().expect("topology"));
        for input in ["a", "big", "b"] {
            d.pipe_input("in", input, 0).expect("skipped, not an error");
        }
        assert_eq!(d.read_values("out", &Utf8), ["a", "b"]);
        assert_eq!(d.metrics().skipped, 1);
    }

    #[test]
    fn dead_letter_keeps_the_original_bytes_and_the_reason() {
        let mut d = TopologyTestDriver::with_error_policy(poison_topology(), ErrorPolicy::DeadLetter);
        assert!(pipe_poison(&mut d).iter().all(|r| r.is_ok()));
        let dead = d.dead_letters();
        assert_eq!(dead.len(), 2);
        assert_eq!(dead[0].body, Bytes::from("{not json"));
        assert!(dead[0].error.contains("json"), "{}", dead[0].error);
        assert_eq!(dead[0].origin, "in#0:1");
        assert!(dead[1].error.contains("unlucky order"), "{}", dead[1].error);
        assert_eq!(d.metrics().dead_lettered, 2);
        assert_eq!(d.read_output("out").len(), 2);
    }

    #[test]
    fn fail_stops_at_the_first_poison_record_and_names_it() {
        let mut d = TopologyTestDriver::with_error_policy(poison_topology(), ErrorPolicy::Fail);
        let results = pipe_poison(&mut d);
        assert!(results[0].is_ok());
        match &results[1] {
            Err(StreamsError::RecordFailed { origin, cause }) => {
                assert_eq!(origin, "in#0:1");
                assert!(cause.contains("json"));
            }
            other => panic!("expected RecordFailed, got {other:?}"),
        }
    }

    #[test]
    fn build_rejects_invalid_topologies() {
        let err = |b: StreamBuilder| b.build().expect_err("invalid").to_string();
        assert!(err(StreamBuilder::new("")).contains("job id is empty"));
        let b = StreamBuilder::new("job");
        b.source("in", Utf8).map(|s: String| s);
        assert!(err(b).contains("no stream ends"));
        let b = StreamBuilder::new("job");
        b.source("in", Utf8).sink("bad topic!", Utf8);
        assert!(err(b).contains("bad topic!"));
        let b = StreamBuilder::new("job");
        b.source("in", Utf8).print();
        b.source("in", Utf8).print();
        assert!(err(b).contains("source twice"));
        let b = StreamBuilder::new("job.with.dots");
        b.source("in", Utf8).print();
        assert!(err(b).contains("job id"));
        assert!(StreamBuilder::new("job").build().is_err(), "no source");
    }

    #[test]
    fn describe_draws_the_graph() {
        let b = StreamBuilder::new("wc");
        let s = b.source("lines", Utf8);
        s.flat_map(|l: String| l.split(' ').map(str::to_owned).collect::<Vec<_>>())
            .sink("words", Utf8);
        s.print();
        let text = b.build().expect("valid").describe();
        assert_eq!(
            text,
            "Topology job=wc\n    Source[0] topic=lines (utf8)\n        └─ FlatMap[1]\n            └─ Sink[2] topic=words (utf8)\n        └─ Print[3]\n"
        );
    }

    #[test]
    fn each_queue_gets_its_own_pipeline_and_offsets() {
        let mut d = TopologyTestDriver::with_error_policy(poison_topology(), ErrorPolicy::DeadLetter);
        d.pipe_input_to_queue("in", 3, "bad", 0).expect("pipe");
        d.pipe_input_to_queue("in", 3, "bad", 0).expect("pipe");
        d.pipe_input_to_queue("in", 5, "bad", 0).expect("pipe");
        let origins: Vec<&str> = d.dead_letters().iter().map(|l| l.origin.as_str()).collect();
        assert_eq!(origins, ["in#3:0", "in#3:1", "in#5:0"]);
        assert!(d.pipe_input("nope", "x", 0).is_err(), "unknown topic");
    }

    fn word_count_topology() -> Topology {
        word_count_emitting(Emit::OnUpdate)
    }

    fn word_count_emitting(emit: Emit) -> Topology {
        let b = StreamBuilder::new("wc");
        b.source("lines", Utf8)
            .flat_map(|l: String| l.split_whitespace().map(str::to_owned).collect::<Vec<_>>())
            .key_by(|w: &String| w.clone())
            .emit(emit)
            .count()
            .sink("counts", Json::<(String, u64)>::new());
        b.build().expect("valid")
    }

    fn last_per_key(updates: Vec<(String, u64)>) -> HashMap<String, u64> {
        updates.into_iter().collect()
    }

    #[test]
    fn on_commit_ends_where_on_update_does_with_fewer_outputs() {
        let mut update = TopologyTestDriver::new(word_count_emitting(Emit::OnUpdate));
        let mut commit = TopologyTestDriver::new(word_count_emitting(Emit::OnCommit));
        let mut reference: HashMap<String, u64> = HashMap::new();
        let mut x = 7u64;
        let (mut from_update, mut from_commit) = (Vec::new(), Vec::new());
        for i in 0..2_000u32 {
            let words: Vec<String> = (0..5)
                .map(|_| {
                    x = x
                        .wrapping_mul(6_364_136_223_846_793_005)
                        .wrapping_add(1_442_695_040_888_963_407);
                    format!("w{}", (x >> 33) % 60)
                })
                .collect();
            for w in &words {
                *reference.entry(w.clone()).or_default() += 1;
            }
            let line = words.join(" ");
            update
                .pipe_input_to_queue("lines", i % 3, line.clone(), 0)
                .expect("pipe");
            commit.pipe_input_to_queue("lines", i % 3, line, 0).expect("pipe");
            if i % 250 == 249 {
                commit.commit().expect("commit");
                // Each commit emits each key updated since the last one
                // once, with its result at the commit: the reference so far.
                let emitted: Vec<(String, u64)> = commit.read_values("counts", &Json::new());
                let mut seen = std::collections::HashSet::new();
                for (w, c) in &emitted {
                    assert!(seen.insert(w.clone()), "{w} emitted twice in one commit");
                    assert_eq!(Some(c), reference.get(w), "{w} at the commit after line {i}");
                }
                from_commit.extend(emitted);
            }
            from_update.extend(update.read_values::<(String, u64)>("counts", &Json::new()));
        }
        commit.commit().expect("commit");
        from_commit.extend(commit.read_values::<(String, u64)>("counts", &Json::new()));
        assert_eq!(from_update.len(), 10_000, "one update per word");
        assert!(
            from_commit.len() <= 9 * 60,
            "at most one output per key per commit: {}",
            from_commit.len()
        );
        assert_eq!(last_per_key(from_update), reference);
        assert_eq!(last_per_key(from_commit), reference);
        // Nothing updated since: a commit emits nothing.
        commit.commit().expect("commit");
        assert!(commit.read_output("counts").is_empty());
    }

    #[test]
    fn nothing_stateful_may_follow_an_on_commit_aggregation() {
        for (what, build) in [
            (
                "KeyBy",
                Box::new(|g: GroupedStream<String, u64>| {
                    g.to_rstream()
                        .key_by(|(w, _): &(String, u64)| w.clone())
                        .count()
                        .print();
                }) as Box<dyn Fn(GroupedStream<String, u64>)>,
            ),
            ("Sum", Box::new(|g: GroupedStream<String, u64>| g.sum(|c| *c).print())),
        ] {
            let b = StreamBuilder::new("wc");
            let counts = b
                .source("lines", Utf8)
                .key_by(|w: &String| w.clone())
                .emit(Emit::OnCommit)
                .count();
            build(counts);
            let err = b.build().expect_err("refused").to_string();
            assert!(err.contains(&format!("{what} after the Emit::OnCommit")), "{err}");
        }
        // Stateless operators and sinks may.
        let b = StreamBuilder::new("wc");
        b.source("lines", Utf8)
            .key_by(|w: &String| w.clone())
            .emit(Emit::OnCommit)
            .count()
            .map(|c| c * 2)
            .filter(|c| *c > 2)
            .print();
        assert!(b.build().is_ok());
    }

    #[test]
    fn word_count_through_the_shuffle_and_state() {
        let mut d = TopologyTestDriver::new(word_count_topology());
        let lines = ["a b a", "c a", "b", "z z z z"];
        for (i, line) in lines.iter().enumerate() {
            d.pipe_input_to_queue("lines", i as u32 % 3, *line, 100).expect("pipe");
        }
        let updates: Vec<(String, u64)> = d.read_values("counts", &Json::new());
        assert_eq!(updates.len(), 10, "one update per word");
        let mut last = HashMap::new();
        for (w, c) in updates {
            let prev = last.insert(w.clone(), c).unwrap_or(0);
            assert_eq!(c, prev + 1, "counts of {w} rise one by one");
        }
        let expected: HashMap<String, u64> = [("a", 3), ("b", 2), ("c", 1), ("z", 4)]
            .into_iter()
            .map(|(w, c)| (w.to_string(), c))
            .collect();
        assert_eq!(last, expected);
    }

    #[test]
    fn a_record_that_fails_after_its_aggregations_leaves_their_state_as_it_was() {
        let b = StreamBuilder::new("rollback");
        let words = b.source("words", Utf8).key_by(|w: &String| w.clone());
        // First branch: the total length per word (state written first).
        words
            .sum(|w: &String| w.len() as i64)
            .sink("lengths", Json::<(String, i64)>::new());
        // Second branch: the count, then a step that panics the first time
        // it sees "boom" — after both aggregations updated their state.
        let seen = Arc::new(AtomicUsize::new(0));
        let s = seen.clone();
        words
            .count()
            .to_rstream()
            .map(move |(w, c): (String, u64)| {
                if w == "boom" && s.fetch_add(1, Ordering::SeqCst) == 0 {
                    panic!("boom");
                }
                (w, c)
            })
            .sink("counts", Json::<(String, u64)>::new());
        let mut d = TopologyTestDriver::new(b.build().expect("valid"));
        for w in ["a", "boom", "boom", "a"] {
            d.pipe_input("words", w, 0).expect("skipped, not an error");
        }
        let counts: Vec<(String, u64)> = d.read_values("counts", &Json::new());
        let lengths: Vec<(String, i64)> = d.read_values("lengths", &Json::new());
        let pairs = |v: &[(&str, i64)]| v.iter().map(|(w, n)| (w.to_string(), *n)).collect::<Vec<_>>();
        assert_eq!(
            counts,
            [("a".to_string(), 1), ("boom".into(), 1), ("a".into(), 2)],
            "the failed record was not counted"
        );
        assert_eq!(
            lengths,
            pairs(&[("a", 1), ("boom", 4), ("a", 2)]),
            "nor summed: its sum update and output were rolled back"
        );
        assert_eq!(d.metrics().skipped, 1);
    }

    #[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
    struct Reading {
        sensor: String,
        value: i64,
    }

    /// Product of the values per key: a custom accumulator.
    struct Product;

    impl crate::Accumulator<Reading> for Product {
        type State = i64;
        type Output = i64;
        fn init(&self) -> i64 {
            1
        }
        fn add(&self, state: &mut i64, r: &Reading) {
            *state *= r.value;
        }
        fn result(&self, state: &i64) -> i64 {
            *state
        }
    }

    #[test]
    fn sum_min_max_avg_and_a_custom_accumulator_match_a_reference() {
        let b = StreamBuilder::new("agg");
        let by_sensor = b
            .source("readings", Json::<Reading>::new())
            .key_by(|r: &Reading| r.sensor.clone());
        by_sensor
            .sum(|r: &Reading| r.value)
            .sink("sum", Json::<(String, i64)>::new());
        by_sensor
            .min(|r: &Reading| r.value)
            .sink("min", Json::<(String, i64)>::new());
        by_sensor
            .max(|r: &Reading| r.value)
            .sink("max", Json::<(String, i64)>::new());
        by_sensor
            .avg(|r: &Reading| r.value as f64)
            .sink("avg", Json::<(String, f64)>::new());
        by_sensor
            .aggregate(Product)
            .sink("product", Json::<(String, i64)>::new());
        let mut d = TopologyTestDriver::new(b.build().expect("valid"));
        let mut reference: HashMap<String, Vec<i64>> = HashMap::new();
        for i in 0..300i64 {
            let r = Reading {
                sensor: format!("s{}", i % 7),
                value: (i * 37 % 11) - 5,
            };
            reference.entry(r.sensor.clone()).or_default().push(r.value);
            d.pipe_value("readings", &Json::new(), &r, i).expect("pipe");
        }
        let last = |d: &mut TopologyTestDriver, topic: &str| -> HashMap<String, i64> {
            d.read_values::<(String, i64)>(topic, &Json::new())
                .into_iter()
                .collect()
        };
        let (sum, min, max, product) = (
            last(&mut d, "sum"),
            last(&mut d, "min"),
            last(&mut d, "max"),
            last(&mut d, "product"),
        );
        let avg: HashMap<String, f64> = d
            .read_values::<(String, f64)>("avg", &Json::new())
            .into_iter()
            .collect();
        assert_eq!(sum.len(), 7);
        for (sensor, values) in &reference {
            assert_eq!(sum[sensor], values.iter().sum::<i64>(), "sum of {sensor}");
            assert_eq!(min[sensor], *values.iter().min().expect("values"), "min of {sensor}");
            assert_eq!(max[sensor], *values.iter().max().expect("values"), "max of {sensor}");
            assert_eq!(
                product[sensor],
                values.iter().fold(1i64, |p, v| p.wrapping_mul(*v)),
                "product of {sensor}"
            );
            let mean = values.iter().sum::<i64>() as f64 / values.len() as f64;
            assert!((avg[sensor] - mean).abs() < 1e-9, "avg of {sensor}");
        }
    }

    #[test]
    fn malformed_shuffle_records_go_through_the_policy_and_replays_are_dropped() {
        let mut d = TopologyTestDriver::with_error_policy(word_count_topology(), ErrorPolicy::DeadLetter);
        d.pipe_input_to_queue("wc-shuffle", 2, Bytes::from_static(b"\x09not a shuffle record"), 0)
            .expect("pipe");
        assert_eq!(d.metrics().dead_lettered, 1);
        assert!(
            d.dead_letters()[0].error.contains("shuffle"),
            "{}",
            d.dead_letters()[0].error
        );
        // The first format (one JSON record per message) is refused by name.
        d.pipe_input_to_queue("wc-shuffle", 2, Bytes::from_static(b"\x01old record"), 0)
            .expect("pipe");
        assert!(
            d.dead_letters()[1].error.contains("version 1"),
            "{}",
            d.dead_letters()[1].error
        );
        // The same shuffled record twice (a replay of the first stage): applied once.
        let w = Bytes::from(rmp_serde::to_vec_named("w").expect("msgpack"));
        let record = |offset, value: &Bytes| rocketmq_streams_shuffle::ShuffleRecord {
            node: 0,
            origin: rocketmq_streams_shuffle::Origin {
                queue: 9,
                offset,
                seq: 0,
            },
            timestamp: 0,
            key: w.clone(),
            value: value.clone(),
        };
        for _ in 0..2 {
            d.pipe_input_to_queue("wc-shuffle", 1, record(4, &w).to_frame(), 0)
                .expect("pipe");
        }
        let counts: Vec<(String, u64)> = d.read_values("counts", &Json::new());
        assert_eq!(counts, [("w".to_string(), 1)]);
        // A frame whose second record does not decode: the first counts,
        // the second alone is dead-lettered, framed by itself.
        let mut framer = rocketmq_streams_shuffle::Framer::new();
        let bad = Bytes::from_static(b"\xc1");
        for (offset, value) in [(5, &w), (6, &bad)] {
            let r = record(offset, value);
            framer.push(9, 0, r.origin.offset, 0, 0, &r.key, &r.value);
        }
        for frame in framer.finish() {
            d.pipe_input_to_queue("wc-shuffle", 1, frame, 0).expect("pipe");
        }
        assert_eq!(
            d.read_values::<(String, u64)>("counts", &Json::new()),
            [("w".to_string(), 2)]
        );
        let letter = &d.dead_letters()[2];
        assert!(letter.origin.ends_with("#1"), "{}", letter.origin);
        assert_eq!(letter.body, record(6, &bad).to_frame());
        // Replaying the whole frame applies nothing again.
        let replay = rocketmq_streams_shuffle::ShuffleRecord { ..record(6, &w) }.to_frame();
        d.pipe_input_to_queue("wc-shuffle", 1, replay, 0).expect("pipe");
        assert!(d.read_values::<(String, u64)>("counts", &Json::new()).is_empty());
        assert_eq!(d.metrics().dead_lettered, 3);
    }

    /// Issue 28: a send of several frames that the sink stored in part,
    /// failed, and sent again whole puts a run of frames into the shuffle
    /// queue twice (`F1 F2 F1 F2 F3`). Their origins are at or below the
    /// high-water marks by then: each record counts once.
    #[test]
    fn frames_stored_in_part_and_sent_again_count_once() {
        let mut d = TopologyTestDriver::new(word_count_topology());
        let key = |w: &str| Bytes::from(rmp_serde::to_vec_named(w).expect("msgpack"));
        let frame = |offset: i64, w: &str| {
            rocketmq_streams_shuffle::ShuffleRecord {
                node: 0,
                origin: rocketmq_streams_shuffle::Origin {
                    queue: 7,
                    offset,
                    seq: 0,
                },
                timestamp: 0,
                key: key(w),
                value: key(w),
            }
            .to_frame()
        };
        let sent = [(0, "a"), (1, "b"), (2, "a"), (3, "c")];
        // The first two stored, the send failed; then all four.
        for &(offset, w) in sent[..2].iter().chain(&sent) {
            d.pipe_input_to_queue("wc-shuffle", 0, frame(offset, w), 0)
                .expect("pipe");
        }
        let counts: Vec<(String, u64)> = d.read_values("counts", &Json::new());
        let expected = [("a", 1), ("b", 1), ("a", 2), ("c", 1)].map(|(w, n)| (w.to_string(), n));
        assert_eq!(counts, expected, "one update per record, none for the repeats");
    }
}
