//! `--persist`: taking over from the daemon before this one, and leaving state for the next
//! (the layout and the hand-over are described in [`crate::persist`]).
use crate::ocsf::Concluded;
use agent_common::{Tracked, track_reason};
use serde_json::json;
use tracing::{error, info, warn};

use super::Daemon;
use crate::{
    lineage::{ProcSource, Reason, ns_to_ticks},
    ocsf::objects::Details,
    persist::{self, Persist, SavedState, StateLock},
    procscan::Procfs,
};

/// What the daemon holds of `--persist`.
pub(super) struct PersistView {
    pub dirs: Persist,
    pub _lock: StateLock,
    /// What the take-over found and did (for `tether status`).
    pub took_over: serde_json::Value,
    /// What the state file last held (it is written only when this changes).
    pub saved: Option<SavedState>,
}

fn reason_of(kernel: u32) -> Reason {
    match kernel {
        track_reason::REGISTERED => Reason::Registered,
        track_reason::SELECTED => Reason::Selected,
        track_reason::INHERITED => Reason::Inherited,
        _ => Reason::Adopted,
    }
}

impl Daemon {
    /// Takes over from the previous daemon (its tasks, the processes the kernel tracked for
    /// it, the loss counters it reported), hands over to this daemon's programs and unpins
    /// the previous generations. Before the event loop starts: the records of the gap, still in
    /// the ring buffer, are read next, with the tasks and processes they name known.
    pub(super) fn take_over(&mut self, saved: Option<SavedState>) {
        let Some(view) = &self.persist else { return };
        let dirs = view.dirs.clone();
        let Some((generation, adopted_maps)) = self.kernel.kept().map(|k| (k.generation, k.adopted_maps)) else {
            return;
        };
        let previous = self.kernel.active_generation().filter(|g| *g != generation);
        let mut report = json!({
            "previous_generation": previous,
            "adopted_maps": adopted_maps,
        });
        if adopted_maps {
            let (restored, failed) = self.restore_tasks(saved.as_ref());
            let (processes, stale) = self.adopt_tracked();
            // Owners in the rule maps that no restored task claims keep their entries (the
            // kernel goes on enforcing that scope) until no tracked process carries them.
            let orphans = self.orphan_owners();
            if let Some(s) = saved.as_ref().filter(|s| s.layout == persist::layout()) {
                self.kernel.restore_reported(&s.counters);
            }
            info!(
                restored,
                failed = failed.len(),
                processes,
                stale,
                "took over from the previous daemon's pinned state"
            );
            report["tasks_restored"] = json!(restored);
            report["tasks_not_restored"] = json!(failed);
            report["processes_adopted"] = json!(processes);
            report["stale_entries_removed"] = json!(stale);
            report["orphan_rule_owners"] = json!(orphans);
        } else if let Some(s) = &saved {
            // New maps: after a reboot (nothing was running) or an upgrade that changed the
            // layout (the old version's programs still run, on maps this one cannot read).
            let reason = format!(
                "the state file's {} task(s) cannot be taken over: the pinned maps of layout {} are {} (this build: layout {}); agents are re-adopted by the selectors only",
                s.tasks.len(),
                s.layout,
                if s.layout == persist::layout() {
                    "gone (a reboot, or `tether unpin`)"
                } else {
                    "another version's"
                },
                persist::layout()
            );
            warn!("{reason}");
            if !s.tasks.is_empty() {
                self.emitter.system(
                    "restart-state-lost",
                    Concluded::Logged,
                    &reason,
                    Details::StateLost {
                        tasks: s.tasks.iter().map(|t| t.id).collect(),
                        layout: s.layout.to_string(),
                    },
                );
            }
        }
        if let Err(e) = self.kernel.activate() {
            // The previous generation goes on acting; this one's programs stay idle. Said,
            // not hidden: nothing is unpinned, so the kernel side keeps working.
            error!("handing over to generation {generation}: {e}; the previous programs stay in charge");
            self.emitter.system(
                "restart-hand-over-failed",
                Concluded::Logged,
                &format!("handing over to generation {generation} failed: {e}"),
                Details::Empty {},
            );
            return;
        }
        info!(generation, previous = ?previous, "programs of this daemon act from now on");
        let mut unpinned = Vec::new();
        let mut foreign_layouts = Vec::new();
        match dirs.entries() {
            Ok(names) => {
                for name in persist::stale(&names, persist::layout(), generation) {
                    if let Some(persist::PinEntry::Maps { layout }) = persist::PinEntry::parse(&name) {
                        foreign_layouts.push(layout);
                    }
                    match dirs.unpin(&name) {
                        Ok(n) => {
                            info!(dir = %dirs.pin_dir.join(&name).display(), pins = n, "unpinned");
                            unpinned.push(name);
                        }
                        Err(e) => error!("unpinning {name}: {e}"),
                    }
                }
            }
            Err(e) => error!("listing {}: {e}", dirs.pin_dir.display()),
        }
        if !foreign_layouts.is_empty() {
            let reason = format!(
                "upgrade across a wire layout change (from {} to {}): the records the previous version's programs wrote while no daemon ran were in its own ring buffer, which this version cannot read; they are lost",
                foreign_layouts.join(", "),
                persist::layout()
            );
            warn!("{reason}");
            self.emitter.system(
                "events-lost",
                Concluded::Logged,
                &reason,
                Details::Layouts {
                    layouts: foreign_layouts,
                },
            );
        }
        report["unpinned"] = json!(unpinned);
        report["generation"] = json!(generation);
        if let Some(v) = &mut self.persist {
            v.took_over = report;
        }
        self.save_state();
    }

    /// Verifies the state file's tasks again, as of when they were first verified, and puts
    /// them back under their ids. Returns how many came back and why the others did not.
    fn restore_tasks(&mut self, saved: Option<&SavedState>) -> (usize, Vec<serde_json::Value>) {
        let Some(saved) = saved else { return (0, vec![]) };
        if saved.layout != persist::layout() {
            return (0, vec![]);
        }
        let mut failed = Vec::new();
        let mut restored = 0;
        for t in &saved.tasks {
            match self.tasks.restore(t) {
                Ok(()) => {
                    if let Err(e) = self.install_scope(t.id) {
                        error!(task = t.id, "restoring the task's scope in the kernel: {e}");
                    }
                    self.tasks.resolve(t.id);
                    restored += 1;
                }
                Err(e) => {
                    let reason = format!(
                        "task {} (pinned by the previous daemon) cannot be verified again: {e}; its processes keep the scope the kernel holds for it, but their events name no credential",
                        t.id
                    );
                    warn!("{reason}");
                    self.emitter.system(
                        "task-not-restored",
                        Concluded::Logged,
                        &reason,
                        Details::Task { task: t.id },
                    );
                    failed.push(json!({"task": t.id, "error": e.to_string()}));
                }
            }
        }
        let tasks = &self.tasks;
        self.sandboxes
            .restore_landlocked(saved.landlocked.iter().copied().filter(|id| tasks.get(*id).is_some()));
        (restored, failed)
    }

    /// Puts the processes of the kernel's (pinned) tracked map into the process table, roots
    /// first; an entry whose process is gone, or whose pid now names another process, is
    /// removed. Returns (adopted, removed).
    fn adopt_tracked(&mut self) -> (usize, usize) {
        let mut entries: Vec<(u32, Tracked)> = self.kernel.entries();
        entries.sort_by_key(|(pid, t)| (*pid != t.root_tgid, *pid));
        let (mut adopted, mut stale) = (0, 0);
        for (pid, t) in entries {
            let snap = Procfs
                .snapshot(pid)
                .filter(|s| t.start_ns == 0 || s.start == ns_to_ticks(t.start_ns, self.tracking.ticks_per_sec()));
            match snap {
                Some(snap) if pid != std::process::id() => {
                    self.tracking
                        .insert(&snap, reason_of(t.reason), (t.root_tgid != pid).then_some(t.root_tgid));
                    adopted += 1;
                }
                _ => {
                    self.kernel.forget(pid);
                    stale += 1;
                }
            }
        }
        (adopted, stale)
    }

    /// Writes the state file when what it would hold changed (tasks, reported counters).
    pub(super) fn save_state(&mut self) {
        let Some(view) = &self.persist else { return };
        let state = SavedState {
            layout: persist::layout().into(),
            generation: self.kernel.kept().map(|k| k.generation).unwrap_or(0),
            counters: self.kernel.reported().to_vec(),
            tasks: self.tasks.saved(),
            landlocked: self.sandboxes.landlocked_tasks(),
        };
        if view.saved.as_ref() == Some(&state) {
            return;
        }
        match view.dirs.save_state(&state) {
            Ok(()) => {
                if let Some(v) = &mut self.persist {
                    v.saved = Some(state);
                }
            }
            Err(e) => {
                self.metrics.state_write_errors.inc();
                error!("writing the state file: {e}; a restart now would not know the tasks bound since");
            }
        }
    }

    /// `tether status`'s `persist` section.
    pub(super) fn persist_status(&self) -> serde_json::Value {
        match (&self.persist, self.kernel.kept()) {
            (Some(v), Some(k)) => json!({
                "pin_dir": v.dirs.pin_dir,
                "state_file": v.dirs.state_file(),
                "layout": persist::layout(),
                "generation": k.generation,
                "pinned": k.pinned,
                "not_pinned": k.not_pinned,
                "took_over": v.took_over,
            }),
            _ => {
                json!({"enabled": false, "note": "every probe goes with the daemon's process (run with --persist to keep them)"})
            }
        }
    }
}
