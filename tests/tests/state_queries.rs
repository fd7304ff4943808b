//! Interactive queries on the embedded broker: a word count with a
//! queryable store, run by two instances of the job. Every word's count is
//! read from the running job: the instance that owns the word's shuffle
//! queue answers the exact count, the other answers "not here", naming the
//! queue.

use std::collections::HashMap;
use std::time::Duration;

use bytes::Bytes;
use rocketmq_streams::prelude::*;
use rocketmq_streams::RuntimeConfig;
use rocketmq_streams_tests::{unique, wait_for, TestCluster};

const LINES: usize = 400;

fn line(i: usize) -> String {
    format!("w{} w{} w{}", i % 17, i % 29, i % 5)
}

fn job(job: &str, input: &str, output: &str, cluster: &TestCluster, dir: &std::path::Path) -> StreamRuntime {
    let builder = StreamBuilder::new(job);
    builder
        .source(input, Utf8)
        .flat_map(|l: String| l.split_whitespace().map(str::to_owned).collect::<Vec<_>>())
        .key_by(|w: &String| w.clone())
        .count()
        .queryable("counts")
        .sink(output, Json::<(String, u64)>::new());
    let mut config = RuntimeConfig::new(cluster.client.clone());
    config.shards = 1;
    config.state_dir = Some(dir.to_path_buf());
    StreamRuntime::start(builder.build().expect("topology"), config).expect("start")
}

#[test]
fn the_owner_answers_each_key_and_the_other_instance_says_not_here() {
    let cluster = TestCluster::start();
    let (input, output, job_id) = (unique("iq-lines"), unique("iq-counts"), unique("iq-job"));
    cluster.produce(&input, 4, (0..LINES).map(|i| Bytes::from(line(i))).collect());
    let mut reference: HashMap<String, u64> = HashMap::new();
    for i in 0..LINES {
        for w in line(i).split_whitespace() {
            *reference.entry(w.to_string()).or_default() += 1;
        }
    }
    let (dir_a, dir_b) = (tempfile::tempdir().expect("dir"), tempfile::tempdir().expect("dir"));
    let a = job(&job_id, &input, &output, &cluster, dir_a.path());
    // The first instance counts everything, then a second one takes half
    // the queues over (their state restored from the state topic when they
    // are assigned). Both started together, the consumer has been seen to
    // leave some shuffle queues undelivered for minutes (noted in issue 14's
    // closing note); scale-out after the fact is what this test is about.
    let counted = wait_for(Duration::from_secs(120), || {
        let m = a.metrics();
        (m.lag.len() >= 12 && m.caught_up()).then_some(())
    });
    assert!(
        counted.is_some(),
        "the first instance counted everything: {:?}",
        a.metrics()
    );
    assert_eq!(
        a.query::<String, u64>("counts", &"w1".to_string()).expect("query"),
        QueryAnswer::Found(reference["w1"]),
        "a single instance answers every key"
    );
    let b = job(&job_id, &input, &output, &cluster, dir_b.path());

    // Both instances own queues (4 input and 8 shuffle between them); then
    // every word has one owner.
    let mut last = String::new();
    let answers = wait_for(Duration::from_secs(90), || {
        let (ma, mb) = (a.metrics(), b.metrics());
        last = format!(
            "a lag {:?} committed {:?}\nb lag {:?} committed {:?} behind {} {}",
            ma.lag, ma.committed, mb.lag, mb.committed, ma.dispatch_behind, mb.dispatch_behind
        );
        if ma.lag.is_empty() || mb.lag.is_empty() || ma.lag.len() + mb.lag.len() < 12 {
            return None;
        }
        if !(ma.caught_up() && mb.caught_up()) {
            return None;
        }
        let mut answers = Vec::new();
        for word in reference.keys() {
            let from_a = a.query::<String, u64>("counts", word).expect("query a");
            let from_b = b.query::<String, u64>("counts", word).expect("query b");
            answers.push((word.clone(), from_a, from_b));
        }
        // A rebalance still moving queues shows as a key no one owns, or
        // owned (not yet restored) by both: wait for it to settle.
        let settled = answers.iter().all(|(_, x, y)| {
            matches!(
                (x, y),
                (QueryAnswer::Found(_), QueryAnswer::NotHere { .. })
                    | (QueryAnswer::NotHere { .. }, QueryAnswer::Found(_))
            )
        });
        if !settled {
            last = format!("{last}\nanswers {answers:?}");
        }
        settled.then_some(answers)
    });
    let answers =
        answers.unwrap_or_else(|| panic!("both instances answered for every word within 180 s; last:\n{last}"));
    let mut per_instance = [0usize; 2];
    for (word, from_a, from_b) in answers {
        let (found, not_here) = match (from_a, from_b) {
            (QueryAnswer::Found(n), QueryAnswer::NotHere { queue }) => {
                per_instance[0] += 1;
                (n, queue)
            }
            (QueryAnswer::NotHere { queue }, QueryAnswer::Found(n)) => {
                per_instance[1] += 1;
                (n, queue)
            }
            other => unreachable!("settled above: {other:?}"),
        };
        assert_eq!(found, reference[&word], "{word}: the owner's count is exact");
        assert!(
            not_here.topic().ends_with("-shuffle"),
            "{word}: names its shuffle queue {not_here}"
        );
    }
    assert!(
        per_instance.iter().all(|&n| n > 0),
        "both instances own words: {per_instance:?}"
    );
    assert!(
        matches!(
            a.query::<String, u64>("no-such-store", &"w1".to_string()),
            Err(StreamsError::Topology(_))
        ),
        "an unknown store is an error"
    );
    a.stop().expect("stop a");
    b.stop().expect("stop b");
}
