//! One queue's task: the code a shard runs for each queue it owns, and the
//! [`TopologyTestDriver`](crate::TopologyTestDriver) for each of its
//! in-memory queues, so what a test drives is what a job runs.
//!
//! ```text
//!  messages of the queue ──► run ──► pipeline (decode, operators; a shuffle queue's frames
//!                                     deduplicated by origin high-water marks) ──► ctx outputs
//!                                 └─ a record that fails ──► judge (the error policy)
//!  quiet queue ──► resume ─► idle step (stream time follows the wall clock)
//!                            └─ made durable by the caller ─► fire_idle ──► ctx outputs
//! ```
//!
//! The task owns no store and sends nothing: the caller puts the queue's
//! store in the [`Context`] and takes the outputs from it (a shard sends
//! them to the broker and checkpoints; the driver moves them to its
//! in-memory topics). A step that fails leaves no output in the context:
//! a batch that stops half-way sends nothing, and the outputs of its first
//! records never ride along with the next queue's sends (issue 28).

use bytes::Bytes;
use rocketmq_streams_io::{QueueId, Record};

use crate::error::{SerdeError, StreamsError};
use crate::processor::Context;
use crate::topology::SourcePipeline;

/// The error policy as a task sees it: the failed record's bytes, why it
/// failed, and where (`queue:offset#index`); `Err` stops the queue.
pub(crate) type Judge<'a> = dyn FnMut(&Bytes, &StreamsError, String) -> Result<(), StreamsError> + 'a;

/// The per-queue task: a queue's pipeline and the identity its outputs
/// carry.
pub(crate) struct QueueTask {
    /// The queue, as sources that read message metadata show it.
    queue: QueueId,
    /// The queue's name, in error locations.
    name: String,
    /// [`origin_id`](rocketmq_streams_shuffle::origin_id) of the name:
    /// what the queue's shuffled outputs carry.
    origin: u64,
    pipeline: Box<dyn SourcePipeline>,
}

impl QueueTask {
    /// The task of `queue`, called `name` (its origin id is the name's).
    pub(crate) fn new(queue: QueueId, name: String, pipeline: Box<dyn SourcePipeline>) -> QueueTask {
        QueueTask {
            origin: rocketmq_streams_shuffle::origin_id(&name),
            queue,
            name,
            pipeline,
        }
    }

    /// Runs `messages`, in order, through the pipeline; each record that
    /// fails goes to `judge`.
    ///
    /// # Errors
    ///
    /// The first `Err` of `judge`, or a store that failed.
    pub(crate) fn run<'m>(
        &mut self,
        messages: impl IntoIterator<Item = &'m Record>,
        ctx: &mut Context,
        judge: &mut Judge<'_>,
    ) -> Result<(), StreamsError> {
        for message in messages {
            let offset = message.offset.0;
            ctx.begin_record(self.origin, offset);
            let name = &self.name;
            let mut failed = |body: &Bytes, index: Option<u32>, error: StreamsError| {
                let at = match index {
                    Some(i) => format!("{name}:{offset}#{i}"),
                    None => format!("{name}:{offset}"),
                };
                judge(body, &error, at)
            };
            let processed = match &message.malformed {
                // No record to process (no body): the policy's, with why.
                Some(why) => {
                    ctx.unframed += 1;
                    failed(&message.body, None, SerdeError::new("message", why.clone()).into())
                }
                None => self.pipeline.process(&self.queue, message, ctx, &mut failed),
            };
            if let Err(e) = processed {
                ctx.discard_outputs();
                return Err(e);
            }
        }
        Ok(())
    }

    /// Once the queue's last message is `last`: fires what a durable
    /// idle step left unfired, if the pipeline has not done so since it
    /// started (see [`SourcePipeline::resume`]).
    ///
    /// # Errors
    ///
    /// As [`run`](Self::run).
    pub(crate) fn resume(&mut self, last: i64, ctx: &mut Context, judge: &mut Judge<'_>) -> Result<(), StreamsError> {
        ctx.begin_record(self.origin, last);
        let at = format!("{}:idle", self.name);
        let mut failed = |body: &Bytes, _: Option<u32>, error: StreamsError| judge(body, &error, at.clone());
        let resumed = self.pipeline.resume(ctx, &mut failed);
        discard_on_error(ctx, resumed)
    }

    /// An idle step of a queue whose last message is `last` and that has
    /// had none for `idle_ms` of wall-clock time (see
    /// [`SourcePipeline::idle`]): whether windows are due. It only writes
    /// to the store.
    ///
    /// # Errors
    ///
    /// A store that failed.
    pub(crate) fn idle(&mut self, last: i64, idle_ms: i64, ctx: &mut Context) -> Result<bool, StreamsError> {
        ctx.begin_record(self.origin, last);
        self.pipeline.idle(idle_ms, ctx)
    }

    /// Fires what the last idle step made due, once it is durable.
    ///
    /// # Errors
    ///
    /// As [`run`](Self::run).
    pub(crate) fn fire_idle(
        &mut self,
        last: i64,
        ctx: &mut Context,
        judge: &mut Judge<'_>,
    ) -> Result<(), StreamsError> {
        ctx.begin_record(self.origin, last);
        let at = format!("{}:idle", self.name);
        let mut failed = |body: &Bytes, _: Option<u32>, error: StreamsError| judge(body, &error, at.clone());
        let fired = self.pipeline.fire_idle(ctx, &mut failed);
        discard_on_error(ctx, fired)
    }

    /// Emits what the pipeline held back (see [`SourcePipeline::flush`]).
    ///
    /// # Errors
    ///
    /// A store that failed, or a state that does not encode.
    pub(crate) fn flush(&mut self, ctx: &mut Context) -> Result<(), StreamsError> {
        let flushed = self.pipeline.flush(ctx);
        discard_on_error(ctx, flushed)
    }
}

/// `result`, with the context's outputs discarded if it is an error.
fn discard_on_error<T>(ctx: &mut Context, result: Result<T, StreamsError>) -> Result<T, StreamsError> {
    if result.is_err() {
        ctx.discard_outputs();
    }
    result
}

#[cfg(test)]
mod tests {
    use rocketmq_streams_io::Offset;

    use super::*;
    use crate::prelude::*;

    /// Issue 28: a batch whose third record fails under `Fail` left the
    /// first two records' outputs in the context, and the shard sent them
    /// with the next batch of another queue.
    #[test]
    fn a_batch_that_fails_leaves_no_output_behind() {
        let builder = StreamBuilder::new("discard");
        builder
            .source("in", Utf8)
            .map(|s: String| {
                assert!(s != "poison", "a poison record");
                s
            })
            .sink("out", Utf8);
        let topology = builder.build().expect("topology");
        let pipeline = topology.pipeline("in").expect("a pipeline");
        let mut task = QueueTask::new(QueueId::new("in", "b", 0), "in#0".into(), pipeline);
        let mut ctx = Context::new(1);
        let batch: Vec<Record> = ["a", "b", "poison", "c"]
            .iter()
            .enumerate()
            .map(|(i, s)| Record::new(Offset(i as i64), Bytes::from_static(s.as_bytes()), 0))
            .collect();
        let mut judged = Vec::new();
        let err = task
            .run(&batch, &mut ctx, &mut |_, error, at| {
                judged.push(at);
                Err(StreamsError::RecordFailed {
                    origin: "in#0".into(),
                    cause: error.to_string(),
                })
            })
            .expect_err("the policy is Fail");
        assert!(matches!(err, StreamsError::RecordFailed { .. }), "{err}");
        assert_eq!(judged, vec!["in#0:2".to_string()]);
        assert!(
            ctx.outputs.iter().all(Vec::is_empty) && ctx.shuffle.is_empty() && ctx.records_out == 0,
            "outputs left behind: {:?}",
            ctx.outputs
        );
        // The same batch under Skip: three outputs, the poison skipped.
        task.run(&batch, &mut ctx, &mut |_, _, _| Ok(())).expect("skipped");
        assert_eq!(ctx.outputs[0].len(), 3);
    }

    /// Issue 28: a message without a body was an empty record; it now goes
    /// to the error policy with its reason, and the batch goes on.
    #[test]
    fn a_message_without_a_body_goes_to_the_policy_with_its_reason() {
        let builder = StreamBuilder::new("bodies");
        builder.source("in", Utf8).sink("out", Utf8);
        let topology = builder.build().expect("topology");
        let mut task = QueueTask::new(
            QueueId::new("in", "b", 0),
            "in#0".into(),
            topology.pipeline("in").expect("a pipeline"),
        );
        let mut ctx = Context::new(1);
        let batch = [
            Record {
                malformed: Some("message m at offset 0 has no body".into()),
                ..Record::new(Offset(0), Bytes::new(), 0)
            },
            Record::new(Offset(1), Bytes::from_static(b"x"), 0),
        ];
        let mut judged = Vec::new();
        task.run(&batch, &mut ctx, &mut |_, error, at| {
            judged.push((at, error.to_string()));
            Ok(())
        })
        .expect("skipped");
        assert_eq!(judged.len(), 1);
        assert_eq!(judged[0].0, "in#0:0");
        assert!(judged[0].1.contains("has no body"), "{}", judged[0].1);
        assert_eq!(ctx.outputs[0].len(), 1, "the empty body was not processed");
        assert_eq!(ctx.unframed, 1, "counted as a record read");
    }
}
