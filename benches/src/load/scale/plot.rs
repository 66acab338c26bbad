//! The plots of `iaas-load scale`: latency and throughput against the number of instances.

use std::path::{Path, PathBuf};

use plotters::style::{BLACK, BLUE, GREEN, RED, RGBColor};

use super::Row;
use crate::load::plot::{Chart, log_log};

/// Draws `rows` into `dir`; the paths written.
pub(super) fn draw(rows: &[Row], dir: &Path) -> Result<Vec<PathBuf>, String> {
    let instances = |row: &Row| row.instances as f64;
    let latency = dir.join("scale-instances-latency.svg");
    log_log(
        rows,
        instances,
        Chart {
            path: &latency,
            title: "Request latency in the control plane (simulated engine, SQLite store)",
            x_desc: "instances managed",
            unit: "microseconds",
        },
        &[
            ("read p50", BLUE, |row| row.read_p50_us),
            ("read p99", RGBColor(120, 160, 255), |row| row.read_p99_us),
            ("list p50", RED, |row| row.list_p50_us),
            ("list p99", RGBColor(255, 150, 150), |row| row.list_p99_us),
            ("cluster view p50", GREEN, |row| row.cluster_p50_us),
            ("cluster view p99", RGBColor(140, 210, 140), |row| row.cluster_p99_us),
        ],
    )?;
    let throughput = dir.join("scale-instances-throughput.svg");
    log_log(
        rows,
        instances,
        Chart {
            path: &throughput,
            title: "Throughput and whole passes (simulated engine, SQLite store)",
            x_desc: "instances managed",
            unit: "per second / milliseconds / KiB",
        },
        &[
            ("creates accepted /s", BLUE, |row| row.accepted_per_s),
            ("instances running /s", RGBColor(120, 160, 255), |row| row.running_per_s),
            ("watcher events /s", RED, |row| row.watcher_per_s),
            ("reconcile pass, ms", GREEN, |row| row.reconcile_ms),
            ("resident KiB per instance", BLACK, |row| row.kib_per_instance),
        ],
    )?;
    Ok(vec![latency, throughput])
}
