//! The sink: a producer that sends batches to a chosen queue and reports acknowledgements.

use std::sync::Arc;

use bytes::Bytes;
use rocketmq_client_rust::DefaultMQProducer;
use rocketmq_model::common::message::message_single::Message;

use crate::config::ClientConfig;
use crate::error::{Error, Operation, Result};
use crate::ids::{Offset, QueueId};
use crate::runtime::{IoRuntime, IoTask};

/// The largest batch body one send carries, in bytes. RocketMQ rejects
/// batches over its `maxMessageSize` (4 MiB by default); a margin is left for
/// the per-message headers the batch encoding adds.
pub const MAX_BATCH_BYTES: usize = 1024 * 1024;

/// The largest message body the engine sends: RocketMQ's default
/// `maxMessageSize` (4 MiB) less a margin for the message's properties. A
/// record whose output is larger fails through the error policy instead of
/// failing every send (and the job) over and over.
pub const MAX_MESSAGE_BYTES: usize = 4 * 1024 * 1024 - 64 * 1024;

/// The most messages one send carries, by default
/// ([`Sink::with_batch_messages`] changes it).
pub const MAX_BATCH_MESSAGES: usize = 512;

/// One message to produce.
#[derive(Debug, Clone, Default)]
pub struct OutRecord {
    /// The body. Moved into the client's message without a copy; the client
    /// copies it once when it encodes the batch for the wire.
    pub body: Bytes,
    /// Optional message key (indexed by the broker, shown by tools).
    pub key: Option<String>,
    /// Optional tag (RocketMQ's `TAGS`: what consumers filter on).
    pub tags: Option<String>,
    /// Optional user properties.
    pub properties: Vec<(String, String)>,
}

impl OutRecord {
    /// A message with `body` and nothing else.
    pub fn new(body: impl Into<Bytes>) -> Self {
        Self {
            body: body.into(),
            ..Self::default()
        }
    }
}

/// The broker's acknowledgement of one [`Sink::send`]: every record of the
/// batch is stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SendAck {
    /// The queue the records went to.
    pub queue: QueueId,
    /// How many records were stored.
    pub count: usize,
    /// The offset the broker gave the first record of the last chunk sent.
    pub last_chunk_offset: Offset,
    /// The offset of the last record sent: the last chunk's first offset
    /// plus its length less one (a chunk's records take consecutive
    /// offsets).
    pub last_offset: Offset,
}

/// A RocketMQ sink: sends batches of records to explicit queues.
///
/// Create the target topics first ([`crate::Admin::create_topic`]): sending
/// to an explicit queue of a topic the name server does not know fails.
#[derive(Clone)]
pub struct Sink {
    io: Arc<IoRuntime>,
    producer: Arc<DefaultMQProducer>,
    timeout_ms: u64,
    batch_messages: usize,
}

impl Sink {
    /// Creates and starts a producer in `group`.
    ///
    /// # Errors
    ///
    /// Returns an [`Operation::Send`] error if the producer cannot start.
    pub async fn start(io: Arc<IoRuntime>, client: &ClientConfig, group: &str) -> Result<Sink> {
        let mut builder = DefaultMQProducer::builder(io.client_runtime())
            .producer_group(group.to_string())
            .name_server_addr(client.namesrv_addr.clone())
            .send_msg_timeout(u32::try_from(client.timeout_millis()).unwrap_or(u32::MAX));
        if let Some(credentials) = &client.credentials {
            builder = builder.rpc_hook(credentials.rpc_hook());
        }
        let mut producer = builder.build();
        let producer = io
            .spawn(async move {
                producer
                    .start()
                    .await
                    .map(|()| producer)
                    .map_err(|e| Error::client(Operation::Send, "cannot start the producer", e))
            })
            .await??;
        Ok(Sink {
            io,
            producer: Arc::new(producer),
            timeout_ms: client.timeout_millis(),
            batch_messages: MAX_BATCH_MESSAGES,
        })
    }

    /// The same sink, carrying at most `n` messages per send (at least 1;
    /// [`MAX_BATCH_BYTES`] still bounds a send). Fewer messages per send
    /// mean more round trips and less waiting for a batch to fill.
    #[must_use]
    pub fn with_batch_messages(mut self, n: usize) -> Sink {
        self.batch_messages = n.max(1);
        self
    }

    /// The most messages one send carries.
    pub fn batch_messages(&self) -> usize {
        self.batch_messages
    }

    /// Sends `records` to `queue`, in order, as one or more batches (split at
    /// [`MAX_BATCH_BYTES`] / [`batch_messages`](Self::batch_messages)). The returned task
    /// resolves once the broker has stored every record.
    ///
    /// The task may be awaited from any executor. If it fails, some leading
    /// chunks may have been stored: callers that need at-least-once delivery
    /// send the whole batch again (duplicates are possible, loss is not).
    ///
    /// # Errors
    ///
    /// The task resolves to an [`Operation::Send`] error when the broker
    /// rejects or does not acknowledge a chunk in time.
    pub fn send(&self, queue: QueueId, records: Vec<OutRecord>) -> IoTask<Result<SendAck>> {
        let producer = self.producer.clone();
        let timeout = self.timeout_ms;
        let batch_messages = self.batch_messages;
        self.io.spawn(async move {
            let count = records.len();
            let mq = queue.to_mq();
            let mut last_chunk_offset = Offset(-1);
            let mut last_offset = Offset(-1);
            let mut chunk: Vec<Message> = Vec::new();
            let mut chunk_bytes = 0usize;
            let mut records = records.into_iter().peekable();
            while let Some(r) = records.next() {
                chunk_bytes += r.body.len() + 64;
                chunk.push(to_message(queue.topic(), r)?);
                let full = chunk.len() >= batch_messages
                    || records
                        .peek()
                        .is_some_and(|n| chunk_bytes + n.body.len() + 64 > MAX_BATCH_BYTES);
                if full || records.peek().is_none() {
                    let chunk_len = chunk.len() as i64;
                    let result = producer
                        .send_batch_to_queue_with_timeout(std::mem::take(&mut chunk), mq.clone(), timeout)
                        .await
                        .map_err(|e| Error::client(Operation::Send, &format!("send to {queue}"), e))?;
                    last_chunk_offset = Offset(i64::try_from(result.queue_offset).unwrap_or(i64::MAX));
                    last_offset = Offset(last_chunk_offset.0.saturating_add(chunk_len - 1));
                    chunk_bytes = 0;
                }
            }
            Ok(SendAck {
                queue,
                count,
                last_chunk_offset,
                last_offset,
            })
        })
    }

    /// Sends `records` spread over `queues` in round-robin chunks of up to
    /// [`batch_messages`](Self::batch_messages), all queues in parallel, and waits for every
    /// acknowledgement. Returns how many records were stored.
    ///
    /// # Errors
    ///
    /// Returns the first failed send; records of other chunks may be stored.
    pub async fn send_spread(&self, queues: &[QueueId], records: Vec<OutRecord>) -> Result<usize> {
        if queues.is_empty() {
            return Err(Error::permanent(Operation::Send, "no queue to send to"));
        }
        let mut per_queue: Vec<Vec<OutRecord>> = vec![Vec::new(); queues.len()];
        for (i, r) in records.into_iter().enumerate() {
            per_queue[(i / self.batch_messages) % queues.len()].push(r);
        }
        let sends: Vec<_> = queues
            .iter()
            .zip(per_queue)
            .filter(|(_, rs)| !rs.is_empty())
            .map(|(q, rs)| self.send(q.clone(), rs))
            .collect();
        let mut stored = 0;
        for send in sends {
            stored += send.await??.count;
        }
        Ok(stored)
    }

    /// Stops the producer.
    pub async fn shutdown(self) {
        if let Some(producer) = Arc::into_inner(self.producer) {
            let mut producer = producer;
            let _ = self.io.spawn(async move { producer.shutdown().await }).await;
        }
    }
}

/// Whether `name` is one of RocketMQ's own message properties (`KEYS`,
/// `TAGS`, ...), which a user property may not be named.
pub fn is_system_property(name: &str) -> bool {
    rocketmq_model::common::message::STRING_HASH_SET.contains(name)
}

fn to_message(topic: &str, r: OutRecord) -> Result<Message> {
    let mut builder = Message::builder().topic(topic.to_string()).body(r.body);
    if let Some(key) = r.key {
        builder = builder.key(key);
    }
    if let Some(tags) = r.tags {
        builder = builder.tags(tags);
    }
    for (k, v) in r.properties {
        builder = builder
            .raw_property(k.clone(), v)
            .map_err(|e| Error::permanent(Operation::Send, format!("invalid message property {k:?}: {e}")))?;
    }
    Ok(builder.build_unchecked())
}
