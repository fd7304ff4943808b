//! Fault injection: named steps of the protocol at which a test aborts the
//! process, to prove that every crash point recovers exactly.
//!
//! With the `failpoints` feature, [`failpoint`] reads `RMQ_STREAMS_FAILPOINT`
//! once: `name` aborts the process the first time step `name` is reached,
//! `name@n` the n-th time. Without the feature it compiles to nothing and
//! the variable is never read.
//!
//! | step | where |
//! |---|---|
//! | `checkpoint.before-changelog` | a checkpoint, before its changes are sent |
//! | `checkpoint.before-marker` | changes acknowledged, marker not sent |
//! | `checkpoint.before-rocksdb` | marker acknowledged, RocksDB not written |
//! | `checkpoint.before-offset-commit` | RocksDB written, source offset not yet reported for commit |
//! | `restore.replay` | a restore, after applying a replayed message |

/// The steps [`failpoint`] knows.
pub const STEPS: [&str; 5] = [
    "checkpoint.before-changelog",
    "checkpoint.before-marker",
    "checkpoint.before-rocksdb",
    "checkpoint.before-offset-commit",
    "restore.replay",
];

/// Aborts the process if `RMQ_STREAMS_FAILPOINT` names this step and hit.
#[cfg(feature = "failpoints")]
pub fn failpoint(step: &str) {
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::OnceLock;
    static SPEC: OnceLock<Option<(String, u64)>> = OnceLock::new();
    static HITS: AtomicU64 = AtomicU64::new(0);
    let spec = SPEC.get_or_init(|| {
        let raw = std::env::var("RMQ_STREAMS_FAILPOINT").ok()?;
        Some(match raw.split_once('@') {
            Some((name, n)) => (name.to_owned(), n.parse().unwrap_or(1)),
            None => (raw, 1),
        })
    });
    if let Some((name, nth)) = spec {
        if name == step && HITS.fetch_add(1, Ordering::SeqCst) + 1 >= *nth {
            eprintln!("failpoint {step}: aborting the process");
            std::process::abort();
        }
    }
}

/// Aborts the process if `RMQ_STREAMS_FAILPOINT` names this step and hit
/// (a no-op: built without the `failpoints` feature).
#[cfg(not(feature = "failpoints"))]
#[inline(always)]
pub fn failpoint(_step: &str) {}
