//! ACL on the embedded broker: a job without credentials, or with a wrong
//! secret, is refused with a permanent error that says so; a job whose
//! `ClientConfig` carries the credentials runs end to end (consumer,
//! producer, admin: every client the runtime starts signs its requests).

use std::time::Duration;

use bytes::Bytes;
use rocketmq_streams::prelude::*;
use rocketmq_streams_io::{Credentials, EmbeddedConfig};
use rocketmq_streams_tests::{unique, TestCluster};

const RECORDS: usize = 2_000;

fn upper_job(job: &str, input: &str, output: &str) -> Topology {
    let builder = StreamBuilder::new(job);
    builder
        .source(input, Utf8)
        .map(|s: String| s.to_uppercase())
        .sink(output, Utf8);
    builder.build().expect("topology")
}

#[test]
fn a_broker_with_acl_refuses_a_job_without_credentials_and_runs_one_with_them() {
    let user = Credentials::new("streams-app", "s3cret-key");
    let cluster = TestCluster::start_with(EmbeddedConfig {
        acl: Some(user.clone()),
        ..EmbeddedConfig::default()
    });
    let (input, output) = (unique("acl-in"), unique("acl-out"));
    cluster.produce(&input, 4, (0..RECORDS).map(|i| Bytes::from(format!("r{i}"))).collect());

    for (who, credentials) in [
        ("no credentials", None),
        (
            "a wrong secret",
            Some(Credentials::new("streams-app", "not-the-secret")),
        ),
    ] {
        let mut client = cluster.client.clone();
        client.credentials = credentials;
        let mut config = RuntimeConfig::new(client);
        config.shards = 1;
        let refused = StreamRuntime::start(upper_job(&unique("acl-anon"), &input, &unique("acl-anon-out")), config);
        let error = match refused {
            Ok(runtime) => {
                let stopped = runtime.stop();
                panic!("a job with {who} started on a broker with ACL on (stop: {stopped:?})");
            }
            Err(error) => error,
        };
        let message = error.to_string();
        assert!(
            message.contains("NO_PERMISSION"),
            "{who}: the error says why: {message}"
        );
        assert!(
            message.contains("permanent"),
            "{who}: and that retrying will not help: {message}"
        );
    }

    let mut config = RuntimeConfig::new(cluster.client.clone());
    config.shards = 1;
    let runtime = StreamRuntime::start(upper_job(&unique("acl-job"), &input, &output), config).expect("start");
    let read = cluster.read_topic(&output, RECORDS, Duration::from_secs(120));
    runtime.stop().expect("stop");
    let mut got: Vec<String> = read
        .iter()
        .map(|r| String::from_utf8_lossy(&r.body).into_owned())
        .collect();
    got.sort();
    let mut expected: Vec<String> = (0..RECORDS).map(|i| format!("R{i}")).collect();
    expected.sort();
    assert_eq!(got, expected, "the signed job processed every record once");
}
