//! [`RuntimeConfig`] from the environment: the settings an operator changes
//! without rebuilding the job.
//!
//! | variable | setting | format | default |
//! | --- | --- | --- | --- |
//! | `ROCKETMQ_NAMESRV_ADDR` | [`ClientConfig::namesrv_addr`] | `host:port[;host:port…]` | required by `from_env` |
//! | `ROCKETMQ_ACCESS_KEY`, `ROCKETMQ_SECRET_KEY` | [`ClientConfig::credentials`] (ACL) | text; both or neither | none |
//! | `ROCKETMQ_STREAMS_SHARDS` | [`RuntimeConfig::shards`] | count ≥ 1 | the cores available |
//! | `ROCKETMQ_STREAMS_PIN_SHARDS` | [`RuntimeConfig::pin_shards`] | `true`/`false` | `true` |
//! | `ROCKETMQ_STREAMS_COMMIT_INTERVAL_MS` | [`RuntimeConfig::commit_interval`] | milliseconds ≥ 1 | 1000 |
//! | `ROCKETMQ_STREAMS_STATE_DIR` | [`RuntimeConfig::state_dir`] | path | `<temp>/rocketmq-streams/<job id>` |
//! | `ROCKETMQ_STREAMS_CONSUME_FROM` | [`RuntimeConfig::consume_from`] | `first`/`last` | `first` |
//! | `ROCKETMQ_STREAMS_ERROR_POLICY` | [`RuntimeConfig::error_policy`] | `skip`/`dead-letter`/`fail` | `skip` |
//! | `ROCKETMQ_STREAMS_POLL_BATCH` | [`RuntimeConfig::poll_batch`] | count ≥ 1 | 1024 |
//! | `ROCKETMQ_STREAMS_SEND_BATCH` | [`RuntimeConfig::send_batch`] | count ≥ 1 | 512 |
//! | `ROCKETMQ_STREAMS_MAX_BATCHES_IN_FLIGHT` | [`RuntimeConfig::max_batches_in_flight`] | count ≥ 1 | 8 |
//! | `ROCKETMQ_STREAMS_CONSUMER_BUFFER` | [`RuntimeConfig::consumer_buffer`] | count ≥ 1000 | 10000 |
//! | `ROCKETMQ_STREAMS_CACHE_CAPACITY` | [`RuntimeConfig::cache_capacity`] | count ≥ 1 | 100000 |
//! | `ROCKETMQ_STREAMS_SHUFFLE_QUEUES` | [`RuntimeConfig::shuffle_queues`] | count ≥ 1 | 8 |
//! | `ROCKETMQ_STREAMS_OUTAGE_DEADLINE_MS` | [`RuntimeConfig::outage_deadline`] | milliseconds | 60000 |
//! | `ROCKETMQ_STREAMS_METRICS_ADDR` | [`RuntimeConfig::metrics_addr`] (Prometheus) | `host:port` | off |
//!
//! A variable that is set but blank counts as unset; one that does not
//! parse is an error naming it (never silently the default).

use std::path::PathBuf;
use std::time::Duration;

use rocketmq_streams_io::{ClientConfig, ConsumeFrom, Credentials, NAMESRV_ENV};

use super::RuntimeConfig;
use crate::error::{Result, StreamsError};
use crate::policy::ErrorPolicy;

/// The access key of [`ClientConfig::credentials`].
pub const ACCESS_KEY_ENV: &str = "ROCKETMQ_ACCESS_KEY";
/// The secret key of [`ClientConfig::credentials`].
pub const SECRET_KEY_ENV: &str = "ROCKETMQ_SECRET_KEY";

impl RuntimeConfig {
    /// The configuration the environment gives (the variables are listed
    /// in the README's "Configuration" table): the cluster from
    /// `ROCKETMQ_NAMESRV_ADDR`, the rest from the variables set, the
    /// defaults of [`RuntimeConfig::new`] otherwise.
    ///
    /// # Errors
    ///
    /// [`StreamsError::Config`] when `ROCKETMQ_NAMESRV_ADDR` is not set, or
    /// a variable does not parse (the error names it).
    pub fn from_env() -> Result<Self> {
        Self::from_vars(&|name| std::env::var(name).ok())
    }

    /// This configuration with the settings the environment gives laid
    /// over it (the cluster too, if `ROCKETMQ_NAMESRV_ADDR` is set): for a
    /// job on an embedded broker that an operator still tunes.
    ///
    /// # Errors
    ///
    /// [`StreamsError::Config`] when a variable does not parse.
    pub fn with_env(self) -> Result<Self> {
        self.with_vars(&|name| std::env::var(name).ok())
    }

    pub(crate) fn from_vars(var: &dyn Fn(&str) -> Option<String>) -> Result<Self> {
        let Some(namesrv) = value(var, NAMESRV_ENV) else {
            return Err(StreamsError::Config(format!(
                "{NAMESRV_ENV} is not set: name the RocketMQ name server (host:port)"
            )));
        };
        Self::new(ClientConfig::new(namesrv)).with_vars(var)
    }

    pub(crate) fn with_vars(mut self, var: &dyn Fn(&str) -> Option<String>) -> Result<Self> {
        if let Some(namesrv) = value(var, NAMESRV_ENV) {
            self.client.namesrv_addr = namesrv;
        }
        match (value(var, ACCESS_KEY_ENV), value(var, SECRET_KEY_ENV)) {
            (Some(access), Some(secret)) => self.client.credentials = Some(Credentials::new(access, secret)),
            (None, None) => {}
            _ => {
                return Err(StreamsError::Config(format!(
                    "set both {ACCESS_KEY_ENV} and {SECRET_KEY_ENV}, or neither"
                )))
            }
        }
        if let Some(n) = parsed(var, "ROCKETMQ_STREAMS_SHARDS", count)? {
            self.shards = n;
        }
        if let Some(b) = parsed(var, "ROCKETMQ_STREAMS_PIN_SHARDS", boolean)? {
            self.pin_shards = b;
        }
        if let Some(ms) = parsed(var, "ROCKETMQ_STREAMS_COMMIT_INTERVAL_MS", count)? {
            self.commit_interval = Duration::from_millis(ms as u64);
        }
        if let Some(dir) = value(var, "ROCKETMQ_STREAMS_STATE_DIR") {
            self.state_dir = Some(PathBuf::from(dir));
        }
        if let Some(from) = parsed(var, "ROCKETMQ_STREAMS_CONSUME_FROM", |v| match v {
            "first" => Ok(ConsumeFrom::First),
            "last" => Ok(ConsumeFrom::Last),
            _ => Err("first or last".into()),
        })? {
            self.consume_from = from;
        }
        if let Some(policy) = parsed(var, "ROCKETMQ_STREAMS_ERROR_POLICY", |v| match v {
            "skip" => Ok(ErrorPolicy::Skip),
            "dead-letter" => Ok(ErrorPolicy::DeadLetter),
            "fail" => Ok(ErrorPolicy::Fail),
            _ => Err("skip, dead-letter or fail".into()),
        })? {
            self.error_policy = policy;
        }
        if let Some(n) = parsed(var, "ROCKETMQ_STREAMS_POLL_BATCH", count)? {
            self.poll_batch = n;
        }
        if let Some(n) = parsed(var, "ROCKETMQ_STREAMS_SEND_BATCH", count)? {
            self.send_batch = n;
        }
        if let Some(n) = parsed(var, "ROCKETMQ_STREAMS_MAX_BATCHES_IN_FLIGHT", count)? {
            self.max_batches_in_flight = n;
        }
        if let Some(n) = parsed(var, "ROCKETMQ_STREAMS_CONSUMER_BUFFER", count)? {
            self.consumer_buffer =
                u32::try_from(n).map_err(|_| config_error("ROCKETMQ_STREAMS_CONSUMER_BUFFER", "too large"))?;
        }
        if let Some(n) = parsed(var, "ROCKETMQ_STREAMS_CACHE_CAPACITY", count)? {
            self.cache_capacity = n;
        }
        if let Some(n) = parsed(var, "ROCKETMQ_STREAMS_SHUFFLE_QUEUES", count)? {
            self.shuffle_queues =
                u32::try_from(n).map_err(|_| config_error("ROCKETMQ_STREAMS_SHUFFLE_QUEUES", "too large"))?;
        }
        if let Some(ms) = parsed(var, "ROCKETMQ_STREAMS_OUTAGE_DEADLINE_MS", |v| {
            v.parse::<u64>().map_err(|e| e.to_string())
        })? {
            self.outage_deadline = Duration::from_millis(ms);
        }
        if let Some(addr) = parsed(var, "ROCKETMQ_STREAMS_METRICS_ADDR", |v| {
            v.parse::<std::net::SocketAddr>()
                .map_err(|_| "an address host:port (an IP, e.g. 0.0.0.0:9464)".into())
        })? {
            self.metrics_addr = Some(addr);
        }
        Ok(self)
    }
}

/// The variable's value, trimmed; blank counts as unset.
fn value(var: &dyn Fn(&str) -> Option<String>, name: &str) -> Option<String> {
    var(name).map(|v| v.trim().to_string()).filter(|v| !v.is_empty())
}

fn parsed<T>(
    var: &dyn Fn(&str) -> Option<String>,
    name: &str,
    parse: impl Fn(&str) -> std::result::Result<T, String>,
) -> Result<Option<T>> {
    value(var, name)
        .map(|v| parse(&v).map_err(|why| config_error(name, &format!("{v:?} is not {why}"))))
        .transpose()
}

fn config_error(name: &str, why: &str) -> StreamsError {
    StreamsError::Config(format!("{name}: {why}"))
}

fn count(v: &str) -> std::result::Result<usize, String> {
    match v.parse::<usize>() {
        Ok(n) if n >= 1 => Ok(n),
        _ => Err("a whole number of at least 1".into()),
    }
}

fn boolean(v: &str) -> std::result::Result<bool, String> {
    match v {
        "true" | "1" | "yes" | "on" => Ok(true),
        "false" | "0" | "no" | "off" => Ok(false),
        _ => Err("true or false".into()),
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn vars(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: HashMap<String, String> = pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        move |name| map.get(name).cloned()
    }

    #[test]
    fn every_setting_is_read_and_the_rest_keep_their_defaults() {
        let config = RuntimeConfig::from_vars(&vars(&[
            ("ROCKETMQ_NAMESRV_ADDR", " 10.0.0.1:9876;10.0.0.2:9876 "),
            ("ROCKETMQ_ACCESS_KEY", "app"),
            ("ROCKETMQ_SECRET_KEY", "secret"),
            ("ROCKETMQ_STREAMS_SHARDS", "3"),
            ("ROCKETMQ_STREAMS_PIN_SHARDS", "false"),
            ("ROCKETMQ_STREAMS_COMMIT_INTERVAL_MS", "250"),
            ("ROCKETMQ_STREAMS_STATE_DIR", "/var/lib/job"),
            ("ROCKETMQ_STREAMS_CONSUME_FROM", "last"),
            ("ROCKETMQ_STREAMS_ERROR_POLICY", "dead-letter"),
            ("ROCKETMQ_STREAMS_POLL_BATCH", "256"),
            ("ROCKETMQ_STREAMS_SEND_BATCH", "64"),
            ("ROCKETMQ_STREAMS_MAX_BATCHES_IN_FLIGHT", "2"),
            ("ROCKETMQ_STREAMS_CONSUMER_BUFFER", "5000"),
            ("ROCKETMQ_STREAMS_CACHE_CAPACITY", "5000"),
            ("ROCKETMQ_STREAMS_SHUFFLE_QUEUES", "16"),
            ("ROCKETMQ_STREAMS_OUTAGE_DEADLINE_MS", "0"),
            ("ROCKETMQ_STREAMS_METRICS_ADDR", "127.0.0.1:9464"),
        ]))
        .expect("valid");
        assert_eq!(config.client.namesrv_addr, "10.0.0.1:9876;10.0.0.2:9876");
        assert_eq!(config.client.credentials, Some(Credentials::new("app", "secret")));
        assert_eq!(config.shards, 3);
        assert!(!config.pin_shards);
        assert_eq!(config.commit_interval, Duration::from_millis(250));
        assert_eq!(config.state_dir, Some(PathBuf::from("/var/lib/job")));
        assert_eq!(config.consume_from, ConsumeFrom::Last);
        assert_eq!(config.error_policy, ErrorPolicy::DeadLetter);
        assert_eq!(
            (config.poll_batch, config.send_batch, config.cache_capacity),
            (256, 64, 5000)
        );
        assert_eq!((config.max_batches_in_flight, config.consumer_buffer), (2, 5000));
        assert_eq!(config.shuffle_queues, 16);
        assert_eq!(config.outage_deadline, Duration::ZERO);
        assert_eq!(config.metrics_addr, Some("127.0.0.1:9464".parse().expect("addr")));

        let defaults = RuntimeConfig::new(ClientConfig::new("h:1"));
        let plain = RuntimeConfig::from_vars(&vars(&[
            ("ROCKETMQ_NAMESRV_ADDR", "h:1"),
            ("ROCKETMQ_STREAMS_SHARDS", " "),
        ]))
        .expect("valid");
        assert_eq!(plain.shards, defaults.shards, "a blank variable counts as unset");
        assert_eq!(plain.commit_interval, defaults.commit_interval);
        assert_eq!(plain.client.credentials, None);
    }

    #[test]
    fn a_bad_or_missing_setting_is_an_error_naming_it() {
        let missing = RuntimeConfig::from_vars(&vars(&[])).err().expect("no name server");
        assert!(missing.to_string().contains("ROCKETMQ_NAMESRV_ADDR"), "{missing}");
        for (name, bad) in [
            ("ROCKETMQ_STREAMS_SHARDS", "0"),
            ("ROCKETMQ_STREAMS_SHARDS", "two"),
            ("ROCKETMQ_STREAMS_PIN_SHARDS", "maybe"),
            ("ROCKETMQ_STREAMS_CONSUME_FROM", "middle"),
            ("ROCKETMQ_STREAMS_ERROR_POLICY", "ignore"),
            ("ROCKETMQ_STREAMS_COMMIT_INTERVAL_MS", "-5"),
            ("ROCKETMQ_ACCESS_KEY", "only-half"),
        ] {
            let error = RuntimeConfig::from_vars(&vars(&[("ROCKETMQ_NAMESRV_ADDR", "h:1"), (name, bad)]))
                .err()
                .unwrap_or_else(|| panic!("{name}={bad} accepted"));
            assert!(matches!(error, StreamsError::Config(_)), "{error}");
            assert!(
                error.to_string().contains(name.trim_end_matches("_KEY")),
                "{name}: {error}"
            );
        }
        let overlaid = RuntimeConfig::new(ClientConfig::new("embedded:1"))
            .with_vars(&vars(&[("ROCKETMQ_STREAMS_SHARDS", "1")]))
            .expect("valid");
        assert_eq!(
            (overlaid.client.namesrv_addr.as_str(), overlaid.shards),
            ("embedded:1", 1)
        );
    }
}
