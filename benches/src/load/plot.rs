//! Log-log line charts of the load tool's sweeps, drawn with plotters as SVG: one point per
//! step of the sweep (instances, clients, events), one line per measured series.

use std::path::Path;

use plotters::prelude::*;

/// One line of a chart: its name, colour and the value of each row.
pub type Series<'a, R> = (&'a str, RGBColor, fn(&R) -> f64);

/// What a chart shows and where it goes.
#[derive(Debug, Clone, Copy)]
pub struct Chart<'a> {
    /// The SVG file written.
    pub path: &'a Path,
    /// The caption.
    pub title: &'a str,
    /// The x axis: what the sweep grows.
    pub x_desc: &'a str,
    /// The y axis: the unit of the series.
    pub unit: &'a str,
}

/// Draws `series` of `rows` against `x` of each row, both axes logarithmic; values at or
/// below zero are left out (a log axis has no place for them).
///
/// # Errors
/// When nothing is above zero, or plotters cannot draw or write the file.
pub fn log_log<R>(
    rows: &[R],
    x: fn(&R) -> f64,
    chart: Chart<'_>,
    series: &[Series<'_, R>],
) -> Result<(), String> {
    let path = chart.path;
    let failed = |err: &dyn std::fmt::Display| format!("drawing {}: {err}", path.display());
    let values = || rows.iter().flat_map(|row| series.iter().map(move |(_, _, of)| of(row)));
    let low = values().filter(|value| *value > 0.0).fold(f64::INFINITY, f64::min);
    let high = values().fold(0.0_f64, f64::max);
    if !low.is_finite() || high <= 0.0 {
        return Err(failed(&"nothing to draw"));
    }
    let first = rows.iter().map(x).fold(f64::INFINITY, f64::min).max(1.0);
    let last = rows.iter().map(x).fold(1.0_f64, f64::max);
    let root = SVGBackend::new(path, (900, 560)).into_drawing_area();
    root.fill(&WHITE).map_err(|err| failed(&err))?;
    let mut drawn = ChartBuilder::on(&root)
        .caption(chart.title, ("sans-serif", 20))
        .margin(12)
        .x_label_area_size(44)
        .y_label_area_size(70)
        .build_cartesian_2d(
            (first / 1.5..last * 1.5).log_scale(),
            // Whole decades, so each axis has labels at its powers of ten.
            (10f64.powf(low.log10().floor())..10f64.powf(high.log10().ceil())).log_scale(),
        )
        .map_err(|err| failed(&err))?;
    drawn
        .configure_mesh()
        .x_desc(chart.x_desc)
        .y_desc(chart.unit)
        .draw()
        .map_err(|err| failed(&err))?;
    for (name, colour, of) in series {
        let points: Vec<(f64, f64)> =
            rows.iter().map(|row| (x(row), of(row))).filter(|(_, value)| *value > 0.0).collect();
        let colour = *colour;
        drawn
            .draw_series(LineSeries::new(points.clone(), colour.stroke_width(2)))
            .map_err(|err| failed(&err))?
            .label(*name)
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], colour));
        drawn
            .draw_series(points.into_iter().map(|point| Circle::new(point, 3, colour.filled())))
            .map_err(|err| failed(&err))?;
    }
    drawn
        .configure_series_labels()
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .position(SeriesLabelPosition::UpperLeft)
        .draw()
        .map_err(|err| failed(&err))?;
    root.present().map_err(|err| failed(&err))
}
