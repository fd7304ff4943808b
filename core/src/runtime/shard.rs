//! One shard: a pinned thread running a glommio executor that owns some
//! queues, runs their pipelines, sends their outputs and reports acked
//! offsets.

use std::collections::hash_map::Entry;
use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam::channel::Sender;
use rocketmq_streams_io::{Offset, OutRecord, QueueBatch, QueueId, QueueReader, SendAck, Sink};
use rocketmq_streams_shuffle::origin_id;
use rocketmq_streams_state::{Change, Checkpoint, QueueStore, Restore, RocksDbOptions};
use tracing::Instrument;

use super::handoff::{write_handed, HandOff, HandOffLinks};
use super::inbox::Inbox;
use super::metrics::{ShardCounters, ShardId};
use crate::error::{SerdeError, StreamsError};
use crate::policy::{ErrorPolicy, Verdict};
use crate::processor::Context;
use crate::topology::{process_record, SourcePipeline, Topology};

/// How often a failed send is tried before the job stops.
const SEND_ATTEMPTS: u32 = 5;

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
    },
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
    pub(crate) core: Option<core_affinity::CoreId>,
    pub(crate) topology: Topology,
    pub(crate) inbox: Inbox<ShardMsg>,
    pub(crate) events: Sender<ShardEvent>,
    pub(crate) sink: Sink,
    /// Queues of each sink topic, by sink id.
    pub(crate) sink_routes: Arc<Vec<Vec<QueueId>>>,
    pub(crate) dlq_route: Arc<Vec<QueueId>>,
    pub(crate) policy: ErrorPolicy,
    pub(crate) counters: Arc<ShardCounters>,
    /// Keyed state, when the topology has a `key_by`.
    pub(crate) state: Option<StateSetup>,
    /// The cross-core hand-off of shuffled records (`WriterShard` mode).
    pub(crate) hand_off: Option<HandOffLinks>,
}

/// How a shard keeps the state of the shuffle queues it owns.
pub(crate) struct StateSetup {
    /// The shuffle topic's queues, sorted; queue `i` keeps its state in
    /// `state_route[i]`.
    pub(crate) shuffle_route: Arc<Vec<QueueId>>,
    pub(crate) state_route: Arc<Vec<QueueId>>,
    pub(crate) reader: QueueReader,
    /// The job's state directory; each queue's RocksDB is a folder in it.
    pub(crate) dir: PathBuf,
    pub(crate) cache: usize,
    pub(crate) rocksdb: RocksDbOptions,
    pub(crate) commit_interval: Duration,
}

/// The state of one owned shuffle queue.
struct QueueState {
    /// In `ctx.store` while a batch of the queue runs.
    store: Option<QueueStore>,
    state_queue: QueueId,
    /// The offset after the last processed batch, and after the last checkpoint.
    next: Option<Offset>,
    checkpointed: Option<Offset>,
    last_checkpoint: Instant,
    /// Changes after the last marker were found on restore: write an abort first.
    abort_pending: bool,
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
    let span = tracing::info_span!("shard", shard = id.0, job = setup.topology.job_id());
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
    pipelines: HashMap<QueueId, Box<dyn SourcePipeline>>,
    states: HashMap<QueueId, QueueState>,
    /// Queues whose batch failed: their later batches are dropped unacked.
    failed: HashSet<QueueId>,
    ctx: Context,
}

impl Shard {
    fn new(setup: ShardSetup) -> Self {
        let ctx = Context::new(setup.topology.sink_topics().len());
        Self {
            setup,
            pipelines: HashMap::new(),
            states: HashMap::new(),
            failed: HashSet::new(),
            ctx,
        }
    }

    async fn run(mut self) {
        let writer = self
            .setup
            .hand_off
            .as_mut()
            .and_then(|h| h.from.take())
            .map(|from| glommio::spawn_local(write_handed(from, self.setup.sink.clone())).detach());
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
        while let Some(msg) = self.setup.inbox.recv().await {
            match msg {
                ShardMsg::Revoke(queue) => {
                    self.pipelines.remove(&queue);
                    self.drop_state(&queue);
                }
                ShardMsg::Tick => {
                    if !self.checkpoint_all().await {
                        return;
                    }
                }
                ShardMsg::Batch(batch) => {
                    if self.failed.contains(&batch.queue) {
                        // Dropped unprocessed, so never acknowledged; the
                        // coordinator still counts it out of flight.
                        let event = ShardEvent::Acked {
                            shard: self.setup.id,
                            queue: batch.queue.clone(),
                            next: None,
                        };
                        if self.setup.events.send(event).is_err() {
                            return;
                        }
                        continue;
                    }
                    let span = tracing::debug_span!("batch", queue = %batch.queue, records = batch.records.len());
                    let event = match self.process(&batch).instrument(span).await {
                        Ok(next) => ShardEvent::Acked {
                            shard: self.setup.id,
                            queue: batch.queue.clone(),
                            next,
                        },
                        Err(error) => {
                            self.failed.insert(batch.queue.clone());
                            ShardEvent::Failed {
                                shard: self.setup.id,
                                queue: Some(batch.queue.clone()),
                                error,
                            }
                        }
                    };
                    if self.setup.events.send(event).is_err() {
                        return;
                    }
                }
            }
        }
        // Stopping: make every owned queue's state durable and report it.
        self.checkpoint_all().await;
    }

    /// Checkpoints every owned keyed queue that moved since its last
    /// checkpoint and reports each new offset. Returns `false` when the
    /// coordinator is gone.
    async fn checkpoint_all(&mut self) -> bool {
        let queues: Vec<QueueId> = self.states.keys().cloned().collect();
        for queue in queues {
            if self.failed.contains(&queue) {
                continue;
            }
            let event = match self.checkpoint(&queue).await {
                Ok(Some(next)) => ShardEvent::Checkpointed { queue, next },
                Ok(None) => continue,
                Err(error) => {
                    self.failed.insert(queue.clone());
                    ShardEvent::Failed {
                        shard: self.setup.id,
                        queue: Some(queue),
                        error,
                    }
                }
            };
            if self.setup.events.send(event).is_err() {
                return false;
            }
        }
        true
    }

    /// Forgets a queue that moved away: its store is closed and its local
    /// database deleted (the new owner restores from the state topic).
    fn drop_state(&mut self, queue: &QueueId) {
        if let Some(state) = self.states.remove(queue) {
            if let Some(store) = state.store {
                let path = store.path().to_path_buf();
                drop(store);
                if let Err(e) = QueueStore::destroy(&path) {
                    tracing::warn!(%queue, error = %e, "cannot delete the local state of a revoked queue");
                }
            }
        }
    }

    /// Opens the local store of shuffle queue `queue` and brings it up to
    /// the last commit marker of its state-topic queue.
    async fn restore(&mut self, queue: &QueueId) -> Result<(), StreamsError> {
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
        let state_queue = state.state_route[index % state.state_route.len()].clone();
        let dir = state
            .dir
            .join(format!("{}-{}-{}", queue.topic(), queue.broker(), queue.queue()));
        let mut store = QueueStore::open_with(&dir, state.cache, &state.rocksdb)?;
        let mut from = store.checkpoint()?.map_or(0, |c| c.state_next);
        let mut restore = Restore::default();
        let mut first = true;
        loop {
            let chunk = state.reader.read(state_queue.clone(), Offset(from), 1024).await??;
            if first && from > chunk.end.0 {
                // The local database is ahead of the topic: not its prefix.
                tracing::warn!(%queue, from, end = chunk.end.0, "local state is not from this state topic; rebuilding");
                drop(store);
                QueueStore::destroy(&dir)?;
                store = QueueStore::open_with(&dir, state.cache, &state.rocksdb)?;
                from = 0;
                first = false;
                continue;
            }
            first = false;
            if chunk.records.is_empty() {
                break;
            }
            for record in &chunk.records {
                match restore.feed(&mut store, record.offset.0, &record.body) {
                    Ok(()) => {}
                    Err(rocketmq_streams_state::StateError::Malformed(why)) => {
                        let at = format!("{state_queue}:{}", record.offset);
                        route_malformed_state(s, index, &record.body, why, at).await?;
                    }
                    Err(e) => return Err(e.into()),
                }
            }
            from = chunk.next.0;
            if from >= chunk.end.0 {
                break;
            }
        }
        let summary = restore.finish();
        ShardCounters::add(&s.counters.restored, summary.applied);
        tracing::info!(%queue, markers = summary.markers, applied = summary.applied,
            discarded = summary.discarded, "state restored");
        self.states.insert(
            queue.clone(),
            QueueState {
                store: Some(store),
                state_queue,
                next: None,
                checkpointed: None,
                last_checkpoint: Instant::now(),
                abort_pending: summary.discarded > 0,
            },
        );
        Ok(())
    }

    /// The commit protocol of the `state` crate for one queue: changes, then
    /// the marker, each acknowledged, then RocksDB. Returns the source
    /// offset now safe to commit, if it moved.
    async fn checkpoint(&mut self, queue: &QueueId) -> Result<Option<Offset>, StreamsError> {
        let s = &self.setup;
        let Some(state) = self.states.get_mut(queue) else {
            return Ok(None);
        };
        let (Some(next), Some(store)) = (state.next, state.store.as_mut()) else {
            return Ok(None);
        };
        if state.checkpointed == Some(next) && store.dirty_len() == 0 {
            return Ok(None);
        }
        let mut changes: Vec<OutRecord> = Vec::with_capacity(store.dirty_len() + 1);
        if state.abort_pending {
            changes.push(OutRecord::new(Change::Abort.encode()));
        }
        changes.extend(store.changes().iter().map(|c| OutRecord::new(c.encode())));
        let target = state.state_queue.clone();
        if !changes.is_empty() {
            send_retrying(&s.sink, target.clone(), changes).await?;
        }
        let marker = vec![OutRecord::new(Change::Marker { source_next: next.0 }.encode())];
        // Sent alone, so the ack's offset is the marker's.
        let marker_offset = send_retrying(&s.sink, target, marker).await?.last_chunk_offset.0;
        store.commit(Checkpoint {
            state_next: marker_offset + 1,
            source_next: next.0,
        })?;
        state.abort_pending = false;
        state.checkpointed = Some(next);
        state.last_checkpoint = Instant::now();
        ShardCounters::add(&s.counters.checkpoints, 1);
        Ok(Some(next))
    }

    async fn process(&mut self, batch: &QueueBatch) -> Result<Option<Offset>, StreamsError> {
        let keyed = self.setup.topology.shuffle_topic() == Some(batch.queue.topic());
        if keyed && !self.states.contains_key(&batch.queue) {
            self.restore(&batch.queue).await?;
        }
        if keyed {
            self.ctx.store = self.states.get_mut(&batch.queue).and_then(|st| st.store.take());
        }
        let outcome = self.run_records(batch);
        if let Some(store) = self.ctx.store.take() {
            if let Some(st) = self.states.get_mut(&batch.queue) {
                st.store = Some(store);
            }
        }
        let dead = outcome?;
        self.send_outputs(batch, dead).await?;
        if !keyed {
            return Ok(batch.next_offset());
        }
        // Checkpoints are due every commit interval (under load, at the
        // batch that passes it; when idle, at the coordinator's tick) and
        // whenever the write-back cache is full.
        let due = match self.states.get_mut(&batch.queue) {
            Some(st) => {
                st.next = batch.next_offset().or(st.next);
                let interval = self.setup.state.as_ref().map_or(Duration::ZERO, |c| c.commit_interval);
                st.last_checkpoint.elapsed() >= interval || st.store.as_ref().is_some_and(QueueStore::is_full)
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
        ShardCounters::add(&s.counters.records_in, batch.records.len() as u64);
        let pipeline = match self.pipelines.entry(batch.queue.clone()) {
            Entry::Occupied(e) => e.into_mut(),
            Entry::Vacant(e) => {
                let Some(pipeline) = s.topology.pipeline(batch.queue.topic()) else {
                    return Err(StreamsError::Topology(format!("no source reads {}", batch.queue)));
                };
                if let Ok(mut q) = s.counters.queues.lock() {
                    q.push(batch.queue.clone());
                }
                e.insert(pipeline)
            }
        };
        let mut dead = Vec::new();
        let origin = origin_id(&batch.queue.to_string());
        for record in &batch.records {
            self.ctx.begin_record(origin, record.offset.0);
            let Err(error) = process_record(pipeline.as_mut(), &record.body, record.store_timestamp, &mut self.ctx)
            else {
                continue;
            };
            match s
                .policy
                .judge(&record.body, &error, format!("{}:{}", batch.queue, record.offset))
            {
                Verdict::Skipped => ShardCounters::add(&s.counters.skipped, 1),
                Verdict::DeadLetter(letter) => dead.push(letter.to_out_record()),
                Verdict::Fail(error) => return Err(error),
            }
        }
        ShardCounters::add(&s.counters.duplicates, std::mem::take(&mut self.ctx.duplicates));
        Ok(dead)
    }

    /// Sends the batch's outputs (sinks, shuffle, dead letters) at once and
    /// waits for every acknowledgement.
    async fn send_outputs(&mut self, batch: &QueueBatch, dead: Vec<OutRecord>) -> Result<(), StreamsError> {
        let s = &self.setup;
        let index = batch.queue.queue() as usize;
        let mut sends = Vec::new();
        let mut handed_off = 0usize;
        for (sink_id, buffer) in self.ctx.outputs.iter_mut().enumerate() {
            if buffer.is_empty() {
                continue;
            }
            let route = &s.sink_routes[sink_id];
            let target = route[index % route.len()].clone();
            let records: Vec<OutRecord> = buffer.drain(..).map(|o| OutRecord::new(o.body)).collect();
            sends.push((Output::Sink, target, records));
        }
        self.ctx.records_out = 0;
        if !self.ctx.shuffle.is_empty() {
            let route = s.state.as_ref().map(|st| st.shuffle_route.clone()).unwrap_or_default();
            if route.is_empty() {
                return Err(StreamsError::Topology("key_by output but no shuffle topic".into()));
            }
            let mut by_queue: Vec<Vec<OutRecord>> = vec![Vec::new(); route.len()];
            for out in self.ctx.shuffle.drain(..) {
                by_queue[(out.key_hash % route.len() as u64) as usize].push(OutRecord::new(out.body));
            }
            for (i, records) in by_queue.into_iter().enumerate() {
                if records.is_empty() {
                    continue;
                }
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
                            answer: h.answer_to.clone(),
                        };
                        if to.send(handed).is_err() {
                            return Err(StreamsError::Topology("a writer shard is gone".into()));
                        }
                        handed_off += 1;
                    }
                    None => sends.push((Output::Shuffle, route[i].clone(), records)),
                }
            }
        }
        if !dead.is_empty() {
            let target = s.dlq_route[index % s.dlq_route.len()].clone();
            sends.push((Output::DeadLetter, target, dead));
        }
        // All sends of the batch run at once on the I/O runtime; the batch is
        // done when every one is acknowledged.
        let tasks: Vec<_> = sends
            .into_iter()
            .map(|(kind, target, records)| (kind, send_retrying(&s.sink, target, records)))
            .collect();
        for (kind, task) in tasks {
            let stored = task.await?.count;
            let counter = match kind {
                Output::DeadLetter => &s.counters.dead_lettered,
                Output::Sink => &s.counters.records_out,
                Output::Shuffle => &s.counters.shuffled,
            };
            ShardCounters::add(counter, stored as u64);
        }
        if let Some(h) = &s.hand_off {
            for _ in 0..handed_off {
                match h.answers.recv().await {
                    Some(Ok(stored)) => ShardCounters::add(&s.counters.shuffled, stored as u64),
                    Some(Err(e)) => return Err(e),
                    None => return Err(StreamsError::Topology("hand-off answers closed".into())),
                }
            }
        }
        Ok(())
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
    match s.policy.judge(body, &error, at) {
        Verdict::Skipped => ShardCounters::add(&s.counters.skipped, 1),
        Verdict::DeadLetter(letter) => {
            let target = s.dlq_route[index % s.dlq_route.len().max(1)].clone();
            send_retrying(&s.sink, target, vec![letter.to_out_record()]).await?;
            ShardCounters::add(&s.counters.dead_lettered, 1);
        }
        Verdict::Fail(error) => return Err(error),
    }
    Ok(())
}

/// What a send carries, for its counter.
enum Output {
    Sink,
    Shuffle,
    DeadLetter,
}

/// Starts sending `records` to `target` now (on the I/O runtime, so several
/// sends run at once) and returns the future of its acknowledgement, which
/// retries as [`send_with_retry`] does.
pub(crate) fn send_retrying(
    sink: &Sink,
    target: QueueId,
    records: Vec<OutRecord>,
) -> impl std::future::Future<Output = Result<SendAck, StreamsError>> {
    let first = sink.send(target.clone(), records.clone());
    send_with_retry(first, sink.clone(), target, records)
}

/// Awaits the `first` send of `records` to `target` (already under way),
/// retrying transient failures with a growing pause. At-least-once: a
/// retried chunk may be stored twice, never lost.
async fn send_with_retry(
    first: rocketmq_streams_io::IoTask<rocketmq_streams_io::Result<rocketmq_streams_io::SendAck>>,
    sink: Sink,
    target: QueueId,
    records: Vec<OutRecord>,
) -> Result<SendAck, StreamsError> {
    let mut attempt = 0;
    let mut pending = Some(first);
    loop {
        attempt += 1;
        let task = match pending.take() {
            Some(task) => task,
            None => sink.send(target.clone(), records.clone()),
        };
        let result = task.await;
        let error = match result {
            Ok(Ok(ack)) => return Ok(ack),
            Ok(Err(e)) | Err(e) => e,
        };
        if !error.is_retriable() || attempt >= SEND_ATTEMPTS {
            return Err(StreamsError::Io(error));
        }
        tracing::warn!(%target, attempt, %error, "send failed; retrying");
        glommio::timer::sleep(Duration::from_millis(100 * u64::from(attempt))).await;
    }
}
