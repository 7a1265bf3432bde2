//! Guardrails with `pods:` in the kernel: each pod on this node that a guardrail's pod matcher
//! meets has its pod cgroup in the kernel's pod guard map with its guard set (a bit per
//! matcher it meets), every tracked process of the pod carries that set, and the kernel judges
//! its actions by the guardrails compiled for that set (those for every agent, and the pod's):
//! see agent_common::contain::guard_owner. Processes get their set when they become tracked
//! (from the pod cgroup, in the kernel at exec; from the daemon when it registers or adopts
//! them) and children inherit it at fork.
use std::collections::BTreeSet;

use tracing::{error, info, warn};

use super::{Daemon, KubeView};
use crate::{
    contain,
    pods::{
        kube::PodChange,
        selection::{PodSelection, Updates},
    },
    policy::engine::Rules,
    selectors::Candidate,
};

/// BPF_EXIST: update an entry only if it is still there (a process that exited meanwhile is
/// not put back).
const UPDATE_EXISTING: u64 = 2;

impl Daemon {
    /// The guard set process `pid` gets from its pod under the rules in force (0: in no pod,
    /// or in one no `pods:` names, or one the daemon does not know yet).
    pub(super) fn guard_set_of_pid(&self, pid: u32) -> u32 {
        self.guard_set_under(self.rulebook.rules(), pid)
    }

    /// The guard set process `pid` gets from its pod under `rules`.
    fn guard_set_under(&self, rules: &Rules, pid: u32) -> u32 {
        let c = self.with_pod(&Candidate {
            cgroup: crate::selectors::cgroup_of(pid),
            ..Candidate::default()
        });
        rules.guard_set(c.pod.as_deref().map(|p| (p.namespace.as_str(), &p.labels)))
    }

    /// Every guard set in use: the pods' and the tracked processes'.
    fn guard_sets_in_use(&self) -> BTreeSet<u32> {
        self.pod_guards
            .placed()
            .map(|(_, set)| set as u32)
            .chain(self.kernel_entries().into_iter().map(|(_, t)| t.guard_set))
            .filter(|s| *s != 0)
            .collect()
    }

    /// A pod changed (or, with None, pods waiting for their cgroup are tried again).
    pub(super) fn pod_guards_changed(&mut self, change: Option<&PodChange>) {
        if self.pod_guards.is_empty() {
            return;
        }
        let root = self.cgroup_root.clone();
        let find = |uid: &str| crate::pods::find_pod_cgroup(&root, uid);
        let (updates, _) = match change {
            Some(c) => self.pod_guards.apply(c, find),
            None => self.pod_guards.retry(find),
        };
        if !updates.is_empty() {
            let rules = self.rulebook.rules().clone();
            if let Err(e) = self.put_guard_sets(&rules, updates, None) {
                error!("pod guardrails: {e}");
            }
        }
        self.sweep_pod_guards();
    }

    /// Once, after the first pod change: entries of the pod guard map whose cgroup is gone
    /// (pods deleted while no daemon ran, with --persist) are removed. By the cgroup, not by
    /// what this daemon placed: changes of the first list may still be queued.
    fn sweep_pod_guards(&mut self) {
        if self.pod_guards_swept {
            return;
        }
        self.pod_guards_swept = true;
        let stale: Vec<u64> = self
            .probes
            .pod_guards
            .keys()
            .filter_map(|k| k.ok())
            .filter(|cg| {
                // A removed cgroup's handle is stale (ESTALE, or ENOENT); other errors say
                // nothing.
                self.resolver
                    .path_of(*cg)
                    .is_err_and(|e| matches!(e.raw_os_error(), Some(libc::ESTALE) | Some(libc::ENOENT)))
            })
            .collect();
        for cg in &stale {
            let _ = self.probes.pod_guards.remove(cg);
        }
        if !stale.is_empty() {
            info!(
                entries = stale.len(),
                "removed pod guard entries of pods whose cgroup is gone"
            );
        }
    }

    /// Puts guard sets in force for `rules`: first the guardrails of every set in use now
    /// and after (so no process is ever judged by a set with no entries), then the pod map
    /// updates and the tracked processes' sets, then the sets no longer used go. `previous`:
    /// the pod map as it was (a reload replaces it whole; None: `updates` are all the change).
    pub(super) fn put_guard_sets(
        &mut self,
        rules: &Rules,
        updates: Updates,
        previous: Option<Vec<u64>>,
    ) -> Result<(), contain::InstallError> {
        let mut sets = self.guard_sets_in_use();
        sets.extend(updates.values().map(|s| *s as u32).filter(|s| *s != 0));
        contain::install_rules(&mut self.probes.rules, rules, &sets)?;
        for old in previous.unwrap_or_default() {
            if !updates.contains_key(&old)
                && let Err(e) = self.probes.pod_guards.remove(&old)
            {
                warn!(cgroup = old, "removing a pod's guard set: {e}");
            }
        }
        for (cg, set) in &updates {
            let res = if *set == 0 {
                self.probes.pod_guards.remove(cg)
            } else {
                self.probes.pod_guards.insert(*cg, *set as u32, 0)
            };
            if let Err(e) = res {
                error!(cgroup = cg, "updating the pod guard map: {e}");
            }
        }
        let mut changed = 0;
        for (pid, mut entry) in self.kernel_entries() {
            let want = self.guard_set_under(rules, pid);
            if entry.guard_set != want {
                entry.guard_set = want;
                if self.write_tracked(pid, entry, UPDATE_EXISTING).is_ok() {
                    changed += 1;
                }
            }
        }
        if changed > 0 {
            info!(processes = changed, "pod guardrail sets of tracked processes updated");
        }
        let sets = self.guard_sets_in_use();
        contain::install_rules(&mut self.probes.rules, rules, &sets)
    }

    /// A new set of rules: every pod's guard set is worked out again, and put in force with
    /// the rules (see [`Daemon::put_guard_sets`]).
    pub(super) fn reload_pod_guards(&mut self, rules: &Rules) -> Result<(), contain::InstallError> {
        let mut guards = PodSelection::guards(rules);
        let previous: Vec<u64> = self.pod_guards.placed().map(|(cg, _)| cg).collect();
        let mut updates = Updates::new();
        if let Some(KubeView { pods, .. }) = &self.kube {
            let root = self.cgroup_root.clone();
            let live: Vec<_> = pods.read().expect("pod cache lock").live().cloned().collect();
            for pod in live {
                let (u, _) = guards.apply(&PodChange::Upsert(pod), |uid| crate::pods::find_pod_cgroup(&root, uid));
                updates.extend(u);
            }
        }
        self.pod_guards = guards;
        self.put_guard_sets(rules, updates, Some(previous))
    }
}
