//! Accumulators: what a keyed aggregation keeps per key and emits.

use std::marker::PhantomData;
use std::ops::Add;

use serde::de::DeserializeOwned;
use serde::Serialize;

/// How `GroupedStream::aggregate` folds the values of a key.
///
/// The state is kept per key in the queue's state store (serialized as
/// MessagePack behind a format version byte), so it survives restarts and
/// moves with its queue. The built-in
/// aggregations (`count`, `sum`, `min`, `max`, `avg`) are accumulators too.
///
/// ```
/// use rocketmq_streams::Accumulator;
///
/// /// The longest value seen per key.
/// struct Longest;
///
/// impl Accumulator<String> for Longest {
///     type State = String;
///     type Output = String;
///     fn init(&self) -> String { String::new() }
///     fn add(&self, state: &mut String, value: &String) {
///         if value.len() > state.len() { *state = value.clone(); }
///     }
///     fn result(&self, state: &String) -> String { state.clone() }
/// }
/// ```
pub trait Accumulator<V>: Send + Sync + 'static {
    /// What is kept per key: decoded in the store's cache between
    /// checkpoints, encoded (MessagePack) once per key per checkpoint.
    /// `Clone` so an update can be undone when its record fails.
    type State: Serialize + DeserializeOwned + Clone + 'static;
    /// What is emitted per update.
    type Output: Clone + 'static;
    /// The state of a key not seen before.
    fn init(&self) -> Self::State;
    /// Folds one value into the state.
    fn add(&self, state: &mut Self::State, value: &V);
    /// The value emitted after an update.
    fn result(&self, state: &Self::State) -> Self::Output;
}

/// Counts the values of a key.
pub struct Count;

impl<V> Accumulator<V> for Count {
    type State = u64;
    type Output = u64;
    fn init(&self) -> u64 {
        0
    }
    fn add(&self, state: &mut u64, _: &V) {
        *state += 1;
    }
    fn result(&self, state: &u64) -> u64 {
        *state
    }
}

/// Sums a number selected from each value.
pub struct Sum<F, N> {
    pub(crate) selector: F,
    pub(crate) _n: PhantomData<fn() -> N>,
}

impl<V, F, N> Accumulator<V> for Sum<F, N>
where
    F: Fn(&V) -> N + Send + Sync + 'static,
    N: Add<Output = N> + Copy + Default + Serialize + DeserializeOwned + 'static,
{
    type State = N;
    type Output = N;
    fn init(&self) -> N {
        N::default()
    }
    fn add(&self, state: &mut N, value: &V) {
        *state = *state + (self.selector)(value);
    }
    fn result(&self, state: &N) -> N {
        *state
    }
}

/// Keeps the least (`MAX == false`) or greatest number selected from the values.
pub struct Extreme<F, N, const MAX: bool> {
    pub(crate) selector: F,
    pub(crate) _n: PhantomData<fn() -> N>,
}

impl<V, F, N, const MAX: bool> Accumulator<V> for Extreme<F, N, MAX>
where
    F: Fn(&V) -> N + Send + Sync + 'static,
    N: PartialOrd + Copy + Default + Serialize + DeserializeOwned + 'static,
{
    type State = Option<N>;
    type Output = N;
    fn init(&self) -> Option<N> {
        None
    }
    fn add(&self, state: &mut Option<N>, value: &V) {
        let n = (self.selector)(value);
        let better = match state {
            None => true,
            Some(s) if MAX => n > *s,
            Some(s) => n < *s,
        };
        if better {
            *state = Some(n);
        }
    }
    fn result(&self, state: &Option<N>) -> N {
        // Some after the first `add`, which always precedes `result`.
        state.unwrap_or_default()
    }
}

/// The mean of a number selected from each value.
pub struct Avg<F> {
    pub(crate) selector: F,
}

impl<V, F> Accumulator<V> for Avg<F>
where
    F: Fn(&V) -> f64 + Send + Sync + 'static,
{
    /// (sum, count)
    type State = (f64, u64);
    type Output = f64;
    fn init(&self) -> (f64, u64) {
        (0.0, 0)
    }
    fn add(&self, state: &mut (f64, u64), value: &V) {
        state.0 += (self.selector)(value);
        state.1 += 1;
    }
    fn result(&self, state: &(f64, u64)) -> f64 {
        if state.1 == 0 {
            0.0
        } else {
            state.0 / state.1 as f64
        }
    }
}

/// An [`Accumulator`] whose states can be combined: what session windows
/// need, since a record can join two sessions into one.
///
/// `merge(a, b)` must give the state that folding `b`'s values into `a`
/// would have given. The built-in aggregations implement it.
pub trait Merge<V>: Accumulator<V> {
    /// Folds `other` into `state`.
    fn merge(&self, state: &mut Self::State, other: Self::State);
}

impl<V> Merge<V> for Count {
    fn merge(&self, state: &mut u64, other: u64) {
        *state += other;
    }
}

impl<V, F, N> Merge<V> for Sum<F, N>
where
    Sum<F, N>: Accumulator<V, State = N>,
    N: Add<Output = N> + Copy,
{
    fn merge(&self, state: &mut N, other: N) {
        *state = *state + other;
    }
}

impl<V, F, N, const MAX: bool> Merge<V> for Extreme<F, N, MAX>
where
    Extreme<F, N, MAX>: Accumulator<V, State = Option<N>>,
    N: PartialOrd + Copy,
{
    fn merge(&self, state: &mut Option<N>, other: Option<N>) {
        *state = match (*state, other) {
            (Some(a), Some(b)) => {
                let better = if MAX { b > a } else { b < a };
                Some(if better { b } else { a })
            }
            (a, b) => a.or(b),
        };
    }
}

impl<V, F> Merge<V> for Avg<F>
where
    Avg<F>: Accumulator<V, State = (f64, u64)>,
{
    fn merge(&self, state: &mut (f64, u64), other: (f64, u64)) {
        state.0 += other.0;
        state.1 += other.1;
    }
}

/// Combines the values of a key with a function of two values
/// (`reduce`): the first value as it is, then `f(so_far, next)`. Session
/// windows merge two reductions with `f` too, which is right when `f` is
/// associative (sum, max, concatenation, ...).
pub struct Reduce<F> {
    pub(crate) f: F,
}

impl<V, F> Accumulator<V> for Reduce<F>
where
    V: Serialize + DeserializeOwned + Clone + 'static,
    F: Fn(&V, &V) -> V + Send + Sync + 'static,
{
    type State = Option<V>;
    type Output = V;
    fn init(&self) -> Option<V> {
        None
    }
    fn add(&self, state: &mut Option<V>, value: &V) {
        *state = Some(match state.take() {
            None => value.clone(),
            Some(so_far) => (self.f)(&so_far, value),
        });
    }
    /// # Panics
    ///
    /// Before the first `add` (the operators never call it then).
    fn result(&self, state: &Option<V>) -> V {
        state.clone().expect("a reduce has a value once it has seen one")
    }
}

impl<V, F> Merge<V> for Reduce<F>
where
    Reduce<F>: Accumulator<V, State = Option<V>>,
    F: Fn(&V, &V) -> V,
{
    fn merge(&self, state: &mut Option<V>, other: Option<V>) {
        *state = match (state.take(), other) {
            (Some(a), Some(b)) => Some((self.f)(&a, &b)),
            (a, b) => a.or(b),
        };
    }
}
