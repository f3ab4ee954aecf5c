//! `agendactl status`: one table of the whole system, read live from
//! every process in `endpoints.json` (each from its own machine's
//! namespace): who holds the VIP, the Redis primary and its epoch, the
//! raft leader and every member's term and applied index, the service
//! instances in the registry, and every process up or down.

use std::fmt::Write as _;
use std::time::Duration;

use agenda_common::registry::{self, RedisPrimary};
use serde_json::Value;

use crate::endpoints::{Endpoints, Process};
use crate::http;
use crate::netns::Dialers;

/// How every process is reached: from its namespace, over TLS when the
/// deployment has certificates (agendactl's own from `tls_dir`).
struct Reach {
    dialers: Dialers,
    tls: Option<std::sync::Arc<rustls::ClientConfig>>,
}

const TIMEOUT: Duration = Duration::from_secs(2);

/// Reads one document from a process, or says why not.
async fn body(reach: &Reach, p: &Process, path: &str) -> Result<String, String> {
    let base = p.http.as_deref().ok_or("no HTTP endpoint")?;
    let dialer = reach.dialers.get(p.ns()).map_err(|e| e.to_string())?;
    match http::get(
        &dialer,
        &format!("{base}{path}"),
        TIMEOUT,
        reach.tls.as_ref(),
    )
    .await
    {
        Ok((200, body)) => Ok(body),
        Ok((404, _)) => Err("not found".into()),
        Ok((code, body)) => Err(format!("HTTP {code}: {}", body.trim())),
        Err(e) => Err(e.to_string()),
    }
}

/// Reads one JSON document from a process, or says why not.
async fn json(reach: &Reach, p: &Process, path: &str) -> Result<Value, String> {
    let text = body(reach, p, path).await?;
    serde_json::from_str(&text).map_err(|e| format!("bad JSON: {e}"))
}

/// A registry key's value (agenda-db's REST answers a GET with the raw
/// value) through the first agenda-db node that answers.
async fn key(reach: &Reach, dbs: &[&Process], key: &str) -> Result<Option<String>, String> {
    let path = format!("/v1/kv/{}", key.replace('/', "%2F"));
    let mut last = "no agenda-db node".to_string();
    for p in dbs {
        match body(reach, p, &path).await {
            Ok(v) => return Ok(Some(v)),
            Err(e) if e == "not found" => return Ok(None),
            Err(e) => last = e,
        }
    }
    Err(last)
}

/// The value of a listed key-value.
fn value(v: &Value) -> String {
    v.get("value")
        .and_then(Value::as_str)
        .unwrap_or("?")
        .to_string()
}

/// Builds the status table.
pub async fn render(ep: &Endpoints) -> String {
    let mut out = String::new();
    let tls = match &ep.tls_dir {
        None => None,
        Some(dir) => {
            let files = agenda_common::tls::TlsFiles::in_dir(dir, "agendactl");
            match agenda_common::tls::Identity::load(&files).and_then(|id| id.client_config()) {
                Ok(c) => Some(c),
                Err(e) => {
                    let _ = writeln!(out, "TLS: {e} (every TLS endpoint will fail)");
                    None
                }
            }
        }
    };
    let reach = Reach {
        dialers: Dialers::default(),
        tls,
    };
    let dbs: Vec<&Process> = ep.of_kind("agenda-db").collect();
    let up_dbs: Vec<&Process> = dbs.iter().copied().filter(|p| p.alive()).collect();

    // The VIP.
    if let Some(vip) = &ep.vip {
        let holder = match key(&reach, &up_dbs, registry::VIP_HOLDER).await {
            Ok(Some(v)) => format!("held by {v}"),
            Ok(None) => "held by nobody".into(),
            Err(e) => format!("unknown ({e})"),
        };
        let _ = writeln!(out, "VIP {vip}: {holder}");
        for p in ep.of_kind("agenda-vip") {
            let line = match json(&reach, p, "/status").await {
                Ok(s) => format!(
                    "{:<8} priority {:<3} {}",
                    s["state"].as_str().unwrap_or("?"),
                    s["priority"],
                    s["reason"].as_str().unwrap_or("")
                ),
                Err(e) => format!("down ({e})"),
            };
            let _ = writeln!(out, "  {:<16} {:<10} {line}", p.name, p.machine);
        }
    }

    // Redis.
    let primary = match key(&reach, &up_dbs, registry::REDIS_PRIMARY).await {
        Ok(Some(v)) => match RedisPrimary::decode(v.as_bytes()) {
            Ok(p) => format!("{} epoch {}", p.addr, p.epoch),
            Err(_) => v,
        },
        Ok(None) => "none published".into(),
        Err(e) => format!("unknown ({e})"),
    };
    let acting = match key(&reach, &up_dbs, registry::REDIS_SUPERVISOR_ELECTION).await {
        Ok(Some(v)) => v,
        Ok(None) => "none".into(),
        Err(_) => "?".into(),
    };
    let relay = match key(&reach, &up_dbs, registry::NOTIFICATION_RELAY_ELECTION).await {
        Ok(Some(v)) => v,
        Ok(None) => "none".into(),
        Err(_) => "?".into(),
    };
    let _ = writeln!(
        out,
        "Redis primary: {primary}; acting supervisor: {acting}; notification relay: {relay}"
    );

    // agenda-db.
    let mut leader = None;
    let mut rows = String::new();
    for p in &dbs {
        let row = match json(&reach, p, "/v1/cluster").await {
            Ok(c) => {
                if c["leader_id"].as_u64().unwrap_or(0) != 0 {
                    leader = c["leader_id"].as_u64();
                }
                format!(
                    "{:<9} term {:<4} applied {:<9} commit {}",
                    c["role"].as_str().unwrap_or("?"),
                    c["term"],
                    c["applied_index"],
                    c["commit_index"]
                )
            }
            Err(e) => format!("down ({e})"),
        };
        let _ = writeln!(rows, "  {:<16} {:<10} {row}", p.name, p.machine);
    }
    let _ = writeln!(
        out,
        "agenda-db: leader {}",
        leader.map_or("none".to_string(), |l| format!("agenda-db-{l}"))
    );
    out.push_str(&rows);

    // The registry's service instances.
    let services = match up_dbs.first() {
        Some(p) => json(&reach, p, "/v1/kv?prefix=%2Fregistry%2Fservices%2F").await,
        None => Err("no agenda-db node up".into()),
    };
    match services {
        Ok(v) => {
            let items = v["items"].as_array().cloned().unwrap_or_default();
            let _ = writeln!(out, "Service instances in the registry: {}", items.len());
            for kv in items {
                let _ = writeln!(
                    out,
                    "  {:<40} {}",
                    kv["key"]
                        .as_str()
                        .unwrap_or("?")
                        .trim_start_matches("/registry/services/"),
                    value(&kv)
                );
            }
        }
        Err(e) => {
            let _ = writeln!(out, "Service instances in the registry: unknown ({e})");
        }
    }

    // Every process.
    let _ = writeln!(out, "Processes:");
    for p in &ep.processes {
        let _ = writeln!(
            out,
            "  {:<22} {:<10} pid {:<8} {}",
            p.name,
            p.machine,
            p.pid.map_or("-".into(), |p| p.to_string()),
            if p.alive() { "up" } else { "DOWN" }
        );
    }
    out
}
