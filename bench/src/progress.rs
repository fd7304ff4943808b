//! A progress bar on stderr while a run goes: records through so far, of
//! how many, and the time taken.

use std::io::Write;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Draws `done / total` under `label` every 200 ms until dropped.
pub struct Progress {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Progress {
    /// Starts drawing; `done` is read, never written.
    pub fn start(label: &str, done: Arc<AtomicU64>, total: u64) -> Progress {
        let stop = Arc::new(AtomicBool::new(false));
        let (label, stop2) = (label.to_string(), stop.clone());
        let thread = std::thread::Builder::new()
            .name("bench-progress".into())
            .spawn(move || {
                let started = Instant::now();
                loop {
                    let finished = stop2.load(Ordering::Relaxed);
                    let n = done.load(Ordering::Relaxed).min(total);
                    eprint!("\r{}", bar(&label, n, total, started.elapsed()));
                    let _ = std::io::stderr().flush();
                    if finished {
                        eprintln!();
                        return;
                    }
                    std::thread::sleep(Duration::from_millis(200));
                }
            })
            .ok();
        Progress { stop, thread }
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn bar(label: &str, n: u64, total: u64, elapsed: Duration) -> String {
    const WIDTH: u64 = 30;
    let filled = (n * WIDTH).checked_div(total).unwrap_or(WIDTH);
    format!(
        "{label:<28} [{}{}] {:>3}% {n}/{total} {:.1} s",
        "#".repeat(filled as usize),
        " ".repeat((WIDTH - filled) as usize),
        (n * 100).checked_div(total).unwrap_or(100),
        elapsed.as_secs_f64()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bar_fills_with_progress() {
        let half = bar("x", 50, 100, Duration::from_secs(1));
        assert!(
            half.contains(&format!("[{}{}]", "#".repeat(15), " ".repeat(15))),
            "{half}"
        );
        assert!(half.contains(" 50% 50/100 1.0 s"));
        assert!(bar("x", 0, 0, Duration::ZERO).contains("100%"));
    }
}
