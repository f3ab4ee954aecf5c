//! The VIP on the interface: `ip addr add/del`, gratuitous ARP, and the
//! guard that takes the address down when this daemon dies.
//!
//! Linux sends no ARP when an address is added, so clients would keep the
//! old master's MAC for ~40 s: a master announces the VIP with unsolicited
//! ARP replies (`arping -A`). An address outlives the process that added
//! it; a daemon killed with SIGKILL cannot remove it, so at start the
//! daemon hands a pipe to a guard process (`sh -c 'cat; ip addr del'`)
//! that removes the address the moment the pipe closes, which is when
//! this process dies, however it dies. A restarted daemon also removes a
//! stale VIP before anything else.

use std::net::Ipv4Addr;
use std::process::Stdio;

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
}

impl Address {
    /// The VIP `ip/prefix` on `interface`.
    pub fn new(
        (ip, prefix): (Ipv4Addr, u8),
        interface: &str,
        ip_cmd: &str,
        arping_cmd: &str,
        arp_count: u32,
    ) -> Self {
        Address {
            ip,
            prefix,
            interface: interface.to_string(),
            ip_cmd: ip_cmd.to_string(),
            arping_cmd: arping_cmd.to_string(),
            arp_count,
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

    /// Removes the VIP (already gone is fine).
    pub async fn remove(&self) -> Result<()> {
        self.ip("del", &["Cannot assign", "not found"]).await
    }

    /// Sends unsolicited ARP replies for the VIP (first one at once, then
    /// one a second); not waited for.
    pub fn announce(&self) {
        let child = Command::new(&self.arping_cmd)
            .args([
                "-A",
                "-c",
                &self.arp_count.to_string(),
                "-I",
                &self.interface,
                &self.ip.to_string(),
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(false)
            .spawn();
        match child {
            Ok(child) => {
                tokio::spawn(async move {
                    if let Ok(out) = child.wait_with_output().await {
                        if !out.status.success() {
                            tracing::warn!(
                                stderr = %String::from_utf8_lossy(&out.stderr).trim(),
                                "arping failed; clients may keep a stale ARP entry"
                            );
                        }
                    }
                });
            }
            Err(e) => tracing::warn!(error = %e, cmd = %self.arping_cmd, "cannot run arping"),
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
