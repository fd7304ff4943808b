//! One shard: a pinned thread running a glommio executor that owns some
//! queues, runs their pipelines, sends their outputs and reports acked
//! offsets.

use std::collections::hash_map::Entry;
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use crossbeam::channel::Sender;
use rocketmq_streams_io::{Offset, OutRecord, QueueBatch, QueueId, Sink};
use tracing::Instrument;

use super::inbox::Inbox;
use super::metrics::{ShardCounters, ShardId};
use crate::error::StreamsError;
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
            failed: HashSet::new(),
            ctx,
        }
    }

    async fn run(mut self) {
        while let Some(msg) = self.setup.inbox.recv().await {
            match msg {
                ShardMsg::Revoke(queue) => {
                    self.pipelines.remove(&queue);
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
                        Ok(()) => ShardEvent::Acked {
                            shard: self.setup.id,
                            queue: batch.queue.clone(),
                            next: batch.next_offset(),
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
    }

    async fn process(&mut self, batch: &QueueBatch) -> Result<(), StreamsError> {
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
        for record in &batch.records {
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
        let index = batch.queue.queue() as usize;
        let mut sends = Vec::new();
        for (sink_id, buffer) in self.ctx.outputs.iter_mut().enumerate() {
            if buffer.is_empty() {
                continue;
            }
            let route = &s.sink_routes[sink_id];
            let target = route[index % route.len()].clone();
            let records: Vec<OutRecord> = buffer.drain(..).map(|o| OutRecord::new(o.body)).collect();
            sends.push((false, target, records));
        }
        self.ctx.records_out = 0;
        if !dead.is_empty() {
            let target = s.dlq_route[index % s.dlq_route.len()].clone();
            sends.push((true, target, dead));
        }
        // All sends of the batch run at once on the I/O runtime; the batch is
        // done when every one is acknowledged.
        let tasks: Vec<_> = sends
            .into_iter()
            .map(|(is_dlq, target, records)| {
                let first = s.sink.send(target.clone(), records.clone());
                (is_dlq, send_with_retry(first, s.sink.clone(), target, records))
            })
            .collect();
        for (is_dlq, task) in tasks {
            let stored = task.await?;
            let counter = if is_dlq {
                &s.counters.dead_lettered
            } else {
                &s.counters.records_out
            };
            ShardCounters::add(counter, stored as u64);
        }
        Ok(())
    }
}

/// Awaits the `first` send of `records` to `target` (already under way),
/// retrying transient failures with a growing pause. At-least-once: a
/// retried chunk may be stored twice, never lost.
async fn send_with_retry(
    first: rocketmq_streams_io::IoTask<rocketmq_streams_io::Result<rocketmq_streams_io::SendAck>>,
    sink: Sink,
    target: QueueId,
    records: Vec<OutRecord>,
) -> Result<usize, StreamsError> {
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
            Ok(Ok(ack)) => return Ok(ack.count),
            Ok(Err(e)) | Err(e) => e,
        };
        if !error.is_retriable() || attempt >= SEND_ATTEMPTS {
            return Err(StreamsError::Io(error));
        }
        tracing::warn!(%target, attempt, %error, "send failed; retrying");
        glommio::timer::sleep(Duration::from_millis(100 * u64::from(attempt))).await;
    }
}
