//! `--plot FILE.svg`: one org's window fill, effective tier limit and rating over trace time.

use plotters::prelude::*;
use tiergate_core::{QualityRating, Usage};

/// Samples of one org, taken at each of its sends (thinned to a bounded number).
#[derive(Debug, Clone)]
pub struct Samples {
    /// The org plotted.
    pub org: String,
    /// (ms, window fill, effective limit or None, rating).
    points: Vec<(u64, u64, Option<u64>, QualityRating)>,
    stride: u64,
    seen: u64,
}

const MAX_POINTS: usize = 4_000;

impl Samples {
    /// Samples for `org`.
    pub fn new(org: String) -> Self {
        Self {
            org,
            points: Vec::new(),
            stride: 1,
            seen: 0,
        }
    }

    /// Records the usage one send saw.
    pub fn push(&mut self, t: u64, u: &Usage) {
        self.seen += 1;
        if self.seen % self.stride != 0 {
            return;
        }
        self.points
            .push((t, u.unique_recipients_24h, u.tier_limit, u.quality_rating));
        if self.points.len() >= MAX_POINTS {
            // Keep every other point and sample half as often from now on.
            let mut i = 0;
            self.points.retain(|_| {
                i += 1;
                i % 2 == 0
            });
            self.stride *= 2;
        }
    }

    /// Points kept.
    pub fn len(&self) -> usize {
        self.points.len()
    }

    /// Whether nothing was sampled.
    pub fn is_empty(&self) -> bool {
        self.points.is_empty()
    }

    /// Draws the SVG.
    pub fn draw(&self, path: &std::path::Path) -> Result<(), String> {
        let err = |e: &dyn std::fmt::Display| e.to_string();
        let (Some(first), Some(last)) = (self.points.first(), self.points.last()) else {
            return Err(format!("no sends of org {:?} to plot", self.org));
        };
        let hours = |t: u64| (t - first.0) as f64 / 3_600_000.0;
        let x_max = hours(last.0).max(1.0);
        let y_max = self
            .points
            .iter()
            .map(|p| p.1.max(p.2.unwrap_or(0)))
            .max()
            .unwrap_or(1)
            .max(1) as f64
            * 1.15;
        let root = SVGBackend::new(path, (1100, 560)).into_drawing_area();
        root.fill(&WHITE).map_err(|e| err(&e))?;
        let mut chart = ChartBuilder::on(&root)
            .caption(
                format!("tiergate simulate: org {}", self.org),
                ("sans-serif", 22),
            )
            .margin(14)
            .x_label_area_size(40)
            .y_label_area_size(70)
            .build_cartesian_2d(0f64..x_max, 0f64..y_max)
            .map_err(|e| err(&e))?;
        chart
            .configure_mesh()
            .x_desc("hours into the trace")
            .y_desc("unique recipients (24 h)")
            .draw()
            .map_err(|e| err(&e))?;
        chart
            .draw_series(LineSeries::new(
                self.points.iter().map(|p| (hours(p.0), p.1 as f64)),
                BLUE.stroke_width(2),
            ))
            .map_err(|e| err(&e))?
            .label("window fill")
            .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], BLUE));
        chart
            .draw_series(LineSeries::new(
                self.points
                    .iter()
                    .filter_map(|p| p.2.map(|l| (hours(p.0), l as f64))),
                BLACK.stroke_width(2),
            ))
            .map_err(|e| err(&e))?
            .label("effective tier limit")
            .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], BLACK));
        // The rating as a band along the bottom: green, yellow, red, grey.
        let band = y_max * 0.03;
        chart
            .draw_series(self.points.windows(2).map(|w| {
                let color = match w[0].3 {
                    QualityRating::Green => GREEN,
                    QualityRating::Yellow => YELLOW,
                    QualityRating::Red => RED,
                    QualityRating::Unknown => RGBColor(170, 170, 170),
                };
                Rectangle::new(
                    [(hours(w[0].0), 0.0), (hours(w[1].0), band)],
                    color.filled(),
                )
            }))
            .map_err(|e| err(&e))?
            .label("quality rating (band)")
            .legend(|(x, y)| Rectangle::new([(x, y - 4), (x + 18, y + 4)], RED.filled()));
        chart
            .configure_series_labels()
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK)
            .draw()
            .map_err(|e| err(&e))?;
        root.present().map_err(|e| err(&e))
    }
}

/// `tiergate plan --plot FILE.svg`: a campaign plan's cumulative sends over time against the tier
/// limit, in the style of the simulator's plot.
#[derive(Debug, Clone)]
pub struct PlanChart<'a> {
    /// The caption.
    pub title: &'a str,
    /// The waves: (ms after the plan's start, recipients), in time order.
    pub waves: &'a [(u64, u64)],
    /// The effective tier limit; `None` when unlimited (no line is drawn).
    pub tier_limit: Option<u64>,
    /// The share of the limit the campaign's category may fill when the reserves keep part of it
    /// for other categories: (label, share).
    pub share: Option<(String, u64)>,
}

impl PlanChart<'_> {
    /// Draws the SVG.
    pub fn draw(&self, path: &std::path::Path) -> Result<(), String> {
        let err = |e: &dyn std::fmt::Display| e.to_string();
        // The x axis in a unit that suits the campaign's length.
        let span = self.waves.last().map_or(0, |w| w.0);
        let (unit_ms, unit) = match span {
            s if s <= 2 * 60_000 => (1_000.0, "seconds"),
            s if s <= 2 * 3_600_000 => (60_000.0, "minutes"),
            s if s <= 3 * 86_400_000 => (3_600_000.0, "hours"),
            _ => (86_400_000.0, "days"),
        };
        // A step line: flat between waves, up at each; thinned to a bounded number of waves.
        let stride = self.waves.len().div_ceil(MAX_POINTS).max(1);
        let mut steps = vec![(0.0, 0.0)];
        let mut total = 0u64;
        for (i, &(t, n)) in self.waves.iter().enumerate() {
            total += n;
            if i % stride != 0 && i + 1 != self.waves.len() {
                continue;
            }
            let x = t as f64 / unit_ms;
            let prev = steps.last().map_or(0.0, |p: &(f64, f64)| p.1);
            steps.push((x, prev));
            steps.push((x, total as f64));
        }
        let last_x = steps.last().map_or(0.0, |p| p.0);
        let x_max = (last_x * 1.05).max(1.0);
        steps.push((x_max, total as f64));
        let y_max = total
            .max(self.tier_limit.unwrap_or(0))
            .max(self.share.as_ref().map_or(0, |s| s.1))
            .max(1) as f64
            * 1.15;
        let root = SVGBackend::new(path, (1100, 560)).into_drawing_area();
        root.fill(&WHITE).map_err(|e| err(&e))?;
        let mut chart = ChartBuilder::on(&root)
            .caption(self.title, ("sans-serif", 22))
            .margin(14)
            .x_label_area_size(40)
            .y_label_area_size(70)
            .build_cartesian_2d(0f64..x_max, 0f64..y_max)
            .map_err(|e| err(&e))?;
        chart
            .configure_mesh()
            .x_desc(format!("{unit} from now"))
            .y_desc("recipients sent (cumulative)")
            .y_label_formatter(&|v| format!("{v:.0}"))
            .draw()
            .map_err(|e| err(&e))?;
        chart
            .draw_series(LineSeries::new(steps, BLUE.stroke_width(2)))
            .map_err(|e| err(&e))?
            .label("cumulative sends")
            .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], BLUE));
        if let Some(limit) = self.tier_limit {
            chart
                .draw_series(LineSeries::new(
                    [(0.0, limit as f64), (x_max, limit as f64)],
                    BLACK.stroke_width(2),
                ))
                .map_err(|e| err(&e))?
                .label("effective tier limit (per 24 h)")
                .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], BLACK));
        }
        if let Some((label, share)) = &self.share {
            let orange = RGBColor(230, 120, 0);
            chart
                .draw_series(LineSeries::new(
                    [(0.0, *share as f64), (x_max, *share as f64)],
                    orange.stroke_width(2),
                ))
                .map_err(|e| err(&e))?
                .label(label.as_str())
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], orange));
        }
        chart
            .configure_series_labels()
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK)
            .position(SeriesLabelPosition::LowerRight)
            .draw()
            .map_err(|e| err(&e))?;
        root.present().map_err(|e| err(&e))
    }
}
