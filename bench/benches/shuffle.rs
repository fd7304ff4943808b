//! `key_by`'s work on the wire: the stable partition of a key, and the
//! shuffle frame's encode and (zero-copy) decode, per record of a frame of
//! word-count records (MessagePack keys and values, as `key_by` writes them).

use bytes::Bytes;
use criterion::{black_box, criterion_group, criterion_main, Criterion, Throughput};
use rocketmq_streams_shuffle::{partition, Frame, Framer};

/// Records in one frame: a batch of 50 lines of 10 words for one of 8 queues.
const RECORDS: u64 = 64;

fn shuffle(c: &mut Criterion) {
    let mut group = c.benchmark_group("shuffle");
    group.throughput(Throughput::Elements(1));
    let key = b"\xaaword-12345";
    group.bench_function("partition_11b_key_8_queues", |b| {
        b.iter(|| partition(black_box(key), 8))
    });
    let words: Vec<(Vec<u8>, Vec<u8>)> = (0..RECORDS)
        .map(|i| {
            let word = format!("word-{}", i * 7919 % 10_000);
            let key = rmp_serde::to_vec_named(&word).expect("msgpack");
            (key.clone(), key)
        })
        .collect();
    let frame = || {
        let mut framer = Framer::new();
        for (i, (key, value)) in words.iter().enumerate() {
            framer.push(
                0xDEAD_BEEF,
                0,
                123_456 + i as i64 / 10,
                (i % 10) as u64,
                1_700_000_000_000,
                key,
                value,
            );
        }
        framer.finish()
    };
    group.throughput(Throughput::Elements(RECORDS));
    group.bench_function("frame_64_words", |b| b.iter(|| black_box(frame())));
    let body: Bytes = frame().remove(0);
    group.bench_function("decode_frame_64_words", |b| {
        b.iter(|| {
            let frame = Frame::decode(black_box(&body)).expect("frame");
            frame.records().filter(Result::is_ok).count()
        })
    });
    group.throughput(Throughput::Elements(1));
    let word = "word-12345".to_string();
    group.bench_function("msgpack_word_key_and_value", |b| {
        let mut buf = Vec::with_capacity(64);
        b.iter(|| {
            buf.clear();
            rmp_serde::encode::write_named(&mut buf, black_box(&word)).expect("key");
            rmp_serde::encode::write_named(&mut buf, black_box(&word)).expect("value");
            buf.len()
        })
    });
    group.bench_function("json_word_key_and_value", |b| {
        let mut buf = Vec::with_capacity(64);
        b.iter(|| {
            buf.clear();
            serde_json::to_writer(&mut buf, black_box(&word)).expect("key");
            serde_json::to_writer(&mut buf, black_box(&word)).expect("value");
            buf.len()
        })
    });
    group.finish();
}

criterion_group!(benches, shuffle);
criterion_main!(benches);
