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
    /// RocketMQ ACL credentials, signed into every request of every client
    /// the runtime starts (consumers, producers, admin, state readers).
    /// Default: none (a broker with ACL on refuses such a client).
    pub credentials: Option<Credentials>,
}

/// An ACL access key and its secret (RocketMQ 5's user name and password;
/// requests are signed with HMAC-SHA1, the broker's default). `Debug` does
/// not print the secret.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    /// The access key (the user's name).
    pub access_key: String,
    /// The secret key.
    pub secret_key: String,
}

impl Credentials {
    /// Credentials of `access_key` with `secret_key`.
    pub fn new(access_key: impl Into<String>, secret_key: impl Into<String>) -> Self {
        Self {
            access_key: access_key.into(),
            secret_key: secret_key.into(),
        }
    }

    /// The hook that signs a client's requests.
    pub(crate) fn rpc_hook(&self) -> std::sync::Arc<rocketmq_client_rust::AclClientRPCHook> {
        std::sync::Arc::new(rocketmq_client_rust::AclClientRPCHook::new(
            rocketmq_client_rust::SessionCredentials::with_keys(self.access_key.clone(), self.secret_key.clone()),
        ))
    }
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("access_key", &self.access_key)
            .field("secret_key", &"<redacted>")
            .finish()
    }
}

impl ClientConfig {
    /// A configuration for the name server at `namesrv_addr`.
    pub fn new(namesrv_addr: impl Into<String>) -> Self {
        Self {
            namesrv_addr: namesrv_addr.into(),
            request_timeout: Duration::from_secs(5),
            heartbeat_interval: Duration::from_secs(30),
            credentials: None,
        }
    }

    /// The same configuration, signing requests with `credentials`.
    #[must_use]
    pub fn with_credentials(mut self, credentials: Credentials) -> Self {
        self.credentials = Some(credentials);
        self
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
