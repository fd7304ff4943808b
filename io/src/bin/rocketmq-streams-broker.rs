//! Runs an embedded RocketMQ name server and broker (or either alone) until
//! Ctrl-C or SIGTERM.
//!
//! ```text
//! cargo run -p rocketmq-streams-io --bin rocketmq-streams-broker -- \
//!     [--namesrv-port P] [--broker-port P] [--store DIR] [--namesrv-only | --namesrv-addr HOST:PORT]
//! ```
//!
//! `--namesrv-only` runs a name server alone, `--namesrv-addr` a broker
//! alone registered with that name server: one of the first and several
//! of the second make a cluster of brokers, each in its own process.
//! Prints `ROCKETMQ_BROKER_ADDR=127.0.0.1:<port>` (when it runs a broker),
//! then `ROCKETMQ_NAMESRV_ADDR=127.0.0.1:<port>` once ready, so scripts and
//! multi-process tests can read the addresses.

fn main() -> std::process::ExitCode {
    rocketmq_streams_io::standalone_main(std::env::args().skip(1))
}
