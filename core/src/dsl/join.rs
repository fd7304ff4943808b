//! Joins of two streams: `left.join(&right).on(..).within(..).apply(..)`.

use std::marker::PhantomData;
use std::sync::Arc;
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::Serialize;

use super::builder::{lock, KeyedDef};
use super::rstream::{RStream, Slot};
use crate::join::{spec_of, Inner, JoinSpec, JoinWindowSpec, Left, Outer};
use crate::operators::join::{Join, Joiner};
use crate::operators::shuffle_source::KeyedEntry;

/// The first stage of a join of a stream of `L` with one of `R`, made by
/// [`RStream::join`], [`RStream::left_join`] or [`RStream::outer_join`]
/// (`M` is [`Inner`], [`Left`] or [`Outer`]): say which key each side
/// joins on with [`on`](Self::on).
#[must_use = "a join does nothing until `on(..)` and `apply(..)`"]
pub struct JoinBuilder<L, R, M> {
    left: RStream<L>,
    right: RStream<R>,
    _mode: PhantomData<M>,
}

impl<L, R, M> JoinBuilder<L, R, M> {
    pub(crate) fn new(left: RStream<L>, right: RStream<R>) -> Self {
        JoinBuilder {
            left,
            right,
            _mode: PhantomData,
        }
    }

    /// Joins a left value and a right value when `left_key` and
    /// `right_key` select equal keys (equal once serialized: both sides
    /// are re-keyed through the shuffle topic, so the records of a key
    /// meet in one shuffle queue). The join is unwindowed until
    /// [`within`](KeyedJoin::within) gives it a window.
    pub fn on<K, FL, FR>(self, left_key: FL, right_key: FR) -> KeyedJoin<K, L, R, M>
    where
        FL: Fn(&L) -> K + Send + Sync + 'static,
        FR: Fn(&R) -> K + Send + Sync + 'static,
    {
        KeyedJoin {
            left: self.left,
            right: self.right,
            left_key: Arc::new(left_key),
            right_key: Arc::new(right_key),
            spec: Ok(JoinSpec::unwindowed(i64::MAX)),
            _mode: PhantomData,
        }
    }
}

/// A join with its keys: give it a window ([`within`](Self::within)) or
/// a retention ([`retain`](Self::retain)), then the joiner
/// ([`apply`](KeyedJoin::apply)), which returns the stream of results.
#[must_use = "a join does nothing until `apply(..)`"]
pub struct KeyedJoin<K, L, R, M> {
    left: RStream<L>,
    right: RStream<R>,
    left_key: Arc<dyn Fn(&L) -> K + Send + Sync>,
    right_key: Arc<dyn Fn(&R) -> K + Send + Sync>,
    /// `Err`: why `build` will refuse it.
    spec: Result<JoinSpec, String>,
    _mode: PhantomData<M>,
}

impl<K, L, R, M> KeyedJoin<K, L, R, M>
where
    K: Serialize + DeserializeOwned + Clone + 'static,
    L: Serialize + DeserializeOwned + Clone + 'static,
    R: Serialize + DeserializeOwned + Clone + 'static,
{
    /// Joins only records whose event times `window` admits:
    /// [`JoinWindows`](crate::join::JoinWindows) (within a time
    /// difference) or a tumbling [`FixedWindows`](crate::window::FixedWindows)
    /// (in the same window). Their state goes once the window has closed
    /// (see [`crate::join`]). Of a `FixedWindows`, the size, grace and
    /// idle timeout count; its emit mode does not (a pair is emitted when
    /// it is made). Replaces an earlier `within` or `retain`.
    pub fn within<W: JoinWindowSpec>(mut self, window: W) -> Self {
        self.spec = spec_of(&window);
        self
    }

    /// An unwindowed join (any two records of a key join) whose state
    /// goes once the stream time passes a record's time plus `retention`.
    /// Without it, unwindowed join state is never deleted. Replaces an
    /// earlier `within` or `retain`.
    pub fn retain(mut self, retention: Duration) -> Self {
        self.spec = Ok(JoinSpec::unwindowed(
            i64::try_from(retention.as_millis())
                .unwrap_or(i64::MAX - 1)
                .min(i64::MAX - 1),
        ));
        self
    }

    /// Lowers the join: both sides' `key_by` edges and the join node.
    fn lower<O: Clone + 'static>(
        self,
        kind: &'static str,
        joiner: Joiner<L, R, O>,
        unmatched: [bool; 2],
    ) -> RStream<O> {
        let graph = self.left.graph().clone();
        let slot: Arc<Slot<O>> = Arc::default();
        if !Arc::ptr_eq(&graph, self.right.graph()) {
            // Neither builder gets an edge to the other's nodes; both
            // refuse to build.
            let message = format!("{kind}: the two streams come from different StreamBuilders");
            lock(self.right.graph()).errors.push(message.clone());
            lock(&graph).errors.push(message);
            let node = self.left.node(kind, "refused".into(), false);
            return RStream::new(graph, slot, node);
        }
        let spec = match self.spec {
            Ok(spec) if unmatched.iter().any(|&u| u) && !spec.expires() => Err(format!(
                "{kind} without a window or a retention: its unmatched records would never be emitted \
                 (they are when their state goes); give it within(..) or retain(..)"
            )),
            spec => spec,
        };
        let spec = match spec {
            Ok(spec) => spec,
            Err(message) => {
                lock(&graph).errors.push(message);
                JoinSpec::unwindowed(i64::MAX)
            }
        };
        // The join node: the left edge's shuffle number and the chain
        // after it are known once the left edge exists.
        let join_node = Arc::new(std::sync::OnceLock::new());
        let (out, left_keyed) = {
            let (chain, join_node) = (slot.clone(), join_node.clone());
            self.left.shuffle_edge(
                move |l: &L| (self.left_key)(l),
                move |left_keyed| {
                    KeyedDef::Chain(Arc::new(move || {
                        let node: u16 = join_node.get().copied().unwrap_or(u16::MAX - 1);
                        Box::new(Join::new(
                            node,
                            left_keyed,
                            spec,
                            joiner.clone(),
                            unmatched,
                            chain.build(),
                        )) as Box<dyn KeyedEntry>
                    }))
                },
            )
        };
        let (right_node, _) = self.right.shuffle_edge(
            move |r: &R| (self.right_key)(r),
            |_| KeyedDef::SharedWith(usize::from(left_keyed)),
        );
        let node = {
            let mut graph = lock(&graph);
            let node = graph.add_node(kind, format!("with KeyBy[{right_node}]"), Some(out));
            graph.joins.push(node);
            node
        };
        let _ = join_node.set(u16::try_from(node).unwrap_or(u16::MAX - 1));
        RStream::new(graph, slot, node)
    }
}

impl<K, L, R> KeyedJoin<K, L, R, Inner>
where
    K: Serialize + DeserializeOwned + Clone + 'static,
    L: Serialize + DeserializeOwned + Clone + 'static,
    R: Serialize + DeserializeOwned + Clone + 'static,
{
    /// Emits `joiner(&l, &r)` for every pair that joins, once, when the
    /// second of the two arrives.
    pub fn apply<O, F>(self, joiner: F) -> RStream<O>
    where
        O: Clone + 'static,
        F: Fn(&L, &R) -> O + Send + Sync + 'static,
    {
        let joiner: Joiner<L, R, O> = Arc::new(move |l, r| match (l, r) {
            (Some(l), Some(r)) => Some(joiner(l, r)),
            _ => None,
        });
        self.lower("Join", joiner, [false, false])
    }
}

impl<K, L, R> KeyedJoin<K, L, R, Left>
where
    K: Serialize + DeserializeOwned + Clone + 'static,
    L: Serialize + DeserializeOwned + Clone + 'static,
    R: Serialize + DeserializeOwned + Clone + 'static,
{
    /// Emits `joiner(&l, Some(&r))` for every pair that joins, and
    /// `joiner(&l, None)` for a left record that joined nothing, when its
    /// state goes (never before: no `(l, None)` is followed by a pair).
    pub fn apply<O, F>(self, joiner: F) -> RStream<O>
    where
        O: Clone + 'static,
        F: Fn(&L, Option<&R>) -> O + Send + Sync + 'static,
    {
        let joiner: Joiner<L, R, O> = Arc::new(move |l, r| l.map(|l| joiner(l, r)));
        self.lower("LeftJoin", joiner, [true, false])
    }
}

impl<K, L, R> KeyedJoin<K, L, R, Outer>
where
    K: Serialize + DeserializeOwned + Clone + 'static,
    L: Serialize + DeserializeOwned + Clone + 'static,
    R: Serialize + DeserializeOwned + Clone + 'static,
{
    /// Emits `joiner(Some(&l), Some(&r))` for every pair that joins, and
    /// `joiner(Some(&l), None)` or `joiner(None, Some(&r))` for a record of
    /// either side that joined nothing, when its state goes.
    pub fn apply<O, F>(self, joiner: F) -> RStream<O>
    where
        O: Clone + 'static,
        F: Fn(Option<&L>, Option<&R>) -> O + Send + Sync + 'static,
    {
        let joiner: Joiner<L, R, O> = Arc::new(move |l, r| Some(joiner(l, r)));
        self.lower("OuterJoin", joiner, [true, true])
    }
}
