//! Cross-core hand-off of shuffled records (`ShuffleHandOff::WriterShard`).
//!
//! Each shuffle queue has one writer shard (`queue % shards`). A shard hands
//! the records it shuffles to another shard's queue to that shard through a
//! lock-free crossbeam channel ([`Outbox`]); the writer's hand-off task
//! gathers what every shard handed it since its last send into one send per
//! queue, and answers each hand-off on the sender's own channel once the
//! broker has acknowledged it. The sending shard acknowledges its batch only
//! after every answer, so at-least-once holds as with direct sends.
//!
//! ```text
//!  shard 0 ── records for queues 1,3,5,7 ──► hand-off task of shard 1 ──► send per queue ──► broker
//!     ▲                                              │
//!     └──────────── answer (stored count / error) ◄──┘
//! ```

use std::collections::HashMap;

use rocketmq_streams_io::{OutRecord, QueueId, Sink};

use super::inbox::{Inbox, Outbox};
use crate::error::StreamsError;

/// The answer to one hand-off: how many records the broker stored.
pub(crate) type Answer = Result<usize, StreamsError>;

/// Records one shard hands the writer of `target`.
pub(crate) struct HandOff {
    pub(crate) target: QueueId,
    pub(crate) records: Vec<OutRecord>,
    pub(crate) answer: Outbox<Answer>,
}

/// A shard's ends of the hand-off channels.
pub(crate) struct HandOffLinks {
    /// To each shard's hand-off task; `None` at this shard's own index.
    pub(crate) to: Vec<Option<Outbox<HandOff>>>,
    /// Hand-offs other shards give this shard to write.
    pub(crate) from: Option<Inbox<HandOff>>,
    /// Answers to this shard's hand-offs, and the end handed out with them.
    pub(crate) answers: Inbox<Answer>,
    pub(crate) answer_to: Outbox<Answer>,
}

impl HandOffLinks {
    /// The links of `shards` shards, fully connected.
    pub(crate) fn mesh(shards: usize) -> Vec<HandOffLinks> {
        let (outs, ins): (Vec<_>, Vec<_>) = (0..shards).map(|_| super::inbox::channel::<HandOff>()).unzip();
        ins.into_iter()
            .enumerate()
            .map(|(me, from)| {
                let (answer_to, answers) = super::inbox::channel();
                HandOffLinks {
                    to: outs
                        .iter()
                        .enumerate()
                        .map(|(i, o)| (i != me).then(|| o.clone()))
                        .collect(),
                    from: Some(from),
                    answers,
                    answer_to,
                }
            })
            .collect()
    }

    /// The shard writing shuffle queue `index` of `shards`.
    pub(crate) fn writer_of(index: usize, shards: usize) -> usize {
        index % shards.max(1)
    }
}

/// The hand-off task of one shard: until every other shard has let go of
/// its channel, takes what is handed, sends it gathered per queue, answers.
pub(crate) async fn write_handed(from: Inbox<HandOff>, sink: Sink) {
    while let Some(first) = from.recv().await {
        let mut handed = vec![first];
        while let Some(more) = from.try_recv() {
            handed.push(more);
        }
        let mut by_target: HashMap<QueueId, Vec<HandOff>> = HashMap::new();
        for h in handed {
            by_target.entry(h.target.clone()).or_default().push(h);
        }
        let sends: Vec<_> = by_target
            .into_iter()
            .map(|(target, group)| {
                let counts: Vec<usize> = group.iter().map(|h| h.records.len()).collect();
                let (records, answers): (Vec<Vec<OutRecord>>, Vec<Outbox<Answer>>) =
                    group.into_iter().map(|h| (h.records, h.answer)).unzip();
                let records: Vec<OutRecord> = records.into_iter().flatten().collect();
                (counts, answers, super::shard::send_retrying(&sink, target, records))
            })
            .collect();
        for (counts, answers, task) in sends {
            let result = task.await;
            for (count, answer) in counts.into_iter().zip(answers) {
                let reply = match &result {
                    Ok(_) => Ok(count),
                    Err(e) => Err(StreamsError::Topology(format!("handed-off shuffle send failed: {e}"))),
                };
                // The sender may be gone (its job failed): nothing to tell.
                let _ = answer.send(reply);
            }
        }
    }
}
