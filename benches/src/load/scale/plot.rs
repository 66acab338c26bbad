//! The plots of `iaas-load scale`: latency and throughput against the number of instances,
//! both axes logarithmic, drawn with plotters as SVG.

use std::path::{Path, PathBuf};

use plotters::prelude::*;

use super::Row;

/// One line of a plot: its name, colour and the value of each row.
type Series<'a> = (&'a str, RGBColor, fn(&Row) -> f64);

/// Draws `rows` into `dir`; the paths written.
pub(super) fn draw(rows: &[Row], dir: &Path) -> Result<Vec<PathBuf>, String> {
    let latency = dir.join("scale-instances-latency.svg");
    chart(
        rows,
        &latency,
        "Request latency in the control plane (simulated engine, SQLite store)",
        "microseconds",
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
    chart(
        rows,
        &throughput,
        "Throughput and whole passes (simulated engine, SQLite store)",
        "per second / milliseconds / KiB",
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

fn chart(
    rows: &[Row],
    path: &Path,
    title: &str,
    unit: &str,
    series: &[Series<'_>],
) -> Result<(), String> {
    let failed = |err: &dyn std::fmt::Display| format!("drawing {}: {err}", path.display());
    let values = || rows.iter().flat_map(|row| series.iter().map(move |(_, _, of)| of(row)));
    let low = values().filter(|value| *value > 0.0).fold(f64::INFINITY, f64::min);
    let high = values().fold(0.0_f64, f64::max);
    if !low.is_finite() || high <= 0.0 {
        return Err(failed(&"nothing to draw"));
    }
    let first = rows.iter().map(|row| row.instances).min().unwrap_or(1).max(1) as f64;
    let last = rows.iter().map(|row| row.instances).max().unwrap_or(1).max(1) as f64;
    let root = SVGBackend::new(path, (900, 560)).into_drawing_area();
    root.fill(&WHITE).map_err(|err| failed(&err))?;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 20))
        .margin(12)
        .x_label_area_size(44)
        .y_label_area_size(70)
        .build_cartesian_2d(
            (first / 1.5..last * 1.5).log_scale(),
            // Whole decades, so each axis has labels at its powers of ten.
            (10f64.powf(low.log10().floor())..10f64.powf(high.log10().ceil())).log_scale(),
        )
        .map_err(|err| failed(&err))?;
    chart
        .configure_mesh()
        .x_desc("instances managed")
        .y_desc(unit)
        .draw()
        .map_err(|err| failed(&err))?;
    for (name, colour, of) in series {
        let points: Vec<(f64, f64)> = rows
            .iter()
            .map(|row| (row.instances as f64, of(row)))
            .filter(|(_, value)| *value > 0.0)
            .collect();
        let colour = *colour;
        chart
            .draw_series(LineSeries::new(points.clone(), colour.stroke_width(2)))
            .map_err(|err| failed(&err))?
            .label(*name)
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], colour));
        chart
            .draw_series(points.into_iter().map(|point| Circle::new(point, 3, colour.filled())))
            .map_err(|err| failed(&err))?;
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .position(SeriesLabelPosition::UpperLeft)
        .draw()
        .map_err(|err| failed(&err))?;
    root.present().map_err(|err| failed(&err))
}
