//! The local gateway's health, debounced: `fall` failed checks in a row
//! make it unhealthy, `rise` passed checks make it healthy again, so one
//! slow answer under load never moves the VIP, and a dead gateway (its
//! port refuses at once) is noticed within `fall` intervals.

use std::time::{Duration, Instant};

use agenda_common::shutdown::CancellationToken;
use tokio::sync::watch;

/// The pure part: check results in, health out.
#[derive(Debug, Clone)]
pub struct Debouncer {
    fall: u32,
    rise: u32,
    healthy: bool,
    streak: u32,
}

impl Debouncer {
    /// Starts unhealthy: a gateway must prove itself before the VIP is
    /// claimed for it.
    pub fn new(fall: u32, rise: u32) -> Self {
        Debouncer {
            fall: fall.max(1),
            rise: rise.max(1),
            healthy: false,
            streak: 0,
        }
    }

    /// The current verdict.
    pub fn healthy(&self) -> bool {
        self.healthy
    }

    /// One check's result; returns the verdict.
    pub fn observe(&mut self, ok: bool) -> bool {
        if ok == self.healthy {
            self.streak = 0;
        } else {
            self.streak += 1;
            let needed = if self.healthy { self.fall } else { self.rise };
            if self.streak >= needed {
                self.healthy = ok;
                self.streak = 0;
            }
        }
        self.healthy
    }
}

/// Checks `url` every `interval` (each check must answer 2xx within it)
/// and publishes the debounced verdict.
pub fn spawn(
    url: String,
    interval: Duration,
    mut debouncer: Debouncer,
    stop: CancellationToken,
) -> watch::Receiver<bool> {
    let (tx, rx) = watch::channel(debouncer.healthy());
    tokio::spawn(async move {
        let client = match reqwest::Client::builder().timeout(interval).build() {
            Ok(c) => c,
            Err(e) => {
                tracing::error!(error = %e, "cannot build the health-check client; the gateway stays unhealthy");
                return;
            }
        };
        let mut next = Instant::now();
        loop {
            let ok = matches!(client.get(&url).send().await, Ok(r) if r.status().is_success());
            let was = debouncer.healthy();
            let now = debouncer.observe(ok);
            if now != was {
                tracing::info!(%url, healthy = now, "local gateway health changed");
                let _ = tx.send(now);
            }
            next += interval;
            let wake = next.max(Instant::now());
            tokio::select! {
                () = stop.cancelled() => return,
                () = tokio::time::sleep_until(wake.into()) => {}
            }
        }
    });
    rx
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_failure_or_one_success_changes_nothing() {
        let mut d = Debouncer::new(3, 2);
        assert!(!d.observe(true));
        assert!(d.observe(true), "two passes make it healthy");
        assert!(d.observe(false));
        assert!(d.observe(false));
        assert!(d.observe(true), "a pass resets the failure streak");
        assert!(d.observe(false));
        assert!(d.observe(false));
        assert!(!d.observe(false), "three failures in a row");
        assert!(!d.observe(true));
        assert!(d.observe(true));
    }
}
