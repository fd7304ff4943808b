//! What a figure was measured on, and what it cost: the machine, process
//! CPU time and peak resident memory.

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
    // Fields after the command name (which may hold spaces) in parentheses.
    let after = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
    let fields: Vec<&str> = after.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the line, 12 and 13 here.
    let ticks = |i: usize| fields.get(i).and_then(|f| f.parse::<u64>().ok()).unwrap_or(0);
    let per_second = 100; // USER_HZ on Linux
    Duration::from_millis((ticks(11) + ticks(12)) * 1000 / per_second)
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
    fn the_machine_has_cores_and_memory() {
        let m = Machine::detect();
        assert!(m.cores >= 1);
        assert!(peak_rss_kib() > 0);
        assert!(m.memory_mib > 0);
    }
}
