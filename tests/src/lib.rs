//! Shared helpers of the broker-backed integration tests.
//!
//! Every test file is named `<area>_<topic>.rs` and talks to a real RocketMQ:
//! an [`EmbeddedRocketMQ`] of its own by default, or the cluster named by
//! `ROCKETMQ_NAMESRV_ADDR`. Each test uses topics and groups with a unique
//! suffix, so tests can share an external cluster and run in parallel.
#![warn(missing_docs)]

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rocketmq_streams_io::{ClientConfig, EmbeddedRocketMQ, IoRuntime};

pub mod joins;
pub mod processes;
pub mod windows;
pub mod wordcount;

/// One broker-backed test at a time per test binary: the machine these run
/// on has two cores, and several brokers plus several jobs' pinned shards at
/// once only slow each other down. The load once exposed a lost wake-up (a
/// shard that never stopped, fixed in the runtime's inbox); set
/// `RMQ_STREAMS_TESTS_PARALLEL=1` to run them all at once as a stress test.
static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// Waits for this test's turn (see [`ONE_AT_A_TIME`]) and sets up logging.
/// `RMQ_STREAMS_TESTS_PARALLEL=1` lifts the lock, to stress the runtime.
fn take_turn() -> Option<std::sync::MutexGuard<'static, ()>> {
    let turn = std::env::var_os("RMQ_STREAMS_TESTS_PARALLEL")
        .is_none()
        .then(|| ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner()));
    rocketmq_streams_io::init_logging();
    turn
}

/// A broker to test against, and an I/O runtime to talk to it.
pub struct TestCluster {
    /// Connection settings for the cluster.
    pub client: ClientConfig,
    /// The I/O runtime shared by the test's clients.
    pub io: Arc<IoRuntime>,
    /// One admin client for the polls of [`TestCluster::topic_size`].
    admin: std::sync::OnceLock<rocketmq_streams_io::Admin>,
    // Dropped after the clients: clients shut down before their broker does.
    _embedded: Option<EmbeddedRocketMQ>,
    _turn: Option<std::sync::MutexGuard<'static, ()>>,
}

impl TestCluster {
    /// Starts an embedded broker, unless `ROCKETMQ_NAMESRV_ADDR` names one.
    ///
    /// # Panics
    ///
    /// Panics if the broker or the I/O runtime cannot start: the test cannot run.
    pub fn start() -> Self {
        let turn = take_turn();
        let (embedded, client) = EmbeddedRocketMQ::unless_env().expect("embedded RocketMQ should start");
        Self::with(embedded, client, turn)
    }

    /// An embedded broker started with `config` (never an external one:
    /// the test depends on the settings). With `config.acl`, the cluster's
    /// client signs with those credentials.
    ///
    /// # Panics
    ///
    /// Panics if the broker or the I/O runtime cannot start.
    pub fn start_with(config: rocketmq_streams_io::EmbeddedConfig) -> Self {
        let turn = take_turn();
        let credentials = config.acl.clone();
        let mq = EmbeddedRocketMQ::start_with(config).expect("embedded RocketMQ should start");
        let mut client = ClientConfig::new(mq.namesrv_addr());
        client.credentials = credentials;
        Self::with(Some(mq), client, turn)
    }

    fn with(
        embedded: Option<EmbeddedRocketMQ>,
        client: ClientConfig,
        turn: Option<std::sync::MutexGuard<'static, ()>>,
    ) -> Self {
        let io = IoRuntime::new(1).expect("I/O runtime should start");
        TestCluster {
            client,
            io,
            _embedded: embedded,
            _turn: turn,
            admin: std::sync::OnceLock::new(),
        }
    }

    /// A cluster at `namesrv` started by the test itself (for example a
    /// broker process it kills and restarts); waits its turn like
    /// [`start`](Self::start).
    ///
    /// # Panics
    ///
    /// Panics if the I/O runtime cannot start.
    pub fn external(namesrv: &str) -> Self {
        let turn = take_turn();
        Self::with(None, ClientConfig::new(namesrv), turn)
    }

    /// Runs `future` on the I/O runtime and waits for it.
    ///
    /// # Panics
    ///
    /// Panics if the task panicked.
    pub fn block_on<F>(&self, future: F) -> F::Output
    where
        F: std::future::Future + Send + 'static,
        F::Output: Send + 'static,
    {
        self.io.block_on(future).expect("test task should not panic")
    }
}

/// A name unique to this test process and call: `<prefix>-<pid>-<n>`.
pub fn unique(prefix: &str) -> String {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    format!(
        "{prefix}-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

/// Polls `check` every 100 ms until it returns `Some`, for at most `limit`.
pub fn wait_for<T>(limit: Duration, mut check: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(v) = check() {
            return Some(v);
        }
        if Instant::now() > deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

impl TestCluster {
    /// Creates `topic` with `queues` queues and sends `bodies` spread over
    /// them; returns the topic's queues.
    ///
    /// # Panics
    ///
    /// Panics if the topic cannot be created or a send fails.
    pub fn produce(&self, topic: &str, queues: u32, bodies: Vec<bytes::Bytes>) -> Vec<rocketmq_streams_io::QueueId> {
        let records = bodies.into_iter().map(rocketmq_streams_io::OutRecord::new).collect();
        self.produce_records(topic, queues, records)
    }

    /// As [`produce`](Self::produce), for whole messages (keys, tags,
    /// properties).
    ///
    /// # Panics
    ///
    /// As [`produce`](Self::produce).
    pub fn produce_records(
        &self,
        topic: &str,
        queues: u32,
        records: Vec<rocketmq_streams_io::OutRecord>,
    ) -> Vec<rocketmq_streams_io::QueueId> {
        let (io, client, topic) = (self.io.clone(), self.client.clone(), topic.to_string());
        self.block_on(async move {
            let admin = rocketmq_streams_io::Admin::start(io.clone(), &client)
                .await
                .expect("admin");
            admin.create_topic(&topic, queues).await.expect("create topic");
            let route = admin.route(&topic).await.expect("route");
            let sink = rocketmq_streams_io::Sink::start(io, &client, &unique("test-producer"))
                .await
                .expect("producer");
            sink.send_spread(&route, records).await.expect("produce");
            sink.shutdown().await;
            route
        })
    }

    /// Sends `body` to the first queue of the existing `topic`.
    ///
    /// # Panics
    ///
    /// Panics if the topic has no route or the send fails.
    pub fn send_to(&self, topic: &str, body: bytes::Bytes) {
        let (io, client, topic) = (self.io.clone(), self.client.clone(), topic.to_string());
        self.block_on(async move {
            let admin = rocketmq_streams_io::Admin::start(io.clone(), &client)
                .await
                .expect("admin");
            let route = admin.route(&topic).await.expect("route");
            let sink = rocketmq_streams_io::Sink::start(io, &client, &unique("test-producer"))
                .await
                .expect("producer");
            sink.send(route[0].clone(), vec![rocketmq_streams_io::OutRecord::new(body)])
                .await
                .expect("bridge")
                .expect("send");
            sink.shutdown().await;
        });
    }

    /// The test's admin client, started at the first call; `None` if it
    /// cannot start.
    pub fn admin(&self) -> Option<rocketmq_streams_io::Admin> {
        if let Some(admin) = self.admin.get() {
            return Some(admin.clone());
        }
        let (io, client) = (self.io.clone(), self.client.clone());
        let admin = self
            .block_on(async move { rocketmq_streams_io::Admin::start(io, &client).await })
            .ok()?;
        Some(self.admin.get_or_init(|| admin).clone())
    }

    /// How many messages `topic` holds: its queues' end offsets summed (0 if
    /// it does not exist yet), read once the brokers have indexed every
    /// message they stored (their dispatch backlog is 0, waited for at most
    /// 60 s): the end offsets count every message acknowledged before the
    /// call.
    pub fn topic_size(&self, topic: &str) -> u64 {
        let Some(admin) = self.admin() else { return 0 };
        let topic = topic.to_string();
        self.block_on(async move {
            let deadline = Instant::now() + Duration::from_secs(60);
            while admin.dispatch_behind().await.map_or(true, |b| b > 0) && Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            match admin.queue_offsets(&topic).await {
                Ok(offsets) => offsets.iter().map(|o| u64::try_from(o.max.0).unwrap_or(0)).sum(),
                Err(_) => 0,
            }
        })
    }

    /// Reads `output` (while a job writes it) every [`read_topic`](Self::read_topic)
    /// until `parse` of its bodies is `complete` (the parse and the number
    /// of bodies), or `limit` passes. Returns the last parse, or `None`
    /// with it if it never completed.
    ///
    /// # Panics
    ///
    /// As [`read_topic`](Self::read_topic).
    pub fn read_until<T>(
        &self,
        output: &str,
        at_least: usize,
        limit: Duration,
        parse: impl Fn(&[bytes::Bytes]) -> T,
        mut complete: impl FnMut(&T, usize) -> bool,
    ) -> Result<(T, usize), T> {
        let mut last = None;
        let done = wait_for(limit, || {
            let bodies: Vec<_> = self
                .read_topic(output, at_least, Duration::from_secs(10))
                .into_iter()
                .map(|r| r.body)
                .collect();
            let parsed = parse(&bodies);
            let done = complete(&parsed, bodies.len());
            last = Some((parsed, bodies.len()));
            done.then_some(())
        });
        match (last, done) {
            (Some(last), Some(())) => Ok(last),
            (Some((parsed, _)), None) => Err(parsed),
            (None, _) => Err(parse(&[])),
        }
    }

    /// Reads `topic` from the start with a fresh consumer group until at
    /// least `at_least` records arrived and then nothing new came for 2 s
    /// (so duplicates would show), or until `limit` passed.
    ///
    /// # Panics
    ///
    /// Panics if the consumer cannot start or a poll fails.
    pub fn read_topic(&self, topic: &str, at_least: usize, limit: Duration) -> Vec<rocketmq_streams_io::Record> {
        self.read_topic_queues(topic, at_least, limit)
            .into_iter()
            .map(|(_, r)| r)
            .collect()
    }

    /// As [`read_topic`](Self::read_topic), each record with its queue.
    ///
    /// # Panics
    ///
    /// As [`read_topic`](Self::read_topic).
    pub fn read_topic_queues(
        &self,
        topic: &str,
        at_least: usize,
        limit: Duration,
    ) -> Vec<(rocketmq_streams_io::QueueId, rocketmq_streams_io::Record)> {
        let (io, client, topic) = (self.io.clone(), self.client.clone(), topic.to_string());
        self.block_on(async move {
            let mut config = rocketmq_streams_io::SourceConfig::new(unique("test-reader"), [topic]);
            config.with_properties = true;
            let reader = rocketmq_streams_io::Source::start(io, &client, config)
                .await
                .expect("reader");
            let mut out = Vec::new();
            let deadline = Instant::now() + limit;
            let mut last_new = Instant::now();
            while Instant::now() < deadline {
                let before = out.len();
                for b in reader.poll().await.expect("poll") {
                    out.extend(b.records.into_iter().map(|r| (b.queue.clone(), r)));
                }
                if out.len() > before {
                    last_new = Instant::now();
                }
                if out.len() >= at_least && last_new.elapsed() > Duration::from_secs(2) {
                    break;
                }
            }
            reader.shutdown().await;
            out
        })
    }
}

/// Waits (at most `limit`) until `midway` holds while the job process
/// `child` runs, then kills it with SIGKILL (no stop, no checkpoint, no
/// commit) and reaps it.
///
/// # Panics
///
/// If the process exits on its own first, `midway` never holds, or the
/// process was not killed by the signal.
pub fn kill_midway(child: &mut std::process::Child, limit: Duration, mut midway: impl FnMut() -> bool) {
    let reached = wait_for(limit, || {
        if let Ok(Some(status)) = child.try_wait() {
            panic!("the job process exited early: {status}");
        }
        midway().then_some(())
    });
    child.kill().expect("SIGKILL the job process");
    let status = child.wait().expect("reap the job process");
    assert!(reached.is_some(), "the job process made no progress within {limit:?}");
    assert!(!status.success(), "killed, not exited: {status}");
}

/// Runs `runtime` until the process is interrupted (SIGINT, SIGTERM) or
/// the job stops, then stops it: the main loop of the test job binaries.
///
/// # Errors
///
/// If the interrupt handler cannot be installed or the stop fails.
pub fn run_until_interrupted(
    runtime: rocketmq_streams::StreamRuntime,
    name: &str,
) -> Result<(), Box<dyn std::error::Error>> {
    let interrupt = rocketmq_streams::io::Interrupt::install()?;
    eprintln!("{name}: started");
    // A test that cannot ask this process reads its counters from a file
    // (rewritten every 100 ms): `fenced <n>`.
    let metrics_file = std::env::var_os("ROCKETMQ_STREAMS_TEST_METRICS");
    while !interrupt.is_set() && !runtime.has_stopped() {
        if let Some(path) = &metrics_file {
            let m = runtime.metrics();
            let _ = std::fs::write(path, format!("fenced {}\n", m.total(|s| s.fenced)));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    runtime.stop()?;
    Ok(())
}
