//! `WindowStream<K, V, W>`: a grouped stream cut into event-time windows.

use std::marker::PhantomData;
use std::ops::Add;
use std::sync::Arc;

use serde::de::DeserializeOwned;
use serde::Serialize;

use super::grouped::GroupedStream;
use super::rstream::RStream;
use crate::accumulator::{Accumulator, Avg, Count, Extreme, Merge, Reduce, Sum};
use crate::operators::window::{Kind, MergeFn, WindowAggregate};
use crate::processor::{BoxProcessor, Keyed};
use crate::window::{FixedWindows, SessionWindows, SlidingWindows, Windowed};

mod sealed {
    /// Window specifications are this crate's: [`super::FixedWindows`]
    /// and [`super::SessionWindows`].
    pub trait Sealed {
        fn kind(&self) -> crate::operators::window::Kind;
    }
}

/// A window specification: [`FixedWindows`] (from
/// [`Window::tumbling`](crate::Window::tumbling) or
/// [`Window::hopping`](crate::Window::hopping)), [`SlidingWindows`] (from
/// [`Window::sliding`](crate::Window::sliding)) or [`SessionWindows`]
/// (from [`Window::session`](crate::Window::session)).
pub trait WindowSpec: sealed::Sealed + Copy + Send + Sync + 'static {}

impl sealed::Sealed for FixedWindows {
    fn kind(&self) -> Kind {
        Kind::Fixed(*self)
    }
}

impl WindowSpec for FixedWindows {}

impl sealed::Sealed for SessionWindows {
    fn kind(&self) -> Kind {
        Kind::Session(*self)
    }
}

impl WindowSpec for SessionWindows {}

impl sealed::Sealed for SlidingWindows {
    fn kind(&self) -> Kind {
        Kind::Sliding(*self)
    }
}

impl WindowSpec for SlidingWindows {}

/// A grouped stream cut into windows of event time: its aggregations keep
/// one state per key and window and emit results keyed by
/// [`Windowed`]`<K>` (by default once per window, when it closes; see
/// [`WindowEmit`](crate::WindowEmit)). Made by
/// [`GroupedStream::window`].
///
/// Only stateless operators, sinks and a new `key_by` may follow the
/// results: another aggregation in the same keyed stage is refused by
/// `build`.
pub struct WindowStream<K, V, W> {
    inner: RStream<Keyed<K, V>>,
    spec: W,
}

impl<K, V, W> WindowStream<K, V, W>
where
    K: Clone + DeserializeOwned + 'static,
    V: Clone + 'static,
    W: WindowSpec,
{
    pub(crate) fn new(inner: RStream<Keyed<K, V>>, spec: W) -> Self {
        WindowStream { inner, spec }
    }

    fn aggregate_with<A: Accumulator<V>>(
        &self,
        kind: &'static str,
        acc: Arc<A>,
        merge: Option<MergeFn<A::State>>,
    ) -> GroupedStream<Windowed<K>, A::Output> {
        let spec = self.spec.kind();
        let out = self.inner.then_node(kind, move |node, next| {
            let node = u16::try_from(node).unwrap_or(u16::MAX - 1);
            Box::new(WindowAggregate::new(node, spec, acc.clone(), merge.clone(), next)) as BoxProcessor<Keyed<K, V>>
        });
        out.mark_windowed();
        GroupedStream::new(out)
    }

    /// An aggregation whose states merge (what sessions need).
    fn merged<A: Merge<V>>(&self, kind: &'static str, acc: A) -> GroupedStream<Windowed<K>, A::Output> {
        let acc = Arc::new(acc);
        let merger = acc.clone();
        let merge: MergeFn<A::State> = Arc::new(move |state, other| merger.merge(state, other));
        self.aggregate_with(kind, acc, Some(merge))
    }

    /// The number of values per key and window.
    pub fn count(&self) -> GroupedStream<Windowed<K>, u64> {
        self.merged("WindowCount", Count)
    }

    /// The sum of `f(value)` per key and window.
    pub fn sum<N, F>(&self, f: F) -> GroupedStream<Windowed<K>, N>
    where
        N: Add<Output = N> + Copy + Default + Serialize + DeserializeOwned + 'static,
        F: Fn(&V) -> N + Send + Sync + 'static,
    {
        self.merged(
            "WindowSum",
            Sum {
                selector: f,
                _n: PhantomData,
            },
        )
    }

    /// The least `f(value)` per key and window.
    pub fn min<N, F>(&self, f: F) -> GroupedStream<Windowed<K>, N>
    where
        N: PartialOrd + Copy + Default + Serialize + DeserializeOwned + 'static,
        F: Fn(&V) -> N + Send + Sync + 'static,
    {
        self.merged(
            "WindowMin",
            Extreme::<F, N, false> {
                selector: f,
                _n: PhantomData,
            },
        )
    }

    /// The greatest `f(value)` per key and window.
    pub fn max<N, F>(&self, f: F) -> GroupedStream<Windowed<K>, N>
    where
        N: PartialOrd + Copy + Default + Serialize + DeserializeOwned + 'static,
        F: Fn(&V) -> N + Send + Sync + 'static,
    {
        self.merged(
            "WindowMax",
            Extreme::<F, N, true> {
                selector: f,
                _n: PhantomData,
            },
        )
    }

    /// The mean of `f(value)` per key and window.
    pub fn avg<F>(&self, f: F) -> GroupedStream<Windowed<K>, f64>
    where
        F: Fn(&V) -> f64 + Send + Sync + 'static,
    {
        self.merged("WindowAvg", Avg { selector: f })
    }

    /// Combines the values of each key and window with `f`: the first
    /// value as it is, then `f(so_far, next)`.
    pub fn reduce<F>(&self, f: F) -> GroupedStream<Windowed<K>, V>
    where
        V: Serialize + DeserializeOwned,
        F: Fn(&V, &V) -> V + Send + Sync + 'static,
    {
        self.merged("WindowReduce", Reduce { f })
    }
}

impl<K, V> WindowStream<K, V, FixedWindows>
where
    K: Clone + DeserializeOwned + 'static,
    V: Clone + 'static,
{
    /// Folds the values of each key and window with `acc`.
    pub fn aggregate<A: Accumulator<V>>(&self, acc: A) -> GroupedStream<Windowed<K>, A::Output> {
        self.aggregate_with("WindowAggregate", Arc::new(acc), None)
    }
}

impl<K, V> WindowStream<K, V, SessionWindows>
where
    K: Clone + DeserializeOwned + 'static,
    V: Clone + 'static,
{
    /// Folds the values of each key and session with `acc`, whose states
    /// [`Merge`] when a record joins two sessions.
    pub fn aggregate<A: Merge<V>>(&self, acc: A) -> GroupedStream<Windowed<K>, A::Output> {
        self.merged("WindowAggregate", acc)
    }
}

impl<K, V> WindowStream<K, V, SlidingWindows>
where
    K: Clone + DeserializeOwned + 'static,
    V: Clone + 'static,
{
    /// Folds the values of each key and sliding window with `acc`: the
    /// records of each time are folded once, and a window's result is the
    /// [`Merge`] of the times it holds.
    pub fn aggregate<A: Merge<V>>(&self, acc: A) -> GroupedStream<Windowed<K>, A::Output> {
        self.merged("WindowAggregate", acc)
    }
}
