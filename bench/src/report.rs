//! A scenario's figures, as a table for people, JSON for tools and an SVG
//! latency-percentile plot.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use hdrhistogram::Histogram;
use serde_json::json;

use crate::machine::Machine;

/// One measured run of a scenario (flat out, or at one offered rate).
#[derive(Debug, Clone)]
pub struct Run {
    /// What ran: "pipe-baseline flat out", "stateless at 50%", ...
    pub label: String,
    /// Offered records per second, `None` for flat out.
    pub offered_rate: Option<f64>,
    /// Input records offered (and all processed: a run whose output falls
    /// short is an error, not a figure). Throughput counts these.
    pub records: u64,
    /// Seconds from the first record offered to the last one out.
    pub seconds: f64,
    /// End-to-end latency in µs (produce → sink consumer), if measured.
    pub latency: Option<Histogram<u64>>,
    /// CPU seconds the whole process used during the run (broker included
    /// when it is embedded).
    pub cpu_seconds: f64,
    /// Peak resident memory of the process during the run, MiB.
    pub peak_rss_mib: f64,
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

    /// CPU seconds per million records.
    pub fn cpu_per_million(&self) -> f64 {
        if self.records > 0 {
            self.cpu_seconds * 1e6 / self.records as f64
        } else {
            0.0
        }
    }

    fn percentile_us(&self, q: f64) -> Option<u64> {
        self.latency
            .as_ref()
            .filter(|h| !h.is_empty())
            .map(|h| h.value_at_quantile(q))
    }
}

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
    /// The runs, baseline first when there is one.
    pub runs: Vec<Run>,
    /// The label of the run the others are compared with, if any.
    pub baseline: Option<String>,
}

impl Report {
    fn baseline_throughput(&self) -> Option<f64> {
        let label = self.baseline.as_ref()?;
        self.runs.iter().find(|r| &r.label == label).map(Run::throughput)
    }

    /// The readable table.
    pub fn table(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(out, "scenario {} — {}", self.scenario, self.command);
        let _ = writeln!(
            out,
            "machine: {} cores, {}, {} MiB",
            self.machine.cores, self.machine.model, self.machine.memory_mib
        );
        let settings: Vec<String> = self.settings.iter().map(|(k, v)| format!("{k}={v}")).collect();
        let _ = writeln!(out, "settings: {}", settings.join(", "));
        let _ = writeln!(
            out,
            "{:<34} {:>10} {:>12} {:>8} {:>9} {:>9} {:>9} {:>9} {:>10} {:>9}",
            "run", "input", "input rec/s", "ratio", "p50 µs", "p99 µs", "p99.9 µs", "max µs", "CPU s/M", "RSS MiB"
        );
        let base = self.baseline_throughput();
        for r in &self.runs {
            let ratio = match (base, r.offered_rate) {
                (Some(b), None) if b > 0.0 => format!("{:.2}", r.throughput() / b),
                _ => "-".into(),
            };
            let p = |q: f64| r.percentile_us(q).map_or("-".into(), |v| v.to_string());
            let max = r
                .latency
                .as_ref()
                .filter(|h| !h.is_empty())
                .map_or("-".into(), |h| h.max().to_string());
            let _ = writeln!(
                out,
                "{:<34} {:>10} {:>12.0} {:>8} {:>9} {:>9} {:>9} {:>9} {:>10.2} {:>9.0}",
                r.label,
                r.records,
                r.throughput(),
                ratio,
                p(0.5),
                p(0.99),
                p(0.999),
                max,
                r.cpu_per_million(),
                r.peak_rss_mib
            );
        }
        if base.is_some() {
            let _ = writeln!(
                out,
                "ratio = flat-out records/s ÷ {} records/s, measured in this run",
                self.baseline.as_deref().unwrap_or("baseline")
            );
        }
        out
    }

    /// The JSON document.
    pub fn json(&self) -> serde_json::Value {
        let base = self.baseline_throughput();
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
            "runs": self.runs.iter().map(|r| json!({
                "label": r.label,
                "offered_rate": r.offered_rate,
                "records": r.records,
                "seconds": r.seconds,
                "records_per_second": r.throughput(),
                "ratio_to_baseline": match (base, r.offered_rate) {
                    (Some(b), None) if b > 0.0 => Some(r.throughput() / b),
                    _ => None,
                },
                "latency_us": r.latency.as_ref().filter(|h| !h.is_empty()).map(|h| json!({
                    "count": h.len(),
                    "p50": h.value_at_quantile(0.5),
                    "p90": h.value_at_quantile(0.9),
                    "p99": h.value_at_quantile(0.99),
                    "p99_9": h.value_at_quantile(0.999),
                    "max": h.max(),
                })),
                "cpu_seconds": r.cpu_seconds,
                "cpu_seconds_per_million": r.cpu_per_million(),
                "peak_rss_mib": r.peak_rss_mib,
            })).collect::<Vec<_>>(),
        })
    }

    /// An SVG plot of latency against percentile ("nines" scale) for every
    /// run with a latency histogram; `None` if there is none.
    pub fn latency_svg(&self) -> Option<String> {
        let runs: Vec<&Run> = self.runs.iter().filter(|r| r.percentile_us(0.5).is_some()).collect();
        if runs.is_empty() {
            return None;
        }
        let (w, h, left, bottom, top, right) = (760.0, 420.0, 70.0, 50.0, 40.0, 200.0);
        let max_nines = 4.0; // up to 99.99 %
        let quantiles: Vec<f64> = (0..=80)
            .map(|i| 1.0 - 10f64.powf(-max_nines * i as f64 / 80.0))
            .collect();
        let max_us = runs
            .iter()
            .filter_map(|r| r.latency.as_ref().map(|h| h.max().max(1)))
            .max()
            .unwrap_or(1) as f64;
        let min_us = runs
            .iter()
            .filter_map(|r| r.latency.as_ref().map(|h| h.min().max(1)))
            .min()
            .unwrap_or(1) as f64;
        let y_top = 10f64.powf(max_us.log10().ceil());
        let y_bottom = 10f64.powf(min_us.log10().floor()).min(y_top / 10.0);
        let x = |q: f64| left + (-(1.0 - q).max(1e-12).log10() / max_nines).min(1.0) * (w - left - right);
        let span = y_top.log10() - y_bottom.log10();
        let y = |us: f64| h - bottom - ((us.max(y_bottom).log10() - y_bottom.log10()) / span) * (h - bottom - top);
        let mut svg = format!(
            "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{w}\" height=\"{h}\" font-family=\"sans-serif\" font-size=\"12\">\n\
             <rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n\
             <text x=\"{left}\" y=\"22\" font-size=\"14\">{} — end-to-end latency by percentile</text>\n",
            self.scenario
        );
        for (q, label) in [
            (0.0, "0%"),
            (0.9, "90%"),
            (0.99, "99%"),
            (0.999, "99.9%"),
            (0.9999, "99.99%"),
        ] {
            let _ = writeln!(
                svg,
                "<line x1=\"{0:.1}\" y1=\"{1}\" x2=\"{0:.1}\" y2=\"{2}\" stroke=\"#ddd\"/><text x=\"{0:.1}\" y=\"{3}\" text-anchor=\"middle\">{label}</text>",
                x(q),
                top,
                h - bottom,
                h - bottom + 18.0
            );
        }
        let mut decade = y_bottom;
        while decade <= y_top * 1.001 {
            let _ = writeln!(
                svg,
                "<line x1=\"{left}\" y1=\"{0:.1}\" x2=\"{1}\" y2=\"{0:.1}\" stroke=\"#ddd\"/><text x=\"{2}\" y=\"{0:.1}\" text-anchor=\"end\">{3}</text>",
                y(decade),
                w - right,
                left - 6.0,
                human_us(decade)
            );
            decade *= 10.0;
        }
        let colours = [
            "#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2",
        ];
        for (i, r) in runs.iter().enumerate() {
            let Some(hist) = r.latency.as_ref() else { continue };
            let points: Vec<String> = quantiles
                .iter()
                .map(|&q| format!("{:.1},{:.1}", x(q), y(hist.value_at_quantile(q) as f64)))
                .collect();
            let colour = colours[i % colours.len()];
            let _ = writeln!(
                svg,
                "<polyline fill=\"none\" stroke=\"{colour}\" stroke-width=\"2\" points=\"{}\"/>\n\
                 <text x=\"{:.1}\" y=\"{:.1}\" fill=\"{colour}\">{}</text>",
                points.join(" "),
                w - right + 10.0,
                top + 16.0 * (i as f64 + 1.0),
                xml_escape(&r.label)
            );
        }
        let _ = writeln!(
            svg,
            "<text x=\"{:.1}\" y=\"{}\" text-anchor=\"middle\">percentile</text>\n</svg>",
            left + (w - left - right) / 2.0,
            h - 8.0
        );
        Some(svg)
    }

    /// Writes `<scenario>.json` (and `<scenario>-latency.svg` when there is
    /// latency) into `dir`; returns the files written.
    ///
    /// # Errors
    ///
    /// Any I/O error creating `dir` or writing the files.
    pub fn write(&self, dir: &Path) -> std::io::Result<Vec<PathBuf>> {
        std::fs::create_dir_all(dir)?;
        let mut written = Vec::new();
        let json_path = dir.join(format!("{}.json", self.scenario));
        let text = serde_json::to_string_pretty(&self.json()).map_err(std::io::Error::other)?;
        std::fs::write(&json_path, text)?;
        written.push(json_path);
        if let Some(svg) = self.latency_svg() {
            let svg_path = dir.join(format!("{}-latency.svg", self.scenario));
            std::fs::write(&svg_path, svg)?;
            written.push(svg_path);
        }
        Ok(written)
    }
}

fn human_us(us: f64) -> String {
    if us >= 1e6 {
        format!("{:.0} s", us / 1e6)
    } else if us >= 1e3 {
        format!("{:.0} ms", us / 1e3)
    } else {
        format!("{us:.0} µs")
    }
}

fn xml_escape(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;")
}

#[cfg(test)]
mod tests {
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
            cpu_seconds: 2.0,
            peak_rss_mib: 100.0,
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
                run("stateless at 50%", 250, 1.0, Some(250.0), &[100, 200, 300, 400, 10_000]),
            ],
            baseline: Some("pipe-baseline flat out".into()),
        }
    }

    #[test]
    fn the_ratio_is_to_the_baseline_of_the_same_report() {
        let json = report().json();
        let runs = json["runs"].as_array().expect("runs");
        assert_eq!(runs[0]["ratio_to_baseline"], 1.0);
        assert_eq!(runs[1]["ratio_to_baseline"], 0.5);
        assert!(runs[2]["ratio_to_baseline"].is_null(), "rated runs have no ratio");
        // hdrhistogram keeps 3 significant digits.
        let max = runs[2]["latency_us"]["max"].as_u64().expect("max");
        assert!((10_000..=10_010).contains(&max), "max {max}");
        assert_eq!(runs[1]["cpu_seconds_per_million"], 2000.0);
    }

    #[test]
    fn the_table_and_the_plot_show_every_run() {
        let r = report();
        let table = r.table();
        for label in ["pipe-baseline flat out", "stateless flat out", "stateless at 50%"] {
            assert!(table.contains(label), "{table}");
        }
        let svg = r.latency_svg().expect("a run has latency");
        assert!(svg.contains("<polyline") && svg.contains("stateless at 50%"));
        assert!(svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"));
    }
}
