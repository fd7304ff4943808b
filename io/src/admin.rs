//! Administration: topics, routes and consumer offsets.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use cheetah_string::CheetahString;
use rocketmq_client_rust::{BrokerAdmin, ConsumerAdmin, DefaultMQAdminExt, OffsetAdmin, RouteAdmin, TopicAdmin};
use rocketmq_model::common::config::TopicConfig;

use crate::config::ClientConfig;
use crate::error::{Error, Operation, Result};
use crate::ids::{Offset, QueueId};
use crate::runtime::IoRuntime;

/// How long [`Admin::create_topic`] waits for the name server to publish the
/// new route before giving up.
const ROUTE_WAIT: Duration = Duration::from_secs(30);

/// Read/write permission bits of a normal topic.
const PERM_READ_WRITE: u32 = 0b110;

/// The stored range of one queue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueOffsets {
    /// The queue.
    pub queue: QueueId,
    /// The offset of the oldest stored message.
    pub min: Offset,
    /// One past the newest stored message (the end offset).
    pub max: Offset,
}

/// An administrative handle on the cluster behind a name server.
#[derive(Clone)]
pub struct Admin {
    io: Arc<IoRuntime>,
    admin: Arc<DefaultMQAdminExt>,
}

impl Admin {
    /// Connects an admin client to the name server of `client`.
    ///
    /// # Errors
    ///
    /// Returns an [`Operation::Admin`] error if the admin client cannot start.
    pub async fn start(io: Arc<IoRuntime>, client: &ClientConfig) -> Result<Admin> {
        let mut admin = match &client.credentials {
            Some(credentials) => DefaultMQAdminExt::with_rpc_hook_and_timeout(
                io.client_runtime(),
                credentials.rpc_hook(),
                client.request_timeout,
            ),
            None => DefaultMQAdminExt::with_timeout(io.client_runtime(), client.request_timeout),
        };
        admin.set_namesrv_addr(client.namesrv_addr.clone());
        let admin = io
            .spawn(async move {
                admin
                    .start()
                    .await
                    .map(|()| admin)
                    .map_err(|e| Error::client(Operation::Admin, "cannot start the admin client", e))
            })
            .await??;
        Ok(Admin {
            io,
            admin: Arc::new(admin),
        })
    }

    /// Creates `topic` with `queues` read and write queues on every master
    /// broker of the cluster, or updates it to that many queues. Idempotent.
    /// Returns once the name server serves the route with that many queues.
    ///
    /// # Errors
    ///
    /// Returns an [`Operation::Admin`] error if no broker is registered, a
    /// broker rejects the topic (for example an invalid name), or the route
    /// does not appear within 30 s (transient).
    pub async fn create_topic(&self, topic: &str, queues: u32) -> Result<()> {
        validate_topic_name(topic)?;
        if queues == 0 {
            return Err(Error::permanent(Operation::Admin, "a topic needs at least one queue"));
        }
        let admin = self.admin.clone();
        let name = topic.to_string();
        self.io
            .spawn(async move {
                let masters = master_addrs(&admin).await?;
                for addr in &masters {
                    let mut config = TopicConfig::with_queues(name.clone(), queues, queues);
                    config.perm = PERM_READ_WRITE;
                    admin
                        .create_and_update_topic_config(addr.clone(), config)
                        .await
                        .map_err(|e| Error::client(Operation::Admin, &format!("create topic {name} on {addr}"), e))?;
                }
                let expected = queues as usize * masters.len();
                let deadline = Instant::now() + ROUTE_WAIT;
                loop {
                    let seen = route_of(&admin, &name).await.map(|r| r.len()).unwrap_or(0);
                    if seen == expected {
                        return Ok(());
                    }
                    if Instant::now() > deadline {
                        return Err(Error::transient(
                            Operation::Admin,
                            format!("route of {name} shows {seen} queues, expected {expected}, after {ROUTE_WAIT:?}"),
                        ));
                    }
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            })
            .await?
    }

    /// The addresses of the cluster's master brokers, sorted.
    ///
    /// # Errors
    ///
    /// Returns an [`Operation::Admin`] error if the name server cannot be
    /// read, or no master is registered (transient: one may be starting).
    pub async fn masters(&self) -> Result<Vec<String>> {
        let admin = self.admin.clone();
        self.io
            .spawn(async move {
                let masters = master_addrs(&admin).await?;
                Ok(masters.iter().map(ToString::to_string).collect())
            })
            .await?
    }

    /// The writable queues of `topic`, ordered by broker and queue index.
    ///
    /// # Errors
    ///
    /// Returns an [`Operation::Admin`] error if the topic has no route.
    pub async fn route(&self, topic: &str) -> Result<Vec<QueueId>> {
        let admin = self.admin.clone();
        let name = topic.to_string();
        self.io.spawn(async move { route_of(&admin, &name).await }).await?
    }

    /// The min and max offsets of every queue of `topic`.
    ///
    /// # Errors
    ///
    /// Returns an [`Operation::Admin`] error if the topic does not exist.
    pub async fn queue_offsets(&self, topic: &str) -> Result<Vec<QueueOffsets>> {
        let admin = self.admin.clone();
        let name = topic.to_string();
        self.io
            .spawn(async move {
                let stats = admin
                    .examine_topic_stats(CheetahString::from_string(name.clone()), None)
                    .await
                    .map_err(|e| Error::client(Operation::Admin, &format!("topic stats of {name}"), e))?;
                let mut out: Vec<QueueOffsets> = stats
                    .get_offset_table()
                    .iter()
                    .map(|(mq, o)| QueueOffsets {
                        queue: QueueId::from_mq(mq),
                        min: Offset(o.get_min_offset()),
                        max: Offset(o.get_max_offset()),
                    })
                    .collect();
                out.sort_by(|a, b| a.queue.cmp(&b.queue));
                Ok(out)
            })
            .await?
    }

    /// Bytes the master brokers have stored in their commit logs but not yet
    /// dispatched to their consume queues, summed over the brokers.
    ///
    /// A broker appends a message to its commit log before it acknowledges
    /// the send, and indexes it into the message queue's consume queue
    /// asynchronously (RocketMQ's reput service). Until then the message is
    /// neither readable nor counted in [`Admin::queue_offsets`]' `max`: an
    /// end offset read while this is above zero may be short of messages
    /// already acknowledged. Read it before the offsets it vouches for.
    ///
    /// # Errors
    ///
    /// Returns an [`Operation::Admin`] error if no master broker is
    /// registered or one does not report its runtime figures.
    pub async fn dispatch_behind(&self) -> Result<u64> {
        self.dispatch_behind_of(None).await
    }

    /// [`dispatch_behind`](Self::dispatch_behind) summed over the master
    /// brokers named `brokers` only (`None`: every master).
    ///
    /// # Errors
    ///
    /// As [`dispatch_behind`](Self::dispatch_behind); also when a broker
    /// of `brokers` is not registered.
    pub async fn dispatch_behind_of(&self, brokers: Option<Vec<String>>) -> Result<u64> {
        let admin = self.admin.clone();
        self.io
            .spawn(async move {
                let addrs = match brokers {
                    None => master_addrs(&admin).await?,
                    Some(names) => {
                        let mut addrs = Vec::with_capacity(names.len());
                        for name in &names {
                            addrs.push(broker_addr(&admin, name).await?);
                        }
                        addrs
                    }
                };
                let mut behind = 0u64;
                for addr in addrs {
                    let stats = admin.fetch_broker_runtime_stats(addr.clone()).await.map_err(|e| {
                        Error::client(Operation::Admin, &format!("runtime figures of broker {addr}"), e)
                    })?;
                    let bytes = stats
                        .table
                        .get("dispatchBehindBytes")
                        .and_then(|v| v.as_str().parse::<i64>().ok())
                        .ok_or_else(|| {
                            Error::transient(
                                Operation::Admin,
                                format!("broker {addr} reports no dispatchBehindBytes"),
                            )
                        })?;
                    behind += u64::try_from(bytes).unwrap_or(0);
                }
                Ok(behind)
            })
            .await?
    }

    /// The offsets `group` has committed on the broker for the queues of `topic`.
    ///
    /// # Errors
    ///
    /// Returns an [`Operation::Admin`] error if the broker cannot report them.
    pub async fn committed_offsets(&self, group: &str, topic: &str) -> Result<HashMap<QueueId, Offset>> {
        let stats = self.consume_stats(group, topic).await?;
        Ok(stats
            .into_iter()
            .map(|(queue, _, committed)| (queue, Offset(committed)))
            .collect())
    }

    /// How far `group`'s committed offsets trail the end of each queue of
    /// `topic` (messages stored but not committed), as the broker reports
    /// them.
    ///
    /// # Errors
    ///
    /// Returns an [`Operation::Admin`] error if the broker cannot report them.
    pub async fn group_lag(&self, group: &str, topic: &str) -> Result<HashMap<QueueId, u64>> {
        let stats = self.consume_stats(group, topic).await?;
        Ok(stats
            .into_iter()
            .map(|(queue, end, committed)| (queue, u64::try_from(end - committed.max(0)).unwrap_or(0)))
            .collect())
    }

    /// Per queue of `topic`: the broker's end offset and `group`'s
    /// committed offset, as the broker reports them.
    async fn consume_stats(&self, group: &str, topic: &str) -> Result<Vec<(QueueId, i64, i64)>> {
        let admin = self.admin.clone();
        let group = group.to_string();
        let name = topic.to_string();
        self.io
            .spawn(async move {
                let stats = admin
                    .examine_consume_stats(
                        CheetahString::from_string(group.clone()),
                        Some(CheetahString::from_string(name.clone())),
                        None,
                        None,
                        None,
                    )
                    .await
                    .map_err(|e| Error::client(Operation::Admin, &format!("offsets of {group} on {name}"), e))?;
                Ok(stats
                    .offset_table
                    .iter()
                    .map(|(mq, w)| (QueueId::from_mq(mq), w.get_broker_offset(), w.get_consumer_offset()))
                    .collect())
            })
            .await?
    }

    /// Sets `group`'s committed offset of `queue` to `offset`, also backwards
    /// (a normal commit cannot move an offset back). Stop the group's
    /// consumers first: a running consumer overwrites the reset with its own
    /// position.
    ///
    /// # Errors
    ///
    /// Returns an [`Operation::Admin`] error if the queue's broker is unknown
    /// or rejects the reset.
    pub async fn reset_offset(&self, group: &str, queue: &QueueId, offset: Offset) -> Result<()> {
        let admin = self.admin.clone();
        let group = group.to_string();
        let queue = queue.clone();
        self.io
            .spawn(async move {
                let addr = broker_addr(&admin, queue.broker()).await?;
                admin
                    .reset_offset_by_queue_id(
                        addr,
                        CheetahString::from_string(group.clone()),
                        CheetahString::from_string(queue.topic().to_string()),
                        queue.queue() as i32,
                        u64::try_from(offset.0).unwrap_or(0),
                    )
                    .await
                    .map_err(|e| Error::client(Operation::Admin, &format!("reset {group} on {queue}"), e))
            })
            .await?
    }
}

/// Rejects names RocketMQ would refuse: empty, longer than 127 characters, or
/// with characters other than letters, digits, `%`, `|`, `-` and `_`.
///
/// # Errors
///
/// Returns a permanent [`Operation::Admin`] error naming the problem.
pub fn validate_topic_name(topic: &str) -> Result<()> {
    if topic.is_empty() {
        return Err(Error::permanent(Operation::Admin, "topic name is empty"));
    }
    if topic.len() > 127 {
        return Err(Error::permanent(
            Operation::Admin,
            format!("topic name {topic:?} is longer than 127 characters"),
        ));
    }
    if let Some(c) = topic
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '%' | '|' | '-' | '_')))
    {
        return Err(Error::permanent(
            Operation::Admin,
            format!("topic name {topic:?} contains {c:?}; allowed are letters, digits, %, |, - and _"),
        ));
    }
    Ok(())
}

async fn master_addrs(admin: &DefaultMQAdminExt) -> Result<Vec<CheetahString>> {
    let info = admin
        .examine_broker_cluster_info()
        .await
        .map_err(|e| Error::client(Operation::Admin, "read cluster info", e))?;
    let mut masters: Vec<CheetahString> = info
        .broker_addr_table
        .unwrap_or_default()
        .values()
        .filter_map(|b| b.broker_addrs().get(&0).cloned())
        .collect();
    masters.sort();
    if masters.is_empty() {
        return Err(Error::transient(
            Operation::Admin,
            "no master broker is registered with the name server",
        ));
    }
    Ok(masters)
}

async fn broker_addr(admin: &DefaultMQAdminExt, broker: &str) -> Result<CheetahString> {
    let info = admin
        .examine_broker_cluster_info()
        .await
        .map_err(|e| Error::client(Operation::Admin, "read cluster info", e))?;
    info.broker_addr_table
        .unwrap_or_default()
        .get(broker)
        .and_then(|b| b.broker_addrs().get(&0).cloned())
        .ok_or_else(|| Error::transient(Operation::Admin, format!("broker {broker} has no registered master")))
}

async fn route_of(admin: &DefaultMQAdminExt, topic: &str) -> Result<Vec<QueueId>> {
    let route = admin
        .examine_topic_route_info(CheetahString::from_string(topic.to_string()))
        .await
        .map_err(|e| Error::client(Operation::Admin, &format!("route of {topic}"), e))?
        .ok_or_else(|| Error::transient(Operation::Admin, format!("topic {topic} has no route")))?;
    let mut queues: Vec<QueueId> = route
        .queue_datas
        .iter()
        .flat_map(|qd| (0..qd.write_queue_nums).map(move |i| QueueId::new(topic, qd.broker_name.as_str(), i)))
        .collect();
    queues.sort();
    Ok(queues)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topic_names_are_checked_like_rocketmq_does() {
        assert!(validate_topic_name("word-count_1%x|y").is_ok());
        assert!(validate_topic_name("").is_err());
        assert!(validate_topic_name("has space").is_err());
        assert!(validate_topic_name("dot.ted").is_err());
        assert!(validate_topic_name(&"x".repeat(128)).is_err());
    }
}
