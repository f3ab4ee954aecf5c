//! ReadIndex bookkeeping: linearizable readers gathered per loop turn into
//! one raft round, matched with the read index the leader confirms, and
//! released once this node has applied that far.
//!
//! Generic over what a waiting reader is (`W`), so the rules are tested
//! without a node.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

/// Readers from gathering to release.
#[derive(Debug)]
pub struct ReadQueue<W> {
    id: u64,
    next_ctx: u64,
    /// Readers gathered during this turn (one raft round each turn).
    gathering: Vec<W>,
    /// Rounds sent to raft, by context, waiting for their read index.
    in_flight: BTreeMap<u64, (Vec<W>, Instant)>,
    /// Rounds whose read index is known, waiting for apply to reach it.
    ready: Vec<(u64, Vec<W>)>,
}

impl<W> ReadQueue<W> {
    /// The queue of node `id`; its round counter starts at `first_ctx`,
    /// which a node draws at random so a restarted node does not reuse the
    /// contexts of its previous run that a leader may still hold.
    pub fn new(id: u64, first_ctx: u64) -> Self {
        ReadQueue {
            id,
            next_ctx: first_ctx,
            gathering: Vec::new(),
            in_flight: BTreeMap::new(),
            ready: Vec::new(),
        }
    }

    /// A reader for the next round.
    pub fn push(&mut self, reader: W) {
        self.gathering.push(reader);
    }

    /// A reader whose read index is already known (the leader's commit
    /// index under its read lease): released once applied that far.
    pub fn push_ready(&mut self, index: u64, reader: W) {
        self.ready.push((index, vec![reader]));
    }

    /// Closes this turn's round: the context to hand raft's `read_index`,
    /// if anyone is waiting or `renew` asks for a round anyway (the
    /// leader's read lease). `shared_ctx` re-creates an old defect for the
    /// simulator (contexts without the node id, which collided across
    /// followers at the leader): never set outside it.
    pub fn start_round(&mut self, now: Instant, shared_ctx: bool, renew: bool) -> Option<Vec<u8>> {
        if self.gathering.is_empty() && !renew {
            return None;
        }
        let ctx = self.next_ctx;
        self.next_ctx = self.next_ctx.wrapping_add(1);
        let batch = std::mem::take(&mut self.gathering);
        self.in_flight.insert(ctx, (batch, now));
        Some(if shared_ctx {
            read_ctx(0, ctx)
        } else {
            read_ctx(self.id, ctx)
        })
    }

    /// Raft confirmed the read index of a round (of this node or not).
    /// Returns when that round started, if it was this node's and still
    /// awaited.
    pub fn confirmed(&mut self, ctx: &[u8], index: u64, shared_ctx: bool) -> Option<Instant> {
        let mine = if shared_ctx { 0 } else { self.id };
        let ctx = match parse_read_ctx(ctx) {
            Some((id, ctx)) if id == mine => ctx,
            _ => return None,
        };
        let (batch, started) = self.in_flight.remove(&ctx)?;
        if !batch.is_empty() {
            self.ready.push((index, batch));
        }
        Some(started)
    }

    /// Drops rounds that waited longer than `limit` for their index (their
    /// readers see the channel close and retry).
    pub fn give_up_older_than(&mut self, now: Instant, limit: Duration) {
        self.in_flight
            .retain(|_, (_, at)| now.duration_since(*at) < limit);
    }

    /// A new leader: rounds in flight died with the old leadership;
    /// dropping them lets their readers retry at once.
    pub fn leader_changed(&mut self) {
        self.in_flight.clear();
    }

    /// Whether some confirmed round is released at `applied`.
    pub fn any_released_at(&self, applied: u64) -> bool {
        self.ready.iter().any(|(index, _)| *index <= applied)
    }

    /// Takes the readers whose round's index is applied.
    pub fn release(&mut self, applied: u64) -> Vec<W> {
        let mut out = Vec::new();
        let mut i = 0;
        while i < self.ready.len() {
            if self.ready[i].0 <= applied {
                out.extend(self.ready.swap_remove(i).1);
            } else {
                i += 1;
            }
        }
        out
    }
}

/// The context of a ReadIndex round: the node id, then its own counter.
/// The leader keeps one pending round per context and drops a second
/// request with the same context, so contexts must differ across nodes
/// (with a bare counter, followers collided and their reads waited for
/// the 1 s retry).
pub fn read_ctx(id: u64, n: u64) -> Vec<u8> {
    let mut ctx = Vec::with_capacity(16);
    ctx.extend_from_slice(&id.to_le_bytes());
    ctx.extend_from_slice(&n.to_le_bytes());
    ctx
}

/// Inverse of [`read_ctx`].
fn parse_read_ctx(ctx: &[u8]) -> Option<(u64, u64)> {
    let (id, n) = ctx.split_at_checked(8)?;
    Some((
        u64::from_le_bytes(id.try_into().ok()?),
        u64::from_le_bytes(n.try_into().ok()?),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn read_contexts_of_different_nodes_never_collide() {
        assert_ne!(read_ctx(1, 7), read_ctx(2, 7));
        assert_eq!(parse_read_ctx(&read_ctx(3, u64::MAX)), Some((3, u64::MAX)));
        assert_eq!(parse_read_ctx(&7u64.to_le_bytes()), None);
        assert_eq!(parse_read_ctx(&[]), None);
    }

    #[test]
    fn one_round_per_turn_released_once_applied() {
        let now = Instant::now();
        let mut q = ReadQueue::new(2, 10);
        assert_eq!(
            q.start_round(now, false, false),
            None,
            "nobody waiting, no round"
        );
        q.push("a");
        q.push("b");
        let ctx = q.start_round(now, false, false).unwrap();
        assert_eq!(ctx, read_ctx(2, 10));
        q.push("c");
        let ctx2 = q.start_round(now, false, false).unwrap();
        assert_eq!(ctx2, read_ctx(2, 11));
        // Another node's round with the same counter is not ours.
        q.confirmed(&read_ctx(3, 10), 5, false);
        assert!(!q.any_released_at(100));
        q.confirmed(&ctx, 7, false);
        q.confirmed(&ctx2, 9, false);
        assert!(!q.any_released_at(6));
        assert!(q.release(6).is_empty());
        let mut first = q.release(8);
        first.sort_unstable();
        assert_eq!(first, vec!["a", "b"]);
        assert_eq!(q.release(100), vec!["c"]);
        assert!(q.release(100).is_empty(), "released once");
    }

    #[test]
    fn rounds_die_with_a_leadership_or_a_timeout() {
        let t0 = Instant::now();
        let mut q = ReadQueue::new(1, 0);
        q.push(1);
        let old = q.start_round(t0, false, false).unwrap();
        q.leader_changed();
        q.confirmed(&old, 3, false);
        assert!(
            q.release(10).is_empty(),
            "a dropped round is never released"
        );

        q.push(2);
        let slow = q.start_round(t0, false, false).unwrap();
        q.push(3);
        let fresh = q
            .start_round(t0 + Duration::from_secs(2), false, false)
            .unwrap();
        q.give_up_older_than(t0 + Duration::from_secs(3), Duration::from_secs(3));
        q.confirmed(&slow, 1, false);
        q.confirmed(&fresh, 1, false);
        assert_eq!(q.release(1), vec![3]);
    }

    #[test]
    fn a_renewal_round_has_no_readers_and_tells_when_it_started() {
        let t0 = Instant::now();
        let mut q: ReadQueue<u8> = ReadQueue::new(1, 0);
        assert_eq!(q.start_round(t0, false, false), None);
        let ctx = q.start_round(t0, false, true).expect("a round to renew");
        assert_eq!(q.confirmed(&ctx, 4, false), Some(t0));
        assert_eq!(q.confirmed(&ctx, 4, false), None, "answered once");
        assert!(!q.any_released_at(4), "nobody was waiting");
        // Readers under the lease skip the round.
        q.push_ready(6, 9);
        assert!(q.release(5).is_empty());
        assert_eq!(q.release(6), vec![9]);
    }
}
