//! `make bench-notify`: live notifications end to end at many open
//! WebSockets. Starts the system with its Redis layer (release binaries),
//! opens `--sockets` WebSockets spread over `--users` people (several tabs
//! each), has writers create events with attendees for `--seconds`, and
//! prints notifications delivered per second and the delay from the write
//! (the notification's `created_at`) to its arrival on each socket
//! (p50/p99/max), plus how many expected deliveries never came.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use agenda_tests::system::{fmt_time, Api, System, SystemOptions};
use agenda_tests::ws::{self, Frame};
use anyhow::{Context, Result};
use clap::Parser;
use rand::Rng;
use reqwest::StatusCode;
use serde_json::json;

/// Benchmark live notifications.
#[derive(Parser, Debug)]
struct Args {
    /// Open WebSockets.
    #[arg(long, default_value_t = 1000)]
    sockets: usize,
    /// People (each holds sockets/users tabs).
    #[arg(long, default_value_t = 100)]
    users: usize,
    /// Concurrent writers creating events.
    #[arg(long, default_value_t = 16)]
    writers: usize,
    /// Attendees per event (each gets one notification).
    #[arg(long, default_value_t = 3)]
    attendees: usize,
    /// Seconds of writing.
    #[arg(long, default_value_t = 20)]
    seconds: u64,
    /// Upper bound on events written.
    #[arg(long, default_value_t = 20_000)]
    max_events: usize,
}

#[tokio::main]
async fn main() -> Result<()> {
    let args = Args::parse();
    eprintln!("starting the system with Redis (5 agenda-db, 2 users, 2 groups, 1 gateway, 2 supervisors)...");
    let sys = System::start(SystemOptions {
        db_nodes: 5,
        redis: true,
        ..Default::default()
    })
    .await?;
    let api = sys.api();
    eprintln!("registering {} people...", args.users);
    let mut people = Vec::new();
    let run: u32 = rand::rng().random();
    for i in 0..args.users {
        let name = format!("n{run:x}u{i}");
        let (_, token) = api.register(&name).await;
        people.push((name, token));
    }
    eprintln!("opening {} WebSockets...", args.sockets);
    // Per notification id: how many sockets received it.
    let received: Arc<Mutex<HashMap<String, usize>>> = Arc::default();
    let delays: Arc<Mutex<Vec<f64>>> = Arc::default();
    let mut readers = Vec::new();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    for s in 0..args.sockets {
        let (_, token) = &people[s % people.len()];
        let mut socket = ws::connect(&sys.url(), Some(token), None)
            .await
            .with_context(|| format!("socket {s}"))?;
        socket.ready(Duration::from_secs(30)).await?;
        let (received, delays, stop) = (received.clone(), delays.clone(), stop.clone());
        readers.push(tokio::spawn(async move {
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                match socket.next(Duration::from_millis(500)).await {
                    Ok(Frame::Notification(n)) => {
                        let now = chrono::Utc::now();
                        if let Some(at) = n["created_at"]
                            .as_str()
                            .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
                        {
                            let ms = (now - at.with_timezone(&chrono::Utc))
                                .num_microseconds()
                                .unwrap_or(0) as f64
                                / 1000.0;
                            delays.lock().expect("lock").push(ms);
                        }
                        let id = n["id"].as_str().unwrap_or_default().to_string();
                        *received.lock().expect("lock").entry(id).or_default() += 1;
                    }
                    Ok(Frame::Closed(code, why)) => {
                        eprintln!("socket closed: {code} {why}");
                        return;
                    }
                    _ => {}
                }
            }
        }));
    }
    eprintln!(
        "writing for {} s: {} writers, events with {} attendees...",
        args.seconds, args.writers, args.attendees
    );
    let people = Arc::new(people);
    let started = Instant::now();
    let until = started + Duration::from_secs(args.seconds);
    let written = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    // Per invited person: notifications expected.
    let expected: Arc<Mutex<HashMap<usize, usize>>> = Arc::default();
    let mut writers = Vec::new();
    for w in 0..args.writers {
        let (api, people, written, expected): (Api, _, _, _) = (
            api.clone(),
            people.clone(),
            written.clone(),
            expected.clone(),
        );
        let (attendees, max) = (args.attendees, args.max_events);
        writers.push(tokio::spawn(async move {
            let organizer = w % people.len();
            while Instant::now() < until && written.fetch_add(1, std::sync::atomic::Ordering::Relaxed) < max {
                let picks: Vec<usize> = {
                    let mut rng = rand::rng();
                    let mut v = Vec::new();
                    while v.len() < attendees.min(people.len() - 1) {
                        let p = rng.random_range(0..people.len());
                        if p != organizer && !v.contains(&p) {
                            v.push(p);
                        }
                    }
                    v
                };
                let t = 1_900_000_000 + rand::rng().random_range(0..100_000) * 1800;
                let body = json!({"title": "bench", "start": fmt_time(t), "end": fmt_time(t + 1800),
                    "time_zone": "UTC", "attendees": picks.iter().map(|p| people[*p].0.clone()).collect::<Vec<_>>()});
                let (st, _) = api.post("/v1/events", &people[organizer].1, body).await;
                if st == StatusCode::CREATED {
                    let mut e = expected.lock().expect("lock");
                    for p in picks {
                        *e.entry(p).or_default() += 1;
                    }
                }
            }
        }));
    }
    for w in writers {
        w.await?;
    }
    let write_secs = started.elapsed().as_secs_f64();
    // Drain: wait until deliveries stop growing (bounded).
    let want: usize = {
        let tabs = args.sockets / people.len();
        let extra = args.sockets % people.len();
        expected
            .lock()
            .expect("lock")
            .iter()
            .map(|(p, n)| n * (tabs + usize::from(*p < extra)))
            .sum()
    };
    let drain_deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let got: usize = received.lock().expect("lock").values().sum();
        if got >= want || Instant::now() > drain_deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for r in readers {
        let _ = r.await;
    }
    let got: usize = received.lock().expect("lock").values().sum();
    let distinct = received.lock().expect("lock").len();
    let mut d = delays.lock().expect("lock").clone();
    d.sort_by(|a, b| a.partial_cmp(b).unwrap_or(std::cmp::Ordering::Equal));
    let pct = |p: f64| {
        d.get(((d.len() as f64 * p).ceil() as usize).clamp(1, d.len().max(1)) - 1)
            .copied()
            .unwrap_or(0.0)
    };
    println!();
    println!(
        "make bench-notify: {} WebSockets over {} people, {} writers, {:.1} s of writes",
        args.sockets,
        people.len(),
        args.writers,
        write_secs
    );
    println!("{:<34} {:>12}", "notifications created", distinct);
    println!("{:<34} {:>12}", "deliveries expected (x tabs)", want);
    println!("{:<34} {:>12}", "deliveries received", got);
    println!(
        "{:<34} {:>12}",
        "deliveries missing",
        want.saturating_sub(got)
    );
    println!(
        "{:<34} {:>12.1}",
        "deliveries/s (write phase)",
        got as f64 / write_secs
    );
    println!("{:<34} {:>12.1}", "delay write->push p50 ms", pct(0.50));
    println!("{:<34} {:>12.1}", "delay write->push p99 ms", pct(0.99));
    println!(
        "{:<34} {:>12.1}",
        "delay write->push max ms",
        d.last().copied().unwrap_or(0.0)
    );
    drop(sys);
    Ok(())
}
