//! Observability end to end: the alert rules pass `promtool check rules`
//! and their own `promtool test rules` cases; a TLS system (three
//! agenda-db nodes, two Redis with their supervisors, two users, two
//! groups, a gateway) is scraped by a real Prometheus configured by
//! `agendactl prometheus-config`, every target up and every process
//! exporting; every metric the Grafana dashboard and the rules name is
//! exported; one request id is found in the gateway's, a service's and
//! agenda-db's logs; and `agendactl slo` turns Prometheus's data into the
//! SLO table. Needs Debian's `prometheus` (with `promtool`).

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use agenda_tests::cluster::{bin, free_port, terminate};
use agenda_tests::system::{expect_ok, System, SystemOptions};
use anyhow::{bail, Context, Result};
use reqwest::Method;
use serde_json::{json, Value};

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn tool(name: &str) -> Result<PathBuf> {
    for dir in ["/usr/bin", "/usr/local/bin", "/bin"] {
        let p = Path::new(dir).join(name);
        if p.exists() {
            return Ok(p);
        }
    }
    bail!("{name} is not installed: apt-get install -y prometheus (make test installs it as root)")
}

/// Runs a command to its end; its output, or an error with it.
fn run(cmd: &mut Command) -> Result<String> {
    let out = cmd.output().with_context(|| format!("running {cmd:?}"))?;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    if !out.status.success() {
        bail!("{cmd:?} failed ({}):\n{text}", out.status);
    }
    Ok(text)
}

#[test]
fn the_alert_rules_check_and_pass_their_unit_tests() -> Result<()> {
    let promtool = tool("promtool")?;
    let dir = repo().join("deploy/prometheus");
    let out = run(Command::new(&promtool)
        .arg("check")
        .arg("rules")
        .arg(dir.join("alerts.yml"))
        .arg(dir.join("recording.yml")))?;
    assert!(out.contains("SUCCESS"), "{out}");
    let out =
        run(Command::new(&promtool)
            .current_dir(&dir)
            .args(["test", "rules", "alerts_test.yml"]))?;
    assert!(out.contains("SUCCESS"), "{out}");
    // Every alert has a unit test that makes it fire.
    let rules = std::fs::read_to_string(dir.join("alerts.yml"))?;
    let tests = std::fs::read_to_string(dir.join("alerts_test.yml"))?;
    let alerts: Vec<&str> = rules
        .lines()
        .filter_map(|l| l.trim().strip_prefix("- alert:"))
        .map(str::trim)
        .collect();
    assert!(alerts.len() >= 8, "too few alerts: {alerts:?}");
    for a in alerts {
        assert!(
            tests.contains(&format!("alertname: {a}")),
            "alert {a} has no promtool test"
        );
    }
    Ok(())
}

/// Prometheus, killed when dropped.
struct Prometheus {
    child: Child,
    url: String,
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        terminate(&mut self.child, Duration::from_secs(5));
    }
}

async fn get_json(http: &reqwest::Client, url: &str) -> Result<Value> {
    let r = http.get(url).send().await?;
    let status = r.status();
    let body = r.text().await?;
    if !status.is_success() {
        bail!("GET {url}: {status} {body}");
    }
    Ok(serde_json::from_str(&body)?)
}

/// Polls `f` until it gives `Some`, or fails after `within`.
async fn until<T, F, Fut>(what: &str, within: Duration, mut f: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<Option<T>>>,
{
    let deadline = Instant::now() + within;
    let mut last = String::new();
    loop {
        match f().await {
            Ok(Some(v)) => return Ok(v),
            Ok(None) => {}
            Err(e) => last = format!("{e:#}"),
        }
        if Instant::now() >= deadline {
            bail!("{what}: not within {within:?} {last}");
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// Metric names in PromQL text (`agenda_...`; recording rules' names have
/// colons and are not exported series).
fn metric_names(expr: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let b = expr.as_bytes();
    let mut i = 0;
    while let Some(at) = expr[i..].find("agenda_") {
        let start = i + at;
        let boundary = start == 0
            || !(b[start - 1].is_ascii_alphanumeric()
                || b[start - 1] == b'_'
                || b[start - 1] == b':');
        let mut end = start;
        while end < b.len() && (b[end].is_ascii_alphanumeric() || b[end] == b'_' || b[end] == b':')
        {
            end += 1;
        }
        let name = &expr[start..end];
        if boundary && !name.contains(':') {
            out.insert(name.to_string());
        }
        i = end.max(start + 1);
    }
    out
}

/// Every `expr` string anywhere in a JSON document (Grafana targets).
fn exprs(v: &Value, out: &mut Vec<String>) {
    match v {
        Value::Object(m) => {
            for (k, v) in m {
                match (k.as_str(), v) {
                    ("expr", Value::String(s)) => out.push(s.clone()),
                    _ => exprs(v, out),
                }
            }
        }
        Value::Array(a) => a.iter().for_each(|v| exprs(v, out)),
        _ => {}
    }
}

/// Whether the Rust sources register `name` (for metrics of processes
/// this system does not run, such as agenda-vip, or label sets that
/// appear on first use): the literal name, or agenda-db's name without
/// its `agenda_db_` namespace in its metrics module.
fn declared_in_source(name: &str) -> bool {
    let base = ["_bucket", "_sum", "_count"]
        .iter()
        .find_map(|s| name.strip_suffix(s))
        .unwrap_or(name);
    let root = repo();
    let files = [
        "services/gateway/src/metrics.rs",
        "services/common/src/metrics.rs",
        "services/serving/src/metrics.rs",
        "services/users/src/relay.rs",
        "supervisor/src/metrics.rs",
        "vip-failover/src/metrics.rs",
    ];
    let quoted = format!("\"{base}\"");
    if files
        .iter()
        .any(|f| std::fs::read_to_string(root.join(f)).is_ok_and(|t| t.contains(&quoted)))
    {
        return true;
    }
    base.strip_prefix("agenda_db_").is_some_and(|short| {
        std::fs::read_to_string(root.join("services/db/src/metrics.rs"))
            .is_ok_and(|t| t.contains(&format!("\"{short}\"")))
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_process_is_scraped_traced_and_reported_on() -> Result<()> {
    let prometheus_bin = tool("prometheus")?;
    let promtool = tool("promtool")?;
    let sys = System::start(SystemOptions {
        tls: true,
        redis: true,
        metrics: true,
        log: Some(
            "info,agenda_gateway::metrics=debug,agenda_serving=debug,agenda_db::service=debug"
                .into(),
        ),
        ..SystemOptions::default()
    })
    .await?;
    let dir = tempfile::Builder::new()
        .prefix("agenda-observability")
        .tempdir()?;

    // The configuration `make run` writes, from the same endpoints file.
    let endpoints = dir.path().join("endpoints.json");
    std::fs::write(
        &endpoints,
        serde_json::to_vec_pretty(&sys.endpoints_json())?,
    )?;
    let config = dir.path().join("prometheus.yml");
    let rules = repo().join("deploy/prometheus");
    run(Command::new(bin("agendactl")?)
        .arg("prometheus-config")
        .arg("--endpoints")
        .arg(&endpoints)
        .arg("--rules")
        .arg(rules.join("alerts.yml"))
        .arg("--rules")
        .arg(rules.join("recording.yml"))
        .args(["--interval-secs", "1", "--tls-name", "test", "--out"])
        .arg(&config))?;
    run(Command::new(&promtool)
        .arg("check")
        .arg("config")
        .arg(&config))?;

    let addr = format!("127.0.0.1:{}", free_port());
    let log = std::fs::File::create(dir.path().join("prometheus.log"))?;
    let prom = Prometheus {
        child: Command::new(&prometheus_bin)
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address={addr}"))
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .context("starting prometheus")?,
        url: format!("http://{addr}"),
    };
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()?;

    // Every process is a target, and up: 3 db nodes, 1 gateway, 2 users,
    // 2 groups, 2 supervisors.
    let want_targets = 10;
    let targets_url = format!("{}/api/v1/targets", prom.url);
    until("every target up", Duration::from_secs(60), || async {
        let v = get_json(&http, &targets_url).await?;
        let active = v["data"]["activeTargets"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        let down: Vec<String> = active
            .iter()
            .filter(|t| t["health"] != "up")
            .map(|t| {
                format!(
                    "{} {} {}",
                    t["labels"]["process"], t["health"], t["lastError"]
                )
            })
            .collect();
        if active.len() == want_targets && down.is_empty() {
            Ok(Some(()))
        } else {
            bail!("{} targets, down: {down:?}", active.len())
        }
    })
    .await?;

    // Traffic, one request with an id of ours.
    let api = sys.api();
    let (_, alice) = api.register("obs_alice").await;
    let (_, _bob) = api.register("obs_bob").await;
    let trace = format!("obs-trace-{}", uuid::Uuid::new_v4().simple());
    let reply = api
        .try_send(
            api.request(Method::POST, "/v1/events")
                .bearer_auth(&alice)
                .header("x-request-id", &trace)
                .json(&json!({
                    "title": "Observed",
                    "start": "2031-03-03T10:00:00Z",
                    "end": "2031-03-03T11:00:00Z",
                    "time_zone": "UTC",
                    "attendees": ["obs_bob"],
                })),
        )
        .await?;
    let event = expect_ok(reply, "create the traced event");
    let id = event["event"]["id"]
        .as_str()
        .context("event id")?
        .to_string();
    for _ in 0..20 {
        expect_ok(
            api.get(&format!("/v1/events/{id}"), &alice).await,
            "read it back",
        );
    }

    // One id finds the request's whole path: the gateway, the service that
    // served it, and agenda-db (every line in the request's span).
    let logs = |prefix: &str| -> Vec<String> {
        let mut out = Vec::new();
        if let Ok(rd) = std::fs::read_dir(sys.log_dir()) {
            for e in rd.flatten() {
                let name = e.file_name().to_string_lossy().into_owned();
                if name.starts_with(prefix) {
                    out.push(std::fs::read_to_string(e.path()).unwrap_or_default());
                }
            }
        }
        out
    };
    let db_logs: Vec<String> = sys
        .db
        .nodes
        .values()
        .map(|n| std::fs::read_to_string(&n.log).unwrap_or_default())
        .collect();
    until(
        "the request id in every process's log",
        Duration::from_secs(10),
        || {
            let found = (
                logs("gateway").iter().any(|l| l.contains(&trace)),
                logs("users").iter().any(|l| l.contains(&trace)),
            );
            let db_found = sys
                .db
                .nodes
                .values()
                .any(|n| std::fs::read_to_string(&n.log).is_ok_and(|l| l.contains(&trace)));
            async move {
                Ok(match (found, db_found) {
                    ((true, true), true) => Some(()),
                    other => {
                        let _ = other;
                        None
                    }
                })
            }
        },
    )
    .await
    .with_context(|| format!("id {trace}; db logs: {}", db_logs.len()))?;
    let users_lines: Vec<String> = logs("users")
        .iter()
        .flat_map(|l| {
            l.lines()
                .filter(|x| x.contains(&trace))
                .map(str::to_string)
                .collect::<Vec<_>>()
        })
        .collect();
    assert!(
        users_lines
            .iter()
            .all(|l| l.contains(&format!("request_id={trace}"))),
        "{users_lines:?}"
    );

    // Every process exports the shared metrics; the dashboard and the
    // rules name only metrics the system exports.
    let jobs = get_json(
        &http,
        &format!(
            "{}/api/v1/query?query=count%20by%20(job)%20(agenda_build_info)",
            prom.url
        ),
    )
    .await?;
    let jobs: BTreeSet<String> = jobs["data"]["result"]
        .as_array()
        .context("build_info result")?
        .iter()
        .filter_map(|r| r["metric"]["job"].as_str().map(str::to_string))
        .collect();
    for job in [
        "agenda-db",
        "agenda-gateway",
        "agenda-users",
        "agenda-groups",
        "agenda-supervisor",
    ] {
        assert!(
            jobs.contains(job),
            "{job} exports no agenda_build_info: {jobs:?}"
        );
    }
    // Scraped after the traffic above (a second apart).
    let names_url = format!("{}/api/v1/label/__name__/values", prom.url);
    let want = [
        "agenda_gateway_request_duration_seconds_bucket",
        "agenda_service_call_duration_seconds_bucket",
        "agenda_service_calls_total",
        "agenda_db_client_call_duration_seconds_bucket",
        "agenda_db_commit_latency_seconds_bucket",
        "agenda_db_raft_is_leader",
        "agenda_relay_lag_seconds_bucket",
        "agenda_relay_active",
        "agenda_admission_refused_total",
        "agenda_supervisor_is_leader",
    ];
    let live: BTreeSet<String> = until("every family scraped", Duration::from_secs(30), || async {
        let names = get_json(&http, &names_url).await?;
        let live: BTreeSet<String> = names["data"]
            .as_array()
            .context("names")?
            .iter()
            .filter_map(|v| v.as_str().map(str::to_string))
            .collect();
        let missing: Vec<&str> = want
            .iter()
            .copied()
            .filter(|w| !live.contains(*w))
            .collect();
        if missing.is_empty() {
            Ok(Some(live))
        } else {
            bail!("missing {missing:?}; have {live:?}")
        }
    })
    .await?;
    let dashboard: Value =
        serde_json::from_slice(&std::fs::read(repo().join("deploy/grafana/agenda.json"))?)?;
    assert!(dashboard["title"].is_string() && dashboard["uid"].is_string());
    let panels = dashboard["panels"].as_array().context("dashboard panels")?;
    assert!(panels.len() >= 10, "{} panels", panels.len());
    let mut queries = Vec::new();
    exprs(&dashboard, &mut queries);
    assert!(queries.len() >= 15, "{} queries", queries.len());
    for f in ["alerts.yml", "recording.yml"] {
        let text = std::fs::read_to_string(rules.join(f))?;
        queries.extend(
            text.lines()
                .filter_map(|l| l.trim().strip_prefix("expr:"))
                .map(str::to_string),
        );
    }
    let mut unknown = Vec::new();
    for q in &queries {
        for name in metric_names(q) {
            if !live.contains(&name) && !declared_in_source(&name) {
                unknown.push(format!("{name} (in {q})"));
            }
        }
    }
    assert!(unknown.is_empty(), "metrics nobody exports: {unknown:#?}");

    // The SLO table from Prometheus's data. A counter's first sample is
    // its start (increase() counts from there), so traffic goes on while
    // Prometheus scrapes.
    let path = format!("/v1/events/{id}");
    let slo = until("an SLO table with data", Duration::from_secs(60), || {
        let (api, alice, path) = (api.clone(), alice.clone(), path.clone());
        tokio::spawn(async move {
            for _ in 0..5 {
                expect_ok(api.get(&path, &alice).await, "read it again");
            }
        });
        let out = Command::new(bin("agendactl").expect("agendactl is built"))
            .args(["slo", "--since", "5m", "--prometheus", &prom.url])
            .output();
        async move {
            let out = out?;
            let text = String::from_utf8_lossy(&out.stdout).into_owned();
            if text.contains("no data") || !text.contains("availability") {
                bail!(
                    "last answer:\n{text}{}",
                    String::from_utf8_lossy(&out.stderr)
                );
            }
            Ok(Some((out.status, text)))
        }
    })
    .await?;
    let (status, text) = slo;
    assert!(
        text.lines()
            .any(|l| l.starts_with("availability") && l.ends_with("100.000%  pass")),
        "{text}"
    );
    for line in ["request latency p95", "agenda-db write p99"] {
        assert!(
            text.lines()
                .any(|l| l.starts_with(line) && (l.ends_with("pass") || l.ends_with("FAIL"))),
            "{line} in {text}"
        );
    }
    assert_eq!(status.success(), !text.contains("FAIL"), "{text}");
    let bad = Command::new(bin("agendactl")?)
        .args(["slo", "--since", "an hour", "--prometheus", &prom.url])
        .output()?;
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("give a window like"));
    drop(prom);
    Ok(())
}

#[test]
fn promql_metric_names_are_found() {
    let names = metric_names(
        r#"sum(rate(agenda_gateway_responses_total{status=~"5.."}[5m])) / agenda:availability:ratio_rate5m + x_agenda_y"#,
    );
    assert_eq!(
        names.into_iter().collect::<Vec<_>>(),
        vec!["agenda_gateway_responses_total".to_string()]
    );
}
