//! A sweep of `iaas-load docker-ws` over several client counts: what the platform process
//! holds and spends at each (read from `/proc`), the summary table and the plots.

use std::path::{Path, PathBuf};
use std::time::Duration;

use plotters::style::{BLACK, BLUE, GREEN, RED, RGBColor};

use super::{Matched, report};
use crate::load::plot::{Chart, log_log};

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
    /// The logins it asked the session store about per second meanwhile (its `/metrics`).
    pub session_checks_per_sec: Option<f64>,
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

/// Prints the table of every step.
pub fn print_table(steps: &[Step]) {
    let kib = |value: Option<u64>| {
        value.map_or("-".to_owned(), |v| format!("{:.1} MiB", v as f64 / 1024.0))
    };
    let float =
        |value: Option<f64>, unit: &str| value.map_or("-".to_owned(), |v| format!("{v:.1}{unit}"));
    println!(
        "\n| clients | frames | p50 | p99 | max | missing | platform resident | per client | idle CPU | session checks/s |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|");
    for step in steps {
        println!(
            "| {} | {} | {:.1} ms | {:.1} ms | {:.1} ms | {} | {} | {} | {} | {} |",
            step.clients,
            step.frames,
            step.p50_ms,
            step.p99_ms,
            step.max_ms,
            step.missing,
            kib(step.rss_kib),
            float(step.kib_per_client, " KiB"),
            float(step.idle_cpu_percent, " %"),
            float(step.session_checks_per_sec, ""),
        );
    }
}

/// Draws the steps into `dir`; the paths written.
///
/// # Errors
/// When a plot cannot be drawn or written.
pub fn draw(steps: &[Step], dir: &Path) -> Result<Vec<PathBuf>, String> {
    std::fs::create_dir_all(dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
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
