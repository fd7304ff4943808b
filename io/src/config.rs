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
    /// How often consumers send the broker a heartbeat (at least 10 s, the
    /// client's minimum). The broker gives a silent consumer's queues away
    /// after its client expiry (120 s by default), counted from the last
    /// heartbeat. Default: 30 s.
    pub heartbeat_interval: Duration,
}

impl ClientConfig {
    /// A configuration for the name server at `namesrv_addr`.
    pub fn new(namesrv_addr: impl Into<String>) -> Self {
        Self {
            namesrv_addr: namesrv_addr.into(),
            request_timeout: Duration::from_secs(5),
            heartbeat_interval: Duration::from_secs(30),
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

    /// The RocketMQ client's own settings for a consumer.
    pub(crate) fn client_options(&self) -> rocketmq_client_rust::ClientOptions {
        let mut config = rocketmq_client_rust::ClientConfig::default();
        let heartbeat = u32::try_from(self.heartbeat_interval.as_millis()).unwrap_or(u32::MAX);
        config.set_heartbeat_broker_interval(heartbeat.clamp(10_000, 600_000));
        rocketmq_client_rust::ClientOptions::from(config)
    }

    pub(crate) fn timeout_millis(&self) -> u64 {
        u64::try_from(self.request_timeout.as_millis()).unwrap_or(u64::MAX)
    }
}
