//! What the event loop does between events, on timers and on news from its workers: adopting
//! running agents, following pod changes, forgetting ended tasks, re-resolving scope host
//! names, reporting kernel losses and checking the kernel state for tampering.
use crate::ocsf::Concluded;
use agent_common::counter;
use tracing::{error, info, warn};

use super::Daemon;
use crate::{
    credentials::{
        Resolved,
        revocations::{ListError, Revocations},
    },
    lineage::Reason,
    ocsf::objects::Details,
    pods::kube::PodChange,
    selectors::Candidate,
};

impl Daemon {
    /// Adopts running processes `select` picks, with their descendants.
    pub(super) fn adopt(&mut self, select: impl Fn(&Self, &Candidate) -> bool) {
        // Twice: a child forked by an adopted process between the scan and its insertion is
        // caught by the second pass (after insertion the kernel tracks new children itself).
        for _ in 0..2 {
            let (pids, ppid_of) = self.tracking.candidates(|c| select(self, c));
            for pid in pids {
                if self.tracking.knows(pid) {
                    continue;
                }
                // The root of an adopted tree is its topmost adopted ancestor.
                let root = self.tracking.adopted_root(pid, &ppid_of);
                match self.track(pid, Reason::Adopted, root) {
                    Ok(()) => info!(pid, "adopted running agent process"),
                    Err(e) => warn!(pid, "could not adopt: {e}"),
                }
            }
        }
    }

    /// Does a selector make `c` an agent (its pod taken into account)?
    pub(super) fn selected(&self, c: &Candidate) -> bool {
        self.tracking.selectors().matching(&self.pods.with_pod(c)).is_some()
    }

    /// A pod changed: the guardrails' and the pod selectors' cgroups in the kernel follow,
    /// and the running processes of a newly selected pod are adopted.
    pub(super) fn pod_changed(&mut self, change: Option<PodChange>) {
        self.pods
            .guards_changed(change.as_ref(), &mut self.kernel, self.rulebook.rules());
        for pod in self.pods.selection_changed(change.as_ref(), &mut self.kernel) {
            info!(namespace = %pod.namespace, pod = %pod.name, uid = %pod.uid, "pod selected by an agent selector");
            self.adopt(|d, c| {
                let c = d.pods.with_pod(c);
                c.pod.as_ref().is_some_and(|p| p.uid == pod.uid) && d.tracking.selectors().matching(&c).is_some()
            });
        }
    }

    /// Revocation list `index` was read: the tasks it names are cut off in the kernel now.
    pub(super) fn listed(&mut self, index: usize, read: Result<Revocations, ListError>) {
        let (revoked, failure) = self.tasks.listed(index, read);
        if let Some(e) = failure {
            warn!("revocation list (keeping the last one read): {e}");
        }
        self.cut_off(&revoked);
        for id in &revoked {
            let jti = self.tasks.get(*id).map(|t| t.jti().to_string()).unwrap_or_default();
            info!(jti = %jti, task = id, "task revoked: on a revocation list");
        }
        if !revoked.is_empty() {
            self.save_state();
        }
    }

    /// A worker resolved the host names of task `id`'s scope: the kernel's scope follows.
    pub(super) fn resolved(&mut self, id: u32, hosts: Resolved) {
        if self.tasks.resolved(id, hosts)
            && let Err(e) = self.install_scope(id)
        {
            error!(task = id, "updating the kernel's scope after host-name resolution: {e}");
        }
    }

    /// Periodic: re-resolves scope host names, forgets ended tasks without processes.
    pub(super) fn refresh_tasks(&mut self) {
        let live = self.kernel.live_tasks();
        for gone in self.tasks.collect(|id| live.contains(&id)) {
            self.kernel.remove_scope(gone);
        }
        let (kernel, tasks) = (&self.kernel, &self.tasks);
        self.sandboxes.prune(|| kernel.entries(), |id| tasks.get(id).is_some());
        // Scopes a previous daemon installed for tasks this one could not restore: kept while
        // a process still carries the task.
        let orphans: Vec<u32> = self.orphan_owners().into_iter().filter(|o| !live.contains(o)).collect();
        for o in orphans {
            self.kernel.remove_scope(o);
        }
        self.save_state();
        self.tasks.resolve_all();
    }

    /// Task owners in the rule maps that no task of this daemon claims (scopes a previous
    /// daemon installed for tasks that could not be restored).
    pub(super) fn orphan_owners(&self) -> Vec<u32> {
        self.kernel
            .rule_owners()
            .into_iter()
            .filter(|o| {
                *o < agent_common::contain::EXEMPT
                    && agent_common::contain::guard_set_of_owner(*o).is_none()
                    && self.tasks.get(*o).is_none()
            })
            .collect()
    }

    /// Periodic: kernel-side losses and errors since the last look, counted and alerted.
    pub(super) fn check_counters(&mut self) {
        let before = self.kernel.reported().to_vec();
        let moved = self.kernel.moved();
        for m in &moved {
            self.metrics.kernel_loss(&m.name, m.new);
            warn!(counter = %m.name, total = m.total, new = m.new, "kernel-side loss or error");
            // Losses (a full ring buffer or map) and actions the kernel could not judge
            // are alerted; read errors leave a field empty in an event that is still
            // delivered: metric and log only.
            let (kind, concluded, what) = match m.index {
                counter::READ_ERROR => continue,
                counter::TAMPER => (
                    "tamper",
                    Concluded::Refused,
                    "tracked processes reached for Tether itself (bpf(2), a signal or ptrace-family access to the daemon, ptrace of an untracked process) and were refused",
                ),
                counter::UNJUDGED => (
                    "unjudged-actions",
                    Concluded::Logged,
                    "the kernel could not judge these actions; their verdict was the unjudged posture",
                ),
                counter::TRACKED_FULL | counter::PENDING_FULL => (
                    "events-lost",
                    Concluded::Logged,
                    "a kernel map was full; the calls it could not hold were judged as unjudged",
                ),
                _ => (
                    "events-lost",
                    Concluded::Logged,
                    "records did not fit in their ring; the verdicts still applied",
                ),
            };
            let reason = format!("kernel-side: {} +{} (total {}); {what}", m.name, m.new, m.total);
            let hook = m.index.checked_sub(counter::LOST).and_then(agent_common::hook::name);
            self.emitter.system(
                kind,
                concluded,
                &reason,
                Details::KernelCounter {
                    kernel_counter: m.name.clone(),
                    hook,
                    new: m.new,
                    total: m.total,
                },
            );
        }
        for k in self.kernel.newly_skipped() {
            let name = format!("skipped:{}", k.program);
            self.metrics.kernel_loss(&name, k.new);
            warn!(program = %k.program, total = k.total, new = k.new, "the kernel skipped calls of a program");
            let reason = format!(
                "kernel-side: {name} +{} (total {}); the kernel ran {} for none of these calls (its recursion guard: the program was already running on that CPU), so nobody judged them",
                k.new, k.total, k.program
            );
            self.emitter.system(
                "unjudged-actions",
                Concluded::Logged,
                &reason,
                Details::KernelCounter {
                    kernel_counter: name,
                    hook: None,
                    new: k.new,
                    total: k.total,
                },
            );
        }
        if before != self.kernel.reported() {
            self.save_state();
        }
        self.metrics.tracked_processes.set(self.tracking.len() as i64);
        self.metrics.live_tasks.set(self.tasks.count() as i64);
    }

    /// Periodic: the kernel state the daemon owns, compared with what it wrote; repaired and
    /// alerted.
    pub(super) fn check_integrity(&mut self) {
        let tasks = &self.tasks;
        let found = self.kernel.check(
            self.rulebook.rules(),
            |id| tasks.valid(id),
            self.tracking.ticks_per_sec(),
        );
        for (reason, details) in found {
            warn!("tamper: {reason}; repaired");
            self.emitter.system(
                "tamper",
                Concluded::Corrected,
                &format!("Tether's kernel state was changed: {reason}; repaired"),
                Details::Tamper(details),
            );
        }
    }
}
