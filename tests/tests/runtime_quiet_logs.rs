//! A healthy run prints no ERROR. The quick-start (`core/examples/wordcount.rs`,
//! on its own embedded broker) and the bench's smallest broker scenario
//! (`stateless --rates none`: the plain-client baseline and the job) run as
//! their own processes with the default log filter (`RUST_LOG` unset), as a
//! newcomer runs them; neither may print a line at ERROR.
//!
//! The binaries come from the same build as this test: `scripts/test.sh`
//! builds the bench binary before the tests (`cargo test` builds the
//! examples itself).

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// `target/<profile>/`, where this test's binary sits in `deps/`.
fn target_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("the test's own path");
    exe.parent()
        .and_then(|deps| deps.parent())
        .map(PathBuf::from)
        .expect("the test binary sits in target/<profile>/deps")
}

/// Runs `program` with `args` (killed after `limit`); returns its stderr
/// and stdout, asserting it succeeded.
fn run(program: PathBuf, args: &[&str], limit: Duration) -> (String, String) {
    assert!(
        program.exists(),
        "{} is not built: run the tests through scripts/test.sh (it builds the bench binary; \
         cargo test builds the examples)",
        program.display()
    );
    let mut child = Command::new(&program)
        .args(args)
        .env_remove("RUST_LOG")
        .env("NO_COLOR", "1")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break Some(status);
        }
        if started.elapsed() > limit {
            let _ = child.kill();
            break None;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let output = child.wait_with_output().expect("output");
    let (stdout, stderr) = (
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    );
    assert!(
        status.is_some_and(|s| s.success()),
        "{} {args:?} did not succeed within {limit:?} ({status:?}); stderr:\n{stderr}",
        program.display()
    );
    (stderr, stdout)
}

fn error_lines(log: &str) -> Vec<&str> {
    log.lines().filter(|l| l.contains("ERROR")).collect()
}

#[test]
fn the_quick_start_prints_no_error() {
    let (stderr, stdout) = run(
        target_dir().join("examples").join("wordcount"),
        &["20"],
        Duration::from_secs(240),
    );
    assert!(
        stdout.contains("top words"),
        "the quick-start ran to its end:\n{stdout}"
    );
    let errors = error_lines(&stderr);
    assert!(
        errors.is_empty(),
        "{} ERROR lines, first: {:?}",
        errors.len(),
        errors.first()
    );
}

#[test]
fn the_smallest_bench_scenario_prints_no_error() {
    let out = tempfile::tempdir().expect("tempdir");
    let (stderr, stdout) = run(
        target_dir().join("rocketmq-streams-bench"),
        &[
            "stateless",
            "--rates",
            "none",
            "--records",
            "20000",
            "--repeats",
            "1",
            "--out",
            out.path().to_str().expect("utf-8 path"),
        ],
        Duration::from_secs(300),
    );
    let errors = error_lines(&stderr);
    assert!(
        errors.is_empty(),
        "{} ERROR lines, first: {:?}",
        errors.len(),
        errors.first()
    );
    assert!(
        std::fs::read_dir(out.path()).expect("report dir").count() > 0,
        "the scenario wrote its report; stdout:\n{stdout}"
    );
}
