//! `make bench-caldav`: how fast a CalDAV client's sync of a big calendar
//! is once it has synced once (the case of every client polling for
//! changes). It starts its own system (release binaries, TLS on every
//! link), gives one person `--events` events through the JSON API, syncs
//! their calendar once (RFC 6578 sync-collection without a token), then
//! in each of `--rounds` rounds changes one event through the JSON API
//! and times the sync-collection from the previous token (ETags only, as
//! clients ask, then a calendar-multiget of what changed). It prints
//! percentiles; it never asserts speed.

use std::sync::Arc;
use std::time::{Duration, Instant};

use agenda_tests::system::{expect, System, SystemOptions};
use anyhow::{bail, Context, Result};
use clap::Parser;
use reqwest::{Method, StatusCode};
use serde_json::json;

/// Benchmark CalDAV sync of a big calendar.
#[derive(Parser, Debug)]
struct Args {
    /// Events in the calendar.
    #[arg(long, default_value_t = 10_000)]
    events: usize,
    /// Timed incremental syncs.
    #[arg(long, default_value_t = 50)]
    rounds: usize,
    /// Creations in flight at once while filling the calendar.
    #[arg(long, default_value_t = 32)]
    concurrency: usize,
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn ms(d: Duration) -> String {
    format!("{:.1}", d.as_secs_f64() * 1000.0)
}

/// The text of the first `<d:sync-token>` of a multistatus.
fn sync_token(xml: &str) -> Option<String> {
    let start = xml.find("<d:sync-token>")? + "<d:sync-token>".len();
    let end = xml[start..].find("</d:sync-token>")? + start;
    Some(xml[start..end].to_string())
}

#[tokio::main]
async fn main() -> Result<()> {
    let args = Args::parse();
    let sys = System::start(SystemOptions {
        tls: true,
        // One person fills a big calendar: past the per-person rate.
        gateway_args: ["--person-burst", "100000", "--person-rate", "100000"]
            .map(String::from)
            .to_vec(),
        ..Default::default()
    })
    .await
    .context("start the system")?;
    let api = sys.api();
    let (_, token) = api.register("bench").await;
    let pw = expect(
        api.post("/v1/me/app-passwords", &token, json!({"name": "bench"}))
            .await,
        StatusCode::CREATED,
        "app password",
    );
    let pw = pw["password"].as_str().context("password")?.to_string();

    println!("filling the calendar with {} events...", args.events);
    let started = Instant::now();
    let api = Arc::new(api);
    let token = Arc::new(token);
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut workers = Vec::new();
    for _ in 0..args.concurrency {
        let (api, token, next, n) = (api.clone(), token.clone(), next.clone(), args.events);
        workers.push(tokio::spawn(async move {
            let mut ids = Vec::new();
            loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if i >= n {
                    return ids;
                }
                // One a day-and-a-bit apart over the years ahead.
                let start = chrono::DateTime::parse_from_rfc3339("2030-01-01T09:00:00Z")
                    .expect("time")
                    .to_utc()
                    + chrono::Duration::hours(25 * i as i64);
                let body = json!({
                    "title": format!("event {i}"),
                    "start": start.to_rfc3339(),
                    "end": (start + chrono::Duration::hours(1)).to_rfc3339(),
                    "time_zone": "Europe/Madrid",
                });
                let (st, v) = api.post("/v1/events", &token, body).await;
                assert_eq!(st, StatusCode::CREATED, "create: {v}");
                ids.push(v["event"]["id"].as_str().unwrap_or_default().to_string());
            }
        }));
    }
    let mut ids = Vec::new();
    for w in workers {
        ids.extend(w.await?);
    }
    println!(
        "  {} events in {:.1} s",
        ids.len(),
        started.elapsed().as_secs_f64()
    );

    let url = format!("{}/dav/calendars/bench/personal/", sys.url());
    let report = Method::from_bytes(b"REPORT")?;
    // `request` takes a path: strip the base.
    let path = url.trim_start_matches(&sys.url()).to_string();
    let sync = |since: &str| {
        let body = format!(
            r#"<?xml version="1.0"?><d:sync-collection xmlns:d="DAV:"><d:sync-token>{since}</d:sync-token><d:sync-level>1</d:sync-level><d:prop><d:getetag/></d:prop></d:sync-collection>"#
        );
        api.request(report.clone(), &path)
            .basic_auth("bench", Some(&pw))
            .header("content-type", "application/xml")
            .header("depth", "1")
            .body(body)
    };

    let t = Instant::now();
    let resp = sync("").send().await?;
    let status = resp.status();
    let text = resp.text().await?;
    let first = t.elapsed();
    if status.as_u16() != 207 {
        bail!("first sync: {status} {text}");
    }
    let listed = text.matches("<d:response>").count();
    let mut since = sync_token(&text).context("no sync token")?;
    println!(
        "first sync (no token): {} resources, {} ms, {} KiB",
        listed,
        ms(first),
        text.len() / 1024
    );

    let mut times = Vec::new();
    let mut multiget = Vec::new();
    for r in 0..args.rounds {
        let id = &ids[(r * 7919) % ids.len()];
        let (st, v) = api
            .patch(
                &format!("/v1/events/{id}"),
                &token,
                json!({"title": format!("changed {r}")}),
            )
            .await;
        assert_eq!(st, StatusCode::OK, "patch: {v}");
        let t = Instant::now();
        let resp = sync(&since).send().await?;
        let status = resp.status();
        let text = resp.text().await?;
        times.push(t.elapsed());
        if status.as_u16() != 207 || text.matches("<d:response>").count() != 1 {
            bail!("sync from {since}: {status}: want the one change, got {text}");
        }
        since = sync_token(&text).context("no sync token")?;
        let body = format!(
            r#"<?xml version="1.0"?><c:calendar-multiget xmlns:d="DAV:" xmlns:c="urn:ietf:params:xml:ns:caldav"><d:prop><d:getetag/><c:calendar-data/></d:prop><d:href>{path}{id}.ics</d:href></c:calendar-multiget>"#
        );
        let t = Instant::now();
        let resp = api
            .request(report.clone(), &path)
            .basic_auth("bench", Some(&pw))
            .header("depth", "1")
            .body(body)
            .send()
            .await?;
        let ok =
            resp.status().as_u16() == 207 && resp.text().await?.contains(&format!("changed {r}"));
        multiget.push(t.elapsed());
        if !ok {
            bail!("multiget of {id} did not give the change");
        }
    }
    times.sort();
    multiget.sort();
    println!();
    println!(
        "| after the first sync ({} events, {} rounds) | p50 ms | p95 ms | max ms |",
        ids.len(),
        args.rounds
    );
    println!("|---|---|---|---|");
    println!(
        "| sync-collection from the last token (one change) | {} | {} | {} |",
        ms(percentile(&times, 0.5)),
        ms(percentile(&times, 0.95)),
        ms(*times.last().unwrap_or(&Duration::ZERO))
    );
    println!(
        "| calendar-multiget of the changed event | {} | {} | {} |",
        ms(percentile(&multiget, 0.5)),
        ms(percentile(&multiget, 0.95)),
        ms(*multiget.last().unwrap_or(&Duration::ZERO))
    );
    drop(sys);
    Ok(())
}
