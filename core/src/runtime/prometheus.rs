//! The Prometheus endpoint ([`RuntimeConfig::metrics_addr`](super::RuntimeConfig::metrics_addr)):
//! `GET /metrics` on the job's I/O runtime serves the job's metrics in the
//! Prometheus text format, encoded by `prometheus-client` from a fresh
//! [`JobMetrics`] snapshot at each scrape (nothing is kept twice).
//!
//! | metric | type | labels |
//! | --- | --- | --- |
//! | `rocketmq_streams_records_in_total`, `_records_out_total`, `_skipped_total`, `_dead_lettered_total`, `_late_total`, `_shuffled_total`, `_duplicates_total` | counter | job, shard |
//! | `rocketmq_streams_checkpoints_total`, `rocketmq_streams_restored_total` (state changes applied while restoring: restore progress), `rocketmq_streams_fenced_total` (an owner found its queue claimed by a newer one) | counter | job, shard |
//! | `rocketmq_streams_join_records`, `rocketmq_streams_records_in_flight` | gauge | job, shard |
//! | `rocketmq_streams_lag` (messages), `rocketmq_streams_committed_offset` | gauge | job, queue |
//! | `rocketmq_streams_dispatch_behind_bytes` | gauge | job |
//! | `rocketmq_streams_processing_seconds`, `_end_to_end_seconds`, `_checkpoint_seconds` | histogram | job, shard |
//!
//! The histograms come from the shards' `hdrhistogram`s (see
//! [`Latencies`](super::metrics::Latencies)), published every commit
//! interval, on fixed bucket bounds from 100 µs to 60 s.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use hdrhistogram::Histogram;
use http_body_util::Full;
use hyper::{Request, Response, StatusCode};
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, NoLabelSet};
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;

use super::metrics::{JobMetrics, ShardMetrics};

/// Where a scrape's snapshot comes from.
pub(crate) type Snapshot = Arc<dyn Fn() -> JobMetrics + Send + Sync>;

/// Bucket upper bounds of the latency histograms, in seconds.
const BUCKETS: [f64; 18] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
];

/// Encodes the job's metrics at each scrape.
struct JobCollector {
    job: String,
    snapshot: Snapshot,
}

impl std::fmt::Debug for JobCollector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JobCollector").field("job", &self.job).finish()
    }
}

type ShardCounter = (&'static str, &'static str, fn(&ShardMetrics) -> u64);

const SHARD_COUNTERS: [ShardCounter; 10] = [
    (
        "records_in",
        "Records consumed (a shuffle frame counts its records).",
        |s| s.records_in,
    ),
    ("records_out", "Records written to sink topics (acknowledged).", |s| {
        s.records_out
    }),
    ("skipped", "Failed records skipped (error policy Skip).", |s| s.skipped),
    ("dead_lettered", "Failed records sent to the dead-letter topic.", |s| {
        s.dead_lettered
    }),
    ("late", "Records late for every window they belong to.", |s| s.late),
    (
        "shuffled",
        "Records written to the shuffle topic (acknowledged).",
        |s| s.shuffled,
    ),
    (
        "duplicates",
        "Shuffled records dropped as replays already in the state.",
        |s| s.duplicates,
    ),
    ("checkpoints", "State checkpoints completed.", |s| s.checkpoints),
    (
        "fenced",
        "Times an owner found its queue claimed by a newer owner.",
        |s| s.fenced,
    ),
    (
        "restored",
        "State changes applied while restoring queues from the state topic.",
        |s| s.restored,
    ),
];

const SHARD_GAUGES: [ShardCounter; 2] = [
    ("join_records", "Records kept in join state now.", |s| s.join_records),
    (
        "records_in_flight",
        "Records given to the shard and not yet processed (at most max_batches_in_flight x poll_batch).",
        |s| s.records_in_flight,
    ),
];

type ShardHistogram = (&'static str, &'static str, fn(&ShardMetrics) -> &Histogram<u64>);

const SHARD_HISTOGRAMS: [ShardHistogram; 3] = [
    (
        "processing_seconds",
        "Processing one batch, until its outputs are acknowledged.",
        |s| &s.latencies.processing,
    ),
    (
        "end_to_end_seconds",
        "From a message's born time to the acknowledgement of its batch's outputs.",
        |s| &s.latencies.end_to_end,
    ),
    ("checkpoint_seconds", "One checkpoint of a keyed queue.", |s| {
        &s.latencies.checkpoint
    }),
];

impl Collector for JobCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let m = (self.snapshot)();
        let job = self.job.as_str();
        let shard_labels = |s: &ShardMetrics| [("job", job.to_string()), ("shard", s.shard.0.to_string())];
        for (name, help, get) in SHARD_COUNTERS {
            let mut family = encoder.encode_descriptor(name, help, None, MetricType::Counter)?;
            for s in &m.shards {
                family
                    .encode_family(&shard_labels(s))?
                    .encode_counter::<NoLabelSet, _, u64>(&get(s), None)?;
            }
        }
        for (name, help, get) in SHARD_GAUGES {
            let mut family = encoder.encode_descriptor(name, help, None, MetricType::Gauge)?;
            for s in &m.shards {
                family.encode_family(&shard_labels(s))?.encode_gauge(&get(s))?;
            }
        }
        let mut family = encoder.encode_descriptor(
            "lag",
            "Messages not yet committed per owned queue (a shuffle message is a frame of records).",
            None,
            MetricType::Gauge,
        )?;
        for (queue, lag) in &m.lag {
            let labels = [("job", job.to_string()), ("queue", queue.to_string())];
            family.encode_family(&labels)?.encode_gauge(lag)?;
        }
        let mut family = encoder.encode_descriptor(
            "committed_offset",
            "The last committed offset per queue.",
            None,
            MetricType::Gauge,
        )?;
        for (queue, offset) in &m.committed {
            let labels = [("job", job.to_string()), ("queue", queue.to_string())];
            family.encode_family(&labels)?.encode_gauge(&offset.0)?;
        }
        let mut family = encoder.encode_descriptor(
            "dispatch_behind_bytes",
            "Bytes the brokers stored but had not indexed at the last lag refresh.",
            None,
            MetricType::Gauge,
        )?;
        family
            .encode_family(&[("job", job.to_string())])?
            .encode_gauge(&m.dispatch_behind)?;
        for (name, help, get) in SHARD_HISTOGRAMS {
            let mut family = encoder.encode_descriptor(name, help, None, MetricType::Histogram)?;
            for s in &m.shards {
                let (sum, count, buckets) = buckets(get(s));
                family
                    .encode_family(&shard_labels(s))?
                    .encode_histogram::<NoLabelSet>(sum, count, &buckets, None)?;
            }
        }
        Ok(())
    }
}

/// A histogram of µs as Prometheus buckets in seconds: the sum, the count,
/// and each bucket's own count (the encoder adds them up), `+Inf` last.
fn buckets(h: &Histogram<u64>) -> (f64, u64, Vec<(f64, u64)>) {
    let mut out = Vec::with_capacity(BUCKETS.len() + 1);
    let mut below = 0u64;
    for bound in BUCKETS {
        let micros = (bound * 1e6) as u64;
        let upto = h.count_between(0, micros);
        out.push((bound, upto.saturating_sub(below)));
        below = upto.max(below);
    }
    out.push((f64::INFINITY, h.len().saturating_sub(below)));
    let sum = h
        .iter_recorded()
        .map(|v| v.value_iterated_to() as f64 * v.count_at_value() as f64)
        .sum::<f64>()
        / 1e6;
    (sum, h.len(), out)
}

/// The registry of one job: its collector under the `rocketmq_streams` prefix.
fn registry(job: String, snapshot: Snapshot) -> Registry {
    let mut registry = Registry::with_prefix("rocketmq_streams");
    registry.register_collector(Box::new(JobCollector { job, snapshot }));
    registry
}

/// The text exposition of the job's metrics now.
#[cfg(test)]
pub(crate) fn render(job: &str, snapshot: Snapshot) -> Result<String, std::fmt::Error> {
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, &registry(job.to_string(), snapshot))?;
    Ok(text)
}

/// Serves `GET /metrics` on `listener` until the task is dropped with its
/// runtime or aborted.
pub(crate) async fn serve(listener: tokio::net::TcpListener, job: String, snapshot: Snapshot) {
    let registry = Arc::new(registry(job, snapshot));
    loop {
        let (stream, _) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(error) => {
                tracing::warn!(%error, "metrics endpoint: accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                continue;
            }
        };
        let registry = registry.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |request: Request<hyper::body::Incoming>| {
                let registry = registry.clone();
                async move { Ok::<_, Infallible>(respond(&request, &registry)) }
            });
            let io = hyper_util::rt::TokioIo::new(stream);
            if let Err(error) = hyper::server::conn::http1::Builder::new()
                .serve_connection(io, service)
                .await
            {
                tracing::debug!(%error, "metrics endpoint: connection ended");
            }
        });
    }
}

fn respond(request: &Request<hyper::body::Incoming>, registry: &Registry) -> Response<Full<Bytes>> {
    let reply = |status: StatusCode, body: String| {
        let mut response = Response::new(Full::new(Bytes::from(body)));
        *response.status_mut() = status;
        response
    };
    if request.method() != hyper::Method::GET || request.uri().path() != "/metrics" {
        return reply(StatusCode::NOT_FOUND, "GET /metrics\n".into());
    }
    let mut text = String::new();
    match prometheus_client::encoding::text::encode(&mut text, registry) {
        Ok(()) => {
            let mut response = reply(StatusCode::OK, text);
            response.headers_mut().insert(
                hyper::header::CONTENT_TYPE,
                hyper::header::HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
            );
            response
        }
        Err(_) => reply(StatusCode::INTERNAL_SERVER_ERROR, "encoding failed\n".into()),
    }
}

/// Binds `addr` for the endpoint.
///
/// # Errors
///
/// The bind's error (address in use, no permission).
pub(crate) async fn bind(addr: SocketAddr) -> std::io::Result<tokio::net::TcpListener> {
    tokio::net::TcpListener::bind(addr).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::metrics::Latencies;
    use crate::ShardId;

    #[test]
    fn the_exposition_names_every_family_with_its_labels() {
        let mut shard = ShardMetrics {
            shard: ShardId(1),
            thread: None,
            records_in: 42,
            records_out: 40,
            skipped: 1,
            dead_lettered: 0,
            batches: 3,
            shuffled: 0,
            duplicates: 0,
            late: 0,
            restored: 5,
            checkpoints: 2,
            fenced: 0,
            join_records: 0,
            records_in_flight: 1024,
            queues: Vec::new(),
            latencies: Latencies::default(),
        };
        Latencies::record(&mut shard.latencies.processing, 300);
        Latencies::record(&mut shard.latencies.processing, 2_000_000);
        let mut metrics = JobMetrics {
            shards: vec![shard],
            ..JobMetrics::default()
        };
        metrics.lag.insert(rocketmq_streams_io::QueueId::new("in", "b", 3), 7);
        let text = render("job-a", Arc::new(move || metrics.clone())).expect("encodes");
        for line in [
            "rocketmq_streams_records_in_total{job=\"job-a\",shard=\"1\"} 42",
            "rocketmq_streams_skipped_total{job=\"job-a\",shard=\"1\"} 1",
            "rocketmq_streams_restored_total{job=\"job-a\",shard=\"1\"} 5",
            "rocketmq_streams_records_in_flight{job=\"job-a\",shard=\"1\"} 1024",
            "rocketmq_streams_lag{job=\"job-a\",queue=\"in@b#3\"} 7",
            "rocketmq_streams_processing_seconds_count{job=\"job-a\",shard=\"1\"} 2",
            "rocketmq_streams_processing_seconds_bucket{le=\"0.0005\",job=\"job-a\",shard=\"1\"} 1",
            "rocketmq_streams_processing_seconds_bucket{le=\"2.5\",job=\"job-a\",shard=\"1\"} 2",
            "rocketmq_streams_processing_seconds_bucket{le=\"+Inf\",job=\"job-a\",shard=\"1\"} 2",
        ] {
            assert!(text.contains(line), "{line} missing from:\n{text}");
        }
    }
}
