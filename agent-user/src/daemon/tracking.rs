//! The tracking component: the process table (who descends from which agent, what each
//! process runs) and the agent selectors it adopts running processes by. The kernel tracks new
//! children itself at fork; this is the daemon's view, applied event by event in the kernel's
//! order.
use std::collections::HashMap;

use crate::{
    events::Event,
    lineage::{ProcInfo, ProcKey, ProcSnapshot, ProcessTable, Reason},
    procscan::{self, Procfs},
    selectors::{Candidate, CompiledSelectors},
};

/// What the process table made of an event: the acting process (as the table holds it after
/// the event), and for an exec the process as it was before it.
pub(super) struct Seen {
    pub key: ProcKey,
    pub before_exec: Option<ProcInfo>,
}

impl Seen {
    /// The process after the event, in `table`.
    pub fn after<'t>(&self, table: &'t ProcessTable) -> Option<&'t ProcInfo> {
        table.get(&self.key)
    }
}

pub(super) struct Tracking {
    table: ProcessTable,
    /// The agent selectors, compiled (for adopting running processes).
    selectors: CompiledSelectors,
    ticks_per_sec: u64,
}

impl Tracking {
    pub(super) fn new(selectors: CompiledSelectors, ticks_per_sec: u64) -> Tracking {
        Tracking {
            table: ProcessTable::new(ticks_per_sec),
            selectors,
            ticks_per_sec,
        }
    }

    /// Clock ticks per second (/proc start times).
    pub(super) fn ticks_per_sec(&self) -> u64 {
        self.ticks_per_sec
    }

    /// The process table, to read (lineage for the records).
    pub(super) fn table(&self) -> &ProcessTable {
        &self.table
    }

    pub(super) fn selectors(&self) -> &CompiledSelectors {
        &self.selectors
    }

    /// Processes in the table.
    pub(super) fn len(&self) -> usize {
        self.table.len()
    }

    /// The live process `pid`, as the table knows it.
    pub(super) fn process(&self, pid: u32) -> Option<&ProcInfo> {
        self.table.get(&self.table.live_key(pid)?)
    }

    /// Is `pid` a live process of the table?
    pub(super) fn knows(&self, pid: u32) -> bool {
        self.table.live_key(pid).is_some()
    }

    /// Puts a process the daemon tracks (registered, adopted) into the table, under the
    /// agent root `root` (None: it is a root).
    pub(super) fn insert(&mut self, snap: &ProcSnapshot, reason: Reason, root: Option<u32>) -> ProcKey {
        let root_key = root.and_then(|r| self.table.live_key(r));
        self.table.insert_snapshot(snap, reason, root_key)
    }

    /// **track**: the table applies the event (fork, exec, exit); the actor before and after.
    /// None: the process is not in the table (nothing to attribute the event to).
    pub(super) fn apply(&mut self, ev: &Event) -> Option<Seen> {
        // Only an exec changes what the acting process is.
        let before_exec = match ev {
            Event::Exec { .. } => self.table.get(&self.table.key_of(ev.actor())).cloned(),
            _ => None,
        };
        // An exec the kernel refused changed nothing: the process keeps its image.
        let refused_exec = matches!(ev, Event::Exec { actor, failed, .. } if actor.kernel.denied || failed.is_some());
        let key = if refused_exec {
            self.table.ensure(ev.actor(), &Procfs)
        } else {
            self.table.apply(ev, &Procfs)
        };
        self.table.get(&key)?;
        Some(Seen { key, before_exec })
    }

    /// The running processes `select` picks, with their descendants, parents first, and the
    /// parent of each running process.
    pub(super) fn candidates(&self, select: impl Fn(&Candidate) -> bool) -> (Vec<u32>, HashMap<u32, u32>) {
        let running = procscan::running();
        let pids = procscan::select_for_adoption(&running, select, std::process::id());
        (pids, running.iter().map(|r| (r.pid, r.ppid)).collect())
    }

    /// The root of an adopted tree that `pid` joins: its topmost ancestor the table holds
    /// (None: it is a root).
    pub(super) fn adopted_root(&self, pid: u32, ppid_of: &HashMap<u32, u32>) -> Option<u32> {
        let mut root = pid;
        while let Some(pp) = ppid_of.get(&root) {
            if self.knows(*pp) {
                root = *pp;
            } else {
                break;
            }
        }
        (root != pid).then_some(root)
    }
}
