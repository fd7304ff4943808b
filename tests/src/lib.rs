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

/// A broker to test against, and an I/O runtime to talk to it.
pub struct TestCluster {
    /// Connection settings for the cluster.
    pub client: ClientConfig,
    /// The I/O runtime shared by the test's clients.
    pub io: Arc<IoRuntime>,
    // Dropped last: clients shut down before their broker does.
    _embedded: Option<EmbeddedRocketMQ>,
}

impl TestCluster {
    /// Starts an embedded broker, unless `ROCKETMQ_NAMESRV_ADDR` names one.
    ///
    /// # Panics
    ///
    /// Panics if the broker or the I/O runtime cannot start: the test cannot run.
    pub fn start() -> Self {
        rocketmq_streams_io::init_logging();
        let (embedded, client) = match ClientConfig::from_env() {
            Some(client) => (None, client),
            None => {
                let mq = EmbeddedRocketMQ::start().expect("embedded RocketMQ should start");
                let client = ClientConfig::new(mq.namesrv_addr());
                (Some(mq), client)
            }
        };
        let io = IoRuntime::new(1).expect("I/O runtime should start");
        TestCluster {
            client,
            io,
            _embedded: embedded,
        }
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
