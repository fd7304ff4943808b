//! The `rocketmq-streams-broker` command, built with the tests so that
//! `tests/state_broker_restart.rs` and `tests/state_two_brokers.rs` can run
//! brokers in processes of their own
//! (`cargo test` builds only the tested package's binaries):
//!
//! ```text
//! test-broker [--namesrv-port P] [--broker-port P] [--store DIR] [--namesrv-only | --namesrv-addr HOST:PORT]
//! ```

fn main() -> std::process::ExitCode {
    rocketmq_streams::io::standalone_main(std::env::args().skip(1))
}
