//! Offered load and what comes out: records stamped at produce time, sent
//! flat out or at a fixed rate, and a consumer of the output topic that
//! turns each record's stamp into an end-to-end latency.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::{BufMut, Bytes, BytesMut};
use hdrhistogram::Histogram;
use rocketmq_streams_io::{
    Admin, ClientConfig, ConsumeFrom, IoRuntime, OutRecord, QueueId, Sink, Source, SourceConfig,
};

/// Nanoseconds since the UNIX epoch, the clock every stamp uses.
pub fn now_nanos() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

/// A binary record of `size` bytes (at least 16): the stamp, the sequence
/// number, then filler.
pub fn stamped_binary(seq: u64, stamp: u64, size: usize) -> Bytes {
    let mut b = BytesMut::with_capacity(size.max(16));
    b.put_u64_le(stamp);
    b.put_u64_le(seq);
    b.resize(size.max(16), b'x');
    b.freeze()
}

/// The stamp and sequence number of a [`stamped_binary`] record.
pub fn binary_stamp(body: &[u8]) -> Option<(u64, u64)> {
    let stamp = u64::from_le_bytes(body.get(0..8)?.try_into().ok()?);
    let seq = u64::from_le_bytes(body.get(8..16)?.try_into().ok()?);
    Some((stamp, seq))
}

/// A text line of `words` words drawn from `vocabulary` distinct ones,
/// led by its stamp: `@<stamp> w17 w3 ...`.
pub fn stamped_line(seq: u64, stamp: u64, words: usize, vocabulary: u64) -> Bytes {
    let mut line = format!("@{stamp}");
    let mut x = seq.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    for _ in 0..words {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        // Skewed: squaring favours small word numbers.
        let u = (x >> 11) as f64 / (1u64 << 53) as f64;
        let _ = write!(line, " w{}", (u * u * vocabulary as f64) as u64);
    }
    Bytes::from(line)
}

/// Creates `topic` with `queues` queues (if missing) and returns its route.
///
/// # Errors
///
/// Any error of the admin client.
pub async fn ensure_topic(
    io: &Arc<IoRuntime>,
    client: &ClientConfig,
    topic: &str,
    queues: u32,
) -> rocketmq_streams_io::Result<Vec<QueueId>> {
    let admin = Admin::start(io.clone(), client).await?;
    admin.create_topic(topic, queues).await?;
    admin.route(topic).await
}

/// [`ensure_topic`] from outside the I/O runtime.
///
/// # Errors
///
/// Any error of the admin client.
pub fn create_topic(
    io: &Arc<IoRuntime>,
    client: &ClientConfig,
    topic: &str,
    queues: u32,
) -> rocketmq_streams_io::Result<()> {
    let (io2, client, topic) = (io.clone(), client.clone(), topic.to_string());
    io.block_on(async move { ensure_topic(&io2, &client, &topic, queues).await.map(|_| ()) })?
}

/// How a producer offers its records.
#[derive(Debug, Clone, Copy)]
pub enum Offer {
    /// As fast as the broker takes them.
    FlatOut,
    /// At this many records per second, in 10 ms slices.
    Rate(f64),
}

/// Sends `total` records made by `make(seq, stamp)` to `topic`, spread over
/// its queues, as `offer` says; `sent` counts what the broker acknowledged.
/// Returns when all are acknowledged, with the time that took.
///
/// At a fixed rate a record's stamp is the moment it was *due*, not the
/// moment it was built: a producer that falls behind its schedule shows as
/// latency, instead of hiding it (coordinated omission).
///
/// # Errors
///
/// The first send error.
pub fn produce(
    io: &Arc<IoRuntime>,
    client: &ClientConfig,
    topic: &str,
    total: u64,
    offer: Offer,
    make: impl Fn(u64, u64) -> Bytes + Send + 'static,
    sent: Arc<AtomicU64>,
) -> rocketmq_streams_io::Result<Duration> {
    let (io2, client, topic) = (io.clone(), client.clone(), topic.to_string());
    io.block_on(async move {
        let route = ensure_topic(&io2, &client, &topic, 8).await?;
        let sink = Sink::start(io2, &client, &format!("bench-producer-{}", std::process::id())).await?;
        let (started, started_nanos) = (Instant::now(), now_nanos());
        let mut seq = 0u64;
        while seq < total {
            let chunk = match offer {
                Offer::FlatOut => 1024u64,
                Offer::Rate(rate) => {
                    // Records due by now, at most one 10 ms slice ahead.
                    let due = (started.elapsed().as_secs_f64() * rate) as u64;
                    if due <= seq {
                        tokio::time::sleep(Duration::from_millis(1)).await;
                        continue;
                    }
                    (due - seq).min((rate / 100.0).ceil() as u64 * 4).max(1)
                }
            }
            .min(total - seq);
            let stamp = |s: u64| match offer {
                Offer::FlatOut => now_nanos(),
                Offer::Rate(rate) => started_nanos + (s as f64 * 1e9 / rate) as u64,
            };
            let records: Vec<OutRecord> = (seq..seq + chunk).map(|s| OutRecord::new(make(s, stamp(s)))).collect();
            sink.send_spread(&route, records).await?;
            seq += chunk;
            sent.store(seq, Ordering::Relaxed);
        }
        let took = started.elapsed();
        sink.shutdown().await;
        Ok(took)
    })?
}

/// What a [`Reader::read`] saw.
pub struct Output {
    /// Records read.
    pub records: u64,
    /// End-to-end latency in µs of every record whose stamp was read.
    pub latency: Histogram<u64>,
    /// When the first record arrived.
    pub first: Option<Instant>,
    /// When the last record arrived.
    pub last: Option<Instant>,
}

/// The name of the output reader's runtime thread.
pub const READER_THREAD_NAME: &str = "bench-reader";

/// How long [`Reader::start`] waits for its consumer to be given the
/// output topic's queues.
const READER_ASSIGNMENT_WAIT: Duration = Duration::from_secs(30);

/// A consumer of a run's output topic, on a runtime thread of its own
/// ([`READER_THREAD_NAME`]): neither the producer nor the job delays the
/// moment a record is seen. Start it before the job and the load, so the
/// first output is seen when it arrives, not when the reader is ready.
pub struct Reader {
    io: Arc<IoRuntime>,
    source: Option<Source>,
}

impl Reader {
    /// Creates `topic` (8 queues) if missing and starts reading it from its
    /// start with a fresh group; returns once the group holds the topic's
    /// queues.
    ///
    /// # Errors
    ///
    /// The consumer's start errors, or no queue assigned within 30 s.
    pub fn start(client: &ClientConfig, topic: &str) -> rocketmq_streams_io::Result<Reader> {
        let io = IoRuntime::named(READER_THREAD_NAME, 1)?;
        let (io2, client, topic) = (io.clone(), client.clone(), topic.to_string());
        let source = io.block_on(async move {
            ensure_topic(&io2, &client, &topic, 8).await?;
            let mut config = SourceConfig::new(
                format!("bench-reader-{}-{}", std::process::id(), now_nanos()),
                [topic.clone()],
            );
            config.consume_from = ConsumeFrom::First;
            let source = Source::start(io2, &client, config).await?;
            let deadline = Instant::now() + READER_ASSIGNMENT_WAIT;
            while source.assignment().await?.is_empty() {
                if Instant::now() >= deadline {
                    source.shutdown().await;
                    return Err(rocketmq_streams_io::Error::permanent(
                        rocketmq_streams_io::Operation::Source,
                        format!("the output reader of {topic} got no queue in {READER_ASSIGNMENT_WAIT:?}"),
                    ));
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Ok(source)
        })??;
        Ok(Reader {
            io,
            source: Some(source),
        })
    }

    /// Reads until outputs worth `expected` records arrived or `limit`
    /// passed. `weigh` gives each output its stamp (its latency is
    /// recorded) and how many input records it accounts for: 1 for a
    /// record-per-record output, the rise of a count for an
    /// `Emit::OnCommit` word count. `seen` counts as records come.
    ///
    /// # Errors
    ///
    /// The consumer's poll errors.
    pub fn read(
        &mut self,
        expected: u64,
        limit: Duration,
        mut weigh: impl FnMut(&[u8]) -> (Option<u64>, u64) + Send + 'static,
        seen: Arc<AtomicU64>,
    ) -> rocketmq_streams_io::Result<Output> {
        let source = self.source.take().ok_or_else(|| {
            rocketmq_streams_io::Error::permanent(
                rocketmq_streams_io::Operation::Source,
                "the reader's consumer failed in an earlier read",
            )
        })?;
        let (source, out) = self.io.block_on(async move {
            let out = async {
                let mut latency = Histogram::<u64>::new_with_bounds(1, 3_600_000_000, 3).map_err(|e| {
                    rocketmq_streams_io::Error::permanent(
                        rocketmq_streams_io::Operation::Source,
                        format!("histogram: {e}"),
                    )
                })?;
                let (mut records, mut first, mut last) = (0u64, None, None);
                let deadline = Instant::now() + limit;
                while records < expected && Instant::now() < deadline {
                    for batch in source.poll().await? {
                        let now = now_nanos();
                        for r in &batch.records {
                            let (stamp, weight) = weigh(&r.body);
                            if let Some(stamp) = stamp {
                                let _ = latency.record((now.saturating_sub(stamp) / 1_000).max(1));
                            }
                            records += weight;
                        }
                        first = first.or(Some(Instant::now()));
                        last = Some(Instant::now());
                    }
                    seen.store(records, Ordering::Relaxed);
                }
                Ok(Output {
                    records,
                    latency,
                    first,
                    last,
                })
            }
            .await;
            (source, out)
        })?;
        self.source = Some(source);
        out
    }
}

impl Drop for Reader {
    /// Stops the consumer; this waits about one long poll, so drop a
    /// reader after the run's cost is read.
    fn drop(&mut self) {
        if let Some(source) = self.source.take() {
            let _ = self.io.block_on(source.shutdown());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_binary_record_carries_its_stamp_and_size() {
        let b = stamped_binary(42, 123_456, 100);
        assert_eq!(b.len(), 100);
        assert_eq!(binary_stamp(&b), Some((123_456, 42)));
        assert_eq!(binary_stamp(b"short"), None);
    }

    #[test]
    fn a_line_leads_with_its_stamp_and_has_the_words_asked_for() {
        let line = stamped_line(7, 99, 10, 1000);
        let text = std::str::from_utf8(&line).expect("utf8");
        let mut parts = text.split(' ');
        assert_eq!(parts.next(), Some("@99"));
        assert_eq!(parts.clone().count(), 10);
        assert!(parts.all(|w| w.starts_with('w') && w[1..].parse::<u64>().is_ok_and(|n| n < 1000)));
    }
}
