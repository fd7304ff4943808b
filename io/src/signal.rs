//! Ctrl-C for programs that embed a job or a broker.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

/// A flag that turns `true` on the first Ctrl-C (SIGINT).
///
/// A background thread waits for the signal; the program polls
/// [`Interrupt::is_set`] in its own loop (a job's main thread typically
/// sleeps while its shards work) and then stops the job cleanly. Once
/// installed, Ctrl-C no longer kills the process: the program decides.
#[derive(Debug, Clone)]
pub struct Interrupt {
    flag: Arc<AtomicBool>,
}

impl Interrupt {
    /// Starts listening for Ctrl-C.
    ///
    /// # Errors
    ///
    /// Returns an I/O error if the listener's thread or runtime cannot start.
    pub fn install() -> std::io::Result<Interrupt> {
        let flag = Arc::new(AtomicBool::new(false));
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
        let set = flag.clone();
        std::thread::Builder::new().name("rmq-ctrl-c".into()).spawn(move || {
            if rt.block_on(tokio::signal::ctrl_c()).is_ok() {
                set.store(true, Ordering::Release);
            }
        })?;
        Ok(Interrupt { flag })
    }

    /// Whether Ctrl-C was pressed.
    pub fn is_set(&self) -> bool {
        self.flag.load(Ordering::Acquire)
    }

    /// Blocks until Ctrl-C is pressed.
    pub fn wait(&self) {
        while !self.is_set() {
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
    }
}
