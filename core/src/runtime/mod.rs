//! The runtime: runs a [`Topology`] on RocketMQ with pinned shards.
//!
//! ```text
//!            I/O runtime (tokio)                          shards (glommio, one pinned thread each)
//!   ┌────────────────────────────────┐   Batch(queue q)   ┌──────────────────────────────────────┐
//!   │ coordinator                    ├───────────────────►│ shard owning q: pipeline(q) → outputs│
//!   │  Source::poll (rebalance gives ├──── Revoke(q) ────►│ Sink::send (bridge) → await acks     │
//!   │  queues; each queue → 1 shard) │◄── Acked(q, next) ─┤                                      │
//!   │  Source::commit every interval │                    └──────────────────────────────────────┘
//!   └────────────────────────────────┘
//! ```
//!
//! **Ownership.** The consumer group's rebalance assigns queues to this
//! instance; the coordinator gives each assigned queue to exactly one shard
//! (the one owning the fewest queues) and sends it only that queue's
//! batches, in order. A shard builds one pipeline per owned queue and runs
//! its batches one after the other: per-queue order holds, and nothing on
//! the record path is shared between threads.
//!
//! **Delivery: at-least-once.** A shard reports a queue's offset only after
//! the broker acknowledged every output (sinks and dead letters) of the
//! records before it; the coordinator commits only reported offsets, every
//! commit interval and on stop. After a crash, records after the last
//! commit are processed again; nothing is lost.

mod admission;
pub mod env;
mod handoff;
mod idle;
mod inbox;
pub(crate) mod metrics;
mod prometheus;
mod shard;
pub(crate) mod task;

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use rocketmq_streams_io::{
    Admin, AssignmentChange, ClientConfig, ConsumeFrom, IoRuntime, Offset, QueueId, Sink, Source, SourceConfig,
};

pub use metrics::{JobMetrics, ShardId, ShardMetrics};

use self::inbox::Outbox;
use self::metrics::ShardCounters;
use self::shard::{ShardEvent, ShardMsg, ShardSetup};
use rocketmq_streams_state::RocksDbOptions;

use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::error::{Result, StreamsError};
use crate::policy::ErrorPolicy;
use crate::query::{QueryAnswer, ShardAnswer};
use crate::topology::Topology;

/// The default [`RuntimeConfig::max_batches_in_flight`].
const MAX_BATCHES_IN_FLIGHT: usize = 8;
/// The default [`RuntimeConfig::consumer_buffer`] (the RocketMQ client's
/// own `pullThresholdForAll`).
const CONSUMER_BUFFER: u32 = 10_000;
/// The least [`RuntimeConfig::consumer_buffer`]: the client's rate of
/// pulled batches follows it.
const MIN_CONSUMER_BUFFER: u32 = 1_000;
/// How often the lag metric asks the broker for end offsets, at most.
const LAG_REFRESH: Duration = Duration::from_secs(1);
/// How long `stop` waits for shards to drain.
const STOP_TIMEOUT: Duration = Duration::from_secs(30);

/// How to run a topology.
#[derive(Debug, Clone)]
pub struct RuntimeConfig {
    /// The RocketMQ cluster.
    pub client: ClientConfig,
    /// Number of shards (pinned threads). Default: the cores available.
    pub shards: usize,
    /// Pin each shard to a core (`core_affinity`). Default: on.
    pub pin_shards: bool,
    /// Where a queue without a committed offset starts. Default: first.
    pub consume_from: ConsumeFrom,
    /// How often acknowledged offsets are committed. Default: 1 s.
    pub commit_interval: Duration,
    /// Records per poll (and so per batch a shard processes). Default: 1024.
    pub poll_batch: usize,
    /// Back-pressure, per shard: a shard is given a batch only while it
    /// holds fewer than this many batches unfinished (given to it and not
    /// yet processed with every output acknowledged). A shard that falls
    /// behind — the broker stalls and its sends wait, or a queue of it
    /// restores and holds its batches — stops getting records: the
    /// consumer stops pulling its queues, and what was pulled of them
    /// already waits in the coordinator, in order. The other shards go on.
    /// Meanwhile the consumer's buffer fills and the next polls come back
    /// full, so a busy job works in large batches.
    ///
    /// One poll brings at most `poll_batch` records in all (split into a
    /// batch per queue), so a shard never holds more than
    /// `max_batches_in_flight × poll_batch` records given to it unfinished
    /// (its gauge [`ShardMetrics::records_in_flight`]). Not counted there:
    /// up to 16 batches per queue whose state is being restored, held aside
    /// meanwhile (so the shard's other queues go on), the records a shard
    /// reads itself to fill a gap in a queue (at most 1,024 at a time), and
    /// what waits in the coordinator for a full shard (what the consumer
    /// had pulled of its queues when they were paused: at most
    /// `min(1000, consumer_buffer)` messages and one pull per queue). With
    /// [`consumer_buffer`](Self::consumer_buffer) this bounds what a job
    /// holds of its input. At least 1; default: 8 (8,192 records with the
    /// default `poll_batch`).
    pub max_batches_in_flight: usize,
    /// Messages the RocketMQ consumer pulls ahead of the job and buffers,
    /// over all the queues this instance owns (the client's
    /// `pullThresholdForAll`; each queue also stops at `min(1000,
    /// consumer_buffer)` messages, its `pullThresholdForQueue`, and at
    /// 100 MiB). A queue's next pull waits while the buffer holds more, so
    /// it may go over by up to one pull (256 messages) per queue. The
    /// client also sizes its queue of pulled batches by this number, and
    /// accepts at most this many pulled batches a second. At least 1,000;
    /// default: 10,000.
    pub consumer_buffer: u32,
    /// Most messages one send to the broker carries (sinks, shuffle,
    /// changelog, dead letters); a send is also capped at 1 MiB. Default:
    /// 512.
    pub send_batch: usize,
    /// What happens to records that fail. Default: skip.
    pub error_policy: ErrorPolicy,
    /// Queues of sink and dead-letter topics the runtime creates when they
    /// do not exist. Default: 8.
    pub default_topic_queues: u32,
    /// Queues of the shuffle topic (and of the state topic, one per shuffle
    /// queue) when they are created. Default: 8.
    pub shuffle_queues: u32,
    /// Where each owned queue's RocksDB lives. Default:
    /// `<temp dir>/rocketmq-streams/<job id>`.
    pub state_dir: Option<std::path::PathBuf>,
    /// Keys a queue's store caches; when this many are dirty the queue
    /// checkpoints early. Default: 100,000.
    pub cache_capacity: usize,
    /// RocksDB settings of each owned queue's database.
    pub rocksdb: RocksDbOptions,
    /// How shuffled records reach the shuffle topic. Default:
    /// [`ShuffleHandOff::Direct`] (see `tuning.md` for the measurement).
    pub shuffle_hand_off: ShuffleHandOff,
    /// How long a send (of outputs, shuffled records or state), or a read
    /// of a queue's records or of its state queue, is retried while the
    /// broker is unreachable or answers with a transient error, before the
    /// job stops. A broker restart within it is ridden out. Default: 60 s.
    pub outage_deadline: Duration,
    /// Changes a state queue takes between two snapshots of its state (at
    /// least twice its keys; a checkpoint's batch message counts its
    /// entries): a new owner without local state reads one snapshot and
    /// at most about this many changes after it. Default: 100,000.
    pub snapshot_after: u64,
    /// Serve the job's metrics in the Prometheus text format at
    /// `http://<addr>/metrics` (port 0: one the system picks, see
    /// [`StreamRuntime::metrics_addr`]). Default: off.
    pub metrics_addr: Option<SocketAddr>,
}

/// How a shard's `key_by` output reaches the shuffle topic.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ShuffleHandOff {
    /// Each shard sends what it shuffles to every shuffle queue itself.
    #[default]
    Direct,
    /// Each shuffle queue has one writer shard; the others hand it their
    /// records through lock-free crossbeam channels and it sends them
    /// gathered (fewer, larger sends; one more cross-core hop).
    WriterShard,
}

impl RuntimeConfig {
    /// The defaults for the cluster at `client`.
    pub fn new(client: ClientConfig) -> Self {
        Self {
            client,
            shards: std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1),
            pin_shards: true,
            consume_from: ConsumeFrom::First,
            commit_interval: Duration::from_secs(1),
            poll_batch: 1024,
            max_batches_in_flight: MAX_BATCHES_IN_FLIGHT,
            consumer_buffer: CONSUMER_BUFFER,
            send_batch: rocketmq_streams_io::MAX_BATCH_MESSAGES,
            error_policy: ErrorPolicy::Skip,
            default_topic_queues: 8,
            shuffle_queues: 8,
            state_dir: None,
            cache_capacity: 100_000,
            rocksdb: RocksDbOptions::default(),
            shuffle_hand_off: ShuffleHandOff::Direct,
            outage_deadline: Duration::from_secs(60),
            snapshot_after: rocketmq_streams_state::ProtocolOptions::default().snapshot_after,
            metrics_addr: None,
        }
    }
}

/// A running job: the counterpart of RocketMQ Streams' `RocketMQStream`.
pub struct StreamRuntime {
    /// Keeps the I/O runtime alive as long as the job's handle.
    _io: Arc<IoRuntime>,
    stop: Arc<AtomicBool>,
    coordinator: Option<rocketmq_streams_io::IoTask<Result<()>>>,
    shards: Vec<(Arc<ShardCounters>, Option<JoinHandle<()>>)>,
    state: Arc<Mutex<CoordinatorState>>,
    /// The Prometheus endpoint's address and task, when it is on.
    metrics_server: Option<(SocketAddr, rocketmq_streams_io::IoTask<()>)>,
    /// Where interactive queries go (`None` once the job stops).
    queries: SharedRoutes,
    /// The topology's queryable store names.
    stores: Vec<String>,
}

/// What an interactive query needs to find a key's shard: the shuffle
/// queues, which shard owns which, and the shards' inboxes. The
/// coordinator keeps it current and empties it when it stops (a shard
/// stops once every sender to it is gone: a query holds one only while
/// it sends).
struct QueryRoutes {
    shuffle_route: Arc<Vec<QueueId>>,
    owners: HashMap<QueueId, usize>,
    shards: Vec<Outbox<ShardMsg>>,
}

type SharedRoutes = Arc<Mutex<Option<QueryRoutes>>>;

/// How long a query waits for its shard (which answers between batches).
const QUERY_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Default)]
struct CoordinatorState {
    commits: u64,
    committed: BTreeMap<QueueId, Offset>,
    lag: BTreeMap<QueueId, u64>,
    dispatch_behind: u64,
}

impl StreamRuntime {
    /// Creates missing sink and dead-letter topics, starts the consumer,
    /// the shards and the coordinator, and returns while the job runs.
    ///
    /// # Errors
    ///
    /// [`StreamsError::Io`] when the cluster cannot be reached or a topic
    /// cannot be created; [`StreamsError::Topology`] for a zero shard count;
    /// [`StreamsError::Config`] for a zero `poll_batch` or
    /// `max_batches_in_flight`, or a `consumer_buffer` under 1,000.
    pub fn start(topology: Topology, config: RuntimeConfig) -> Result<StreamRuntime> {
        if config.shards == 0 {
            return Err(StreamsError::Topology("a job needs at least one shard".into()));
        }
        if config.poll_batch == 0 || config.max_batches_in_flight == 0 {
            return Err(StreamsError::Config(
                "poll_batch and max_batches_in_flight must be at least 1".into(),
            ));
        }
        if config.consumer_buffer < MIN_CONSUMER_BUFFER {
            return Err(StreamsError::Config(format!(
                "consumer_buffer ({}) must be at least {MIN_CONSUMER_BUFFER}: the client also accepts at most \
                 that many pulled batches a second",
                config.consumer_buffer
            )));
        }
        let io = IoRuntime::new(rocketmq_streams_io::DEFAULT_IO_THREADS)?;
        let (admin, sink, sink_routes, dlq_route, keyed_routes) = {
            let io2 = io.clone();
            let client = config.client.clone();
            let sink_topics = topology.sink_topics().to_vec();
            let dlq = topology.dead_letter_topic();
            let producer_group = format!("{}-producer", topology.job_id());
            let send_batch = config.send_batch;
            let queues = config.default_topic_queues;
            let with_dlq = config.error_policy == ErrorPolicy::DeadLetter;
            let keyed_topics = topology.shuffle_topic().map(str::to_owned).zip(topology.state_topic());
            let shuffle_queues = config.shuffle_queues;
            io.block_on(async move {
                let admin = Admin::start(io2.clone(), &client).await?;
                let mut routes = Vec::new();
                for topic in &sink_topics {
                    routes.push(route_or_create(&admin, topic, queues).await?);
                }
                let dlq_route = if with_dlq {
                    route_or_create(&admin, &dlq, queues).await?
                } else {
                    Vec::new()
                };
                let keyed_routes = match keyed_topics {
                    Some((shuffle, state)) => {
                        let mut shuffle_route = route_or_create(&admin, &shuffle, shuffle_queues).await?;
                        // As many state queues as the shuffle topic really
                        // has: `create_topic` gives every master broker the
                        // count, so the shuffle topic's per broker.
                        let mut state_route =
                            route_or_create(&admin, &state, queues_per_broker(&shuffle_route, shuffle_queues)).await?;
                        shuffle_route.sort();
                        state_route.sort();
                        if shuffle_route.len() != state_route.len() {
                            // Queue i keeps its state in state queue i: with
                            // fewer state queues two shuffle queues would
                            // share one, with more some would go unused.
                            return Ok(Err(StreamsError::Topology(format!(
                                "the shuffle topic {shuffle} has {} queues but the state topic {state} has {}: \
                                 they must have as many (each shuffle queue keeps its state in one state queue); \
                                 give the job new topics or expand the smaller one to match before starting",
                                shuffle_route.len(),
                                state_route.len()
                            ))));
                        }
                        let reader = rocketmq_streams_io::QueueReader::start(
                            io2.clone(),
                            &client,
                            &format!("{producer_group}-state-reader"),
                        )
                        .await?;
                        Some((shuffle_route, state_route, reader))
                    }
                    None => None,
                };
                let sink = Sink::start(io2, &client, &producer_group)
                    .await?
                    .with_batch_messages(send_batch);
                Ok::<_, rocketmq_streams_io::Error>(Ok((admin, sink, routes, dlq_route, keyed_routes)))
            })???
        };
        let mut source_config = SourceConfig::new(topology.job_id(), topology.source_topics());
        source_config.consume_from = config.consume_from;
        source_config.with_properties = topology.reads_metadata();
        source_config.tags = topology
            .source_tags()
            .into_iter()
            .map(|(topic, tags)| (topic.to_string(), tags.to_string()))
            .collect();
        source_config.max_poll_records = config.poll_batch;
        // A pull never brings more than a poll may return.
        source_config.pull_batch_size = source_config
            .pull_batch_size
            .min(u32::try_from(config.poll_batch).unwrap_or(u32::MAX));
        source_config.buffer_messages = config.consumer_buffer;
        let tagged = source_config.tags.clone();
        let source = {
            let io2 = io.clone();
            let client = config.client.clone();
            io.block_on(async move { Source::start(io2, &client, source_config).await })??
        };

        let (events_tx, events_rx) = crossbeam::channel::unbounded();
        let instance: Arc<str> = instance_id().into();
        let cores = if config.pin_shards {
            core_affinity::get_core_ids().unwrap_or_default()
        } else {
            Vec::new()
        };
        let state_dir = config
            .state_dir
            .clone()
            .unwrap_or_else(|| std::env::temp_dir().join("rocketmq-streams").join(topology.job_id()));
        // Routes of the keyed stage, and what this instance writes to the
        // shuffle topic (for the lag metric).
        let keyed = keyed_routes.map(|(shuffle, state, reader)| {
            let shuffle = Arc::new(shuffle);
            let written = Arc::new(metrics::ShuffleWritten::new(shuffle.clone()));
            (shuffle, Arc::new(state), reader, written)
        });
        // The coordinator reads tagged source queues past what their
        // subscription does not match (see `Coordinator::skip_unmatched`).
        let reader = match &keyed {
            Some((_, _, reader, _)) => Some(reader.clone()),
            None if !tagged.is_empty() => {
                let io2 = io.clone();
                let client = config.client.clone();
                let group = format!("{}-producer-tag-reader", topology.job_id());
                Some(io.block_on(async move { rocketmq_streams_io::QueueReader::start(io2, &client, &group).await })??)
            }
            None => None,
        };
        let sink_routes = Arc::new(sink_routes);
        let dlq_route = Arc::new(dlq_route);
        let mut outboxes = Vec::new();
        let mut shards = Vec::new();
        let mut hand_off = match (config.shuffle_hand_off, &keyed) {
            (ShuffleHandOff::WriterShard, Some(_)) if config.shards > 1 => handoff::HandOffLinks::mesh(config.shards)
                .into_iter()
                .map(Some)
                .collect(),
            _ => Vec::new(),
        };
        for i in 0..config.shards {
            let id = ShardId(u16::try_from(i).unwrap_or(u16::MAX));
            let (tx, rx) = inbox::channel();
            let counters = Arc::new(ShardCounters::default());
            let setup = ShardSetup {
                id,
                instance: instance.clone(),
                core: (!cores.is_empty()).then(|| cores[i % cores.len()]),
                topology: topology.clone(),
                inbox: rx,
                events: events_tx.clone(),
                sink: sink.clone(),
                sink_routes: sink_routes.clone(),
                dlq_route: dlq_route.clone(),
                policy: config.error_policy,
                outage: config.outage_deadline,
                counters: counters.clone(),
                state: keyed
                    .as_ref()
                    .map(|(shuffle, state, reader, written)| shard::StateSetup {
                        shuffle_route: shuffle.clone(),
                        state_route: state.clone(),
                        written: written.clone(),
                        reader: reader.clone(),
                        admin: admin.clone(),
                        dir: state_dir.clone(),
                        cache: config.cache_capacity,
                        rocksdb: config.rocksdb.clone(),
                        commit_interval: config.commit_interval,
                        protocol: rocketmq_streams_state::ProtocolOptions {
                            snapshot_after: config.snapshot_after,
                            snapshot_batch: config.send_batch,
                            ..rocketmq_streams_state::ProtocolOptions::default()
                        },
                    }),
                hand_off: hand_off.get_mut(i).and_then(Option::take),
            };
            let handle = std::thread::Builder::new()
                .name(format!("rmq-shard-{i}"))
                .spawn(move || shard::run(setup))
                .map_err(|e| StreamsError::Topology(format!("cannot spawn shard thread {i}: {e}")))?;
            outboxes.push(tx);
            shards.push((counters, Some(handle)));
        }
        drop(events_tx);

        let stop = Arc::new(AtomicBool::new(false));
        let state = Arc::new(Mutex::new(CoordinatorState::default()));
        let queries: SharedRoutes = Arc::new(Mutex::new(keyed.as_ref().map(|(shuffle, _, _, _)| QueryRoutes {
            shuffle_route: shuffle.clone(),
            owners: HashMap::new(),
            shards: outboxes.clone(),
        })));
        let coordinator = Coordinator {
            source: Some(source),
            sink: Some(sink),
            reader,
            tagged,
            delivered: HashMap::new(),
            admin,
            written: keyed.as_ref().map(|(_, _, _, written)| written.clone()),
            lag_refreshed: None,
            shards: outboxes,
            events: events_rx,
            owner: HashMap::new(),
            homes: HashMap::new(),
            in_flight: shards
                .iter()
                .map(|(gauge, _)| InFlight {
                    batches: 0,
                    records: 0,
                    gauge: gauge.clone(),
                })
                .collect(),
            admission: admission::Admission::new(config.shards, config.max_batches_in_flight),
            acked: HashMap::new(),
            poisoned: HashSet::new(),
            stop: stop.clone(),
            state: state.clone(),
            commit_interval: config.commit_interval,
            queries: queries.clone(),
            shuffle_topic: topology.shuffle_topic().map(str::to_string),
        };
        let metrics_server = match config.metrics_addr {
            Some(addr) => {
                let listener = io
                    .block_on(prometheus::bind(addr))?
                    .map_err(|e| StreamsError::Config(format!("metrics endpoint on {addr}: {e}")))?;
                let bound = listener.local_addr().unwrap_or(addr);
                let counters: Vec<Arc<ShardCounters>> = shards.iter().map(|(c, _)| c.clone()).collect();
                let state = state.clone();
                let source: prometheus::Snapshot = Arc::new(move || {
                    let counters: Vec<&ShardCounters> = counters.iter().map(Arc::as_ref).collect();
                    snapshot(&counters, &state)
                });
                let task = io.spawn(prometheus::serve(listener, topology.job_id().to_string(), source));
                tracing::info!(%bound, "Prometheus metrics at http://{bound}/metrics");
                Some((bound, task))
            }
            None => None,
        };
        let span = tracing::error_span!("job", job = %topology.job_id(), %instance);
        let coordinator = io.spawn(tracing::Instrument::instrument(coordinator.run(), span));
        Ok(StreamRuntime {
            _io: io,
            stop,
            coordinator: Some(coordinator),
            shards,
            state,
            metrics_server,
            queries,
            stores: topology.stores().into_iter().map(str::to_string).collect(),
        })
    }

    /// A snapshot of the job's metrics.
    pub fn metrics(&self) -> JobMetrics {
        let counters: Vec<&ShardCounters> = self.shards.iter().map(|(c, _)| c.as_ref()).collect();
        snapshot(&counters, &self.state)
    }

    /// The current value of `key` in the queryable store `store` (see
    /// [`GroupedStream::queryable`](crate::GroupedStream::queryable)), if
    /// the key's queue is this instance's: read by the shard that owns it,
    /// between two batches (every record processed so far, checkpointed or
    /// not). Blocks until the shard answers (at most 10 s).
    ///
    /// ```no_run
    /// # use rocketmq_streams::prelude::*;
    /// # fn f(runtime: &StreamRuntime) -> Result<(), StreamsError> {
    /// match runtime.query::<String, u64>("word-counts", &"the".to_string())? {
    ///     QueryAnswer::Found(n) => println!("the: {n}"),
    ///     QueryAnswer::Absent => println!("the: never seen"),
    ///     QueryAnswer::NotHere { queue } => println!("ask the instance that owns {queue}"),
    ///     QueryAnswer::NotReady { .. } => println!("restoring; ask again"),
    /// }
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    ///
    /// [`StreamsError::Topology`] if the job has no store `store`;
    /// [`StreamsError::Serde`] if the key does not serialize or the value
    /// does not decode as `V` (not the store's type);
    /// [`StreamsError::Shutdown`] once the job has stopped; a transient
    /// [`StreamsError::Io`] if the shard does not answer in time; the
    /// store's error if it cannot be read.
    pub fn query<K: Serialize, V: DeserializeOwned>(&self, store: &str, key: &K) -> Result<QueryAnswer<V>> {
        if !self.stores.iter().any(|s| s == store) {
            return Err(StreamsError::Topology(format!(
                "no queryable store is named {store:?}; the job's are {:?}",
                self.stores
            )));
        }
        let mut raw_key = Vec::new();
        crate::codec::encode_into(&mut raw_key, key, "query key")?;
        let (queue, outbox) = {
            let routes = self.queries.lock().unwrap_or_else(|p| p.into_inner());
            let Some(routes) = routes.as_ref() else {
                return Err(StreamsError::Shutdown(
                    "the job has stopped: no query is answered".into(),
                ));
            };
            let index = rocketmq_streams_shuffle::stable_hash(&raw_key) % routes.shuffle_route.len().max(1) as u64;
            let Some(queue) = routes.shuffle_route.get(index as usize).cloned() else {
                return Err(StreamsError::Topology("the job has no shuffle queue".into()));
            };
            match routes.owners.get(&queue) {
                Some(&shard) => (queue, routes.shards[shard].clone()),
                None => return Ok(QueryAnswer::NotHere { queue }),
            }
        };
        let (reply, answer) = crossbeam::channel::bounded(1);
        let message = ShardMsg::Query {
            queue: queue.clone(),
            store: store.to_string(),
            raw_key: bytes::Bytes::from(raw_key),
            reply,
        };
        if outbox.send(message).is_err() {
            return Err(StreamsError::Shutdown(
                "the job has stopped: no query is answered".into(),
            ));
        }
        drop(outbox);
        match answer.recv_timeout(QUERY_TIMEOUT) {
            Ok(ShardAnswer::Value(Some(bytes))) => {
                Ok(QueryAnswer::Found(crate::codec::decode(&bytes, "queried value")?))
            }
            Ok(ShardAnswer::Value(None)) => Ok(QueryAnswer::Absent),
            Ok(ShardAnswer::NotReady) => Ok(QueryAnswer::NotReady { queue }),
            Ok(ShardAnswer::Failed(error)) => Err(error),
            Err(_) => Err(StreamsError::Io(rocketmq_streams_io::Error::transient(
                rocketmq_streams_io::Operation::Runtime,
                format!("the shard owning {queue} did not answer the query within {QUERY_TIMEOUT:?}"),
            ))),
        }
    }

    /// The address the Prometheus endpoint listens on, if
    /// [`RuntimeConfig::metrics_addr`] turned it on (the port the system
    /// chose, when it was 0).
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics_server.as_ref().map(|(addr, _)| *addr)
    }

    /// Whether the job stopped on its own (a record failed under policy
    /// `Fail`, or the cluster became unusable); `stop` then reports why.
    pub fn has_stopped(&self) -> bool {
        self.coordinator.as_ref().is_none_or(|c| c.is_finished())
    }

    /// Stops polling, lets the shards finish what they hold, waits for the
    /// broker's acknowledgements, commits, and shuts the clients down.
    /// Returns the final metrics.
    ///
    /// # Errors
    ///
    /// The error that stopped the job, if one did ([`StreamsError::RecordFailed`]
    /// under policy `Fail`, or an I/O error).
    pub fn stop(mut self) -> Result<JobMetrics> {
        let result = self.shutdown();
        let metrics = self.metrics();
        result.map(|()| metrics)
    }
}

/// The job's metrics from its shards' counters and the coordinator's state.
fn snapshot(shards: &[&ShardCounters], state: &Mutex<CoordinatorState>) -> JobMetrics {
    let state = state.lock().unwrap_or_else(|p| p.into_inner());
    JobMetrics {
        shards: shards
            .iter()
            .enumerate()
            .map(|(i, c)| c.snapshot(ShardId(u16::try_from(i).unwrap_or(u16::MAX))))
            .collect(),
        commits: state.commits,
        committed: state.committed.clone(),
        lag: state.lag.clone(),
        dispatch_behind: state.dispatch_behind,
    }
}

impl Drop for StreamRuntime {
    fn drop(&mut self) {
        if let Err(e) = self.shutdown() {
            tracing::error!(error = %e, "the job stopped with an error");
        }
    }
}

impl StreamRuntime {
    /// Asks the coordinator to stop, waits for it (it drains the shards and
    /// commits), then joins the shard threads. Does nothing the second time.
    fn shutdown(&mut self) -> Result<()> {
        let Some(task) = self.coordinator.take() else {
            return Ok(());
        };
        self.stop.store(true, Ordering::Release);
        if let Some((_, server)) = self.metrics_server.take() {
            server.abort();
        }
        let result = futures::executor::block_on(task)
            .map_err(StreamsError::Io)
            .and_then(|r| r);
        self.join_shards();
        result
    }

    /// Joins the shard threads that have finished. The coordinator already
    /// waited for them (and reported those that did not stop as an error);
    /// a thread still running now is left detached rather than hanging the
    /// caller.
    fn join_shards(&mut self) {
        for (i, (_, handle)) in self.shards.iter_mut().enumerate() {
            if let Some(h) = handle.take() {
                if h.is_finished() {
                    if h.join().is_err() {
                        tracing::error!(shard = i, "shard thread panicked");
                    }
                } else {
                    tracing::error!(shard = i, "shard thread still running at stop; left detached");
                }
            }
        }
    }
}

/// The most queues `route` has on one broker (`default` for an empty one).
fn queues_per_broker(route: &[QueueId], default: u32) -> u32 {
    let mut per_broker: HashMap<&str, u32> = HashMap::new();
    for queue in route {
        *per_broker.entry(queue.broker()).or_default() += 1;
    }
    per_broker.into_values().max().unwrap_or(default)
}

/// This instance's name in logs: the process id and the instance's number
/// in the process (several instances of a job can share a process).
fn instance_id() -> String {
    static STARTED: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = STARTED.fetch_add(1, Ordering::Relaxed);
    format!("{}-{n}", std::process::id())
}

async fn route_or_create(admin: &Admin, topic: &str, queues: u32) -> rocketmq_streams_io::Result<Vec<QueueId>> {
    match admin.route(topic).await {
        Ok(route) if !route.is_empty() => Ok(route),
        _ => {
            admin.create_topic(topic, queues).await?;
            admin.route(topic).await
        }
    }
}

/// Batches, and their records, a shard holds unfinished, and the shard's
/// counters its records are published to.
#[derive(Debug)]
struct InFlight {
    batches: usize,
    records: usize,
    gauge: Arc<ShardCounters>,
}

struct Coordinator {
    source: Option<Source>,
    sink: Option<Sink>,
    /// The state topic's reader, shared with the shards for restores (also
    /// there for a stateless job with tagged sources).
    reader: Option<rocketmq_streams_io::QueueReader>,
    /// The tag expression of each tagged source topic.
    tagged: HashMap<String, String>,
    /// The next offset of the last batch of each tagged source queue given
    /// to a shard: a queue whose batches are all acknowledged has none in
    /// flight.
    delivered: HashMap<QueueId, Offset>,
    /// Reads the queues' end offsets, for the lag metric.
    admin: Admin,
    /// What this instance wrote to the shuffle topic: the lag of a shuffle
    /// queue never reads below it.
    written: Option<Arc<metrics::ShuffleWritten>>,
    lag_refreshed: Option<Instant>,
    shards: Vec<Outbox<ShardMsg>>,
    events: crossbeam::channel::Receiver<ShardEvent>,
    owner: HashMap<QueueId, usize>,
    /// The shard each queue was ever given to: a queue that comes back goes
    /// to the same shard, so its revoke and its new batches are seen in
    /// order, and its local database is opened by one shard at a time.
    homes: HashMap<QueueId, usize>,
    /// What each shard holds unfinished ([`ShardEvent::Acked`] and
    /// [`ShardEvent::Held`] give a batch back); its records are published
    /// to its gauge.
    in_flight: Vec<InFlight>,
    /// Back-pressure per shard ([`RuntimeConfig::max_batches_in_flight`]).
    admission: admission::Admission,
    acked: HashMap<QueueId, Offset>,
    poisoned: HashSet<QueueId>,
    stop: Arc<AtomicBool>,
    state: Arc<Mutex<CoordinatorState>>,
    commit_interval: Duration,
    /// The owners interactive queries see, kept in step with `owner`.
    queries: SharedRoutes,
    /// The job's shuffle topic: its queues' state is claimed on assignment.
    shuffle_topic: Option<String>,
}

impl Coordinator {
    async fn run(mut self) -> Result<()> {
        let result = self.run_loop().await;
        let drained = self.drain().await;
        self.lag_refreshed = None; // the final figures are always fresh
        let committed = self.commit().await;
        if let Some(source) = self.source.take() {
            source.shutdown().await;
        }
        if let Some(sink) = self.sink.take() {
            sink.shutdown().await;
        }
        if let Some(reader) = self.reader.take() {
            reader.shutdown().await;
        }
        result.and(drained).and(committed)
    }

    async fn run_loop(&mut self) -> Result<()> {
        let mut last_commit = Instant::now();
        while !self.stop.load(Ordering::Acquire) {
            self.handle_events()?;
            let Some(source) = self.source.as_mut() else { break };
            let changes = source.assignment_changes();
            for change in changes {
                match change {
                    AssignmentChange::Assigned(q) => {
                        let shard = self.shard_of(&q);
                        tracing::info!(queue = %q, shard, "queue assigned");
                        if self.shuffle_topic.as_deref() == Some(q.topic()) {
                            let _ = self.shards[shard].send(ShardMsg::Claim(q));
                        }
                    }
                    AssignmentChange::Revoked(q) => {
                        tracing::info!(queue = %q, "queue revoked");
                        self.acked.remove(&q);
                        self.delivered.remove(&q);
                        self.admission.forget(&q);
                        if let Some(routes) = self.queries.lock().unwrap_or_else(|p| p.into_inner()).as_mut() {
                            routes.owners.remove(&q);
                        }
                        if let Some(shard) = self.owner.remove(&q) {
                            let _ = self.shards[shard].send(ShardMsg::Revoke(q));
                        }
                    }
                }
            }
            self.release_waiting()?;
            self.apply_pauses().await;
            let in_flight: Vec<usize> = self.in_flight.iter().map(|n| n.batches).collect();
            if self.admission.all_full(&in_flight) {
                tracing::trace!(batches_in_flight = ?in_flight, "shards busy; not polling");
                tokio::time::sleep(Duration::from_millis(1)).await;
            } else {
                let Some(source) = self.source.as_ref() else { break };
                let batches = source.poll().await?;
                for batch in batches {
                    if batch.records.is_empty() {
                        continue;
                    }
                    let unknown = !self.owner.contains_key(&batch.queue);
                    if unknown && !self.assigned(&batch.queue).await? {
                        // Polled before its revoke: never processed, never
                        // acknowledged; giving it to a shard would claim the
                        // queue's state away from its new owner.
                        tracing::debug!(queue = %batch.queue, "dropping a batch of a queue no longer assigned");
                        continue;
                    }
                    let shard = self.shard_of(&batch.queue);
                    let in_flight = self.in_flight[shard].batches;
                    if let Some(batch) = self.admission.admit(shard, in_flight, batch) {
                        self.give(shard, batch)?;
                    }
                }
            }
            if last_commit.elapsed() >= self.commit_interval {
                // Every assigned keyed queue has its state or a restore
                // under way (the shard ignores a claim of a queue it has):
                // a queue left without either, whatever the path, would
                // never be processed while the consumer delivers nothing.
                if let Some(shuffle) = self.shuffle_topic.as_deref() {
                    for (queue, &shard) in self.owner.iter().filter(|(q, _)| q.topic() == shuffle) {
                        let _ = self.shards[shard].send(ShardMsg::Claim(queue.clone()));
                    }
                }
                for shard in &self.shards {
                    let _ = shard.send(ShardMsg::Tick);
                }
                self.reconcile().await;
                self.fix_starts().await;
                self.skip_unmatched().await;
                self.commit().await?;
                last_commit = Instant::now();
            }
        }
        Ok(())
    }

    /// Puts right what the consumer's rebalance reported wrongly (its
    /// changes come back through `assignment_changes`); see
    /// [`Source::reconcile`]. A failure to read the assignment waits for
    /// the next commit interval.
    async fn reconcile(&mut self) {
        let Some(source) = self.source.as_mut() else { return };
        match source.reconcile().await {
            Ok(0) => {}
            Ok(fixed) => tracing::warn!(
                fixed,
                "the consumer's assignment differed from what its rebalance reported; following the assignment"
            ),
            Err(error) => tracing::debug!(%error, "cannot read the consumer's assignment"),
        }
    }

    /// Gives `batch` to `shard`, counting it in flight.
    fn give(&mut self, shard: usize, batch: rocketmq_streams_io::QueueBatch) -> Result<()> {
        self.count_in_flight(shard, batch.records.len(), true);
        if let (true, Some(next)) = (self.tagged.contains_key(batch.queue.topic()), batch.next_offset()) {
            self.delivered.insert(batch.queue.clone(), next);
        }
        if self.shards[shard].send(ShardMsg::Batch(batch)).is_err() {
            return Err(StreamsError::Topology(format!("shard {shard} is gone")));
        }
        Ok(())
    }

    /// Gives each shard with room the batches that waited for it, in order.
    fn release_waiting(&mut self) -> Result<()> {
        for shard in 0..self.shards.len() {
            while let Some(batch) = self.admission.next_for(shard, self.in_flight[shard].batches) {
                self.give(shard, batch)?;
            }
        }
        Ok(())
    }

    /// Pauses the consumer's queues of full shards and resumes the others
    /// (see [`admission`]).
    async fn apply_pauses(&mut self) {
        let in_flight: Vec<usize> = self.in_flight.iter().map(|n| n.batches).collect();
        let (pause, resume) = self.admission.pauses(&self.owner, &in_flight);
        let Some(source) = self.source.as_ref() else { return };
        if !pause.is_empty() {
            tracing::debug!(queues = ?pause, "shard full: pausing its queues");
            source.pause(pause).await;
        }
        if !resume.is_empty() {
            tracing::debug!(queues = ?resume, "shard has room again: resuming its queues");
            source.resume(resume).await;
        }
    }

    /// Fixes where queues assigned under [`ConsumeFrom::Last`] start
    /// ([`Source::fix_starts`]); a failure waits for the next interval.
    async fn fix_starts(&mut self) {
        let Some(source) = self.source.as_mut() else { return };
        let shuffle = self.shuffle_topic.as_deref();
        if let Err(error) = source.fix_starts(|q| Some(q.topic()) != shuffle).await {
            tracing::debug!(%error, "cannot fix where queues start yet");
        }
    }

    /// Moves the acknowledged offset of each owned tagged source queue with
    /// no batch in flight past the messages its tag expression does not
    /// match (read on the broker, which filters by tag): the consumer never
    /// delivers those, so without this the group's committed offset would
    /// stop at the last message that matched, and whatever waits for the
    /// group to consume its input (a window's idle firing) would wait
    /// forever behind a tail of other tags (issue 28). Only queues that the
    /// last lag reading showed behind are read; a failed read waits for the
    /// next commit interval.
    async fn skip_unmatched(&mut self) {
        let (Some(reader), Some(source)) = (&self.reader, &self.source) else {
            return;
        };
        let behind: Vec<(QueueId, Offset)> = {
            let state = self.state.lock().unwrap_or_else(|p| p.into_inner());
            self.owner
                .keys()
                .filter(|q| self.tagged.contains_key(q.topic()) && !self.poisoned.contains(*q))
                .filter(|q| state.lag.get(*q).is_none_or(|&lag| lag > 0))
                .filter_map(|q| {
                    let done = self.acked.get(q).or_else(|| source.committed().get(q)).copied()?;
                    // Batches in flight: their acknowledgements come first.
                    let idle = self.delivered.get(q).is_none_or(|&d| d <= done);
                    idle.then(|| (q.clone(), done))
                })
                .collect()
        };
        for (queue, from) in behind {
            let tags = &self.tagged[queue.topic()];
            match reader.read_matching(queue.clone(), from, 1, tags).await {
                Ok(Ok(chunk)) if chunk.records.is_empty() && chunk.next > from => {
                    tracing::debug!(%queue, %from, next = %chunk.next, "no message matches the subscription: skipped");
                    self.acked.insert(queue, chunk.next);
                }
                Ok(Ok(_)) => {}
                Ok(Err(error)) | Err(error) => {
                    tracing::debug!(%queue, %error, "cannot read past unmatched messages yet");
                }
            }
        }
    }

    /// Whether the consumer has `queue` assigned now.
    async fn assigned(&self, queue: &QueueId) -> Result<bool> {
        match self.source.as_ref() {
            Some(source) => Ok(source.is_assigned(queue).await?),
            None => Ok(false),
        }
    }

    /// The shard owning `queue`, giving it to the least loaded shard if new.
    fn shard_of(&mut self, queue: &QueueId) -> usize {
        if let Some(&s) = self.owner.get(queue) {
            return s;
        }
        let shard = self.place(queue);
        if let Some(routes) = self.queries.lock().unwrap_or_else(|p| p.into_inner()).as_mut() {
            routes.owners.insert(queue.clone(), shard);
        }
        shard
    }

    /// Gives `queue` (not owned now) to its home shard, or to the least
    /// loaded one if it never had one.
    fn place(&mut self, queue: &QueueId) -> usize {
        if let Some(&s) = self.homes.get(queue) {
            self.owner.insert(queue.clone(), s);
            return s;
        }
        let mut load = vec![0usize; self.shards.len()];
        for &s in self.owner.values() {
            load[s] += 1;
        }
        let shard = (0..load.len()).min_by_key(|&s| (load[s], s)).unwrap_or(0);
        self.owner.insert(queue.clone(), shard);
        self.homes.insert(queue.clone(), shard);
        shard
    }

    fn handle_events(&mut self) -> Result<()> {
        while let Ok(event) = self.events.try_recv() {
            self.apply(event)?;
        }
        Ok(())
    }

    fn apply(&mut self, event: ShardEvent) -> Result<()> {
        match event {
            ShardEvent::Acked {
                shard,
                queue,
                next,
                held,
                records,
            } => {
                if !held {
                    self.count_in_flight(shard.0 as usize, records, false);
                }
                if let (Some(next), true) = (next, self.owner.contains_key(&queue) && !self.poisoned.contains(&queue)) {
                    self.acked.insert(queue, next);
                }
                Ok(())
            }
            ShardEvent::Failed { shard, queue, error } => {
                // The job stops: nothing is polled again, so the failed
                // batch's records stay counted.
                if let Some(queue) = queue {
                    // Never commit past the failed record: a restart must see it again.
                    self.poisoned.insert(queue);
                }
                tracing::error!(%shard, %error, "the job stops");
                Err(error)
            }
            ShardEvent::Checkpointed { queue, next } => {
                if self.owner.contains_key(&queue) && !self.poisoned.contains(&queue) {
                    self.acked.insert(queue, next);
                }
                Ok(())
            }
            ShardEvent::Held { shard, records } => {
                self.count_in_flight(shard.0 as usize, records, false);
                Ok(())
            }
            ShardEvent::Stopped(_) => Ok(()),
        }
    }

    /// Counts a batch of `records` given to shard `s` (`given`) or given
    /// back, and publishes the shard's gauge.
    fn count_in_flight(&mut self, s: usize, records: usize, given: bool) {
        let Some(n) = self.in_flight.get_mut(s) else { return };
        if given {
            n.batches += 1;
            n.records += records;
        } else {
            n.batches = n.batches.saturating_sub(1);
            n.records = n.records.saturating_sub(records);
        }
        n.gauge.records_in_flight.store(n.records as u64, Ordering::Relaxed);
    }

    /// Closes the shards' inboxes and waits until each has processed what it
    /// holds and stopped.
    async fn drain(&mut self) -> Result<()> {
        // Queries let go of the shards too (a shard stops once no one can send).
        *self.queries.lock().unwrap_or_else(|p| p.into_inner()) = None;
        self.shards.clear();
        let mut stopped = 0;
        let total = self.in_flight.len();
        let deadline = Instant::now() + STOP_TIMEOUT;
        let mut result = Ok(());
        while stopped < total && Instant::now() < deadline {
            match self.events.try_recv() {
                Ok(ShardEvent::Stopped(shard)) => {
                    tracing::debug!(%shard, "shard stopped");
                    stopped += 1;
                }
                Ok(event) => {
                    if let Err(e) = self.apply(event) {
                        result = result.and(Err(e));
                    }
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(2)).await,
            }
        }
        if stopped < total {
            let message = format!("{} shard(s) did not stop within {STOP_TIMEOUT:?}", total - stopped);
            tracing::error!("{message}");
            result = result.and(Err(StreamsError::Shutdown(message)));
        }
        result
    }

    async fn commit(&mut self) -> Result<()> {
        let Some(source) = self.source.as_mut() else {
            return Ok(());
        };
        source.commit(&self.acked).await?;
        let committed: BTreeMap<QueueId, Offset> = source.committed().iter().map(|(q, o)| (q.clone(), *o)).collect();
        let lag = self.refresh_lag(&committed).await;
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        state.commits += 1;
        state.committed = committed;
        if let Some((lag, behind)) = lag {
            state.lag = lag;
            state.dispatch_behind = behind;
        }
        Ok(())
    }

    /// The lag of every owned queue and the brokers' dispatch backlog, at
    /// most once a second (it asks the brokers). A failure only leaves the
    /// last figures in place.
    ///
    /// The backlog is read first: a broker stores a message before it
    /// acknowledges it and indexes it into the consume queue (whose end
    /// offset the lag uses) afterwards, so a backlog of 0 read before the
    /// end offsets means they count every message acknowledged until then,
    /// the shuffle frames behind `committed` among them. The end of a
    /// shuffle queue is never taken below what this instance wrote to it
    /// (exact, whatever the backlog).
    async fn refresh_lag(&mut self, committed: &BTreeMap<QueueId, Offset>) -> Option<(BTreeMap<QueueId, u64>, u64)> {
        if self.lag_refreshed.is_some_and(|t| t.elapsed() < LAG_REFRESH) {
            return None;
        }
        self.lag_refreshed = Some(Instant::now());
        let behind = match self.admin.dispatch_behind().await {
            Ok(behind) => behind,
            Err(error) => {
                tracing::warn!(%error, "cannot read the brokers' dispatch backlog for the lag metric");
                return None;
            }
        };
        let topics: BTreeSet<&str> = self.owner.keys().map(QueueId::topic).collect();
        let mut lag = BTreeMap::new();
        for topic in topics {
            match self.admin.queue_offsets(topic).await {
                Ok(offsets) => {
                    for o in offsets.into_iter().filter(|o| self.owner.contains_key(&o.queue)) {
                        let done = committed.get(&o.queue).map_or(o.min.0, |c| c.0);
                        let written = self.written.as_ref().and_then(|w| w.end(&o.queue)).map_or(-1, |e| e.0);
                        let end = o.max.0.max(written);
                        lag.insert(o.queue, u64::try_from(end - done).unwrap_or(0));
                    }
                }
                Err(error) => {
                    tracing::warn!(topic, %error, "cannot read end offsets for the lag metric");
                    return None;
                }
            }
        }
        Some((lag, behind))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_state_topic_mirrors_the_shuffle_topic_per_broker() {
        let route: Vec<QueueId> = ["a", "b"]
            .iter()
            .flat_map(|broker| (0..4).map(move |i| QueueId::new("job-shuffle", *broker, i)))
            .collect();
        assert_eq!(
            queues_per_broker(&route, 8),
            4,
            "two brokers of 4 queues: 4 each, 8 in all"
        );
        assert_eq!(queues_per_broker(&route[..4], 8), 4);
        assert_eq!(queues_per_broker(&[], 8), 8);
    }
}
