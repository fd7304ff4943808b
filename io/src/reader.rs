//! Reading one queue from a given offset, outside any consumer group's
//! assignment: how the runtime restores state from the state topic.

// Classic pull is deprecated in favour of the lite-pull consumer, whose
// assign + seek would serve too; a stateless pull at an explicit offset is
// the plainest way to read a queue once from a checkpoint to its end.
#![allow(deprecated)]

use std::sync::Arc;

use rocketmq_client_rust::{DefaultMQPullConsumer, PullStatus};

use crate::config::ClientConfig;
use crate::error::{Error, Operation, Result};
use crate::ids::{Offset, QueueId};
use crate::runtime::{IoRuntime, IoTask};
use crate::source::Record;

/// One read of a [`QueueReader`].
#[derive(Debug, Default)]
pub struct Chunk {
    /// The records read, in offset order.
    pub records: Vec<Record>,
    /// The offset to read from next.
    pub next: Offset,
    /// The queue's end offset (one past its last record) when read.
    pub end: Offset,
}

/// Reads explicit queues from explicit offsets (a RocketMQ pull consumer):
/// no rebalance, no committed offsets.
#[derive(Clone)]
pub struct QueueReader {
    io: Arc<IoRuntime>,
    consumer: Arc<DefaultMQPullConsumer>,
}

impl QueueReader {
    /// Starts a pull consumer in `group`.
    ///
    /// # Errors
    ///
    /// An [`Operation::Source`] error if the consumer cannot start.
    pub async fn start(io: Arc<IoRuntime>, client: &ClientConfig, group: &str) -> Result<QueueReader> {
        let mut builder = DefaultMQPullConsumer::builder(io.client_runtime());
        if let Some(credentials) = &client.credentials {
            builder = builder.rpc_hook(credentials.rpc_hook());
        }
        let consumer = builder
            .consumer_group(group.to_string())
            .name_server_addr(client.namesrv_addr.clone())
            .build()
            .map_err(|e| Error::client(Operation::Source, "cannot build the queue reader", e))?;
        let consumer = Arc::new(consumer);
        let c = consumer.clone();
        io.spawn(async move {
            c.start()
                .await
                .map_err(|e| Error::client(Operation::Source, "cannot start the queue reader", e))
        })
        .await??;
        Ok(QueueReader { io, consumer })
    }

    /// Reads up to `max` records of `queue` from offset `from`; an empty
    /// chunk with `next == end` means the end was reached.
    ///
    /// A read that takes longer than [`READ_TIMEOUT`] fails (transient).
    pub fn read(&self, queue: QueueId, from: Offset, max: u32) -> IoTask<Result<Chunk>> {
        self.read_matching(queue, from, max, "*")
    }

    /// Like [`read`](Self::read), returning only messages whose tag the tag
    /// expression `tags` (RocketMQ's syntax, `"A || B"`; `*` for all)
    /// matches, as a consumer subscribed with it would get them. The broker
    /// skips the others: a chunk with no records and `next` past `from`
    /// says that nothing in between matches.
    pub fn read_matching(&self, queue: QueueId, from: Offset, max: u32, tags: &str) -> IoTask<Result<Chunk>> {
        let c = self.consumer.clone();
        let expression = crate::source::tag_expression(tags);
        let what = format!("read {queue} at {from}");
        self.io.spawn(bounded(what, async move {
            let mq = queue.to_mq();
            let end = end_offset(&c, &queue).await?;
            if from.0 >= end {
                return Ok(Chunk {
                    records: Vec::new(),
                    next: from,
                    end: Offset(end),
                });
            }
            let result = c
                .pull(&mq, &expression, from.0, i32::try_from(max).unwrap_or(i32::MAX))
                .await
                .map_err(|e| Error::client(Operation::Source, &format!("read {queue} at {from}"), e))?;
            let next = Offset(i64::try_from(result.next_begin_offset()).unwrap_or(i64::MAX));
            let records = match result.pull_status() {
                PullStatus::Found => result
                    .msg_found_list()
                    .unwrap_or_default()
                    .iter()
                    .map(|m| {
                        let (body, malformed) = crate::source::body_of(m);
                        Record {
                            offset: Offset(m.queue_offset()),
                            body,
                            born_timestamp: m.born_timestamp(),
                            store_timestamp: m.store_timestamp(),
                            properties: Vec::new(),
                            keys: None,
                            tags: None,
                            malformed,
                        }
                    })
                    .collect(),
                _ => Vec::new(),
            };
            Ok(Chunk {
                records,
                // Never stand still on an empty read before the end.
                next: Offset(next.0.max(from.0)),
                end: Offset(end),
            })
        }))
    }

    /// The first offset of `queue` and its readable end (one past the last
    /// message a read can return now). Fails (transient) after
    /// [`READ_TIMEOUT`].
    pub fn bounds(&self, queue: QueueId) -> IoTask<Result<(Offset, Offset)>> {
        let c = self.consumer.clone();
        let what = format!("bounds of {queue}");
        self.io.spawn(bounded(what, async move {
            let end = end_offset(&c, &queue).await?;
            let first = c
                .min_offset(&queue.to_mq())
                .await
                .map_err(|e| Error::client(Operation::Source, &format!("first offset of {queue}"), e))?;
            Ok((Offset(first), Offset(end)))
        }))
    }

    /// Stops the consumer.
    pub async fn shutdown(self) {
        let c = self.consumer.clone();
        let _ = self.io.spawn(async move { c.shutdown().await }).await;
    }
}

/// How long one read or bounds request of a [`QueueReader`] may take: the
/// client's requests to a broker that went away mid-request were not
/// always seen to end, and a shard awaiting one stands still.
pub const READ_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(15);

/// `request`, failed as transient once it took [`READ_TIMEOUT`].
async fn bounded<T>(what: String, request: impl std::future::Future<Output = Result<T>>) -> Result<T> {
    match tokio::time::timeout(READ_TIMEOUT, request).await {
        Ok(result) => result,
        Err(_) => Err(Error::transient(
            Operation::Source,
            format!("{what}: no answer within {READ_TIMEOUT:?}"),
        )),
    }
}

/// Loads the route of `queue`'s topic (so the client knows the queue's
/// broker) and returns the queue's end offset.
async fn end_offset(c: &DefaultMQPullConsumer, queue: &QueueId) -> Result<i64> {
    c.fetch_subscribe_message_queues(queue.topic())
        .await
        .map_err(|e| Error::client(Operation::Source, &format!("route of {}", queue.topic()), e))?;
    c.max_offset(&queue.to_mq())
        .await
        .map_err(|e| Error::client(Operation::Source, &format!("end offset of {queue}"), e))
}
