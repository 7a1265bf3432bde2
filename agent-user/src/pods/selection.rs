//! Pod criteria (`namespace`, `pod_labels`) in the kernel: the kernel knows pods only by their
//! cgroups, so each pod on this node that a criterion matches has its pod cgroup put in a
//! kernel map with that criterion's bit, and taken out when the pod goes or stops matching.
//! Two uses: agent selectors (the cgroup selector map: the kernel matches agents at exec) and
//! guardrails' `pods:` (the pod guard map: the guard set of the processes of the pod). Pure
//! bookkeeping: the daemon finds cgroups, writes the maps and adopts processes.
use std::{
    collections::{BTreeMap, HashMap},
    sync::Arc,
};

use super::kube::{PodChange, PodMeta};
use crate::{
    policy::engine::{PodMatch, Rules},
    selectors::CompiledSelectors,
};

/// What the kernel map needs after a change: cgroup id -> the pod selectors' mask for it
/// (0: no pod selector's bit any more).
pub type Updates = BTreeMap<u64, u64>;

#[derive(Debug, Default)]
pub struct PodSelection {
    /// (bit, criteria) of the selectors with pod criteria, or of the guardrails' pod matchers.
    selectors: Vec<(u64, PodMatch)>,
    /// Pod UID -> (its pod cgroup id, mask written for it).
    placed: HashMap<String, (u64, u64)>,
    /// Matching pods whose cgroup did not exist yet (the kubelet creates it when it starts
    /// the pod): tried again by [`PodSelection::retry`].
    pending: HashMap<String, (Arc<PodMeta>, u64)>,
}

impl PodSelection {
    pub fn new(all: &CompiledSelectors) -> PodSelection {
        PodSelection {
            selectors: all
                .list
                .iter()
                .enumerate()
                .filter(|(_, s)| s.by_pod())
                .map(|(i, s)| {
                    (
                        1u64 << i,
                        PodMatch {
                            namespace: s.namespace.clone(),
                            pod_labels: s.pod_labels.clone(),
                        },
                    )
                })
                .collect(),
            ..PodSelection::default()
        }
    }

    /// The guardrails' pod matchers: a pod's mask is its guard set.
    pub fn guards(rules: &Rules) -> PodSelection {
        PodSelection {
            selectors: rules
                .pod_matchers()
                .iter()
                .enumerate()
                .map(|(i, m)| (1u64 << i, m.clone()))
                .collect(),
            ..PodSelection::default()
        }
    }

    /// The masks placed now: pod cgroup id -> mask.
    pub fn placed(&self) -> impl Iterator<Item = (u64, u64)> + '_ {
        self.placed.values().copied()
    }

    /// Are there pod selectors at all?
    pub fn is_empty(&self) -> bool {
        self.selectors.is_empty()
    }

    /// The mask of pod selectors `pod` matches.
    pub fn mask_of(&self, pod: &PodMeta) -> u64 {
        self.selectors
            .iter()
            .filter(|(_, s)| s.matches(&pod.namespace, &pod.labels))
            .fold(0, |m, (bit, _)| m | bit)
    }

    pub fn pending(&self) -> usize {
        self.pending.len()
    }

    /// Applies a pod change. `find_cgroup` finds a pod's cgroup id by UID. Returns the kernel
    /// map updates and the pods that became selected (whose running processes the daemon
    /// adopts).
    pub fn apply(
        &mut self,
        change: &PodChange,
        find_cgroup: impl Fn(&str) -> Option<u64>,
    ) -> (Updates, Vec<Arc<PodMeta>>) {
        let (pod, mask) = match change {
            PodChange::Upsert(p) => (p, self.mask_of(p)),
            PodChange::Removed(p) => (p, 0),
        };
        let mut updates = Updates::new();
        let mut selected = Vec::new();
        self.pending.remove(&pod.uid);
        let old = self.placed.get(&pod.uid).copied();
        match (old, mask) {
            (None, 0) => {}
            (Some((cg, _)), 0) => {
                self.placed.remove(&pod.uid);
                updates.insert(cg, 0);
            }
            (Some((cg, was)), m) => {
                if was != m {
                    self.placed.insert(pod.uid.clone(), (cg, m));
                    updates.insert(cg, m);
                    if m & !was != 0 {
                        selected.push(pod.clone());
                    }
                }
            }
            (None, m) => match find_cgroup(&pod.uid) {
                Some(cg) => {
                    self.placed.insert(pod.uid.clone(), (cg, m));
                    updates.insert(cg, m);
                    selected.push(pod.clone());
                }
                None => {
                    self.pending.insert(pod.uid.clone(), (pod.clone(), m));
                }
            },
        }
        (updates, selected)
    }

    /// Tries the pending pods' cgroups again.
    pub fn retry(&mut self, find_cgroup: impl Fn(&str) -> Option<u64>) -> (Updates, Vec<Arc<PodMeta>>) {
        let mut updates = Updates::new();
        let mut selected = Vec::new();
        let found: Vec<(String, u64)> = self
            .pending
            .keys()
            .filter_map(|uid| find_cgroup(uid).map(|cg| (uid.clone(), cg)))
            .collect();
        for (uid, cg) in found {
            if let Some((pod, m)) = self.pending.remove(&uid) {
                self.placed.insert(uid, (cg, m));
                updates.insert(cg, m);
                selected.push(pod);
            }
        }
        (updates, selected)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::selectors::Compiled;

    fn pod(uid: &str, ns: &str, labels: &[(&str, &str)]) -> Arc<PodMeta> {
        Arc::new(PodMeta {
            namespace: ns.into(),
            name: format!("pod-{uid}"),
            uid: uid.into(),
            labels: labels.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
            service_account: "default".into(),
        })
    }

    fn selectors() -> CompiledSelectors {
        CompiledSelectors {
            list: vec![
                Compiled {
                    id: "by-comm".into(),
                    comm: ["claude".to_string()].into(),
                    ..Compiled::default()
                },
                Compiled {
                    id: "agents-ns".into(),
                    namespace: ["agents".to_string()].into(),
                    ..Compiled::default()
                },
                Compiled {
                    id: "labelled".into(),
                    pod_labels: [("tether.dev/agent".to_string(), "true".to_string())].into(),
                    ..Compiled::default()
                },
            ],
        }
    }

    #[test]
    fn matching_pods_get_their_cgroup_with_the_selector_bits() {
        let mut s = PodSelection::new(&selectors());
        let cg = |uid: &str| (uid == "u1" || uid == "u2").then_some(100 + uid.len() as u64 + uid.ends_with('2') as u64);
        // In the agents namespace and labelled: bits 1 and 2.
        let p1 = pod("u1", "agents", &[("tether.dev/agent", "true")]);
        let (up, sel) = s.apply(&PodChange::Upsert(p1.clone()), cg);
        assert_eq!(up, [(102, 0b110)].into());
        assert_eq!(sel, vec![p1.clone()]);
        // The same again: nothing to do.
        assert_eq!(s.apply(&PodChange::Upsert(p1.clone()), cg), (Updates::new(), vec![]));
        // Label removed: only the namespace bit stays; nothing newly selected.
        let p1b = pod("u1", "agents", &[]);
        assert_eq!(
            s.apply(&PodChange::Upsert(p1b.clone()), cg),
            ([(102, 0b010)].into(), vec![])
        );
        // Deleted: the bit goes.
        assert_eq!(s.apply(&PodChange::Removed(p1b), cg), ([(102, 0)].into(), vec![]));
        // A pod nothing selects is never looked up.
        let other = pod("u2", "default", &[("tether.dev/agent", "false")]);
        assert_eq!(
            s.apply(&PodChange::Upsert(other), |_| panic!("looked up")),
            (Updates::new(), vec![])
        );
    }

    #[test]
    fn a_pod_without_its_cgroup_yet_waits_for_it() {
        let mut s = PodSelection::new(&selectors());
        let p = pod("u3", "agents", &[]);
        assert_eq!(
            s.apply(&PodChange::Upsert(p.clone()), |_| None),
            (Updates::new(), vec![])
        );
        assert_eq!(s.pending(), 1);
        assert_eq!(s.retry(|_| None), (Updates::new(), vec![]));
        assert_eq!(s.retry(|_| Some(7)), ([(7, 0b010)].into(), vec![p.clone()]));
        assert_eq!(s.pending(), 0);
        // Deleted before its cgroup appeared: forgotten.
        let q = pod("u4", "agents", &[]);
        s.apply(&PodChange::Upsert(q.clone()), |_| None);
        s.apply(&PodChange::Removed(q), |_| None);
        assert_eq!(s.pending(), 0);
    }

    #[test]
    fn without_pod_selectors_there_is_nothing_to_do() {
        let s = PodSelection::new(&CompiledSelectors {
            list: vec![Compiled {
                id: "c".into(),
                comm: ["x".to_string()].into(),
                ..Compiled::default()
            }],
        });
        assert!(s.is_empty());
    }
}
