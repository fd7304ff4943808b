//! When a keyed aggregation emits its results.

/// When an aggregation of a [`GroupedStream`](crate::GroupedStream) emits
/// the results it computes. The state is the same under both; only the
/// number of outputs differs.
///
/// ```
/// use rocketmq_streams::prelude::*;
///
/// let builder = StreamBuilder::new("wc");
/// builder
///     .source("lines", Utf8)
///     .flat_map(|l: String| l.split(' ').map(str::to_owned).collect::<Vec<_>>())
///     .key_by(|w: &String| w.clone())
///     .emit(Emit::OnCommit)
///     .count()
///     .sink("counts", Json::<(String, u64)>::new());
/// assert!(builder.build().is_ok());
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Emit {
    /// Every update: one output per input record, the key's new result
    /// (RocketMQ Streams' behaviour).
    #[default]
    OnUpdate,
    /// The latest result of every key updated since the last commit, once
    /// per commit (each checkpoint of the key's queue; the test driver's
    /// [`commit`](crate::TopologyTestDriver::commit)), as Kafka Streams'
    /// record cache does: far fewer outputs for hot keys.
    ///
    /// Results emitted on commit depend on when commits happen, so a replay
    /// after a crash could not be recognised downstream: a `key_by` or
    /// another aggregation after an `OnCommit` aggregation is refused by
    /// [`StreamBuilder::build`](crate::StreamBuilder::build). Stateless
    /// operators, sinks, `foreach` and `print` may follow it.
    ///
    /// A held result that fails on its way out (a panic downstream, a sink
    /// serializer error, an output over the message limit) goes through
    /// the error policy as its serialized key; the state keeps the update,
    /// and the key's next result carries it.
    OnCommit,
}
