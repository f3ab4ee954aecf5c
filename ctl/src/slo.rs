//! `agendactl slo --since 1h`: seed 000's SLO table from Prometheus:
//! availability, request latency p95 and agenda-db write p99 over the
//! window, each with its target and pass or fail.
//!
//! The queries are the ones the alert rules in `deploy/prometheus/` use,
//! over the whole window instead of five minutes: the public API's
//! answers (operators' routes and the WebSocket stream left out), and
//! the time agenda-db takes from a proposal to its apply on the leader
//! (a durable write, fsync included).

use std::fmt::Write as _;
use std::time::Duration;

use serde_json::Value;

use crate::error::{Error, Result};
use crate::http;
use crate::netns::Dialer;

/// Routes that are not the public API's work: scrapes, probes, and the
/// WebSocket stream (open for minutes; its time is not a latency).
const NOT_API: &str = r#"route!~"/metrics|/healthz|/readyz|/v1/stream""#;

/// One objective.
#[derive(Debug, Clone, PartialEq)]
pub struct Line {
    /// What is measured.
    pub name: &'static str,
    /// The target as shown.
    pub target: &'static str,
    /// The measured value, `None` without data in the window.
    pub value: Option<f64>,
    /// Whether `value` meets the target.
    pub pass: Option<bool>,
    /// `value` as shown.
    pub shown: String,
}

/// The report.
#[derive(Debug, Clone)]
pub struct Report {
    /// The window, e.g. `1h`.
    pub since: String,
    /// API requests answered in the window.
    pub requests: Option<f64>,
    /// Raft leader changes in the window (most any node saw).
    pub leader_changes: Option<f64>,
    /// The objectives.
    pub lines: Vec<Line>,
}

impl Report {
    /// Whether every objective with data passed.
    pub fn passed(&self) -> bool {
        self.lines.iter().all(|l| l.pass != Some(false))
    }
}

/// Checks a window like `30m`, `1h`, `2d` (Prometheus's duration syntax).
pub fn parse_since(s: &str) -> Result<String> {
    let s = s.trim();
    let (num, unit) = s.split_at(s.len().saturating_sub(1));
    let ok = !num.is_empty()
        && num.bytes().all(|b| b.is_ascii_digit())
        && num.parse::<u32>().is_ok_and(|n| n > 0)
        && matches!(unit, "s" | "m" | "h" | "d" | "w");
    if ok {
        Ok(s.to_string())
    } else {
        Err(Error::Refused(format!(
            "--since {s:?}: give a window like 30m, 1h or 7d"
        )))
    }
}

/// The PromQL of each figure over `since`.
pub fn queries(since: &str) -> [(&'static str, String); 5] {
    let api = format!("agenda_gateway_responses_total{{{NOT_API}}}");
    let failed = format!("agenda_gateway_responses_total{{{NOT_API},status=~\"5..\"}}");
    // The gateway refuses overload before routing: such a 503 is in no
    // route's count, so it is added to both sides.
    let refused = r#"agenda_admission_refused_total{job="agenda-gateway",what="request"}"#;
    let sum = |m: &str| format!("sum(increase({m}[{since}]))");
    let or_zero = |m: &str| format!("({} or vector(0))", sum(m));
    [
        ("requests", sum(&api)),
        (
            "availability",
            format!(
                "1 - ({} + {}) / ({} + {})",
                or_zero(&failed),
                or_zero(refused),
                sum(&api),
                or_zero(refused)
            ),
        ),
        (
            "p95",
            format!(
                "histogram_quantile(0.95, sum by (le) (increase(agenda_gateway_request_duration_seconds_bucket{{{NOT_API}}}[{since}])))"
            ),
        ),
        (
            "write_p99",
            format!(
                "histogram_quantile(0.99, sum by (le) (increase(agenda_db_commit_latency_seconds_bucket[{since}])))"
            ),
        ),
        (
            "leader_changes",
            format!("max(increase(agenda_db_raft_leader_changes_total[{since}]))"),
        ),
    ]
}

/// The report from the figures (pure; `None` where Prometheus had none).
pub fn report(
    since: &str,
    requests: Option<f64>,
    availability: Option<f64>,
    p95: Option<f64>,
    write_p99: Option<f64>,
    leader_changes: Option<f64>,
) -> Report {
    // The 5xx share with no 5xx at all is 1 - 0/n; with no requests it
    // is NaN, which Prometheus sends and we read as no data.
    let availability = match (availability, requests) {
        (None, Some(n)) if n > 0.0 => Some(1.0),
        (a, _) => a,
    };
    let line =
        |name, target, value: Option<f64>, ok: fn(f64) -> bool, show: fn(f64) -> String| Line {
            name,
            target,
            value,
            pass: value.map(ok),
            shown: value.map_or_else(|| "no data".to_string(), show),
        };
    let ms = |v: f64| format!("{:.1} ms", v * 1000.0);
    Report {
        since: since.to_string(),
        requests,
        leader_changes,
        lines: vec![
            line(
                "availability",
                ">= 99.9%",
                availability,
                |v| v >= 0.999,
                |v| format!("{:.3}%", v * 100.0),
            ),
            line("request latency p95", "< 50 ms", p95, |v| v < 0.050, ms),
            line(
                "agenda-db write p99",
                "< 50 ms",
                write_p99,
                |v| v < 0.050,
                ms,
            ),
        ],
    }
}

/// The table.
pub fn render(r: &Report, source: &str) -> String {
    let mut out = String::new();
    let count = |v: Option<f64>| v.map_or("no".to_string(), |n| format!("{}", n.round() as u64));
    let _ = writeln!(
        out,
        "SLOs over the last {} (Prometheus at {source}): {} API requests, {} raft leader changes",
        r.since,
        count(r.requests),
        count(r.leader_changes)
    );
    let _ = writeln!(
        out,
        "{:<22} {:<10} {:>12}  result",
        "objective", "target", "measured"
    );
    for l in &r.lines {
        let result = match l.pass {
            Some(true) => "pass",
            Some(false) => "FAIL",
            None => "no data",
        };
        let _ = writeln!(
            out,
            "{:<22} {:<10} {:>12}  {result}",
            l.name, l.target, l.shown
        );
    }
    out.push_str(
        "Targets: seed 000's availability and write p99; p95 is ours (seed 000 asked for 300 ms).\n",
    );
    out
}

/// Asks Prometheus (at `base`, dialled with `dialer`) for the figures.
pub async fn fetch(dialer: &Dialer, base: &str, since: &str) -> Result<Report> {
    let mut values = Vec::new();
    for (what, q) in queries(since) {
        let url = format!(
            "{}/api/v1/query?query={}",
            base.trim_end_matches('/'),
            encode(&q)
        );
        let (status, body) = http::get(dialer, &url, Duration::from_secs(10), None).await?;
        if status != 200 {
            return Err(Error::Refused(format!(
                "Prometheus answered {status} to the {what} query: {}",
                body.trim()
            )));
        }
        values.push(scalar(&body).map_err(|e| Error::Malformed(format!("{what}: {e}")))?);
    }
    Ok(report(
        since, values[0], values[1], values[2], values[3], values[4],
    ))
}

/// The single value of an instant query's answer (`None`: no series,
/// or NaN).
fn scalar(body: &str) -> std::result::Result<Option<f64>, String> {
    let v: Value = serde_json::from_str(body).map_err(|e| format!("not JSON: {e}"))?;
    if v["status"] != "success" {
        return Err(format!("query failed: {}", v["error"]));
    }
    let Some(first) = v["data"]["result"].as_array().and_then(|r| r.first()) else {
        return Ok(None);
    };
    let text = first["value"][1].as_str().ok_or("no value")?;
    let n: f64 = text.parse().map_err(|_| format!("bad number {text:?}"))?;
    Ok(n.is_finite().then_some(n))
}

/// Percent-encodes a query string value.
fn encode(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windows_are_checked() {
        assert_eq!(parse_since("1h").unwrap(), "1h");
        assert_eq!(parse_since(" 30m ").unwrap(), "30m");
        for bad in ["", "h", "0h", "1x", "1.5h", "-1h", "1h30m"] {
            assert!(parse_since(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn the_table_says_pass_fail_or_no_data() {
        let r = report("1h", Some(1000.0), None, Some(0.0123), Some(0.2), Some(1.0));
        let text = render(&r, "http://p");
        assert!(
            text.contains("1000 API requests, 1 raft leader changes"),
            "{text}"
        );
        assert!(
            text.contains("availability           >= 99.9%       100.000%  pass"),
            "{text}"
        );
        assert!(
            text.contains("request latency p95    < 50 ms         12.3 ms  pass"),
            "{text}"
        );
        assert!(
            text.contains("agenda-db write p99    < 50 ms        200.0 ms  FAIL"),
            "{text}"
        );
        assert!(!r.passed());
        let empty = report("5m", None, None, None, None, None);
        assert!(render(&empty, "p").contains("no data"));
        assert!(empty.passed());
        let bad = report(
            "1h",
            Some(1000.0),
            Some(0.99),
            Some(0.001),
            Some(0.001),
            None,
        );
        assert_eq!(bad.lines[0].pass, Some(false));
    }

    #[test]
    fn answers_are_read_and_queries_encoded() {
        let one = r#"{"status":"success","data":{"resultType":"vector","result":[{"metric":{},"value":[1.5,"0.25"]}]}}"#;
        assert_eq!(scalar(one).unwrap(), Some(0.25));
        let nan = r#"{"status":"success","data":{"resultType":"vector","result":[{"metric":{},"value":[1.5,"NaN"]}]}}"#;
        assert_eq!(scalar(nan).unwrap(), None);
        let none = r#"{"status":"success","data":{"resultType":"vector","result":[]}}"#;
        assert_eq!(scalar(none).unwrap(), None);
        assert!(scalar(r#"{"status":"error","error":"bad"}"#).is_err());
        assert_eq!(encode("a b{c=\"5..\"}"), "a%20b%7Bc%3D%225..%22%7D");
        for (_, q) in queries("1h") {
            assert!(q.contains("[1h]"), "{q}");
        }
    }
}
