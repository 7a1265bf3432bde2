//! The kernel component: the loaded programs and their maps (`loader::Probes`), this
//! daemon's generation, the loss counters last reported, and the integrity of the kernel
//! state the daemon owns. Every write of a tracked entry goes through [`Kernel::write`], so
//! that [`Kernel::check`] (every [`CHECK_EVERY`]) can compare the kernel's state with what
//! the daemon wrote: the generation that acts, the posture and guardrail verdicts, and the
//! tracked entries of agent processes that still run. A root process that reaches the maps
//! through bpf(2) where no LSM hook refuses it (kernels without BPF LSM, an agent not under
//! `tether exec`'s seccomp filter) can delete its entry or rewrite a verdict; the daemon puts
//! back what it finds changed and raises a `tamper` alert for each. Between the change and the
//! check the change holds: after the fact, and said so.
use std::{
    collections::{BTreeMap, HashMap, HashSet},
    time::Duration,
};

use agent_common::{NO_TASK, Tracked, counter};
use aya::maps::{MapData, MapError, RingBuf};
use tracing::error;

use crate::{
    contain::{
        self,
        compile::{self, Compiled},
        kernel_maps::MapsError,
    },
    features::KernelReport,
    lineage::ticks_to_ns,
    loader::{self, Attached, Kept, Probes, TrackedView},
    ocsf::objects::Tamper,
    policy::engine::Rules,
};

pub(super) const CHECK_EVERY: Duration = Duration::from_secs(2);

/// A loss or error counter of the kernel that moved since it was last reported.
pub(super) struct Moved {
    /// Its index (agent_common::counter) and name.
    pub index: u32,
    pub name: String,
    pub new: u64,
    pub total: u64,
}

pub(super) struct Kernel {
    probes: Probes,
    /// This daemon's generation (the ACTIVE map's value while it acts).
    generation: u64,
    /// The tracked entries as the daemon last wrote or checked them.
    written: HashMap<u32, Tracked>,
    /// Mismatches found and repaired, in all.
    repaired: u64,
    /// The loss counters as last reported.
    reported: [u64; counter::COUNT as usize],
    /// Per program, the calls the kernel skipped as last reported (from this daemon's start).
    skipped: BTreeMap<String, u64>,
}

/// Calls the kernel ran a program for none of (its recursion guard), since last reported.
pub(super) struct Skipped {
    pub program: String,
    pub new: u64,
    pub total: u64,
}

/// The programs whose count in `now` grew past `reported` (which takes the new counts); a
/// program first seen counts from 0.
fn grown(reported: &mut BTreeMap<String, u64>, now: BTreeMap<String, u64>) -> Vec<Skipped> {
    let mut out = vec![];
    for (program, total) in now {
        let before = reported.insert(program.clone(), total).unwrap_or(0);
        if total > before {
            out.push(Skipped {
                program,
                new: total - before,
                total,
            });
        }
    }
    out
}

impl Kernel {
    pub(super) fn new(probes: Probes, generation: u64) -> Kernel {
        // What the programs skipped before this daemon started (a taken-over load) is not
        // this daemon's to report.
        let skipped = probes.skipped();
        Kernel {
            probes,
            generation,
            written: HashMap::new(),
            repaired: 0,
            reported: [0; counter::COUNT as usize],
            skipped,
        }
    }

    /// What the kernel allows and what is in effect.
    pub(super) fn report(&self) -> &KernelReport {
        &self.probes.report
    }

    pub(super) fn attached(&self) -> &Attached {
        &self.probes.attached
    }

    /// What `--persist` keeps (None: off).
    pub(super) fn kept(&self) -> Option<&Kept> {
        self.probes.kept.as_ref()
    }

    /// The record rings, to drain.
    pub(super) fn rings(&mut self) -> &mut [RingBuf<MapData>] {
        &mut self.probes.rings
    }

    /// A read-only view of the tracked map for the API's workers.
    pub(super) fn tracked_view(&self) -> TrackedView {
        self.probes.tracked_view.clone()
    }

    /// Hands over to this daemon's programs.
    pub(super) fn activate(&mut self) -> Result<(), loader::LoadError> {
        self.probes.activate(self.generation)
    }

    /// The generation acting now.
    pub(super) fn active_generation(&self) -> Option<u64> {
        self.probes.active_generation()
    }

    /// The tracking entry of `pid`.
    pub(super) fn entry(&self, pid: u32) -> Option<Tracked> {
        self.lookup(pid).ok()
    }

    /// The tracking entry of `pid`, with why it could not be read.
    pub(super) fn lookup(&self, pid: u32) -> Result<Tracked, MapError> {
        self.probes.tracked.get(&pid, 0)
    }

    /// (pid, entry) of every tracked process.
    pub(super) fn entries(&self) -> Vec<(u32, Tracked)> {
        self.probes.tracked.iter().filter_map(|r| r.ok()).collect()
    }

    /// Task ids that still have a live (tracked) process.
    pub(super) fn live_tasks(&self) -> HashSet<u32> {
        self.entries()
            .into_iter()
            .map(|(_, t)| t.task)
            .filter(|&t| t != NO_TASK)
            .collect()
    }

    /// (pid, start) of every process of `task` (NO_TASK: of the tree of `root`).
    pub(super) fn members(&self, task: u32, root: u32) -> Vec<(u32, u64)> {
        self.entries()
            .into_iter()
            .filter(|(_, t)| {
                if task != NO_TASK {
                    t.task == task
                } else {
                    t.root_tgid == root
                }
            })
            .map(|(pid, t)| (pid, t.start_ns))
            .collect()
    }

    /// Writes a tracked entry (`flags`: BPF_ANY, NOEXIST or EXIST), and remembers it as the
    /// state the next check compares against.
    pub(super) fn write(&mut self, pid: u32, entry: Tracked, flags: u64) -> Result<(), MapError> {
        self.probes.tracked.insert(pid, entry, flags)?;
        self.written.insert(pid, entry);
        Ok(())
    }

    /// Removes the entry of a process that is gone (a stale entry found at take-over).
    pub(super) fn forget(&mut self, pid: u32) {
        let _ = self.probes.tracked.remove(&pid);
        self.written.remove(&pid);
    }

    /// Puts a task's compiled scope into the rule maps (replacing what it had there).
    pub(super) fn install_scope(&mut self, task: u32, c: &Compiled) -> Result<(), MapsError> {
        self.probes.rules.install(task, c)
    }

    /// Removes a task's (or an orphan owner's) entries from the rule maps.
    pub(super) fn remove_scope(&mut self, owner: u32) {
        self.probes.rules.remove(owner);
    }

    /// Owners of entries in the rule maps.
    pub(super) fn rule_owners(&self) -> Vec<u32> {
        self.probes.rules.owners().collect()
    }

    /// Puts the rules' posture, guardrails and the guardrails of guard sets `sets` in force.
    pub(super) fn install_rules(
        &mut self,
        rules: &Rules,
        sets: &std::collections::BTreeSet<u32>,
    ) -> Result<(), contain::InstallError> {
        contain::install_rules(&mut self.probes.rules, rules, sets)
    }

    /// pod cgroup ids in the pod guard map.
    pub(super) fn pod_guard_cgroups(&self) -> Vec<u64> {
        self.probes.pod_guards.keys().filter_map(|k| k.ok()).collect()
    }

    /// Puts a pod cgroup's guard set (0: removes it).
    pub(super) fn set_pod_guard(&mut self, cgroup: u64, set: u32) -> Result<(), MapError> {
        if set == 0 {
            self.probes.pod_guards.remove(&cgroup)
        } else {
            self.probes.pod_guards.insert(cgroup, set, 0)
        }
    }

    /// Puts the pod selectors' bits for a pod cgroup, merged with the rule files' (0 and
    /// none there: removes it).
    pub(super) fn set_pod_selection(&mut self, cgroup: u64, mask: u64) -> Result<(), MapError> {
        let value = self.probes.static_cgroups.get(&cgroup).copied().unwrap_or(0) | mask;
        if value == 0 {
            self.probes.select_cgroup.remove(&cgroup)
        } else {
            self.probes.select_cgroup.insert(cgroup, value, 0)
        }
    }

    /// Sum over CPUs of each loss/error counter, in agent_common::counter order.
    pub(super) fn counters(&self) -> [u64; counter::COUNT as usize] {
        self.probes.counters()
    }

    /// The counters as last reported (kept across a restart with `--persist`).
    pub(super) fn reported(&self) -> &[u64] {
        &self.reported
    }

    /// Takes the previous daemon's reported counters as this one's (same layout only).
    pub(super) fn restore_reported(&mut self, counters: &[u64]) {
        if counters.len() == self.reported.len() {
            self.reported.copy_from_slice(counters);
        }
    }

    /// The counters that moved since they were last reported, now reported.
    pub(super) fn moved(&mut self) -> Vec<Moved> {
        let now = self.counters();
        let moved = now
            .iter()
            .zip(self.reported.iter())
            .enumerate()
            .filter(|(_, (n, before))| n > before)
            .map(|(i, (&n, &before))| Moved {
                index: i as u32,
                name: loader::counter_name(i as u32),
                new: n - before,
                total: n,
            })
            .collect();
        self.reported = now;
        moved
    }

    /// The programs the kernel skipped calls of since last reported (where it counts them).
    pub(super) fn newly_skipped(&mut self) -> Vec<Skipped> {
        grown(&mut self.skipped, self.probes.skipped())
    }

    /// Mismatches found and repaired since the start.
    pub(super) fn repaired(&self) -> u64 {
        self.repaired
    }

    /// Compares the kernel state with what the daemon wrote and repairs it; what was found
    /// (for the tamper alerts). `valid`: is a task's credential valid now (a credential revoked
    /// or ended since stays so in a restored entry).
    pub(super) fn check(
        &mut self,
        rules: &Rules,
        valid: impl Fn(u32) -> bool,
        ticks_per_sec: u64,
    ) -> Vec<(String, Tamper)> {
        let mut found: Vec<(String, Tamper)> = Vec::new();
        match self.probes.active_generation() {
            Some(g) if g == self.generation => {}
            other => {
                found.push((
                    format!(
                        "the acting generation was {other:?}, not this daemon's {}",
                        self.generation
                    ),
                    Tamper {
                        found: Some(other),
                        want: Some(self.generation),
                        ..Tamper::map("ACTIVE")
                    },
                ));
                if let Err(e) = self.probes.activate(self.generation) {
                    error!("restoring the acting generation: {e}");
                }
            }
        }
        let (posture, guards) = compile::verdicts(rules);
        if !self.probes.rules.verdicts_hold(&posture, &guards) {
            found.push((
                "the posture or guardrail verdicts differ from the rules in force".into(),
                Tamper::map("POSTURE/GUARD_VERDICTS"),
            ));
            if let Err(e) = self.probes.rules.set_verdicts(&posture, &guards) {
                error!("restoring the verdicts: {e}");
            }
        }
        let now: HashMap<u32, Tracked> = self.entries().into_iter().collect();
        let mut restored = Vec::new();
        for (pid, t) in &self.written {
            if now.contains_key(pid) || !still_running(*pid, t, ticks_per_sec) {
                continue;
            }
            // As the task stands now: a credential revoked or ended since stays so.
            let mut entry = *t;
            if entry.task != agent_common::NO_TASK && !valid(entry.task) {
                entry.expires_ns = 1;
            }
            // BPF_NOEXIST: an entry the kernel or the daemon made meanwhile is not overwritten.
            match self.probes.tracked.insert(*pid, entry, 1) {
                Ok(()) => restored.push((*pid, entry)),
                Err(_) if self.entry(*pid).is_some() => continue,
                Err(e) => error!(pid, "restoring a tracked entry: {e}"),
            }
            found.push((
                format!(
                    "the tracked entry of process {pid} (task {}) was removed while it runs",
                    t.task
                ),
                Tamper {
                    pid: Some(*pid),
                    task: Some(t.task),
                    root_pid: Some(t.root_tgid),
                    ..Tamper::map("TRACKED")
                },
            ));
        }
        // Entries rewritten behind the daemon's back (the kernel only adds entries at fork and
        // exec and removes them at exit; every change of the daemon's is remembered).
        let fields = |t: &Tracked| (t.root_tgid, t.task, t.guard_set, t.expires_ns);
        let mut now = now;
        for (pid, want) in &self.written {
            // Another process under a reused pid is another entry, not a rewrite.
            let Some(got) = now.get(pid).copied().filter(|g| g.start_ns == want.start_ns) else {
                continue;
            };
            if fields(&got) == fields(want) {
                continue;
            }
            if let Err(e) = self.probes.tracked.insert(*pid, *want, 2) {
                error!(pid, "restoring a rewritten tracked entry: {e}");
                continue;
            }
            now.insert(*pid, *want);
            found.push((
                format!(
                    "the tracked entry of process {pid} was rewritten (task {} -> {}, guard set {} -> {}, expiry {} -> {})",
                    want.task, got.task, want.guard_set, got.guard_set, want.expires_ns, got.expires_ns
                ),
                Tamper {
                    pid: Some(*pid),
                    task: Some(want.task),
                    found_task: Some(got.task),
                    ..Tamper::map("TRACKED")
                },
            ));
        }
        self.written = now;
        self.written.extend(restored);
        self.repaired += found.len() as u64;
        found
    }
}

/// Is `pid` still the process `t` was made for (same start time), and not exiting? One read
/// of /proc/PID/stat.
fn still_running(pid: u32, t: &Tracked, ticks_per_sec: u64) -> bool {
    const PF_EXITING: u32 = 0x4;
    let Ok(stat) = procfs::process::Process::new(pid as i32).and_then(|p| p.stat()) else {
        return false;
    };
    // Exiting (its entry goes at the exit tracepoint, before it is a zombie) ...
    if stat.flags & PF_EXITING != 0 {
        return false;
    }
    // ... or reaped; a zombie leader whose other threads still run is still running.
    if matches!(stat.state, 'Z' | 'X') && stat.num_threads <= 1 {
        return false;
    }
    ticks_to_ns(stat.starttime, ticks_per_sec).abs_diff(t.start_ns) < 2 * 1_000_000_000 / ticks_per_sec.max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_programs_whose_skipped_calls_grew_are_reported_once() {
        let counts = |v: &[(&str, u64)]| v.iter().map(|(p, n)| (p.to_string(), *n)).collect::<BTreeMap<_, _>>();
        let mut reported = counts(&[("file_open", 2), ("connect4", 0)]);
        let got = grown(
            &mut reported,
            counts(&[("file_open", 5), ("connect4", 0), ("new_prog", 1)]),
        );
        let got: Vec<(&str, u64, u64)> = got.iter().map(|s| (s.program.as_str(), s.new, s.total)).collect();
        assert_eq!(got, [("file_open", 3, 5), ("new_prog", 1, 1)]);
        // Reported: the same counts again are nothing new.
        assert!(grown(&mut reported, counts(&[("file_open", 5), ("new_prog", 1)])).is_empty());
    }
}
