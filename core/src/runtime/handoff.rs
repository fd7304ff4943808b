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
use std::sync::Arc;

use rocketmq_streams_io::{OutRecord, QueueId, Sink};

use super::inbox::{Inbox, Outbox};
use super::metrics::ShuffleWritten;
use crate::error::StreamsError;

/// The answer to one hand-off: the sender's batch it belongs to, and how
/// many shuffled records the broker stored.
pub(crate) type Answer = (u64, Result<usize, StreamsError>);

/// Records one shard hands the writer of `target`.
pub(crate) struct HandOff {
    pub(crate) target: QueueId,
    pub(crate) records: Vec<OutRecord>,
    /// The shuffled records the messages hold (frames hold many).
    pub(crate) count: usize,
    /// The sender's batch number, returned with the answer: a batch that
    /// failed before it had every answer leaves the rest in the channel,
    /// and the next batch must not take them for its own.
    pub(crate) batch: u64,
    pub(crate) answer: Outbox<Answer>,
}

/// Awaits the answers to `expected` hand-offs of batch `batch`, skipping
/// answers left over from earlier batches; returns the records stored.
///
/// # Errors
///
/// The first failed hand-off's error, or a closed channel.
pub(crate) async fn await_answers(answers: &Inbox<Answer>, batch: u64, expected: usize) -> Result<usize, StreamsError> {
    let mut stored = 0;
    let mut received = 0;
    while received < expected {
        match answers.recv().await {
            Some((b, _)) if b != batch => {}
            Some((_, Ok(n))) => {
                stored += n;
                received += 1;
            }
            Some((_, Err(e))) => return Err(e),
            None => return Err(StreamsError::Topology("hand-off answers closed".into())),
        }
    }
    Ok(stored)
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
pub(crate) async fn write_handed(
    from: Inbox<HandOff>,
    sink: Sink,
    outage: std::time::Duration,
    written: Option<Arc<ShuffleWritten>>,
) {
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
                let counts: Vec<(u64, usize)> = group.iter().map(|h| (h.batch, h.count)).collect();
                let (records, answers): (Vec<Vec<OutRecord>>, Vec<Outbox<Answer>>) =
                    group.into_iter().map(|h| (h.records, h.answer)).unzip();
                let records: Vec<OutRecord> = records.into_iter().flatten().collect();
                (
                    counts,
                    answers,
                    super::shard::send_retrying(&sink, target, records, outage, None),
                )
            })
            .collect();
        for (counts, answers, task) in sends {
            let result = task.await;
            if let (Ok(ack), Some(w)) = (&result, &written) {
                w.record(&ack.queue, ack.last_offset);
            }
            for ((batch, count), answer) in counts.into_iter().zip(answers) {
                let reply = match &result {
                    Ok(_) => (batch, Ok(count)),
                    Err(e) => (
                        batch,
                        Err(StreamsError::Topology(format!("handed-off shuffle send failed: {e}"))),
                    ),
                };
                // The sender may be gone (its job failed): nothing to tell.
                let _ = answer.send(reply);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_left_by_a_failed_batch_are_not_taken_by_the_next() {
        let (to, answers) = super::super::inbox::channel::<Answer>();
        // Batch 1 handed off three times; its first answer was an error, on
        // which it stopped waiting: two answers of batch 1 are still queued.
        to.send((1, Err(StreamsError::Topology("send failed".into())))).ok();
        to.send((1, Ok(5))).ok();
        to.send((1, Ok(7))).ok();
        // Batch 2's send failed: its answer must be the error, not batch 1's counts.
        to.send((2, Err(StreamsError::Topology("send failed again".into()))))
            .ok();
        to.send((3, Ok(2))).ok();
        let ex = glommio::LocalExecutorBuilder::default().make().expect("executor");
        ex.run(async {
            assert!(await_answers(&answers, 1, 1).await.is_err());
            assert!(
                await_answers(&answers, 2, 1).await.is_err(),
                "batch 2 took batch 1's answers"
            );
            assert_eq!(await_answers(&answers, 3, 1).await.expect("batch 3"), 2);
        });
    }
}
