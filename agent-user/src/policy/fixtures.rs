//! Decision fixtures: a rule file's expected decisions, as YAML an operator keeps beside their
//! rules and runs in their own CI (`tether policy test FILE-or-DIR...`); the project's own are
//! policies/fixtures, run by plain `cargo test`.
//!
//! ```yaml
//! policy: default.yaml          # relative to the fixture's directory, else to its parent
//! cases:
//!   - name: a write under /etc
//!     attempt: {write: [/etc/passwd]}   # or {exec: PATH} | {connect: "PROTO:IP:PORT"}
//!                                       # | {unix: PATH|@NAME} | {listen: "PROTO:IP:PORT"}
//!                                       # | {grant: raw|packet|icmp|vsock|io_uring}
//!     credential: {state: valid, scope: {write: [/srv/]}}   # or `none`
//!     pod: {namespace: agents, labels: {team: a}}            # optional: the pod it runs in
//!     expect: {action: deny, rule: "guardrail:system-writes", mode: observe}
//! ```
//! `action` is `allow`, `alert`, `deny`, `kill` or `kill-tree`; `rule` and `mode` are checked
//! where given. Pure apart from reading the files.
use std::{
    collections::BTreeMap,
    net::IpAddr,
    path::{Path, PathBuf},
};

use serde::Deserialize;

use super::engine::{Attempt, Credential, WritePath};
use crate::{
    credentials::{
        scope::{CompiledScope, Grant, Host, Proto, ScopeSpec},
        tasks::CredState,
    },
    model::{Action, Mode},
};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Fixture {
    policy: String,
    cases: Vec<Case>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Case {
    name: String,
    attempt: AttemptSpec,
    credential: CredSpec,
    /// The pod the process runs in (namespace, labels): its guard set.
    #[serde(default)]
    pod: Option<PodSpec>,
    expect: Expect,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PodSpec {
    namespace: String,
    #[serde(default)]
    labels: BTreeMap<String, String>,
}

/// Exactly one of these. `write` paths are writes of the files themselves (opens); `unix` a
/// socket's path or `@name`; `listen` `PROTO:IP:PORT`; `grant` a socket kind or `io_uring`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct AttemptSpec {
    exec: Option<String>,
    write: Option<Vec<String>>,
    connect: Option<String>,
    #[serde(default)]
    unix: Option<String>,
    #[serde(default)]
    listen: Option<String>,
    #[serde(default)]
    grant: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum CredSpec {
    None(String),
    Bound { state: CredState, scope: ScopeSpec },
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Expect {
    action: String,
    #[serde(default)]
    rule: Option<String>,
    #[serde(default)]
    mode: Option<Mode>,
}

/// One case's result.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CaseResult {
    pub file: PathBuf,
    pub name: String,
    /// None: as expected.
    pub failure: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum FixtureError {
    /// The fixture file cannot be read, or is not a fixture (file:line:column).
    #[error(transparent)]
    File(super::PolicyError),
    #[error("{file}: policy {policy}: {source}")]
    Policy {
        file: String,
        policy: String,
        source: super::PolicyError,
    },
    #[error("{file}: case {case:?}: {why}")]
    Case { file: String, case: String, why: String },
    #[error("{0}: no fixture files (*.yaml) there")]
    Empty(String),
}

/// Runs every fixture in `paths` (files, or directories of `*.yaml`), in name order.
pub fn run(paths: &[PathBuf]) -> Result<Vec<CaseResult>, FixtureError> {
    let mut files = Vec::new();
    for p in paths {
        if p.is_dir() {
            let mut found: Vec<PathBuf> = std::fs::read_dir(p)
                .map_err(|source| {
                    FixtureError::File(super::PolicyError::Read {
                        file: p.display().to_string(),
                        source,
                    })
                })?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|f| f.extension().is_some_and(|x| x == "yaml" || x == "yml"))
                .collect();
            if found.is_empty() {
                return Err(FixtureError::Empty(p.display().to_string()));
            }
            found.sort();
            files.extend(found);
        } else {
            files.push(p.clone());
        }
    }
    let mut out = Vec::new();
    for f in files {
        out.extend(run_file(&f)?);
    }
    Ok(out)
}

fn run_file(path: &Path) -> Result<Vec<CaseResult>, FixtureError> {
    let file = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|source| {
        FixtureError::File(super::PolicyError::Read {
            file: file.clone(),
            source,
        })
    })?;
    let fx: Fixture = serde_yaml_ng::from_str(&text).map_err(|e| FixtureError::File(super::yaml_error(&file, &e)))?;
    let here = path.parent().unwrap_or(Path::new("."));
    // The fixture's directory first, then its parent (policies/fixtures/x.yaml names
    // policies/x.yaml); never the fixture itself.
    let me = std::fs::canonicalize(path).ok();
    let policy_path = [here.join(&fx.policy), here.join("..").join(&fx.policy)]
        .into_iter()
        .find(|p| p.is_file() && std::fs::canonicalize(p).ok() != me)
        .unwrap_or_else(|| here.join(&fx.policy));
    let policy = super::load_policy(&[&policy_path]).map_err(|source| FixtureError::Policy {
        file: file.clone(),
        policy: fx.policy.clone(),
        source,
    })?;
    let mut out = Vec::new();
    for c in &fx.cases {
        let bad = |why: String| FixtureError::Case {
            file: file.clone(),
            case: c.name.clone(),
            why,
        };
        let attempt = attempt(&c.attempt).map_err(bad)?;
        let scope;
        let cred = match &c.credential {
            CredSpec::None(s) if s == "none" => Credential::None,
            CredSpec::None(s) => return Err(bad(format!("credential {s:?}: `none` or {{state, scope}}"))),
            CredSpec::Bound { state, scope: spec } => {
                scope = CompiledScope::compile(spec).map_err(|e| bad(e.to_string()))?;
                Credential::Bound {
                    state: *state,
                    scope: &scope,
                }
            }
        };
        let set = policy
            .rules
            .guard_set(c.pod.as_ref().map(|p| (p.namespace.as_str(), &p.labels)));
        let d = policy.rules.evaluate(&attempt, cred, set);
        let got = d.action.map(Action::as_str).unwrap_or("allow");
        let mut wrong = Vec::new();
        if got != c.expect.action {
            wrong.push(format!("action {got}, expected {}", c.expect.action));
        }
        if let Some(rule) = &c.expect.rule
            && &d.rule != rule
        {
            wrong.push(format!("rule {:?}, expected {rule:?}", d.rule));
        }
        if let Some(mode) = c.expect.mode
            && d.mode != mode
        {
            wrong.push(format!("mode {}, expected {}", d.mode.as_str(), mode.as_str()));
        }
        out.push(CaseResult {
            file: path.to_path_buf(),
            name: c.name.clone(),
            failure: (!wrong.is_empty()).then(|| format!("{} ({})", wrong.join("; "), d.reason)),
        });
    }
    Ok(out)
}

/// "PROTO:IP:PORT" through the scope parser.
fn endpoint(c: &str) -> Result<(Proto, IpAddr, u16), String> {
    let s = CompiledScope::compile(&ScopeSpec {
        connect: vec![c.to_string()],
        ..Default::default()
    })
    .map_err(|e| format!("attempt {c}: {e}"))?;
    let r = s
        .connect
        .first()
        .ok_or_else(|| format!("attempt {c}: not PROTO:IP:PORT"))?;
    let Host::Net(net) = &r.host else {
        return Err(format!("attempt {c}: an IP address, not a host name"));
    };
    Ok((r.proto, net.addr(), r.ports.0))
}

fn attempt(a: &AttemptSpec) -> Result<Attempt, String> {
    Ok(match (&a.exec, &a.write, &a.connect, &a.unix, &a.listen, &a.grant) {
        (Some(p), None, None, None, None, None) => Attempt::Exec { path: p.clone() },
        (None, Some(p), None, None, None, None) => Attempt::Write {
            paths: p.iter().map(WritePath::object).collect(),
        },
        (None, None, Some(c), None, None, None) => {
            let (proto, ip, port) = endpoint(c)?;
            Attempt::Connect { proto, ip, port }
        }
        (None, None, None, Some(u), None, None) => Attempt::Unix { name: u.clone() },
        (None, None, None, None, Some(l), None) => {
            let (proto, ip, port) = endpoint(l)?;
            Attempt::Listen { proto, ip, port }
        }
        (None, None, None, None, None, Some(g)) => Attempt::Grant {
            grant: if g == "io_uring" {
                Grant::IoUring
            } else {
                Grant::parse(g).ok_or_else(|| format!("grant {g:?}: raw, packet, icmp, vsock or io_uring"))?
            },
        },
        _ => return Err("an attempt is exactly one of exec, write, connect, unix, listen, grant".into()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A fixture that expects the wrong thing fails, naming what was decided; a malformed one
    /// is an error with its place.
    #[test]
    fn a_wrong_expectation_fails_and_a_bad_fixture_is_an_error() {
        let root = tempfile::tempdir().unwrap();
        let policies = Path::new(env!("CARGO_MANIFEST_DIR")).join("../policies/default.yaml");
        std::fs::copy(&policies, root.path().join("default.yaml")).unwrap();
        // As in the project: rules beside fixtures/, a fixture named like its rule file.
        let dir = root.path().join("fixtures");
        std::fs::create_dir(&dir).unwrap();
        let f = dir.join("default.yaml");
        std::fs::write(
            &f,
            "policy: default.yaml\ncases:\n  - name: etc is guarded\n    attempt: {write: [/etc/shadow]}\n    credential: none\n    expect: {action: deny, rule: \"guardrail:system-writes\"}\n  - name: wrongly expected\n    attempt: {write: [/etc/shadow]}\n    credential: none\n    expect: {action: allow}\n",
        )
        .unwrap();
        let r = run(std::slice::from_ref(&dir)).unwrap();
        assert_eq!(r.len(), 2);
        assert_eq!(r[0].failure, None);
        let why = r[1].failure.as_deref().unwrap();
        assert!(why.contains("action deny, expected allow"), "{why}");
        std::fs::write(&f, "policy: default.yaml\ncases:\n  - name: x\n    attempt: {exec: /a, write: [/b]}\n    credential: none\n    expect: {action: allow}\n").unwrap();
        let e = run(std::slice::from_ref(&f)).unwrap_err().to_string();
        assert!(e.contains("case \"x\"") && e.contains("exactly one"), "{e}");
        std::fs::write(&f, "policy: default.yaml\ncases: [{name: x, atempt: {}}]\n").unwrap();
        let e = run(std::slice::from_ref(&f)).unwrap_err().to_string();
        assert!(e.starts_with(&format!("{}:2:", f.display())), "{e}");
        let empty = tempfile::tempdir().unwrap();
        assert!(matches!(
            run(&[empty.path().to_path_buf()]),
            Err(FixtureError::Empty(_))
        ));
    }
}
