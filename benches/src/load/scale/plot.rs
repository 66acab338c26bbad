//! The plots of `iaas-load scale`: latency and throughput against the number of instances.

use std::path::{Path, PathBuf};

use plotters::style::{BLACK, BLUE, GREEN, RED, RGBColor};

use super::{EngineKind, Row};
use crate::load::plot::{Chart, Series, log_log};

/// Draws `rows` into `dir`; the paths written (`scale-instances-*.svg`, or
/// `scale-instances-docker-*.svg` for the Docker engine).
pub(super) fn draw(rows: &[Row], dir: &Path, engine: EngineKind) -> Result<Vec<PathBuf>, String> {
    let instances = |row: &Row| row.instances as f64;
    let (prefix, behind) = match engine {
        EngineKind::Simulated => ("scale-instances", "simulated engine, SQLite store"),
        EngineKind::Docker => ("scale-instances-docker", "Docker engine, SQLite store"),
    };
    let latency = dir.join(format!("{prefix}-latency.svg"));
    let latency_title = format!("Request latency in the control plane ({behind})");
    log_log(
        rows,
        instances,
        Chart {
            path: &latency,
            title: &latency_title,
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
    let throughput = dir.join(format!("{prefix}-throughput.svg"));
    let throughput_title = format!("Throughput and whole passes ({behind})");
    let mut series: Vec<Series<'_, Row>> = vec![
        ("creates accepted /s", BLUE, |row| row.accepted_per_s),
        ("instances running /s", RGBColor(120, 160, 255), |row| row.running_per_s),
        ("watcher events /s", RED, |row| row.watcher_per_s),
        ("reconcile pass, ms", GREEN, |row| row.reconcile_ms),
        ("resident KiB per instance", BLACK, |row| row.kib_per_instance),
    ];
    if engine == EngineKind::Docker {
        series.push(("engine's KiB per instance (PSS)", RGBColor(150, 150, 150), |row| {
            row.engine_kib_per_instance
        }));
        series.push(("machine's KiB per instance", RGBColor(200, 120, 40), |row| {
            row.machine_kib_per_instance
        }));
    }
    log_log(
        rows,
        instances,
        Chart {
            path: &throughput,
            title: &throughput_title,
            x_desc: "instances managed",
            unit: "per second / milliseconds / KiB",
        },
        &series,
    )?;
    Ok(vec![latency, throughput])
}
