//! A sweep of `iaas-load docker-ws` over several client counts: what the platform process
//! holds and spends at each (read from `/proc`), the summary table and the plots.

use std::path::{Path, PathBuf};
use std::time::Duration;

use plotters::style::{BLACK, BLUE, GREEN, RED, RGBColor};

use super::{Matched, report};
use crate::load::plot::{Chart, log_log};

/// Clock ticks per second of `/proc/<pid>/stat`'s CPU times (`USER_HZ`, fixed at 100 by the
/// kernel's ABI on the architectures this runs on).
pub const USER_HZ: f64 = 100.0;

/// The figures at one number of clients.
#[derive(Debug, Clone, Default)]
pub struct Step {
    /// Clients connected.
    pub clients: usize,
    /// Frames matched to the engine event that caused them.
    pub frames: usize,
    /// Engine event -> frame at the client, median, milliseconds.
    pub p50_ms: f64,
    /// The same, 99th percentile.
    pub p99_ms: f64,
    /// The same, slowest.
    pub max_ms: f64,
    /// Frames that never came within the frame timeout.
    pub missing: u64,
    /// The platform's resident memory with the clients connected, KiB (`--platform-pid`).
    pub rss_kib: Option<u64>,
    /// Its resident memory above the same process with no client, per client, KiB.
    pub kib_per_client: Option<f64>,
    /// Its CPU while the clients are connected and nothing changes, percent of one core.
    pub idle_cpu_percent: Option<f64>,
}

impl Step {
    /// The step of `clients` from its matched frames (any order) and missing count.
    pub fn new(clients: usize, matched: &[Matched], missing: u64) -> Self {
        let mut totals: Vec<Duration> = matched.iter().map(|m| m.total).collect();
        totals.sort_unstable();
        let ms = |d: Duration| d.as_secs_f64() * 1000.0;
        Self {
            clients,
            frames: totals.len(),
            p50_ms: ms(report::percentile(&totals, 0.5)),
            p99_ms: ms(report::percentile(&totals, 0.99)),
            max_ms: totals.last().copied().map(ms).unwrap_or_default(),
            missing,
            ..Self::default()
        }
    }
}

/// What a process holds and has spent, from `/proc`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Usage {
    /// Resident memory, KiB.
    pub rss_kib: u64,
    /// User plus system CPU time, in ticks of [`USER_HZ`].
    pub cpu_ticks: u64,
}

impl Usage {
    /// The usage of process `pid` on this host.
    ///
    /// # Errors
    /// When `/proc/<pid>` cannot be read (no such process, not Linux) or reads unexpectedly.
    pub fn of(pid: u32) -> Result<Self, String> {
        let read = |file: &str| {
            std::fs::read_to_string(format!("/proc/{pid}/{file}"))
                .map_err(|err| format!("reading /proc/{pid}/{file} (--platform-pid): {err}"))
        };
        Self::parse(&read("status")?, &read("stat")?)
            .ok_or_else(|| format!("/proc/{pid}/status or stat does not read as expected"))
    }

    /// The usage in the text of `/proc/<pid>/status` and `/proc/<pid>/stat`.
    pub fn parse(status: &str, stat: &str) -> Option<Self> {
        let rss_kib = status
            .lines()
            .find_map(|line| line.strip_prefix("VmRSS:"))?
            .trim()
            .trim_end_matches("kB")
            .trim()
            .parse()
            .ok()?;
        // The command name (field 2) is in parentheses and may hold spaces: count the fields
        // after its closing one, which starts at field 3 (state); utime and stime are 14 and 15.
        let after_name: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
        let field = |n: usize| after_name.get(n - 3)?.parse::<u64>().ok();
        Some(Self { rss_kib, cpu_ticks: field(14)? + field(15)? })
    }

    /// CPU between `self` and `later`, over `elapsed`, as percent of one core.
    pub fn cpu_percent_until(&self, later: &Self, elapsed: Duration) -> f64 {
        let seconds = later.cpu_ticks.saturating_sub(self.cpu_ticks) as f64 / USER_HZ;
        seconds / elapsed.as_secs_f64().max(f64::EPSILON) * 100.0
    }
}

/// Prints the table of every step.
pub fn print_table(steps: &[Step]) {
    let kib = |value: Option<u64>| {
        value.map_or("-".to_owned(), |v| format!("{:.1} MiB", v as f64 / 1024.0))
    };
    let float =
        |value: Option<f64>, unit: &str| value.map_or("-".to_owned(), |v| format!("{v:.1}{unit}"));
    println!(
        "\n| clients | frames | p50 | p99 | max | missing | platform resident | per client | idle CPU |"
    );
    println!("|---|---|---|---|---|---|---|---|---|");
    for step in steps {
        println!(
            "| {} | {} | {:.1} ms | {:.1} ms | {:.1} ms | {} | {} | {} | {} |",
            step.clients,
            step.frames,
            step.p50_ms,
            step.p99_ms,
            step.max_ms,
            step.missing,
            kib(step.rss_kib),
            float(step.kib_per_client, " KiB"),
            float(step.idle_cpu_percent, " %"),
        );
    }
}

/// Draws the steps into `dir`; the paths written.
///
/// # Errors
/// When a plot cannot be drawn or written.
pub fn draw(steps: &[Step], dir: &Path) -> Result<Vec<PathBuf>, String> {
    let clients = |step: &Step| step.clients as f64;
    let latency = dir.join("scale-sockets-latency.svg");
    log_log(
        steps,
        clients,
        Chart {
            path: &latency,
            title: "Docker event to WebSocket frame, every client of one user (real engine)",
            x_desc: "live-status clients",
            unit: "milliseconds",
        },
        &[
            ("p50", BLUE, |step| step.p50_ms),
            ("p99", RED, |step| step.p99_ms),
            ("max", RGBColor(255, 150, 150), |step| step.max_ms),
        ],
    )?;
    // Memory and CPU are read only with the platform's process id.
    if steps.iter().all(|step| step.kib_per_client.is_none()) {
        return Ok(vec![latency]);
    }
    let cost = dir.join("scale-sockets-cost.svg");
    log_log(
        steps,
        clients,
        Chart {
            path: &cost,
            title: "What the platform process holds and spends per live client",
            x_desc: "live-status clients",
            unit: "KiB / percent of a core",
        },
        &[
            ("resident KiB per client", BLACK, |step| step.kib_per_client.unwrap_or(0.0)),
            ("idle CPU, % of a core", GREEN, |step| step.idle_cpu_percent.unwrap_or(0.0)),
        ],
    )?;
    Ok(vec![latency, cost])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usage_reads_resident_memory_and_both_cpu_times() {
        let status = "Name:\tiaas-platform\nVmPeak:\t  900 kB\nVmRSS:\t   51234 kB\nThreads:\t9\n";
        // A command name with a space and a parenthesis, as a process may name itself.
        let stat = "4242 (iaas (main) x) S 1 4242 4242 0 -1 4194560 100 0 0 0 250 75 0 0 20 0 9 0";
        assert_eq!(Usage::parse(status, stat), Some(Usage { rss_kib: 51_234, cpu_ticks: 325 }));
        assert_eq!(Usage::parse("Name:\tx\n", stat), None, "no VmRSS line");
        assert_eq!(Usage::parse(status, "4242 (x) S 1"), None, "a cut stat line");
    }

    #[test]
    fn cpu_is_a_share_of_one_core_over_the_window() {
        let before = Usage { rss_kib: 0, cpu_ticks: 100 };
        let after = Usage { rss_kib: 0, cpu_ticks: 150 };
        let percent = before.cpu_percent_until(&after, Duration::from_secs(2));
        assert!((percent - 25.0).abs() < 1e-9, "0.5 s of CPU in 2 s: {percent}");
    }

    #[test]
    fn a_step_takes_percentiles_of_its_frames() {
        let matched: Vec<Matched> = (1..=100)
            .rev()
            .map(|ms| Matched {
                total: Duration::from_millis(ms),
                to_watcher: Duration::ZERO,
                to_client: Duration::ZERO,
                status: "running".to_owned(),
            })
            .collect();
        let step = Step::new(10, &matched, 2);
        assert_eq!((step.clients, step.frames, step.missing), (10, 100, 2));
        assert!((step.max_ms - 100.0).abs() < 1e-9);
        assert!(step.p50_ms >= 49.0 && step.p50_ms <= 51.0, "{}", step.p50_ms);
        assert!(step.p99_ms >= 98.0, "{}", step.p99_ms);
    }
}
