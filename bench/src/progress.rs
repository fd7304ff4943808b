//! A progress bar on stderr while a run goes (`indicatif`): records through
//! so far, of how many, and the time taken. Hidden when stderr is not a
//! terminal (CI logs stay clean).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressStyle};

/// How often the bar reads its counter.
const REFRESH: Duration = Duration::from_millis(200);

/// Shows `done / total` under `label` until dropped.
pub struct Progress {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Progress {
    /// Starts showing; `done` is read, never written (it is counted by
    /// whoever does the work, so the bar costs the work no call).
    pub fn start(label: &str, done: Arc<AtomicU64>, total: u64) -> Progress {
        let bar = ProgressBar::new(total).with_message(label.to_string());
        if let Ok(style) =
            ProgressStyle::with_template("{msg:28} [{bar:30}] {percent:>3}% {pos}/{len} {elapsed_precise} eta {eta}")
        {
            bar.set_style(style.progress_chars("#> "));
        }
        let stop = Arc::new(AtomicBool::new(false));
        let stop2 = stop.clone();
        let thread = std::thread::Builder::new()
            .name("bench-progress".into())
            .spawn(move || {
                while !stop2.load(Ordering::Relaxed) {
                    bar.set_position(done.load(Ordering::Relaxed).min(total));
                    std::thread::sleep(REFRESH);
                }
                bar.set_position(done.load(Ordering::Relaxed).min(total));
                bar.finish();
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
