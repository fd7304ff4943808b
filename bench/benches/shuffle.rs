//! `key_by`'s per-record work: the stable partition of a key, and the
//! shuffle wire format's encode and (zero-copy) decode.

use bytes::Bytes;
use criterion::{black_box, criterion_group, criterion_main, Criterion, Throughput};
use rocketmq_streams_shuffle::{partition, Origin, ShuffleRecord};

fn shuffle(c: &mut Criterion) {
    let mut group = c.benchmark_group("shuffle");
    group.throughput(Throughput::Elements(1));
    let key = b"\"word-12345\"";
    group.bench_function("partition_12b_key_8_queues", |b| {
        b.iter(|| partition(black_box(key), 8))
    });
    let record = ShuffleRecord {
        node: 2,
        origin: Origin {
            queue: 0xDEAD_BEEF,
            offset: 123_456,
            seq: 3,
        },
        timestamp: 1_700_000_000_000,
        key: Bytes::from_static(key),
        value: Bytes::from(vec![b'v'; 100]),
    };
    group.bench_function("encode_100b_value", |b| b.iter(|| black_box(&record).encode()));
    let body = record.encode();
    group.bench_function("decode_100b_value", |b| {
        b.iter(|| ShuffleRecord::decode(black_box(&body)))
    });
    group.finish();
}

criterion_group!(benches, shuffle);
criterion_main!(benches);
