//! The q5-like windowed count as a process of its own, for the crash test
//! (`tests/window_faults.rs`): the test kills it with SIGKILL midway and
//! finishes the job in-process from the state it left behind.
//!
//! ```text
//! window-job <namesrv> <job> <input topic> <output topic> <state dir>
//! ```
//!
//! Runs on 2 shards with a grace of `CRASH_GRACE`, writing every window's
//! count as JSON `[windowed, count]` to the output topic, until killed or
//! interrupted.

use rocketmq_streams::prelude::*;
use rocketmq_streams_tests::run_until_interrupted;
use rocketmq_streams_tests::windows::{q5, CRASH_GRACE};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    rocketmq_streams::io::init_logging();
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [namesrv, job, input, output, state_dir] = args.as_slice() else {
        return Err("usage: window-job <namesrv> <job> <input> <output> <state dir>".into());
    };
    let builder = StreamBuilder::new(job);
    q5(&builder, input, CRASH_GRACE).sink(output, Json::<(Windowed<u64>, u64)>::new());
    let mut config = RuntimeConfig::new(ClientConfig::new(namesrv));
    config.shards = 2;
    config.state_dir = Some(state_dir.into());
    let runtime = StreamRuntime::start(builder.build()?, config)?;
    run_until_interrupted(runtime, "window-job")
}
