//! One cross-core hand-off: a batch of records sent to another thread over
//! a crossbeam channel and an answer sent back — the round trip a shard
//! makes when it hands shuffled records to a writer shard
//! (`ShuffleHandOff::WriterShard`). Both threads spin on `try_recv`, so
//! this is the channel's cost, not a thread wake-up's.

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};

fn handoff(c: &mut Criterion) {
    let mut group = c.benchmark_group("handoff_round_trip");
    for batch in [1usize, 64, 1024] {
        let (to_writer, writer_in) = crossbeam::channel::unbounded::<Vec<Bytes>>();
        let (answer, answers) = crossbeam::channel::unbounded::<usize>();
        let writer = std::thread::spawn(move || loop {
            match writer_in.try_recv() {
                Ok(records) => {
                    if answer.send(records.len()).is_err() {
                        return;
                    }
                }
                Err(crossbeam::channel::TryRecvError::Empty) => std::hint::spin_loop(),
                Err(crossbeam::channel::TryRecvError::Disconnected) => return,
            }
        });
        let records: Vec<Bytes> = rocketmq_streams_bench::bodies(batch, 100);
        group.throughput(Throughput::Elements(batch as u64));
        group.bench_with_input(BenchmarkId::from_parameter(batch), &records, |b, records| {
            b.iter(|| {
                to_writer.send(records.clone()).expect("send");
                loop {
                    if let Ok(n) = answers.try_recv() {
                        return n;
                    }
                    std::hint::spin_loop();
                }
            })
        });
        drop(to_writer);
        let _ = writer.join();
    }
    group.finish();
}

criterion_group!(benches, handoff);
criterion_main!(benches);
