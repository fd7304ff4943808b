//! The `rocketmq-streams-broker` command, built with the tests so that
//! `tests/state_broker_restart.rs` can run a broker in a process of its own
//! (`cargo test` builds only the tested package's binaries):
//!
//! ```text
//! test-broker [--namesrv-port P] [--broker-port P] [--store DIR]
//! ```

fn main() -> std::process::ExitCode {
    rocketmq_streams::io::standalone_main(std::env::args().skip(1))
}
