//! `pipe-baseline`: the best plain consume → produce program we know how to
//! write directly on `rocketmq-client-rust` — no engine, no shards, no
//! bridge: the ceiling for the engine on the same broker.
//!
//! It is pipelined as a careful user would write it: each poll (up to the
//! engine's poll batch, drained like the engine's source) is sent, per
//! queue, to the same queue number of the output topic in batch sends of
//! up to the engine's send batch that run as tasks of their own, and the
//! loop polls again while they are in flight (at most
//! [`MAX_SENDS_IN_FLIGHT`]). A queue's sends run one after another, so its
//! records stay in order, as the engine keeps them; sends of different
//! queues overlap. Offsets are committed on an interval, after every send
//! spawned before the commit is acknowledged: at-least-once, like the
//! engine. It runs on a tokio runtime of its own, one worker per core,
//! whose threads are named [`THREAD_NAME`] so the harness counts their CPU
//! as the job's.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::future::{BoxFuture, FutureExt, Shared};
use rocketmq_client_rust::{DefaultLitePullConsumer, DefaultMQProducer};
use rocketmq_model::common::consumer::consume_from_where::ConsumeFromWhere;
use rocketmq_model::common::message::message_queue::MessageQueue;
use rocketmq_model::common::message::message_single::Message;
use rocketmq_streams_io::{ClientConfig, IoRuntime};

/// The name of the baseline's runtime threads.
pub const THREAD_NAME: &str = "bench-baseline";

/// Batch sends the loop lets run while it polls on.
pub const MAX_SENDS_IN_FLIGHT: usize = 32;

/// A running baseline loop; [`Baseline::stop`] ends it.
pub struct Baseline {
    stop: Arc<AtomicBool>,
    task: Option<rocketmq_streams_io::IoTask<Result<(), String>>>,
    _runtime: Arc<IoRuntime>,
}

/// A spawned send (after its queue's previous one), awaitable by the loop
/// and by the queue's next send.
type SendTask = Shared<BoxFuture<'static, Result<(), String>>>;

/// The baseline's settings: the engine's, so both do the same batching.
#[derive(Debug, Clone, Copy)]
pub struct BaselineConfig {
    /// Most records per poll.
    pub poll_batch: usize,
    /// Most messages per send.
    pub send_batch: usize,
    /// How often offsets are committed.
    pub commit_interval: Duration,
}

/// Waits for the oldest sends until at most `keep` are in flight.
async fn settle(in_flight: &mut VecDeque<SendTask>, keep: usize) -> Result<(), String> {
    while in_flight.len() > keep {
        if let Some(send) = in_flight.pop_front() {
            send.await?;
        }
    }
    Ok(())
}

impl Baseline {
    /// Starts the loop from `input` to `output` in consumer group `group`.
    ///
    /// # Errors
    ///
    /// The baseline's runtime could not be built.
    pub fn start(
        client: &ClientConfig,
        group: &str,
        input: &str,
        output: &str,
        config: BaselineConfig,
    ) -> Result<Baseline, String> {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        let io = IoRuntime::named(THREAD_NAME, cores).map_err(|e| e.to_string())?;
        let stop = Arc::new(AtomicBool::new(false));
        let (rt, namesrv) = (io.client_runtime(), client.namesrv_addr.clone());
        let (group, input, output, stop2) = (group.to_string(), input.to_string(), output.to_string(), stop.clone());
        let task = io.spawn(async move {
            let consumer = DefaultLitePullConsumer::builder(rt.clone())
                .consumer_group(group.clone())
                .name_server_addr(namesrv.clone())
                .consume_from_where(ConsumeFromWhere::ConsumeFromFirstOffset)
                .pull_batch_size(256)
                .auto_commit(false)
                .broker_suspend_max_time_millis(1_000)
                .consumer_timeout_millis_when_suspend(6_000)
                .build()
                .map_err(|e| format!("consumer: {e}"))?;
            consumer
                .subscribe(&input)
                .await
                .map_err(|e| format!("subscribe: {e}"))?;
            consumer.start().await.map_err(|e| format!("consumer start: {e}"))?;
            let mut producer = DefaultMQProducer::builder(rt)
                .producer_group(format!("{group}-producer"))
                .name_server_addr(namesrv)
                .build();
            producer.start().await.map_err(|e| format!("producer start: {e}"))?;
            let mut in_flight: VecDeque<SendTask> = VecDeque::new();
            let mut last_send: HashMap<MessageQueue, SendTask> = HashMap::new();
            let send_batch = config.send_batch.clamp(1, rocketmq_streams_io::MAX_BATCH_MESSAGES);
            let mut committed = Instant::now();
            // The next offset of each input queue polled since the last
            // commit: only those are committed (`commit_all` logs an ERROR
            // for every assigned queue nothing was polled from).
            let mut consumed: HashMap<MessageQueue, i64> = HashMap::new();
            let mut result: Result<(), String> = Ok(());
            while result.is_ok() && !stop2.load(Ordering::Relaxed) {
                let mut messages = consumer.poll_with_timeout_zero_copy(100).await;
                while !messages.is_empty() && messages.len() < config.poll_batch {
                    let more = consumer.poll_with_timeout_zero_copy(0).await;
                    if more.is_empty() {
                        break;
                    }
                    messages.extend(more);
                }
                let mut by_queue: HashMap<MessageQueue, Vec<Message>> = HashMap::new();
                for m in &messages {
                    let next = m.queue_offset() + 1;
                    let polled = MessageQueue::from_parts(input.as_str(), m.broker_name(), m.queue_id());
                    let e = consumed.entry(polled).or_insert(next);
                    *e = (*e).max(next);
                    let mq = MessageQueue::from_parts(output.as_str(), m.broker_name(), m.queue_id());
                    let body = m.body().unwrap_or_default();
                    by_queue
                        .entry(mq)
                        .or_default()
                        .push(Message::builder().topic(output.clone()).body(body).build_unchecked());
                }
                for (mq, mut batch) in by_queue {
                    // The broker caps a batch at 4 MiB: chunks of the engine's
                    // send batch (at most 512 messages) stay under it.
                    while !batch.is_empty() {
                        let rest = batch.split_off(batch.len().min(send_batch));
                        let chunk = std::mem::replace(&mut batch, rest);
                        let (producer, previous) = (producer.clone(), last_send.get(&mq).cloned());
                        let target = mq.clone();
                        let send = tokio::spawn(async move {
                            if let Some(previous) = previous {
                                previous.await?;
                            }
                            producer
                                .send_batch_to_queue_with_timeout(chunk, target, 3_000)
                                .await
                                .map(|_| ())
                                .map_err(|e| format!("send: {e}"))
                        });
                        let send: SendTask = async move { send.await.map_err(|e| format!("send task: {e}"))? }
                            .boxed()
                            .shared();
                        last_send.insert(mq.clone(), send.clone());
                        in_flight.push_back(send);
                    }
                }
                result = settle(&mut in_flight, MAX_SENDS_IN_FLIGHT).await;
                if result.is_ok() && committed.elapsed() >= config.commit_interval {
                    // Everything polled so far is sent once these are acked.
                    result = settle(&mut in_flight, 0).await;
                    last_send.clear();
                    if result.is_ok() && !consumed.is_empty() {
                        consumer.commit_with_map(std::mem::take(&mut consumed), false).await;
                    }
                    committed = Instant::now();
                }
            }
            if result.is_ok() {
                result = settle(&mut in_flight, 0).await;
            }
            if result.is_ok() && !consumed.is_empty() {
                consumer.commit_with_map(std::mem::take(&mut consumed), false).await;
            }
            // As `Source::shutdown`: pause every queue and let the pulls in
            // flight (long polls of up to 1 s) return first; a pull that
            // returns into a shut-down consumer logs an ERROR.
            if let Ok(assigned) = consumer.assignment().await {
                consumer.pause(assigned.into_iter().collect()).await;
                tokio::time::sleep(Duration::from_millis(1_100)).await;
            }
            consumer.shutdown().await;
            producer.shutdown().await;
            result
        });
        Ok(Baseline {
            stop,
            task: Some(task),
            _runtime: io,
        })
    }

    /// Stops the loop and waits for it.
    ///
    /// # Errors
    ///
    /// What made the loop fail, if it did.
    pub fn stop(mut self) -> Result<(), String> {
        self.stop.store(true, Ordering::Relaxed);
        match self.task.take() {
            Some(task) => futures::executor::block_on(task).map_err(|e| e.to_string())?,
            None => Ok(()),
        }
    }
}
