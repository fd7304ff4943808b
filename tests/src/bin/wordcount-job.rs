//! The word count as a process of its own, for the crash test
//! (`tests/state_wordcount.rs`): the test starts it, kills it with SIGKILL
//! midway and finishes the job in-process from the state it left behind.
//!
//! ```text
//! wordcount-job <namesrv> <job> <input topic> <output topic> <state dir>
//! ```
//!
//! Runs the word count on 2 shards, writing every count update as JSON
//! `[word, count]` to the output topic, until it is killed or interrupted.

use std::time::Duration;

use rocketmq_streams::prelude::*;
use rocketmq_streams_tests::run_until_interrupted;
use rocketmq_streams_tests::wordcount::word_count;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    rocketmq_streams::io::init_logging();
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [namesrv, job, input, output, state_dir] = args.as_slice() else {
        return Err("usage: wordcount-job <namesrv> <job> <input> <output> <state dir>".into());
    };
    let builder = StreamBuilder::new(job);
    word_count(&builder, input).sink(output, Json::<(String, u64)>::new());
    let mut client = ClientConfig::new(namesrv);
    // Tests that freeze the process shorten the heartbeat (see state_owners.rs).
    if let Some(ms) = std::env::var("WORDCOUNT_HEARTBEAT_MS")
        .ok()
        .and_then(|v| v.parse().ok())
    {
        client.heartbeat_interval = Duration::from_millis(ms);
    }
    let mut config = RuntimeConfig::new(client);
    config.shards = 2;
    // The failpoint tests checkpoint often, so that their n-th checkpoint
    // comes while the input is still flowing (see state_faults.rs).
    if let Some(ms) = std::env::var("WORDCOUNT_COMMIT_MS").ok().and_then(|v| v.parse().ok()) {
        config.commit_interval = Duration::from_millis(ms);
    }
    config.state_dir = Some(state_dir.into());
    config.snapshot_after = rocketmq_streams_tests::wordcount::TEST_SNAPSHOT_AFTER;
    let runtime = StreamRuntime::start(builder.build()?, config)?;
    run_until_interrupted(runtime, "wordcount-job")
}
