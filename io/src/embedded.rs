//! An in-process RocketMQ name server and broker.
//!
//! [`EmbeddedRocketMQ`] runs the `rocketmq-namesrv` and `rocketmq-broker`
//! crates inside the calling process, on a tokio runtime of their own, bound
//! to `127.0.0.1` on free ports, with their store in a temporary directory
//! that is deleted when the broker stops.
//!
//! Several instances can run side by side in one process (each on its own
//! ports — name server, broker, the broker's "fast" port (broker − 2) and
//! its HA port — its own store and its own runtime): tests run in parallel
//! against brokers of their own (`tests/io_embedded.rs` checks it). The
//! broker's process-wide remoting defaults are initialised once, with the
//! same value, by the first instance. RocketMQ's fixed default HA port
//! (10912) is replaced by a free one, or a second broker would fail to start.
//!
//! A cluster of several brokers, each in a process of its own, is one
//! [`Servers::NameServer`] and [`Servers::Broker`]s registered with it (the
//! `rocketmq-streams-broker` command's `--namesrv-only` and
//! `--namesrv-addr`; `tests/state_two_brokers.rs` runs one).
//!
//! RocketMQ judges its disk by the used ratio, not by free bytes: past 85%
//! it deletes commit-log files early and past 90% it refuses writes (and so
//! does not start). A temporary store therefore goes to `/dev/shm` when the
//! temp dir's disk is past 85% and tmpfs is not; forced early deletion is
//! switched off; and a start on a disk past 90% fails with that reason.

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::Once;
use std::time::{Duration, Instant};

use cheetah_string::CheetahString;
use rocketmq_broker::config::broker_config::BrokerConfig;
use rocketmq_broker::config::validated::ValidatedBrokerConfig;
use rocketmq_broker::{BrokerBootstrap, BrokerStartupError, Running};
use rocketmq_namesrv::bootstrap::Builder as NamesrvBuilder;
use rocketmq_namesrv::NamesrvConfig;
use rocketmq_observability::{TelemetryHandle, TelemetryRuntimeGuard};
use rocketmq_runtime::{RuntimeConfig, RuntimeContext, RuntimeOwner};
use rocketmq_store::MessageStoreConfig;
use rocketmq_transport::api::ServerConfig;
use tokio::sync::oneshot;

use crate::error::{Error, Operation, Result};

/// How long start-up may take before it is reported as failed.
const START_TIMEOUT: Duration = Duration::from_secs(60);
/// How many times a start on self-chosen ports is tried.
const START_ATTEMPTS: u32 = 3;
/// How long each half of the shutdown may take.
const STOP_TIMEOUT: Duration = Duration::from_secs(20);

/// Settings of an [`EmbeddedRocketMQ`].
#[derive(Debug, Clone)]
pub struct EmbeddedConfig {
    /// Tokio worker threads for the name server and broker.
    pub threads: usize,
    /// Size of one commit-log file. The broker maps whole files; the default
    /// (64 MiB) keeps a test broker small. RocketMQ's own default is 1 GiB.
    pub commit_log_file_size: usize,
    /// The most messages the broker returns for one pull request (also
    /// sets the byte limit to 1 KiB per message). RocketMQ's own default is
    /// 32 from memory and 8 from disk; 1024 lets a stream job pull whole
    /// batches.
    pub max_pull_messages: u64,
    /// Name-server port; `None` picks a free one.
    pub namesrv_port: Option<u16>,
    /// Broker port; `None` picks a free one (the broker also listens on
    /// this port minus 2, its "fast" port).
    pub broker_port: Option<u16>,
    /// Where the store lives; `None` uses a temporary directory removed on stop.
    pub store_dir: Option<std::path::PathBuf>,
    /// How long a client may go without a heartbeat before the broker drops
    /// it and its consumer group's queues are given to the others (checked
    /// every 10 s). RocketMQ's default: 120 s.
    pub client_expiry: Duration,
    /// Turns the broker's ACL on (authentication and authorization) with
    /// one super user, these credentials: every client must then sign its
    /// requests with them ([`ClientConfig::credentials`](crate::ClientConfig::credentials)).
    /// Default: off.
    pub acl: Option<crate::Credentials>,
    /// Which servers to run: a name server and a broker (the default), or
    /// one of them, to build a cluster of several processes.
    pub servers: Servers,
}

/// Which servers an [`EmbeddedRocketMQ`] runs.
///
/// A cluster of several brokers is one [`Servers::NameServer`] and any
/// number of [`Servers::Broker`]s registered with it, each in a process
/// (or value) of its own; every broker is a master of the default cluster,
/// named after its port, so topics created by
/// [`Admin::create_topic`](crate::Admin::create_topic) get their queues
/// on every broker.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum Servers {
    /// A name server and one broker registered with it.
    #[default]
    Both,
    /// A name server only.
    NameServer,
    /// A broker only, registered with the name server at `namesrv_addr`
    /// (`host:port`).
    Broker {
        /// The name server the broker registers with.
        namesrv_addr: String,
    },
}

impl Default for EmbeddedConfig {
    fn default() -> Self {
        Self {
            threads: 2,
            commit_log_file_size: 64 * 1024 * 1024,
            max_pull_messages: 1024,
            namesrv_port: None,
            broker_port: None,
            store_dir: None,
            client_expiry: Duration::from_secs(120),
            acl: None,
            servers: Servers::Both,
        }
    }
}

/// A RocketMQ name server and one master broker running inside this
/// process (or one of them: see [`EmbeddedConfig::servers`]).
///
/// ```no_run
/// use rocketmq_streams_io::EmbeddedRocketMQ;
/// let mq = EmbeddedRocketMQ::start().expect("broker");
/// println!("name server at {}", mq.namesrv_addr());
/// // ... use it; it stops when dropped.
/// ```
pub struct EmbeddedRocketMQ {
    owner: Option<RuntimeOwner>,
    broker: Option<BrokerBootstrap<Running>>,
    namesrv_stop: Option<oneshot::Sender<()>>,
    namesrv_task: Option<tokio::task::JoinHandle<rocketmq_namesrv::NameServerResult<()>>>,
    namesrv_addr: String,
    broker_addr: Option<String>,
    _store: Option<tempfile::TempDir>,
}

impl EmbeddedRocketMQ {
    /// The cluster named by `ROCKETMQ_NAMESRV_ADDR` if it is set, otherwise
    /// an embedded one started here with the default settings. The
    /// embedded broker (if any) runs as long as the returned value is kept.
    ///
    /// # Errors
    ///
    /// As [`EmbeddedRocketMQ::start`], when one is started.
    pub fn unless_env() -> Result<(Option<EmbeddedRocketMQ>, crate::ClientConfig)> {
        if let Some(client) = crate::ClientConfig::from_env() {
            return Ok((None, client));
        }
        let mq = Self::start()?;
        let client = crate::ClientConfig::new(mq.namesrv_addr());
        Ok((Some(mq), client))
    }

    /// Starts a name server and a broker with the default settings.
    ///
    /// # Errors
    ///
    /// Returns an [`Operation::EmbeddedBroker`] error if either fails to start
    /// within 60 s.
    pub fn start() -> Result<Self> {
        Self::start_with(EmbeddedConfig::default())
    }

    /// Starts a name server and a broker with `config`.
    ///
    /// # Errors
    ///
    /// Returns an [`Operation::EmbeddedBroker`] error if either fails to start
    /// within 60 s, or the store directory cannot be created. When the ports
    /// are left to this function, a failed start is retried up to three
    /// times on fresh ports before the last error is returned; its message
    /// carries the broker's start-up phase, component and causes.
    pub fn start_with(config: EmbeddedConfig) -> Result<Self> {
        // Free ports are chosen, released and then bound by the servers; in
        // that gap another process (or an outgoing connection) may take one.
        // With ports of our own choosing a failed start is retried on fresh
        // ones; ports the caller fixed are tried once.
        let attempts =
            if config.namesrv_port.is_none() && config.broker_port.is_none() && config.servers == Servers::Both {
                START_ATTEMPTS
            } else {
                1
            };
        let mut attempt = 1;
        loop {
            match Self::start_once(&config) {
                Ok(mq) => return Ok(mq),
                Err(e) if attempt < attempts => {
                    tracing::warn!(attempt, error = %e, "embedded RocketMQ did not start; retrying on fresh ports");
                    attempt += 1;
                }
                Err(e) => return Err(e),
            }
        }
    }

    fn start_once(config: &EmbeddedConfig) -> Result<Self> {
        init_remoting_defaults();
        let (store, store_path) = match &config.store_dir {
            Some(p) => {
                std::fs::create_dir_all(p).map_err(|e| fail(format!("create store dir {}: {e}", p.display())))?;
                (None, p.clone())
            }
            None => {
                let dir = tempfile::Builder::new()
                    .prefix("rocketmq-streams-broker-")
                    .tempdir_in(temporary_store_parent(8 * config.commit_log_file_size as u64))
                    .map_err(|e| fail(format!("create temporary store dir: {e}")))?;
                let path = dir.path().to_path_buf();
                (Some(dir), path)
            }
        };
        // RocketMQ judges a disk by its used *ratio*: past 90% the store is
        // not writable and the broker does not start ("message_store_writable"
        // missing), however many gigabytes are free. Say so plainly.
        if let Some(used) = disk_used_ratio(&store_path) {
            if used > DISK_FULL_RATIO {
                return Err(fail(format!(
                    "the disk holding {} is {:.1}% used; RocketMQ's store refuses writes above {:.0}% \
                     (free space there, or give EmbeddedConfig::store_dir on another disk)",
                    store_path.display(),
                    used * 100.0,
                    DISK_FULL_RATIO * 100.0
                )));
            }
        }
        let runtime_config = RuntimeConfig {
            worker_threads: config.threads.max(1),
            thread_name: "rmq-embedded".to_string(),
            ..RuntimeConfig::for_parallelism("rmq-embedded", config.threads.max(1))
        };
        let owner = RuntimeOwner::plan(runtime_config)
            .map_err(|e| fail(format!("runtime plan: {e}")))?
            .build()
            .map_err(|e| fail(format!("runtime: {e}")))?;

        let mut ports = PortReservation::default();
        let (namesrv_port, namesrv_addr) = match &config.servers {
            Servers::Broker { namesrv_addr } => (None, namesrv_addr.clone()),
            Servers::Both | Servers::NameServer => {
                let port = match config.namesrv_port {
                    Some(p) => p,
                    None => ports.any()?,
                };
                (Some(port), format!("127.0.0.1:{port}"))
            }
        };
        let broker_ports = match config.servers {
            Servers::NameServer => None,
            Servers::Both | Servers::Broker { .. } => {
                let broker_port = match config.broker_port {
                    Some(p) => p,
                    None => ports.broker_pair()?,
                };
                Some((broker_port, ports.any()?))
            }
        };
        drop(ports);

        let mut mq = EmbeddedRocketMQ {
            owner: Some(owner),
            broker: None,
            namesrv_stop: None,
            namesrv_task: None,
            namesrv_addr: namesrv_addr.clone(),
            broker_addr: broker_ports.map(|(port, _)| format!("127.0.0.1:{port}")),
            _store: store,
        };
        if let Some(namesrv_port) = namesrv_port {
            mq.start_namesrv(&store_path, namesrv_port)?;
        }
        if let Some((broker_port, ha_port)) = broker_ports {
            mq.start_broker(config, &store_path, broker_port, ha_port)?;
        }
        tracing::info!(namesrv = %mq.namesrv_addr, broker = ?mq.broker_addr, "embedded RocketMQ started");
        Ok(mq)
    }

    /// Starts the name server on `namesrv_port`, its files under `store_path`.
    // The block spawns the server on the embedded runtime (it needs that
    // runtime's context) and hands back the task's handle, not to await it
    // there: the stop awaits it.
    #[allow(clippy::async_yields_async)]
    fn start_namesrv(&mut self, store_path: &std::path::Path, namesrv_port: u16) -> Result<()> {
        let namesrv_addr = self.namesrv_addr.clone();
        let owner = self.owner.as_ref().ok_or_else(|| fail("runtime vanished"))?;
        let ns_dir = store_path.join("namesrv");
        let (stop_tx, stop_rx) = oneshot::channel::<()>();
        let task = owner.block_on(async {
            let namesrv_config = NamesrvConfig {
                rocketmq_home: ns_dir.display().to_string(),
                kv_config_path: ns_dir.join("kvConfig.json").display().to_string(),
                config_store_path: ns_dir.join("namesrv.properties").display().to_string(),
                ..NamesrvConfig::default()
            };
            let server_config = ServerConfig {
                listen_port: u32::from(namesrv_port),
                bind_address: "127.0.0.1".to_string(),
                ..ServerConfig::default()
            };
            let context = RuntimeContext::from_current(format!("embedded-namesrv-{namesrv_port}"));
            let bootstrap = NamesrvBuilder::new(context.service_context("namesrv"), TelemetryHandle::noop())
                .set_name_server_config(namesrv_config)
                .set_server_config(server_config)
                .build();
            tokio::spawn(async move {
                bootstrap
                    .boot_with_shutdown(async move {
                        let _ = stop_rx.await;
                    })
                    .await
            })
        });
        self.namesrv_stop = Some(stop_tx);
        self.namesrv_task = Some(task);
        wait_for_port(namesrv_port, START_TIMEOUT).map_err(|e| fail(format!("name server on {namesrv_addr}: {e}")))
    }

    /// Starts the broker on `broker_port` (and `broker_port - 2`, HA on
    /// `ha_port`), registered with `self.namesrv_addr`, its store under
    /// `store_path`.
    fn start_broker(
        &mut self,
        config: &EmbeddedConfig,
        store_path: &std::path::Path,
        broker_port: u16,
        ha_port: u16,
    ) -> Result<()> {
        let namesrv_addr = self.namesrv_addr.clone();
        let broker_root = store_path.join("broker");
        let owner = self.owner.as_ref().ok_or_else(|| fail("runtime vanished"))?;
        let started = owner.block_on(async {
            let root: CheetahString = CheetahString::from_string(broker_root.display().to_string());
            let mut broker_config = BrokerConfig {
                broker_ip1: CheetahString::from_static_str("127.0.0.1"),
                listen_port: u32::from(broker_port),
                store_path_root_dir: root.clone(),
                namesrv_addr: Some(CheetahString::from_string(namesrv_addr.clone())),
                ..BrokerConfig::default()
            };
            broker_config.broker_identity.broker_name =
                CheetahString::from_string(format!("embedded-broker-{broker_port}"));
            // Keep the broker's ACL files with its store, not in $HOME/config.
            broker_config.auth_config_path =
                CheetahString::from_string(broker_root.join("config").join("auth").display().to_string());
            broker_config.channel_expired_timeout = u64::try_from(config.client_expiry.as_millis()).unwrap_or(u64::MAX);
            broker_config.broker_server_config.bind_address = "127.0.0.1".to_owned();
            broker_config.broker_server_config.listen_port = u32::from(broker_port);
            if let Some(user) = &config.acl {
                broker_config.authentication_enabled = true;
                broker_config.authorization_enabled = true;
                // Seeded as a super user (every right) when the broker starts.
                broker_config.init_authentication_user = CheetahString::from_string(
                    serde_json::json!({"username": user.access_key, "password": user.secret_key}).to_string(),
                );
                // The broker's own clients sign with the same user.
                broker_config.inner_client_authentication_credentials = CheetahString::from_string(
                    serde_json::json!({"accessKey": user.access_key, "secretKey": user.secret_key}).to_string(),
                );
            }
            let store_config = MessageStoreConfig {
                store_path_root_dir: root,
                mapped_file_size_commit_log: config.commit_log_file_size,
                // RocketMQ's fixed default (10912) would make a second broker
                // in the same process or machine fail to start.
                ha_listen_port: usize::from(ha_port),
                // Every listener on loopback: the HA service binds 0.0.0.0
                // unless told (it cannot be turned off in rocketmq-store 1.0.0).
                ha_listen_address: std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST),
                // One pull may return up to a full client batch (RocketMQ's
                // defaults are 32 messages / 256 KiB from memory, 8 / 64 KiB
                // from disk, which caps a stream job's batches).
                max_transfer_count_on_message_in_memory: config.max_pull_messages,
                max_transfer_bytes_on_message_in_memory: config.max_pull_messages * 1024,
                max_transfer_count_on_message_in_disk: config.max_pull_messages,
                max_transfer_bytes_on_message_in_disk: config.max_pull_messages * 1024,
                // RocketMQ's default deletes commit-log files at once, expired
                // or not, read or not, as soon as the *disk* (shared with
                // everything else on the machine) is 85% used. On a
                // developer's or an edge machine that silently loses a job's
                // input, shuffle and state messages mid-run. Here only files
                // past their retention (72 h) are deleted; past 90% the broker
                // refuses writes, which is a visible error.
                clean_file_forcibly_enable: false,
                ..MessageStoreConfig::default()
            };
            let validated = ValidatedBrokerConfig::try_from_parts(broker_config, store_config)
                .map_err(|e| fail(format!("broker configuration: {e}")))?;
            let context = RuntimeContext::from_current(format!("embedded-broker-{broker_port}"));
            let initialized =
                rocketmq_broker::Builder::new(context.service_context("broker"), TelemetryRuntimeGuard::noop())
                    .with_validated_config(validated)
                    .build()
                    .initialize()
                    .await
                    .map_err(|e| fail(format!("broker initialisation: {}", describe_startup_error(&e))))?;
            tokio::time::timeout(START_TIMEOUT, initialized.start())
                .await
                .map_err(|_| fail(format!("broker did not start within {START_TIMEOUT:?}")))?
                .map_err(|e| fail(format!("broker start: {}", describe_startup_error(&e))))
        })?;
        self.broker = Some(started);
        Ok(())
    }

    /// The name-server address (`127.0.0.1:port`) clients connect to.
    pub fn namesrv_addr(&self) -> &str {
        &self.namesrv_addr
    }

    /// The broker's address (`127.0.0.1:port`); `None` for a name server
    /// alone ([`Servers::NameServer`]).
    pub fn broker_addr(&self) -> Option<&str> {
        self.broker_addr.as_deref()
    }

    /// Stops the broker, then the name server, then their runtime, and
    /// removes a temporary store. Dropping the value does the same.
    pub fn stop(mut self) {
        self.stop_in_place();
    }

    fn stop_in_place(&mut self) {
        let Some(owner) = self.owner.take() else {
            return;
        };
        let broker = self.broker.take();
        let namesrv_stop = self.namesrv_stop.take();
        let namesrv_task = self.namesrv_task.take();
        let addr = self.namesrv_addr.clone();
        // `block_on` panics on a thread that already runs a tokio runtime, and
        // `Drop` may run on one: do the shutdown on a thread of its own.
        let stopper = std::thread::Builder::new()
            .name("rmq-embedded-stop".into())
            .spawn(move || {
                owner.block_on(async move {
                    if let Some(broker) = broker {
                        if tokio::time::timeout(STOP_TIMEOUT, broker.shutdown()).await.is_err() {
                            tracing::warn!("embedded broker did not stop within {STOP_TIMEOUT:?}");
                        }
                    }
                    if let Some(tx) = namesrv_stop {
                        let _ = tx.send(());
                    }
                    if let Some(task) = namesrv_task {
                        match tokio::time::timeout(STOP_TIMEOUT, task).await {
                            Ok(Ok(Ok(()))) => {}
                            Ok(Ok(Err(e))) => tracing::warn!(error = %e, "embedded name server stopped with an error"),
                            Ok(Err(e)) => tracing::warn!(error = %e, "embedded name server task failed"),
                            Err(_) => tracing::warn!("embedded name server did not stop within {STOP_TIMEOUT:?}"),
                        }
                    }
                });
                if let Err(e) = owner.shutdown_runtime_blocking_with_timeout(STOP_TIMEOUT) {
                    tracing::warn!(error = %e, "embedded RocketMQ runtime did not shut down cleanly");
                }
            });
        match stopper {
            Ok(handle) => {
                let _ = handle.join();
            }
            Err(e) => tracing::warn!(error = %e, namesrv = %addr, "cannot spawn the embedded broker's stop thread"),
        }
    }
}

impl Drop for EmbeddedRocketMQ {
    fn drop(&mut self) {
        self.stop_in_place();
    }
}

fn fail(message: impl Into<String>) -> Error {
    Error::permanent(Operation::EmbeddedBroker, message)
}

/// RocketMQ's store stops taking writes when its disk is more used than this
/// (`diskSpaceWarningLevelRatio`, which it caps at 90%).
const DISK_FULL_RATIO: f64 = 0.90;
/// Above this used ratio RocketMQ deletes commit-log files early; a
/// temporary store goes elsewhere if it can.
const DISK_BUSY_RATIO: f64 = 0.85;

/// The used share of the file system holding `path` as RocketMQ's store
/// computes it — 1 − available ÷ total — or `None` if it cannot be read.
///
/// "Available" is what an unprivileged writer may still use, so on a file
/// system that reserves blocks this share is well above `df`'s "Use%"
/// (used ÷ (used + available)): a disk `df` shows 43% used can be 79% used
/// here, and the store refuses writes past 90% of *this*.
pub fn disk_used_ratio(path: &std::path::Path) -> Option<f64> {
    disk_space(path).map(used_share)
}

/// Bytes that can still be written to the file system holding `path`
/// before RocketMQ's store there refuses writes (its used share, as
/// [`disk_used_ratio`] measures it, past 90%); 0 if it already does, `None`
/// if the file system cannot be read.
pub fn disk_room_before_full(path: &std::path::Path) -> Option<u64> {
    disk_space(path).map(room_before_full)
}

/// Bytes a file system of (total, available) bytes takes before its used
/// share passes [`DISK_FULL_RATIO`].
fn room_before_full((total, available): (f64, f64)) -> u64 {
    (available - (1.0 - DISK_FULL_RATIO) * total).max(0.0) as u64
}

/// The used share of a file system of (total, available) bytes.
fn used_share((total, available): (f64, f64)) -> f64 {
    1.0 - available / total
}

/// Total and available bytes of the file system holding `path`.
fn disk_space(path: &std::path::Path) -> Option<(f64, f64)> {
    use std::os::unix::ffi::OsStrExt;
    let c_path = std::ffi::CString::new(path.as_os_str().as_bytes()).ok()?;
    let mut stat = std::mem::MaybeUninit::<libc::statvfs>::uninit();
    // SAFETY: `c_path` is a valid NUL-terminated string for the duration of
    // the call and `stat` points to writable memory of the right type;
    // statvfs initialises it when it returns 0, and only then is it read.
    let stat = unsafe {
        if libc::statvfs(c_path.as_ptr(), stat.as_mut_ptr()) != 0 {
            return None;
        }
        stat.assume_init()
    };
    let total = stat.f_blocks as f64 * stat.f_frsize as f64;
    let available = stat.f_bavail as f64 * stat.f_frsize as f64;
    (total > 0.0).then_some((total, available))
}

/// Where a temporary store (deleted at stop, so nothing is lost by keeping
/// it in memory) is created: the temp dir, unless its disk is so used that
/// RocketMQ would delete or refuse data there and `/dev/shm` (tmpfs) is
/// less used and has room for `room` bytes (a container's 64 MiB default
/// tmpfs does not).
fn temporary_store_parent(room: u64) -> std::path::PathBuf {
    let temp = std::env::temp_dir();
    let shm = std::path::PathBuf::from("/dev/shm");
    match (disk_space(&temp), disk_space(&shm)) {
        (Some(t), Some(s)) if prefer_tmpfs(t, s, room) => {
            tracing::info!(
                temp = %temp.display(),
                used = format!("{:.1}%", used_share(t) * 100.0),
                "the temp dir's disk is too full for RocketMQ; the temporary broker store goes to /dev/shm"
            );
            shm
        }
        _ => temp,
    }
}

/// Whether a temporary store belongs on tmpfs, given (total, available)
/// bytes of the temp dir's disk and of tmpfs, and the room it needs.
fn prefer_tmpfs(temp: (f64, f64), tmpfs: (f64, f64), room: u64) -> bool {
    used_share(temp) > DISK_BUSY_RATIO && used_share(tmpfs) < DISK_BUSY_RATIO && tmpfs.1 >= room as f64
}

/// Everything a [`BrokerStartupError`] tells: its `Display` is only the
/// catalogue's public message ("Service lifecycle operation failed"); the
/// phase, the component, a rolled-back cause and the source chain say what
/// actually failed.
fn describe_startup_error(error: &BrokerStartupError) -> String {
    let mut out = format!("{error} (phase {:?}", error.phase());
    if let Some(component) = error.component() {
        out.push_str(&format!(", component {component}"));
    }
    if !error.missing_requirements().is_empty() {
        out.push_str(&format!(", missing {:?}", error.missing_requirements()));
    }
    if !error.unhealthy_components().is_empty() {
        out.push_str(&format!(", left unhealthy {:?}", error.unhealthy_components()));
    }
    out.push(')');
    if let Some(cause) = error.rollback_cause() {
        out.push_str(&format!("; rolled back after: {}", describe_startup_error(cause)));
        return out;
    }
    let mut source = std::error::Error::source(error);
    while let Some(s) = source {
        out.push_str(&format!("; caused by: {s}"));
        source = s.source();
    }
    out
}

fn init_remoting_defaults() {
    static INIT: Once = Once::new();
    INIT.call_once(|| {
        let version = rocketmq_model::version::CURRENT_VERSION as i32;
        if let Err(e) = rocketmq_protocol::protocol::remoting_command_facade::initialize_remoting_defaults(version) {
            // Already initialised by the application with its own value.
            tracing::debug!(error = %e, "remoting defaults were already initialised");
        }
    });
}

/// Free loopback ports, chosen while the earlier choices are still held so
/// that no two coincide. The ports are released when the value is dropped,
/// just before the servers bind them.
#[derive(Default)]
struct PortReservation(Vec<TcpListener>);

impl PortReservation {
    fn bind(&mut self, port: u16) -> Option<u16> {
        let listener = TcpListener::bind(("127.0.0.1", port)).ok()?;
        let port = listener.local_addr().ok()?.port();
        self.0.push(listener);
        Some(port)
    }

    /// Any free port.
    fn any(&mut self) -> Result<u16> {
        self.bind(0).ok_or_else(|| fail("no free loopback port"))
    }

    /// A free port `p` such that `p - 2` is free too: the broker listens on both.
    fn broker_pair(&mut self) -> Result<u16> {
        for _ in 0..100 {
            let Some(port) = self.bind(0) else { continue };
            if let Some(fast) = port.checked_sub(2) {
                if self.bind(fast).is_some() {
                    return Ok(port);
                }
            }
        }
        Err(fail("no free pair of broker ports found"))
    }
}

fn wait_for_port(port: u16, timeout: Duration) -> std::io::Result<()> {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let deadline = Instant::now() + timeout;
    loop {
        match TcpStream::connect_timeout(&addr, Duration::from_millis(200)) {
            // A connect to a port nobody listens on can, rarely, connect the
            // socket to itself (TCP simultaneous open, when the kernel picks
            // the target port as the source port). That is not the server.
            Ok(s) if s.local_addr().ok() == Some(addr) => std::thread::sleep(Duration::from_millis(20)),
            Ok(_) => return Ok(()),
            Err(e) if Instant::now() > deadline => return Err(e),
            Err(_) => std::thread::sleep(Duration::from_millis(20)),
        }
    }
}

/// The `rocketmq-streams-broker` command's arguments.
const STANDALONE_USAGE: &str = "usage: rocketmq-streams-broker [--namesrv-port P] [--broker-port P] [--store DIR] \
     [--namesrv-only | --namesrv-addr HOST:PORT]
  (default)           a name server and a broker
  --namesrv-only      a name server alone
  --namesrv-addr A    a broker alone, registered with the name server at A
prints ROCKETMQ_BROKER_ADDR=<addr> (with a broker), then ROCKETMQ_NAMESRV_ADDR=<addr> once ready";

/// The `rocketmq-streams-broker` command: parses `args` (without the
/// program name), runs the broker until Ctrl-C or SIGTERM, and returns the
/// process's exit code. See the binary's docs for the arguments.
pub fn standalone_main(args: impl IntoIterator<Item = String>) -> std::process::ExitCode {
    use std::process::ExitCode;
    crate::init_logging();
    let mut config = EmbeddedConfig::default();
    let mut args = args.into_iter();
    while let Some(arg) = args.next() {
        let mut value = |name: &str| args.next().ok_or_else(|| format!("{name} needs a value"));
        let parsed = match arg.as_str() {
            "--namesrv-port" => value("--namesrv-port")
                .and_then(|v| v.parse().map_err(|e| format!("--namesrv-port: {e}")))
                .map(|p| config.namesrv_port = Some(p)),
            "--broker-port" => value("--broker-port")
                .and_then(|v| v.parse().map_err(|e| format!("--broker-port: {e}")))
                .map(|p| config.broker_port = Some(p)),
            "--store" => value("--store").map(|v| config.store_dir = Some(v.into())),
            "--namesrv-only" | "--namesrv-addr" if config.servers != Servers::Both => {
                Err("--namesrv-only and --namesrv-addr exclude each other".to_string())
            }
            "--namesrv-only" => {
                config.servers = Servers::NameServer;
                Ok(())
            }
            "--namesrv-addr" => {
                value("--namesrv-addr").map(|namesrv_addr| config.servers = Servers::Broker { namesrv_addr })
            }
            "-h" | "--help" => {
                println!("{STANDALONE_USAGE}");
                return ExitCode::SUCCESS;
            }
            other => Err(format!("unknown argument {other:?}")),
        };
        if let Err(e) = parsed {
            eprintln!("rocketmq-streams-broker: {e}");
            return ExitCode::from(2);
        }
    }
    let unused = match config.servers {
        Servers::NameServer if config.broker_port.is_some() => Some("--broker-port with --namesrv-only"),
        Servers::Broker { .. } if config.namesrv_port.is_some() => Some("--namesrv-port with --namesrv-addr"),
        _ => None,
    };
    if let Some(unused) = unused {
        eprintln!("rocketmq-streams-broker: {unused}: that server does not run here");
        return ExitCode::from(2);
    }
    let mq = match EmbeddedRocketMQ::start_with(config) {
        Ok(mq) => mq,
        Err(e) => {
            eprintln!("rocketmq-streams-broker: {e}");
            return ExitCode::FAILURE;
        }
    };
    if let Some(broker) = mq.broker_addr() {
        println!("ROCKETMQ_BROKER_ADDR={broker}");
    }
    // Last: whoever waits for the process reads up to this line.
    println!("ROCKETMQ_NAMESRV_ADDR={}", mq.namesrv_addr());
    match crate::Interrupt::install() {
        Ok(interrupt) => interrupt.wait(),
        Err(e) => {
            eprintln!("rocketmq-streams-broker: cannot listen for Ctrl-C: {e}");
            return ExitCode::FAILURE;
        }
    }
    eprintln!("rocketmq-streams-broker: stopping");
    mq.stop();
    ExitCode::SUCCESS
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_used_ratio_of_a_real_disk_is_a_share() {
        let used = disk_used_ratio(&std::env::temp_dir()).expect("statvfs of the temp dir");
        assert!((0.0..=1.0).contains(&used), "{used}");
        assert_eq!(disk_used_ratio(std::path::Path::new("/no/such/dir")), None);
    }

    #[test]
    fn the_room_before_the_store_refuses_writes_ends_at_ninety_percent() {
        const GIB: f64 = 1024.0 * 1024.0 * 1024.0;
        // This VM's disk: `df` says 43% used, the store 79%.
        let reserving = (252.0 * GIB, 52.7 * GIB);
        let room = room_before_full(reserving) as f64;
        assert!((room - 27.5 * GIB).abs() < 0.01 * GIB, "{}", room / GIB);
        assert!((used_share((reserving.0, reserving.1 - room)) - 0.90).abs() < 1e-9);
        // Past 90% already: no room, not a negative one.
        assert_eq!(room_before_full((100.0 * GIB, 5.0 * GIB)), 0);
        assert!(disk_room_before_full(&std::env::temp_dir()).is_some());
        assert_eq!(disk_room_before_full(std::path::Path::new("/no/such/dir")), None);
    }

    #[test]
    fn a_temporary_store_moves_to_tmpfs_only_when_that_helps_and_fits() {
        const GIB: f64 = 1024.0 * 1024.0 * 1024.0;
        let room = 512 * 1024 * 1024;
        let busy_disk = (252.0 * GIB, 30.0 * GIB); // 88% used, 30 GiB free
        let calm_disk = (252.0 * GIB, 100.0 * GIB);
        let big_tmpfs = (12.0 * GIB, 12.0 * GIB);
        let container_tmpfs = (64.0 * 1024.0 * 1024.0, 64.0 * 1024.0 * 1024.0);
        assert!(prefer_tmpfs(busy_disk, big_tmpfs, room));
        assert!(!prefer_tmpfs(calm_disk, big_tmpfs, room));
        assert!(
            !prefer_tmpfs(busy_disk, container_tmpfs, room),
            "64 MiB of tmpfs is no room"
        );
        assert!(
            !prefer_tmpfs(busy_disk, (12.0 * GIB, 1.0 * GIB), room),
            "tmpfs busier than 85%"
        );
    }
}
