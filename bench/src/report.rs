//! A scenario's figures, as a table for people (Markdown, so it pastes into
//! `tuning.md`), JSON for tools and an SVG latency-percentile plot
//! (`plotters`); a soak's samples over time as a second plot.
//!
//! A report holds every run; runs of the same label are repeats of one
//! measurement, and each figure of the table is their median with its min
//! and max.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use hdrhistogram::Histogram;
use serde_json::json;

use crate::machine::{Cost, Machine, ThreadClass};

/// One measured run of a scenario (flat out, or at one offered rate).
#[derive(Debug, Clone)]
pub struct Run {
    /// What ran: "pipe-baseline flat out", "stateless at 50%", ... Repeats
    /// of a measurement share their label.
    pub label: String,
    /// Offered records per second, `None` for flat out.
    pub offered_rate: Option<f64>,
    /// Input records offered (and all processed: a run whose output falls
    /// short is an error, not a figure). Throughput counts these.
    pub records: u64,
    /// Seconds from the first record out to the last one out (flat out),
    /// or from the first record offered to the last one out (rated).
    pub seconds: f64,
    /// End-to-end latency in µs (produce stamp → the reader's poll), if
    /// measured.
    pub latency: Option<Histogram<u64>>,
    /// CPU and memory the run took.
    pub cost: Cost,
}

impl Run {
    /// Records per second.
    pub fn throughput(&self) -> f64 {
        if self.seconds > 0.0 {
            self.records as f64 / self.seconds
        } else {
            0.0
        }
    }

    fn per_million(&self, seconds: f64) -> f64 {
        if self.records > 0 {
            seconds * 1e6 / self.records as f64
        } else {
            0.0
        }
    }

    /// CPU seconds per million records, the whole process.
    pub fn cpu_per_million(&self) -> f64 {
        self.per_million(self.cost.cpu_seconds)
    }

    /// CPU seconds per million records of the job's threads alone.
    pub fn job_cpu_per_million(&self) -> f64 {
        self.per_million(self.cost.cpu_by_class.get(&ThreadClass::Job).copied().unwrap_or(0.0))
    }

    fn percentile_us(&self, q: f64) -> Option<f64> {
        self.latency
            .as_ref()
            .filter(|h| !h.is_empty())
            .map(|h| h.value_at_quantile(q) as f64)
    }
}

/// The median of repeated measurements, with their min and max.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Spread {
    /// The median (the mean of the middle two for an even count).
    pub median: f64,
    /// The least.
    pub min: f64,
    /// The greatest.
    pub max: f64,
    /// How many.
    pub n: usize,
}

impl Spread {
    /// The spread of `values`; `None` if there are none.
    pub fn of(values: impl IntoIterator<Item = f64>) -> Option<Spread> {
        let mut v: Vec<f64> = values.into_iter().filter(|x| x.is_finite()).collect();
        if v.is_empty() {
            return None;
        }
        v.sort_by(f64::total_cmp);
        let n = v.len();
        let median = if n % 2 == 1 {
            v[n / 2]
        } else {
            (v[n / 2 - 1] + v[n / 2]) / 2.0
        };
        Some(Spread {
            median,
            min: v[0],
            max: v[n - 1],
            n,
        })
    }

    /// "median (min–max)", each shown with `decimals` decimals; the median
    /// alone for a single value.
    pub fn show(&self, decimals: usize) -> String {
        if self.n > 1 {
            format!("{:.d$} ({:.d$}–{:.d$})", self.median, self.min, self.max, d = decimals)
        } else {
            format!("{:.d$}", self.median, d = decimals)
        }
    }

    /// The same spread with `f` applied to each figure (a change of unit).
    pub fn map(self, f: impl Fn(f64) -> f64) -> Spread {
        Spread {
            median: f(self.median),
            min: f(self.min),
            max: f(self.max),
            n: self.n,
        }
    }

    fn json(&self) -> serde_json::Value {
        json!({ "median": self.median, "min": self.min, "max": self.max, "n": self.n })
    }
}

/// The repeats of one label, summarised.
#[derive(Debug, Clone)]
pub struct Summary {
    /// The runs' label.
    pub label: String,
    /// Offered records per second (rated runs).
    pub offered_rate: Option<Spread>,
    /// Input records per second.
    pub throughput: Spread,
    /// Throughput ÷ the baseline's, repeat by repeat (flat-out runs).
    pub ratio: Option<Spread>,
    /// Latency percentiles in µs: p50, p99, p99.9, max.
    pub latency: Option<[Spread; 4]>,
    /// Job CPU seconds per million records.
    pub job_cpu_per_million: Spread,
    /// Whole-process CPU seconds per million records.
    pub cpu_per_million: Spread,
    /// Peak RSS, MiB.
    pub peak_rss_mib: Spread,
}

/// One sample of a soak ([`crate::soak`]): the job's state at `t_s`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Sample {
    /// Seconds since the load started.
    pub t_s: f64,
    /// Resident memory of the job's process (the engine, the load producer
    /// and the reader; not the broker, which runs in a process of its
    /// own), MiB.
    pub rss_mib: f64,
    /// The broker process's resident memory, MiB, when it runs here.
    pub broker_rss_mib: Option<f64>,
    /// How full the broker store's disk is, in percent, by RocketMQ's
    /// measure ([`rocketmq_streams_io::disk_used_ratio`]: it refuses writes
    /// past 90), when the store is on this machine.
    pub store_disk_used_pct: Option<f64>,
    /// The job's lag: messages not yet committed on the queues it owns
    /// (`JobMetrics::total_lag`; a shuffle message is a frame of records).
    pub lag: u64,
    /// Input records per second whose outputs the reader saw since the
    /// last sample (each output weighed as the input records it stands
    /// for: one word a count update with `Emit::OnUpdate`).
    pub records_per_second: f64,
    /// p99 end-to-end latency of those outputs, µs (0 when none came).
    pub p99_us: u64,
    /// Whether records were still being offered: the samples after are
    /// of the job draining what is left.
    pub offering: bool,
}

/// How a soak's samples after its first minute, while records were
/// offered, went: RSS, lag, throughput, latency.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SoakSummary {
    /// Samples after the first minute.
    pub samples: usize,
    /// Their RSS, MiB.
    pub rss_mib: Spread,
    /// The largest distance of an RSS sample from their median, in % of it.
    pub rss_deviation_percent: f64,
    /// Their lag.
    pub lag: Spread,
    /// Their throughput.
    pub records_per_second: Spread,
    /// Their p99 latency, µs (of the samples that saw outputs).
    pub p99_us: Spread,
}

impl SoakSummary {
    /// What settled once warmed up: the samples from `after_s` seconds on
    /// while records were offered; `None` if there are none.
    pub fn of(samples: &[Sample], after_s: f64) -> Option<SoakSummary> {
        let late: Vec<&Sample> = samples.iter().filter(|s| s.t_s >= after_s && s.offering).collect();
        let rss = Spread::of(late.iter().map(|s| s.rss_mib))?;
        let deviation = if rss.median > 0.0 {
            (rss.max - rss.median).max(rss.median - rss.min) / rss.median * 100.0
        } else {
            0.0
        };
        Some(SoakSummary {
            samples: late.len(),
            rss_mib: rss,
            rss_deviation_percent: deviation,
            lag: Spread::of(late.iter().map(|s| s.lag as f64))?,
            records_per_second: Spread::of(late.iter().map(|s| s.records_per_second))?,
            p99_us: Spread::of(late.iter().filter(|s| s.p99_us > 0).map(|s| s.p99_us as f64))?,
        })
    }
}

/// When a soak's summary starts: after its first minute.
pub const SOAK_SETTLED_S: f64 = 60.0;

/// The figures of one scenario, with what they were measured on.
#[derive(Debug, Clone)]
pub struct Report {
    /// The scenario's name.
    pub scenario: String,
    /// The command line that produced the report.
    pub command: String,
    /// Where it ran.
    pub machine: Machine,
    /// Settings that shape the figures (shards, message size, batches, ...).
    pub settings: Vec<(String, String)>,
    /// Every run, in the order they ran; repeats share a label.
    pub runs: Vec<Run>,
    /// The label of the runs the others are compared with, if any.
    pub baseline: Option<String>,
    /// A soak's samples over time (empty for other scenarios).
    pub samples: Vec<Sample>,
}

impl Report {
    /// The labels, in the order they first ran.
    fn labels(&self) -> Vec<&str> {
        let mut labels: Vec<&str> = Vec::new();
        for r in &self.runs {
            if !labels.contains(&r.label.as_str()) {
                labels.push(&r.label);
            }
        }
        labels
    }

    fn runs_of<'a>(&'a self, label: &'a str) -> impl Iterator<Item = &'a Run> + 'a {
        self.runs.iter().filter(move |r| r.label == label)
    }

    /// Each label's repeats, summarised, in the order they first ran.
    pub fn summaries(&self) -> Vec<Summary> {
        let baseline: Vec<f64> = self
            .baseline
            .as_deref()
            .map(|b| self.runs_of(b).map(Run::throughput).collect())
            .unwrap_or_default();
        self.labels()
            .into_iter()
            .filter_map(|label| {
                let runs: Vec<&Run> = self.runs_of(label).collect();
                let spread = |f: &dyn Fn(&Run) -> f64| Spread::of(runs.iter().map(|r| f(r)));
                let flat_out = runs.iter().all(|r| r.offered_rate.is_none());
                let ratio = if flat_out && !baseline.is_empty() {
                    // Repeat i of a scenario ran right after repeat i of the baseline.
                    Spread::of(
                        runs.iter()
                            .zip(&baseline)
                            .filter(|(_, &b)| b > 0.0)
                            .map(|(r, &b)| r.throughput() / b),
                    )
                } else {
                    None
                };
                let latency = [0.5, 0.99, 0.999, 1.0].map(|q| spread(&|r| r.percentile_us(q).unwrap_or(f64::NAN)));
                Some(Summary {
                    label: label.to_string(),
                    offered_rate: spread(&|r| r.offered_rate.unwrap_or(f64::NAN)),
                    throughput: spread(&Run::throughput)?,
                    ratio,
                    latency: match latency {
                        [Some(a), Some(b), Some(c), Some(d)] => Some([a, b, c, d]),
                        _ => None,
                    },
                    job_cpu_per_million: spread(&Run::job_cpu_per_million)?,
                    cpu_per_million: spread(&Run::cpu_per_million)?,
                    peak_rss_mib: spread(&|r| r.cost.peak_rss_mib)?,
                })
            })
            .collect()
    }

    /// The readable table (Markdown).
    pub fn table(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(out, "scenario {} — `{}`", self.scenario, self.command);
        let _ = writeln!(
            out,
            "machine: {} cores, {}, {} MiB",
            self.machine.cores, self.machine.model, self.machine.memory_mib
        );
        let settings: Vec<String> = self.settings.iter().map(|(k, v)| format!("{k}={v}")).collect();
        let _ = writeln!(out, "settings: {}\n", settings.join(", "));
        let _ = writeln!(
            out,
            "| run | runs | offered rec/s | input rec/s | ratio | p50 ms | p99 ms | p99.9 ms | max ms | job CPU s/M | all CPU s/M | RSS MiB |"
        );
        let _ = writeln!(out, "|---|---|---|---|---|---|---|---|---|---|---|---|");
        for s in self.summaries() {
            let ms = |i: usize| s.latency.map_or("-".into(), |l| l[i].map(|us| us / 1e3).show(1));
            let _ = writeln!(
                out,
                "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
                s.label,
                s.throughput.n,
                s.offered_rate.map_or("-".into(), |r| r.show(0)),
                s.throughput.show(0),
                s.ratio.map_or("-".into(), |r| r.show(2)),
                ms(0),
                ms(1),
                ms(2),
                ms(3),
                s.job_cpu_per_million.show(1),
                s.cpu_per_million.show(1),
                s.peak_rss_mib.show(0),
            );
        }
        let _ = writeln!(
            out,
            "\nmedian (min–max) of the runs; job CPU = the engine's threads (shards, its I/O runtime, RocksDB) \
             or the baseline loop's; all CPU = the whole process (the broker too when it is embedded)"
        );
        if let Some(b) = &self.baseline {
            let _ = writeln!(
                out,
                "ratio = flat-out records/s ÷ {b} records/s of the same repeat (run just before it)"
            );
        }
        if let Some(s) = SoakSummary::of(&self.samples, SOAK_SETTLED_S) {
            let _ = writeln!(
                out,
                "\nsoak, {} samples after the first minute while offering: RSS {} MiB (±{:.1}% of the median), \
                 lag {} messages, {} records/s, p99 {} ms",
                s.samples,
                s.rss_mib.show(1),
                s.rss_deviation_percent,
                s.lag.show(0),
                s.records_per_second.show(0),
                s.p99_us.map(|us| us / 1e3).show(1),
            );
        }
        out
    }

    /// The JSON document: every run, and the summaries.
    pub fn json(&self) -> serde_json::Value {
        let spread = |s: Option<Spread>| s.map(|s| s.json());
        json!({
            "scenario": self.scenario,
            "command": self.command,
            "machine": {
                "cores": self.machine.cores,
                "model": self.machine.model,
                "memory_mib": self.machine.memory_mib,
            },
            "settings": self.settings.iter().map(|(k, v)| (k.clone(), json!(v))).collect::<serde_json::Map<_, _>>(),
            "baseline": self.baseline,
            "summary": self.summaries().iter().map(|s| json!({
                "label": s.label,
                "offered_rate": spread(s.offered_rate),
                "records_per_second": s.throughput.json(),
                "ratio_to_baseline": spread(s.ratio),
                "latency_us": s.latency.map(|l| json!({
                    "p50": l[0].json(), "p99": l[1].json(), "p99_9": l[2].json(), "max": l[3].json(),
                })),
                "job_cpu_seconds_per_million": s.job_cpu_per_million.json(),
                "cpu_seconds_per_million": s.cpu_per_million.json(),
                "peak_rss_mib": s.peak_rss_mib.json(),
            })).collect::<Vec<_>>(),
            "runs": self.runs.iter().map(|r| json!({
                "label": r.label,
                "offered_rate": r.offered_rate,
                "records": r.records,
                "seconds": r.seconds,
                "records_per_second": r.throughput(),
                "latency_us": r.latency.as_ref().filter(|h| !h.is_empty()).map(|h| json!({
                    "count": h.len(),
                    "p50": h.value_at_quantile(0.5),
                    "p90": h.value_at_quantile(0.9),
                    "p99": h.value_at_quantile(0.99),
                    "p99_9": h.value_at_quantile(0.999),
                    "max": h.max(),
                })),
                "cpu_seconds": r.cost.cpu_seconds,
                "cpu_seconds_by_class": r.cost.cpu_by_class.iter().map(|(c, s)| (format!("{c:?}"), json!(s))).collect::<serde_json::Map<_, _>>(),
                "cpu_seconds_by_thread": r.cost.cpu_by_thread,
                "peak_rss_mib": r.cost.peak_rss_mib,
            })).collect::<Vec<_>>(),
            "samples": self.samples.iter().map(|s| json!({
                "t_s": s.t_s,
                "rss_mib": s.rss_mib,
                "broker_rss_mib": s.broker_rss_mib,
                "store_disk_used_pct": s.store_disk_used_pct,
                "lag": s.lag,
                "records_per_second": s.records_per_second,
                "p99_us": s.p99_us,
                "offering": s.offering,
            })).collect::<Vec<_>>(),
            "soak_after_first_minute": SoakSummary::of(&self.samples, SOAK_SETTLED_S).map(|s| json!({
                "samples": s.samples,
                "rss_mib": s.rss_mib.json(),
                "rss_deviation_percent": s.rss_deviation_percent,
                "lag": s.lag.json(),
                "records_per_second": s.records_per_second.json(),
                "p99_us": s.p99_us.json(),
            })),
        })
    }

    /// An SVG plot of a soak's samples against time: RSS, lag, throughput
    /// and p99 latency, one panel each; `None` without samples.
    ///
    /// # Errors
    ///
    /// What plotters reports drawing it.
    pub fn samples_svg(&self) -> Result<Option<String>, String> {
        use plotters::prelude::*;

        if self.samples.is_empty() {
            return Ok(None);
        }
        let t_end = self.samples.iter().map(|s| s.t_s).fold(1.0, f64::max);
        let panels: [(&str, fn(&Sample) -> f64); 4] = [
            ("job RSS (MiB)", |s| s.rss_mib),
            ("lag (messages)", |s| s.lag as f64),
            ("records/s (input, by output)", |s| s.records_per_second),
            ("p99 latency (ms)", |s| s.p99_us as f64 / 1e3),
        ];
        let mut svg = String::new();
        {
            let err = |e: &dyn std::fmt::Display| format!("plotting: {e}");
            let root = SVGBackend::with_string(&mut svg, (900, 900)).into_drawing_area();
            root.fill(&WHITE).map_err(|e| err(&e))?;
            let root = root
                .titled(
                    &format!("{} — every sample of the soak", self.scenario),
                    ("sans-serif", 18),
                )
                .map_err(|e| err(&e))?;
            for (area, (name, value)) in root.split_evenly((4, 1)).iter().zip(panels.iter()) {
                let top = self.samples.iter().map(value).fold(0.0, f64::max);
                let top = if top > 0.0 { top * 1.1 } else { 1.0 };
                let mut chart = ChartBuilder::on(area)
                    .margin(8)
                    .x_label_area_size(30)
                    .y_label_area_size(70)
                    .build_cartesian_2d(0f64..t_end, 0f64..top)
                    .map_err(|e| err(&e))?;
                chart
                    .configure_mesh()
                    .x_desc("seconds")
                    .y_desc(*name)
                    .draw()
                    .map_err(|e| err(&e))?;
                chart
                    .draw_series(LineSeries::new(
                        self.samples.iter().map(|s| (s.t_s, value(s))),
                        BLUE.stroke_width(2),
                    ))
                    .map_err(|e| err(&e))?;
            }
            root.present().map_err(|e| err(&e))?;
        }
        Ok(Some(svg))
    }

    /// An SVG plot of latency against percentile ("nines" scale), a line per
    /// label with latency (its repeats' histograms merged); `None` if no
    /// run has latency.
    ///
    /// # Errors
    ///
    /// What plotters reports drawing it.
    pub fn latency_svg(&self) -> Result<Option<String>, String> {
        use plotters::prelude::*;

        let mut lines: Vec<(String, Histogram<u64>)> = Vec::new();
        for label in self.labels() {
            let mut merged: Option<Histogram<u64>> = None;
            for h in self
                .runs_of(label)
                .filter_map(|r| r.latency.as_ref())
                .filter(|h| !h.is_empty())
            {
                match merged.as_mut() {
                    Some(m) => m.add(h).map_err(|e| format!("merging histograms: {e}"))?,
                    None => merged = Some(h.clone()),
                }
            }
            if let Some(m) = merged {
                lines.push((label.to_string(), m));
            }
        }
        if lines.is_empty() {
            return Ok(None);
        }
        const NINES: f64 = 4.0; // up to 99.99 %
        let ms = |us: u64| us.max(1) as f64 / 1e3;
        let top = lines.iter().map(|(_, h)| ms(h.max())).fold(0.001, f64::max);
        let bottom = lines.iter().map(|(_, h)| ms(h.min())).fold(top, f64::min);
        let (y_bottom, y_top) = (10f64.powf(bottom.log10().floor()), 10f64.powf(top.log10().ceil()));
        let y_top = if y_top <= y_bottom { y_bottom * 10.0 } else { y_top };
        let mut svg = String::new();
        {
            let err = |e: &dyn std::fmt::Display| format!("plotting: {e}");
            let root = SVGBackend::with_string(&mut svg, (800, 450)).into_drawing_area();
            root.fill(&WHITE).map_err(|e| err(&e))?;
            let mut chart = ChartBuilder::on(&root)
                .caption(
                    format!("{} — end-to-end latency by percentile", self.scenario),
                    ("sans-serif", 18),
                )
                .margin(12)
                .x_label_area_size(40)
                .y_label_area_size(70)
                .build_cartesian_2d(0f64..NINES, (y_bottom..y_top).log_scale())
                .map_err(|e| err(&e))?;
            chart
                .configure_mesh()
                .x_desc("percentile")
                .y_desc("latency (ms)")
                .x_labels(5)
                .x_label_formatter(&|nines| format!("{}%", 100.0 - 100.0 * 10f64.powf(-nines)))
                .y_label_formatter(&|v| format!("{v}"))
                .draw()
                .map_err(|e| err(&e))?;
            for (i, (label, h)) in lines.iter().enumerate() {
                let colour = Palette99::pick(i).to_rgba();
                let points = (0..=80).map(|k| {
                    let nines = NINES * k as f64 / 80.0;
                    (nines, ms(h.value_at_quantile(1.0 - 10f64.powf(-nines))))
                });
                chart
                    .draw_series(LineSeries::new(points, colour.stroke_width(2)))
                    .map_err(|e| err(&e))?
                    .label(label.as_str())
                    .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], colour.stroke_width(2)));
            }
            chart
                .configure_series_labels()
                .position(SeriesLabelPosition::UpperLeft)
                .background_style(WHITE.mix(0.8))
                .border_style(BLACK)
                .draw()
                .map_err(|e| err(&e))?;
            root.present().map_err(|e| err(&e))?;
        }
        Ok(Some(svg))
    }

    /// Writes `<scenario>.json` (and `<scenario>-latency.svg` when there is
    /// latency, `<scenario>-samples.svg` when there are samples) into
    /// `dir`; returns the files written.
    ///
    /// # Errors
    ///
    /// Any I/O error creating `dir` or writing the files, or a plot that
    /// could not be drawn.
    pub fn write(&self, dir: &Path) -> std::io::Result<Vec<PathBuf>> {
        std::fs::create_dir_all(dir)?;
        let mut written = Vec::new();
        let json_path = dir.join(format!("{}.json", self.scenario));
        let text = serde_json::to_string_pretty(&self.json()).map_err(std::io::Error::other)?;
        std::fs::write(&json_path, text)?;
        written.push(json_path);
        if let Some(svg) = self.latency_svg().map_err(std::io::Error::other)? {
            let svg_path = dir.join(format!("{}-latency.svg", self.scenario));
            std::fs::write(&svg_path, svg)?;
            written.push(svg_path);
        }
        if let Some(svg) = self.samples_svg().map_err(std::io::Error::other)? {
            let svg_path = dir.join(format!("{}-samples.svg", self.scenario));
            std::fs::write(&svg_path, svg)?;
            written.push(svg_path);
        }
        Ok(written)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    fn run(label: &str, records: u64, seconds: f64, rate: Option<f64>, latencies: &[u64]) -> Run {
        let mut h = Histogram::<u64>::new(3).expect("histogram");
        for &l in latencies {
            h.record(l).expect("record");
        }
        Run {
            label: label.into(),
            offered_rate: rate,
            records,
            seconds,
            latency: (!latencies.is_empty()).then_some(h),
            cost: Cost {
                cpu_seconds: 2.0,
                cpu_by_class: BTreeMap::from([(ThreadClass::Job, 1.0), (ThreadClass::Broker, 1.0)]),
                cpu_by_thread: BTreeMap::from([("rmq-shard-".into(), 1.0), ("rmq-embedded".into(), 1.0)]),
                peak_rss_mib: 100.0,
            },
        }
    }

    fn report() -> Report {
        Report {
            scenario: "stateless".into(),
            command: "bench stateless".into(),
            machine: Machine {
                cores: 2,
                model: "test".into(),
                memory_mib: 1024,
            },
            settings: vec![("shards".into(), "2".into())],
            runs: vec![
                run("pipe-baseline flat out", 1000, 1.0, None, &[]),
                run("stateless flat out", 1000, 2.0, None, &[]),
                run("pipe-baseline flat out", 1000, 0.25, None, &[]),
                run("stateless flat out", 1000, 4.0, None, &[]),
                run("pipe-baseline flat out", 1000, 1.0, None, &[]),
                run("stateless flat out", 1000, 1.0, None, &[]),
                run("stateless at 50%", 250, 1.0, Some(250.0), &[100, 200, 300, 400, 10_000]),
                run("stateless at 50%", 250, 1.0, Some(250.0), &[100, 200, 300, 400, 20_000]),
            ],
            baseline: Some("pipe-baseline flat out".into()),
            samples: Vec::new(),
        }
    }

    #[test]
    fn a_spread_is_the_median_with_its_extremes() {
        let s = Spread::of([3.0, 1.0, 2.0]).expect("values");
        assert_eq!((s.median, s.min, s.max, s.n), (2.0, 1.0, 3.0, 3));
        assert_eq!(Spread::of([4.0, 1.0, 2.0, 3.0]).expect("values").median, 2.5);
        assert_eq!(Spread::of([f64::NAN]), None);
        assert_eq!(s.show(1), "2.0 (1.0–3.0)");
        assert_eq!(Spread::of([5.0]).expect("one").show(0), "5");
    }

    #[test]
    fn repeats_are_summarised_and_the_ratio_pairs_each_repeat_with_its_baseline() {
        let summaries = report().summaries();
        let labels: Vec<&str> = summaries.iter().map(|s| s.label.as_str()).collect();
        assert_eq!(
            labels,
            ["pipe-baseline flat out", "stateless flat out", "stateless at 50%"]
        );
        let base = &summaries[0];
        assert_eq!(
            (base.throughput.median, base.throughput.min, base.throughput.max),
            (1000.0, 1000.0, 4000.0)
        );
        assert_eq!(base.ratio.map(|r| r.median), Some(1.0));
        // 500/1000, 250/4000, 1000/1000.
        let ratio = summaries[1].ratio.expect("flat out has a ratio");
        assert_eq!((ratio.median, ratio.min, ratio.max), (0.5, 0.0625, 1.0));
        let rated = &summaries[2];
        assert!(rated.ratio.is_none(), "rated runs have no ratio");
        let [_, _, _, max] = rated.latency.expect("rated runs have latency");
        // hdrhistogram keeps 3 significant digits.
        assert!((10_000.0..=10_010.0).contains(&max.min) && (20_000.0..=20_020.0).contains(&max.max));
        assert_eq!(summaries[1].cpu_per_million.median, 2000.0);
        assert_eq!(summaries[1].job_cpu_per_million.median, 1000.0);
        let json = report().json();
        assert_eq!(json["summary"][1]["ratio_to_baseline"]["median"], 0.5);
        assert_eq!(json["runs"].as_array().map(Vec::len), Some(8));
        assert_eq!(json["runs"][0]["cpu_seconds_by_class"]["Job"], 1.0);
    }

    #[test]
    fn the_table_and_the_plot_show_every_label() {
        let r = report();
        let table = r.table();
        for label in ["pipe-baseline flat out", "stateless flat out", "stateless at 50%"] {
            assert_eq!(table.matches(&format!("| {label} |")).count(), 1, "{table}");
        }
        assert!(table.contains("| 0.50 (0.06–1.00) |"), "{table}");
        let svg = r.latency_svg().expect("plotted").expect("a run has latency");
        assert!(svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"));
        assert!(svg.contains("<polyline") && svg.contains("stateless at 50%"), "{svg}");
        let flat_only = Report {
            runs: r.runs[..2].to_vec(),
            ..r
        };
        assert_eq!(flat_only.latency_svg(), Ok(None));
        assert_eq!(flat_only.samples_svg(), Ok(None));
    }

    #[test]
    fn a_soak_is_summarised_after_its_first_minute_and_plotted() {
        let sample = |t_s: f64, rss_mib: f64, lag: u64| Sample {
            t_s,
            rss_mib,
            broker_rss_mib: None,
            store_disk_used_pct: None,
            lag,
            records_per_second: 1000.0,
            p99_us: 50_000,
            offering: true,
        };
        // The warm-up's low RSS and high lag are left out, and so is the
        // drain after the offering ended.
        let samples = vec![
            sample(10.0, 50.0, 9_000),
            sample(60.0, 100.0, 10),
            sample(70.0, 110.0, 30),
            sample(80.0, 95.0, 20),
            Sample {
                offering: false,
                p99_us: 0,
                ..sample(81.0, 200.0, 0)
            },
        ];
        let s = SoakSummary::of(&samples, SOAK_SETTLED_S).expect("samples after a minute");
        assert_eq!(s.samples, 3);
        assert_eq!((s.rss_mib.median, s.rss_mib.min, s.rss_mib.max), (100.0, 95.0, 110.0));
        assert_eq!(s.rss_deviation_percent, 10.0);
        assert_eq!((s.lag.median, s.lag.max), (20.0, 30.0));
        assert_eq!(SoakSummary::of(&samples[..1], SOAK_SETTLED_S), None);
        let r = Report {
            scenario: "wordcount-soak".into(),
            samples,
            ..report()
        };
        assert!(
            r.table()
                .contains("soak, 3 samples after the first minute while offering: RSS 100.0 (95.0–110.0) MiB (±10.0% of the median)"),
            "{}",
            r.table()
        );
        let json = r.json();
        assert_eq!(json["samples"].as_array().map(Vec::len), Some(5));
        assert_eq!(json["samples"][4]["offering"], false);
        assert_eq!(json["samples"][1]["rss_mib"], 100.0);
        assert_eq!(json["samples"][1]["lag"], 10);
        assert_eq!(json["samples"][1]["p99_us"], 50_000);
        assert_eq!(json["soak_after_first_minute"]["rss_deviation_percent"], 10.0);
        let svg = r.samples_svg().expect("plotted").expect("samples");
        assert!(
            svg.matches("<polyline").count() >= 4 && svg.contains("lag (messages)"),
            "{svg}"
        );
    }
}
