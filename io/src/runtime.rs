//! The bridge between shard threads and the RocketMQ client.
//!
//! The RocketMQ client is built on tokio and must run inside a tokio runtime;
//! shards run glommio executors on pinned threads. [`IoRuntime`] owns one small
//! multi-threaded tokio runtime (the *I/O runtime*) on which every client
//! future runs. A shard never polls client futures itself: it hands a whole
//! batch operation to the I/O runtime with [`IoRuntime::spawn`] and awaits the
//! returned [`IoTask`], a thin wrapper over tokio's `JoinHandle`.
//!
//! A `JoinHandle` is an ordinary future that stores the awaiting task's waker,
//! so glommio (or any executor, or a plain thread via [`IoRuntime::block_on`])
//! can await it: when the client future finishes on a tokio worker, the waker
//! schedules the shard's task again. No lock is held on the shard while the
//! batch is in flight, and the cost of the hop (one task spawn plus one
//! cross-thread wake) is paid per *batch*, not per record; `tuning.md` gives
//! its measured cost.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use rocketmq_client_rust::{ClientRuntime, ClientRuntimeConfig, TelemetryHandle};
use rocketmq_runtime::{RuntimeConfig, RuntimeOwner};

use crate::error::{Error, Operation, Result};

/// Default number of tokio worker threads of the I/O runtime.
pub const DEFAULT_IO_THREADS: usize = 1;

/// The name of the I/O runtime's worker threads ([`IoRuntime::new`]).
pub const IO_THREAD_NAME: &str = "rmq-streams-io";

/// The tokio runtime that runs every RocketMQ client future of a process (or
/// of a job), plus the client runtime the RocketMQ crates require.
///
/// Create one per process and share it (`Arc<IoRuntime>`) among sources,
/// sinks and admin handles.
pub struct IoRuntime {
    owner: Option<RuntimeOwner>,
    client_runtime: Arc<ClientRuntime>,
    handle: tokio::runtime::Handle,
}

impl IoRuntime {
    /// Starts an I/O runtime with `threads` tokio worker threads.
    ///
    /// # Errors
    ///
    /// Returns a permanent [`Operation::Runtime`] error if the runtime cannot
    /// be built (for example `threads == 0`).
    pub fn new(threads: usize) -> Result<Arc<Self>> {
        Self::named(IO_THREAD_NAME, threads)
    }

    /// [`IoRuntime::new`] with its worker threads named `name` (Linux shows
    /// the first 15 bytes), so per-thread accounting (`/proc/<pid>/task`,
    /// `top -H`) can tell one runtime's work from another's.
    ///
    /// # Errors
    ///
    /// As [`IoRuntime::new`].
    pub fn named(name: &str, threads: usize) -> Result<Arc<Self>> {
        let config = RuntimeConfig {
            worker_threads: threads,
            thread_name: name.to_string(),
            ..RuntimeConfig::for_parallelism(name, threads.max(1))
        };
        let owner = RuntimeOwner::plan(config)
            .map_err(|e| Error::permanent(Operation::Runtime, format!("invalid I/O runtime configuration: {e}")))?
            .build()
            .map_err(|e| Error::permanent(Operation::Runtime, format!("cannot build the I/O runtime: {e}")))?;
        let handle = owner.block_on(async { tokio::runtime::Handle::current() });
        let client_runtime = ClientRuntime::try_new(
            owner.root_context().component("rocketmq-streams-client"),
            ClientRuntimeConfig::default(),
            TelemetryHandle::noop(),
        )
        .map_err(|e| Error::client(Operation::Runtime, "cannot create the client runtime", e))?;
        Ok(Arc::new(Self {
            owner: Some(owner),
            client_runtime,
            handle,
        }))
    }

    /// The client runtime shared by every producer, consumer and admin handle.
    pub fn client_runtime(&self) -> Arc<ClientRuntime> {
        self.client_runtime.clone()
    }

    /// A handle to the tokio runtime, for code that needs to spawn on it directly.
    pub fn handle(&self) -> &tokio::runtime::Handle {
        &self.handle
    }

    /// Runs `future` on the I/O runtime and returns a future, awaitable from
    /// any executor, that resolves to its output.
    pub fn spawn<F>(&self, future: F) -> IoTask<F::Output>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        IoTask(self.handle.spawn(future))
    }

    /// Runs `future` on the I/O runtime and blocks the calling thread until it
    /// completes. For threads that are not async (examples, tests, `main`).
    ///
    /// # Errors
    ///
    /// Returns an [`Operation::Runtime`] error if the task panicked or the
    /// runtime was shut down while it ran.
    ///
    /// # Panics
    ///
    /// Panics if called from inside a tokio runtime's worker thread (blocking
    /// there would stall the runtime).
    pub fn block_on<F>(&self, future: F) -> Result<F::Output>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        futures::executor::block_on(self.spawn(future))
    }
}

/// How often [`keep_awake`] wakes a glommio executor.
pub const KEEP_AWAKE_PERIOD: Duration = Duration::from_millis(10);

/// Keeps the calling glommio executor from sleeping longer than
/// [`KEEP_AWAKE_PERIOD`], for as long as the executor runs.
///
/// glommio notices a wake-up that comes from another thread (here: the I/O
/// runtime finishing an [`IoTask`]) on its next trip through its reactor; an
/// executor with nothing else to do can sleep through it (seen here as a
/// shard that never resumed; glommio's own foreign-wake benchmark reports
/// ~100 ms delays, DataDog/glommio#434). A periodic timer bounds that stall.
/// Call it once at the start of every glommio executor that awaits
/// `IoTask`s.
///
/// # Panics
///
/// Panics if called outside a glommio executor.
pub fn keep_awake() {
    glommio::spawn_local(async {
        loop {
            glommio::timer::sleep(KEEP_AWAKE_PERIOD).await;
        }
    })
    .detach();
}

impl Drop for IoRuntime {
    fn drop(&mut self) {
        let client_runtime = self.client_runtime.clone();
        let report = futures::executor::block_on(self.handle.spawn(async move { client_runtime.shutdown().await }));
        if let Ok(report) = report {
            if !report.is_healthy() {
                tracing::warn!("RocketMQ client runtime did not shut down cleanly");
            }
        }
        if let Some(owner) = self.owner.take() {
            // We may be dropped on a tokio thread (e.g. inside a test's
            // runtime); tearing the runtime down in the background is the only
            // option that never blocks or panics there.
            if tokio::runtime::Handle::try_current().is_ok() {
                let _ = owner.shutdown_background();
            } else if let Err(e) = owner.shutdown_runtime_blocking_with_timeout(Duration::from_secs(10)) {
                tracing::warn!(error = %e, "I/O runtime did not shut down cleanly");
            }
        }
    }
}

/// A client operation running on the I/O runtime; awaiting it from any
/// executor yields its output once the operation has finished there.
#[must_use = "an IoTask does nothing useful unless awaited"]
pub struct IoTask<T>(tokio::task::JoinHandle<T>);

impl<T> IoTask<T> {
    /// Whether the operation has finished (awaiting it will not wait).
    pub fn is_finished(&self) -> bool {
        self.0.is_finished()
    }

    /// Cancels the operation (at its next await point).
    pub fn abort(&self) {
        self.0.abort();
    }
}

impl<T> Future for IoTask<T> {
    type Output = Result<T>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        Pin::new(&mut self.0).poll(cx).map(|r| {
            r.map_err(|e| {
                if e.is_panic() {
                    Error::permanent(Operation::Runtime, "an I/O task panicked")
                } else {
                    Error::permanent(Operation::Runtime, "the I/O runtime was shut down")
                }
            })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_glommio_executor_awaits_io_tasks() {
        let io = IoRuntime::new(1).expect("runtime");
        let io2 = io.clone();
        let ex = glommio::LocalExecutorBuilder::default().make().expect("executor");
        let sum = ex.run(async move {
            keep_awake();
            let mut sum = 0u64;
            for i in 0..100u64 {
                sum += io2
                    .spawn(async move {
                        tokio::time::sleep(Duration::from_micros(10)).await;
                        i
                    })
                    .await
                    .expect("task");
            }
            sum
        });
        assert_eq!(sum, (0..100).sum::<u64>());
    }

    #[test]
    fn block_on_reports_a_panicking_task() {
        let io = IoRuntime::new(1).expect("runtime");
        let err = io.block_on(async { panic!("boom") }).map(|()| ()).unwrap_err();
        assert_eq!(err.operation(), Operation::Runtime);
        assert!(!err.is_retriable());
    }
}
