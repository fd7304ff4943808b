//! `pipe-baseline`: a plain consume → produce loop written directly on
//! `rocketmq-client-rust` — no engine, no shards, no bridge: the ceiling for
//! the engine on the same broker. It polls, sends each queue's messages to
//! the same queue number of the output topic as one batch, and commits
//! after the sends are acknowledged (at-least-once, like the engine).

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use rocketmq_client_rust::{DefaultLitePullConsumer, DefaultMQProducer};
use rocketmq_model::common::consumer::consume_from_where::ConsumeFromWhere;
use rocketmq_model::common::message::message_queue::MessageQueue;
use rocketmq_model::common::message::message_single::Message;
use rocketmq_streams_io::{ClientConfig, IoRuntime};

/// A running baseline loop; [`Baseline::stop`] ends it.
pub struct Baseline {
    stop: Arc<AtomicBool>,
    task: Option<rocketmq_streams_io::IoTask<Result<(), String>>>,
}

impl Baseline {
    /// Starts the loop from `input` to `output` in consumer group `group`.
    pub fn start(io: &Arc<IoRuntime>, client: &ClientConfig, group: &str, input: &str, output: &str) -> Baseline {
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
            let mut result = Ok(());
            while !stop2.load(Ordering::Relaxed) {
                let messages = consumer.poll_with_timeout_zero_copy(100).await;
                if messages.is_empty() {
                    continue;
                }
                let mut by_queue: HashMap<MessageQueue, Vec<Message>> = HashMap::new();
                for m in &messages {
                    let mq = MessageQueue::from_parts(output.as_str(), m.broker_name(), m.queue_id());
                    let body = m.body().unwrap_or_default();
                    by_queue
                        .entry(mq)
                        .or_default()
                        .push(Message::builder().topic(output.clone()).body(body).build_unchecked());
                }
                for (mq, batch) in by_queue {
                    // The broker caps a batch at 4 MiB: chunks of the engine's
                    // default send batch (512 messages) stay under it.
                    for chunk in batch.chunks(rocketmq_streams_io::MAX_BATCH_MESSAGES) {
                        if let Err(e) = producer
                            .send_batch_to_queue_with_timeout(chunk.to_vec(), mq.clone(), 3_000)
                            .await
                        {
                            result = Err(format!("send: {e}"));
                        }
                    }
                }
                if result.is_err() {
                    break;
                }
                if let Err(e) = consumer.commit_all().await {
                    result = Err(format!("commit: {e}"));
                    break;
                }
            }
            consumer.shutdown().await;
            producer.shutdown().await;
            result
        });
        Baseline { stop, task: Some(task) }
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
