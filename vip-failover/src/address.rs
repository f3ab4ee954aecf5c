//! The VIP on the interface: `ip addr add/del`, gratuitous ARP, and the
//! guard that takes the address down when this daemon dies.
//!
//! Linux sends no ARP when an address is added, so clients would keep the
//! old master's MAC for ~40 s: a master announces the VIP with unsolicited
//! ARP replies (`arping -A`), one every `arp_interval` (250 ms), not one a
//! second: Linux ignores an ARP that changes a neighbour entry updated less
//! than `locktime` (1 s) ago, so a client that resolved the VIP just before
//! it moved keeps the old MAC until the first reply after that. The
//! announcement stops when the VIP is removed (a late reply would pull
//! clients back from the next holder). An address outlives the process that added
//! it; a daemon killed with SIGKILL cannot remove it, so at start the
//! daemon hands a pipe to a guard process (`sh -c 'cat; ip addr del'`)
//! that removes the address the moment the pipe closes, which is when
//! this process dies, however it dies. A restarted daemon also removes a
//! stale VIP before anything else.

use std::net::Ipv4Addr;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use agenda_common::shutdown::CancellationToken;
use tokio::process::{Child, ChildStdin, Command};

use crate::error::{Error, Result};

/// The VIP and the tools that move it.
#[derive(Debug, Clone)]
pub struct Address {
    ip: Ipv4Addr,
    prefix: u8,
    interface: String,
    ip_cmd: String,
    arping_cmd: String,
    arp_count: u32,
    arp_interval: Duration,
    /// Cancels the announcement under way.
    announcing: Arc<Mutex<Option<CancellationToken>>>,
}

impl Address {
    /// The VIP `ip/prefix` on `interface`; announced with `arp_count`
    /// replies `arp_interval` apart.
    pub fn new(
        (ip, prefix): (Ipv4Addr, u8),
        interface: &str,
        ip_cmd: &str,
        arping_cmd: &str,
        (arp_count, arp_interval): (u32, Duration),
    ) -> Self {
        Address {
            ip,
            prefix,
            interface: interface.to_string(),
            ip_cmd: ip_cmd.to_string(),
            arping_cmd: arping_cmd.to_string(),
            arp_count,
            arp_interval,
            announcing: Arc::new(Mutex::new(None)),
        }
    }

    /// Stops the announcement under way, if any.
    fn stop_announcing(&self) {
        if let Some(t) = self
            .announcing
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()
        {
            t.cancel();
        }
    }

    fn cidr(&self) -> String {
        format!("{}/{}", self.ip, self.prefix)
    }

    /// Whether the VIP is on the interface now.
    pub async fn present(&self) -> Result<bool> {
        let out = Command::new(&self.ip_cmd)
            .args(["-4", "-o", "addr", "show", "dev", &self.interface])
            .output()
            .await
            .map_err(|e| Error::Command(format!("{}: {e}", self.ip_cmd)))?;
        if !out.status.success() {
            return Err(Error::Command(format!(
                "ip addr show dev {}: {}",
                self.interface,
                String::from_utf8_lossy(&out.stderr).trim()
            )));
        }
        let needle = format!(" {} ", self.cidr());
        Ok(String::from_utf8_lossy(&out.stdout).contains(&needle))
    }

    /// `ip -4 addr VERB VIP dev IFACE`; an error whose text contains one
    /// of `fine` means the address is already as wanted.
    async fn ip(&self, verb: &str, fine: &[&str]) -> Result<()> {
        let out = Command::new(&self.ip_cmd)
            .args(["-4", "addr", verb, &self.cidr(), "dev", &self.interface])
            .output()
            .await
            .map_err(|e| Error::Command(format!("{}: {e}", self.ip_cmd)))?;
        let err = String::from_utf8_lossy(&out.stderr);
        if out.status.success() || fine.iter().any(|f| err.contains(f)) {
            Ok(())
        } else {
            Err(Error::Command(format!(
                "ip addr {verb} {}: {}",
                self.cidr(),
                err.trim()
            )))
        }
    }

    /// Adds the VIP (already there is fine).
    pub async fn add(&self) -> Result<()> {
        self.ip("add", &["File exists"]).await
    }

    /// Removes the VIP (already gone is fine), its announcement first.
    pub async fn remove(&self) -> Result<()> {
        self.stop_announcing();
        self.ip("del", &["Cannot assign", "not found"]).await
    }

    /// Sends unsolicited ARP replies for the VIP, the first at once, then
    /// one every `arp_interval` until `arp_count` or [`Self::remove`]; not
    /// waited for. (`arping -i` takes whole seconds only, so each reply is
    /// its own `arping -c 1`, which sends at once and lingers a second.)
    pub fn announce(&self) {
        self.stop_announcing();
        let stop = CancellationToken::new();
        *self.announcing.lock().unwrap_or_else(|p| p.into_inner()) = Some(stop.clone());
        let this = self.clone();
        tokio::spawn(async move {
            for i in 0..this.arp_count {
                if i > 0 {
                    tokio::select! {
                        () = stop.cancelled() => return,
                        () = tokio::time::sleep(this.arp_interval) => {}
                    }
                }
                if stop.is_cancelled() {
                    return;
                }
                this.arp_once(i == 0);
            }
        });
    }

    /// One unsolicited ARP reply; failures are logged (the first only).
    fn arp_once(&self, report: bool) {
        let child = Command::new(&self.arping_cmd)
            .args(["-A", "-c", "1", "-I", &self.interface, &self.ip.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(false)
            .spawn();
        match child {
            Ok(child) => {
                tokio::spawn(async move {
                    if let Ok(out) = child.wait_with_output().await {
                        // arping -A exits 1 when nobody answered, which is
                        // the normal case for an announcement.
                        let stderr = String::from_utf8_lossy(&out.stderr);
                        if report && !stderr.trim().is_empty() && !out.status.success() {
                            tracing::warn!(
                                stderr = %stderr.trim(),
                                "arping failed; clients may keep a stale ARP entry"
                            );
                        }
                    }
                });
            }
            Err(e) if report => {
                tracing::warn!(error = %e, cmd = %self.arping_cmd, "cannot run arping")
            }
            Err(_) => {}
        }
    }

    /// Starts the guard: a child that removes the VIP once this process's
    /// end of its stdin closes (on any death of this process). Hold the
    /// returned pipe as long as the daemon runs.
    pub fn spawn_guard(&self) -> Result<(Child, ChildStdin)> {
        // Quoting: the values were validated (an IPv4 CIDR, an interface
        // name) but are still passed as positional parameters, not text.
        let mut child = Command::new("sh")
            .args([
                "-c",
                r#"cat >/dev/null; exec "$0" -4 addr del "$1" dev "$2" 2>/dev/null"#,
                &self.ip_cmd,
                &self.cidr(),
                &self.interface,
            ])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(false)
            .spawn()
            .map_err(|e| Error::Command(format!("cannot start the VIP guard (sh): {e}")))?;
        let pipe = child
            .stdin
            .take()
            .ok_or_else(|| Error::Command("the VIP guard has no stdin".into()))?;
        Ok((child, pipe))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An `arping` stand-in that appends one line per call to a file.
    fn counting_arping(dir: &std::path::Path) -> (String, std::path::PathBuf) {
        let log = dir.join("calls");
        let script = dir.join("arping");
        std::fs::write(
            &script,
            format!("#!/bin/sh\necho \"$*\" >> {}\n", log.display()),
        )
        .unwrap();
        std::fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755))
            .unwrap();
        (script.display().to_string(), log)
    }

    fn calls(log: &std::path::Path) -> usize {
        std::fs::read_to_string(log).map_or(0, |s| s.lines().count())
    }

    #[tokio::test]
    async fn announcements_are_spread_and_stop_with_the_address() {
        let dir = std::env::temp_dir().join(format!("agenda-vip-arp-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let (arping, log) = counting_arping(&dir);
        let addr = Address::new(
            ("10.77.0.10".parse().unwrap(), 24),
            "eth0",
            "true",
            &arping,
            (40, Duration::from_millis(100)),
        );
        addr.announce();
        // The first reply goes at once, the next ones on the interval.
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while calls(&log) < 3 && std::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert!(calls(&log) >= 3, "replies keep coming on the interval");
        addr.remove().await.unwrap();
        let stopped_at = calls(&log);
        tokio::time::sleep(Duration::from_millis(500)).await;
        // One spawned just before the removal may still land.
        assert!(
            calls(&log) <= stopped_at + 1,
            "announcing went on after the address was removed"
        );
        assert!(std::fs::read_to_string(&log)
            .unwrap()
            .lines()
            .all(|l| l == "-A -c 1 -I eth0 10.77.0.10"));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
