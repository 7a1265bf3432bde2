//! `tether exec`'s sandbox: what the daemon sends with every registration or binding made
//! through it ([`Plan`]), applied by `tether exec` to itself just before it execs the agent,
//! so the agent and everything it starts run under it for good: Landlock ([`super::landlock`])
//! from the scope and the guardrails, then seccomp ([`super::seccomp`]) for what Landlock
//! cannot express. What was applied ([`Layers`]) goes back to the daemon, which reports it in
//! `tether status` and in every event of the task; a layer the kernel lacks is listed as
//! missing, never skipped silently.
use serde::{Deserialize, Serialize};

use super::{
    landlock::{self, LandlockLayers, LandlockPlan},
    seccomp::{self, SeccompPlan},
};

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Plan {
    pub landlock: LandlockPlan,
    pub seccomp: SeccompPlan,
}

/// The layers in effect for a sandboxed tree.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Layers {
    /// None: the kernel has no Landlock (see `missing`).
    pub landlock: Option<LandlockLayers>,
    /// The calls the seccomp filter refuses (empty: no filter).
    pub seccomp: Vec<String>,
    /// What could not be applied on this kernel, and why.
    pub missing: Vec<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum SandboxError {
    #[error(transparent)]
    Landlock(#[from] landlock::LandlockError),
    #[error(transparent)]
    Seccomp(#[from] seccomp::SeccompError),
    #[error("the task's scope restricts {0}, which needs Landlock, and this kernel has none ({1})")]
    NoLandlock(&'static str, crate::features::ProbeError),
}

/// Applies `plan` to the calling process. Fails (and the agent is not run) when a restriction
/// of the scope that only Landlock holds before the effect cannot be applied; a layer that only
/// adds to what the kernel probes hold is reported missing instead.
pub fn apply(plan: &Plan) -> Result<Layers, SandboxError> {
    let mut layers = Layers::default();
    match crate::features::landlock_abi() {
        Ok(abi) => {
            let l = landlock::apply(&plan.landlock, abi)?;
            layers.missing.extend(l.missing.iter().map(|m| format!("landlock {m}")));
            layers.landlock = Some(l);
        }
        Err(why) => {
            if plan.landlock.write.is_some() {
                return Err(SandboxError::NoLandlock("writes", why));
            }
            if plan.landlock.exec.is_some() {
                return Err(SandboxError::NoLandlock("execs", why));
            }
            layers.missing.push(format!("landlock: {why}"));
        }
    }
    layers.seccomp = seccomp::apply(&plan.seccomp)?.into_iter().map(String::from).collect();
    Ok(layers)
}

impl Layers {
    /// One line for `tether status`.
    pub fn summary(&self) -> String {
        let mut parts = Vec::new();
        match &self.landlock {
            Some(l) => {
                let mut what = Vec::new();
                for (on, name) in [
                    (l.write, "write"),
                    (l.exec, "exec"),
                    (l.connect, "connect"),
                    (l.bind, "bind"),
                ] {
                    if on {
                        what.push(name.to_string());
                    }
                }
                what.extend(l.scopes.iter().map(|s| format!("scope:{s}")));
                parts.push(format!("landlock ABI {} ({})", l.abi, what.join(", ")));
            }
            None => parts.push("no landlock".into()),
        }
        if !self.seccomp.is_empty() {
            parts.push(format!("seccomp ({} calls refused)", self.seccomp.len()));
        }
        if !self.missing.is_empty() {
            parts.push(format!("missing: {}", self.missing.join("; ")));
        }
        parts.join(", ")
    }
}
