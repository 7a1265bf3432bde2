//! The records read from the rings and not yet handled, and the order they are handled in.
//!
//! A drain reads at most [`RING_BUDGET`] records from each ring: agents flooding on many
//! CPUs can fill a ring faster than the daemon reads it, and an unbounded read would hold
//! the event loop (API calls, revocations, timers) and grow without limit. Records are
//! handled in the kernel's order across rings (a fork in one ring, the child's writes in
//! another), so where a ring still had records when its budget ran out, what the other rings
//! gave after that ring's last record read is held back to the next drain: a record still in
//! that ring may come before it.
use crate::events::Event;

/// Records read from one ring per drain, held-back ones included (~2.4 MiB of records).
pub const RING_BUDGET: usize = 8192;

/// Records held back by the last drain, with the ring each came from.
#[derive(Default)]
pub struct Backlog {
    held: Vec<(usize, Event)>,
}

/// One drain's records: read into it ring by ring, then split into the ones to handle now
/// (in the kernel's order) and the ones held back.
pub struct Batch {
    records: Vec<(usize, Event)>,
    /// Per ring: records in the batch, the latest time among them, and whether the ring
    /// still had records when the batch stopped reading it.
    rings: Vec<RingState>,
}

#[derive(Clone, Copy, Default)]
struct RingState {
    records: usize,
    latest_ns: u64,
    more: bool,
}

impl Backlog {
    /// A batch holding what the last drain held back; `capacity`: the records expected.
    pub fn batch(&mut self, rings: usize, capacity: usize) -> Batch {
        let held = std::mem::take(&mut self.held);
        let mut b = Batch {
            records: Vec::with_capacity(held.len() + capacity),
            rings: vec![RingState::default(); rings],
        };
        for (ring, ev) in held {
            b.push(ring, ev);
        }
        b
    }

    /// Records held back for the next drain.
    pub fn held(&self) -> usize {
        self.held.len()
    }

    /// Every record held back, in the kernel's order (none is held after).
    pub fn take(&mut self) -> Vec<Event> {
        // A batch of them alone, with no ring left with records: nothing holds any back.
        let batch = Batch {
            records: std::mem::take(&mut self.held),
            rings: vec![],
        };
        self.split(batch)
    }

    /// The records of `batch` to handle now, in the kernel's order; the rest is held back.
    pub fn split(&mut self, batch: Batch) -> Vec<Event> {
        let Batch { mut records, rings } = batch;
        // No record of a ring that still has some may pass the earliest of those rings' last.
        // (A ring that gave no record this drain, only undecodable ones, has no time to hold
        // the others to: they go, rather than wait on it forever.)
        let horizon = rings
            .iter()
            .filter(|r| r.more && r.records > 0)
            .map(|r| r.latest_ns)
            .min()
            .unwrap_or(u64::MAX);
        // Stable: one ring's records with one time keep the ring's order.
        records.sort_by_key(|(_, e)| e.actor().ktime_ns);
        let now = records.partition_point(|(_, e)| e.actor().ktime_ns <= horizon);
        self.held = records.split_off(now);
        records.into_iter().map(|(_, e)| e).collect()
    }
}

impl Batch {
    /// How many records ring `ring` may still give this drain.
    pub fn budget(&self, ring: usize) -> usize {
        RING_BUDGET.saturating_sub(self.rings[ring].records)
    }

    /// A record read from ring `ring`.
    pub fn push(&mut self, ring: usize, ev: Event) {
        let r = &mut self.rings[ring];
        r.records += 1;
        r.latest_ns = r.latest_ns.max(ev.actor().ktime_ns);
        self.records.push((ring, ev));
    }

    /// Ring `ring` was left with records in it (its budget ran out).
    pub fn more_in(&mut self, ring: usize) {
        self.rings[ring].more = true;
    }

    /// Some ring was left with records.
    pub fn left_more(&self) -> bool {
        self.rings.iter().any(|r| r.more)
    }

    pub fn len(&self) -> usize {
        self.records.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A record made at `t` ns.
    fn exit_at(t: u64) -> Event {
        Event::Exit {
            actor: crate::events::Actor {
                ktime_ns: t,
                ..crate::ocsf::testing::actor()
            },
            exit_code: None,
        }
    }

    fn times(evs: &[Event]) -> Vec<u64> {
        evs.iter().map(|e| e.actor().ktime_ns).collect()
    }

    #[test]
    fn drained_rings_are_merged_in_time_order_and_nothing_is_held() {
        let mut b = Backlog::default();
        let mut batch = b.batch(2, 0);
        for t in [1, 4, 6] {
            batch.push(0, exit_at(t));
        }
        for t in [2, 3, 9] {
            batch.push(1, exit_at(t));
        }
        assert_eq!(times(&b.split(batch)), [1, 2, 3, 4, 6, 9]);
        assert_eq!(b.held(), 0);
    }

    #[test]
    fn what_may_follow_a_ring_left_full_is_held_to_the_next_drain_in_order() {
        let mut b = Backlog::default();
        // Ring 0 ran out of budget at time 5: a record of it still unread may come at 6.
        let mut batch = b.batch(2, 0);
        for t in [1, 5] {
            batch.push(0, exit_at(t));
        }
        batch.more_in(0);
        for t in [2, 6, 8] {
            batch.push(1, exit_at(t));
        }
        assert_eq!(times(&b.split(batch)), [1, 2, 5]);
        assert_eq!(b.held(), 2);
        // The next drain reads ring 0's record at 7: it is handled before the held 8.
        let mut batch = b.batch(2, 0);
        assert_eq!(batch.len(), 2);
        batch.push(0, exit_at(7));
        assert_eq!(times(&b.split(batch)), [6, 7, 8]);
        assert_eq!(b.held(), 0);
    }

    #[test]
    fn a_ring_budget_counts_its_held_records_so_the_backlog_is_bounded() {
        let mut b = Backlog::default();
        let mut batch = b.batch(2, 0);
        batch.push(0, exit_at(1));
        batch.more_in(0);
        for t in 0..RING_BUDGET as u64 {
            batch.push(1, exit_at(10 + t));
        }
        assert_eq!(batch.budget(1), 0);
        assert_eq!(times(&b.split(batch)), [1]);
        assert_eq!(b.held(), RING_BUDGET);
        // Ring 1 may give nothing more until its held records are handled; ring 0 may.
        let batch = b.batch(2, 0);
        assert_eq!((batch.budget(0), batch.budget(1)), (RING_BUDGET, 0));
        // Ring 0 drained empty: everything goes, in order, and progress is made every drain.
        let out = b.split(batch);
        assert_eq!(out.len(), RING_BUDGET);
        assert!(out.windows(2).all(|w| w[0].actor().ktime_ns <= w[1].actor().ktime_ns));
        assert_eq!(b.held(), 0);
    }

    #[test]
    fn a_ring_left_full_of_undecodable_records_holds_nothing_back() {
        let mut b = Backlog::default();
        let mut batch = b.batch(2, 0);
        batch.more_in(0);
        for t in [2, 3] {
            batch.push(1, exit_at(t));
        }
        assert_eq!(times(&b.split(batch)), [2, 3]);
        assert_eq!(b.held(), 0);
    }

    #[test]
    fn at_exit_everything_held_is_taken_in_order() {
        let mut b = Backlog::default();
        let mut batch = b.batch(2, 0);
        batch.push(0, exit_at(1));
        batch.more_in(0);
        for t in [9, 4] {
            batch.push(1, exit_at(t));
        }
        assert_eq!(times(&b.split(batch)), [1]);
        assert_eq!(times(&b.take()), [4, 9]);
        assert_eq!(b.held(), 0);
    }

    #[test]
    fn records_of_one_time_keep_their_ring_order() {
        let mut b = Backlog::default();
        let mut batch = b.batch(1, 0);
        for pid in [3, 1, 2] {
            let mut e = exit_at(5);
            if let Event::Exit { actor, .. } = &mut e {
                actor.tgid = pid;
            }
            batch.push(0, e);
        }
        let pids: Vec<u32> = b.split(batch).iter().map(|e| e.actor().tgid).collect();
        assert_eq!(pids, [3, 1, 2]);
    }
}
