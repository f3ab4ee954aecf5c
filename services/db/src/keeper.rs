//! Keeps the raft loop running: starts it on its own thread and, when it
//! stops because the disk is full, refuses requests
//! ([`Error::DiskFull`], UNAVAILABLE: clients go to the other nodes) and
//! starts it over from its files once there is space again, behind the
//! same handle, view and watch hub, so the serving side never notices
//! more than a pause. Any other failure ends the node as before.

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::error::{Error, Result};
use crate::metrics::Metrics;
use crate::node::{Exit, Node, NodeConfig, NodeHandle, NodeIo};
use crate::recovery::{self, Recovered};
use crate::state_machine::{Published, ReadView};
use crate::transport::Transport;
use crate::watch::WatchHub;

/// How often a node whose disk filled looks for space.
const RETRY_EVERY: Duration = Duration::from_secs(1);
/// Free space that counts as "space returned": this much, or a quarter of
/// a smaller filesystem. Starting over as soon as a few pages are free
/// only fails again at the next write (a node flapping once a second).
const ROOM: u64 = 64 * 1024 * 1024;

/// What starting the loop over needs.
pub struct Keeper {
    /// The node's configuration (its data dir, above all).
    pub cfg: Config,
    /// Members from the command line (recorded ones win, as at start).
    pub members: BTreeMap<u64, String>,
    /// The loop's timing and log knobs.
    pub node_cfg: NodeConfig,
    /// Shared by every incarnation.
    pub metrics: Metrics,
    /// What readers see (replaced by the recovered state on a restart).
    pub view: Published<ReadView>,
    /// Where watchers listen.
    pub hub: WatchHub,
    /// Raft messages out.
    pub transport: Transport,
    /// The handle the serving side and the transport hold.
    pub handle: NodeHandle,
}

impl Keeper {
    /// Runs `node` (and its successors) until it ends for good; sends how.
    pub async fn keep(
        self,
        mut node: Node,
        done: oneshot::Sender<Result<Exit>>,
        stopping: CancellationToken,
    ) {
        loop {
            let outcome = match run_on_thread(node, self.cfg.id).await {
                Err(e) if e.is_disk_full() && !stopping.is_cancelled() => e,
                other => {
                    let _ = done.send(other);
                    return;
                }
            };
            self.handle.shared.disk_full.store(true, Ordering::Release);
            tracing::error!(
                error = %outcome,
                "the disk is full: this node refuses requests and starts over from its files once there is space; the other members keep serving"
            );
            node = match self.start_over(&stopping).await {
                Some(Ok(n)) => n,
                Some(Err(e)) => {
                    let _ = done.send(Err(e));
                    return;
                }
                None => {
                    let _ = done.send(Ok(Exit::Stopped));
                    return;
                }
            };
            tracing::info!("space returned: the node started over from its files");
        }
    }

    /// Tries to recover from the files every [`RETRY_EVERY`] until it
    /// works (`None`: asked to stop meanwhile).
    async fn start_over(&self, stopping: &CancellationToken) -> Option<Result<Node>> {
        loop {
            tokio::select! {
                () = stopping.cancelled() => return None,
                () = tokio::time::sleep(RETRY_EVERY) => {}
            }
            match room(&self.cfg.data_dir) {
                Some((free, total)) if free < ROOM.min(total / 4) => {
                    tracing::debug!(free, total, "still no space");
                    continue;
                }
                _ => {}
            }
            let recovered = match recovery::recover(&self.cfg, &self.members, &self.metrics) {
                Ok(r) => r,
                Err(e) if e.is_disk_full() => {
                    tracing::debug!(error = %e, "still no space");
                    continue;
                }
                Err(e) => return Some(Err(e)),
            };
            let Recovered {
                log_db,
                state_files,
                storage,
                state,
                snapshot_source,
            } = recovered;
            self.view.store(state.view());
            let io = NodeIo {
                handle: Some(self.handle.clone()),
                ..NodeIo::server(
                    Box::new(self.transport.clone()),
                    self.cfg.max_queued_requests,
                )
            };
            let started = Node::new(
                self.node_cfg.clone(),
                storage,
                log_db,
                state_files,
                state,
                self.view.clone(),
                snapshot_source,
                self.hub.clone(),
                io,
                self.metrics.clone(),
            );
            return Some(started.map(|(node, _)| node));
        }
    }
}

/// Free and total bytes of the filesystem holding `dir` (`None` if it
/// cannot be asked: then recovery itself is the test).
fn room(dir: &std::path::Path) -> Option<(u64, u64)> {
    use std::os::unix::ffi::OsStrExt;
    let path = std::ffi::CString::new(dir.as_os_str().as_bytes()).ok()?;
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: `path` is a valid C string and `st` a valid out-pointer.
    if unsafe { libc::statvfs(path.as_ptr(), &mut st) } != 0 {
        return None;
    }
    let block = st.f_frsize as u64;
    Some((st.f_bavail as u64 * block, st.f_blocks as u64 * block))
}

/// Runs the loop on a thread of its own and waits for it to end.
async fn run_on_thread(node: Node, id: u64) -> Result<Exit> {
    let (tx, rx) = oneshot::channel();
    let spawned = std::thread::Builder::new()
        .name(format!("raft-{id}"))
        .spawn(move || {
            let _ = tx.send(node.run());
        });
    if let Err(e) = spawned {
        return Err(Error::Config(format!("cannot start the raft thread: {e}")));
    }
    rx.await.unwrap_or_else(|_| {
        Err(Error::Fatal(
            "the raft thread died unexpectedly (see the panic message above)".into(),
        ))
    })
}
