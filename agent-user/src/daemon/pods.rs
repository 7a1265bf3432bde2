//! The pods component: pod identity (cgroup id -> container and pod, the node's pods from
//! the Kubernetes API), the pod selectors' cgroups in the kernel, and the guardrails with
//! `pods:`.
//!
//! Guardrails with `pods:` in the kernel: each pod on this node that a guardrail's pod matcher
//! meets has its pod cgroup in the kernel's pod guard map with its guard set (a bit per
//! matcher it meets), every tracked process of the pod carries that set, and the kernel judges
//! its actions by the guardrails compiled for that set (those for every agent, and the pod's):
//! see agent_common::contain::guard_owner. Processes get their set when they become tracked
//! (from the pod cgroup, in the kernel at exec; from the daemon when it registers or adopts
//! them) and children inherit it at fork.
use std::{
    collections::{BTreeMap, BTreeSet},
    path::PathBuf,
    sync::Arc,
};

use serde_json::json;
use tracing::{error, info, warn};

use super::kernel::Kernel;
use crate::{
    contain,
    model::{Identity, PodMeta},
    pods::{
        CgroupResolver,
        kube::{KubeStats, PodChange, SharedPods},
        selection::{PodSelection, Updates},
    },
    policy::engine::Rules,
    selectors::{Candidate, CompiledSelectors},
};

/// BPF_EXIST: update an entry only if it is still there (a process that exited meanwhile is
/// not put back).
const UPDATE_EXISTING: u64 = 2;

/// What the daemon sees of the pod watch (its worker owns the rest).
pub(super) struct KubeView {
    pub server: String,
    pub pods: SharedPods,
    pub stats: Arc<KubeStats>,
}

pub(super) struct Pods {
    node: String,
    /// cgroup ids to container and pod.
    resolver: CgroupResolver,
    /// The node's pods (None: no Kubernetes API).
    kube: Option<KubeView>,
    /// The pod selectors' pods ...
    selection: PodSelection,
    /// ... and the guardrails' pod matchers, placed on the pods' cgroups ...
    guards: PodSelection,
    /// ... and whether entries left by a previous daemon were swept after the first list.
    swept: bool,
    /// cgroup id -> the pod selectors' bits written for it (merged with the rule files').
    masks: BTreeMap<u64, u64>,
    cgroup_root: PathBuf,
}

impl Pods {
    pub(super) fn new(node: String, selectors: &CompiledSelectors, rules: &Rules, cgroup_root: PathBuf) -> Pods {
        Pods {
            node,
            resolver: CgroupResolver::open(&cgroup_root),
            kube: None,
            selection: PodSelection::new(selectors),
            guards: PodSelection::guards(rules),
            swept: false,
            masks: BTreeMap::new(),
            cgroup_root,
        }
    }

    /// The pod watch started: pods are known from now on.
    pub(super) fn watch(&mut self, view: KubeView) {
        self.kube = Some(view);
    }

    /// Pod identity is on (the daemon knows the node's pods).
    pub(super) fn on(&self) -> bool {
        self.kube.is_some()
    }

    /// Pods waiting for their cgroup to appear.
    pub(super) fn pending(&self) -> usize {
        self.selection.pending() + self.guards.pending()
    }

    /// **identify**: the node, and the container and pod of a process in cgroup `cgroup_id`.
    pub(super) fn identify(&mut self, cgroup_id: Option<u64>) -> Identity {
        match cgroup_id.filter(|id| *id != 0) {
            Some(id) => {
                let ident = self.resolver.identity(id);
                crate::pods::identity(&self.node, &ident, self.kube.as_ref().map(|k| &k.pods))
            }
            None => Identity {
                node: self.node.clone(),
                ..Default::default()
            },
        }
    }

    /// The pod process `pid` runs in (its cgroup names the pod), for the identity check:
    /// None where it runs in no pod or pod identity is off; the pod's uid alone where the
    /// cache does not know the pod (yet).
    pub(super) fn pod_of(&self, pid: u32) -> Option<Result<Arc<PodMeta>, String>> {
        let KubeView { pods, .. } = self.kube.as_ref()?;
        let cgroup = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).ok()?;
        let path = cgroup.lines().find_map(|l| l.strip_prefix("0::"))?;
        let uid = crate::pods::cgroup_path::parse(path).pod_uid?;
        Some(pods.read().expect("pod cache lock").get_live(&uid).ok_or(uid))
    }

    /// A process `c` as the selectors see it: with its pod, when the node's pods are known.
    pub(super) fn with_pod(&self, c: &Candidate) -> Candidate {
        let mut c = c.clone();
        if let (Some(KubeView { pods, .. }), Some(path)) = (&self.kube, &c.cgroup)
            && let Some(uid) = crate::pods::cgroup_path::parse(path).pod_uid
        {
            c.pod = pods.read().expect("pod cache lock").get_live(&uid);
        }
        c
    }

    /// A pod changed (None: pods waiting for their cgroup are tried again): the pod
    /// selectors' cgroups in the kernel follow. Returns the pods newly selected (their
    /// running processes are to be adopted).
    pub(super) fn selection_changed(&mut self, change: Option<&PodChange>, kernel: &mut Kernel) -> Vec<PodMeta> {
        if self.selection.is_empty() {
            return Vec::new();
        }
        let root = self.cgroup_root.clone();
        let find = |uid: &str| crate::pods::find_pod_cgroup(&root, uid);
        let (updates, selected) = match change {
            Some(c) => self.selection.apply(c, find),
            None => self.selection.retry(find),
        };
        for (cg, mask) in updates {
            match kernel.set_pod_selection(cg, mask) {
                Ok(()) => {
                    if mask == 0 {
                        self.masks.remove(&cg);
                    } else {
                        self.masks.insert(cg, mask);
                    }
                }
                Err(e) => error!(cgroup = cg, "updating the cgroup selector map for a pod: {e}"),
            }
        }
        selected.into_iter().map(|p| (*p).clone()).collect()
    }

    /// `tether status`'s `kubernetes` section.
    pub(super) fn status(&self) -> serde_json::Value {
        use std::sync::atomic::Ordering::Relaxed;
        let lookups_failed = self.resolver.failures.load(Relaxed);
        match &self.kube {
            Some(KubeView {
                server,
                pods,
                stats: st,
            }) => {
                let cache = pods.read().expect("pod cache lock");
                json!({
                    "state": if cache.synced() { "watching" } else { "listing" },
                    "server": server,
                    "pods": cache.len(),
                    "lists": st.lists.load(Relaxed),
                    "watch_events": st.watch_events.load(Relaxed),
                    "errors": st.errors.load(Relaxed),
                    "decode_errors": st.decode_errors.load(Relaxed),
                    "pod_cgroups_selected": self.masks.len(),
                    "pods_waiting_for_cgroup": self.pending(),
                    "pod_cgroups_guarded": self.guards.placed().count(),
                    "cgroup_lookups_failed": lookups_failed,
                })
            }
            None => json!({
                "state": "off",
                "why": "not in a cluster (no KUBERNETES_SERVICE_HOST) and no --kube-api, or --no-kubernetes: events carry container ids and pod UIDs from cgroup paths, without pod names or labels",
                "cgroup_lookups_failed": lookups_failed,
            }),
        }
    }

    /// The guard set process `pid` gets from its pod under `rules` (0: in no pod, or in one
    /// no `pods:` names, or one the daemon does not know yet).
    pub(super) fn guard_set_of(&self, rules: &Rules, pid: u32) -> u32 {
        let c = self.with_pod(&Candidate {
            cgroup: crate::selectors::cgroup_of(pid),
            ..Candidate::default()
        });
        rules.guard_set(c.pod.as_deref().map(|p| (p.namespace.as_str(), &p.labels)))
    }

    /// Every guard set in use: the pods' and the tracked processes'.
    fn guard_sets_in_use(&self, kernel: &Kernel) -> BTreeSet<u32> {
        self.guards
            .placed()
            .map(|(_, set)| set as u32)
            .chain(kernel.entries().into_iter().map(|(_, t)| t.guard_set))
            .filter(|s| *s != 0)
            .collect()
    }

    /// A pod changed (or, with None, pods waiting for their cgroup are tried again).
    pub(super) fn guards_changed(&mut self, change: Option<&PodChange>, kernel: &mut Kernel, rules: &Rules) {
        if self.guards.is_empty() {
            return;
        }
        let root = self.cgroup_root.clone();
        let find = |uid: &str| crate::pods::find_pod_cgroup(&root, uid);
        let (updates, _) = match change {
            Some(c) => self.guards.apply(c, find),
            None => self.guards.retry(find),
        };
        if !updates.is_empty()
            && let Err(e) = self.put_guard_sets(kernel, rules, updates, None)
        {
            error!("pod guardrails: {e}");
        }
        self.sweep(kernel);
    }

    /// Once, after the first pod change: entries of the pod guard map whose cgroup is gone
    /// (pods deleted while no daemon ran, with --persist) are removed. By the cgroup, not by
    /// what this daemon placed: changes of the first list may still be queued.
    fn sweep(&mut self, kernel: &mut Kernel) {
        if self.swept {
            return;
        }
        self.swept = true;
        let stale: Vec<u64> = kernel
            .pod_guard_cgroups()
            .into_iter()
            .filter(|cg| {
                // A removed cgroup's handle is stale (ESTALE, or ENOENT); other errors say
                // nothing.
                self.resolver
                    .path_of(*cg)
                    .is_err_and(|e| matches!(e.raw_os_error(), Some(libc::ESTALE) | Some(libc::ENOENT)))
            })
            .collect();
        for cg in &stale {
            let _ = kernel.set_pod_guard(*cg, 0);
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
    fn put_guard_sets(
        &mut self,
        kernel: &mut Kernel,
        rules: &Rules,
        updates: Updates,
        previous: Option<Vec<u64>>,
    ) -> Result<(), contain::InstallError> {
        let mut sets = self.guard_sets_in_use(kernel);
        sets.extend(updates.values().map(|s| *s as u32).filter(|s| *s != 0));
        kernel.install_rules(rules, &sets)?;
        for old in previous.unwrap_or_default() {
            if !updates.contains_key(&old)
                && let Err(e) = kernel.set_pod_guard(old, 0)
            {
                warn!(cgroup = old, "removing a pod's guard set: {e}");
            }
        }
        for (cg, set) in &updates {
            if let Err(e) = kernel.set_pod_guard(*cg, *set as u32) {
                error!(cgroup = cg, "updating the pod guard map: {e}");
            }
        }
        let mut changed = 0;
        for (pid, mut entry) in kernel.entries() {
            let want = self.guard_set_of(rules, pid);
            if entry.guard_set != want {
                entry.guard_set = want;
                if kernel.write(pid, entry, UPDATE_EXISTING).is_ok() {
                    changed += 1;
                }
            }
        }
        if changed > 0 {
            info!(processes = changed, "pod guardrail sets of tracked processes updated");
        }
        let sets = self.guard_sets_in_use(kernel);
        kernel.install_rules(rules, &sets)
    }

    /// A new set of rules: every pod's guard set is worked out again, and put in force with
    /// the rules (see [`Pods::put_guard_sets`]).
    pub(super) fn reload_guards(&mut self, kernel: &mut Kernel, rules: &Rules) -> Result<(), contain::InstallError> {
        let mut guards = PodSelection::guards(rules);
        let previous: Vec<u64> = self.guards.placed().map(|(cg, _)| cg).collect();
        let mut updates = Updates::new();
        if let Some(KubeView { pods, .. }) = &self.kube {
            let root = self.cgroup_root.clone();
            let live: Vec<_> = pods.read().expect("pod cache lock").live().cloned().collect();
            for pod in live {
                let (u, _) = guards.apply(&PodChange::Upsert(pod), |uid| crate::pods::find_pod_cgroup(&root, uid));
                updates.extend(u);
            }
        }
        self.guards = guards;
        self.put_guard_sets(kernel, rules, updates, Some(previous))
    }
}
