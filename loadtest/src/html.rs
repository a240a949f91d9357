//! The report as one self-contained HTML page: summary tables and inline SVG charts of
//! latency, throughput, connected users and CPU over time, with the start of publishing
//! and every timed action marked.

use crate::report::{Point, Report};
use std::fmt::Write as _;

const WIDTH: f64 = 880.0;
const HEIGHT: f64 = 240.0;
const LEFT: f64 = 64.0;
const RIGHT: f64 = 16.0;
const TOP: f64 = 16.0;
const BOTTOM: f64 = 46.0;

/// A named line of a chart.
struct Series<'a> {
    name: &'a str,
    color: &'a str,
    value: fn(&Point) -> f64,
}

/// A vertical line at a time, with a label.
struct Marker {
    t: f64,
    label: String,
}

/// Renders the whole page.
pub fn render(report: &Report) -> String {
    let mut markers = vec![Marker {
        t: report.phases.publish_started_at,
        label: "publishing starts".into(),
    }];
    markers.push(Marker {
        t: report.phases.publish_started_at + report.phases.publish_secs,
        label: "publishing ends".into(),
    });
    for action in &report.actions {
        markers.push(Marker {
            t: action.at_secs,
            label: action.label.clone(),
        });
    }
    for (index, step) in report.steps.iter().enumerate().skip(1) {
        markers.push(Marker {
            t: report.phases.publish_started_at + report.setup.step_secs * index as f64,
            label: format!("{}/s", step.rate_per_room),
        });
    }
    let mut page = String::new();
    let verdict = format!(
        "<p class={}>{}</p>",
        if report.verdict.passed {
            "pass"
        } else {
            "fail"
        },
        escape(&report.verdict_line())
    );
    let _ = write!(
        page,
        "<!doctype html><html><head><meta charset=utf-8><title>roomcast-load: {name}</title>\
         <style>body{{font-family:sans-serif;max-width:920px;margin:2em auto;color:#222}}\
         table{{border-collapse:collapse;margin:1em 0}}td,th{{border:1px solid #ccc;padding:3px 8px;text-align:right}}\
         th{{background:#f4f4f4}}td:first-child,th:first-child{{text-align:left}}\
         .pass{{color:#080;font-weight:bold}}.fail{{color:#b00;font-weight:bold}}\
         svg{{background:#fff;border:1px solid #ddd}}text{{font-size:11px}}</style></head><body>\
         <h1>roomcast-load: {name}</h1><p>{description}</p>{verdict}",
        name = escape(&report.scenario),
        description = escape(&report.description),
    );
    page.push_str(&summary(report));
    let charts: [(&str, Vec<Series>); 5] = [
        (
            "Publish-to-receive latency (ms), per second",
            vec![
                Series {
                    name: "p50",
                    color: "#1f77b4",
                    value: |p| p.p50_ms,
                },
                Series {
                    name: "p99",
                    color: "#d62728",
                    value: |p| p.p99_ms,
                },
                Series {
                    name: "max",
                    color: "#bbbbbb",
                    value: |p| p.max_ms,
                },
            ],
        ),
        (
            "Deliveries per second",
            vec![Series {
                name: "delivered/s",
                color: "#2ca02c",
                value: |p| p.delivered_per_sec,
            }],
        ),
        (
            "Acknowledged publishes per second",
            vec![Series {
                name: "acked/s",
                color: "#9467bd",
                value: |p| p.acked_per_sec,
            }],
        ),
        (
            "Connected users (every room subscribed)",
            vec![Series {
                name: "users",
                color: "#ff7f0e",
                value: |p| p.connected as f64,
            }],
        ),
        (
            "CPU (cores)",
            vec![
                Series {
                    name: "load generator",
                    color: "#8c564b",
                    value: |p| p.generator_cores,
                },
                Series {
                    name: "servers",
                    color: "#17becf",
                    value: |p| p.server_cores,
                },
            ],
        ),
    ];
    for (title, series) in charts {
        let _ = write!(page, "<h2>{}</h2>", escape(title));
        page.push_str(&chart(&report.timeline, &series, &markers));
    }
    page.push_str("</body></html>\n");
    page
}

fn summary(report: &Report) -> String {
    let mut html = String::from("<table><tr><th>figure</th><th>value</th></tr>");
    for (key, value) in report.rows() {
        let _ = write!(
            html,
            "<tr><td>{}</td><td>{}</td></tr>",
            escape(&key),
            escape(&value)
        );
    }
    html.push_str("</table>");
    html
}

/// One line chart as inline SVG.
fn chart(points: &[Point], series: &[Series], markers: &[Marker]) -> String {
    let t_max = points
        .iter()
        .map(|p| p.t)
        .chain(markers.iter().map(|m| m.t))
        .fold(1.0, f64::max);
    let y_max = nice_ceiling(
        points
            .iter()
            .flat_map(|p| series.iter().map(move |s| (s.value)(p)))
            .fold(0.0, f64::max),
    );
    let x = |t: f64| LEFT + (WIDTH - LEFT - RIGHT) * t / t_max;
    let y = |v: f64| HEIGHT - BOTTOM - (HEIGHT - TOP - BOTTOM) * v / y_max;
    let mut svg = format!(
        "<svg width={WIDTH} height={HEIGHT} viewBox='0 0 {WIDTH} {HEIGHT}' xmlns='http://www.w3.org/2000/svg'>"
    );
    for tick in 0..=4 {
        let value = y_max * f64::from(tick) / 4.0;
        let _ = write!(
            svg,
            "<line x1={LEFT} x2={} y1={y:.1} y2={y:.1} stroke='#eee'/>\
             <text x={} y={:.1} text-anchor=end>{}</text>",
            WIDTH - RIGHT,
            LEFT - 4.0,
            y(value) + 4.0,
            format_value(value),
            y = y(value)
        );
    }
    let x_step = nice_ceiling(t_max / 8.0).max(1.0);
    let mut t = 0.0;
    while t <= t_max {
        let _ = write!(
            svg,
            "<text x={:.1} y={} text-anchor=middle>{t:.0}s</text>",
            x(t),
            HEIGHT - BOTTOM + 16.0,
        );
        t += x_step;
    }
    for (index, marker) in markers.iter().enumerate() {
        // Labels near the right edge go to the left of their line; labels alternate
        // between two heights so that neighbours do not overlap.
        let at = x(marker.t);
        let (anchor, dx) = if at > WIDTH * 0.75 {
            ("end", -3.0)
        } else {
            ("start", 3.0)
        };
        let _ = write!(
            svg,
            "<line x1={at:.1} x2={at:.1} y1={TOP} y2={} stroke='#999' stroke-dasharray='4 3'/>\
             <text x={:.1} y={} text-anchor={anchor} fill='#555'>{}</text>",
            HEIGHT - BOTTOM,
            at + dx,
            TOP + 10.0 + 12.0 * (index % 2) as f64,
            escape(&marker.label),
        );
    }
    for (index, line) in series.iter().enumerate() {
        let coordinates: Vec<String> = points
            .iter()
            .map(|p| format!("{:.1},{:.1}", x(p.t), y((line.value)(p))))
            .collect();
        let _ = write!(
            svg,
            "<polyline fill=none stroke='{color}' stroke-width=1.5 points='{}'/>\
             <rect x={lx} y={ly} width=10 height=10 fill='{color}'/><text x={} y={}>{}</text>",
            coordinates.join(" "),
            LEFT + 26.0 + 130.0 * index as f64,
            HEIGHT - 5.0,
            escape(line.name),
            color = line.color,
            lx = LEFT + 12.0 + 130.0 * index as f64,
            ly = HEIGHT - 14.0,
        );
    }
    svg.push_str("</svg>");
    svg
}

/// The smallest of 1, 2, 5 × 10^k at or above `value` (1 for nothing).
fn nice_ceiling(value: f64) -> f64 {
    if value <= 0.0 || !value.is_finite() {
        return 1.0;
    }
    let magnitude = 10f64.powf(value.log10().floor());
    [1.0, 2.0, 5.0, 10.0]
        .into_iter()
        .map(|m| m * magnitude)
        .find(|candidate| *candidate >= value)
        .unwrap_or(10.0 * magnitude)
}

fn format_value(value: f64) -> String {
    if value >= 10_000.0 {
        format!("{:.0}k", value / 1000.0)
    } else if value >= 10.0 || value == 0.0 {
        format!("{value:.0}")
    } else {
        format!("{value:.2}")
    }
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
        .replace('\'', "&#39;")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn axis_maxima_are_round() {
        assert_eq!(nice_ceiling(0.0), 1.0);
        assert_eq!(nice_ceiling(3.2), 5.0);
        assert_eq!(nice_ceiling(120.0), 200.0);
        assert_eq!(nice_ceiling(1000.0), 1000.0);
    }

    #[test]
    fn labels_are_escaped() {
        assert_eq!(
            escape("kill -9 <a> & 'b'"),
            "kill -9 &lt;a&gt; &amp; &#39;b&#39;"
        );
    }

    #[test]
    fn a_chart_draws_every_series_and_marker() {
        let point = |t: f64| Point {
            t,
            connected: 10,
            delivered_per_sec: 100.0 * t,
            acked_per_sec: 1.0,
            p50_ms: 1.0,
            p99_ms: 2.0,
            max_ms: 3.0,
            disconnects: 0,
            generator_cores: 0.5,
            server_cores: 0.5,
        };
        let svg = chart(
            &[point(0.0), point(1.0), point(2.0)],
            &[
                Series {
                    name: "p50",
                    color: "#000",
                    value: |p| p.p50_ms,
                },
                Series {
                    name: "p99",
                    color: "#f00",
                    value: |p| p.p99_ms,
                },
            ],
            &[Marker {
                t: 1.5,
                label: "kill -9 instance-0".into(),
            }],
        );
        assert_eq!(svg.matches("<polyline").count(), 2);
        assert!(svg.contains("kill -9 instance-0"));
        assert!(svg.starts_with("<svg") && svg.ends_with("</svg>"));
    }
}
