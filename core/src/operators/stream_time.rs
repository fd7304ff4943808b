//! The stream time of a windowed or joining operator, per shuffle queue:
//! the largest event time the queue's records have brought, kept in the
//! queue's store, and moved on by the wall clock once the queue has been
//! idle for the operator's idle timeout.
//!
//! ```text
//!  [node 2 B][0x01] → the stream time (i64, decoded layer `node | 1 << 16`)
//! ```
//!
//! Times in store keys are written [`ordered`]: big-endian with the sign
//! bit flipped, so that keys sort as their times do.

use rocketmq_streams_state::QueueStore;

use crate::codec::StateCodec;
use crate::error::StreamsError;
use crate::operators::aggregate::state_error;
use crate::processor::Context;

/// Sorts as the signed value does.
pub(crate) fn ordered(v: i64) -> [u8; 8] {
    ((v as u64) ^ (1 << 63)).to_be_bytes()
}

/// The time [`ordered`] wrote (`None` unless 8 bytes).
pub(crate) fn unordered(b: &[u8]) -> Option<i64> {
    let b: [u8; 8] = b.try_into().ok()?;
    Some((u64::from_be_bytes(b) ^ (1 << 63)) as i64)
}

/// A time an operator keeps in the decoded layer `layer` under `key`
/// (`i64::MIN` if none).
pub(crate) fn read_time(store: &mut QueueStore, layer: u32, key: &[u8]) -> Result<i64, StreamsError> {
    Ok(store
        .read::<StateCodec<i64>, _>(layer, key, |t| t.copied())
        .map_err(|e| state_error(key, e))?
        .unwrap_or(i64::MIN))
}

/// The stream time of operator `node` in the queue being processed.
#[derive(Debug)]
pub(crate) struct StreamClock {
    node: u16,
    /// The stream time the records made, before an idle queue's wall
    /// clock moved it on (`None` until the first idle step after a record).
    idle_base: Option<i64>,
}

impl StreamClock {
    pub(crate) fn new(node: u16) -> Self {
        StreamClock { node, idle_base: None }
    }

    /// The decoded layer the stream time is kept in.
    pub(crate) fn layer(&self) -> u32 {
        u32::from(self.node) | 1 << 16
    }

    fn key(&self) -> [u8; 3] {
        let [a, b] = self.node.to_be_bytes();
        [a, b, 0x01]
    }

    /// The stream time (`i64::MIN` before any record).
    pub(crate) fn now(&self, store: &mut QueueStore) -> Result<i64, StreamsError> {
        read_time(store, self.layer(), &self.key())
    }

    pub(crate) fn set(&self, store: &mut QueueStore, now: i64) -> Result<(), StreamsError> {
        let key = self.key();
        store
            .update::<StateCodec<i64>, _>(self.layer(), &key, |c| *c = Some(now))
            .map_err(|e| state_error(&key, e))
    }

    /// A record arrived: the next idle step counts from the stream time
    /// the records made.
    pub(crate) fn on_record(&mut self) {
        self.idle_base = None;
    }

    /// A step after records (not an idle step, nor the firing of what an
    /// idle step made due): as [`on_record`](Self::on_record).
    pub(crate) fn on_advance(&mut self, ctx: &Context) {
        if !ctx.idle_firing {
            self.idle_base = None;
        }
    }

    /// Where an idle step of a queue quiet for `idle` ms moves the stream
    /// time: the records' stream time plus `idle`, or `None` if that is not
    /// past the stream time now (or there is none yet).
    pub(crate) fn idle_target(&mut self, store: &mut QueueStore, idle: i64) -> Result<Option<i64>, StreamsError> {
        let now = self.now(store)?;
        if now == i64::MIN {
            return Ok(None);
        }
        let target = self.idle_base.get_or_insert(now).saturating_add(idle);
        Ok((target > now).then_some(target))
    }
}

/// Encodes what changed in the decoded `layers` since the last flush; a
/// value that does not encode fails the flush, so the queue does not
/// checkpoint (`what`: whose state, for the error).
pub(crate) fn encode_layers(store: &mut QueueStore, layers: &[u32], what: &str) -> Result<(), StreamsError> {
    let mut failure = None;
    for &layer in layers {
        store.encode_decoded(layer, |key, message| {
            failure.get_or_insert((key, message));
        });
    }
    match failure {
        None => Ok(()),
        Some((key, message)) => Err(rocketmq_streams_state::StateError::Codec {
            key: format!("{key:?}"),
            message: format!("{what} does not encode, so the queue cannot checkpoint: {message}"),
        }
        .into()),
    }
}

/// The wall clock in ms since the epoch (what born timestamps and event
/// times are in).
pub(crate) fn wall_clock_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}
