//! `scripts/services.sh` keeps a Kafka-protocol broker only when it answers at the protocol
//! level: a broker that accepts connections but cannot create a topic (seen on tansu: every
//! topic creation timing out while the port stayed open) is restarted on a fresh storage file.
//!
//! Everything here runs on a PRIVATE tansu on a free loopback port with its own storage file,
//! through the script's own functions (the script only defines them when sourced). A wedged
//! broker is simulated by stopping that process (SIGSTOP): the kernel still completes TCP
//! handshakes on its port, and no request is ever answered. The shared broker is never touched.

#![allow(clippy::unwrap_used, clippy::expect_used, reason = "a test panics to report a failure")]

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

/// Each probe attempt's bound in these tests (the script's default is 10 s).
const PROBE_TIMEOUT_SECS: &str = "2";
/// Probe attempts before a broker counts as wedged (the script's default is 3).
const PROBE_ATTEMPTS: &str = "2";
/// Upper bound on one call of a script function (the `timeout` command enforces it).
const CALL_TIMEOUT_SECS: &str = "120";

fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/services.sh")
}

/// Runs the script's function `args[0]` with the other `args`, the script sourced in a fresh
/// bash; returns its output and how long it took.
fn call(args: &[&str]) -> (Output, Duration) {
    let started = Instant::now();
    let output = Command::new("timeout")
        .args(["-k", "5", CALL_TIMEOUT_SECS, "bash", "-c", r#". "$1" && shift && "$@""#, "bash"])
        .arg(script())
        .args(args)
        .env("IAAS_KAFKA_PROBE_TIMEOUT_SECS", PROBE_TIMEOUT_SECS)
        .env("IAAS_KAFKA_PROBE_ATTEMPTS", PROBE_ATTEMPTS)
        .output()
        .unwrap();
    (output, started.elapsed())
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// The pids of the script's tansu brokers on `port`.
fn brokers_on(port: &str) -> Vec<String> {
    let (output, _) = call(&["tansu_pids_on", port]);
    assert!(output.status.success(), "tansu_pids_on: {}", stderr(&output));
    String::from_utf8_lossy(&output.stdout).lines().map(str::to_owned).collect()
}

fn signal(signal: &str, pid: &str) {
    let status = Command::new("kill").args([signal, pid]).status().unwrap();
    assert!(status.success(), "kill {signal} {pid}");
}

/// Kills whatever tansu the test started on its port, and removes its directory.
struct PrivateBroker {
    port: String,
    dir: PathBuf,
}

impl PrivateBroker {
    fn ensure(&self) -> (Output, Duration) {
        let storage = self.dir.join("tansu.db");
        let log = self.dir.join("tansu.log");
        call(&["ensure_tansu_on", &self.port, storage.to_str().unwrap(), log.to_str().unwrap()])
    }
}

impl Drop for PrivateBroker {
    fn drop(&mut self) {
        for pid in brokers_on(&self.port) {
            let _ = Command::new("kill").args(["-KILL", &pid]).status();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn free_port() -> String {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port().to_string()
}

/// True when the script finds a tansu binary; otherwise the reason is printed.
fn tansu_installed() -> bool {
    let (output, _) = call(&["tansu_bin"]);
    let found = !String::from_utf8_lossy(&output.stdout).trim().is_empty();
    if !found {
        eprintln!(
            "SKIPPED: no tansu binary (~/.cargo/bin/tansu or on PATH); scripts/services.sh builds it"
        );
    }
    found
}

#[test]
fn a_broker_that_accepts_connections_but_creates_no_topic_is_restarted_on_a_fresh_file() {
    if !tansu_installed() {
        return;
    }
    let dir = std::env::temp_dir().join(iaas_testkit::isolation::unique_name("services-probe"));
    std::fs::create_dir_all(&dir).unwrap();
    let broker = PrivateBroker { port: free_port(), dir };

    let (first, _) = broker.ensure();
    assert!(first.status.success(), "first start: {}", stderr(&first));
    assert!(stderr(&first).contains("tansu up"), "{}", stderr(&first));
    let started = brokers_on(&broker.port);
    assert_eq!(started.len(), 1, "one broker on the port: {started:?}");

    // Healthy: a second run only probes, quickly, and restarts nothing.
    let (second, took) = broker.ensure();
    assert!(second.status.success(), "second run: {}", stderr(&second));
    assert!(stderr(&second).contains("already answering"), "{}", stderr(&second));
    assert!(!stderr(&second).contains("starting tansu"), "{}", stderr(&second));
    assert_eq!(brokers_on(&broker.port), started, "nothing restarted");
    assert!(took < Duration::from_secs(5), "a healthy broker is kept quickly, took {took:?}");

    // Wedged: the port stays open, no request is answered. The probe says so within its bound.
    signal("-STOP", &started[0]);
    let (probe, took) = call(&["kafka_answers", "127.0.0.1", &broker.port]);
    assert!(!probe.status.success(), "a stopped broker passed the probe");
    assert!(took < Duration::from_secs(10), "the probe is bounded, took {took:?}");

    let (third, _) = broker.ensure();
    let log = stderr(&third);
    assert!(third.status.success(), "restart: {log}");
    assert!(log.contains("restarting it on a fresh storage file"), "{log}");
    let restarted = brokers_on(&broker.port);
    assert_eq!(restarted.len(), 1, "{restarted:?}");
    assert_ne!(restarted, started, "the wedged broker was replaced");
    let (probe, _) = call(&["kafka_answers", "127.0.0.1", &broker.port]);
    assert!(probe.status.success(), "the new broker answers: {}", stderr(&probe));
}

#[test]
fn a_silent_listener_that_is_not_our_broker_is_reported_and_left_alone() {
    if !tansu_installed() {
        return;
    }
    // Accepts connections (the kernel completes them into the backlog) and never answers.
    let silent = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = silent.local_addr().unwrap().port().to_string();
    let dir = std::env::temp_dir().join(iaas_testkit::isolation::unique_name("services-silent"));
    let broker = PrivateBroker { port: port.clone(), dir };

    let (output, _) = broker.ensure();
    let log = stderr(&output);
    assert!(!output.status.success(), "a silent port was accepted as a broker: {log}");
    assert!(log.contains("not a tansu broker started by this script"), "{log}");
    assert!(brokers_on(&port).is_empty(), "nothing was started on a taken port");
    // Held open until here: the port was taken for the whole run.
    drop(silent);
}
