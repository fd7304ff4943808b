//! The state store: put and get through the write-back cache, a commit of
//! dirty keys to RocksDB, and gets that miss the cache and read RocksDB.

use bytes::Bytes;
use criterion::{black_box, criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use rocketmq_streams_state::{Checkpoint, QueueStore};

const KEYS: usize = 10_000;

fn key(i: usize) -> Bytes {
    Bytes::from(format!("key-{i:08}"))
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

criterion_group!(benches, state);
criterion_main!(benches);
