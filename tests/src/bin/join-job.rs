//! The q8-like left join as a process of its own, for the crash test
//! (`tests/join_faults.rs`): the test kills it with SIGKILL midway and
//! finishes the job in-process from the state it left behind.
//!
//! ```text
//! join-job <namesrv> <job> <input topic> <output topic> <state dir>
//! ```
//!
//! Runs on 2 shards, writing every result as JSON to the output topic,
//! until killed or interrupted.

use std::time::Duration;

use rocketmq_streams::prelude::*;
use rocketmq_streams_tests::joins::{q8, Q8};
use rocketmq_streams_tests::run_until_interrupted;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    rocketmq_streams::io::init_logging();
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [namesrv, job, input, output, state_dir] = args.as_slice() else {
        return Err("usage: join-job <namesrv> <job> <input> <output> <state dir>".into());
    };
    let builder = StreamBuilder::new(job);
    q8(&builder, input, Duration::from_secs(2)).sink(output, Json::<Q8>::new());
    let mut config = RuntimeConfig::new(ClientConfig::new(namesrv));
    config.shards = 2;
    config.state_dir = Some(state_dir.into());
    let runtime = StreamRuntime::start(builder.build()?, config)?;
    run_until_interrupted(runtime, "join-job")
}
