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
//! in-memory topics).

use bytes::Bytes;
use rocketmq_streams_io::{QueueId, Record};

use crate::error::StreamsError;
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
            self.pipeline.process(&self.queue, message, ctx, &mut failed)?;
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
        self.pipeline.resume(ctx, &mut failed)
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
        self.pipeline.fire_idle(ctx, &mut failed)
    }

    /// Emits what the pipeline held back (see [`SourcePipeline::flush`]).
    ///
    /// # Errors
    ///
    /// A store that failed, or a state that does not encode.
    pub(crate) fn flush(&mut self, ctx: &mut Context) -> Result<(), StreamsError> {
        self.pipeline.flush(ctx)
    }
}
