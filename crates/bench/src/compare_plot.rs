//! SVG line charts of `bench compare` (plotters, SVG backend only).

use std::path::Path;

use anyhow::anyhow;
use plotters::prelude::*;

/// One line of a chart: label, points (x, y), colour, dashed.
pub struct Series {
    pub label: String,
    pub points: Vec<(f64, f64)>,
    pub color: RGBColor,
    pub dashed: bool,
}

/// The colour of each system, the same in every chart.
pub fn color(system: &str) -> RGBColor {
    match system {
        "gossipdir" => RGBColor(0x1f, 0x77, 0xb4),
        "chitchat" => RGBColor(0xd6, 0x27, 0x28),
        "gossipsub" => RGBColor(0x2c, 0xa0, 0x2c),
        "full view" => RGBColor(0x94, 0x67, 0xbd),
        "minimum" => RGBColor(0x40, 0x40, 0x40),
        _ => RGBColor(0xff, 0x7f, 0x0e),
    }
}

fn err(e: impl std::fmt::Display) -> anyhow::Error {
    anyhow!("cannot draw the plot: {e}")
}

/// Writes a line chart to `path`; log-scale axes where asked (every value must then be > 0).
pub fn line_chart(
    path: &Path,
    title: &str,
    x_desc: &str,
    y_desc: &str,
    series: &[Series],
    log_x: bool,
    log_y: bool,
) -> anyhow::Result<()> {
    let all: Vec<(f64, f64)> = series
        .iter()
        .flat_map(|s| s.points.iter().copied())
        .filter(|(x, y)| {
            x.is_finite() && y.is_finite() && (!log_x || *x > 0.0) && (!log_y || *y > 0.0)
        })
        .collect();
    if all.is_empty() {
        return Err(anyhow!("no point to plot in {}", path.display()));
    }
    let (mut x_lo, mut x_hi) = all.iter().fold((f64::MAX, f64::MIN), |(a, b), (x, _)| {
        (a.min(*x), b.max(*x))
    });
    let (mut y_lo, mut y_hi) = all.iter().fold((f64::MAX, f64::MIN), |(a, b), (_, y)| {
        (a.min(*y), b.max(*y))
    });
    if log_x {
        x_lo /= 1.5;
        x_hi *= 1.5;
    } else {
        let pad = ((x_hi - x_lo) * 0.05).max(1.0);
        x_lo = (x_lo - pad).max(0.0);
        x_hi += pad;
    }
    if log_y {
        y_lo /= 2.0;
        y_hi *= 2.0;
    } else {
        y_lo = 0.0;
        y_hi = if y_hi > 0.0 { y_hi * 1.15 } else { 1.0 };
    }
    let root = SVGBackend::new(path, (960, 600)).into_drawing_area();
    root.fill(&WHITE).map_err(err)?;
    let mut builder = ChartBuilder::on(&root);
    builder
        .caption(title, ("sans-serif", 20))
        .margin(15)
        .margin_right(40)
        .x_label_area_size(45)
        .y_label_area_size(80);
    let fmt_y = |y: &f64| {
        if y.abs() >= 1e6 {
            format!("{:.1}M", y / 1e6)
        } else if y.abs() >= 1e3 {
            format!("{:.1}k", y / 1e3)
        } else if y.abs() >= 10.0 || *y == 0.0 {
            format!("{y:.0}")
        } else {
            format!("{y:.1}")
        }
    };
    let fmt_x = |x: &f64| format!("{x:.0}");
    macro_rules! draw {
        ($chart:expr) => {{
            let mut chart = $chart;
            chart
                .configure_mesh()
                .x_desc(x_desc)
                .y_desc(y_desc)
                .x_label_formatter(&fmt_x)
                .y_label_formatter(&fmt_y)
                .draw()
                .map_err(err)?;
            for s in series {
                let color = s.color;
                let points: Vec<(f64, f64)> = s
                    .points
                    .iter()
                    .copied()
                    .filter(|(x, y)| {
                        x.is_finite()
                            && y.is_finite()
                            && (!log_x || *x > 0.0)
                            && (!log_y || *y > 0.0)
                    })
                    .collect();
                if points.is_empty() {
                    continue;
                }
                let style = color.stroke_width(2);
                if s.dashed {
                    chart
                        .draw_series(DashedLineSeries::new(points.iter().copied(), 8, 5, style))
                        .map_err(err)?
                        .label(s.label.clone())
                        .legend(move |(x, y)| {
                            PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(1))
                        });
                } else {
                    chart
                        .draw_series(LineSeries::new(points.iter().copied(), style))
                        .map_err(err)?
                        .label(s.label.clone())
                        .legend(move |(x, y)| {
                            PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2))
                        });
                }
                chart
                    .draw_series(points.iter().map(|&p| Circle::new(p, 4, color.filled())))
                    .map_err(err)?;
            }
            chart
                .configure_series_labels()
                .position(SeriesLabelPosition::UpperLeft)
                .background_style(WHITE.mix(0.85))
                .border_style(BLACK)
                .draw()
                .map_err(err)?;
        }};
    }
    match (log_x, log_y) {
        (false, false) => draw!(
            builder
                .build_cartesian_2d(x_lo..x_hi, y_lo..y_hi)
                .map_err(err)?
        ),
        (true, false) => draw!(
            builder
                .build_cartesian_2d((x_lo..x_hi).log_scale(), y_lo..y_hi)
                .map_err(err)?
        ),
        (false, true) => draw!(
            builder
                .build_cartesian_2d(x_lo..x_hi, (y_lo..y_hi).log_scale())
                .map_err(err)?
        ),
        (true, true) => draw!(
            builder
                .build_cartesian_2d((x_lo..x_hi).log_scale(), (y_lo..y_hi).log_scale())
                .map_err(err)?
        ),
    }
    root.present().map_err(err)?;
    Ok(())
}
