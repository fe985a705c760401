//! Rounds against N (log-scale x): worst / average / best of each report, with the
//! `⌈log₂N⌉` bound and the fanout-1 theory curves (push: `log₂N + ln N`, push-pull:
//! `log₃N`). Meant for a sweep; a single report gives single points.

use std::path::Path;

use plotters::prelude::*;

use crate::Theory;
use crate::ceil_log2;
use crate::report::Report;

/// A reference curve: label, points, colour.
type Curve<'a> = (&'static str, &'a Vec<(f64, f64)>, RGBColor);
/// An observed series: label, colour, value of a report.
type Observed = (&'static str, RGBColor, fn(&Report) -> Option<f64>);

/// Why the chart could not be drawn.
#[derive(Debug, thiserror::Error)]
#[error("cannot draw the plot: {0}")]
pub struct PlotError(String);

fn err(e: impl std::fmt::Display) -> PlotError {
    PlotError(e.to_string())
}

/// Writes the SVG chart of `reports` (sorted by `nodes` for drawing) to `path`.
pub fn plot_svg(path: &Path, reports: &[Report]) -> Result<(), PlotError> {
    if reports.is_empty() {
        return Err(PlotError("no report to plot".into()));
    }
    let mut reports: Vec<&Report> = reports.iter().collect();
    reports.sort_by_key(|r| r.nodes);
    let n_min = f64::from(reports[0].nodes);
    let n_max = f64::from(reports[reports.len() - 1].nodes);
    let (x_lo, x_hi) = if n_min == n_max {
        (n_min / 2.0, n_max * 2.0)
    } else {
        (n_min, n_max)
    };

    // Dense grid for the curves, from max(1, x_lo) to x_hi, geometric.
    let grid_lo = x_lo.max(1.0);
    let steps = 400;
    let grid: Vec<f64> = (0..=steps)
        .map(|s| grid_lo * (x_hi / grid_lo).powf(f64::from(s) / f64::from(steps)))
        .collect();
    let push_curve: Vec<(f64, f64)> = grid.iter().map(|&n| (n, n.log2() + n.ln())).collect();
    let push_pull_curve: Vec<(f64, f64)> = grid.iter().map(|&n| (n, n.log(3.0))).collect();
    let bound_curve: Vec<(f64, f64)> = grid
        .iter()
        .map(|&n| (n, f64::from(ceil_log2(n.ceil() as u32))))
        .collect();

    let observed_max = reports
        .iter()
        .filter_map(|r| r.worst)
        .max()
        .map_or(0.0, f64::from);
    let theory_max = Theory::for_nodes(x_hi.min(f64::from(u32::MAX)) as u32).push;
    let y_hi = (observed_max
        .max(theory_max)
        .max(f64::from(ceil_log2(x_hi as u32)))
        + 1.0)
        .ceil();

    let first = reports[0];
    let title = format!(
        "Bet 15 — rounds to converge vs N (K={}, {}, {} model, {} trials)",
        first.fanout,
        first.mode,
        first.model,
        first.trials.len()
    );

    let root = SVGBackend::new(path, (960, 640)).into_drawing_area();
    root.fill(&WHITE).map_err(err)?;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 20))
        .margin(15)
        .margin_right(40)
        .x_label_area_size(45)
        .y_label_area_size(50)
        .build_cartesian_2d((x_lo..x_hi).log_scale(), 0f64..y_hi)
        .map_err(err)?;
    chart
        .configure_mesh()
        .x_desc("nodes N (log scale)")
        .x_label_formatter(&|x| format!("{x:.0}"))
        .y_label_formatter(&|y| format!("{y:.0}"))
        .y_desc("rounds")
        .draw()
        .map_err(err)?;

    let curves: [Curve; 3] = [
        ("⌈log₂N⌉ (bound)", &bound_curve, BLACK),
        ("push theory, K=1: log₂N + ln N", &push_curve, MAGENTA),
        ("push-pull theory, K=1: log₃N", &push_pull_curve, CYAN),
    ];
    for (label, points, color) in curves {
        chart
            .draw_series(LineSeries::new(
                points.iter().copied(),
                color.stroke_width(1),
            ))
            .map_err(err)?
            .label(label)
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color));
    }

    let observed: [Observed; 3] = [
        ("worst", RED, |r| r.worst.map(f64::from)),
        ("average", BLUE, |r| r.average),
        ("best", GREEN, |r| r.best.map(f64::from)),
    ];
    for (label, color, value) in observed {
        let points: Vec<(f64, f64)> = reports
            .iter()
            .filter_map(|r| value(r).map(|v| (f64::from(r.nodes), v)))
            .collect();
        chart
            .draw_series(LineSeries::new(
                points.iter().copied(),
                color.stroke_width(2),
            ))
            .map_err(err)?
            .label(label)
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2))
            });
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
    root.present().map_err(err)?;
    Ok(())
}
