//! `bench soak`: the word count on a broker at a share of its flat-out rate
//! for a long time, sampled as it goes, to show that memory stays flat and
//! the lag bounded.
//!
//! ```text
//!  calibrate: wordcount flat out, --repeats times ──► median lines/s
//!  soak:      producer at --percent of it for --minutes ──► job ──► reader
//!             every 10 s a Sample { t_s, rss_mib, broker_rss_mib, store_disk_used_pct,
//!                                     lag, records_per_second, p99_us, offering }
//! ```
//!
//! The broker runs in a process of its own by default ([`BrokerProcess`]:
//! this binary again, as `broker-process`), so the RSS sampled is the job's
//! (with the load producer and the output reader, which hold no growing
//! state), not the broker's store: a broker maps its commit log and
//! indexes into memory, and its resident pages grow with what it stores.
//! The broker's own RSS is sampled beside it.
//!
//! The run counts only if every output came: the soak ends when all the
//! offered lines' outputs arrived, and fails if they did not within
//! [`Options::limit`] after the offering ended, or if the job stopped.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use rocketmq_streams_io::{ClientConfig, IoRuntime};

use crate::broker::{Ctx, Offered, Options, Scenario};
use crate::machine::rss_kib;
use crate::progress::Progress;
use crate::report::{Run, Sample, Spread, SOAK_SETTLED_S};

/// How often a soak samples, by default.
pub const SAMPLE_EVERY: Duration = Duration::from_secs(10);

/// The argument that makes the harness binary run a broker
/// ([`BrokerProcess`]).
pub const BROKER_PROCESS: &str = "broker-process";

/// How long [`BrokerProcess::start`] waits for the broker to be ready.
const BROKER_READY_WAIT: Duration = Duration::from_secs(120);

/// How long a soak runs, how hard, and how often it samples.
#[derive(Debug, Clone, Copy)]
pub struct SoakOptions {
    /// How long records are offered. Default: 10 minutes.
    pub duration: Duration,
    /// The offered rate, in percent of the median flat-out rate. Default: 50.
    pub percent: f64,
    /// Time between samples. Default: [`SAMPLE_EVERY`].
    pub every: Duration,
}

impl Default for SoakOptions {
    fn default() -> Self {
        SoakOptions {
            duration: Duration::from_secs(600),
            percent: 50.0,
            every: SAMPLE_EVERY,
        }
    }
}

/// A name server and broker in a child process: the running binary started
/// again with [`BROKER_PROCESS`] (which calls
/// `rocketmq_streams_io::standalone_main`), on a store of its own that is
/// removed with it. Killed when dropped.
pub struct BrokerProcess {
    child: Child,
    store: tempfile::TempDir,
    /// The name server's address it printed.
    pub namesrv_addr: String,
}

impl BrokerProcess {
    /// Starts it and waits (at most 120 s) until it printed its name
    /// server's address. Its log (stderr) goes to `log`; its later output
    /// is read and dropped, so it never writes to a closed pipe.
    ///
    /// # Errors
    ///
    /// As text: the binary or the store cannot be found or made, or the
    /// process ended, or was not ready in time.
    pub fn start(log: &std::path::Path) -> Result<BrokerProcess, String> {
        let exe = std::env::current_exe().map_err(|e| format!("the harness's own path: {e}"))?;
        let store = tempfile::Builder::new()
            .prefix("rocketmq-streams-bench-broker")
            .tempdir()
            .map_err(|e| format!("the broker's store: {e}"))?;
        let mut child = Command::new(exe)
            .arg(BROKER_PROCESS)
            .arg("--store")
            .arg(store.path())
            .stdout(Stdio::piped())
            .stderr(
                log.parent()
                    .map_or(Ok(()), std::fs::create_dir_all)
                    .and_then(|()| std::fs::File::create(log))
                    .map_err(|e| format!("the broker's log {}: {e}", log.display()))?,
            )
            .spawn()
            .map_err(|e| format!("starting the broker process: {e}"))?;
        let stdout = child.stdout.take().ok_or("the broker process's stdout")?;
        let (ready_tx, ready) = std::sync::mpsc::channel();
        let reading = std::thread::Builder::new()
            .name("bench-broker-out".into())
            .spawn(move || {
                for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                    if let Some(addr) = line.strip_prefix("ROCKETMQ_NAMESRV_ADDR=") {
                        let _ = ready_tx.send(addr.to_string());
                    }
                }
            });
        let namesrv_addr = match reading.map(|_| ready.recv_timeout(BROKER_READY_WAIT)) {
            Ok(Ok(addr)) => addr,
            failed => {
                let _ = child.kill();
                return Err(format!(
                    "the broker process was not ready ({failed:?}): {:?}",
                    child.wait()
                ));
            }
        };
        Ok(BrokerProcess {
            child,
            store,
            namesrv_addr,
        })
    }

    /// Its process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The directory of its store.
    pub fn store(&self) -> &Path {
        self.store.path()
    }
}

impl Drop for BrokerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Calibrates (the word count flat out, [`Options::repeats`] times), then
/// soaks at `soak.percent` of the median flat-out rate for
/// `soak.duration`. Returns the flat-out runs and the soak's run, and the
/// soak's samples. `broker` names the broker's process and store, if they
/// are on this machine: its memory and its disk are sampled too, and a
/// soak whose store would fill that disk ends as soon as its growth is
/// measured, not when the broker starts refusing writes.
///
/// # Errors
///
/// What failed, as text: a run that could not start or finish, a soak
/// whose outputs did not all arrive, or one whose store would not fit.
pub fn run(
    io: &Arc<IoRuntime>,
    client: &ClientConfig,
    options: &Options,
    soak: &SoakOptions,
    broker: Option<LocalBroker<'_>>,
) -> Result<(Vec<Run>, Vec<Sample>), String> {
    let ctx = Ctx::new(io, client, options);
    let mut runs = Vec::new();
    for _ in 0..options.repeats.max(1) {
        runs.push(ctx.flat_out(Scenario::WordCount)?);
    }
    let median = Spread::of(runs.iter().map(Run::throughput)).map_or(0.0, |s| s.median);
    let rate = median * soak.percent / 100.0;
    if rate < 1.0 {
        return Err(format!(
            "{}% of {median:.0} lines/s is under one line a second",
            soak.percent
        ));
    }
    let (run, samples) = soak_at(&ctx, rate, soak, broker)?;
    runs.push(run);
    Ok((runs, samples))
}

/// The soak itself: a job offered `rate` lines a second for
/// `soak.duration`, sampled every `soak.every` until every output came.
fn soak_at(
    ctx: &Ctx<'_>,
    rate: f64,
    soak: &SoakOptions,
    broker: Option<LocalBroker<'_>>,
) -> Result<(Run, Vec<Sample>), String> {
    let scenario = Scenario::WordCount;
    let label = format!("wordcount soak at {}%", soak.percent);
    let Offered {
        n,
        mut reader,
        engine,
        meter,
        started,
        producer,
    } = ctx.offer(scenario, &label, rate, soak.duration)?;
    let mut producer = Some(producer);
    let mut took = None;
    let expected = ctx.expected(scenario, n);
    // One weighing across the windows (an `Emit::OnCommit` count's weight
    // depends on the word's previous update).
    let weigh = Arc::new(Mutex::new(ctx.weigh(scenario)));
    let mut latency = Histogram::<u64>::new_with_bounds(1, 3_600_000_000, 3).map_err(|e| format!("histogram: {e}"))?;
    let (mut records, mut last) = (0u64, None);
    let mut samples = Vec::new();
    let seen = Arc::new(AtomicU64::new(0));
    let bar = Progress::start(&label, seen.clone(), expected);
    let deadline = started + soak.duration + ctx.options.limit;
    let mut disk = DiskWatch::default();
    let ended = loop {
        let window = Instant::now();
        let w = weigh.clone();
        let out = match reader.read(
            expected - records,
            soak.every,
            move |body: &[u8]| (w.lock().unwrap_or_else(|p| p.into_inner()))(body),
            Arc::default(),
        ) {
            Ok(out) => out,
            Err(e) => break Err(e.to_string()),
        };
        records += out.records;
        last = out.last.or(last);
        if let Err(e) = latency.add(&out.latency) {
            break Err(format!("merging histograms: {e}"));
        }
        // The producer's outcome, once it is done offering.
        if producer.as_ref().is_some_and(std::thread::JoinHandle::is_finished) {
            match producer.take().map(std::thread::JoinHandle::join) {
                Some(Ok(Ok(t))) => took = Some(t),
                Some(Ok(Err(e))) => break Err(format!("{label}: the producer failed: {e}")),
                _ => break Err(format!("{label}: the producer thread panicked")),
            }
        }
        let sample = Sample {
            t_s: started.elapsed().as_secs_f64(),
            rss_mib: rss_kib(None) as f64 / 1024.0,
            broker_rss_mib: broker.map(|b| rss_kib(Some(b.pid)) as f64 / 1024.0),
            store_disk_used_pct: broker
                .and_then(|b| b.store)
                .and_then(rocketmq_streams_io::disk_used_ratio)
                .map(|r| r * 100.0),
            lag: engine.job().map_or(0, |j| j.metrics().total_lag()),
            records_per_second: out.records as f64 / window.elapsed().as_secs_f64().max(1e-3),
            p99_us: if out.latency.is_empty() {
                0
            } else {
                out.latency.value_at_quantile(0.99)
            },
            offering: took.is_none(),
        };
        let sample_t = sample.t_s;
        seen.store(records, Ordering::Relaxed);
        eprintln!(
            "t={:>6.0}s rss={:>7.1} MiB broker={:>7.1} MiB disk={:>5.1}% lag={:>7} out/s={:>9.0} p99={:>8.1} ms ({records}/{expected})",
            sample.t_s,
            sample.rss_mib,
            sample.broker_rss_mib.unwrap_or(0.0),
            sample.store_disk_used_pct.unwrap_or(0.0),
            sample.lag,
            sample.records_per_second,
            sample.p99_us as f64 / 1e3
        );
        samples.push(sample);
        if records >= expected {
            break Ok(());
        }
        if let Some(room) = broker
            .and_then(|b| b.store)
            .and_then(rocketmq_streams_io::disk_room_before_full)
        {
            let left = (started + soak.duration).saturating_duration_since(Instant::now());
            if let Err(e) = disk.check(sample_t, room, left.as_secs_f64()) {
                break Err(format!("{label}: {e}"));
            }
        }
        if engine.job().is_some_and(rocketmq_streams::StreamRuntime::has_stopped) {
            break Err(format!("{label}: the job stopped"));
        }
        if Instant::now() >= deadline {
            break Err(format!(
                "{label}: only {records} of {expected} output records arrived in time"
            ));
        }
    };
    let cost = meter.cost();
    drop(bar);
    let stopped = engine.stop();
    // Stops its consumer, about one long poll: after the cost is read.
    drop(reader);
    // On a failure the producer is left to the process's end (it would
    // offer its whole time first): the failure is what is reported.
    ended?;
    stopped?;
    let took = match (took, producer) {
        (Some(t), _) => t,
        (None, Some(p)) => p.join().map_err(|_| "the producer thread panicked".to_string())??,
        (None, None) => soak.duration,
    };
    Ok((
        Run {
            label,
            offered_rate: Some(n as f64 / took.as_secs_f64().max(soak.duration.as_secs_f64())),
            records: n,
            seconds: last.map_or(0.0, |t: Instant| t.duration_since(started).as_secs_f64()),
            latency: Some(latency),
            cost,
        },
        samples,
    ))
}

/// The broker a soak watches, when it runs on this machine.
#[derive(Debug, Clone, Copy)]
pub struct LocalBroker<'a> {
    /// Its process, whose RSS is sampled.
    pub pid: u32,
    /// Its store, whose disk is sampled and checked for room; `None` when
    /// not known.
    pub store: Option<&'a Path>,
}

/// Watches the room left on the broker store's disk while a soak offers
/// load, and ends early a soak that would fill it: RocketMQ refuses every
/// write once its disk is 90% used by its own measure
/// ([`rocketmq_streams_io::disk_used_ratio`]), which on a disk that
/// reserves blocks comes long before `df` shows it full.
///
/// It measures from the first sample after [`SOAK_SETTLED_S`] (the first
/// minute allocates fixed files: the index, each queue's consume queue)
/// and projects once it has [`DiskWatch::MEASURE_S`] of growth: files the
/// store allocates in steps (a 400 MiB index per 20 M messages) then weigh
/// at most about a fifth of the rate.
#[derive(Debug, Default)]
struct DiskWatch {
    /// The first measured (seconds, bytes of room).
    from: Option<(f64, u64)>,
}

impl DiskWatch {
    /// Seconds of growth measured before the projection is trusted.
    const MEASURE_S: f64 = 300.0;

    /// Takes the `room` left (bytes) at `t_s` with `left_s` seconds of
    /// offering still to come.
    ///
    /// # Errors
    ///
    /// The projection, as text, when the store would pass 90% of its disk
    /// before the offering ends.
    fn check(&mut self, t_s: f64, room: u64, left_s: f64) -> Result<(), String> {
        if t_s < SOAK_SETTLED_S {
            return Ok(());
        }
        let Some((t0, room0)) = self.from else {
            self.from = Some((t_s, room));
            return Ok(());
        };
        let span = t_s - t0;
        if span < Self::MEASURE_S {
            return Ok(());
        }
        let rate = room0.saturating_sub(room) as f64 / span;
        let need = rate * left_s;
        if need <= room as f64 {
            return Ok(());
        }
        const MIB: f64 = 1024.0 * 1024.0;
        Err(format!(
            "the broker's store grows {:.1} MiB/s (over the last {span:.0} s): the {left_s:.0} s still to offer need \
             {:.1} GiB, but only {:.1} GiB can be written before its disk is 90% used by RocketMQ's measure \
             (1 − available ÷ total), past which the broker refuses every write; lower --percent or --minutes, \
             or free the disk",
            rate / MIB,
            need / MIB / 1024.0,
            room as f64 / MIB / 1024.0
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A short soak end to end on a real (embedded) broker: calibrated,
    /// sampled at every interval, every output counted.
    #[test]
    fn a_short_soak_samples_every_interval_and_counts_every_output() {
        let (_mq, client, io, small) = crate::broker::small_setup();
        let options = Options { repeats: 1, ..small };
        let soak = SoakOptions {
            duration: Duration::from_secs(4),
            percent: 20.0,
            every: Duration::from_secs(1),
        };
        let here = LocalBroker {
            pid: std::process::id(),
            store: None,
        };
        let (runs, samples) = run(&io, &client, &options, &soak, Some(here)).expect("the soak completes");
        let labels: Vec<&str> = runs.iter().map(|r| r.label.as_str()).collect();
        assert_eq!(labels, ["wordcount flat out", "wordcount soak at 20%"]);
        let soaked = &runs[1];
        // Every word of every line offered came out with its stamp.
        let latency = soaked.latency.as_ref().expect("the soak measures latency");
        assert_eq!(latency.len(), soaked.records * 5);
        // A sample a second while the 4 s of load lasted, at least.
        assert!(samples.len() >= 4, "{samples:?}");
        assert!(samples.windows(2).all(|w| w[0].t_s < w[1].t_s), "{samples:?}");
        assert!(samples
            .iter()
            .all(|s| s.rss_mib > 0.0 && s.broker_rss_mib.is_some_and(|b| b > 0.0)));
        assert!(samples.iter().any(|s| s.records_per_second > 0.0 && s.p99_us > 0));
    }

    #[test]
    fn a_soak_that_would_fill_the_disk_ends_once_its_growth_is_measured() {
        const GIB: u64 = 1 << 30;
        let mut disk = DiskWatch::default();
        // The first minute is not measured, however fast the store grows.
        disk.check(10.0, 100 * GIB, 3_000.0).expect("not measured yet");
        disk.check(50.0, 10 * GIB, 3_000.0).expect("not measured yet");
        // Measured from 60 s on: 1 GiB a minute, trusted after 300 s.
        disk.check(60.0, 40 * GIB, 3_000.0).expect("the start");
        disk.check(240.0, 37 * GIB, 2_800.0).expect("not trusted yet");
        // 5 GiB in 300 s, 2,000 s more: 33 GiB needed, 35 left.
        disk.check(360.0, 35 * GIB, 2_000.0).expect("it fits");
        // 10 GiB in 600 s, 2,000 s more: 33 GiB needed, 30 left.
        let err = disk.check(660.0, 30 * GIB, 2_000.0).expect_err("it does not fit");
        assert!(
            err.contains("lower --percent or --minutes") && err.contains("33.3 GiB"),
            "{err}"
        );
        // A store that shrank (files deleted) projects no growth.
        let mut shrinking = DiskWatch::default();
        shrinking.check(60.0, GIB, 3_000.0).expect("the start");
        shrinking.check(400.0, 2 * GIB, 3_000.0).expect("no growth");
    }
}
