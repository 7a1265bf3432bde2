//! The kernel state the daemon owns, checked on a timer (every [`CHECK_EVERY`]) against what
//! it wrote: the generation that acts, the posture and guardrail verdicts, and the tracked
//! entries of agent processes that still run. A root process that reaches the maps through
//! bpf(2) where no LSM hook refuses it (kernels without BPF LSM, an agent not under `tether
//! exec`'s seccomp filter) can delete its entry or rewrite a verdict; the daemon puts back
//! what it finds changed and raises a `tamper` alert for each. Between the change and the check
//! the change holds: after the fact, and said so.
use std::{collections::HashMap, time::Duration};

use agent_common::Tracked;
use tracing::{error, warn};

use super::Daemon;
use crate::{
    contain::compile,
    credentials::tasks::CredState,
    lineage::ticks_to_ns,
    ocsf::objects::{Details, Tamper},
};

pub(super) const CHECK_EVERY: Duration = Duration::from_secs(2);

/// What the daemon saw of its kernel state at the last check.
#[derive(Debug, Default)]
pub(super) struct Integrity {
    /// The tracked entries at the last check.
    entries: HashMap<u32, Tracked>,
    /// Mismatches found and repaired, in all.
    pub repaired: u64,
}

impl Daemon {
    /// Writes a tracked entry (`flags`: BPF_ANY, NOEXIST or EXIST), and remembers it as the
    /// state the next check compares against. Every write of the daemon goes through here.
    pub(super) fn write_tracked(&mut self, pid: u32, entry: Tracked, flags: u64) -> Result<(), aya::maps::MapError> {
        self.probes.tracked.insert(pid, entry, flags)?;
        self.integrity.entries.insert(pid, entry);
        Ok(())
    }

    /// Compares the kernel state with what the daemon wrote; repairs and alerts.
    pub(super) fn check_integrity(&mut self) {
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
        let (posture, guards) = compile::verdicts(self.rulebook.rules());
        if !self.probes.rules.verdicts_hold(&posture, &guards) {
            found.push((
                "the posture or guardrail verdicts differ from the rules in force".into(),
                Tamper::map("POSTURE/GUARD_VERDICTS"),
            ));
            if let Err(e) = self.probes.rules.set_verdicts(&posture, &guards) {
                error!("restoring the verdicts: {e}");
            }
        }
        let now: HashMap<u32, Tracked> = self.kernel_entries().into_iter().collect();
        let mut restored = Vec::new();
        for (pid, t) in &self.integrity.entries {
            if now.contains_key(pid) || !still_running(*pid, t, self.ticks_per_sec) {
                continue;
            }
            // As the task stands now: a credential revoked or ended since stays so.
            let mut entry = *t;
            let valid = |id: u32| {
                self.tasks
                    .get(id)
                    .is_some_and(|task| task.state(crate::credentials::now_epoch(), false) == CredState::Valid)
            };
            if entry.task != agent_common::NO_TASK && !valid(entry.task) {
                entry.expires_ns = 1;
            }
            // BPF_NOEXIST: an entry the kernel or the daemon made meanwhile is not overwritten.
            match self.probes.tracked.insert(*pid, entry, 1) {
                Ok(()) => restored.push((*pid, entry)),
                Err(_) if self.kernel_entry(*pid).is_some() => continue,
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
        for (pid, want) in &self.integrity.entries {
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
        self.integrity.entries = now;
        self.integrity.entries.extend(restored);
        for (reason, details) in found {
            self.integrity.repaired += 1;
            warn!("tamper: {reason}; repaired");
            self.emitter.system(
                "tamper",
                &format!("Tether's kernel state was changed: {reason}; repaired"),
                Details::Tamper(details),
            );
        }
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
