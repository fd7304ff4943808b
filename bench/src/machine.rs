//! What a figure was measured on, and what it cost: the machine, process
//! CPU time and peak resident memory.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

/// The machine a report ran on.
#[derive(Debug, Clone)]
pub struct Machine {
    /// CPUs this process may use.
    pub cores: usize,
    /// The CPU model (`/proc/cpuinfo`), or "unknown".
    pub model: String,
    /// Total memory in MiB (`/proc/meminfo`), 0 if unknown.
    pub memory_mib: u64,
}

impl Machine {
    /// Reads the machine this process runs on.
    pub fn detect() -> Machine {
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let model = cpuinfo
            .lines()
            .find_map(|l| {
                l.strip_prefix("model name")
                    .map(|r| r.trim_start_matches([' ', '\t', ':']).to_string())
            })
            .unwrap_or_else(|| "unknown".into());
        let memory_mib = std::fs::read_to_string("/proc/meminfo")
            .unwrap_or_default()
            .lines()
            .find_map(|l| {
                l.strip_prefix("MemTotal:")
                    .and_then(|r| r.trim().trim_end_matches(" kB").parse::<u64>().ok())
            })
            .map_or(0, |kb| kb / 1024);
        Machine {
            cores: std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1),
            model,
            memory_mib,
        }
    }
}

/// CPU time (user + system) this process has used so far, from
/// `/proc/self/stat`; zero where that file does not exist.
pub fn process_cpu() -> Duration {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    parse_stat(&stat).map_or(Duration::ZERO, |(_, cpu)| cpu)
}

/// CPU time of each live thread of this process, by thread id, with the
/// thread's name: nanoseconds on CPU from `/proc/self/task/*/schedstat`
/// where the kernel has it (`stat`'s 10 ms ticks miss short runs of a
/// light thread), else user + system time from `stat`; empty where that
/// directory does not exist.
pub fn thread_cpu() -> HashMap<u32, (String, Duration)> {
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return HashMap::new();
    };
    tasks
        .filter_map(|t| {
            let t = t.ok()?;
            let tid = t.file_name().to_str()?.parse::<u32>().ok()?;
            let stat = std::fs::read_to_string(t.path().join("stat")).ok()?;
            let (name, ticks) = parse_stat(&stat)?;
            let on_cpu = std::fs::read_to_string(t.path().join("schedstat"))
                .ok()
                .and_then(|s| s.split_whitespace().next()?.parse::<u64>().ok())
                .map(Duration::from_nanos);
            Some((tid, (name, on_cpu.unwrap_or(ticks))))
        })
        .collect()
}

/// The name and the CPU time (utime + stime) of a `stat` line.
fn parse_stat(stat: &str) -> Option<(String, Duration)> {
    // The name is in parentheses and may itself hold spaces or ')'.
    let (head, after) = stat.rsplit_once(')')?;
    let name = head.split_once('(')?.1.to_string();
    let fields: Vec<&str> = after.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the line, 12 and 13 here.
    let ticks = |i: usize| fields.get(i).and_then(|f| f.parse::<u64>().ok()).unwrap_or(0);
    let per_second = 100; // USER_HZ on Linux
    Some((name, Duration::from_millis((ticks(11) + ticks(12)) * 1000 / per_second)))
}

/// Whose work a thread does, by its name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ThreadClass {
    /// The job: the engine's shards (`rmq-shard-N`), its I/O runtime
    /// (`rmq-streams-io`), RocksDB's background threads (`rocksdb:*`), or
    /// the `pipe-baseline` loop (`bench-baseline`).
    Job,
    /// The embedded broker and name server (`rmq-embedded`, and the
    /// store's `allocate-mapped-file-service`).
    Broker,
    /// The harness itself: the load producer, the output reader, the
    /// progress bar (`bench-*` other than the baseline) and `main`.
    Harness,
    /// Any other thread (named by a library).
    Other,
}

impl ThreadClass {
    /// The class of a thread named `name`.
    pub fn of(name: &str) -> ThreadClass {
        if name.starts_with("rmq-shard-")
            || name == rocketmq_streams_io::IO_THREAD_NAME
            || name.starts_with("rocksdb:")
            || name == crate::baseline::THREAD_NAME
        {
            ThreadClass::Job
        } else if name.starts_with("rmq-embedded") || name.starts_with("allocate-mapped") {
            ThreadClass::Broker
        } else if name.starts_with("bench-") || name == "rocketmq-stream" {
            // The main thread carries the binary's name, cut to 15 bytes.
            ThreadClass::Harness
        } else {
            ThreadClass::Other
        }
    }
}

/// CPU seconds of each [`ThreadClass`] between two [`thread_cpu`] samples,
/// and of each thread name (digits removed, so `rmq-shard-0` and
/// `rmq-shard-1` add up as `rmq-shard-`). A thread that started after
/// `before` counts whole; one that ended before `after` is lost, so take
/// `after` before stopping what is measured.
pub fn cpu_between(
    before: &HashMap<u32, (String, Duration)>,
    after: &HashMap<u32, (String, Duration)>,
) -> (BTreeMap<ThreadClass, f64>, BTreeMap<String, f64>) {
    let (mut by_class, mut by_name) = (BTreeMap::new(), BTreeMap::new());
    for (tid, (name, cpu)) in after {
        let was = before
            .get(tid)
            .filter(|(n, _)| n == name)
            .map_or(Duration::ZERO, |b| b.1);
        let used = cpu.saturating_sub(was).as_secs_f64();
        *by_class.entry(ThreadClass::of(name)).or_insert(0.0) += used;
        let family: String = name.chars().filter(|c| !c.is_ascii_digit()).collect();
        *by_name.entry(family).or_insert(0.0) += used;
    }
    (by_class, by_name)
}

/// What a run cost: CPU (whole process, by class and by thread name) and
/// peak memory.
#[derive(Debug, Clone, Default)]
pub struct Cost {
    /// CPU seconds of the whole process (the broker too when embedded).
    pub cpu_seconds: f64,
    /// CPU seconds by whose work the threads did.
    pub cpu_by_class: BTreeMap<ThreadClass, f64>,
    /// CPU seconds by thread name (digits removed).
    pub cpu_by_thread: BTreeMap<String, f64>,
    /// Peak resident memory of the process during the run, MiB.
    pub peak_rss_mib: f64,
}

/// Measures a run's [`Cost`]: [`Meter::start`] before it, [`Meter::cost`]
/// after it (and before whatever was measured stops, so its threads are
/// still there to be read).
pub struct Meter {
    process: Duration,
    threads: HashMap<u32, (String, Duration)>,
}

impl Meter {
    /// Starts measuring, and a new peak-RSS measurement.
    pub fn start() -> Meter {
        reset_peak_rss();
        Meter {
            process: process_cpu(),
            threads: thread_cpu(),
        }
    }

    /// What was spent since [`Meter::start`].
    pub fn cost(&self) -> Cost {
        let (cpu_by_class, cpu_by_thread) = cpu_between(&self.threads, &thread_cpu());
        Cost {
            cpu_seconds: process_cpu().saturating_sub(self.process).as_secs_f64(),
            cpu_by_class,
            cpu_by_thread,
            peak_rss_mib: peak_rss_kib() as f64 / 1024.0,
        }
    }
}

/// Peak resident memory of this process in KiB since the last
/// [`reset_peak_rss`] (`VmHWM`), 0 if unknown.
pub fn peak_rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .find_map(|l| {
            l.strip_prefix("VmHWM:")
                .and_then(|r| r.trim().trim_end_matches(" kB").parse().ok())
        })
        .unwrap_or(0)
}

/// Resident memory now (`VmRSS`) of this process (`None`) or of process
/// `pid`, in KiB; 0 if unknown.
pub fn rss_kib(pid: Option<u32>) -> u64 {
    let path = pid.map_or_else(|| "/proc/self/status".to_string(), |p| format!("/proc/{p}/status"));
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .find_map(|l| {
            l.strip_prefix("VmRSS:")
                .and_then(|r| r.trim().trim_end_matches(" kB").parse().ok())
        })
        .unwrap_or(0)
}

/// Starts a new peak-RSS measurement (`echo 5 > /proc/self/clear_refs`).
/// Returns whether the kernel accepted it; if not, the peak is the
/// process's lifetime peak.
pub fn reset_peak_rss() -> bool {
    std::fs::write("/proc/self/clear_refs", "5").is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_time_grows_with_work() {
        let before = process_cpu();
        let mut x = 0u64;
        let start = std::time::Instant::now();
        while start.elapsed() < Duration::from_millis(100) {
            x = x.wrapping_mul(6364136223846793005).wrapping_add(1);
        }
        std::hint::black_box(x);
        assert!(
            process_cpu() >= before + Duration::from_millis(50),
            "{:?} → {:?}",
            before,
            process_cpu()
        );
    }

    #[test]
    fn thread_cpu_names_this_thread_and_counts_its_work() {
        let name = "bench-cputest";
        let (before, after) = std::thread::Builder::new()
            .name(name.into())
            .spawn(|| {
                let before = thread_cpu();
                let (start, mut x) = (std::time::Instant::now(), 0u64);
                while start.elapsed() < Duration::from_millis(100) {
                    x = x.wrapping_mul(6364136223846793005).wrapping_add(1);
                }
                std::hint::black_box(x);
                (before, thread_cpu())
            })
            .expect("spawn")
            .join()
            .expect("join");
        let (by_class, by_name) = cpu_between(&before, &after);
        let spent = by_name.get("bench-cputest").copied().unwrap_or(0.0);
        assert!(spent >= 0.05, "{by_name:?}");
        assert!(by_class[&ThreadClass::Harness] >= spent);
    }

    #[test]
    fn a_stat_line_gives_name_and_ticks_and_threads_fall_into_classes() {
        let line = "42 (rmq-shard-1) S 1 2 3 4 5 6 7 8 9 10 150 50 0 0 20 0";
        assert_eq!(
            parse_stat(line),
            Some(("rmq-shard-1".to_string(), Duration::from_secs(2)))
        );
        assert_eq!(parse_stat("garbage"), None);
        assert_eq!(ThreadClass::of("rmq-shard-0"), ThreadClass::Job);
        assert_eq!(ThreadClass::of("rmq-streams-io"), ThreadClass::Job);
        assert_eq!(ThreadClass::of("rocksdb:low"), ThreadClass::Job);
        assert_eq!(ThreadClass::of("bench-baseline"), ThreadClass::Job);
        assert_eq!(ThreadClass::of("rmq-embedded"), ThreadClass::Broker);
        assert_eq!(ThreadClass::of("bench-reader"), ThreadClass::Harness);
        assert_eq!(ThreadClass::of("tokio-runtime-w"), ThreadClass::Other);
    }

    #[test]
    fn the_machine_has_cores_and_memory() {
        let m = Machine::detect();
        assert!(m.cores >= 1);
        assert!(peak_rss_kib() > 0);
        assert!(rss_kib(None) > 0);
        assert!(rss_kib(Some(std::process::id())) > 0);
        assert_eq!(rss_kib(Some(u32::MAX)), 0, "no such process");
        assert!(m.memory_mib > 0);
    }
}
