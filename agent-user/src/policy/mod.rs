//! Rule files: which processes are agents (selectors by executable path, comm, uid and cgroup),
//! which credential issuers are trusted, and the containment rules. Parsed strictly (unknown keys are errors,
//! with file:line), validated at load.
use std::{
    collections::{BTreeMap, BTreeSet},
    path::Path,
};

use serde::Deserialize;

use crate::{
    credentials::{
        carriers::{BookError, ScopeBook, Unknown},
        revocations::{self, ListConfig},
        scope::ScopeSpec,
        trust::Trust,
        workload::{MustMatch, WorkloadCheck},
    },
    selectors::{self, Selector, UserRef},
};

pub mod engine;
pub mod fixtures;

use engine::{ActionSpec, ContainmentSpec, GuardrailSpec, Mode, Rules};

/// The default rules, built into the binary (policies/default.yaml).
pub const DEFAULT_POLICY: &str = include_str!("../../../policies/default.yaml");
pub const DEFAULT_POLICY_NAME: &str = "policies/default.yaml (built in)";

#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    #[error("{file}: cannot read: {source}")]
    Read { file: String, source: std::io::Error },
    #[error("{file}:{line}:{column}: {message}")]
    Syntax {
        file: String,
        line: usize,
        column: usize,
        message: String,
    },
    #[error("{file}: {message}")]
    Invalid { file: String, message: String },
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PolicyFile {
    version: u32,
    #[serde(default)]
    agents: Vec<AgentSelector>,
    /// Trusted credential issuers: `- {issuer: ISS, jwks: FILE-or-https-URL-or-discover}`
    /// or SPIFFE trust domains `- {trust_domain: DOMAIN, bundle: FILE-or-https-URL}`, each
    /// with what its tokens must be.
    #[serde(default)]
    trust: Vec<TrustEntry>,
    /// Scope bundles named by the values of an OAuth `scope` claim.
    #[serde(default)]
    scopes: BTreeMap<String, ScopeSpec>,
    /// A `scope` value that names no bundle: refuse (default) or ignore.
    #[serde(default)]
    unknown_scopes: Option<Unknown>,
    /// Scopes bound to identities (the current actor), for credentials that carry none.
    #[serde(default)]
    identities: BTreeMap<String, ScopeSpec>,
    /// Revocation lists (task ids and transactions), each read again every `every` seconds.
    #[serde(default)]
    revocations: Vec<RevocationEntry>,
    /// The identity check: a credential's current actor against the pod's service account.
    #[serde(default)]
    workload_identity: Option<WorkloadEntry>,
    /// observe | enforce, for every rule that does not set its own.
    #[serde(default)]
    mode: Option<Mode>,
    /// Rules that hold whatever a credential says.
    #[serde(default)]
    guardrails: Vec<GuardrailSpec>,
    /// The action per violation class.
    #[serde(default)]
    actions: Option<ActionsSpec>,
    /// Narrows the built-in guardrail over Tether's own files (logged at every load).
    #[serde(default)]
    self_protection: Option<engine::SelfProtection>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ActionsSpec {
    /// Agent processes with no valid credential (absent: allowed, audited).
    #[serde(default)]
    unbound: Option<ActionSpec>,
    /// Actions outside a valid credential's scope (default: alert).
    #[serde(default)]
    scope: Option<ActionSpec>,
    /// Actions under an expired or revoked credential (default: alert).
    #[serde(default)]
    expired: Option<ActionSpec>,
    /// Actions the kernel could not judge (default: deny, high; enforced wherever any rule
    /// is).
    #[serde(default)]
    unjudged: Option<ActionSpec>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TrustEntry {
    #[serde(default)]
    issuer: Option<String>,
    #[serde(default)]
    jwks: Option<String>,
    #[serde(default)]
    trust_domain: Option<String>,
    #[serde(default)]
    bundle: Option<String>,
    #[serde(default)]
    algorithms: Option<Vec<String>>,
    #[serde(default)]
    typ: Option<Vec<String>>,
    /// Seconds of clock skew allowed on exp and nbf.
    #[serde(default)]
    leeway: Option<u64>,
    #[serde(default)]
    audiences: Option<Vec<String>>,
}

impl TrustEntry {
    fn trust(self) -> Result<Trust, String> {
        let t = match (&self.issuer, &self.jwks, &self.trust_domain, &self.bundle) {
            (Some(i), Some(j), None, None) => Trust::new(i.trim(), j.trim()),
            (None, None, Some(td), Some(b)) => Trust::spiffe(td.trim(), b.trim()),
            (Some(_), None, None, None) => {
                return Err("an issuer needs `jwks:` (a file, an https:// URL, or `discover`)".into());
            }
            (None, None, Some(_), None) => return Err("a trust domain needs `bundle:` (a file or an https:// URL)".into()),
            _ => {
                return Err(
                    "an entry is either {issuer, jwks} or {trust_domain, bundle}, with optional algorithms, typ, leeway, audiences"
                        .into(),
                );
            }
        }
        .map_err(|e| e.to_string())?;
        let name = t.issuer.clone();
        let at = |e: crate::credentials::trust::TrustError| format!("{name}: {e}");
        let mut t = t;
        if let Some(a) = &self.algorithms {
            t = t.algorithms(a).map_err(at)?;
        }
        if let Some(v) = &self.typ {
            t = t.typ(v).map_err(at)?;
        }
        if let Some(v) = &self.audiences {
            t = t.audiences(v).map_err(at)?;
        }
        if let Some(l) = self.leeway {
            t = t.leeway(l);
        }
        Ok(t)
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct WorkloadEntry {
    /// The SPIFFE trust domain of the cluster's workload identities.
    trust_domain: String,
    actor_must_match: MustMatch,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RevocationEntry {
    /// An absolute file path or an https:// URL.
    list: String,
    /// Seconds between reads (default 60, at least 1).
    #[serde(default)]
    every: Option<u64>,
}

impl RevocationEntry {
    fn config(self) -> Result<ListConfig, String> {
        let source = revocations::Source::parse(self.list.trim()).map_err(|e| e.to_string())?;
        let every = match self.every {
            None => revocations::DEFAULT_EVERY,
            Some(s)
                if std::time::Duration::from_secs(s) < revocations::MIN_EVERY
                    || std::time::Duration::from_secs(s) > revocations::MAX_EVERY =>
            {
                return Err(format!("revocations: every {s}: from 1 second to 1 day (86400)"));
            }
            Some(s) => std::time::Duration::from_secs(s),
        };
        Ok(ListConfig { source, every })
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct AgentSelector {
    id: String,
    #[serde(default)]
    exe: Vec<String>,
    #[serde(default)]
    comm: Vec<String>,
    #[serde(default)]
    uid: Vec<UserRef>,
    #[serde(default)]
    cgroup: Vec<String>,
    #[serde(default)]
    namespace: Vec<String>,
    #[serde(default)]
    pod_labels: std::collections::BTreeMap<String, String>,
}

/// The agent selectors of all loaded rule files, in file order.
pub type Selectors = Vec<Selector>;

/// Everything the rule files say.
#[derive(Debug, Clone)]
pub struct Policy {
    pub selectors: Selectors,
    pub trust: Vec<Trust>,
    /// Scope bundles and identity bindings ([`crate::credentials::carriers`]).
    pub scopes: ScopeBook,
    /// Whether a rule file set `unknown_scopes`.
    pub unknown_set: bool,
    /// Revocation lists.
    pub revocations: Vec<ListConfig>,
    /// The identity check (None: no rule file sets it).
    pub workload: Option<WorkloadCheck>,
    /// The containment rules as written (merged over files) ...
    pub containment: ContainmentSpec,
    /// ... and compiled.
    pub rules: Rules,
}

/// Parses one rule file's text.
pub fn parse(file: &str, text: &str) -> Result<Selectors, PolicyError> {
    parse_policy(file, text).map(|p| p.selectors)
}

/// A YAML file's parse error, at its file:line:column.
pub(crate) fn yaml_error(file: &str, e: &serde_yaml_ng::Error) -> PolicyError {
    let (line, column) = e.location().map(|l| (l.line(), l.column())).unwrap_or((0, 0));
    PolicyError::Syntax {
        file: file.into(),
        line,
        column,
        message: e.to_string(),
    }
}

/// Parses one rule file's text, with its trusted issuers.
pub fn parse_policy(file: &str, text: &str) -> Result<Policy, PolicyError> {
    let parsed: PolicyFile = serde_yaml_ng::from_str(text).map_err(|e| yaml_error(file, &e))?;
    let invalid = |message: String| PolicyError::Invalid {
        file: file.into(),
        message,
    };
    // An error about an entry: at the entry's line where it is found, else about the file.
    let at = |line: Option<usize>, message: String| match line {
        Some(line) => PolicyError::Syntax {
            file: file.into(),
            line,
            column: 1,
            message,
        },
        None => invalid(message),
    };
    if parsed.version != 1 {
        return Err(invalid(format!(
            "unsupported version {} (this tether reads version 1)",
            parsed.version
        )));
    }
    let mut out = Selectors::new();
    let mut ids = BTreeSet::new();
    for a in parsed.agents {
        let sel = Selector {
            id: a.id,
            exe: a.exe.into_iter().collect(),
            comm: a.comm.into_iter().collect(),
            uid: a.uid.into_iter().collect(),
            cgroup: a.cgroup.into_iter().collect(),
            namespace: a.namespace.into_iter().collect(),
            pod_labels: a.pod_labels,
        };
        let at_line = |message: String| at(line_of_id(text, &sel.id), message);
        selectors::validate(&sel).map_err(|e| at_line(e.to_string()))?;
        if !ids.insert(sel.id.clone()) {
            return Err(at_line(format!("agent selector id {:?} is used twice", sel.id)));
        }
        out.push(sel);
    }
    let mut trust = Vec::new();
    for t in parsed.trust {
        trust.push(t.trust().map_err(|e| invalid(format!("trust: {e}")))?);
    }
    crate::credentials::trust::check_unique(&trust).map_err(|e| invalid(format!("trust: {e}")))?;
    let unknown_set = parsed.unknown_scopes.is_some();
    let mut lists = Vec::new();
    for r in parsed.revocations {
        lists.push(r.config().map_err(invalid)?);
    }
    let workload = match parsed.workload_identity {
        None => None,
        Some(w) => {
            let td = w.trust_domain.trim();
            crate::credentials::trust::check_trust_domain(td)
                .map_err(|e| invalid(format!("workload_identity: {e}")))?;
            Some(WorkloadCheck {
                trust_domain: td.to_string(),
                must_match: w.actor_must_match,
            })
        }
    };
    let scopes = ScopeBook::compile(parsed.scopes, parsed.identities, parsed.unknown_scopes).map_err(|e| {
        let key = match &e {
            BookError::Bundle { name, .. } => Some(name.clone()),
            BookError::Identity { pattern, .. } => Some(pattern.clone()),
            _ => None,
        };
        at(key.and_then(|k| line_of_key(text, &k)), e.to_string())
    })?;
    let actions = parsed.actions.unwrap_or_default();
    let containment = ContainmentSpec {
        mode: parsed.mode,
        guardrails: parsed.guardrails,
        unbound: actions.unbound,
        scope: actions.scope,
        expired: actions.expired,
        unjudged: actions.unjudged,
        self_protection: parsed.self_protection,
        tether: Default::default(),
    };
    // file:line of the rule the error is about.
    let rules =
        Rules::compile(&containment).map_err(|e| at(e.rule_id().and_then(|id| line_of_id(text, id)), e.to_string()))?;
    Ok(Policy {
        selectors: out,
        trust,
        scopes,
        unknown_set,
        revocations: lists,
        workload,
        containment,
        rules,
    })
}

/// The line (1-based) of the first mapping key `key:` (a scope bundle or an identity).
fn line_of_key(text: &str, key: &str) -> Option<usize> {
    text.lines()
        .position(|l| {
            let l = l.trim_start();
            [format!("{key}:"), format!("\"{key}\":"), format!("'{key}':")]
                .iter()
                .any(|k| l.starts_with(k.as_str()))
        })
        .map(|i| i + 1)
}

/// The line (1-based) of the last `id: ID` entry in a rule file's text (the last, so a
/// duplicate id points at the second use).
fn line_of_id(text: &str, id: &str) -> Option<usize> {
    text.lines()
        .enumerate()
        .filter(|(_, l)| {
            let l = l.trim_start().trim_start_matches("- ").trim_start();
            l.strip_prefix("id:")
                .map(|v| v.trim().trim_matches(|c| c == '"' || c == '\''))
                .is_some_and(|v| v == id)
                || l.starts_with('{') && l.contains(&format!("id: {id},"))
        })
        .map(|(i, _)| i + 1)
        .last()
}

/// Merges `b` (a later file) into `a`; a setting both files make differently is an error.
fn merge_containment(a: &mut ContainmentSpec, b: ContainmentSpec, file: &str) -> Result<(), PolicyError> {
    let conflict = |what: &str| PolicyError::Invalid {
        file: file.into(),
        message: format!("{what} is already set differently by an earlier rule file"),
    };
    if let Some(m) = b.mode {
        if a.mode.is_some_and(|x| x != m) {
            return Err(conflict("mode"));
        }
        a.mode = Some(m);
    }
    for (name, dst, src) in [
        ("actions.unbound", &mut a.unbound, b.unbound),
        ("actions.scope", &mut a.scope, b.scope),
        ("actions.expired", &mut a.expired, b.expired),
    ] {
        if let Some(s) = src {
            if dst.is_some_and(|d| d.action != s.action || d.severity != s.severity || d.mode != s.mode) {
                return Err(conflict(name));
            }
            *dst = Some(s);
        }
    }
    if let Some(p) = b.self_protection {
        if a.self_protection.as_ref().is_some_and(|x| *x != p) {
            return Err(conflict("self_protection"));
        }
        a.self_protection = Some(p);
    }
    a.guardrails.extend(b.guardrails);
    Ok(())
}

/// Loads rule files (or the built-in default when none is given) and merges them.
pub fn load_policy(paths: &[impl AsRef<Path>]) -> Result<Policy, PolicyError> {
    if paths.is_empty() {
        return parse_policy(DEFAULT_POLICY_NAME, DEFAULT_POLICY);
    }
    let mut selectors = Selectors::default();
    let mut trust = Vec::new();
    let mut scopes = ScopeBook::default();
    let mut unknown: Option<Unknown> = None;
    let mut lists = Vec::new();
    let mut workload: Option<WorkloadCheck> = None;
    let mut containment = ContainmentSpec::default();
    let mut last = String::new();
    for p in paths {
        let p = p.as_ref();
        let name = p.display().to_string();
        let text = std::fs::read_to_string(p).map_err(|source| PolicyError::Read {
            file: name.clone(),
            source,
        })?;
        let s = parse_policy(&name, &text)?;
        for sel in s.selectors {
            if selectors.iter().any(|x: &Selector| x.id == sel.id) {
                return Err(PolicyError::Invalid {
                    file: name,
                    message: format!("agent selector id {:?} is already used by an earlier rule file", sel.id),
                });
            }
            selectors.push(sel);
        }
        trust.extend(s.trust);
        crate::credentials::trust::check_unique(&trust).map_err(|e| PolicyError::Invalid {
            file: name.clone(),
            message: format!("trust: {e}"),
        })?;
        lists.extend(s.revocations);
        if let Some(w) = s.workload {
            if workload.as_ref().is_some_and(|x| *x != w) {
                return Err(PolicyError::Invalid {
                    file: name,
                    message: "workload_identity is already set differently by an earlier rule file".into(),
                });
            }
            workload = Some(w);
        }
        if s.unknown_set {
            if unknown.is_some_and(|u| u != s.scopes.unknown) {
                return Err(PolicyError::Invalid {
                    file: name,
                    message: "unknown_scopes is already set differently by an earlier rule file".into(),
                });
            }
            unknown = Some(s.scopes.unknown);
        }
        scopes
            .merge(s.scopes, s.unknown_set)
            .map_err(|e| PolicyError::Invalid {
                file: name.clone(),
                message: e.to_string(),
            })?;
        merge_containment(&mut containment, s.containment, &name)?;
        last = name;
    }
    let rules = Rules::compile(&containment).map_err(|e| PolicyError::Invalid {
        file: last,
        message: e.to_string(),
    })?;
    Ok(Policy {
        selectors,
        trust,
        scopes,
        unknown_set: unknown.is_some(),
        revocations: lists,
        workload,
        containment,
        rules,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// policies/schema.json describes exactly what the parser accepts: every shipped rule file
    /// is valid against it, and files the parser refuses for their shape are refused by it too.
    #[test]
    fn the_json_schema_agrees_with_the_parser() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../policies");
        let schema: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(dir.join("schema.json")).unwrap()).unwrap();
        let validator = jsonschema::validator_for(&schema).expect("a valid JSON Schema");
        let as_json = |yaml: &str| -> serde_json::Value { serde_yaml_ng::from_str(yaml).unwrap() };
        for entry in std::fs::read_dir(&dir).unwrap() {
            let p = entry.unwrap().path();
            if p.extension().is_some_and(|e| e == "yaml") {
                let v = as_json(&std::fs::read_to_string(&p).unwrap());
                let errors: Vec<String> = validator.iter_errors(&v).map(|e| e.to_string()).collect();
                assert!(errors.is_empty(), "{}: {errors:?}", p.display());
            }
        }
        for bad in [
            "version: 1\ncolour: red\n",
            "version: 1\nmode: strict\n",
            "version: 1\nguardrails: [{id: g, action: explode, exec: [/x]}]\n",
            "version: 1\nactions: {scope: {action: deny, extra: 1}}\n",
            "version: 2\n",
            "version: 1\nagents: [{id: a}]\n",
            "version: 1\nagents: [{id: a, cgroup: [/]}]\n",
            "version: 1\nagents: [{id: a, cgroup: [agents.slice]}]\n",
            "version: 1\nagents: [{id: a, uid: [-1]}]\n",
            "version: 1\ntrust: [{issuer: i, jwks: /j, algorithms: [HS256]}]\n",
            "version: 1\ntrust: [{issuer: i, jwks: /j, algorithms: [none]}]\n",
            "version: 1\ntrust: [{issuer: i, trust_domain: td, bundle: /b}]\n",
            "version: 1\ntrust: [{issuer: i}]\n",
            "version: 1\ntrust: [{trust_domain: td}]\n",
            "version: 1\ntrust: [{issuer: i, jwks: /j, leeway: -1}]\n",
            "version: 1\nunknown_scopes: maybe\n",
            "version: 1\nscopes: {a: {exec: [/x], run: [/y]}}\n",
            "version: 1\nidentities: {\"spiffe://td/a\": {bogus: 1}}\n",
            "version: 1\nrevocations: [{list: /r.json, every: 0}]\n",
            "version: 1\nrevocations: [{list: /r.json, every: 86401}]\n",
            "version: 1\nguardrails: [{id: g, action: deny, exec: [/x], attack: [T12]}]\n",
            "version: 1\nrevocations: [{list: http://x/r.json}]\n",
            "version: 1\nrevocations: [{every: 5}]\n",
            "version: 1\nworkload_identity: {trust_domain: cluster.local, actor_must_match: maybe}\n",
            "version: 1\nworkload_identity: {trust_domain: \"Bad/TD\", actor_must_match: refuse}\n",
            "version: 1\nworkload_identity: {actor_must_match: refuse}\n",
        ] {
            assert!(parse("x.yaml", bad).is_err(), "parser accepts {bad:?}");
            assert!(!validator.is_valid(&as_json(bad)), "schema accepts {bad:?}");
        }
    }

    #[test]
    fn issuers_scope_bundles_and_identities_are_read_and_checked_at_load() {
        let text =
            std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../policies/issuers-example.yaml"))
                .unwrap();
        let p = parse_policy("issuers.yaml", &text).unwrap();
        assert_eq!(p.trust.len(), 3);
        let kc = &p.trust[0];
        assert_eq!(
            kc.source,
            crate::credentials::trust::JwksSource::Discovery("https://keycloak.example.com/realms/agents".into())
        );
        assert_eq!(
            kc.accept.algorithms,
            [jsonwebtoken::Algorithm::RS256, jsonwebtoken::Algorithm::PS256]
        );
        assert_eq!(kc.accept.typ, Some(vec!["jwt".to_string(), "at+jwt".to_string()]));
        assert_eq!((kc.accept.leeway, kc.accept.audiences.len()), (30, 2));
        assert_eq!(p.trust[2].issuer, "spiffe://corp.example");
        assert_eq!(
            p.scopes.bundle_names().collect::<Vec<_>>(),
            ["api.call", "repo.read", "repo.write"]
        );
        assert_eq!(p.scopes.unknown, Unknown::Ignore);
        assert_eq!(p.scopes.identity_patterns().count(), 2);
        // A bad pattern in a bundle fails the load at the bundle's line.
        let bad = "version: 1\nscopes:\n  ok: {exec: [/bin/true]}\n  broken:\n    write: [relative/path]\n";
        let e = parse_policy("s.yaml", bad).unwrap_err().to_string();
        assert!(e.starts_with("s.yaml:4:1: scopes.broken: scope.write[0]"), "{e}");
        let e = parse_policy(
            "t.yaml",
            "version: 1\ntrust: [{issuer: i, jwks: /j, algorithms: [HS256]}]\n",
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("HS256 is refused"), "{e}");
        // Two files that define one bundle differently.
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (dir.path().join("a.yaml"), dir.path().join("b.yaml"));
        std::fs::write(&a, "version: 1\nscopes: {w: {write: [/a/]}}\n").unwrap();
        std::fs::write(&b, "version: 1\nscopes: {w: {write: [/b/]}}\n").unwrap();
        let e = load_policy(&[&a, &b]).unwrap_err().to_string();
        assert!(e.contains("scope bundle \"w\" is defined twice"), "{e}");
        std::fs::write(&b, "version: 1\nunknown_scopes: ignore\n").unwrap();
        std::fs::write(&a, "version: 1\nunknown_scopes: refuse\n").unwrap();
        assert!(
            load_policy(&[&a, &b])
                .unwrap_err()
                .to_string()
                .contains("unknown_scopes")
        );
    }

    #[test]
    fn the_built_in_default_parses() {
        let s = parse(DEFAULT_POLICY_NAME, DEFAULT_POLICY).expect("default policy is valid");
        assert!(s.iter().any(|s| !s.comm.is_empty()));
    }

    #[test]
    fn every_shipped_policy_parses() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../policies");
        for entry in std::fs::read_dir(&dir).expect("policies/ exists") {
            let p = entry.unwrap().path();
            if p.extension().is_some_and(|e| e == "yaml") {
                load_policy(&[&p]).unwrap_or_else(|e| panic!("{e}"));
            }
        }
    }

    #[test]
    fn errors_name_file_line_and_cause() {
        let err = parse(
            "p.yaml",
            "version: 1\nagents:\n  - id: a\n    comm: [x]\n    colour: red\n",
        )
        .unwrap_err();
        let msg = err.to_string();
        assert!(msg.starts_with("p.yaml:5:"), "{msg}");
        assert!(msg.contains("colour"), "{msg}");
        let err = parse(
            "p.yaml",
            "version: 1\nagents:\n  - id: a\n    comm: [averyveryverylongname]\n",
        )
        .unwrap_err();
        assert!(err.to_string().contains("15 bytes"), "{err}");
        let err = parse("p.yaml", "version: 1\nagents:\n  - id: a\n    exe: [bin/x]\n").unwrap_err();
        assert!(err.to_string().contains("not an absolute path"), "{err}");
        let err = parse("p.yaml", "version: 2\n").unwrap_err();
        assert!(err.to_string().contains("unsupported version 2"), "{err}");
        let err = parse("p.yaml", "version: 1\nagents:\n  - id: a\n").unwrap_err();
        assert!(err.to_string().contains("selects nothing"), "{err}");
        let err = parse("p.yaml", "version: 1\ntrust:\n  - issuer: i\n    jwks: http://x/j\n").unwrap_err();
        assert!(err.to_string().contains("https://"), "{err}");
    }

    #[test]
    fn rule_errors_point_at_the_rule_line() {
        let err = parse(
            "p.yaml",
            "version: 1\nguardrails:\n  - id: ok\n    action: deny\n    exec: [/x]\n  - id: bad\n    action: deny\n    write: [etc/]\n",
        )
        .unwrap_err()
        .to_string();
        assert!(err.starts_with("p.yaml:6:"), "{err}");
        assert!(
            err.contains("guardrail \"bad\": write[0] \"etc/\": not an absolute path"),
            "{err}"
        );
        let err = parse(
            "p.yaml",
            "version: 1\nguardrails:\n  - {id: a, action: deny, exec: [/x]}\n  - {id: a, action: deny, exec: [/y]}\n",
        )
        .unwrap_err()
        .to_string();
        assert!(err.starts_with("p.yaml:4:") && err.contains("used twice"), "{err}");
    }

    #[test]
    fn trust_entries_are_read() {
        let p = parse_policy(
            "p.yaml",
            "version: 1\ntrust:\n  - issuer: https://idp.test\n    jwks: /etc/tether/idp.jwks.json\n",
        )
        .unwrap();
        assert_eq!(
            p.trust,
            vec![Trust::parse("https://idp.test=/etc/tether/idp.jwks.json").unwrap()]
        );
    }
}
