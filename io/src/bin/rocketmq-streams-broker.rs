//! Runs an embedded RocketMQ name server and broker until Ctrl-C.
//!
//! ```text
//! cargo run -p rocketmq-streams-io --bin rocketmq-streams-broker -- [--namesrv-port P] [--broker-port P] [--store DIR]
//! ```
//!
//! Prints `ROCKETMQ_NAMESRV_ADDR=127.0.0.1:<port>` once the broker is
//! registered, so scripts and multi-process tests can read the address.

fn main() -> std::process::ExitCode {
    rocketmq_streams_io::standalone_main(std::env::args().skip(1))
}
