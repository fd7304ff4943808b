//! One shard: a pinned thread running a glommio executor that owns some
//! queues, runs their pipelines, sends their outputs and reports acked
//! offsets.

use std::collections::hash_map::Entry;
use std::collections::{HashMap, HashSet, VecDeque};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam::channel::Sender;
use rocketmq_streams_io::{Offset, OutRecord, QueueBatch, QueueId, QueueReader, SendAck, Sink};
use rocketmq_streams_state::{
    FenceProbe, LogChunk, LogRecord, OwnedQueue, ProtocolOptions, QueueStore, RestoreSummary, RocksDbOptions,
    StateError, StateLog,
};
use tracing::Instrument;

use super::handoff::{await_answers, write_handed, HandOff, HandOffLinks};
use super::idle::{input_consumed, InputReads};
use super::inbox::Inbox;
use super::metrics::{Latencies, ShardCounters, ShardId, ShuffleWritten};
use crate::error::{SerdeError, StreamsError};
use crate::message::{queue_of_key, EVENT_TIME_PROPERTY};
use crate::policy::{ErrorPolicy, Verdict};
use crate::processor::Context;
use crate::query::ShardAnswer;
use crate::runtime::task::QueueTask;
use crate::topology::Topology;

/// The longest pause between two tries of a failed send.
const MAX_SEND_PAUSE: Duration = Duration::from_secs(2);

/// What the coordinator tells a shard.
pub(crate) enum ShardMsg {
    /// Process these records of one owned queue.
    Batch(QueueBatch),
    /// The queue moved away: drop its pipeline.
    Revoke(QueueId),
    /// A commit interval passed: checkpoint the keyed queues that made
    /// progress since their last checkpoint (an idle stream's state and
    /// offsets would otherwise wait for its next batch).
    Tick,
    /// The keyed queue was assigned to this instance: claim and restore
    /// its state now, before its first batch (a consumer that does not
    /// deliver a queue's records is then caught up from the broker; see
    /// [`Shard::catch_up`]).
    Claim(QueueId),
    /// Read `store`'s value of the key `raw_key` (serialized as `key_by`
    /// does) from `queue`'s state, and answer on `reply`.
    Query {
        queue: QueueId,
        store: String,
        raw_key: bytes::Bytes,
        reply: crossbeam::channel::Sender<ShardAnswer>,
    },
}

/// What a shard tells the coordinator.
pub(crate) enum ShardEvent {
    /// Every output of the queue's records before `next` is acknowledged
    /// (`next` is `None` for a batch that moved no offset: a batch dropped
    /// because its queue failed).
    Acked {
        shard: ShardId,
        queue: QueueId,
        next: Option<Offset>,
        /// The batch was held while its queue restored, and reported
        /// [`ShardEvent::Held`] then: it is out of flight already.
        held: bool,
        /// The batch's records (given back to the in-flight count).
        records: usize,
    },
    /// A batch of a queue whose state is being restored is held until the
    /// restore ends: count it out of flight now (so the coordinator keeps
    /// feeding the shard's other queues); its `Acked` comes later.
    Held { shard: ShardId, records: usize },
    /// A batch of `queue` failed (policy `Fail`, or sends keep failing).
    /// The shard processes no further batch of that queue, so no later
    /// offset of it is ever acknowledged.
    Failed {
        shard: ShardId,
        queue: Option<QueueId>,
        error: StreamsError,
    },
    /// A checkpoint outside a batch (a tick, or the stop) made the state of
    /// `queue` durable up to `next`: that offset may be committed.
    Checkpointed { queue: QueueId, next: Offset },
    /// The shard has drained its inbox and stopped.
    Stopped(ShardId),
}

/// Everything a shard needs, moved onto its thread.
pub(crate) struct ShardSetup {
    pub(crate) id: ShardId,
    /// The instance's name in logs (see the job's span).
    pub(crate) instance: Arc<str>,
    pub(crate) core: Option<core_affinity::CoreId>,
    pub(crate) topology: Topology,
    pub(crate) inbox: Inbox<ShardMsg>,
    pub(crate) events: Sender<ShardEvent>,
    pub(crate) sink: Sink,
    /// Queues of each sink topic, by sink id.
    pub(crate) sink_routes: Arc<Vec<Vec<QueueId>>>,
    pub(crate) dlq_route: Arc<Vec<QueueId>>,
    pub(crate) policy: ErrorPolicy,
    /// How long sends are retried through a broker outage.
    pub(crate) outage: Duration,
    pub(crate) counters: Arc<ShardCounters>,
    /// Keyed state, when the topology has a `key_by`.
    pub(crate) state: Option<StateSetup>,
    /// The cross-core hand-off of shuffled records (`WriterShard` mode).
    pub(crate) hand_off: Option<HandOffLinks>,
}

/// How a shard keeps the state of the shuffle queues it owns.
pub(crate) struct StateSetup {
    /// The shuffle topic's queues, sorted; queue `i` keeps its state in
    /// `state_route[i]` (the runtime checked that both have as many).
    pub(crate) shuffle_route: Arc<Vec<QueueId>>,
    pub(crate) state_route: Arc<Vec<QueueId>>,
    /// What this instance wrote to the shuffle topic (for the lag metric).
    pub(crate) written: Arc<ShuffleWritten>,
    pub(crate) reader: QueueReader,
    /// Reads the group's lag: an idle step waits for the whole input.
    pub(crate) admin: rocketmq_streams_io::Admin,
    /// The job's state directory; each queue's RocksDB is a folder in it.
    pub(crate) dir: PathBuf,
    pub(crate) cache: usize,
    pub(crate) rocksdb: RocksDbOptions,
    pub(crate) commit_interval: Duration,
    /// Restore waits, snapshot interval.
    pub(crate) protocol: ProtocolOptions,
}

/// The state of one owned shuffle queue.
struct QueueState {
    /// The protocol's side: store, epoch, restored source offset.
    owned: OwnedQueue,
    /// Its state-topic queue.
    log: StateQueueLog,
    /// The offset after the last processed batch, and after the last checkpoint.
    next: Option<Offset>,
    checkpointed: Option<Offset>,
    last_checkpoint: Instant,
    /// When the queue last had a batch to process (or its state came).
    last_batch: Instant,
    /// The same, but never moved by a catch-up that found nothing to
    /// read: how long the queue has been idle, for its windows.
    quiet_since: Instant,
    /// The latest offset the queue's next batch may start at: the restored
    /// marker's `source_next`, then each processed batch's next offset.
    expected: Option<Offset>,
}

/// A keyed queue whose state a task of its own is restoring.
struct Restoring {
    /// Tells this restore's result from that of an earlier one of the
    /// same queue (revoked, then assigned again).
    generation: u64,
    /// The queue's batches that arrived meanwhile, in order, processed
    /// once the state is there; each with whether it was reported `Held`
    /// (the first [`MAX_HELD`]).
    held: VecDeque<(QueueBatch, bool)>,
    /// Dropping it (a revoke, the stop) cancels the restore.
    _task: glommio::Task<()>,
}

/// What a restore task sends back to its shard.
struct Restored {
    queue: QueueId,
    generation: u64,
    /// The restored queue, its summary, its state log, its index among the
    /// shuffle queues, and the offset to consume it from.
    result: Result<(OwnedQueue, RestoreSummary, StateQueueLog, usize, Offset), StateError>,
}

/// What `process` answers when a batch's queue was fenced under it: the
/// batch is held for the new restore instead of processed without state.
const REFENCED: &str = "internal: the queue was fenced while its batch was processed";

/// Whether `error` says the queue was fenced and is being restored again
/// ([`REFENCED`]): not a failure.
fn is_refenced(error: &StreamsError) -> bool {
    matches!(error, StreamsError::Topology(why) if why == REFENCED)
}

/// `Ok` for a [`REFENCED`] error (the queue's new restore carries on), the
/// error otherwise.
fn refenced_is_ok(error: StreamsError) -> Result<(), StreamsError> {
    if is_refenced(&error) {
        Ok(())
    } else {
        Err(error)
    }
}

/// How long an owned keyed queue may get no batch while records wait in
/// it before the shard reads them directly ([`Shard::catch_up`]).
const CATCH_UP_AFTER: Duration = Duration::from_secs(10);
/// Reads of one catch-up per tick.
const CATCH_UP_READS: usize = 16;

/// Batches of a restoring queue reported out of flight while held. Later
/// ones stay counted in flight, so the coordinator's back-pressure stops
/// polling for the shard: a slow restore holds bounded memory, and nothing
/// is dropped (a dropped batch would need a seek to be read again).
const MAX_HELD: usize = 16;

/// One state-topic queue as the `state` crate's protocol sees it: sends
/// through the job's sink (retried), reads through the state reader.
#[derive(Clone)]
pub(crate) struct StateQueueLog {
    sink: Sink,
    outage: Duration,
    reader: QueueReader,
    queue: QueueId,
}

impl StateQueueLog {
    fn error(&self, e: impl std::fmt::Display, retriable: bool) -> StateError {
        StateError::Log {
            queue: self.queue.to_string(),
            message: e.to_string(),
            retriable,
        }
    }
}

impl StateLog for StateQueueLog {
    fn name(&self) -> String {
        self.queue.to_string()
    }

    async fn append(&self, bodies: Vec<bytes::Bytes>) -> rocketmq_streams_state::Result<i64> {
        let records = bodies.into_iter().map(OutRecord::new).collect();
        match send_retrying(&self.sink, self.queue.clone(), records, self.outage, None).await {
            Ok(ack) => Ok(ack.last_offset.0),
            Err(e) => {
                let retriable = e.is_retriable();
                Err(self.error(e, retriable))
            }
        }
    }

    async fn bounds(&self) -> rocketmq_streams_state::Result<(i64, i64)> {
        let what = || format!("bounds of {}", self.queue);
        match read_retrying(what, self.outage, || self.reader.bounds(self.queue.clone())).await {
            Ok((first, end)) => Ok((first.0, end.0)),
            Err(e) => Err(self.error(&e, e.is_retriable())),
        }
    }

    async fn read(&self, from: i64, max: u32) -> rocketmq_streams_state::Result<LogChunk> {
        let what = || format!("read of {} at {from}", self.queue);
        match read_retrying(what, self.outage, || {
            self.reader.read(self.queue.clone(), Offset(from), max)
        })
        .await
        {
            Ok(chunk) => {
                // A state message without a body may be this engine's:
                // skipping it could lose state, so the restore stops.
                if let Some(why) = chunk.records.iter().find_map(|r| r.malformed.as_ref()) {
                    return Err(StateError::Malformed(format!("state topic {}: {why}", self.queue)));
                }
                Ok(LogChunk {
                    records: chunk
                        .records
                        .into_iter()
                        .map(|r| LogRecord {
                            offset: r.offset.0,
                            body: r.body,
                        })
                        .collect(),
                    next: chunk.next.0,
                })
            }
            Err(e) => Err(self.error(&e, e.is_retriable())),
        }
    }

    async fn pause(&self, pause: Duration) {
        glommio::timer::sleep(pause).await;
    }
}

/// The thread body of a shard.
pub(crate) fn run(setup: ShardSetup) {
    if let Some(core) = setup.core {
        if !core_affinity::set_for_current(core) {
            tracing::warn!(shard = %setup.id, core = core.id, "could not pin the shard to its core");
        }
    }
    if let Ok(mut t) = setup.counters.thread.lock() {
        *t = std::thread::current().name().map(str::to_owned);
    }
    let id = setup.id;
    let events = setup.events.clone();
    let executor = match glommio::LocalExecutorBuilder::default()
        .name(&format!("rmq-shard-{}", id.0))
        .make()
    {
        Ok(ex) => ex,
        Err(e) => {
            let _ = events.send(ShardEvent::Failed {
                shard: id,
                queue: None,
                error: StreamsError::Topology(format!("cannot start the glommio executor of {id}: {e}")),
            });
            let _ = events.send(ShardEvent::Stopped(id));
            return;
        }
    };
    let span = tracing::error_span!("shard", job = %setup.topology.job_id(), shard = id.0, instance = %setup.instance);
    executor.run(
        async move {
            rocketmq_streams_io::keep_awake();
            Shard::new(setup).run().await
        }
        .instrument(span),
    );
    let _ = events.send(ShardEvent::Stopped(id));
}

struct Shard {
    setup: ShardSetup,
    pipelines: HashMap<QueueId, QueueTask>,
    states: HashMap<QueueId, QueueState>,
    /// Queues whose batch failed: their later batches are dropped unacked.
    failed: HashSet<QueueId>,
    /// Batches sent so far: numbers this shard's hand-offs.
    batches: u64,
    /// Keyed queues whose state is being restored.
    restoring: HashMap<QueueId, Restoring>,
    /// Restores started so far: numbers them.
    generation: u64,
    restored_tx: futures::channel::mpsc::UnboundedSender<Restored>,
    restored_rx: futures::channel::mpsc::UnboundedReceiver<Restored>,
    ctx: Context,
    /// The group's lag on the source topics, when it was read (idle steps).
    lag: Option<(Instant, Result<HashMap<QueueId, u64>, rocketmq_streams_io::Error>)>,
    /// Latencies recorded since they were last published.
    latencies: Latencies,
    /// Set once the shard stops: a queue found fenced then is dropped,
    /// never claimed again (a claim would fence its live owner).
    stopping: bool,
}

impl Shard {
    fn new(setup: ShardSetup) -> Self {
        let mut ctx = Context::new(setup.topology.sink_topics().len());
        ctx.join_records = setup.counters.join_records.clone();
        let (restored_tx, restored_rx) = futures::channel::mpsc::unbounded();
        Self {
            setup,
            pipelines: HashMap::new(),
            states: HashMap::new(),
            failed: HashSet::new(),
            batches: 0,
            restoring: HashMap::new(),
            generation: 0,
            restored_tx,
            restored_rx,
            ctx,
            lag: None,
            stopping: false,
            latencies: Latencies::default(),
        }
    }

    async fn run(mut self) {
        let writer = self.setup.hand_off.as_mut().and_then(|h| h.from.take()).map(|from| {
            glommio::spawn_local(write_handed(
                from,
                self.setup.sink.clone(),
                self.setup.outage,
                self.setup.state.as_ref().map(|st| st.written.clone()),
            ))
            .detach()
        });
        self.serve().await;
        // Let go of the other shards' hand-off tasks, then keep writing what
        // they hand this one until they have let go too.
        if let Some(h) = self.setup.hand_off.as_mut() {
            h.to.clear();
        }
        if let Some(writer) = writer {
            writer.await;
        }
    }

    async fn serve(&mut self) {
        loop {
            // Finished restores first: a revoke handled after this select
            // then finds its queue's restore either installed or still
            // running (and cancels it), never finished with its database
            // open and its result unread.
            let next = {
                let restored = futures::StreamExt::next(&mut self.restored_rx);
                let msg = self.setup.inbox.recv();
                futures::pin_mut!(restored, msg);
                match futures::future::select(restored, msg).await {
                    futures::future::Either::Left((Some(restored), _)) => Err(restored),
                    // The shard holds a sender: never closed.
                    futures::future::Either::Left((None, _)) => break,
                    futures::future::Either::Right((Some(msg), _)) => Ok(msg),
                    futures::future::Either::Right((None, _)) => break,
                }
            };
            let alive = match next {
                Ok(msg) => self.handle(msg).await,
                Err(restored) => self.install(restored).await,
            };
            if !alive {
                return;
            }
        }
        // Restores still running are cancelled: their queues' offsets were
        // never acknowledged.
        self.restoring.clear();
        self.stopping = true;
        // Stopping: make every owned queue's state durable and report it.
        self.checkpoint_all().await;
    }

    /// Handles one message of the coordinator. Returns `false` when the
    /// coordinator is gone.
    async fn handle(&mut self, msg: ShardMsg) -> bool {
        match msg {
            ShardMsg::Revoke(queue) => {
                self.pipelines.remove(&queue);
                let held = self.restoring.remove(&queue).map(|r| r.held).unwrap_or_default();
                self.drop_state(&queue);
                self.release(held)
            }
            ShardMsg::Tick => self.checkpoint_all().await,
            ShardMsg::Claim(queue) => {
                if self.states.contains_key(&queue)
                    || self.restoring.contains_key(&queue)
                    || self.failed.contains(&queue)
                {
                    return true;
                }
                match self.start_restore(&queue) {
                    Ok(()) => true,
                    Err(error) => self.fail_queue(queue, error),
                }
            }
            ShardMsg::Query {
                queue,
                store,
                raw_key,
                reply,
            } => {
                // The asker may have given up: nothing to tell then.
                let _ = reply.send(self.query(&queue, &store, &raw_key));
                true
            }
            ShardMsg::Batch(batch) => {
                if self.failed.contains(&batch.queue) {
                    return self.drop_unprocessed(batch, false);
                }
                let keyed = self.setup.topology.shuffle_topic() == Some(batch.queue.topic());
                if keyed && !self.states.contains_key(&batch.queue) {
                    return self.hold(batch);
                }
                self.run_batch(batch, false).await
            }
        }
    }

    /// Marks `queue` failed (no later batch of it is processed) and tells
    /// the coordinator, which stops the job. Returns `false` when the
    /// coordinator is gone.
    fn fail_queue(&mut self, queue: QueueId, error: StreamsError) -> bool {
        self.failed.insert(queue.clone());
        let event = ShardEvent::Failed {
            shard: self.setup.id,
            queue: Some(queue),
            error,
        };
        self.setup.events.send(event).is_ok()
    }

    /// Reads `store`'s value of `raw_key` in `queue`'s state, between two
    /// batches (every record processed so far, checkpointed or not).
    fn query(&mut self, queue: &QueueId, store: &str, raw_key: &[u8]) -> ShardAnswer {
        let Some(read) = self.setup.topology.stores.get(store).cloned() else {
            return ShardAnswer::Failed(StreamsError::Topology(format!("no queryable store is named {store:?}")));
        };
        if self.restoring.contains_key(queue) {
            return ShardAnswer::NotReady;
        }
        // No state: no record of the queue came yet (or it just left).
        let Some(state) = self.states.get_mut(queue) else {
            return ShardAnswer::NotReady;
        };
        let Some(mut queue_store) = state.owned.take_store() else {
            return ShardAnswer::NotReady;
        };
        let answer = match read(&mut queue_store, raw_key) {
            Ok(value) => ShardAnswer::Value(value),
            Err(error) => ShardAnswer::Failed(error),
        };
        state.owned.put_store(queue_store);
        answer
    }

    /// Holds a batch of a keyed queue without state until its restore
    /// (started here if need be) ends. Returns `false` when the
    /// coordinator is gone.
    fn hold(&mut self, batch: QueueBatch) -> bool {
        if !self.restoring.contains_key(&batch.queue) {
            if let Err(error) = self.start_restore(&batch.queue) {
                return self.fail_queue(batch.queue.clone(), error);
            }
        }
        let shard = self.setup.id;
        let Some(restoring) = self.restoring.get_mut(&batch.queue) else {
            return true;
        };
        let reported = restoring.held.len() < MAX_HELD;
        let records = batch.records.len();
        restoring.held.push_back((batch, reported));
        !reported || self.setup.events.send(ShardEvent::Held { shard, records }).is_ok()
    }

    /// Drops held batches of a queue that left the shard (see
    /// [`Shard::drop_unprocessed`]). Returns `false` when the coordinator
    /// is gone.
    fn release(&self, held: VecDeque<(QueueBatch, bool)>) -> bool {
        held.into_iter()
            .all(|(batch, reported)| self.drop_unprocessed(batch, reported))
    }

    /// Drops `batch` unprocessed (its queue failed or left the shard), so
    /// never acknowledged, and gives its records back to the coordinator's
    /// in-flight count (`reported`: reported `Held` before). Returns `false`
    /// when the coordinator is gone.
    fn drop_unprocessed(&self, batch: QueueBatch, reported: bool) -> bool {
        let event = ShardEvent::Acked {
            shard: self.setup.id,
            records: batch.records.len(),
            queue: batch.queue,
            next: None,
            held: reported,
        };
        self.setup.events.send(event).is_ok()
    }

    /// Holds again a batch whose queue was fenced while it was processed
    /// (`reported`: reported `Held` before).
    fn hold_again(&mut self, batch: QueueBatch, reported: bool) -> bool {
        let shard = self.setup.id;
        let Some(restoring) = self.restoring.get_mut(&batch.queue) else {
            // Revoked meanwhile.
            return self.drop_unprocessed(batch, reported);
        };
        let report = !reported && restoring.held.len() < MAX_HELD;
        let records = batch.records.len();
        restoring.held.push_back((batch, reported || report));
        !report || self.setup.events.send(ShardEvent::Held { shard, records }).is_ok()
    }

    /// Processes one batch and reports it (`held`: reported `Held` before).
    /// Returns `false` when the coordinator is gone.
    async fn run_batch(&mut self, batch: QueueBatch, held: bool) -> bool {
        // Error-level spans: enabled whatever the filter, so every event of
        // the job names its job, shard and queue.
        let span = tracing::error_span!("queue", queue = %batch.queue, records = batch.records.len());
        let started = Instant::now();
        let processed = self.process(&batch).instrument(span).await;
        if processed.is_ok() {
            let done = Instant::now();
            Latencies::record(&mut self.latencies.processing, micros(done - started));
            let now_ms = crate::operators::stream_time::wall_clock_ms();
            for r in &batch.records {
                let waited = u64::try_from(now_ms - r.born_timestamp).unwrap_or(0);
                Latencies::record(&mut self.latencies.end_to_end, waited.saturating_mul(1_000));
            }
        }
        if processed.as_ref().is_err_and(is_refenced) {
            return self.hold_again(batch, held);
        }
        let event = match processed {
            Ok(next) => ShardEvent::Acked {
                shard: self.setup.id,
                queue: batch.queue.clone(),
                next,
                held,
                records: batch.records.len(),
            },
            Err(error) => return self.fail_queue(batch.queue.clone(), error),
        };
        self.setup.events.send(event).is_ok()
    }

    /// Checkpoints every owned keyed queue that moved since its last
    /// checkpoint and reports each new offset. Returns `false` when the
    /// coordinator is gone.
    async fn checkpoint_all(&mut self) -> bool {
        let queues: Vec<QueueId> = self.states.keys().cloned().collect();
        for queue in queues {
            let span = tracing::error_span!("queue", queue = %queue);
            if !self.tick_queue(queue).instrument(span).await {
                return false;
            }
        }
        self.setup.counters.publish(&mut self.latencies);
        true
    }

    /// The tick of one keyed queue (see [`checkpoint_all`](Self::checkpoint_all)).
    /// Returns `false` when the coordinator is gone.
    async fn tick_queue(&mut self, queue: QueueId) -> bool {
        if self.failed.contains(&queue) {
            return true;
        }
        if let Err(error) = self.catch_up(&queue).await.or_else(refenced_is_ok) {
            return self.fail_queue(queue, error);
        }
        match self
            .idle_step(&queue)
            .await
            .or_else(|e| refenced_is_ok(e).map(|()| None))
        {
            Ok(Some(next)) => {
                let event = ShardEvent::Checkpointed {
                    queue: queue.clone(),
                    next,
                };
                if self.setup.events.send(event).is_err() {
                    return false;
                }
            }
            Ok(None) => {}
            Err(error) => return self.fail_queue(queue, error),
        }
        if self.failed.contains(&queue) {
            return true;
        }
        let event = match self.checkpoint(&queue).await {
            Ok(Some(next)) => ShardEvent::Checkpointed { queue, next },
            Ok(None) => {
                if let Some(st) = self.states.get_mut(&queue) {
                    st.owned.snapshot_if_old(&st.log).await;
                }
                return true;
            }
            Err(error) => return self.fail_queue(queue, error),
        };
        self.setup.events.send(event).is_ok()
    }

    /// Event time on a quiet queue: once a keyed queue has had no batch
    /// for a window's idle timeout, its stream time follows the wall clock
    /// ([`QueueTask::idle`]). A step that closes windows is made
    /// durable by a checkpoint before they fire: a restart in between
    /// fires them again with the same numbers (so a downstream stage's
    /// high-water marks drop the repeats), never folds a new record into
    /// them. What the firing deleted is left for the next checkpoint.
    /// Returns the offset that checkpoint reported, if any.
    async fn idle_step(&mut self, queue: &QueueId) -> Result<Option<Offset>, StreamsError> {
        let Some(st) = self.states.get_mut(queue) else {
            return Ok(None);
        };
        // Nothing processed and nothing restored: no window is open.
        let Some(next) = st.next.or(st.expected) else {
            return Ok(None);
        };
        let idle_ms = i64::try_from(st.quiet_since.elapsed().as_millis()).unwrap_or(i64::MAX);
        let last = next.0 - 1;
        let s = &self.setup;
        let task = task_of(&mut self.pipelines, s, queue)?;
        self.ctx.store = st.owned.take_store();
        let mut dead = Vec::new();
        let resumed = task.resume(last, &mut self.ctx, &mut |body, error, at| {
            s.judge(body, error, at, &mut dead)
        });
        if let Some(store) = self.ctx.store.take() {
            st.owned.put_store(store);
        }
        // (A step that fails leaves no output behind: `QueueTask` sees to it.)
        resumed?;
        // What the resume fired goes out first.
        self.send_any(queue, dead).await?;
        let (Some(task), Some(st)) = (self.pipelines.get_mut(queue), self.states.get_mut(queue)) else {
            return Ok(None);
        };
        self.ctx.store = st.owned.take_store();
        // Nothing is emitted from here to the rollback: only the store's
        // writes are undone.
        let mark = self.ctx.mark();
        let due = task.idle(last, idle_ms, &mut self.ctx);
        if let Some(store) = self.ctx.store.take() {
            st.owned.put_store(store);
        }
        let due = due?;
        if !due {
            return Ok(None);
        }
        let consumed = match input_consumed(self, queue, next).await {
            Ok(consumed) => consumed,
            Err(StreamsError::State(e @ StateError::Fenced { .. })) => return Err(self.refence(queue, e)),
            Err(e) => return Err(e),
        };
        if !consumed {
            if let Some(st) = self.states.get_mut(queue) {
                self.ctx.store = st.owned.take_store();
                self.ctx.rollback(mark);
                if let Some(store) = self.ctx.store.take() {
                    st.owned.put_store(store);
                }
            }
            return Ok(None);
        }
        if let Some(st) = self.states.get_mut(queue) {
            st.next = Some(next);
        }
        tracing::debug!(%queue, idle_ms, "idle queue: its stream time follows the wall clock");
        let checkpointed = self.checkpoint(queue).await?;
        // A fenced checkpoint dropped the queue: its new restore fires.
        let (Some(task), Some(st)) = (self.pipelines.get_mut(queue), self.states.get_mut(queue)) else {
            return Ok(checkpointed);
        };
        self.ctx.store = st.owned.take_store();
        let mut dead = Vec::new();
        let s = &self.setup;
        let fired = task.fire_idle(last, &mut self.ctx, &mut |body, error, at| {
            s.judge(body, error, at, &mut dead)
        });
        if let Some(store) = self.ctx.store.take() {
            st.owned.put_store(store);
        }
        fired?;
        self.send_any(queue, dead).await?;
        Ok(checkpointed)
    }

    /// Sends what the context holds, if anything (see [`send_outputs`](Self::send_outputs)).
    async fn send_any(&mut self, queue: &QueueId, dead: Vec<OutRecord>) -> Result<(), StreamsError> {
        if dead.is_empty() && self.ctx.shuffle.is_empty() && self.ctx.outputs.iter().all(Vec::is_empty) {
            return Ok(());
        }
        self.send_outputs(queue, dead).await
    }

    /// A keyed queue that has had no batch for [`CATCH_UP_AFTER`] while
    /// records wait in it past its state is read straight from the broker
    /// (at most [`CATCH_UP_READS`] reads a tick). Seen under rebalance churn:
    /// the lite-pull consumer no longer delivering a queue assigned to it.
    /// What the consumer delivers later is below the state's offsets, and
    /// dropped as replayed.
    ///
    /// The cause, read in rocketmq-client-rust 1.0.0
    /// (`default_lite_pull_consumer_impl.rs`): every assignment change runs
    /// as its own task, unordered, updating the assigned map and then the
    /// pull-task registry in two steps. A queue taken away and given back
    /// can end in the map (so `assignment()` lists it) with no registry
    /// entry and no pull task, until the client's next periodic rebalance
    /// (20 s when balanced) rebuilds the tasks; a `seek` cannot restart it
    /// ("not actively assigned"). Reading the queue here does not depend
    /// on when, or whether, the client heals.
    async fn catch_up(&mut self, queue: &QueueId) -> Result<(), StreamsError> {
        let Some(st) = self.states.get(queue) else {
            return Ok(());
        };
        let Some(expected) = st.expected else {
            return Ok(());
        };
        if st.last_batch.elapsed() < CATCH_UP_AFTER {
            return Ok(());
        }
        let Some(state) = &self.setup.state else {
            return Ok(());
        };
        // A read that fails before anything is applied is tried again at
        // the next tick (the broker busy, or away for a moment).
        let (_, end) = match state.reader.bounds(queue.clone()).await {
            Ok(Ok(bounds)) => bounds,
            Ok(Err(error)) | Err(error) if error.is_retriable() => {
                tracing::warn!(%queue, %error, "catch-up: cannot read the queue's end; the next tick tries again");
                return Ok(());
            }
            Ok(Err(error)) | Err(error) => return Err(error.into()),
        };
        if end <= expected {
            if let Some(st) = self.states.get_mut(queue) {
                st.last_batch = Instant::now();
            }
            return Ok(());
        }
        tracing::warn!(%queue, %expected, %end, "no batch delivered for {CATCH_UP_AFTER:?} while records wait; reading them directly");
        for _ in 0..CATCH_UP_READS {
            let Some(from) = self.states.get(queue).and_then(|st| st.expected) else {
                break;
            };
            if from >= end {
                break;
            }
            let batch = match self.read_gap(queue, from, end).await {
                Ok(batch) => batch,
                Err(error) if error.is_retriable() => {
                    tracing::warn!(%queue, %error, "catch-up: read failed; the next tick tries again");
                    break;
                }
                Err(error) => return Err(error),
            };
            if let Some(next) = self.process_one(&batch, true).await? {
                if self
                    .setup
                    .events
                    .send(ShardEvent::Checkpointed {
                        queue: queue.clone(),
                        next,
                    })
                    .is_err()
                {
                    break;
                }
            }
        }
        Ok(())
    }

    /// Forgets a queue that moved away. Its local database is kept: if the
    /// queue comes back, the restore replays only what was written since.
    fn drop_state(&mut self, queue: &QueueId) {
        if let Some(state) = self.states.remove(queue) {
            state.owned.close();
        }
    }

    /// Starts claiming shuffle queue `queue`'s state queue and bringing its
    /// local store up to date (the `state` crate's [`OwnedQueue::claim`])
    /// as a task of its own: the shard's other queues go on meanwhile.
    /// Batches of `queue` that arrive before it is done are dropped
    /// unprocessed; once it is, the queue is consumed again from where its
    /// state ends (see [`Shard::install`]).
    fn start_restore(&mut self, queue: &QueueId) -> Result<(), StreamsError> {
        let s = &self.setup;
        let Some(state) = &s.state else {
            return Err(StreamsError::Topology(format!(
                "{queue} is keyed but the job has no state"
            )));
        };
        let Some(index) = state.shuffle_route.iter().position(|q| q == queue) else {
            return Err(StreamsError::Topology(format!(
                "{queue} is not a queue of the shuffle topic"
            )));
        };
        let Some(state_queue) = state.state_route.get(index).cloned() else {
            return Err(StreamsError::Topology(format!(
                "{queue} has no state queue (the state topic has {} queues)",
                state.state_route.len()
            )));
        };
        let dir = state
            .dir
            .join(format!("{}-{}-{}", queue.topic(), queue.broker(), queue.queue()));
        let log = StateQueueLog {
            sink: s.sink.clone(),
            outage: s.outage,
            reader: state.reader.clone(),
            queue: state_queue,
        };
        let (cache, rocksdb, protocol) = (state.cache, state.rocksdb.clone(), state.protocol.clone());
        self.generation += 1;
        let generation = self.generation;
        tracing::debug!(%queue, generation, "restore started");
        let done = self.restored_tx.clone();
        let task_queue = queue.clone();
        let span = tracing::error_span!("queue", queue = %queue, restore = generation);
        let task = glommio::spawn_local(async move {
            let result = restore_queue(&task_queue, &log, &dir, cache, &rocksdb, protocol)
                .instrument(span)
                .await
                .map(|(owned, summary, resume)| (owned, summary, log, index, resume));
            let _ = done.unbounded_send(Restored {
                queue: task_queue,
                generation,
                result,
            });
        });
        self.restoring.insert(
            queue.clone(),
            Restoring {
                generation,
                held: VecDeque::new(),
                _task: task,
            },
        );
        Ok(())
    }

    /// Takes a finished restore: installs the queue's state and asks for
    /// the queue to be consumed again from where the state ends (or from
    /// the first batch dropped meanwhile, before any marker). Returns
    /// `false` when the coordinator is gone.
    async fn install(&mut self, restored: Restored) -> bool {
        let Restored {
            queue,
            generation,
            result,
        } = restored;
        // A restore of a queue revoked since (and maybe assigned again).
        if self.restoring.get(&queue).is_none_or(|r| r.generation != generation) {
            if let Ok((owned, ..)) = result {
                owned.close();
            }
            return true;
        }
        let Some(restoring) = self.restoring.remove(&queue) else {
            return true;
        };
        let outcome = match result {
            Ok((owned, summary, log, index, resume)) => {
                let mut routed = Ok(());
                for (offset, body, why) in &summary.malformed {
                    let at = format!("{}:{offset}", log.queue);
                    routed = route_malformed_state(&self.setup, index, body, why.clone(), at).await;
                    if routed.is_err() {
                        break;
                    }
                }
                routed.map(|()| (owned, summary, log, resume))
            }
            Err(e) => Err(e.into()),
        };
        let (owned, summary, log, resume) = match outcome {
            Ok(restored) => restored,
            // The job stops on this event (its in-flight count no longer matters).
            Err(error) => return self.fail_queue(queue, error),
        };
        ShardCounters::add(&self.setup.counters.restored, summary.applied);
        tracing::info!(%queue, epoch = owned.epoch(), source_next = ?owned.source_next(),
            from_local = summary.from_local, markers = summary.markers, applied = summary.applied,
            discarded = summary.discarded, ignored = summary.ignored, "state restored");
        self.states.insert(
            queue.clone(),
            QueueState {
                expected: Some(resume),
                owned,
                log,
                next: None,
                checkpointed: None,
                last_checkpoint: Instant::now(),
                last_batch: Instant::now(),
                quiet_since: Instant::now(),
            },
        );
        // The held batches, in order; before one that starts past `resume`
        // (an old owner committed past the state), the records in between
        // are read and processed first (`gap`).
        let mut held = restoring.held;
        while let Some((batch, reported)) = held.pop_front() {
            if self.failed.contains(&queue) {
                // An earlier held batch failed the queue: the rest are
                // never processed.
                held.push_front((batch, reported));
                return self.release(held);
            }
            if !self.states.contains_key(&queue) {
                // A checkpoint of an earlier held batch met a newer claim
                // and a new restore began: the rest wait for it.
                let Some(next) = self.restoring.get_mut(&queue) else {
                    held.push_front((batch, reported));
                    return self.release(held);
                };
                next.held.push_back((batch, reported));
                next.held.extend(held);
                return true;
            }
            if !self.run_batch(batch, reported).await {
                return false;
            }
        }
        true
    }

    /// The commit protocol of the `state` crate for one queue
    /// ([`OwnedQueue::checkpoint`]). Returns the source offset now safe to
    /// commit, if it moved. A fenced owner drops the queue.
    async fn checkpoint(&mut self, queue: &QueueId) -> Result<Option<Offset>, StreamsError> {
        // Held results go out, acknowledged, before the marker that makes
        // the state behind them durable.
        // A newer owner met there: the queue is being restored again.
        if let Err(error) = self.flush(queue).await {
            return refenced_is_ok(error).map(|()| None);
        }
        let Some(state) = self.states.get_mut(queue) else {
            return Ok(None);
        };
        let Some(next) = state.next else {
            return Ok(None);
        };
        if state.checkpointed == Some(next) && state.owned.store().is_none_or(|st| st.dirty_len() == 0) {
            return Ok(None);
        }
        let started = Instant::now();
        let result = self.checkpoint_now(queue, next).await;
        if matches!(result, Ok(Some(_))) {
            Latencies::record(&mut self.latencies.checkpoint, micros(started.elapsed()));
        }
        result
    }

    /// The checkpoint of `queue` up to `next` (see [`checkpoint`](Self::checkpoint)).
    async fn checkpoint_now(&mut self, queue: &QueueId, next: Offset) -> Result<Option<Offset>, StreamsError> {
        let s = &self.setup;
        let Some(state) = self.states.get_mut(queue) else {
            return Ok(None);
        };
        match state.owned.checkpoint(&state.log, next.0).await {
            Ok(_) => {}
            Err(e @ StateError::Fenced { .. }) => {
                let error = self.refence(queue, e);
                return refenced_is_ok(error).map(|()| None);
            }
            Err(e) => return Err(e.into()),
        }
        state.checkpointed = Some(next);
        state.last_checkpoint = Instant::now();
        ShardCounters::add(&s.counters.checkpoints, 1);
        Ok(Some(next))
    }

    /// A newer owner claimed `queue` (`fenced` says so): drops its state,
    /// pipeline and unsent outputs and claims it again at once. While the
    /// queue stays assigned here (a rebalance that briefly gave it to two
    /// instances), its next batches are held until the new restore (which
    /// reads the other owner's writes) ends; if it moved away, its revoke
    /// cancels that restore (and while the shard stops, none starts).
    /// Returns [`REFENCED`] as a `Topology` error
    /// (the batch at hand is held again), or the error of a restore that
    /// could not start.
    fn refence(&mut self, queue: &QueueId, fenced: StateError) -> StreamsError {
        tracing::warn!(%queue, error = %fenced, "a newer owner claimed the queue; restoring it again");
        ShardCounters::add(&self.setup.counters.fenced, 1);
        self.pipelines.remove(queue);
        self.drop_state(queue);
        self.ctx.discard_outputs();
        if self.stopping {
            return StreamsError::Topology(REFENCED.into());
        }
        match self.start_restore(queue) {
            Ok(()) => StreamsError::Topology(REFENCED.into()),
            Err(error) => error,
        }
    }

    /// Emits what the queue's pipeline held back (the latest results of
    /// `Emit::OnCommit` aggregations), routes those that fail through the
    /// error policy, and sends the outputs, awaiting their
    /// acknowledgements.
    async fn flush(&mut self, queue: &QueueId) -> Result<(), StreamsError> {
        let (Some(task), Some(st)) = (self.pipelines.get_mut(queue), self.states.get_mut(queue)) else {
            return Ok(());
        };
        self.ctx.store = st.owned.take_store();
        let outcome = task.flush(&mut self.ctx);
        if let Some(store) = self.ctx.store.take() {
            st.owned.put_store(store);
        }
        outcome?;
        let mut dead = Vec::new();
        for (body, error) in std::mem::take(&mut self.ctx.flush_failures) {
            if let Err(error) = self.setup.judge(&body, &error, format!("{queue}:flush"), &mut dead) {
                self.ctx.discard_outputs();
                return Err(error);
            }
        }
        self.send_any(queue, dead).await
    }

    /// The offsets `[from, until)` of a keyed queue that come before
    /// `batch` but after what the queue's state covers: its consumer offset
    /// was committed past that state by another owner (a rebalance that
    /// briefly gave the queue to two instances, an old owner that ran on),
    /// or this owner's consumer had read on before its queue was fenced.
    fn gap(&self, batch: &QueueBatch) -> Option<(Offset, Offset)> {
        let expected = self.states.get(&batch.queue)?.expected?;
        let first = batch.records.first()?.offset;
        (first > expected).then_some((expected, first))
    }

    /// Reads the records `[from, until)` of `queue` (at most one read's
    /// worth) straight from the broker, as a batch to process before the
    /// one that came with a gap. The consumer is not moved: a seek of the
    /// lite-pull consumer was seen to leave a queue undelivered during
    /// rebalance churn.
    async fn read_gap(&self, queue: &QueueId, from: Offset, until: Offset) -> Result<QueueBatch, StreamsError> {
        let Some(state) = &self.setup.state else {
            return Err(StreamsError::Topology(format!(
                "{queue} is keyed but the job has no state"
            )));
        };
        let max = u32::try_from(until.0 - from.0).unwrap_or(u32::MAX).min(1024);
        let what = || format!("read of {queue} at {from}");
        let chunk = read_retrying(what, self.setup.outage, || state.reader.read(queue.clone(), from, max)).await?;
        let records: Vec<_> = chunk.records.into_iter().filter(|r| r.offset < until).collect();
        match records.first() {
            Some(r) if r.offset == from => {}
            _ => {
                return Err(StreamsError::Topology(format!(
                    "{queue}: records {from}..{until} must be processed again but cannot be read \
                     (deleted by the broker's retention?)"
                )))
            }
        }
        tracing::info!(%queue, %from, %until, records = records.len(),
            "reading records the queue's state does not cover yet");
        Ok(QueueBatch {
            queue: queue.clone(),
            records,
        })
    }

    async fn process(&mut self, batch: &QueueBatch) -> Result<Option<Offset>, StreamsError> {
        let keyed = self.setup.topology.shuffle_topic() == Some(batch.queue.topic());
        if keyed && !self.states.contains_key(&batch.queue) {
            // `handle` and `install` hold such batches instead.
            return Err(StreamsError::Topology(format!(
                "internal: a batch of {} reached processing without its state",
                batch.queue
            )));
        }
        let mut checkpointed = None;
        if keyed {
            while let Some((from, until)) = self.gap(batch) {
                let gap = self.read_gap(&batch.queue, from, until).await?;
                checkpointed = self.process_one(&gap, true).await?.max(checkpointed);
            }
            if !self.states.contains_key(&batch.queue) {
                // A checkpoint of the gap met a newer claim: the batch waits
                // for the new restore (`run_batch` holds it).
                return Err(StreamsError::Topology(REFENCED.into()));
            }
        }
        Ok(self.process_one(batch, keyed).await?.max(checkpointed))
    }

    /// Processes one batch whose predecessors are processed; returns the
    /// offset a checkpoint made durable, or the batch's next offset for a
    /// stateless queue.
    async fn process_one(&mut self, batch: &QueueBatch, keyed: bool) -> Result<Option<Offset>, StreamsError> {
        if keyed {
            self.ctx.store = self.states.get_mut(&batch.queue).and_then(|st| st.owned.take_store());
        }
        let outcome = self.run_records(batch);
        if let Some(store) = self.ctx.store.take() {
            if let Some(st) = self.states.get_mut(&batch.queue) {
                st.owned.put_store(store);
            }
        }
        let dead = outcome?;
        self.send_any(&batch.queue, dead).await?;
        if !keyed {
            return Ok(batch.next_offset());
        }
        // Checkpoints are due every commit interval (under load, at the
        // batch that passes it; when idle, at the coordinator's tick) and
        // whenever the write-back cache is full.
        let due = match self.states.get_mut(&batch.queue) {
            Some(st) => {
                // A batch entirely below what was processed moves neither.
                st.last_batch = Instant::now();
                st.quiet_since = st.last_batch;
                st.next = batch.next_offset().max(st.next);
                st.expected = st.next.max(st.expected);
                let interval = self.setup.state.as_ref().map_or(Duration::ZERO, |c| c.commit_interval);
                st.last_checkpoint.elapsed() >= interval || st.owned.store().is_some_and(|s| QueueStore::is_full(s))
            }
            None => false,
        };
        if due {
            self.checkpoint(&batch.queue).await
        } else {
            Ok(None)
        }
    }

    /// Runs the batch's records through the queue's pipeline; returns the
    /// dead letters to send.
    fn run_records(&mut self, batch: &QueueBatch) -> Result<Vec<OutRecord>, StreamsError> {
        let s = &self.setup;
        ShardCounters::add(&s.counters.batches, 1);
        let task = task_of(&mut self.pipelines, s, &batch.queue)?;
        let mut dead = Vec::new();
        let ctx = &mut self.ctx;
        // Left over by a batch that failed half-way: not this batch's.
        ctx.unframed = 0;
        ctx.duplicates = 0;
        ctx.late = 0;
        task.run(&batch.records, ctx, &mut |body, error, at| {
            s.judge(body, error, at, &mut dead)
        })?;
        // A shuffle message is a frame of records: count those (a message
        // that is no frame counts as one).
        let unframed = std::mem::take(&mut ctx.unframed);
        let records = if s.topology.shuffle_topic() == Some(batch.queue.topic()) {
            unframed
        } else {
            batch.records.len() as u64
        };
        ShardCounters::add(&s.counters.records_in, records);
        ShardCounters::add(&s.counters.duplicates, std::mem::take(&mut ctx.duplicates));
        ShardCounters::add(&s.counters.late, std::mem::take(&mut ctx.late));
        Ok(dead)
    }

    /// Sends the batch's outputs (sinks, shuffle, dead letters) at once and
    /// waits for every acknowledgement.
    async fn send_outputs(&mut self, queue: &QueueId, dead: Vec<OutRecord>) -> Result<(), StreamsError> {
        // A keyed queue's owner first makes sure no newer owner has claimed
        // the queue: that one replays the records behind these outputs from
        // the durable state and emits their results itself, and these,
        // landing after its own, would undo a key's latest result (two
        // owners at once: a rebalance that gave the queue to two instances
        // for a while, an old owner that ran on).
        let fence = self
            .states
            .get(queue)
            .map(|st| (st.log.clone(), st.owned.fence_probe()));
        if let Some(fence) = &fence {
            match unfenced(fence).await {
                Ok(()) => {}
                Err(StreamsError::State(e @ StateError::Fenced { .. })) => return Err(self.refence(queue, e)),
                Err(e) => {
                    self.ctx.discard_outputs();
                    return Err(e);
                }
            }
        }
        self.batches += 1;
        let s = &self.setup;
        let index = queue.queue() as usize;
        let mut sends = Vec::new();
        let mut handed_off = 0usize;
        for (sink_id, buffer) in self.ctx.outputs.iter_mut().enumerate() {
            if buffer.is_empty() {
                continue;
            }
            let route = &s.sink_routes[sink_id];
            let home = index % route.len();
            if buffer.iter().all(|o| o.key.is_none()) {
                let records: Vec<OutRecord> = buffer.drain(..).map(out_record).collect();
                sends.push((Output::Sink, route[home].clone(), records.len(), records));
                continue;
            }
            // Keyed messages go to the queue of their key's hash, each
            // queue's in the order they were emitted.
            let mut per_queue: Vec<Vec<OutRecord>> = vec![Vec::new(); route.len()];
            for o in buffer.drain(..) {
                let q = o.key.as_deref().map_or(home, |k| queue_of_key(k, route.len()));
                per_queue[q].push(out_record(o));
            }
            for (q, records) in per_queue.into_iter().enumerate().filter(|(_, r)| !r.is_empty()) {
                sends.push((Output::Sink, route[q].clone(), records.len(), records));
            }
        }
        self.ctx.records_out = 0;
        if !self.ctx.shuffle.is_empty() {
            let route = s.state.as_ref().map(|st| st.shuffle_route.clone()).unwrap_or_default();
            if route.is_empty() {
                return Err(StreamsError::Topology("key_by output but no shuffle topic".into()));
            }
            let frames = self.ctx.shuffle.take_frames(route.len());
            for (i, (frames, count)) in frames.into_iter().enumerate() {
                if frames.is_empty() {
                    continue;
                }
                let records: Vec<OutRecord> = frames.into_iter().map(OutRecord::new).collect();
                let writer = s.hand_off.as_ref().and_then(|h| {
                    h.to.get(HandOffLinks::writer_of(i, h.to.len()))
                        .and_then(Option::as_ref)
                        .map(|to| (to, h))
                });
                match writer {
                    Some((to, h)) => {
                        let handed = HandOff {
                            target: route[i].clone(),
                            records,
                            count,
                            batch: self.batches,
                            answer: h.answer_to.clone(),
                        };
                        if to.send(handed).is_err() {
                            return Err(StreamsError::Topology("a writer shard is gone".into()));
                        }
                        handed_off += 1;
                    }
                    None => sends.push((Output::Shuffle, route[i].clone(), count, records)),
                }
            }
        }
        if !dead.is_empty() {
            let target = s.dlq_route[index % s.dlq_route.len()].clone();
            sends.push((Output::DeadLetter, target, dead.len(), dead));
        }
        // All sends of the batch run at once on the I/O runtime; the batch is
        // done when every one is acknowledged. Counted are records (a
        // shuffle frame holds many), once their messages are stored.
        let tasks: Vec<_> = sends
            .into_iter()
            .map(|(kind, target, count, records)| {
                (
                    kind,
                    count,
                    send_retrying(&s.sink, target, records, s.outage, fence.clone()),
                )
            })
            .collect();
        for (kind, stored, task) in tasks {
            let ack = match task.await {
                Ok(ack) => ack,
                Err(StreamsError::State(e @ StateError::Fenced { .. })) => return Err(self.refence(queue, e)),
                Err(e) => return Err(e),
            };
            let counter = match kind {
                Output::DeadLetter => &s.counters.dead_lettered,
                Output::Sink => &s.counters.records_out,
                Output::Shuffle => {
                    if let Some(st) = &s.state {
                        st.written.record(&ack.queue, ack.last_offset);
                    }
                    &s.counters.shuffled
                }
            };
            ShardCounters::add(counter, stored as u64);
        }
        if let Some(h) = &s.hand_off {
            let stored = await_answers(&h.answers, self.batches, handed_off).await?;
            ShardCounters::add(&s.counters.shuffled, stored as u64);
        }
        Ok(())
    }
}

/// The message a sink's output becomes: its key, tag and properties, and
/// its event time as [`EVENT_TIME_PROPERTY`].
fn out_record(o: crate::processor::Output) -> OutRecord {
    let mut properties = o.properties;
    properties.push((EVENT_TIME_PROPERTY.to_string(), o.timestamp.to_string()));
    OutRecord {
        body: o.body,
        key: o.key,
        tags: o.tags,
        properties,
    }
}

/// `d` in whole microseconds.
fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

/// The longest pause between two tries of a restore that failed transiently.
const MAX_RESTORE_PAUSE: Duration = Duration::from_secs(30);

/// Claims and restores shuffle queue `queue`'s state (its state queue is
/// `log`), retrying transient failures (the broker unreachable, a claim not
/// readable in time) with a growing pause until it succeeds or is
/// cancelled; returns the queue and where to consume it from: the restored
/// marker's `source_next`, or the shuffle queue's first offset when the
/// state has no marker yet (nothing of the queue was ever made durable,
/// so nothing of it was committed either).
async fn restore_queue(
    queue: &QueueId,
    log: &StateQueueLog,
    dir: &std::path::Path,
    cache: usize,
    rocksdb: &RocksDbOptions,
    protocol: ProtocolOptions,
) -> Result<(OwnedQueue, RestoreSummary, Offset), StateError> {
    let mut pause = Duration::from_secs(1);
    loop {
        let attempt = async {
            let (owned, summary) = OwnedQueue::claim(log, dir, cache, rocksdb, protocol.clone()).await?;
            let resume = match owned.source_next() {
                Some(next) => Offset(next),
                None => {
                    let shuffle = StateQueueLog {
                        queue: queue.clone(),
                        ..log.clone()
                    };
                    Offset(shuffle.bounds().await?.0)
                }
            };
            Ok::<_, StateError>((owned, summary, resume))
        };
        match attempt.await {
            Err(e) if e.is_retriable() => {
                tracing::warn!(%queue, error = %e, ?pause, "restore failed; trying again");
                glommio::timer::sleep(pause).await;
                pause = (pause * 2).min(MAX_RESTORE_PAUSE);
            }
            result => return result,
        }
    }
}

/// A state-topic message restore cannot read goes through the error policy
/// like any malformed record: counted and skipped, dead-lettered, or the
/// end of the job. Restore itself goes on without it.
async fn route_malformed_state(
    s: &ShardSetup,
    index: usize,
    body: &bytes::Bytes,
    why: String,
    at: String,
) -> Result<(), StreamsError> {
    let error = StreamsError::Serde(SerdeError::new("state", why));
    let mut dead = Vec::new();
    s.judge(body, &error, at, &mut dead)?;
    if !dead.is_empty() {
        let target = s.dlq_route[index % s.dlq_route.len().max(1)].clone();
        send_retrying(&s.sink, target, dead, s.outage, None).await?;
        ShardCounters::add(&s.counters.dead_lettered, 1);
    }
    Ok(())
}

/// How long the group's lag read for idle steps is reused: the steps of
/// one tick share it.
const LAG_FRESH: Duration = Duration::from_millis(500);

/// How far the job's consumer group trails each queue of its source topics
/// (the shuffle topic included): a queue that holds messages and for which
/// the broker reports no committed offset counts as not consumed. (A
/// tagged source's offsets move past what its subscription does not match,
/// and a `Last` source's queues are committed at their start, so both
/// read 0 once consumed; see `Coordinator::skip_unmatched` and
/// `Source::fix_starts`.)
async fn group_lag(
    admin: &rocketmq_streams_io::Admin,
    topology: &Topology,
) -> Result<HashMap<QueueId, u64>, rocketmq_streams_io::Error> {
    let mut all = HashMap::new();
    for topic in topology.source_topics() {
        let lag = admin.group_lag(topology.job_id(), topic).await?;
        for offsets in admin.queue_offsets(topic).await? {
            let behind = match lag.get(&offsets.queue) {
                Some(&behind) => behind,
                None if offsets.max.0 <= offsets.min.0 => 0,
                None => u64::MAX,
            };
            all.insert(offsets.queue, behind);
        }
    }
    Ok(all)
}

/// How long an idle step waits for its settling marker to be readable.
const SETTLE_PATIENCE: Duration = Duration::from_secs(2);

/// The reads of an idle step, on the broker (see [`super::idle`]).
impl InputReads for Shard {
    async fn lag(&mut self) -> Result<HashMap<QueueId, u64>, StreamsError> {
        let Some(state) = &self.setup.state else {
            return Err(StreamsError::Topology("a keyed queue but no state".into()));
        };
        if self.lag.as_ref().is_none_or(|(at, _)| at.elapsed() >= LAG_FRESH) {
            let lag = group_lag(&state.admin, &self.setup.topology).await;
            self.lag = Some((Instant::now(), lag));
        }
        match self.lag.as_ref().map(|(_, lag)| lag) {
            Some(Ok(lag)) => Ok(lag.clone()),
            Some(Err(error)) => Err(StreamsError::Topology(format!("the group's lag: {error}"))),
            None => Err(StreamsError::Topology("the group's lag was not read".into())),
        }
    }

    async fn settle(&mut self, queue: &QueueId) -> Result<bool, StreamsError> {
        let (Some(state), Some(st)) = (&self.setup.state, self.states.get_mut(queue)) else {
            return Ok(false);
        };
        if !st.owned.settle(&st.log, SETTLE_PATIENCE).await? {
            return Ok(false);
        }
        // Brokers the marker does not settle: the queue's own, if its
        // state queue is elsewhere; and, where a keyed stage feeds another,
        // those of the other shuffle queues, whose frames come here later.
        let mut others: Vec<String> = Vec::new();
        if st.log.queue.broker() != queue.broker() {
            others.push(queue.broker().to_string());
        }
        if self.setup.topology.chained_shuffle() {
            for q in state.shuffle_route.iter() {
                if q.broker() != st.log.queue.broker() && !others.iter().any(|b| b == q.broker()) {
                    others.push(q.broker().to_string());
                }
            }
        }
        if others.is_empty() {
            return Ok(true);
        }
        Ok(state.admin.dispatch_behind_of(Some(others)).await? == 0)
    }

    async fn end(&mut self, queue: &QueueId) -> Result<Offset, StreamsError> {
        let Some(state) = &self.setup.state else {
            return Err(StreamsError::Topology("a keyed queue but no state".into()));
        };
        Ok(state.reader.bounds(queue.clone()).await??.1)
    }
}

/// The task of `queue`, made on its first use.
fn task_of<'a>(
    pipelines: &'a mut HashMap<QueueId, QueueTask>,
    s: &ShardSetup,
    queue: &QueueId,
) -> Result<&'a mut QueueTask, StreamsError> {
    Ok(match pipelines.entry(queue.clone()) {
        Entry::Occupied(e) => e.into_mut(),
        Entry::Vacant(e) => {
            let Some(pipeline) = s.topology.pipeline(queue.topic()) else {
                return Err(StreamsError::Topology(format!("no source reads {queue}")));
            };
            s.counters.owned(queue);
            e.insert(QueueTask::new(queue.clone(), queue.to_string(), pipeline))
        }
    })
}

impl ShardSetup {
    /// The error policy's verdict on a failed record: a skip is counted, a
    /// dead letter added to `dead` (sent by the caller), `Fail` returned.
    fn judge(
        &self,
        body: &bytes::Bytes,
        error: &StreamsError,
        at: String,
        dead: &mut Vec<OutRecord>,
    ) -> Result<(), StreamsError> {
        match self.policy.judge(body, error, at) {
            Verdict::Skipped => ShardCounters::add(&self.counters.skipped, 1),
            Verdict::DeadLetter(letter) => dead.push(letter.to_out_record()),
            Verdict::Fail(error) => return Err(error),
        }
        Ok(())
    }
}

/// What a send carries, for its counter.
enum Output {
    Sink,
    Shuffle,
    DeadLetter,
}

/// The state queue of a keyed queue's owner and its [`FenceProbe`]: a
/// send of the owner's outputs that failed is tried again only while no
/// newer owner has claimed the queue.
type Fence = (StateQueueLog, FenceProbe);

/// The pause before try `attempt + 1` of a failed send or read: 100 ms
/// more each time, at most [`MAX_SEND_PAUSE`].
fn retry_pause(attempt: u32) -> Duration {
    Duration::from_millis(100 * u64::from(attempt)).min(MAX_SEND_PAUSE)
}

/// Runs `read` (a read of a queue's records or bounds) again after each
/// transient failure, pausing as a failed send does, until `outage` has
/// passed since the first failure: a broker that restarts within it is
/// ridden out, as by the sends, instead of stopping the job. A read that
/// went to a broker killed meanwhile only fails after
/// [`READ_TIMEOUT`](rocketmq_streams_io::READ_TIMEOUT); the next try
/// opens a new connection.
///
/// # Errors
///
/// The last failure, once it is permanent or the deadline has passed.
async fn read_retrying<T, F>(what: impl Fn() -> String, outage: Duration, mut read: F) -> rocketmq_streams_io::Result<T>
where
    F: FnMut() -> rocketmq_streams_io::IoTask<rocketmq_streams_io::Result<T>>,
{
    let mut attempt = 0u32;
    let mut failing_since: Option<Instant> = None;
    loop {
        attempt += 1;
        let error = match read().await {
            Ok(Ok(value)) => return Ok(value),
            Ok(Err(e)) | Err(e) => e,
        };
        let since = *failing_since.get_or_insert_with(Instant::now);
        if !error.is_retriable() || since.elapsed() >= outage {
            return Err(error);
        }
        tracing::warn!(what = what(), attempt, %error, "read failed; retrying");
        glommio::timer::sleep(retry_pause(attempt)).await;
    }
}

/// Starts sending `records` to `target` now (on the I/O runtime, so several
/// sends run at once) and returns the future of its acknowledgement, which
/// retries as [`send_with_retry`] does for up to `outage`, under `fence`
/// when a keyed queue's owner sends its outputs.
pub(crate) fn send_retrying(
    sink: &Sink,
    target: QueueId,
    records: Vec<OutRecord>,
    outage: Duration,
    fence: Option<Fence>,
) -> impl std::future::Future<Output = Result<SendAck, StreamsError>> {
    let first = sink.send(target.clone(), records.clone());
    send_with_retry(first, sink.clone(), target, records, outage, fence)
}

/// Awaits the `first` send of `records` to `target` (already under way),
/// retrying transient failures with a growing pause (up to
/// [`MAX_SEND_PAUSE`]) until `outage` has passed since the first failure:
/// a broker that restarts within it is ridden out. At-least-once: a
/// retried chunk may be stored twice, never lost.
///
/// With a `fence` (a keyed queue's owner sending its outputs), each retry
/// first reads the state queue for a newer claim, as `send_outputs` did
/// before the first try. With one there, the outputs are dropped with
/// [`StateError::Fenced`]: the newer owner replays their records from the
/// durable state and emits their results itself, and a late delivery of
/// these, computed on an older state, would land after its own. While the
/// state queue cannot be read (its broker away too), nothing is sent (see
/// [`unfenced`]).
async fn send_with_retry(
    first: rocketmq_streams_io::IoTask<rocketmq_streams_io::Result<rocketmq_streams_io::SendAck>>,
    sink: Sink,
    target: QueueId,
    records: Vec<OutRecord>,
    outage: Duration,
    fence: Option<Fence>,
) -> Result<SendAck, StreamsError> {
    let mut attempt = 0u32;
    let mut pending = Some(first);
    let mut failing_since: Option<Instant> = None;
    loop {
        attempt += 1;
        let task = match pending.take() {
            Some(task) => task,
            None => sink.send(target.clone(), records.clone()),
        };
        let error = match task.await {
            Ok(Ok(ack)) => return Ok(ack),
            Ok(Err(e)) | Err(e) => e,
        };
        let since = *failing_since.get_or_insert_with(Instant::now);
        if !error.is_retriable() || since.elapsed() >= outage {
            return Err(StreamsError::Io(error));
        }
        tracing::warn!(%target, attempt, %error, "send failed; retrying");
        glommio::timer::sleep(retry_pause(attempt)).await;
        if let Some(fence) = &fence {
            // Within the send's own deadline: the probe's reads would
            // otherwise ride out an outage of their own after it.
            let probe = unfenced(fence);
            let deadline = glommio::timer::sleep(outage.saturating_sub(since.elapsed()));
            futures::pin_mut!(probe, deadline);
            match futures::future::select(probe, deadline).await {
                futures::future::Either::Left((checked, _)) => checked?,
                futures::future::Either::Right(_) => return Err(StreamsError::Io(error)),
            }
            if since.elapsed() >= outage {
                return Err(StreamsError::Io(error));
            }
        }
    }
}

/// Whether the owner behind `fence` may still send: reads its state queue
/// for a claim newer than its own.
///
/// # Errors
///
/// [`StateError::Fenced`] when a newer owner claimed the queue; the
/// state queue's read error when it cannot be read (tried again for the
/// outage deadline first, see [`read_retrying`]): nothing may be sent
/// then.
async fn unfenced((log, probe): &Fence) -> Result<(), StreamsError> {
    match probe.newer_claim(log).await? {
        None => Ok(()),
        Some(newer) => Err(StateError::Fenced {
            queue: log.name(),
            epoch: probe.epoch(),
            newer,
        }
        .into()),
    }
}
