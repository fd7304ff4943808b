//! The one error type of this crate.

use std::fmt;

/// What the I/O layer was doing when it failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Operation {
    /// Building or shutting down the client runtime (the tokio side of the bridge).
    Runtime,
    /// Starting, polling or shutting down the source (lite-pull consumer).
    Source,
    /// Committing consumer offsets.
    Commit,
    /// Starting the producer or sending a batch.
    Send,
    /// An administrative call: topics, routes, offsets.
    Admin,
    /// Starting or stopping the embedded name server and broker.
    EmbeddedBroker,
    /// Reading configuration (environment, arguments).
    Config,
}

impl fmt::Display for Operation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Operation::Runtime => "client runtime",
            Operation::Source => "source",
            Operation::Commit => "offset commit",
            Operation::Send => "send",
            Operation::Admin => "admin",
            Operation::EmbeddedBroker => "embedded broker",
            Operation::Config => "configuration",
        })
    }
}

/// Whether doing the same thing again may succeed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Retry {
    /// A transient condition (a timeout, a broker not yet reachable, a route
    /// not yet propagated): the same call may succeed later.
    Transient,
    /// The request itself is wrong or the component is gone (bad
    /// configuration, an invalid topic, a stopped runtime): retrying as is will
    /// fail again.
    Permanent,
}

/// An error of the RocketMQ I/O layer: what failed, why, and whether retrying helps.
#[derive(Debug, thiserror::Error)]
#[error("{operation} failed ({retry}): {message}")]
pub struct Error {
    operation: Operation,
    retry: Retry,
    message: String,
}

/// RocketMQ's response code for a request its ACL refused (`NO_PERMISSION`).
const NO_PERMISSION: i32 = 16;

/// The broker's response code of a client error and, when the client kept
/// it out of its message (an `MQClientException` source), the code and
/// remark as text.
fn broker_detail(err: &rocketmq_client_rust::ClientError) -> (Option<i32>, Option<String>) {
    use std::error::Error as _;
    if let Some(code) = err.broker_response_code() {
        return (Some(code), None);
    }
    let mut source = err.source();
    while let Some(e) = source {
        if let Some(exception) = e.downcast_ref::<rocketmq_client_rust::MQClientException>() {
            let code = exception.response_code();
            let remark = exception.error_message().unwrap_or_default();
            return ((code >= 0).then_some(code), Some(format!("code {code}: {remark}")));
        }
        source = e.source();
    }
    (None, None)
}

impl fmt::Display for Retry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Retry::Transient => "transient",
            Retry::Permanent => "permanent",
        })
    }
}

impl Error {
    /// An error that may go away when the call is repeated.
    pub fn transient(operation: Operation, message: impl Into<String>) -> Self {
        Self {
            operation,
            retry: Retry::Transient,
            message: message.into(),
        }
    }

    /// An error that repeating the call will not fix.
    pub fn permanent(operation: Operation, message: impl Into<String>) -> Self {
        Self {
            operation,
            retry: Retry::Permanent,
            message: message.into(),
        }
    }

    /// Wraps an error of the RocketMQ client, classifying it by its own
    /// retriability; a broker's ACL refusal (`NO_PERMISSION`) is permanent
    /// and says so.
    pub(crate) fn client(operation: Operation, context: &str, err: rocketmq_client_rust::ClientError) -> Self {
        use rocketmq_error::RecoveryHint;
        // A broker's refusal often arrives as an "illegal argument" whose
        // response code and remark only its source holds: name them.
        let (code, detail) = broker_detail(&err);
        let described = match detail {
            Some(detail) => format!("{err} ({detail})"),
            None => err.to_string(),
        };
        if code == Some(NO_PERMISSION) {
            // Missing or wrong credentials, or a user without the right:
            // repeating the request will not help.
            return Self {
                operation,
                retry: Retry::Permanent,
                message: format!(
                    "{context}: the broker refused the request (NO_PERMISSION, code {NO_PERMISSION}): \
                     check ClientConfig::credentials against its ACL: {described}"
                ),
            };
        }
        let retry = match err.descriptor().recovery_hint() {
            RecoveryHint::Never | RecoveryHint::OperatorAction | RecoveryHint::RefreshCredentials => Retry::Permanent,
            _ => Retry::Transient,
        };
        Self {
            operation,
            retry,
            message: format!("{context}: {described}"),
        }
    }

    /// The operation that failed.
    pub fn operation(&self) -> Operation {
        self.operation
    }

    /// Whether repeating the call may succeed.
    pub fn is_retriable(&self) -> bool {
        self.retry == Retry::Transient
    }

    /// The human-readable cause.
    pub fn message(&self) -> &str {
        &self.message
    }
}

/// The result type of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;
