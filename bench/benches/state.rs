//! The state store: put and get through the write-back cache, a commit of
//! dirty keys to RocksDB, gets that miss the cache and read RocksDB, and a
//! count's update as bytes (decode, add, encode, put: what an aggregation
//! did per record before issue 11's decoded layer) against one in the
//! decoded layer (add in place; encoded once per key at the checkpoint).

use bytes::Bytes;
use criterion::{black_box, criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use rocketmq_streams_state::{Checkpoint, QueueStore, ValueCodec};

const KEYS: usize = 10_000;

fn key(i: usize) -> Bytes {
    Bytes::from(format!("key-{i:08}"))
}

/// A count as the engine stores it: a version byte, then MessagePack.
struct Count;

impl ValueCodec for Count {
    type Value = u64;
    fn encode(value: &u64) -> Result<Bytes, String> {
        let mut buf = vec![1u8];
        rmp_serde::encode::write(&mut buf, value).map_err(|e| e.to_string())?;
        Ok(Bytes::from(buf))
    }
    fn decode(bytes: &[u8]) -> Result<u64, String> {
        match bytes.split_first() {
            Some((1, rest)) => rmp_serde::from_slice(rest).map_err(|e| e.to_string()),
            _ => Err("not a count".into()),
        }
    }
}

fn count_update(c: &mut Criterion) {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut group = c.benchmark_group("count_update");
    group.throughput(Throughput::Elements(1));
    let keys: Vec<Bytes> = (0..KEYS).map(key).collect();
    let mut bytes = QueueStore::open(dir.path().join("bytes"), 1_000_000).expect("store");
    let mut i = 0usize;
    group.bench_function("as_bytes", |b| {
        b.iter(|| {
            i = (i + 1) % KEYS;
            let k = &keys[i];
            // As the runtime does per record: its rollback journal restarts.
            bytes.begin_record();
            let n = match bytes.get(k).expect("get") {
                Some(v) => Count::decode(&v).expect("decode"),
                None => 0,
            };
            bytes.put_slice(k, Count::encode(&(n + 1)).expect("encode"));
        })
    });
    let mut decoded = QueueStore::open(dir.path().join("decoded"), 1_000_000).expect("store");
    group.bench_function("decoded", |b| {
        b.iter(|| {
            i = (i + 1) % KEYS;
            decoded.begin_record();
            decoded
                .update::<Count, _>(1, &keys[i], |n| *n.get_or_insert(0) += 1)
                .expect("update")
        })
    });
    group.throughput(Throughput::Elements(KEYS as u64));
    group.bench_function("encode_10k_decoded_at_checkpoint", |b| {
        b.iter_custom(|iters| {
            let mut spent = std::time::Duration::ZERO;
            for _ in 0..iters {
                for k in &keys {
                    decoded.begin_record();
                    decoded
                        .update::<Count, _>(1, k, |n| *n.get_or_insert(0) += 1)
                        .expect("update");
                }
                let start = std::time::Instant::now();
                decoded.encode_decoded(1, |k, e| panic!("{k:?}: {e}"));
                spent += start.elapsed();
            }
            spent
        })
    });
    group.finish();
}

fn state(c: &mut Criterion) {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut group = c.benchmark_group("state_store");
    group.throughput(Throughput::Elements(1));

    let mut cached = QueueStore::open(dir.path().join("cached"), 1_000_000).expect("store");
    for i in 0..KEYS {
        cached.put(key(i), Bytes::from_static(b"12345678"));
    }
    let mut i = 0usize;
    group.bench_function("put_cached", |b| {
        b.iter(|| {
            i = (i + 1) % KEYS;
            cached.put(key(i), Bytes::from_static(b"87654321"));
        })
    });
    group.bench_function("get_cached", |b| {
        b.iter(|| {
            i = (i + 1) % KEYS;
            black_box(cached.get(&key(i)).expect("get"))
        })
    });

    // Gets that miss the cache: a store reopened over committed keys.
    let path = dir.path().join("rocksdb");
    {
        let mut s = QueueStore::open(&path, 1_000_000).expect("store");
        for i in 0..KEYS {
            s.put(key(i), Bytes::from_static(b"12345678"));
        }
        s.commit(Checkpoint {
            state_next: 1,
            source_next: Some(1),
            epoch: 0,
            token: 1,
        })
        .expect("commit");
    }
    group.throughput(Throughput::Elements(KEYS as u64));
    group.bench_function("get_10k_from_rocksdb", |b| {
        b.iter_batched(
            || QueueStore::open(&path, 1_000_000).expect("reopen"),
            |mut s| {
                for i in 0..KEYS {
                    black_box(s.get(&key(i)).expect("get"));
                }
                s
            },
            BatchSize::PerIteration,
        )
    });
    let mut n = 0i64;
    group.bench_function("commit_10k_dirty_keys", |b| {
        b.iter_batched_ref(
            || {
                let mut s = QueueStore::open(dir.path().join("commit"), 1_000_000).expect("store");
                for i in 0..KEYS {
                    s.put(key(i), Bytes::from(format!("{i}")));
                }
                s
            },
            |s| {
                n += 1;
                s.commit(Checkpoint {
                    state_next: n,
                    source_next: Some(n),
                    epoch: 0,
                    token: 1,
                })
                .expect("commit")
            },
            BatchSize::PerIteration,
        )
    });
    group.finish();
}

criterion_group!(benches, state, count_update);
criterion_main!(benches);
