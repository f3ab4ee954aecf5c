//! `.agenda/endpoints.json`: every process `make run` started.

use std::path::Path;

use crate::error::{Error, Result};
use serde::Deserialize;

/// The whole file.
#[derive(Debug, Deserialize)]
pub struct Endpoints {
    /// The virtual IP (namespace topology only).
    #[serde(default)]
    pub vip: Option<String>,
    /// The namespace clients reach the VIP from.
    #[serde(default)]
    pub client_netns: Option<String>,
    /// Certificates of the deployment (`agendactl certs`), when its links
    /// are TLS: agendactl presents its own (`agendactl.pem`) from there.
    #[serde(default)]
    pub tls_dir: Option<std::path::PathBuf>,
    /// Every process.
    pub processes: Vec<Process>,
}

/// One process.
#[derive(Debug, Clone, Deserialize)]
pub struct Process {
    /// e.g. agenda-db-1.
    pub name: String,
    /// e.g. agenda-db.
    pub kind: String,
    /// The machine (namespace topology) or "local".
    pub machine: String,
    /// The namespace to reach it from ("" or absent: the host's).
    #[serde(default)]
    pub netns: Option<String>,
    /// Its pid when started.
    pub pid: Option<i64>,
    /// Its HTTP base URL, if it has one.
    #[serde(default)]
    pub http: Option<String>,
    /// Its gRPC address, if it has one.
    #[serde(default)]
    pub grpc: Option<String>,
    /// Its Redis address (supervisors).
    #[serde(default)]
    pub redis: Option<String>,
}

impl Process {
    /// Whether the pid runs on this host (a zombie does not: nothing may
    /// reap a detached process promptly).
    pub fn alive(&self) -> bool {
        self.pid
            .and_then(|p| u32::try_from(p).ok())
            .is_some_and(agenda_common::process::alive)
    }

    /// The namespace to dial it from ("" is the host's own).
    pub fn ns(&self) -> &str {
        self.netns.as_deref().unwrap_or("")
    }
}

impl Endpoints {
    /// Reads the file.
    pub fn read(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(Error::io(format!(
            "{}: not found; is the system up (`make run`)?",
            path.display()
        )))?;
        serde_json::from_str(&text)
            .map_err(|e| Error::Malformed(format!("{}: not valid: {e}", path.display())))
    }

    /// Processes of one kind.
    pub fn of_kind<'a>(&'a self, kind: &'a str) -> impl Iterator<Item = &'a Process> + 'a {
        self.processes.iter().filter(move |p| p.kind == kind)
    }
}
