//! The node's mailbox: two bounded queues in front of the raft thread.
//!
//! Client work (proposals, ReadIndex, publishes) and cluster traffic
//! (peer messages, status, wake-ups) queue apart, and the loop takes
//! cluster traffic first. A flood of client requests therefore fills only
//! its own queue and is refused at once ([`Error::Overloaded`], UNAVAILABLE
//! at the gRPC face); heartbeats and votes still get through, so overload
//! never costs a leadership. A full cluster queue drops the newest peer
//! message: raft tolerates lost messages (they are resent), whereas
//! growing without bound would not be tolerated by the machine.

use std::collections::VecDeque;
use std::sync::{Condvar, Mutex};
use std::time::Duration;

use super::handle::Request;
use crate::error::{Error, Result};

/// Client requests queued at most (`--max-queued-requests`' default). At
/// about 30,000 proposals/s per leader this is a few hundred ms of work:
/// deeper, callers would time out in the queue anyway.
pub const CLIENT_QUEUE: usize = 16_384;
/// Cluster messages queued at most. Each peer's stream delivers in order
/// and the loop takes these first, so this fills only when the raft thread
/// itself is stalled.
pub const CLUSTER_QUEUE: usize = 65_536;

#[derive(Default)]
struct Queues {
    cluster: VecDeque<Request>,
    client: VecDeque<Request>,
    dropped_cluster: u64,
}

/// The two queues and the loop's wake-up.
pub struct Mailbox {
    queues: Mutex<Queues>,
    ready: Condvar,
    client_cap: usize,
    cluster_cap: usize,
}

impl Mailbox {
    /// A mailbox refusing client work beyond `client_cap` queued requests.
    pub fn new(client_cap: usize, cluster_cap: usize) -> Self {
        Mailbox {
            queues: Mutex::new(Queues::default()),
            ready: Condvar::new(),
            client_cap: client_cap.max(1),
            cluster_cap: cluster_cap.max(1),
        }
    }

    /// Queues `req`, or refuses client work when its queue is full.
    pub fn push(&self, req: Request) -> Result<()> {
        let mut q = self.lock();
        if req.is_cluster_traffic() {
            if q.cluster.len() >= self.cluster_cap {
                q.dropped_cluster += 1;
                return Ok(());
            }
            q.cluster.push_back(req);
        } else {
            if q.client.len() >= self.client_cap {
                return Err(Error::Overloaded(self.client_cap));
            }
            q.client.push_back(req);
        }
        drop(q);
        self.ready.notify_one();
        Ok(())
    }

    /// Waits up to `timeout` for anything to be queued; true if something is.
    pub fn wait(&self, timeout: Duration) -> bool {
        let q = self.lock();
        if !q.cluster.is_empty() || !q.client.is_empty() {
            return true;
        }
        let (q, _) = self
            .ready
            .wait_timeout_while(q, timeout, |q| q.cluster.is_empty() && q.client.is_empty())
            .unwrap_or_else(|e| e.into_inner());
        !q.cluster.is_empty() || !q.client.is_empty()
    }

    /// Moves up to `max` requests into `out`, cluster traffic first.
    pub fn drain(&self, max: usize, out: &mut Vec<Request>) {
        let mut q = self.lock();
        let from_cluster = q.cluster.len().min(max);
        out.extend(q.cluster.drain(..from_cluster));
        let from_client = q.client.len().min(max - from_cluster);
        out.extend(q.client.drain(..from_client));
    }

    /// Client requests waiting now.
    pub fn client_queued(&self) -> usize {
        self.lock().client.len()
    }

    /// Peer messages dropped so far because the cluster queue was full.
    pub fn dropped_cluster(&self) -> u64 {
        self.lock().dropped_cluster
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Queues> {
        // A panic while holding this lock leaves plain queues behind,
        // nothing half-updated: carry on with them.
        self.queues.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use raft::prelude::Message;
    use tokio::sync::oneshot;

    fn read() -> Request {
        Request::ReadIndex {
            reply: oneshot::channel().0,
        }
    }

    #[test]
    fn a_full_client_queue_refuses_at_once_and_peers_still_get_through() {
        let mb = Mailbox::new(2, 4);
        mb.push(read()).unwrap();
        mb.push(read()).unwrap();
        assert!(matches!(mb.push(read()), Err(Error::Overloaded(2))));
        mb.push(Request::Raft(Box::default())).unwrap();
        mb.push(Request::Wake).unwrap();
        let mut out = Vec::new();
        mb.drain(3, &mut out);
        // Cluster traffic first, then client work, within the batch size.
        assert!(matches!(out[0], Request::Raft(_)));
        assert!(matches!(out[1], Request::Wake));
        assert!(matches!(out[2], Request::ReadIndex { .. }));
        assert_eq!(mb.client_queued(), 1);
        mb.push(read()).unwrap();
    }

    #[test]
    fn a_full_cluster_queue_drops_the_newest_message() {
        let mb = Mailbox::new(1, 2);
        for i in 0..5u64 {
            let m = Message {
                commit: i,
                ..Default::default()
            };
            mb.push(Request::Raft(Box::new(m))).unwrap();
        }
        assert_eq!(mb.dropped_cluster(), 3);
        let mut out = Vec::new();
        mb.drain(10, &mut out);
        let commits: Vec<u64> = out
            .iter()
            .map(|r| match r {
                Request::Raft(m) => m.commit,
                _ => unreachable!(),
            })
            .collect();
        assert_eq!(commits, vec![0, 1]);
    }

    #[test]
    fn wait_returns_when_something_arrives() {
        let mb = std::sync::Arc::new(Mailbox::new(4, 4));
        assert!(!mb.wait(Duration::from_millis(1)));
        let other = mb.clone();
        let t = std::thread::spawn(move || other.push(Request::Wake).unwrap());
        assert!(mb.wait(Duration::from_secs(10)));
        t.join().unwrap();
    }
}
