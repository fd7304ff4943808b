//! The source: a lite-pull consumer in clustering mode with manual offset commits.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use crossbeam::channel::{Receiver, Sender};
use rocketmq_client_rust::{DefaultLitePullConsumer, MessageQueueListener};
use rocketmq_model::common::consumer::consume_from_where::ConsumeFromWhere;
use rocketmq_model::common::message::message_ext::MessageExt;
use rocketmq_model::common::message::message_queue::MessageQueue;
use rocketmq_model::common::message::MessageConst;

use crate::config::ClientConfig;
use crate::error::{Error, Operation, Result};
use crate::ids::{Offset, QueueId};
use crate::runtime::IoRuntime;

/// Where a consumer group that has no committed offset for a queue starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ConsumeFrom {
    /// From the first message still stored (the default for stream jobs: a new
    /// job processes the whole topic).
    #[default]
    First,
    /// From the end: only messages produced after the group first starts.
    Last,
}

/// Settings of a [`Source`].
#[derive(Debug, Clone)]
pub struct SourceConfig {
    /// The consumer group; every instance of a job uses the same one.
    pub group: String,
    /// The topics to consume.
    pub topics: Vec<String>,
    /// Where a queue without a committed offset starts.
    pub consume_from: ConsumeFrom,
    /// How many messages one pull request fetches from one queue.
    pub pull_batch_size: u32,
    /// How long one [`Source::poll`] waits for messages before returning empty.
    pub poll_timeout: Duration,
    /// The most records one [`Source::poll`] returns. A poll waits for the
    /// first pulled batch, then takes whatever else is already pulled while
    /// one more pull (`pull_batch_size`) still fits: with `max_poll_records`
    /// at least `pull_batch_size`, a poll never returns more.
    pub max_poll_records: usize,
    /// Messages the consumer pulls ahead and buffers for [`Source::poll`],
    /// over all its queues (RocketMQ's `pullThresholdForAll`); each queue
    /// stops at `min(1000, buffer_messages)` (`pullThresholdForQueue`) and
    /// at 100 MiB. A queue's next pull waits while the buffer holds more,
    /// so it can go over by up to one pull per queue. The client also sizes
    /// its queue of pulled batches by this number and accepts at most this
    /// many pulled batches a second: small values cap throughput.
    pub buffer_messages: u32,
    /// How long the broker holds a pull request open while a queue has no
    /// new messages (long polling). New messages end the wait at once, so
    /// this does not add latency; it bounds how long shutting the source
    /// down waits for in-flight pulls, at the cost of one idle pull request
    /// per queue per period. RocketMQ's default is 20 s.
    pub long_poll: Duration,
    /// Copy each message's keys, tags and user properties into
    /// [`Record::keys`], [`Record::tags`] and [`Record::properties`] (one
    /// allocation each). Default: off.
    pub with_properties: bool,
    /// A tag expression per topic (`"TagA || TagB"`, RocketMQ's syntax);
    /// a topic not named here takes every message (`*`). The broker filters
    /// by tag hash and the client by tag. Messages filtered out are never
    /// records, so a topic's committed offset only moves past the last
    /// message that matched.
    pub tags: HashMap<String, String>,
}

impl SourceConfig {
    /// A configuration with the defaults: consume from the first offset, pull
    /// 256 messages at a time, wait at most 100 ms per poll, return at most
    /// 1024 records per poll, buffer at most 10,000 messages pulled ahead.
    pub fn new(group: impl Into<String>, topics: impl IntoIterator<Item = impl Into<String>>) -> Self {
        Self {
            group: group.into(),
            topics: topics.into_iter().map(Into::into).collect(),
            consume_from: ConsumeFrom::First,
            pull_batch_size: 256,
            poll_timeout: Duration::from_millis(100),
            max_poll_records: 1024,
            buffer_messages: 10_000,
            long_poll: Duration::from_secs(1),
            with_properties: false,
            tags: HashMap::new(),
        }
    }
}

/// One consumed message: its position and its body.
///
/// `body` is the client's own buffer (a reference-counted `Bytes` slice of the
/// pull response): no copy is made between the network and user code.
#[derive(Debug, Clone)]
pub struct Record {
    /// The message's offset in its queue.
    pub offset: Offset,
    /// The message body.
    pub body: Bytes,
    /// When the producer created the message (ms since the epoch).
    pub born_timestamp: i64,
    /// When the broker stored the message (ms since the epoch).
    pub store_timestamp: i64,
    /// The message's user properties (every property but RocketMQ's
    /// own), if the source was configured `with_properties`; empty
    /// otherwise.
    pub properties: Vec<(String, String)>,
    /// The message's keys (RocketMQ's `KEYS`: space-separated), if the
    /// source was configured `with_properties` and it has any.
    pub keys: Option<String>,
    /// The message's tag (RocketMQ's `TAGS`), if the source was configured
    /// `with_properties` and it has one.
    pub tags: Option<String>,
    /// Why the message is no record, if it is not: the broker delivered it
    /// without a body (`body` is then empty). The engine routes such a
    /// message through its error policy with this reason instead of
    /// processing an empty body as if it had been sent.
    pub malformed: Option<String>,
}

impl Record {
    /// A record at `offset` with `body`, born and stored at `timestamp`, and
    /// no keys, tags or properties (what a test or a reader of raw bytes
    /// makes).
    pub fn new(offset: Offset, body: Bytes, timestamp: i64) -> Self {
        Self {
            offset,
            body,
            born_timestamp: timestamp,
            store_timestamp: timestamp,
            properties: Vec::new(),
            keys: None,
            tags: None,
            malformed: None,
        }
    }
}

/// A delivered message's body, and why it is no record if it has none
/// (see [`Record::malformed`]).
pub(crate) fn body_of(m: &MessageExt) -> (Bytes, Option<String>) {
    match m.body() {
        Some(body) => (body, None),
        None => (
            Bytes::new(),
            Some(format!(
                "message {} at offset {} of queue {} of {} has no body",
                m.msg_id(),
                m.queue_offset(),
                m.queue_id(),
                m.topic()
            )),
        ),
    }
}

/// The records one poll returned for one queue, in offset order.
#[derive(Debug, Clone)]
pub struct QueueBatch {
    /// The queue the records came from.
    pub queue: QueueId,
    /// The records, in increasing offset order.
    pub records: Vec<Record>,
}

impl QueueBatch {
    /// The offset to commit once every record of this batch is processed.
    pub fn next_offset(&self) -> Option<Offset> {
        self.records.last().map(|r| r.offset.next())
    }
}

/// A change of the queues the consumer group's rebalance gave this instance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AssignmentChange {
    /// The queue now belongs to this instance.
    Assigned(QueueId),
    /// The queue was taken away; records of it still in flight must not be
    /// committed.
    Revoked(QueueId),
}

/// A RocketMQ source: polls batches, reports assignment changes, commits
/// offsets of all assigned queues together.
///
/// Offsets are committed only by [`Source::commit`]; nothing is committed
/// automatically.
pub struct Source {
    io: Arc<IoRuntime>,
    consumer: Arc<DefaultLitePullConsumer>,
    changes: Receiver<AssignmentChange>,
    config: SourceConfig,
    /// The last offset committed (or known committed) per assigned queue.
    positions: HashMap<QueueId, Offset>,
    /// The rebalance listener, whose view [`Source::reconcile`] checks.
    listener: AssignmentListener,
    /// When each disagreement between the listener's view and the
    /// consumer's assignment was first seen.
    disagreed: HashMap<MessageQueue, Instant>,
    /// Queues assigned under [`ConsumeFrom::Last`] whose start is not
    /// fixed yet (see [`Source::fix_starts`]).
    unfixed: HashSet<QueueId>,
    /// Queues a poll returned records of since their assignment (under
    /// `Last` only; locked once a poll).
    delivered: Mutex<HashSet<QueueId>>,
}

/// Turns the consumer's rebalance callbacks into [`AssignmentChange`]s.
///
/// The lite pull consumer keeps *one* listener (the last one subscribed)
/// and calls it once per topic with that topic's assignment, so one
/// listener serves every topic and compares each call with the same
/// topic's previous assignment only.
#[derive(Clone)]
struct AssignmentListener {
    tx: Sender<AssignmentChange>,
    current: Arc<Mutex<HashMap<String, HashSet<MessageQueue>>>>,
    /// Calls of the listener so far (counted under `current`'s lock): a
    /// reconcile skips a round in which the listener was called while the
    /// consumer's assignment was being read.
    calls: Arc<AtomicU64>,
}

impl MessageQueueListener for AssignmentListener {
    fn message_queue_changed(&self, topic: &str, _mq_all: &HashSet<MessageQueue>, mq_assigned: &HashSet<MessageQueue>) {
        // Rebalance path, not the record path: a lock here is harmless.
        let mut current = self.current.lock().unwrap_or_else(|p| p.into_inner());
        self.calls.fetch_add(1, Ordering::Relaxed);
        let previous = current.entry(topic.to_owned()).or_default();
        for mq in previous.difference(mq_assigned) {
            let _ = self.tx.send(AssignmentChange::Revoked(QueueId::from_mq(mq)));
        }
        for mq in mq_assigned.difference(previous) {
            let _ = self.tx.send(AssignmentChange::Assigned(QueueId::from_mq(mq)));
        }
        *previous = mq_assigned.clone();
    }
}

/// How long the listener's view of a queue may disagree with the
/// consumer's assignment before [`Source::reconcile`] puts it right: longer
/// than a rebalance's own tasks take to call the listener (a revoke can
/// wait seconds for each queue's pull task to stop), shorter than waiting
/// for a change that will never come.
pub const RECONCILE_AFTER: Duration = Duration::from_secs(10);

impl AssignmentListener {
    /// A listener with an empty view, sending its changes to `tx`.
    fn new(tx: Sender<AssignmentChange>) -> Self {
        AssignmentListener {
            tx,
            current: Arc::default(),
            calls: Arc::default(),
        }
    }

    /// Compares the listener's view with `actual`, the consumer's
    /// assignment of every topic, read when the listener had been called
    /// `calls` times (if it was called since, nothing is done: `actual`
    /// may predate that call). A queue on which they have disagreed at
    /// every comparison since at least `after` ago (`disagreed` keeps when
    /// each disagreement was first seen) takes the consumer's side, and
    /// the change is sent as if the listener had been called. Returns how
    /// many were put right.
    ///
    /// Why: rocketmq-client-rust 1.0.0 calls the listener from a task of
    /// its own per rebalance, unordered (`default_lite_pull_consumer_impl.rs`,
    /// the internal listener spawns `update_assign_queue_and_start_pull_task`
    /// and then calls ours), and only when the rebalance changed the queue
    /// table. A slow revoke that finishes after the next assignment leaves
    /// the listener's view stale with nothing to correct it, while the
    /// consumer's assignment is rebuilt from the table at every rebalance.
    fn reconcile(
        &self,
        actual: &HashSet<MessageQueue>,
        calls: u64,
        disagreed: &mut HashMap<MessageQueue, Instant>,
        after: Duration,
    ) -> usize {
        let mut current = self.current.lock().unwrap_or_else(|p| p.into_inner());
        if self.calls.load(Ordering::Relaxed) != calls {
            return 0;
        }
        let now = Instant::now();
        let viewed: HashSet<MessageQueue> = current.values().flatten().cloned().collect();
        let differing: HashSet<&MessageQueue> = viewed.symmetric_difference(actual).collect();
        disagreed.retain(|mq, _| differing.contains(mq));
        let mut fixed = 0;
        for mq in differing {
            let since = *disagreed.entry(mq.clone()).or_insert(now);
            if now.duration_since(since) < after {
                continue;
            }
            disagreed.remove(mq);
            fixed += 1;
            let view = current.entry(mq.topic().to_string()).or_default();
            if actual.contains(mq) {
                view.insert(mq.clone());
                let _ = self.tx.send(AssignmentChange::Assigned(QueueId::from_mq(mq)));
            } else {
                view.remove(mq);
                let _ = self.tx.send(AssignmentChange::Revoked(QueueId::from_mq(mq)));
            }
        }
        fixed
    }
}

impl Source {
    /// Creates the consumer, subscribes to the topics and starts it.
    ///
    /// # Errors
    ///
    /// Returns an [`Operation::Source`] error if the consumer cannot be built,
    /// subscribed or started (for example, no name server at the address).
    pub async fn start(io: Arc<IoRuntime>, client: &ClientConfig, config: SourceConfig) -> Result<Source> {
        if config.topics.is_empty() {
            return Err(Error::permanent(Operation::Source, "a source needs at least one topic"));
        }
        let consume_from = match config.consume_from {
            ConsumeFrom::First => ConsumeFromWhere::ConsumeFromFirstOffset,
            ConsumeFrom::Last => ConsumeFromWhere::ConsumeFromLastOffset,
        };
        let mut builder = DefaultLitePullConsumer::builder(io.client_runtime());
        if let Some(credentials) = &client.credentials {
            builder = builder.rpc_hook(credentials.rpc_hook());
        }
        let consumer = builder
            .client_options(client.client_options())
            .consumer_group(config.group.clone())
            .name_server_addr(client.namesrv_addr.clone())
            .consume_from_where(consume_from)
            .pull_batch_size(i32::try_from(config.pull_batch_size).unwrap_or(i32::MAX))
            .pull_threshold_for_all(i64::from(config.buffer_messages.max(1)))
            .pull_threshold_for_queue(i64::from(config.buffer_messages.clamp(1, 1000)))
            .poll_timeout_millis(millis(config.poll_timeout))
            .auto_commit(false)
            .broker_suspend_max_time_millis(millis(config.long_poll))
            .consumer_timeout_millis_when_suspend(millis(config.long_poll) + 5_000)
            .build()
            .map_err(|e| Error::client(Operation::Source, "cannot build the consumer", e))?;
        let consumer = Arc::new(consumer);
        let (tx, rx) = crossbeam::channel::unbounded();
        let c = consumer.clone();
        let topics: Vec<(String, String)> = config
            .topics
            .iter()
            .map(|t| {
                (
                    t.clone(),
                    config
                        .tags
                        .get(t)
                        .map_or_else(|| "*".to_string(), |e| tag_expression(e)),
                )
            })
            .collect();
        let listener = AssignmentListener::new(tx);
        let subscribed = listener.clone();
        io.spawn(async move {
            let listener = subscribed;
            for (topic, expression) in &topics {
                c.subscribe_with_listener(topic, expression, listener.clone())
                    .await
                    .map_err(|e| Error::client(Operation::Source, &format!("cannot subscribe to {topic}"), e))?;
            }
            c.start()
                .await
                .map_err(|e| Error::client(Operation::Source, "cannot start the consumer", e))
        })
        .await??;
        Ok(Source {
            io,
            consumer,
            changes: rx,
            config,
            positions: HashMap::new(),
            listener,
            disagreed: HashMap::new(),
            unfixed: HashSet::new(),
            delivered: Mutex::default(),
        })
    }

    /// Fixes where each queue assigned under [`ConsumeFrom::Last`] with no
    /// committed offset starts (of the queues `of` selects: the others are
    /// left to the client), and commits it; returns how many were fixed.
    /// Call it now and then (the runtime does, every commit interval, for
    /// every queue but the shuffle topic's, whose owners resume from their
    /// state).
    ///
    /// Why: the client starts such a queue at its end when it first pulls
    /// it, but commits nothing until a record of it is processed. A queue
    /// that gets nothing new then shows the group behind by every message
    /// it held before the job began, forever, and whatever waits for the
    /// group to have consumed its input (a window's idle firing) waits
    /// forever too (issue 28). Here the queue is moved to its end by a
    /// seek (which drops what the client pulled before it, under its poll
    /// lock: nothing of it was returned by a poll, or the queue is left
    /// alone) and that end committed, so the group's committed offset
    /// says what this job will consume.
    ///
    /// # Errors
    ///
    /// An [`Operation::Source`] error if the broker cannot be asked; the
    /// queues not fixed are tried again at the next call.
    pub async fn fix_starts(&mut self, of: impl Fn(&QueueId) -> bool) -> Result<usize> {
        self.unfixed.retain(|q| of(q));
        let open: Vec<QueueId> = self.unfixed.iter().cloned().collect();
        let mut fixed = HashMap::new();
        for q in open {
            let delivered = self.delivered.lock().unwrap_or_else(|p| p.into_inner()).contains(&q);
            if delivered || self.positions.contains_key(&q) {
                // Records came, or an offset is known: nothing to fix.
                self.unfixed.remove(&q);
                continue;
            }
            let c = self.consumer.clone();
            let mq = q.to_mq();
            let outcome = self
                .io
                .spawn(async move {
                    if c.committed(&mq).await.is_ok_and(|o| o >= 0) {
                        return Ok(None);
                    }
                    let end = c.max_offset(&mq).await?;
                    c.seek(&mq, end).await?;
                    Ok::<_, rocketmq_client_rust::ClientError>(Some(end))
                })
                .await?;
            match outcome {
                Ok(None) => {
                    self.unfixed.remove(&q);
                }
                Ok(Some(end)) => {
                    self.unfixed.remove(&q);
                    fixed.insert(q, Offset(end));
                }
                // Not pulling yet ("not actively assigned"): next time.
                Err(e) => tracing::debug!(queue = %q, error = %e, "cannot fix the queue's start yet"),
            }
        }
        let n = fixed.len();
        if n > 0 {
            tracing::debug!(?fixed, "started queues without a committed offset at their end");
            self.commit(&fixed).await?;
        }
        Ok(n)
    }

    /// Checks the assignment reported so far against the consumer's own
    /// and reports, as [`AssignmentChange`]s for the next
    /// [`assignment_changes`](Self::assignment_changes), each queue on which
    /// they have disagreed for [`RECONCILE_AFTER`]: the consumer's rebalance
    /// can leave its listener stale (see the listener's `reconcile`). Call
    /// it now and then (the runtime does, every commit interval). Returns
    /// how many queues were put right.
    ///
    /// # Errors
    ///
    /// Returns an [`Operation::Source`] error if the consumer's assignment
    /// cannot be read; nothing is changed then.
    pub async fn reconcile(&mut self) -> Result<usize> {
        let calls = self.listener.calls.load(Ordering::Relaxed);
        let actual = self.consumer_assignment().await?;
        Ok(self
            .listener
            .reconcile(&actual, calls, &mut self.disagreed, RECONCILE_AFTER))
    }

    /// The consumer's own assignment, every topic's.
    async fn consumer_assignment(&self) -> Result<HashSet<MessageQueue>> {
        let c = self.consumer.clone();
        self.io
            .spawn(async move { c.assignment().await })
            .await?
            .map_err(|e| Error::client(Operation::Source, "cannot read the assignment", e))
    }

    /// The assignment changes since the last call, oldest first. Never blocks.
    pub fn assignment_changes(&mut self) -> Vec<AssignmentChange> {
        let changes: Vec<_> = self.changes.try_iter().collect();
        for change in &changes {
            match change {
                AssignmentChange::Revoked(q) => {
                    self.positions.remove(q);
                    self.unfixed.remove(q);
                    self.delivered.lock().unwrap_or_else(|p| p.into_inner()).remove(q);
                }
                AssignmentChange::Assigned(q) if self.config.consume_from == ConsumeFrom::Last => {
                    self.unfixed.insert(q.clone());
                }
                AssignmentChange::Assigned(_) => {}
            }
        }
        changes
    }

    /// The queues currently assigned to this instance.
    ///
    /// # Errors
    ///
    /// Returns an [`Operation::Source`] error if the consumer is not running.
    pub async fn assignment(&self) -> Result<HashSet<QueueId>> {
        Ok(self.consumer_assignment().await?.iter().map(QueueId::from_mq).collect())
    }

    /// Whether `queue` is assigned to this consumer now.
    ///
    /// # Errors
    ///
    /// Returns an [`Operation::Source`] error if the consumer is not running.
    pub async fn is_assigned(&self, queue: &QueueId) -> Result<bool> {
        Ok(self.assignment().await?.contains(queue))
    }

    /// Polls one batch: waits up to the poll timeout for messages of any
    /// assigned queue, then takes what else is already pulled (up to
    /// `max_poll_records`), and returns them grouped by queue. Empty when
    /// nothing arrived in time.
    ///
    /// # Errors
    ///
    /// Returns an [`Operation::Runtime`] error if the I/O runtime is gone.
    pub async fn poll(&self) -> Result<Vec<QueueBatch>> {
        let c = self.consumer.clone();
        let timeout = millis(self.config.poll_timeout);
        let max = self.config.max_poll_records.max(1);
        let pull = usize::try_from(self.config.pull_batch_size).unwrap_or(usize::MAX);
        let with_properties = self.config.with_properties;
        let batches = self
            .io
            .spawn(async move {
                // A pulled batch holds at most `pull` messages (the pull
                // request's maximum): take another only while it fits.
                let mut messages = c.poll_with_timeout_zero_copy(timeout).await;
                while !messages.is_empty() && messages.len().saturating_add(pull) <= max {
                    // A zero timeout takes an already pulled batch or nothing.
                    let more = c.poll_with_timeout_zero_copy(0).await;
                    if more.is_empty() {
                        break;
                    }
                    messages.extend(more);
                }
                group_by_queue(&messages, with_properties)
            })
            .await?;
        // Under `Last`, which queues came (a poll may bring a queue's
        // records before its assignment is reported).
        if self.config.consume_from == ConsumeFrom::Last && !batches.is_empty() {
            let mut delivered = self.delivered.lock().unwrap_or_else(|p| p.into_inner());
            for b in &batches {
                if !delivered.contains(&b.queue) {
                    delivered.insert(b.queue.clone());
                }
            }
        }
        Ok(batches)
    }

    /// Commits `offsets` (the next offset to consume, per queue) together
    /// with the last committed offset of every other assigned queue.
    ///
    /// The RocketMQ client forgets the offsets of queues left out of a
    /// commit, so every commit carries all assigned queues. Offsets of queues
    /// no longer assigned are dropped, never committed. The broker ignores an
    /// offset lower than the one it stores: moving back goes through
    /// [`crate::Admin::reset_offset`].
    ///
    /// # Errors
    ///
    /// Returns an [`Operation::Commit`] error if the assignment cannot be read.
    pub async fn commit(&mut self, offsets: &HashMap<QueueId, Offset>) -> Result<()> {
        let c = self.consumer.clone();
        let mut table: HashMap<QueueId, Offset> = self.positions.clone();
        for (q, o) in offsets {
            let e = table.entry(q.clone()).or_insert(*o);
            *e = (*e).max(*o);
        }
        let committed = self
            .io
            .spawn(async move {
                let assigned = c
                    .assignment()
                    .await
                    .map_err(|e| Error::client(Operation::Commit, "cannot read the assignment", e))?;
                let mut map = HashMap::with_capacity(assigned.len());
                let mut kept = HashMap::with_capacity(assigned.len());
                for mq in assigned {
                    let q = QueueId::from_mq(&mq);
                    let offset = match table.get(&q) {
                        Some(o) => *o,
                        None => match c.committed(&mq).await {
                            Ok(o) if o >= 0 => Offset(o),
                            // Nothing committed and nothing consumed yet:
                            // leave the queue to its consume-from rule.
                            _ => continue,
                        },
                    };
                    map.insert(mq, offset.0);
                    kept.insert(q, offset);
                }
                if !map.is_empty() {
                    // (An empty map only makes the client warn.)
                    c.commit_with_map(map, true).await;
                }
                Ok::<_, Error>(kept)
            })
            .await??;
        self.positions = committed;
        Ok(())
    }

    /// The offsets this source last committed, per assigned queue.
    pub fn committed(&self) -> &HashMap<QueueId, Offset> {
        &self.positions
    }

    /// Stops pulling `queues` (what the consumer pulled of them before may
    /// still come from [`poll`](Self::poll)) until [`resume`](Self::resume).
    pub async fn pause(&self, queues: Vec<QueueId>) {
        let c = self.consumer.clone();
        let _ = self
            .io
            .spawn(async move { c.pause(queues.iter().map(QueueId::to_mq).collect()).await })
            .await;
    }

    /// Pulls `queues` again after a [`pause`](Self::pause).
    pub async fn resume(&self, queues: Vec<QueueId>) {
        let c = self.consumer.clone();
        let _ = self
            .io
            .spawn(async move { c.resume(queues.iter().map(QueueId::to_mq).collect()).await })
            .await;
    }

    /// Stops the consumer. Offsets not committed before are not committed.
    ///
    /// Pauses every queue first and lets in-flight pulls finish (at most one
    /// long-poll period): the client's pull tasks otherwise race its shutdown
    /// and log a spurious pull error per queue.
    pub async fn shutdown(self) {
        let c = self.consumer.clone();
        let drain = self.config.long_poll + Duration::from_millis(100);
        let _ = self
            .io
            .spawn(async move {
                if let Ok(assigned) = c.assignment().await {
                    c.pause(assigned.into_iter().collect()).await;
                    tokio::time::sleep(drain).await;
                }
                c.shutdown().await
            })
            .await;
    }
}

/// The message's properties, less RocketMQ's own (its system property
/// names), sorted by name.
fn user_properties(m: &MessageExt) -> Vec<(String, String)> {
    let system = &rocketmq_model::common::message::STRING_HASH_SET;
    let mut out: Vec<(String, String)> = m
        .properties()
        .iter()
        .filter(|(k, _)| !system.contains(k.as_str()))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    out.sort();
    out
}

/// The tags a RocketMQ tag expression (`"A || B"`) names, trimmed; `None`
/// when it takes every tag (`*`, or blank).
pub fn tag_set(expression: &str) -> Option<Vec<&str>> {
    let tags: Vec<&str> = expression
        .split("||")
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .collect();
    (!tags.is_empty() && !tags.contains(&"*")).then_some(tags)
}

/// `expression` in the form rocketmq-client-rust 1.0.0 filters right:
/// its broker-side tag hashes are of the untrimmed tags, so `"A || B"`
/// would match nothing; `"A||B"` matches both.
pub(crate) fn tag_expression(expression: &str) -> String {
    tag_set(expression).map_or_else(|| "*".to_string(), |tags| tags.join("||"))
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

fn group_by_queue(messages: &[Arc<MessageExt>], with_properties: bool) -> Vec<QueueBatch> {
    let mut batches: Vec<QueueBatch> = Vec::new();
    for m in messages {
        let same = batches.iter_mut().find(|b| {
            b.queue.queue() as i32 == m.queue_id()
                && b.queue.broker() == m.broker_name()
                && b.queue.topic() == m.topic().as_str()
        });
        let (body, malformed) = body_of(m);
        let record = Record {
            offset: Offset(m.queue_offset()),
            body,
            malformed,
            born_timestamp: m.born_timestamp(),
            store_timestamp: m.store_timestamp(),
            properties: if with_properties {
                user_properties(m)
            } else {
                Vec::new()
            },
            keys: with_properties
                .then(|| m.property(MessageConst::PROPERTY_KEYS).map(str::to_string))
                .flatten(),
            tags: with_properties.then(|| m.tags().map(str::to_string)).flatten(),
        };
        match same {
            Some(b) => b.records.push(record),
            None => batches.push(QueueBatch {
                queue: QueueId::new(
                    m.topic().as_str(),
                    m.broker_name(),
                    u32::try_from(m.queue_id()).unwrap_or_default(),
                ),
                records: vec![record],
            }),
        }
    }
    for b in &mut batches {
        b.records.sort_by_key(|r| r.offset);
    }
    batches
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mq(topic: &str, id: i32) -> MessageQueue {
        MessageQueue::from_parts(topic, "broker-a", id)
    }

    fn set(queues: &[MessageQueue]) -> HashSet<MessageQueue> {
        queues.iter().cloned().collect()
    }

    /// Reconciles with an assignment read now (no listener call since).
    fn reconcile_now(
        listener: &AssignmentListener,
        actual: &HashSet<MessageQueue>,
        disagreed: &mut HashMap<MessageQueue, Instant>,
        after: Duration,
    ) -> usize {
        listener.reconcile(actual, listener.calls.load(Ordering::Relaxed), disagreed, after)
    }

    /// Issue 28: a message delivered without a body became an empty record,
    /// processed as if it had been sent so.
    #[test]
    fn a_message_without_a_body_is_marked_malformed_with_its_reason() {
        let m = MessageExt::default();
        let (body, why) = body_of(&m);
        assert!(body.is_empty());
        assert!(why.expect("a reason").contains("has no body"));
        let batches = group_by_queue(&[Arc::new(m)], false);
        assert!(batches[0].records[0].malformed.is_some());
    }

    #[test]
    fn a_stale_view_takes_the_consumers_assignment_once_the_disagreement_lasts() {
        let (tx, rx) = crossbeam::channel::unbounded();
        let listener = AssignmentListener::new(tx);
        let (a0, a1, a2) = (mq("a", 0), mq("a", 1), mq("a", 2));
        // The listener was last told a0 and a1; the consumer has a0 and a2
        // (a late revoke of a2 and a lost assignment of a1, say).
        listener.message_queue_changed("a", &set(&[a0.clone(), a1.clone()]), &set(&[a0.clone(), a1.clone()]));
        let _: Vec<_> = rx.try_iter().collect();
        let actual = set(&[a0.clone(), a2.clone()]);
        let mut disagreed = HashMap::new();
        let patience = Duration::from_millis(50);
        assert_eq!(
            reconcile_now(&listener, &actual, &mut disagreed, patience),
            0,
            "a fresh disagreement waits"
        );
        assert_eq!(disagreed.len(), 2);
        assert!(rx.try_iter().next().is_none());
        std::thread::sleep(patience * 2);
        assert_eq!(reconcile_now(&listener, &actual, &mut disagreed, patience), 2);
        let changes: Vec<_> = rx.try_iter().collect();
        assert_eq!(changes.len(), 2, "{changes:?}");
        assert!(changes.contains(&AssignmentChange::Revoked(QueueId::from_mq(&a1))));
        assert!(changes.contains(&AssignmentChange::Assigned(QueueId::from_mq(&a2))));
        assert!(disagreed.is_empty());
        // Agreed now: nothing more, and a later call of the listener diffs
        // against the corrected view.
        assert_eq!(reconcile_now(&listener, &actual, &mut disagreed, patience), 0);
        listener.message_queue_changed("a", &actual, &set(std::slice::from_ref(&a0)));
        assert_eq!(
            rx.try_iter().collect::<Vec<_>>(),
            vec![AssignmentChange::Revoked(QueueId::from_mq(&a2))]
        );
    }

    #[test]
    fn an_assignment_read_before_a_call_of_the_listener_is_not_acted_on() {
        let (tx, rx) = crossbeam::channel::unbounded();
        let listener = AssignmentListener::new(tx);
        let a0 = mq("a", 0);
        let mut disagreed = HashMap::new();
        let patience = Duration::ZERO;
        // The consumer's assignment, read before the listener is told a0.
        let calls = listener.calls.load(Ordering::Relaxed);
        let actual = set(&[]);
        listener.message_queue_changed("a", &set(std::slice::from_ref(&a0)), &set(std::slice::from_ref(&a0)));
        assert_eq!(listener.reconcile(&actual, calls, &mut disagreed, patience), 0);
        assert_eq!(
            rx.try_iter().collect::<Vec<_>>(),
            vec![AssignmentChange::Assigned(QueueId::from_mq(&a0))],
            "a0 stays assigned"
        );
    }

    #[test]
    fn a_disagreement_that_ends_by_itself_is_forgotten() {
        let (tx, rx) = crossbeam::channel::unbounded();
        let listener = AssignmentListener::new(tx);
        let a0 = mq("a", 0);
        let mut disagreed = HashMap::new();
        let patience = Duration::from_millis(50);
        // The consumer has a0 before the listener is called.
        assert_eq!(
            reconcile_now(&listener, &set(std::slice::from_ref(&a0)), &mut disagreed, patience),
            0
        );
        listener.message_queue_changed("a", &set(std::slice::from_ref(&a0)), &set(std::slice::from_ref(&a0)));
        std::thread::sleep(patience * 2);
        assert_eq!(
            reconcile_now(&listener, &set(std::slice::from_ref(&a0)), &mut disagreed, patience),
            0
        );
        assert!(disagreed.is_empty());
        assert_eq!(
            rx.try_iter().collect::<Vec<_>>(),
            vec![AssignmentChange::Assigned(QueueId::from_mq(&a0))],
            "only the listener's own change"
        );
    }

    #[test]
    fn one_listener_keeps_each_topics_assignment_apart() {
        let (tx, rx) = crossbeam::channel::unbounded();
        let listener = AssignmentListener::new(tx);
        let (a0, a1, b0) = (mq("a", 0), mq("a", 1), mq("b", 0));
        listener.message_queue_changed("a", &set(&[a0.clone(), a1.clone()]), &set(&[a0.clone(), a1.clone()]));
        // The consumer reports topic b on its own: a's queues stay assigned.
        listener.message_queue_changed("b", &set(std::slice::from_ref(&b0)), &set(std::slice::from_ref(&b0)));
        // A rebalance takes a1 away.
        listener.message_queue_changed("a", &set(&[a0.clone(), a1.clone()]), &set(std::slice::from_ref(&a0)));
        let changes: Vec<_> = rx.try_iter().collect();
        let revoked: Vec<_> = changes
            .iter()
            .filter_map(|c| match c {
                AssignmentChange::Revoked(q) => Some(q.clone()),
                AssignmentChange::Assigned(_) => None,
            })
            .collect();
        assert_eq!(revoked, vec![QueueId::from_mq(&a1)]);
        let assigned = changes
            .iter()
            .filter(|c| matches!(c, AssignmentChange::Assigned(_)))
            .count();
        assert_eq!(assigned, 3);
    }
}
