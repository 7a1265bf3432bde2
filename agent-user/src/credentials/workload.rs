//! The identity check: where the workload a process runs as is known (its pod's service
//! account, as the SPIFFE ID `spiffe://TRUST-DOMAIN/ns/NAMESPACE/sa/ACCOUNT`, the form SPIRE's
//! Kubernetes workload registrar and Istio give it), a credential whose current actor (the
//! outermost `act`, else `sub`) names another workload is refused or alerted, as the rule
//! files say (`workload_identity: {trust_domain: ..., actor_must_match: refuse|alert|off}`).
//! A process in a pod the daemon does not know yet cannot be checked: refused under
//! `refuse`, alerted under `alert`. A process in no pod has no workload identity here and is
//! not checked. Pure.
use serde::Deserialize;

use crate::model::PodMeta;

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum MustMatch {
    Refuse,
    Alert,
    #[default]
    Off,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkloadCheck {
    pub trust_domain: String,
    pub must_match: MustMatch,
}

/// Where the process binding a credential runs, as far as the daemon knows.
#[derive(Debug, Clone, Copy)]
pub enum Workload<'a> {
    /// In no pod (or pod identity is off).
    None,
    /// In a pod the daemon's cache does not know (yet).
    UnknownPod(&'a str),
    Pod(&'a PodMeta),
}

/// What the check found.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Mismatch {
    #[error("the current actor {actor:?} is not this process's workload {workload:?}")]
    Other { actor: String, workload: String },
    #[error("the process runs in pod {0}, which the daemon does not know yet: its workload cannot be checked")]
    Unknown(String),
}

/// The SPIFFE ID of a pod's service account.
pub fn spiffe_id(trust_domain: &str, pod: &PodMeta) -> String {
    format!(
        "spiffe://{trust_domain}/ns/{}/sa/{}",
        pod.namespace, pod.service_account
    )
}

impl WorkloadCheck {
    /// Checks `actor` against where it runs; Ok where nothing is to be said.
    pub fn check(&self, actor: &str, at: Workload) -> Result<(), Mismatch> {
        if self.must_match == MustMatch::Off {
            return Ok(());
        }
        match at {
            Workload::None => Ok(()),
            Workload::UnknownPod(uid) => Err(Mismatch::Unknown(uid.to_string())),
            Workload::Pod(p) => {
                let workload = spiffe_id(&self.trust_domain, p);
                if actor == workload {
                    Ok(())
                } else {
                    Err(Mismatch::Other {
                        actor: actor.to_string(),
                        workload,
                    })
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod() -> PodMeta {
        PodMeta {
            namespace: "agents".into(),
            name: "coder-7d9c".into(),
            uid: "u1".into(),
            labels: Default::default(),
            service_account: "coding-agent".into(),
        }
    }

    #[test]
    fn the_actor_must_be_the_pods_service_account() {
        let check = |m| WorkloadCheck {
            trust_domain: "cluster.local".into(),
            must_match: m,
        };
        let p = pod();
        let me = "spiffe://cluster.local/ns/agents/sa/coding-agent";
        assert_eq!(spiffe_id("cluster.local", &p), me);
        let c = check(MustMatch::Refuse);
        assert_eq!(c.check(me, Workload::Pod(&p)), Ok(()));
        for other in [
            "spiffe://cluster.local/ns/agents/sa/reviewer",
            "spiffe://other.td/ns/agents/sa/coding-agent",
            "service-account-coder",
            "spiffe://cluster.local/ns/agents/sa/coding-agent/",
        ] {
            assert!(
                matches!(c.check(other, Workload::Pod(&p)), Err(Mismatch::Other { .. })),
                "{other}"
            );
        }
        assert_eq!(
            c.check(me, Workload::UnknownPod("u9")),
            Err(Mismatch::Unknown("u9".into()))
        );
        assert_eq!(c.check("anyone", Workload::None), Ok(()));
        assert_eq!(check(MustMatch::Off).check("anyone", Workload::Pod(&p)), Ok(()));
    }
}
