//! Session windows on a real broker: a generated click stream whose users
//! come and go, counted per user session, against a reference computed
//! here. No record closes the last sessions: they fire when the stream
//! goes quiet (idle firing). Clicks sent after their sessions closed are
//! counted late and dead-lettered with the reason.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use rocketmq_streams::prelude::*;
use rocketmq_streams::DLQ_ERROR_PROPERTY;
use rocketmq_streams_tests::{unique, wait_for, TestCluster};
use serde::{Deserialize, Serialize};

const USERS: u64 = 20;
const CLICKS: usize = 6_000;
const GAP_MS: i64 = 1_000;

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Click {
    user: u64,
    time: i64,
}

/// Clicks 5 ms apart by random users, each user away (no clicks) one
/// 3 s period in three: their sessions end there.
fn clicks() -> Vec<Click> {
    let mut x: u64 = 0x2545_F491_4F6C_DD1D;
    let mut out = Vec::new();
    for i in 0..CLICKS {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let (user, time) = (x % USERS, i as i64 * 5);
        if (time / 3_000 + user as i64) % 3 != 0 {
            out.push(Click { user, time });
        }
    }
    out
}

/// Sessions by their definition: a user's clicks at most the gap apart
/// share one, `[first, last + 1)`. By (user, start): (end, clicks).
fn reference(clicks: &[Click]) -> BTreeMap<(u64, i64), (i64, u64)> {
    let mut times: BTreeMap<u64, Vec<i64>> = BTreeMap::new();
    for c in clicks {
        times.entry(c.user).or_default().push(c.time);
    }
    let mut sessions = BTreeMap::new();
    for (user, mut times) in times {
        times.sort_unstable();
        let mut start = times[0];
        let mut last = times[0];
        let mut n = 0;
        for t in times {
            if t - last > GAP_MS {
                sessions.insert((user, start), (last + 1, n));
                (start, n) = (t, 0);
            }
            last = t;
            n += 1;
        }
        sessions.insert((user, start), (last + 1, n));
    }
    sessions
}

fn json(clicks: &[Click]) -> Vec<Bytes> {
    clicks
        .iter()
        .map(|c| Bytes::from(serde_json::to_vec(c).expect("a click is JSON")))
        .collect()
}

/// Sessions emitted, by (user, start): (end, count); and any session
/// emitted twice with two values.
#[derive(Default)]
struct Emitted {
    sessions: BTreeMap<(u64, i64), (i64, u64)>,
    conflicts: Vec<String>,
}

#[test]
fn sessions_match_their_reference_the_last_fire_when_the_stream_goes_quiet_and_late_clicks_are_dead_lettered() {
    let cluster = TestCluster::start();
    let (input, job) = (unique("clicks"), unique("sessions-job"));
    let data = clicks();
    let expected = reference(&data);
    // One input queue: the clicks reach each shuffle queue in order.
    cluster.produce(&input, 1, json(&data));

    let emitted: Arc<Mutex<Emitted>> = Arc::default();
    let into = emitted.clone();
    let builder = StreamBuilder::new(job.clone());
    builder
        .source(&input, Json::<Click>::new())
        .select_timestamp(|c: &Click| c.time)
        .key_by(|c: &Click| c.user)
        .window(Window::session(Duration::from_millis(GAP_MS as u64)).idle_timeout(Duration::from_secs(1)))
        .count()
        .to_rstream()
        .foreach(move |(w, n): &(Windowed<u64>, u64)| {
            let mut e = into.lock().unwrap_or_else(|p| p.into_inner());
            let value = (w.window.end, *n);
            if let Some(old) = e.sessions.insert((w.key, w.window.start), value) {
                if old != value {
                    e.conflicts.push(format!("{w}: {old:?} then {value:?}"));
                }
            }
        });
    let mut config = RuntimeConfig::new(cluster.client.clone());
    config.shards = 2;
    config.error_policy = ErrorPolicy::DeadLetter;
    let runtime = StreamRuntime::start(builder.build().expect("topology"), config).expect("start");

    // Every session, the last of each user included: nothing after them
    // closes those but the wall clock.
    let all = wait_for(Duration::from_secs(180), || {
        (emitted.lock().expect("lock").sessions.len() >= expected.len()).then_some(())
    });
    let m = runtime.metrics();
    {
        let e = emitted.lock().expect("lock");
        assert!(
            all.is_some(),
            "{} of {} sessions within 180 s: {m:?}",
            e.sessions.len(),
            expected.len()
        );
        assert!(e.conflicts.is_empty(), "{:?}", e.conflicts);
        assert_eq!(e.sessions, expected, "sessions per user");
    }
    assert_eq!(m.total(|s| s.late), 0, "in order, no click is late");

    // Clicks in the first seconds, sent now: every session they could
    // join or start closed long ago.
    let late: Vec<Click> = (0..5)
        .map(|user| Click {
            user,
            time: 100 + user as i64,
        })
        .collect();
    cluster.produce(&input, 1, json(&late));
    let dead = cluster.read_topic(&format!("{job}-dlq"), late.len(), Duration::from_secs(120));
    let counted = wait_for(Duration::from_secs(30), || {
        (runtime.metrics().total(|s| s.late) >= late.len() as u64).then_some(())
    });
    let m = runtime.stop().expect("clean stop");
    assert!(counted.is_some(), "the late clicks were not counted: {m:?}");
    assert_eq!(m.total(|s| s.late), late.len() as u64);
    assert_eq!(m.total(|s| s.dead_lettered), late.len() as u64);
    assert_eq!(dead.len(), late.len(), "each late click dead-lettered once");
    for r in &dead {
        let reason = r
            .properties
            .iter()
            .find(|(k, _)| k == DLQ_ERROR_PROPERTY)
            .map(|(_, v)| v.as_str())
            .unwrap_or_default();
        assert!(reason.contains("late"), "{reason}");
    }
    let e = emitted.lock().expect("lock");
    assert_eq!(e.sessions, expected, "late clicks changed no session");
    assert!(e.conflicts.is_empty(), "{:?}", e.conflicts);
}
