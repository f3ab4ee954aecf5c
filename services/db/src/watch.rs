//! Fan-out of applied revisions to watchers.
//!
//! The node publishes each committed revision once; every watch stream
//! filters what it wants. A watcher that falls too far behind is cut off
//! with an error telling it where to resume (the history table still has
//! the revisions), so one slow reader never holds back the node.

use std::sync::Arc;

use agenda_proto::db::Event;
use tokio::sync::broadcast;

/// Revisions buffered for slow watchers before they are cut off.
const BUFFER: usize = 4096;

/// One applied revision and its events.
#[derive(Debug)]
pub struct RevisionEvents {
    /// The revision.
    pub revision: i64,
    /// What changed at it, in order (shared with the history).
    pub events: Arc<Vec<Event>>,
}

/// Publisher side, owned by the node; cheap to clone.
#[derive(Clone)]
pub struct WatchHub {
    tx: broadcast::Sender<Arc<RevisionEvents>>,
}

impl Default for WatchHub {
    fn default() -> Self {
        WatchHub {
            tx: broadcast::channel(BUFFER).0,
        }
    }
}

impl WatchHub {
    /// Publishes a committed revision (no-op without watchers).
    pub fn publish(&self, revision: i64, events: Arc<Vec<Event>>) {
        let _ = self.tx.send(Arc::new(RevisionEvents { revision, events }));
    }

    /// Subscribes to revisions published from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<Arc<RevisionEvents>> {
        self.tx.subscribe()
    }
}
