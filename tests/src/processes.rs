//! RocketMQ servers in processes of their own (the `test-broker` binary,
//! `src/bin/test-broker.rs`), for the tests that kill and restart them.

use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::process::{Child, Command, Stdio};

/// A free loopback port (released at once: a server binds it next).
///
/// # Panics
///
/// If no port can be bound.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .expect("bind a free port")
        .local_addr()
        .expect("its address")
        .port()
}

/// A free loopback port `p` with `p - 2` free too (a broker's fast port),
/// neither of them in `taken`.
///
/// # Panics
///
/// If no port can be bound.
pub fn free_broker_port(taken: &[u16]) -> u16 {
    loop {
        let port = free_port();
        if port > 1026
            && !taken.contains(&port)
            && !taken.contains(&(port - 2))
            && TcpListener::bind(("127.0.0.1", port - 2)).is_ok()
        {
            return port;
        }
    }
}

/// A name server, a broker or both, in a child process: started with some
/// arguments, killed with SIGKILL, started again with the same ones (same
/// ports, same store). Killed when dropped.
pub struct ServerProcess {
    bin: String,
    args: Vec<String>,
    child: Option<Child>,
    /// The name server's address it printed.
    pub namesrv_addr: String,
    /// The broker's address it printed, if it runs one.
    pub broker_addr: Option<String>,
}

impl ServerProcess {
    /// Starts `bin` (the test-broker binary's path) with `args` and waits
    /// until it printed that it is ready.
    ///
    /// # Panics
    ///
    /// If it cannot be spawned or exits before it is ready.
    pub fn start(bin: &str, args: &[String]) -> Self {
        let mut process = ServerProcess {
            bin: bin.to_string(),
            args: args.to_vec(),
            child: None,
            namesrv_addr: String::new(),
            broker_addr: None,
        };
        process.spawn();
        process
    }

    /// Starts `bin` (the test-broker binary's path) as a name server and a
    /// broker in one process, on free loopback ports (kept across
    /// [`restart`](Self::restart)s) and the store at `store`.
    ///
    /// # Panics
    ///
    /// As [`start`](Self::start).
    pub fn both(bin: &str, store: &std::path::Path) -> Self {
        let namesrv_port = free_port();
        let broker_port = free_broker_port(&[namesrv_port]);
        Self::start(
            bin,
            &[
                "--namesrv-port".into(),
                namesrv_port.to_string(),
                "--broker-port".into(),
                broker_port.to_string(),
                "--store".into(),
                store.display().to_string(),
            ],
        )
    }

    fn spawn(&mut self) {
        let mut child = Command::new(&self.bin)
            .args(&self.args)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn the server process");
        let stdout = child.stdout.take().expect("its stdout");
        let mut lines = BufReader::new(stdout).lines();
        loop {
            match lines.next() {
                Some(Ok(line)) => {
                    if let Some(addr) = line.strip_prefix("ROCKETMQ_BROKER_ADDR=") {
                        self.broker_addr = Some(addr.to_string());
                    }
                    if let Some(addr) = line.strip_prefix("ROCKETMQ_NAMESRV_ADDR=") {
                        self.namesrv_addr = addr.to_string();
                        break;
                    }
                }
                _ => panic!(
                    "the server process {:?} exited before it was ready: {:?}",
                    self.args,
                    child.wait()
                ),
            }
        }
        self.child = Some(child);
    }

    /// Kills it with SIGKILL (nothing flushed, nothing deregistered) and
    /// reaps it.
    ///
    /// # Panics
    ///
    /// If it cannot be killed.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.kill().expect("SIGKILL the server process");
            child.wait().expect("reap the server process");
        }
    }

    /// Freezes it with SIGSTOP: its sockets stay open, nothing answers (a
    /// broker stalled by a long GC pause or a hung disk).
    ///
    /// # Panics
    ///
    /// If it is not running or the signal cannot be sent.
    pub fn pause(&self) {
        self.signal(libc::SIGSTOP);
    }

    /// Lets it run on after [`pause`](Self::pause), with SIGCONT.
    ///
    /// # Panics
    ///
    /// If it is not running or the signal cannot be sent.
    pub fn resume(&self) {
        self.signal(libc::SIGCONT);
    }

    fn signal(&self, signal: libc::c_int) {
        let child = self.child.as_ref().expect("a running server process");
        let pid = libc::pid_t::try_from(child.id()).expect("a process id");
        // SAFETY: `kill` only sends a signal; `pid` is our own child, not
        // yet reaped (we hold its `Child`), so it cannot name another process.
        let sent = unsafe { libc::kill(pid, signal) };
        assert_eq!(
            sent,
            0,
            "signal {signal} to the server process: {}",
            std::io::Error::last_os_error()
        );
    }

    /// Starts it again with the same arguments.
    ///
    /// # Panics
    ///
    /// As [`start`](Self::start), or if it is still running.
    pub fn restart(&mut self) {
        assert!(self.child.is_none(), "restart of a running server process");
        self.spawn();
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            // SIGKILL ends a stopped process too.
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
