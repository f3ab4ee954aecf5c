//! `agendactl prometheus-config`: the Prometheus configuration that
//! scrapes every process in `endpoints.json` (one job per kind, each
//! target labelled with its process and machine) and loads the alert
//! rules of `deploy/prometheus/`. `make run` writes it and starts
//! Prometheus with it.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use crate::endpoints::Endpoints;
use crate::error::{Error, Result};

/// The kinds that export `/metrics` on their `http` address, in the
/// order the jobs are written.
pub const SCRAPED_KINDS: &[&str] = &[
    "agenda-db",
    "agenda-gateway",
    "agenda-users",
    "agenda-groups",
    "agenda-supervisor",
    "agenda-vip",
];

/// What the configuration needs besides the processes.
#[derive(Debug, Clone)]
pub struct Options {
    /// Seconds between scrapes (and rule evaluations).
    pub interval_secs: u32,
    /// Rule files to load (absolute paths).
    pub rules: Vec<PathBuf>,
    /// Certificates for `https://` targets: the cluster CA and a
    /// certificate of the cluster (agenda-db's `/metrics` answers any).
    pub tls_dir: Option<PathBuf>,
    /// The certificate shown to them: `NAME.pem` and `NAME-key.pem`.
    pub tls_name: String,
}

/// The YAML text. Every scraped kind present becomes a job named after
/// it; `https` targets are checked against the cluster CA and shown
/// agendactl's certificate.
pub fn config(ep: &Endpoints, opts: &Options) -> Result<String> {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "# Written by `agendactl prometheus-config` from endpoints.json; do not edit.\n\
         global:\n  scrape_interval: {i}s\n  scrape_timeout: {t}s\n  evaluation_interval: {i}s\n\
         rule_files:",
        i = opts.interval_secs,
        t = opts.interval_secs.clamp(1, 10),
    );
    for r in &opts.rules {
        let _ = writeln!(out, "  - {}", quote(&r.display().to_string()));
    }
    if opts.rules.is_empty() {
        out.push_str("  []\n");
    }
    out.push_str("scrape_configs:\n");
    let mut jobs = 0;
    for kind in SCRAPED_KINDS {
        let targets: Vec<_> = ep
            .of_kind(kind)
            .filter_map(|p| p.http.as_deref().map(|url| (p, url)))
            .collect();
        if targets.is_empty() {
            continue;
        }
        let https = targets[0].1.starts_with("https://");
        if targets
            .iter()
            .any(|(_, u)| u.starts_with("https://") != https)
        {
            return Err(Error::Malformed(format!(
                "{kind}: some processes serve http and others https"
            )));
        }
        jobs += 1;
        let _ = writeln!(out, "  - job_name: {}", quote(kind));
        let _ = writeln!(out, "    scheme: {}", if https { "https" } else { "http" });
        if https {
            let dir = opts.tls_dir.as_deref().ok_or_else(|| {
                Error::Refused(format!(
                    "{kind} serves https but no certificate directory was given (--tls-dir)"
                ))
            })?;
            write_tls(&mut out, dir, &opts.tls_name);
        }
        out.push_str("    static_configs:\n");
        for (p, url) in targets {
            let host = url
                .split_once("://")
                .map_or(url, |(_, rest)| rest)
                .trim_end_matches('/');
            let _ = writeln!(
                out,
                "      - targets: [{}]\n        labels: {{process: {}, machine: {}}}",
                quote(host),
                quote(&p.name),
                quote(&p.machine)
            );
        }
    }
    if jobs == 0 {
        return Err(Error::Malformed(
            "endpoints.json names no process with a /metrics address".into(),
        ));
    }
    Ok(out)
}

fn write_tls(out: &mut String, dir: &Path, name: &str) {
    let f = |name: &str| quote(&dir.join(name).display().to_string());
    let _ = writeln!(
        out,
        "    tls_config:\n      ca_file: {}\n      cert_file: {}\n      key_file: {}",
        f("ca.pem"),
        f(&format!("{name}.pem")),
        f(&format!("{name}-key.pem"))
    );
}

/// A YAML double-quoted scalar.
fn quote(s: &str) -> String {
    serde_json::to_string(s).unwrap_or_else(|_| "\"\"".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn endpoints(json: &str) -> Endpoints {
        serde_json::from_str(json).unwrap()
    }

    #[test]
    fn one_job_per_kind_with_tls_where_the_targets_speak_it() {
        let ep = endpoints(
            r#"{"processes": [
              {"name": "agenda-db-1", "kind": "agenda-db", "machine": "machine-a", "pid": 1, "http": "https://10.0.0.11:7101"},
              {"name": "agenda-db-2", "kind": "agenda-db", "machine": "machine-a", "pid": 2, "http": "https://10.0.0.11:7102"},
              {"name": "agenda-users-a", "kind": "agenda-users", "machine": "machine-a", "pid": 3, "http": "http://10.0.0.11:7202"},
              {"name": "agenda-relay", "kind": "agenda-relay", "machine": "host", "pid": 4, "http": "http://127.0.0.1:8080"},
              {"name": "redis-a", "kind": "redis-server", "machine": "local", "pid": 5}
            ]}"#,
        );
        let text = config(
            &ep,
            &Options {
                interval_secs: 5,
                rules: vec!["/x/alerts.yml".into()],
                tls_dir: Some("/certs".into()),
                tls_name: "agendactl".into(),
            },
        )
        .unwrap();
        assert!(text.contains("  - job_name: \"agenda-db\"\n    scheme: https\n    tls_config:\n      ca_file: \"/certs/ca.pem\"\n      cert_file: \"/certs/agendactl.pem\""));
        assert!(text.contains("targets: [\"10.0.0.11:7102\"]\n        labels: {process: \"agenda-db-2\", machine: \"machine-a\"}"));
        assert!(
            text.contains("  - job_name: \"agenda-users\"\n    scheme: http\n    static_configs:")
        );
        assert!(text.contains("rule_files:\n  - \"/x/alerts.yml\""));
        assert!(!text.contains("agenda-relay"));
        assert!(!text.contains("redis"));
    }

    #[test]
    fn https_without_certificates_or_nothing_to_scrape_is_refused() {
        let ep = endpoints(
            r#"{"processes": [{"name": "agenda-db-1", "kind": "agenda-db", "machine": "m", "pid": 1, "http": "https://1.2.3.4:1"}]}"#,
        );
        let opts = Options {
            interval_secs: 5,
            rules: vec![],
            tls_dir: None,
            tls_name: "agendactl".into(),
        };
        assert!(config(&ep, &opts).is_err());
        let none = endpoints(r#"{"processes": []}"#);
        assert!(config(&none, &opts).is_err());
    }
}
