//! Where the RocketMQ cluster is and how to talk to it.

use std::time::Duration;

/// The environment variable that points the library at an external RocketMQ
/// name server (`host:port`, several separated by `;`).
pub const NAMESRV_ENV: &str = "ROCKETMQ_NAMESRV_ADDR";

/// Connection settings shared by sources, sinks and admin handles.
#[derive(Debug, Clone)]
pub struct ClientConfig {
    /// Name-server address list, `host:port[;host:port...]`.
    pub namesrv_addr: String,
    /// Timeout of one send or admin request.
    pub request_timeout: Duration,
}

impl ClientConfig {
    /// A configuration for the name server at `namesrv_addr`.
    pub fn new(namesrv_addr: impl Into<String>) -> Self {
        Self {
            namesrv_addr: namesrv_addr.into(),
            request_timeout: Duration::from_secs(5),
        }
    }

    /// The name server named by `ROCKETMQ_NAMESRV_ADDR`, if that is set and not blank.
    pub fn from_env() -> Option<Self> {
        std::env::var(NAMESRV_ENV)
            .ok()
            .map(|v| v.trim().to_string())
            .filter(|v| !v.is_empty())
            .map(Self::new)
    }

    pub(crate) fn timeout_millis(&self) -> u64 {
        u64::try_from(self.request_timeout.as_millis()).unwrap_or(u64::MAX)
    }
}
