//! A stalled broker: the broker runs in a process of its own and is frozen
//! with SIGSTOP for 20 s while the word count runs and a producer keeps
//! offering input, then thawed with SIGCONT. Its sockets stay open and
//! nothing answers, as in a long GC pause or a hung disk.
//!
//! What it shows:
//! - the job's memory stays bounded while it waits: no sample of a shard's
//!   gauge of records in flight (every 50 ms throughout) passes
//!   `max_batches_in_flight × poll_batch`, and the process's resident
//!   memory peak before, during and after the stall is printed (memory is
//!   measured, not asserted: see `bench soak`);
//! - after the resume the counts are exact and nothing is lost: the
//!   reference is counted from what the input topic holds at the end
//!   (every line the producer was told is stored, and any line a
//!   timed-out send stored before the producer sent it again).

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use rocketmq_streams::io::{IoRuntime, OutRecord, QueueId, Sink};
use rocketmq_streams_tests::processes::ServerProcess;
use rocketmq_streams_tests::wordcount::{assert_counts, config, corpus_of, run_to_end, start, Latest};
use rocketmq_streams_tests::{unique, wait_for, TestCluster};

const WORDS: usize = 300_000;
const DISTINCT: usize = 20_000;
/// Batches a shard may hold unfinished: a quarter of the default, so the
/// cap binds.
const BATCHES_IN_FLIGHT: usize = 2;
/// Records a poll, and so a batch, holds at most.
const POLL_BATCH: usize = 1024;
/// The most records a shard may hold unfinished.
const IN_FLIGHT: usize = BATCHES_IN_FLIGHT * POLL_BATCH;
/// Messages the consumer may pull ahead.
const CONSUMER_BUFFER: u32 = 2_000;
const STALL: Duration = Duration::from_secs(20);
/// Lines a send of the producer carries, and its pace.
const CHUNK: usize = 20;
const PACE: Duration = Duration::from_millis(100);

/// Phases of the run, as the sampler files its samples.
const BEFORE: u8 = 0;
const STALLED: u8 = 1;
const AFTER: u8 = 2;

/// Resident memory of this process, MiB.
fn rss_mib() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .find_map(|l| {
            l.strip_prefix("VmRSS:")
                .and_then(|r| r.trim().trim_end_matches(" kB").parse::<f64>().ok())
        })
        .unwrap_or(0.0)
        / 1024.0
}

/// Counts of the words of `bodies`.
fn counts_of(bodies: &[Bytes]) -> HashMap<String, u64> {
    let mut counts = HashMap::new();
    for body in bodies {
        for word in String::from_utf8_lossy(body).split_whitespace() {
            *counts.entry(word.to_string()).or_insert(0u64) += 1;
        }
    }
    counts
}

/// Sends `lines` to `route` over and over in chunks at a steady pace until
/// `stop`, each chunk again until the broker acknowledges it (a chunk whose
/// send timed out may have been stored too); counts the lines stored and
/// the failed sends.
fn produce_steadily(
    addr: &str,
    route: Vec<QueueId>,
    lines: Vec<Bytes>,
    stop: Arc<AtomicBool>,
    sent: Arc<AtomicU64>,
    failed: Arc<AtomicU64>,
) -> std::thread::JoinHandle<()> {
    let client = rocketmq_streams::io::ClientConfig::new(addr);
    std::thread::spawn(move || {
        let io = IoRuntime::named("stall-producer", 1).expect("producer runtime");
        let io2 = io.clone();
        io.block_on(async move {
            let sink = Sink::start(io2, &client, &unique("stall-producer"))
                .await
                .expect("producer");
            for chunk in lines.chunks(CHUNK).cycle() {
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                let deadline = Instant::now() + Duration::from_secs(300);
                loop {
                    let records = chunk.iter().cloned().map(OutRecord::new).collect();
                    match sink.send_spread(&route, records).await {
                        Ok(_) => break,
                        Err(e) => {
                            assert!(Instant::now() < deadline, "a chunk was not stored within 300 s: {e}");
                            failed.fetch_add(1, Ordering::Relaxed);
                            tokio::time::sleep(Duration::from_millis(200)).await;
                        }
                    }
                }
                sent.fetch_add(chunk.len() as u64, Ordering::Relaxed);
                tokio::time::sleep(PACE).await;
            }
            sink.shutdown().await;
        })
        .expect("the producer's runtime");
    })
}

#[test]
fn memory_stays_bounded_and_counts_exact_when_the_broker_stalls() {
    let store = tempfile::tempdir().expect("broker store");
    let broker = ServerProcess::both(env!("CARGO_BIN_EXE_test-broker"), store.path());
    let addr = broker.namesrv_addr.clone();
    let cluster = TestCluster::external(&addr);
    let (input, job) = (unique("stall-lines"), unique("stall-job"));
    let (lines, _) = corpus_of(WORDS, DISTINCT);
    // Three quarters of the corpus wait in the topic, so the job is well
    // behind when the broker stalls and polls full batches after; the rest
    // comes while the job runs.
    let (first, rest) = lines.split_at(lines.len() * 3 / 4);
    let route = cluster.produce(&input, 8, first.to_vec());

    let dir = tempfile::tempdir().expect("state dir");
    let latest: Latest = Arc::default();
    let mut config = config(&cluster, dir.path(), 2);
    config.max_batches_in_flight = BATCHES_IN_FLIGHT;
    config.poll_batch = POLL_BATCH;
    config.consumer_buffer = CONSUMER_BUFFER;
    let job = Arc::new(start(&job, &input, None, config, &latest));

    // The sampler: RSS and the shards' in-flight gauges, by phase.
    let phase = Arc::new(AtomicU8::new(BEFORE));
    let sampling = Arc::new(AtomicBool::new(true));
    let sampler = {
        let (job, phase, sampling) = (job.clone(), phase.clone(), sampling.clone());
        std::thread::spawn(move || {
            let mut rss_peak = [0f64; 3];
            let mut in_flight_peak = 0u64;
            let mut samples = 0u64;
            while sampling.load(Ordering::Relaxed) {
                let p = usize::from(phase.load(Ordering::Relaxed));
                rss_peak[p] = rss_peak[p].max(rss_mib());
                let m = job.metrics();
                in_flight_peak = in_flight_peak.max(m.shards.iter().map(|s| s.records_in_flight).max().unwrap_or(0));
                samples += 1;
                std::thread::sleep(Duration::from_millis(50));
            }
            (rss_peak, in_flight_peak, samples)
        })
    };

    let (sent, failed) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let stop_producing = Arc::new(AtomicBool::new(false));
    let producer = produce_steadily(
        &addr,
        route,
        rest.to_vec(),
        stop_producing.clone(),
        sent.clone(),
        failed.clone(),
    );
    let counted = || latest.lock().unwrap_or_else(|p| p.into_inner()).values().sum::<u64>();
    // Mid-stream: the job is counting and the producer sending.
    let midway = wait_for(Duration::from_secs(300), || {
        (counted() >= WORDS as u64 / 20 && sent.load(Ordering::Relaxed) > 0).then_some(())
    });
    assert!(midway.is_some(), "the job made no progress within 300 s");

    let failed_before = failed.load(Ordering::Relaxed);
    let counted_at_stall = counted();
    broker.pause();
    phase.store(STALLED, Ordering::Relaxed);
    let stalled_at = Instant::now();
    while stalled_at.elapsed() < STALL {
        assert!(!job.has_stopped(), "the job stopped while the broker stalled");
        std::thread::sleep(Duration::from_millis(100));
    }
    let counted_in_stall = counted() - counted_at_stall;
    broker.resume();
    phase.store(AFTER, Ordering::Relaxed);
    // Input keeps coming a while after the resume too.
    std::thread::sleep(Duration::from_secs(5));
    stop_producing.store(true, Ordering::Relaxed);
    producer.join().expect("the producer stored every line");
    // Sends that failed from the stall on (a send under way at the resume
    // may fail after it).
    let failed_from_stall = failed.load(Ordering::Relaxed) - failed_before;
    run_to_end(&[&job]);
    sampling.store(false, Ordering::Relaxed);
    let (rss_peak, in_flight_peak, samples) = sampler.join().expect("the sampler");
    let job = Arc::into_inner(job).expect("the sampler let go of the job");
    let m = job.stop().expect("the job rode the stall out");

    // The reference: what the input topic holds, read back whole.
    let acknowledged = first.len() as u64 + sent.load(Ordering::Relaxed);
    let stored = cluster.topic_size(&input);
    let bodies: Vec<Bytes> = cluster
        .read_topic(&input, stored as usize, Duration::from_secs(120))
        .into_iter()
        .map(|r| r.body)
        .collect();
    eprintln!(
        "stall of {STALL:?}: {failed_from_stall} producer sends failed from it on, {counted_in_stall} updates counted during it; \
         {stored} lines stored for {acknowledged} acknowledged ({} stored twice by retried sends); \
         RSS peak {:.1} MiB before, {:.1} MiB during, {:.1} MiB after; \
         records in flight peak {in_flight_peak} of {IN_FLIGHT} a shard over {samples} samples; \
         {} records in, {} restored",
        stored.saturating_sub(acknowledged),
        rss_peak[usize::from(BEFORE)],
        rss_peak[usize::from(STALLED)],
        rss_peak[usize::from(AFTER)],
        m.total(|s| s.records_in),
        m.total(|s| s.restored),
    );
    assert!(
        failed_from_stall > 0,
        "the stall was felt: the producer's sends failed during it"
    );
    assert_eq!(bodies.len() as u64, stored, "the input topic read back whole");
    assert!(stored >= acknowledged, "every line acknowledged is stored");
    assert!(
        in_flight_peak <= IN_FLIGHT as u64,
        "a shard held {in_flight_peak} records in flight, over the cap of {IN_FLIGHT}"
    );
    assert!(in_flight_peak > 0, "the gauge was sampled while records were in flight");
    assert_counts(&latest, &counts_of(&bodies));
    drop(cluster);
    drop(broker);
}
