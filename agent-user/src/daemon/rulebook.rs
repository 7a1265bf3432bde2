//! The rules component: the rule files, what they held when last read, the rules compiled from
//! them with the built-in guardrail over Tether's own files, and the mode switched at runtime.
//! Compiling is pure ([`Rulebook::compile`]); the daemon puts a compiled set in force only
//! once the kernel has taken it ([`Rulebook::put`]), so a refused reload keeps the old rules
//! everywhere.
use std::path::PathBuf;

use serde_json::json;
use tracing::warn;

use crate::policy::{
    self, PolicyError,
    engine::{self, ContainmentSpec, Mode, RuleError, Rules, TetherFiles},
};

pub(super) struct Rulebook {
    /// The rules in force.
    rules: Rules,
    /// ... compiled from these, as written in the rule files ...
    spec: ContainmentSpec,
    /// ... with the global mode switched at runtime (None: the files' mode).
    mode_override: Option<Mode>,
    /// The rule files (empty: the built-in default) ...
    files: Vec<PathBuf>,
    /// ... and what they held when last read (see [`super::rules_fingerprint`]).
    seen: Vec<u8>,
    /// Tether's own files and sockets (the built-in guardrail).
    tether: TetherFiles,
}

impl Rulebook {
    /// The rules of `spec` (read from `files`), with the built-in guardrail over `tether`.
    pub(super) fn new(spec: ContainmentSpec, files: Vec<PathBuf>, tether: TetherFiles) -> Result<Rulebook, RuleError> {
        Ok(Rulebook {
            rules: compile(&spec, None, &tether)?,
            spec,
            mode_override: None,
            seen: super::rules_fingerprint(&files),
            files,
            tether,
        })
    }

    pub(super) fn rules(&self) -> &Rules {
        &self.rules
    }

    /// The containment as written in the rule files (without the runtime mode).
    pub(super) fn spec(&self) -> &ContainmentSpec {
        &self.spec
    }

    pub(super) fn tether(&self) -> &TetherFiles {
        &self.tether
    }

    /// Compiles `spec` with the runtime `mode` and the built-in guardrail; nothing changes.
    pub(super) fn compile(&self, spec: &ContainmentSpec, mode: Option<Mode>) -> Result<Rules, RuleError> {
        compile(spec, mode, &self.tether)
    }

    /// Puts `rules` (compiled from `spec` with `mode`) in force.
    pub(super) fn put(&mut self, rules: Rules, spec: ContainmentSpec, mode: Option<Mode>) {
        self.rules = rules;
        self.spec = spec;
        self.mode_override = mode;
    }

    /// Reads the rule files again.
    pub(super) fn read(&mut self) -> Result<ContainmentSpec, PolicyError> {
        self.seen = super::rules_fingerprint(&self.files);
        Ok(policy::load_policy(&self.files)?.containment)
    }

    /// Have the rule files changed since they were last read? (A file refused at reload is
    /// not retried until it changes again.)
    pub(super) fn changed(&self) -> bool {
        super::rules_fingerprint(&self.files) != self.seen
    }

    /// The rules in force, for `tether status` and the API.
    pub(super) fn json(&self) -> serde_json::Value {
        let r = &self.rules;
        let p = r.postures();
        let class = |(a, m): (engine::Action, Mode)| json!({"action": a.as_str(), "mode": m.as_str()});
        json!({
            "mode": r.mode.as_str(),
            "mode_switched_at_runtime": self.mode_override.is_some(),
            "guardrails": r.guardrails().enumerate().map(|(i, (id, a, m, _))| json!({"id": id, "action": a.as_str(), "mode": m.as_str(), "pods": r.guardrail_pods(i)})).collect::<Vec<_>>(),
            "unbound": p.unbound.map(class),
            "expired": class(p.expired),
            "scope": class(p.scope),
        })
    }
}

fn compile(spec: &ContainmentSpec, mode: Option<Mode>, tether: &TetherFiles) -> Result<Rules, RuleError> {
    let mut effective = spec.clone();
    if let Some(m) = mode {
        effective.mode = Some(m);
    }
    effective.tether = tether.clone();
    if let Some(p) = &effective.self_protection {
        warn!(except = ?p.except, mode = ?p.mode, "the rule files narrow the built-in guardrail {:?}", engine::SELF_GUARDRAIL);
    }
    Rules::compile(&effective)
}
