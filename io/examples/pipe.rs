//! The first end-to-end slice: input topic → uppercase → output topic.
//!
//! Starts an embedded RocketMQ (or uses `ROCKETMQ_NAMESRV_ADDR`), creates the
//! `input` and `output` topics with 8 queues each, produces 100,000 records,
//! pipes them through an uppercase transform on a glommio executor (every
//! client call crosses the bridge to the I/O runtime), and prints how many
//! arrived and how long it took.
//!
//! ```text
//! cargo run --release -p rocketmq-streams-io --example pipe [-- RECORDS]
//! ```

use std::time::{Duration, Instant};

use bytes::Bytes;
use rocketmq_streams_io::pipe::{self, PipeConfig};
use rocketmq_streams_io::{Admin, ClientConfig, EmbeddedRocketMQ, IoRuntime, OutRecord, Sink, Source, SourceConfig};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    rocketmq_streams_io::init_logging();
    let records: u64 = match std::env::args().nth(1) {
        Some(n) => n.parse()?,
        None => 100_000,
    };
    let (_broker, client) = match ClientConfig::from_env() {
        Some(client) => (None, client),
        None => {
            let t = Instant::now();
            let mq = EmbeddedRocketMQ::start()?;
            println!("embedded RocketMQ up at {} in {:.1?}", mq.namesrv_addr(), t.elapsed());
            let client = ClientConfig::new(mq.namesrv_addr());
            (Some(mq), client)
        }
    };
    let io = IoRuntime::new(rocketmq_streams_io::DEFAULT_IO_THREADS)?;
    let run_id = std::process::id();
    let (input, output) = (format!("input-{run_id}"), format!("output-{run_id}"));

    let ex = glommio::LocalExecutorBuilder::default().name("pipe-shard").make()?;
    let result: Result<(), Box<dyn std::error::Error>> = ex.run(async {
        rocketmq_streams_io::keep_awake();
        let admin = Admin::start(io.clone(), &client).await?;
        admin.create_topic(&input, 8).await?;
        admin.create_topic(&output, 8).await?;
        let in_queues = admin.route(&input).await?;
        let out_queues = admin.route(&output).await?;

        let sink = Sink::start(io.clone(), &client, "pipe-example-producer").await?;
        let t = Instant::now();
        let bodies: Vec<OutRecord> = (0..records)
            .map(|i| OutRecord::new(Bytes::from(format!("record-{i:07}"))))
            .collect();
        let produced = sink.send_spread(&in_queues, bodies).await?;
        println!("produced {produced} records to {input} in {:.2?}", t.elapsed());

        let mut source = Source::start(
            io.clone(),
            &client,
            SourceConfig::new(format!("pipe-example-{run_id}"), [input.clone()]),
        )
        .await?;
        let t = Instant::now();
        let stats = pipe::run(
            &mut source,
            &sink,
            &PipeConfig {
                output_queues: out_queues,
                commit_interval: Duration::from_secs(1),
                max_records: Some(records),
                max_duration: Duration::from_secs(600),
            },
            |body| Bytes::from(body.to_ascii_uppercase()),
        )
        .await?;
        let secs = t.elapsed().as_secs_f64();
        println!(
            "piped {} records ({} arrived on {output}) in {secs:.2} s: {:.0} records/s, {} polls, {} commits",
            stats.consumed,
            stats.produced,
            stats.produced as f64 / secs,
            stats.batches,
            stats.commits
        );
        let t = Instant::now();
        source.shutdown().await;
        sink.shutdown().await;
        println!("source and sink shut down in {:.2?}", t.elapsed());
        Ok(())
    });
    result?;
    let t = Instant::now();
    drop(io);
    drop(_broker);
    println!("client runtime and broker stopped in {:.2?}", t.elapsed());
    Ok(())
}
