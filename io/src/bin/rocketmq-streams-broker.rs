//! Runs an embedded RocketMQ name server and broker until Ctrl-C.
//!
//! ```text
//! cargo run -p rocketmq-streams-io --bin rocketmq-streams-broker -- [--namesrv-port P] [--broker-port P] [--store DIR]
//! ```
//!
//! Prints `ROCKETMQ_NAMESRV_ADDR=127.0.0.1:<port>` once the broker is
//! registered, so scripts and multi-process tests can read the address.

use std::process::ExitCode;

use rocketmq_streams_io::{EmbeddedConfig, EmbeddedRocketMQ};

fn main() -> ExitCode {
    rocketmq_streams_io::init_logging();
    let mut config = EmbeddedConfig::default();
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value = |name: &str| args.next().ok_or_else(|| format!("{name} needs a value"));
        let parsed = match arg.as_str() {
            "--namesrv-port" => value("--namesrv-port")
                .and_then(|v| v.parse().map_err(|e| format!("--namesrv-port: {e}")))
                .map(|p| config.namesrv_port = Some(p)),
            "--broker-port" => value("--broker-port")
                .and_then(|v| v.parse().map_err(|e| format!("--broker-port: {e}")))
                .map(|p| config.broker_port = Some(p)),
            "--store" => value("--store").map(|v| config.store_dir = Some(v.into())),
            "-h" | "--help" => {
                println!("usage: rocketmq-streams-broker [--namesrv-port P] [--broker-port P] [--store DIR]");
                return ExitCode::SUCCESS;
            }
            other => Err(format!("unknown argument {other:?}")),
        };
        if let Err(e) = parsed {
            eprintln!("rocketmq-streams-broker: {e}");
            return ExitCode::from(2);
        }
    }
    let mq = match EmbeddedRocketMQ::start_with(config) {
        Ok(mq) => mq,
        Err(e) => {
            eprintln!("rocketmq-streams-broker: {e}");
            return ExitCode::FAILURE;
        }
    };
    println!("ROCKETMQ_NAMESRV_ADDR={}", mq.namesrv_addr());
    match rocketmq_streams_io::Interrupt::install() {
        Ok(interrupt) => interrupt.wait(),
        Err(e) => {
            eprintln!("rocketmq-streams-broker: cannot listen for Ctrl-C: {e}");
            return ExitCode::FAILURE;
        }
    }
    eprintln!("rocketmq-streams-broker: stopping");
    mq.stop();
    ExitCode::SUCCESS
}
