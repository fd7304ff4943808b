//! RocketMQ I/O for rocketmq-streams: source, sink, admin, the bridge to
//! shard threads, and an embedded broker.
//!
//! # The model
//!
//! The RocketMQ client (`rocketmq-client-rust`) is asynchronous on tokio.
//! rocketmq-streams runs its operators on glommio executors, one per pinned
//! core. This crate joins the two worlds with a **bridge**: one small tokio
//! runtime, the [`IoRuntime`], runs every client future; a shard hands it a
//! whole batch operation ([`IoRuntime::spawn`]) and awaits the [`IoTask`]
//! that comes back. The hop costs one task spawn and one cross-thread wake-up
//! per *batch*, never per record, and the shard holds no lock while it waits.
//! A glommio executor that awaits `IoTask`s calls [`keep_awake`] once, so
//! that it never sleeps through a wake-up coming from the I/O runtime.
//!
//! ```text
//!   RocketMQ broker                      I/O runtime (tokio)               shard (glommio, pinned)
//!  ┌──────────────┐  pull (batches)   ┌──────────────────────┐  IoTask   ┌──────────────────────┐
//!  │ input queues ├──────────────────►│ Source::poll         ├──────────►│ Vec<QueueBatch>      │
//!  │              │                   │  lite-pull consumer  │           │  operators           │
//!  │              │  send (batches)   │                      │  IoTask   │                      │
//!  │ output queues│◄──────────────────┤ Sink::send           │◄──────────┤ Vec<OutRecord>       │
//!  │              │  ack              │                      ├──────────►│ SendAck              │
//!  │ offsets      │◄──────────────────┤ Source::commit       │◄──────────┤ offsets of acked work│
//!  └──────────────┘                   └──────────────────────┘           └──────────────────────┘
//! ```
//!
//! # Zero copy, and where the client copies
//!
//! A message body reaches user code as the client's own `bytes::Bytes`: the
//! pull response is decoded into reference-counted slices and
//! [`Source::poll`] hands those slices on without copying. On the way out,
//! an [`OutRecord`]'s `Bytes` is moved into the client's message without a
//! copy; the client then copies every body once when it encodes a batch
//! into a single request frame. That is the only copy on the data path.
//!
//! # Offsets and acknowledgements
//!
//! - The source never commits on its own (auto-commit is off). A caller
//!   commits an offset only after every record produced from the records
//!   before it has been acknowledged by the broker ([`Sink::send`] resolves
//!   when they are): **at-least-once**.
//! - A committed offset is the *next* offset to read (last processed + 1).
//! - [`Source::commit`] always commits **all assigned queues together**: the
//!   client drops from its in-memory offset table any queue left out of a
//!   commit. Queues no longer assigned are never committed.
//! - The broker ignores a commit lower than the stored offset; moving an
//!   offset back goes through [`Admin::reset_offset`] while the group's
//!   consumers are stopped.
//! - A new consumer group starts at the **first** offset by default
//!   ([`ConsumeFrom::First`]); the client's own default would be the last.
//! - Sending to an explicit queue fails until the topic exists: create
//!   topics first with [`Admin::create_topic`], which waits until the name
//!   server serves the route with the requested number of queues (topic
//!   auto-creation would give the broker's default queue count instead).
//!
//! # The embedded broker
//!
//! With the default feature `embedded-broker`, [`EmbeddedRocketMQ`] runs a
//! real RocketMQ name server and broker (the `rocketmq-namesrv` and
//! `rocketmq-broker` crates) inside the process, on loopback ports and a
//! temporary store. Connecting to an external cluster instead is one setting:
//! [`ClientConfig::from_env`] reads `ROCKETMQ_NAMESRV_ADDR`.
#![warn(missing_docs)]

mod admin;
mod config;
#[cfg(feature = "embedded-broker")]
mod embedded;
mod error;
mod ids;
pub mod pipe;
mod reader;
mod runtime;
mod signal;
mod sink;
mod source;

pub use admin::{validate_topic_name, Admin, QueueOffsets};
pub use config::{ClientConfig, Credentials, NAMESRV_ENV};
#[cfg(feature = "embedded-broker")]
pub use embedded::{
    disk_room_before_full, disk_used_ratio, standalone_main, EmbeddedConfig, EmbeddedRocketMQ, Servers,
};
pub use error::{Error, Operation, Result, Retry};
pub use ids::{Offset, QueueId};
pub use reader::{Chunk, QueueReader, READ_TIMEOUT};
pub use runtime::{keep_awake, IoRuntime, IoTask, DEFAULT_IO_THREADS, IO_THREAD_NAME, KEEP_AWAKE_PERIOD};
pub use signal::Interrupt;
pub use sink::{is_system_property, OutRecord, SendAck, Sink, MAX_BATCH_BYTES, MAX_BATCH_MESSAGES, MAX_MESSAGE_BYTES};
pub use source::{tag_set, AssignmentChange, ConsumeFrom, QueueBatch, Record, Source, SourceConfig, RECONCILE_AFTER};

/// The log filter [`init_logging`] uses when `RUST_LOG` is not set: warnings
/// of this project, errors only of the RocketMQ crates (whose start-up and
/// shutdown warnings are routine on an embedded broker).
///
/// One dependency message is silenced here, the one place levels of known
/// harmless messages are set: `rocketmq_transport`'s `connect_flight`
/// "Failed to connect endpoint_kind=nameserver" ERROR, printed at start and
/// every 30 s. Its source is the embedded name server's own remoting
/// client (`rocketmq-namesrv` 1.0.0, `bootstrap.rs`), which probes a name
/// server at the machine's primary address (`NetworkUtil::get_local_address`)
/// and the name server's port, while the embedded name server listens on
/// loopback only; no setting of the name server moves that probe, and the
/// client uses it for nothing else. The line names no address; a real
/// connection failure of one of the job's clients still surfaces as the
/// failed request's error.
///
/// And one more, the lite-pull consumer's "Pull error for MessageQueue …:
/// Argument is invalid" ERROR (rocketmq-client-rust 1.0.0,
/// `default_lite_pull_consumer_impl.rs`). A pull in flight when its queue
/// leaves the consumer (a rebalance, or the consumer shutting down) comes
/// back to an assignment that is gone; the pull task logs this and ends,
/// and nothing is lost (the queue's next owner starts from the committed
/// offset). The job's own source pauses its queues and lets pulls return
/// before it shuts down, and so does the bench's baseline; the state
/// reader cannot: rocketmq-client-rust's classic pull consumer starts
/// background pull tasks for the whole topic it reads although it is in
/// manual mode (`sync_assigned_queues_from_rebalance` ignores
/// `classic_pull_manual_mode`), and offers no pause. A pull that really
/// fails shows in the job's own figures and logs (lag, send or restore
/// errors), which name the queue.
pub const DEFAULT_LOG_FILTER: &str = "warn,rocketmq_broker=error,rocketmq_namesrv=error,rocketmq_store=error,\
rocketmq_store_local=error,rocketmq_runtime=error,rocketmq_transport=error,rocketmq_client_rust=error,\
rocketmq_transport::clients::rocketmq_tokio_client::connect_flight=off,\
rocketmq_client_rust::consumer::consumer_impl::default_lite_pull_consumer_impl=off";

/// Installs a `tracing` subscriber that prints to stderr, filtered by
/// `RUST_LOG` (default [`DEFAULT_LOG_FILTER`]). For binaries and examples; a library user
/// installs their own. Does nothing if one is already installed.
pub fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(DEFAULT_LOG_FILTER));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}
