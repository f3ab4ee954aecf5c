//! What the serving side and the transport hold of a node: the requests
//! they queue, the handle they queue them with, and the values they read
//! without a round trip to the raft thread.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::Arc;

use agenda_proto::raft::{Command, CommandResult, MemberChange};
use raft::prelude::Message;
use tokio::sync::oneshot;

use super::mailbox::Mailbox;
use crate::error::{Error, Result};

/// Something for the node loop to do.
pub enum Request {
    /// Replicate and apply a client command.
    Propose {
        /// The command (with a non-empty request id).
        cmd: Command,
        /// Gets the first result of this request id.
        reply: oneshot::Sender<Result<CommandResult>>,
    },
    /// Add (`add`) or remove a member.
    MemberChange {
        /// Who, and the request id.
        change: MemberChange,
        /// Add or remove.
        add: bool,
        /// Gets the resulting member list.
        reply: oneshot::Sender<Result<CommandResult>>,
    },
    /// Answers once this node has applied everything committed when the
    /// request arrived (raft ReadIndex): a linearizable read may follow.
    ReadIndex {
        /// Fires when reading locally is safe.
        reply: oneshot::Sender<Result<()>>,
    },
    /// A message from a peer.
    Raft(Box<Message>),
    /// Status snapshot for the Cluster API.
    Status {
        /// Receives the status.
        reply: oneshot::Sender<Status>,
    },
    /// The transport finished (or failed) sending a snapshot.
    SnapshotSent {
        /// Peer id.
        to: u64,
        /// Whether it went out.
        ok: bool,
    },
    /// The transport could not reach a peer.
    Unreachable(u64),
    /// Replace readers' view by the current state now.
    Publish {
        /// Fires once the view is current.
        reply: oneshot::Sender<()>,
    },
    /// The whole state as of now (a backup; see `backup.rs`).
    Snapshot {
        /// Receives a copy of the state machine (cheap: its tables are
        /// shared until the loop changes them).
        reply: oneshot::Sender<Box<crate::state_machine::StateMachine>>,
    },
    /// Hand leadership to this member (raft's leader transfer; a
    /// follower passes it on to the leader).
    TransferLeader(u64),
    /// Nothing to do: wakes the loop so it notices a stop request.
    Wake,
}

impl Request {
    /// Whether this request keeps the cluster itself going (peer traffic,
    /// status, wake-ups) rather than asking it for work: those have a
    /// queue of their own that client work can never fill (see
    /// [`Mailbox`]).
    pub fn is_cluster_traffic(&self) -> bool {
        matches!(
            self,
            Request::Raft(_)
                | Request::SnapshotSent { .. }
                | Request::Unreachable(_)
                | Request::Status { .. }
                | Request::Wake
        )
    }
}

/// Status of the node, as the Cluster API reports it.
#[derive(Debug, Clone)]
pub struct Status {
    /// Node id.
    pub id: u64,
    /// Known leader, 0 if none.
    pub leader: u64,
    /// Current term.
    pub term: u64,
    /// Commit index.
    pub commit: u64,
    /// Applied index.
    pub applied: u64,
    /// Raft role.
    pub role: &'static str,
    /// Members and their addresses.
    pub members: BTreeMap<u64, String>,
    /// Current revision.
    pub revision: i64,
    /// Oldest revision still in history.
    pub compact_revision: i64,
    /// Voters of raft's own configuration.
    pub voters: Vec<u64>,
}

/// Values the serving side reads without a round trip to the loop.
#[derive(Debug, Default)]
pub struct Shared {
    /// Current leader id (0: none).
    pub leader: AtomicU64,
    /// Current term.
    pub term: AtomicU64,
    /// Newest revision sent to watchers (can be ahead of the revision of
    /// readers' view).
    pub delivered_revision: AtomicI64,
    /// False once the loop has ended (stopped, removed or failed).
    pub running: AtomicBool,
    /// Set to ask the loop to stop.
    pub stop: AtomicBool,
    /// Set while the node is down for want of disk space (requests are
    /// refused with [`Error::DiskFull`] until it has started over).
    pub disk_full: AtomicBool,
}

/// How the loop ended when it did not fail.
#[derive(Debug, PartialEq, Eq)]
pub enum Exit {
    /// Asked to stop.
    Stopped,
    /// This node was removed from the cluster.
    Removed,
}

/// Handle to talk to the node loop from async code.
#[derive(Clone)]
pub struct NodeHandle {
    /// This node's id.
    pub id: u64,
    pub(super) mailbox: Arc<Mailbox>,
    /// Values readable without a round trip.
    pub shared: Arc<Shared>,
}

impl NodeHandle {
    /// Queues a request for the loop. Client work beyond the mailbox's
    /// bound is refused at once with [`Error::Overloaded`]: the caller
    /// answers UNAVAILABLE instead of the node queueing without end.
    pub fn send(&self, req: Request) -> Result<()> {
        if !self.shared.running.load(Ordering::Acquire) {
            if self.shared.disk_full.load(Ordering::Acquire) {
                return Err(Error::DiskFull("log writes failed".into()));
            }
            return Err(Error::Stopped);
        }
        self.mailbox.push(req)
    }

    /// Asks the loop to stop after its current turn.
    pub fn stop(&self) {
        self.shared.stop.store(true, Ordering::Release);
        let _ = self.mailbox.push(Request::Wake);
    }

    /// Current leader id, 0 when unknown.
    pub fn leader(&self) -> u64 {
        self.shared.leader.load(Ordering::Acquire)
    }
}
