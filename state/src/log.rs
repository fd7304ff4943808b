//! The state topic as the protocol sees it: one queue to append to and to
//! read back, behind a trait so that the protocol runs the same on a
//! broker and in a unit test.

use std::cell::{Cell, RefCell};
use std::time::Duration;

use bytes::Bytes;

use crate::error::{Result, StateError};

/// One message read from a state-topic queue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogRecord {
    /// Its offset in the queue.
    pub offset: i64,
    /// Its body.
    pub body: Bytes,
}

/// One read of a [`StateLog`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LogChunk {
    /// The records read, in offset order.
    pub records: Vec<LogRecord>,
    /// The offset to read from next.
    pub next: i64,
}

/// One queue of the state topic.
///
/// The offsets `append` returns are the broker's acknowledgement: the
/// messages are stored. They need not be *readable* yet: RocketMQ assigns a
/// message its queue offset when it appends it to the commit log, and makes
/// it readable later, when its dispatch ("reput") service has written the
/// consume-queue entry; `bounds` reports the readable end. The protocol
/// never takes a readable end for the true end (see the crate docs).
///
/// The futures need not be `Send`: a shard's executor is single-threaded.
#[allow(async_fn_in_trait)]
pub trait StateLog {
    /// The queue's name, for errors and logs.
    fn name(&self) -> String;

    /// Appends `bodies` in order and returns the offset the broker
    /// acknowledged for the last one.
    ///
    /// # Errors
    ///
    /// [`StateError::Log`] when the broker does not acknowledge them; some
    /// may be stored all the same.
    async fn append(&self, bodies: Vec<Bytes>) -> Result<i64>;

    /// The queue's first offset and its readable end (one past the last
    /// readable message), as the broker reports them now.
    ///
    /// # Errors
    ///
    /// [`StateError::Log`] when the broker cannot be asked.
    async fn bounds(&self) -> Result<(i64, i64)>;

    /// Reads up to `max` readable messages from offset `from`.
    ///
    /// # Errors
    ///
    /// [`StateError::Log`] when the read fails.
    async fn read(&self, from: i64, max: u32) -> Result<LogChunk>;

    /// Waits `pause` (between polls of a queue whose readable end trails).
    async fn pause(&self, pause: Duration);
}

/// A [`StateLog`] in memory whose readable end can trail its acknowledged
/// end, as a busy broker's does: each append hides its messages for
/// `hide_for` calls of [`pause`](StateLog::pause). For tests of the
/// protocol and of code that drives it.
#[derive(Debug, Default)]
pub struct MemoryLog {
    bodies: RefCell<Vec<Bytes>>,
    /// Per message, the pause count after which it is readable.
    readable_at: RefCell<Vec<u64>>,
    pauses: Cell<u64>,
    hide_for: Cell<u64>,
    stalls: Cell<u32>,
    first: Cell<i64>,
    /// A partial append to come: after how many more appends, and how many
    /// of its bodies are stored before it fails.
    partial: Cell<Option<(u32, usize)>>,
}

impl MemoryLog {
    /// An empty log whose appends are readable at once.
    pub fn new() -> MemoryLog {
        MemoryLog::default()
    }

    /// From now on, each append stays unreadable for `pauses` pauses.
    pub fn hide_appends_for(&self, pauses: u64) {
        self.hide_for.set(pauses);
    }

    /// The next `appends` appends each stay unreadable until the append
    /// after them, as with a broker whose dispatch waits for a new write
    /// after an empty read (rocketmq-store 1.0.0's reput reader).
    pub fn stall_appends(&self, appends: u32) {
        self.stalls.set(appends);
    }

    /// The append after the next `skip` appends stores only its first
    /// `stored` bodies and then fails (a retriable [`StateError::Log`]), as
    /// a broker append does when the sink splits it into several sends and
    /// one after the first fails: the caller cannot tell what was stored.
    pub fn fail_append_after(&self, skip: u32, stored: usize) {
        self.partial.set(Some((skip, stored)));
    }

    /// Makes everything appended so far readable.
    pub fn reveal_all(&self) {
        for at in self.readable_at.borrow_mut().iter_mut() {
            *at = 0;
        }
    }

    /// Deletes the messages before `first`, as the broker's retention does.
    pub fn truncate_before(&self, first: i64) {
        self.first.set(first);
    }

    /// Appends `body` at once (outside any executor), readable at once.
    pub fn append_now(&self, body: Bytes) -> i64 {
        self.bodies.borrow_mut().push(body);
        self.readable_at.borrow_mut().push(0);
        self.bodies.borrow().len() as i64 - 1
    }

    /// The acknowledged end: one past the last appended message.
    pub fn acknowledged_end(&self) -> i64 {
        self.bodies.borrow().len() as i64
    }

    /// The message at `offset`, readable or not.
    pub fn get(&self, offset: i64) -> Option<Bytes> {
        usize::try_from(offset)
            .ok()
            .and_then(|i| self.bodies.borrow().get(i).cloned())
    }

    fn reveal_all_stalled(&self) {
        for at in self.readable_at.borrow_mut().iter_mut().filter(|at| **at == u64::MAX) {
            *at = 0;
        }
    }

    fn readable_end(&self) -> i64 {
        let now = self.pauses.get();
        let at = self.readable_at.borrow();
        // Readable in order: a message is readable once it and all before it are.
        at.iter().position(|&t| t > now).unwrap_or(at.len()) as i64
    }
}

impl StateLog for MemoryLog {
    fn name(&self) -> String {
        "memory".into()
    }

    async fn append(&self, bodies: Vec<Bytes>) -> Result<i64> {
        if bodies.is_empty() {
            return Err(StateError::Log {
                queue: self.name(),
                message: "empty append".into(),
                retriable: false,
            });
        }
        // The write a stalled dispatch waited for makes what it holds readable.
        self.reveal_all_stalled();
        let readable = if self.stalls.get() > 0 {
            self.stalls.set(self.stalls.get() - 1);
            u64::MAX
        } else {
            self.pauses.get().saturating_add(self.hide_for.get())
        };
        let mut kept = bodies.len();
        match self.partial.get() {
            Some((0, stored)) => {
                self.partial.set(None);
                kept = stored.min(bodies.len());
            }
            Some((skip, stored)) => self.partial.set(Some((skip - 1, stored))),
            None => {}
        }
        let appended = bodies.len();
        let mut log = self.bodies.borrow_mut();
        let mut at = self.readable_at.borrow_mut();
        for b in bodies.into_iter().take(kept) {
            log.push(b);
            at.push(readable);
        }
        if kept < appended {
            return Err(StateError::Log {
                queue: self.name(),
                message: format!("stored {kept} of {appended} messages, then the send failed"),
                retriable: true,
            });
        }
        Ok(log.len() as i64 - 1)
    }

    async fn bounds(&self) -> Result<(i64, i64)> {
        Ok((self.first.get(), self.readable_end().max(self.first.get())))
    }

    async fn read(&self, from: i64, max: u32) -> Result<LogChunk> {
        let from = from.max(self.first.get());
        let end = self.readable_end().min(from + i64::from(max));
        let log = self.bodies.borrow();
        let records = (from..end)
            .map(|offset| LogRecord {
                offset,
                body: log[offset as usize].clone(),
            })
            .collect();
        Ok(LogChunk {
            records,
            next: end.max(from),
        })
    }

    async fn pause(&self, _pause: Duration) {
        self.pauses.set(self.pauses.get() + 1);
    }
}
