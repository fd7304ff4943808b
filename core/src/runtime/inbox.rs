//! A lock-free channel a glommio task can await: crossbeam's queue plus a
//! waker slot, so the sending thread (the coordinator on the I/O runtime)
//! wakes the shard instead of the shard spinning on `try_recv`.

use std::sync::Arc;
use std::task::Poll;

use crossbeam::channel::{Receiver, Sender, TryRecvError};
use futures::task::AtomicWaker;

/// The sending half; cheap to clone.
pub(crate) struct Outbox<T> {
    /// `None` only inside `drop`: the sender must be gone before the wake.
    tx: Option<Sender<T>>,
    waker: Arc<AtomicWaker>,
}

impl<T> Clone for Outbox<T> {
    fn clone(&self) -> Self {
        Self {
            tx: self.tx.clone(),
            waker: self.waker.clone(),
        }
    }
}

/// The receiving half, owned by one shard task.
pub(crate) struct Inbox<T> {
    rx: Receiver<T>,
    waker: Arc<AtomicWaker>,
}

pub(crate) fn channel<T>() -> (Outbox<T>, Inbox<T>) {
    let (tx, rx) = crossbeam::channel::unbounded();
    let waker = Arc::new(AtomicWaker::new());
    (
        Outbox {
            tx: Some(tx),
            waker: waker.clone(),
        },
        Inbox { rx, waker },
    )
}

impl<T> Drop for Outbox<T> {
    fn drop(&mut self) {
        // The receiver may be parked waiting for a value; when the last
        // sender goes it must wake up to see the channel closed. The sender
        // is dropped *before* the wake: woken first, the receiver could poll
        // in between, still see the channel open and park again with nobody
        // left to wake it (a shard that never stopped, seen under load).
        drop(self.tx.take());
        self.waker.wake();
    }
}

impl<T> Outbox<T> {
    /// Sends `value` and wakes the receiver. Returns it if the receiver is gone.
    pub(crate) fn send(&self, value: T) -> Result<(), T> {
        let Some(tx) = &self.tx else { return Err(value) };
        tx.send(value).map_err(|e| e.0)?;
        self.waker.wake();
        Ok(())
    }
}

impl<T> Inbox<T> {
    /// The next value if one is queued now.
    pub(crate) fn try_recv(&self) -> Option<T> {
        self.rx.try_recv().ok()
    }

    /// The next value, or `None` once every sender is gone and the queue is empty.
    pub(crate) async fn recv(&self) -> Option<T> {
        std::future::poll_fn(|cx| match self.rx.try_recv() {
            Ok(v) => Poll::Ready(Some(v)),
            Err(TryRecvError::Disconnected) => Poll::Ready(None),
            Err(TryRecvError::Empty) => {
                self.waker.register(cx.waker());
                // A value sent between the first check and the registration
                // would otherwise wait for the next wake-up.
                match self.rx.try_recv() {
                    Ok(v) => Poll::Ready(Some(v)),
                    Err(TryRecvError::Disconnected) => Poll::Ready(None),
                    Err(TryRecvError::Empty) => Poll::Pending,
                }
            }
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_parked_receiver_wakes_when_the_last_sender_goes() {
        let (tx, rx) = channel::<u64>();
        let dropper = std::thread::spawn(move || {
            std::thread::sleep(std::time::Duration::from_millis(50));
            drop(tx);
        });
        let ex = glommio::LocalExecutorBuilder::default().make().expect("executor");
        assert_eq!(ex.run(async move { rx.recv().await }), None);
        dropper.join().expect("dropper");
    }

    /// The receiver polls while another thread drops the last sender, many
    /// times over: each close must wake it (a lost wake-up here once left a
    /// shard parked forever at stop).
    #[test]
    fn a_close_racing_the_receiver_is_never_missed() {
        const ROUNDS: usize = 2_000;
        let (hand, dropper_rx) = crossbeam::channel::unbounded::<Outbox<u64>>();
        let dropper = std::thread::spawn(move || {
            for tx in dropper_rx {
                drop(tx);
            }
        });
        // The executor runs on its own thread: a missed close parks it for
        // good (its own timers included, as seen with glommio 0.9), so the
        // test waits with a deadline instead of hanging.
        let (done_tx, done_rx) = crossbeam::channel::bounded(1);
        std::thread::spawn(move || {
            let ex = glommio::LocalExecutorBuilder::default().make().expect("executor");
            ex.run(async move {
                for _ in 0..ROUNDS {
                    let (tx, rx) = channel::<u64>();
                    hand.send(tx).expect("dropper alive");
                    assert!(rx.recv().await.is_none());
                }
            });
            let _ = done_tx.send(());
        });
        let finished = done_rx.recv_timeout(std::time::Duration::from_secs(30)).is_ok();
        assert!(finished, "the receiver missed a close and stayed parked");
        dropper.join().expect("dropper");
    }

    #[test]
    fn a_glommio_task_receives_what_another_thread_sends() {
        let (tx, rx) = channel::<u64>();
        let sender = std::thread::spawn(move || {
            for i in 0..10_000u64 {
                if i % 1000 == 0 {
                    std::thread::sleep(std::time::Duration::from_millis(1));
                }
                tx.send(i).expect("receiver alive");
            }
        });
        let ex = glommio::LocalExecutorBuilder::default().make().expect("executor");
        let (count, sum) = ex.run(async move {
            let (mut count, mut sum) = (0u64, 0u64);
            while let Some(v) = rx.recv().await {
                count += 1;
                sum += v;
            }
            (count, sum)
        });
        sender.join().expect("sender");
        assert_eq!(count, 10_000);
        assert_eq!(sum, (0..10_000u64).sum::<u64>());
    }
}
