//! What one hop across the bridge costs: a glommio shard hands a batch to the
//! I/O runtime (tokio) with `IoRuntime::spawn` and awaits the result.
//!
//! The batch is moved there and back; the work on the tokio side is trivial,
//! so the figure is the fixed cost per batch (spawn, cross-thread wake-ups,
//! two moves of the batch's `Vec`). Divide by the batch size for the cost
//! per record.

use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use rocketmq_streams_io::IoRuntime;

/// Round trips with the shard's executor either parking at once when idle
/// (`spin = None`, glommio's default) or spinning that long before it parks.
fn bridge_with(c: &mut Criterion, name: &str, spin: Option<Duration>) {
    let io = IoRuntime::new(1).expect("I/O runtime");
    let mut group = c.benchmark_group(name);
    group.measurement_time(Duration::from_secs(5));
    for batch in [1usize, 64, 256, 1024] {
        group.throughput(Throughput::Elements(batch as u64));
        group.bench_with_input(BenchmarkId::from_parameter(batch), &batch, |b, &batch| {
            let mut builder = glommio::LocalExecutorBuilder::default();
            if let Some(spin) = spin {
                builder = builder.spin_before_park(spin);
            }
            let ex = builder.make().expect("glommio executor");
            let bodies = rocketmq_streams_bench::bodies(batch, 100);
            b.iter_custom(|iters| {
                let io = io.clone();
                let mut bodies = bodies.clone();
                ex.run(async move {
                    let start = Instant::now();
                    for _ in 0..iters {
                        bodies = io
                            .spawn(async move {
                                std::hint::black_box(bodies.len());
                                bodies
                            })
                            .await
                            .expect("bridge task");
                    }
                    start.elapsed()
                })
            });
        });
    }
    group.finish();
}

fn bridge(c: &mut Criterion) {
    bridge_with(c, "bridge_round_trip", None);
    bridge_with(c, "bridge_round_trip_spin_100us", Some(Duration::from_micros(100)));
}

criterion_group!(benches, bridge);
criterion_main!(benches);
