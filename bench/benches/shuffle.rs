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
    // What `key_by` does per record: JSON key and value of a word count.
    let (word, count) = ("word-12345".to_string(), 1u64);
    group.bench_function("json_then_encode_word", |b| {
        b.iter(|| {
            let key = Bytes::from(serde_json::to_vec(black_box(&word)).expect("json"));
            let value = Bytes::from(serde_json::to_vec(black_box(&(&word, count))).expect("json"));
            ShuffleRecord {
                node: record.node,
                origin: record.origin,
                timestamp: record.timestamp,
                key,
                value,
            }
            .encode()
        })
    });
    group.bench_function("encode_with_json_word", |b| {
        b.iter(|| {
            ShuffleRecord::encode_with(
                record.node,
                record.origin,
                record.timestamp,
                64,
                |buf| serde_json::to_writer(buf, black_box(&word)),
                |buf| serde_json::to_writer(buf, black_box(&(&word, count))),
            )
        })
    });
    let body = record.encode();
    group.bench_function("decode_100b_value", |b| {
        b.iter(|| ShuffleRecord::decode(black_box(&body)))
    });
    group.finish();
}

criterion_group!(benches, shuffle);
criterion_main!(benches);
