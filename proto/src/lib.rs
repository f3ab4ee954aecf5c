//! gRPC types of Agenda, generated from `proto/*.proto` at build time.
//!
//! Layout:
//! - [`db`]: the agenda-db client API (KV, Txn, Lease, Watch, Cluster).
//! - [`calendar`]: the gateway's calls to agenda-users and agenda-groups.
//! - [`raft`]: node-to-node raft transport and the records agenda-db
//!   replicates and persists (commands, results, snapshots).
#![allow(missing_docs, clippy::all)]

/// Generated modules, nested like the protobuf packages so that
/// cross-package references resolve.
pub mod agenda {
    pub mod db {
        pub mod v1 {
            tonic::include_proto!("agenda.db.v1");
        }
    }
    pub mod calendar {
        pub mod v1 {
            tonic::include_proto!("agenda.calendar.v1");
        }
    }
    pub mod raft {
        pub mod v1 {
            tonic::include_proto!("agenda.raft.v1");
        }
    }
}

/// Gateway to users/groups calls (`agenda.calendar.v1`).
pub use agenda::calendar::v1 as calendar;
/// agenda-db client API (`agenda.db.v1`).
pub use agenda::db::v1 as db;
/// Raft transport and replicated records (`agenda.raft.v1`).
pub use agenda::raft::v1 as raft;

impl db::TxnRequest {
    /// Whether every operation of both branches is a range: such a txn only
    /// reads, so agenda-db serves it like a read (no log entry) and the
    /// client may send it to any node.
    pub fn is_read_only(&self) -> bool {
        self.success
            .iter()
            .chain(&self.failure)
            .all(|op| matches!(op.request, Some(db::request_op::Request::Range(_))))
    }
}
