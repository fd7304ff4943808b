//! Back-pressure per shard: which polled batches go to their shard now,
//! which wait, and which queues the consumer stops pulling meanwhile.
//!
//! ```text
//!  poll ──► batch of q ──► shard s of q has room (fewer than max batches unfinished)
//!                │              and nothing of s waits ──────────────────────► to s now
//!                └─ otherwise ──► waits here, in order, for s ──► to s once it has room
//!  every loop: the queues of full shards are paused (the consumer stops pulling them),
//!              the others resumed once nothing of theirs waits
//! ```
//!
//! A shard that falls behind — its sends wait for a stalled broker, or a
//! queue of it restores and holds its batches — stops getting records; the
//! other shards go on (before issue 28 one full shard stopped polling for
//! the whole instance). What waits here is bounded by what the consumer had
//! pulled of the paused queues: at most `min(1000, consumer_buffer)`
//! messages and one pull per queue.

use std::collections::{HashMap, HashSet, VecDeque};

use rocketmq_streams_io::{QueueBatch, QueueId};

/// The batches waiting for each shard, and the queues paused.
#[derive(Debug)]
pub(crate) struct Admission {
    max_in_flight: usize,
    waiting: Vec<VecDeque<QueueBatch>>,
    paused: HashSet<QueueId>,
}

impl Admission {
    /// Back-pressure over `shards` shards, each taking at most
    /// `max_in_flight` batches unfinished.
    pub(crate) fn new(shards: usize, max_in_flight: usize) -> Admission {
        Admission {
            max_in_flight,
            waiting: (0..shards).map(|_| VecDeque::new()).collect(),
            paused: HashSet::new(),
        }
    }

    /// Whether a shard with `in_flight` batches unfinished takes another.
    pub(crate) fn has_room(&self, in_flight: usize) -> bool {
        in_flight < self.max_in_flight
    }

    /// Whether every shard is full: polling would only add to what waits.
    pub(crate) fn all_full(&self, in_flight: &[usize]) -> bool {
        in_flight.iter().all(|&n| !self.has_room(n))
    }

    /// `batch`, polled for `shard` (with `in_flight` batches unfinished):
    /// returned to be sent now, or kept to wait behind what already waits.
    pub(crate) fn admit(&mut self, shard: usize, in_flight: usize, batch: QueueBatch) -> Option<QueueBatch> {
        let waiting = &mut self.waiting[shard];
        if waiting.is_empty() && in_flight < self.max_in_flight {
            return Some(batch);
        }
        waiting.push_back(batch);
        None
    }

    /// The next waiting batch of `shard`, if it has room for it now.
    pub(crate) fn next_for(&mut self, shard: usize, in_flight: usize) -> Option<QueueBatch> {
        if in_flight < self.max_in_flight {
            self.waiting[shard].pop_front()
        } else {
            None
        }
    }

    /// Forgets what waits of `queue` (revoked: never processed, never
    /// acknowledged) and its pause.
    pub(crate) fn forget(&mut self, queue: &QueueId) {
        for waiting in &mut self.waiting {
            waiting.retain(|b| &b.queue != queue);
        }
        self.paused.remove(queue);
    }

    /// The queues to pause now (those of full shards) and to resume (of
    /// shards with room and nothing waiting), given which shard owns which
    /// queue and each shard's batches unfinished.
    pub(crate) fn pauses(
        &mut self,
        owner: &HashMap<QueueId, usize>,
        in_flight: &[usize],
    ) -> (Vec<QueueId>, Vec<QueueId>) {
        let hold = |s: usize| !self.has_room(in_flight[s]) || !self.waiting[s].is_empty();
        let should: HashSet<&QueueId> = owner.iter().filter(|(_, &s)| hold(s)).map(|(q, _)| q).collect();
        let pause: Vec<QueueId> = should
            .iter()
            .filter(|q| !self.paused.contains(**q))
            .map(|q| (*q).clone())
            .collect();
        let resume: Vec<QueueId> = self.paused.iter().filter(|q| !should.contains(q)).cloned().collect();
        for q in &pause {
            self.paused.insert(q.clone());
        }
        for q in &resume {
            self.paused.remove(q);
        }
        (pause, resume)
    }
}

#[cfg(test)]
mod tests {
    use rocketmq_streams_io::{Offset, Record};

    use super::*;

    fn q(i: u32) -> QueueId {
        QueueId::new("in", "broker-a", i)
    }

    fn batch(queue: u32, offset: i64) -> QueueBatch {
        QueueBatch {
            queue: q(queue),
            records: vec![Record::new(Offset(offset), bytes::Bytes::new(), 0)],
        }
    }

    /// Issue 28: a shard full of held batches (a queue of it restoring)
    /// stopped polling for the whole instance. Now only its queues wait.
    #[test]
    fn a_full_shard_waits_alone_and_gets_its_batches_in_order() {
        let mut a = Admission::new(2, 16);
        let owner = HashMap::from([(q(0), 0), (q(1), 1)]);
        let mut in_flight = [16, 0];
        assert!(!a.all_full(&in_flight), "shard 1 still takes records: poll");
        assert!(a.admit(1, in_flight[1], batch(1, 0)).is_some(), "to shard 1 now");
        assert!(a.admit(0, in_flight[0], batch(0, 0)).is_none());
        assert!(a.admit(0, in_flight[0], batch(0, 1)).is_none());
        let (pause, resume) = a.pauses(&owner, &in_flight);
        assert_eq!((pause, resume), (vec![q(0)], vec![]));
        // Shard 0 drains one: its waiting batches go first, in order; a
        // batch polled meanwhile queues behind them.
        in_flight[0] = 15;
        assert!(a.admit(0, in_flight[0], batch(0, 2)).is_none(), "behind what waits");
        let next = a.next_for(0, in_flight[0]).expect("room for one");
        assert_eq!(next.records[0].offset, Offset(0));
        in_flight[0] = 16;
        assert!(a.next_for(0, in_flight[0]).is_none());
        assert_eq!(a.pauses(&owner, &in_flight), (vec![], vec![]), "still paused");
        in_flight[0] = 0;
        let rest: Vec<i64> = std::iter::from_fn(|| a.next_for(0, 0))
            .map(|b| b.records[0].offset.0)
            .collect();
        assert_eq!(rest, [1, 2]);
        assert_eq!(a.pauses(&owner, &in_flight), (vec![], vec![q(0)]), "resumed");
        in_flight = [16, 16];
        assert!(a.all_full(&in_flight));
    }

    #[test]
    fn a_revoked_queue_is_forgotten() {
        let mut a = Admission::new(1, 1);
        let owner = HashMap::from([(q(0), 0), (q(1), 0)]);
        assert!(a.admit(0, 1, batch(0, 0)).is_none());
        assert!(a.admit(0, 1, batch(1, 0)).is_none());
        assert_eq!(a.pauses(&owner, &[1]).0.len(), 2);
        a.forget(&q(0));
        let left: Vec<QueueId> = std::iter::from_fn(|| a.next_for(0, 0)).map(|b| b.queue).collect();
        assert_eq!(left, [q(1)]);
    }
}
