//! Joins on a real broker: Nexmark q3 (an unwindowed inner join) and q8
//! (a tumbling-window left join, across a graceful restart) against
//! references computed here; left and outer joins emitting the unmatched
//! records of both sides once their window closes; and the join state
//! gone from the stores once every window has closed.

use std::collections::BTreeSet;
use std::time::Duration;

use rocketmq_streams::prelude::*;
use rocketmq_streams_tests::joins::{
    await_join_state_gone, events, json, kept_join_records, q3, q3_reference, q8, q8_reference, q8_results,
    quick_window, sides, Auction, Event, Person, Q3,
};
use rocketmq_streams_tests::{unique, wait_for, TestCluster};

const EVENTS: usize = 8_000;

fn config(cluster: &TestCluster, dir: &std::path::Path) -> RuntimeConfig {
    let mut config = RuntimeConfig::new(cluster.client.clone());
    config.shards = 2;
    config.state_dir = Some(dir.to_path_buf());
    config
}

/// Waits (at most 180 s) until `runtime` has committed `queues` queues to
/// their ends after taking at least `records_in` records.
fn caught_up(runtime: &StreamRuntime, queues: usize, records_in: u64) -> bool {
    wait_for(Duration::from_secs(180), || {
        let m = runtime.metrics();
        (m.lag.len() >= queues && m.caught_up() && m.total(|s| s.records_in) >= records_in).then_some(())
    })
    .is_some()
}

#[test]
fn q3_matches_its_reference_once_each() {
    let cluster = TestCluster::start();
    let (input, output, job) = (unique("q3-events"), unique("q3-out"), unique("q3-job"));
    let data = events(EVENTS, 400);
    cluster.produce(&input, 4, json(&data));
    let reference = q3_reference(&data);
    assert!(reference.len() > 20, "the input makes results: {}", reference.len());

    let dir = tempfile::tempdir().expect("state dir");
    let builder = StreamBuilder::new(&job);
    q3(&builder, &input).sink(&output, Json::<Q3>::new());
    let runtime =
        StreamRuntime::start(builder.build().expect("topology"), config(&cluster, dir.path())).expect("start");
    let results = wait_for(Duration::from_secs(180), || {
        let n = cluster.topic_size(&output) as usize;
        (n >= reference.len()).then_some(n)
    });
    // The input and every shuffle queue at their ends: nothing more comes.
    let done = caught_up(&runtime, 4 + 8, EVENTS as u64);
    let m = runtime.stop().expect("clean stop");
    assert!(results.is_some() && done, "q3 did not finish within 180 s: {m:?}");
    let bodies = cluster.read_topic(&output, reference.len(), Duration::from_secs(30));
    let got: Vec<Q3> = bodies
        .iter()
        .map(|r| serde_json::from_slice(&r.body).expect("a q3 result"))
        .collect();
    assert_eq!(got.len(), reference.len(), "one result per pair, none repeated");
    assert_eq!(got.into_iter().collect::<BTreeSet<_>>(), reference);
    assert_eq!(m.total(|s| s.late), 0);
}

#[test]
fn q8_matches_its_reference_across_a_restart_and_its_state_goes() {
    let cluster = TestCluster::start();
    let (input, output, job) = (unique("q8-events"), unique("q8-out"), unique("q8-job"));
    let data = events(EVENTS, 400);
    let (first, second) = data.split_at(EVENTS / 2);
    // One input queue: the events reach each shuffle queue in their order,
    // at most 400 ms out of it, within the 1 s grace: none is late.
    cluster.produce(&input, 1, json(first));
    let reference = q8_reference(&data);
    let dir = tempfile::tempdir().expect("state dir");
    let run = |idle: Duration| {
        let builder = StreamBuilder::new(&job);
        q8(&builder, &input, idle).sink(&output, Json::<rocketmq_streams_tests::joins::Q8>::new());
        StreamRuntime::start(builder.build().expect("topology"), config(&cluster, dir.path())).expect("start")
    };

    // First half, windows closing on records only.
    let runtime = run(Duration::MAX);
    // The input queue and the 8 shuffle queues at their ends, each event
    // taken from the input and again from the shuffle.
    let done = caught_up(&runtime, 1 + 8, EVENTS as u64);
    let gauge = runtime.metrics().total(|s| s.join_records);
    let m1 = runtime.stop().expect("clean stop");
    assert!(done, "the first half was not consumed: {m1:?}");
    let kept = kept_join_records(dir.path());
    assert!(
        kept > 0 && kept < EVENTS / 2,
        "the open windows' records are kept, the closed ones' gone: {kept}"
    );
    assert_eq!(gauge, kept as u64, "the join_records gauge counts what the stores keep");

    // Second half, on the restored state; the last windows close by idle
    // firing once the input is consumed.
    cluster.produce(&input, 1, json(second));
    let runtime = run(Duration::from_secs(2));
    let complete = cluster.read_until(
        &output,
        reference.len(),
        Duration::from_secs(180),
        q8_results,
        |got, _| got.len() >= reference.len(),
    );
    let gone = await_join_state_gone(&[&runtime]);
    let m = runtime.stop().expect("clean stop");
    let Ok((got, results)) = complete else {
        panic!("q8 did not finish within 180 s: {m:?}")
    };
    assert_eq!(got, reference, "every pair and every unmatched person");
    assert_eq!(
        results,
        reference.len(),
        "each once: a graceful restart repeats nothing"
    );
    assert!(gone, "join state left after 60 s: {m:?}");
    assert!(got.iter().any(|r| r.2.is_none()) && got.iter().any(|r| r.2.is_some()));
    assert_eq!(m.total(|s| s.late) + m1.total(|s| s.late), 0);
    assert_eq!(
        kept_join_records(dir.path()),
        0,
        "every window closed: no join state left"
    );
}

#[test]
fn left_and_outer_joins_emit_the_unmatched_records_of_both_sides_once_their_window_closes() {
    let cluster = TestCluster::start();
    let (input, job) = (unique("lo-events"), unique("lo-job"));
    let (left_out, outer_out) = (unique("lo-left"), unique("lo-outer"));
    let person = |id: u64, time: i64| {
        Event::Person(Person {
            id,
            name: format!("p{id}"),
            state: "OR".into(),
            time,
        })
    };
    let auction = |id: u64, seller: u64, time: i64| {
        Event::Auction(Auction {
            id,
            seller,
            category: 1,
            time,
        })
    };
    // Within a 1 s window: p1 with a10 and a11, p3 with a12; p2 and p4
    // open nothing; a13's and a14's sellers never join.
    let data = [
        person(1, 100),
        person(2, 150),
        auction(10, 1, 200),
        auction(13, 7, 220),
        person(3, 250),
        auction(11, 1, 300),
        person(4, 320),
        auction(12, 3, 400),
        auction(14, 8, 450),
    ];
    cluster.produce(&input, 1, json(&data));
    let dir = tempfile::tempdir().expect("state dir");
    let builder = StreamBuilder::new(&job);
    let (persons, auctions) = sides(&builder, &input);
    persons
        .left_join(&auctions)
        .on(|p: &Person| p.id, |a: &Auction| a.seller)
        .within(quick_window())
        .apply(|p, a| (p.id, a.map(|a| a.id)))
        .sink(&left_out, Json::<(u64, Option<u64>)>::new());
    persons
        .outer_join(&auctions)
        .on(|p: &Person| p.id, |a: &Auction| a.seller)
        .within(quick_window())
        .apply(|p, a| (p.map(|p| p.id), a.map(|a| a.id)))
        .sink(&outer_out, Json::<(Option<u64>, Option<u64>)>::new());
    let runtime =
        StreamRuntime::start(builder.build().expect("topology"), config(&cluster, dir.path())).expect("start");
    let (left_want, outer_want) = (5, 7);
    let complete = wait_for(Duration::from_secs(120), || {
        (cluster.topic_size(&left_out) >= left_want && cluster.topic_size(&outer_out) >= outer_want).then_some(())
    });
    let gone = await_join_state_gone(&[&runtime]);
    let m = runtime.stop().expect("clean stop");
    assert!(
        complete.is_some(),
        "the unmatched records did not come within 120 s: {m:?}"
    );
    assert!(gone, "join state left after 60 s: {m:?}");
    let read = |topic: &str, n: u64| -> Vec<Vec<u8>> {
        cluster
            .read_topic(topic, n as usize, Duration::from_secs(30))
            .into_iter()
            .map(|r| r.body.to_vec())
            .collect()
    };
    let mut left: Vec<(u64, Option<u64>)> = read(&left_out, left_want)
        .iter()
        .map(|b| serde_json::from_slice(b).expect("a left result"))
        .collect();
    left.sort();
    assert_eq!(
        left,
        [(1, Some(10)), (1, Some(11)), (2, None), (3, Some(12)), (4, None)]
    );
    let mut outer: Vec<(Option<u64>, Option<u64>)> = read(&outer_out, outer_want)
        .iter()
        .map(|b| serde_json::from_slice(b).expect("an outer result"))
        .collect();
    outer.sort();
    assert_eq!(
        outer,
        [
            (None, Some(13)),
            (None, Some(14)),
            (Some(1), Some(10)),
            (Some(1), Some(11)),
            (Some(2), None),
            (Some(3), Some(12)),
            (Some(4), None),
        ]
    );
    assert_eq!(
        kept_join_records(dir.path()),
        0,
        "every window closed: no join state left"
    );
}
