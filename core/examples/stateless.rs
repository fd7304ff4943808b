//! A stateless job on an embedded RocketMQ: orders in, large orders out.
//!
//! Starts an embedded broker (or uses `ROCKETMQ_NAMESRV_ADDR`), produces
//! 20,000 JSON orders to `orders`, and runs
//! `source(orders) → filter(amount ≥ 900) → map(to a summary line) → sink(large-orders)`
//! on 2 pinned shards until every order is processed, then prints a few
//! results and the job's metrics. Ctrl-C stops the job early, cleanly
//! (in-flight batches finish, offsets are committed).
//!
//! ```text
//! cargo run -p rocketmq-streams --example stateless
//! ```

use std::time::{Duration, Instant};

use bytes::Bytes;
use rocketmq_streams::io::{Interrupt, OutRecord, Sink};
use rocketmq_streams::prelude::*;

#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
struct Order {
    id: u64,
    customer: String,
    amount: u32,
}

const ORDERS: u64 = 20_000;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    rocketmq_streams::io::init_logging();
    let (_broker, client) = EmbeddedRocketMQ::unless_env()?;
    let suffix = std::process::id();
    let (orders, large) = (format!("orders-{suffix}"), format!("large-orders-{suffix}"));

    // Produce the input.
    let io = IoRuntime::new(1)?;
    {
        let (io2, client2, orders2) = (io.clone(), client.clone(), orders.clone());
        io.block_on(async move {
            let admin = Admin::start(io2.clone(), &client2).await?;
            admin.create_topic(&orders2, 8).await?;
            let route = admin.route(&orders2).await?;
            let sink = Sink::start(io2, &client2, "orders-producer").await?;
            let records = (0..ORDERS)
                .map(|id| {
                    let order = Order {
                        id,
                        customer: format!("c{}", id % 97),
                        amount: (id * 7919 % 1000) as u32,
                    };
                    OutRecord::new(Bytes::from(serde_json::to_vec(&order).unwrap_or_default()))
                })
                .collect();
            sink.send_spread(&route, records).await?;
            sink.shutdown().await;
            Ok::<_, rocketmq_streams::io::Error>(())
        })??;
    }

    // The job.
    let builder = StreamBuilder::new(format!("large-orders-job-{suffix}"));
    builder
        .source(&orders, Json::<Order>::new())
        .filter(|o: &Order| o.amount >= 900)
        .map(|o: Order| format!("order {} by {}: {}", o.id, o.customer, o.amount))
        .sink(&large, Utf8);
    let topology = builder.build()?;
    println!("{}", topology.describe());

    let mut config = RuntimeConfig::new(client);
    config.shards = 2;
    let started = Instant::now();
    let interrupt = Interrupt::install()?;
    let job = StreamRuntime::start(topology, config)?;
    while job.metrics().total(|s| s.records_in) < ORDERS
        && started.elapsed() < Duration::from_secs(120)
        && !interrupt.is_set()
        && !job.has_stopped()
    {
        std::thread::sleep(Duration::from_millis(50));
    }
    if interrupt.is_set() {
        println!("Ctrl-C: stopping the job");
    }
    let metrics = job.stop()?;
    println!(
        "processed {} orders in {:.2?}: {} large orders written to {large}",
        metrics.total(|s| s.records_in),
        started.elapsed(),
        metrics.total(|s| s.records_out)
    );
    for shard in &metrics.shards {
        println!(
            "  {} on {}: {} records in, {} out, queues {:?}",
            shard.shard,
            shard.thread.as_deref().unwrap_or("?"),
            shard.records_in,
            shard.records_out,
            shard.queues.iter().map(|q| q.queue()).collect::<Vec<_>>()
        );
    }
    Ok(())
}
