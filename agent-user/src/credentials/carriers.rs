//! Where a credential's scope comes from. Issuers carry grants in different places; the first
//! of these a token has wins, and every event of the task names which one it was
//! ([`ScopeSource`]):
//!
//! 1. RFC 9396 `authorization_details`: the entries of a type Tether owns ([`OWNED_TYPES`]):
//!    `{"type": "exec"|"write", "locations": [PATH-PATTERN...]}`,
//!    `{"type": "connect"|"listen", "locations": ["tcp:HOST:PORTS"...]}`,
//!    `{"type": "sockets", "kinds": ["raw"...]}`, `{"type": "io_uring"}`. Entries of other
//!    types are other parties' grants and are left alone; an owned entry with a member
//!    Tether does not know is refused (a grant must never be read narrower or wider than meant);
//! 2. Tether's `scope` object (the development issuer's format, [`ScopeSpec`]);
//! 3. an OAuth `scope` string (RFC 8693, RFC 9068, Transaction Tokens): each value names a
//!    bundle of the rule files' `scopes:`, the task's scope being the union of the bundles it
//!    names; a value that names none is refused or ignored as `unknown_scopes:` says (a string
//!    whose values name no bundle at all, when ignored, does not count as a carrier);
//! 4. no scope claim (a SPIFFE JWT-SVID, say): the scope the rule files' `identities:` bind to
//!    the current actor (the outermost `act`, else `sub`): its exact entry, else the longest
//!    pattern that matches it (`*` within one path segment, `**` across, `?` one character).
//!    A SPIFFE ID binds only in a token its own trust domain's bundle verified (another
//!    issuer naming `spiffe://corp/...` does not get corp's bindings);
//!
//! else the credential carries no scope: it is refused, and the process stays under the
//! posture for unbound agents (`actions.unbound`).
//!
//! Pure: the rule files' part ([`ScopeBook`]) is compiled when they load.
use std::collections::BTreeMap;

use globset::{GlobBuilder, GlobMatcher};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::scope::{CompiledScope, MAX_ENTRIES, ScopeError, ScopeSpec};

/// The `authorization_details` types that carry Tether grants.
pub const OWNED_TYPES: &[&str] = &["exec", "write", "connect", "listen", "sockets", "io_uring"];
/// At most this many `authorization_details` entries or `scope` values are read.
pub const MAX_VALUES: usize = 256;

/// Where a task's scope came from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "from", rename_all = "snake_case")]
pub enum ScopeSource {
    AuthorizationDetails {
        /// How many entries of Tether's types were read.
        entries: usize,
    },
    ScopeObject,
    ScopeString {
        /// The values that named a bundle.
        bundles: Vec<String>,
        /// The values that named none (ignored, as the rule files say).
        #[serde(skip_serializing_if = "Vec::is_empty")]
        ignored: Vec<String>,
    },
    Identity {
        /// The identity (current actor) ...
        identity: String,
        /// ... and the `identities:` entry that bound it.
        entry: String,
    },
}

impl ScopeSource {
    pub fn as_str(&self) -> &'static str {
        match self {
            ScopeSource::AuthorizationDetails { .. } => "authorization_details",
            ScopeSource::ScopeObject => "scope_object",
            ScopeSource::ScopeString { .. } => "scope_string",
            ScopeSource::Identity { .. } => "identity",
        }
    }
}

/// What to do with a `scope` value that names no bundle.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Unknown {
    /// The credential is refused (the default: a grant nobody defined is not guessed at).
    #[default]
    Refuse,
    /// The value is left out (and named in the task's scope source).
    Ignore,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CarrierError {
    #[error("authorization_details: {0}")]
    Details(String),
    #[error("scope: {0}")]
    ScopeClaim(String),
    #[error("scope value {0:?} names no bundle of the rule files' `scopes:` (unknown_scopes: refuse)")]
    UnknownValue(String),
    #[error(
        "the credential carries no scope (no authorization_details of Tether's types, no scope claim that names a bundle) and no `identities:` entry binds {0:?}: the process stays unbound"
    )]
    NoScope(String),
    #[error(transparent)]
    Scope(#[from] ScopeError),
}

/// One `identities:` entry, compiled.
#[derive(Debug, Clone)]
struct Binding {
    pattern: String,
    matcher: Option<GlobMatcher>,
    spec: ScopeSpec,
}

/// The rule files' part of scopes: bundles named by `scope` values, scopes bound to
/// identities, and what an unknown value does.
#[derive(Debug, Clone, Default)]
pub struct ScopeBook {
    bundles: BTreeMap<String, ScopeSpec>,
    identities: Vec<Binding>,
    pub unknown: Unknown,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BookError {
    #[error("scopes.{name}: {why}")]
    Bundle { name: String, why: ScopeError },
    #[error("scopes: {0:?} is not a scope value (a non-empty token without spaces)")]
    BundleName(String),
    #[error("identities.{pattern:?}: {why}")]
    Identity { pattern: String, why: String },
    #[error("{what} {name:?} is defined twice, differently")]
    Twice { what: &'static str, name: String },
}

impl ScopeBook {
    /// Compiles the rule files' `scopes:` and `identities:` (each scope compiled once here,
    /// so a bad pattern fails the load, not a binding).
    pub fn compile(
        bundles: BTreeMap<String, ScopeSpec>,
        identities: BTreeMap<String, ScopeSpec>,
        unknown: Option<Unknown>,
    ) -> Result<ScopeBook, BookError> {
        let mut book = ScopeBook {
            unknown: unknown.unwrap_or_default(),
            ..Default::default()
        };
        for (name, spec) in bundles {
            if name.is_empty() || name.contains(char::is_whitespace) || name.contains('"') {
                return Err(BookError::BundleName(name));
            }
            CompiledScope::compile(&spec).map_err(|why| BookError::Bundle {
                name: name.clone(),
                why,
            })?;
            book.bundles.insert(name, spec);
        }
        for (pattern, spec) in identities {
            let bad = |why: String| BookError::Identity {
                pattern: pattern.clone(),
                why,
            };
            CompiledScope::compile(&spec).map_err(|e| bad(e.to_string()))?;
            // `*`, `**` and `?` only: a class (`[!x]`) would match `/` too.
            if pattern.contains(['[', ']', '{', '}']) {
                return Err(bad("classes and alternatives are not allowed: use *, ** and ?".into()));
            }
            let matcher = if pattern.contains(['*', '?']) {
                let g = GlobBuilder::new(&pattern)
                    .literal_separator(true)
                    .build()
                    .map_err(|e| bad(e.to_string()))?;
                Some(g.compile_matcher())
            } else {
                None
            };
            book.identities.push(Binding { pattern, matcher, spec });
        }
        Ok(book)
    }

    /// Adds another rule file's book; a name both define differently is an error.
    pub fn merge(&mut self, other: ScopeBook, unknown_set: bool) -> Result<(), BookError> {
        for (name, spec) in other.bundles {
            match self.bundles.get(&name) {
                Some(s) if *s != spec => {
                    return Err(BookError::Twice {
                        what: "scope bundle",
                        name,
                    });
                }
                _ => {
                    self.bundles.insert(name, spec);
                }
            }
        }
        for b in other.identities {
            match self.identities.iter().find(|x| x.pattern == b.pattern) {
                Some(x) if x.spec != b.spec => {
                    return Err(BookError::Twice {
                        what: "identity",
                        name: b.pattern,
                    });
                }
                Some(_) => {}
                None => self.identities.push(b),
            }
        }
        if unknown_set {
            self.unknown = other.unknown;
        }
        Ok(())
    }

    pub fn bundle_names(&self) -> impl Iterator<Item = &str> {
        self.bundles.keys().map(String::as_str)
    }

    pub fn identity_patterns(&self) -> impl Iterator<Item = &str> {
        self.identities.iter().map(|b| b.pattern.as_str())
    }

    /// The scope bound to `identity`: its exact entry, else the longest matching pattern.
    fn bound(&self, identity: &str) -> Option<&Binding> {
        self.identities
            .iter()
            .find(|b| b.matcher.is_none() && b.pattern == identity)
            .or_else(|| {
                self.identities
                    .iter()
                    .filter(|b| b.matcher.as_ref().is_some_and(|m| m.is_match(identity)))
                    .max_by_key(|b| b.pattern.len())
            })
    }
}

/// The claims that may carry a scope.
#[derive(Debug, Clone, Copy)]
pub struct Carriers<'a> {
    pub authorization_details: Option<&'a Value>,
    pub scope: Option<&'a Value>,
    /// The current actor (outermost `act`, else `sub`).
    pub identity: &'a str,
    /// The trusted issuer (or `spiffe://DOMAIN`) that verified the token: a SPIFFE ID binds
    /// only in a token its own trust domain's bundle verified.
    pub issuer: &'a str,
}

/// The task's scope and where it came from (module doc), first carrier first.
pub fn scope_of(c: Carriers, book: &ScopeBook) -> Result<(ScopeSpec, ScopeSource), CarrierError> {
    if let Some(details) = c.authorization_details
        && let Some((spec, entries)) = from_details(details)?
    {
        return Ok((spec, ScopeSource::AuthorizationDetails { entries }));
    }
    match c.scope {
        Some(Value::Object(_)) => {
            let spec: ScopeSpec = serde_json::from_value(c.scope.cloned().unwrap_or_default())
                .map_err(|e| CarrierError::ScopeClaim(e.to_string()))?;
            return Ok((spec, ScopeSource::ScopeObject));
        }
        Some(Value::String(s)) => {
            if let Some(r) = from_values(s, book)? {
                return Ok(r);
            }
        }
        None | Some(Value::Null) => {}
        Some(other) => {
            return Err(CarrierError::ScopeClaim(format!(
                "a {} (an object of Tether's or a space-separated string)",
                kind(other)
            )));
        }
    }
    let spiffe_td = super::token::trust_domain(c.identity);
    let vouched = spiffe_td.is_none_or(|td| c.issuer.strip_prefix("spiffe://") == Some(td));
    match book.bound(c.identity).filter(|_| vouched) {
        Some(b) => Ok((
            b.spec.clone(),
            ScopeSource::Identity {
                identity: c.identity.to_string(),
                entry: b.pattern.clone(),
            },
        )),
        None => Err(CarrierError::NoScope(c.identity.to_string())),
    }
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "list",
        Value::Object(_) => "object",
    }
}

/// An OAuth scope string: the union of the bundles its values name. None: no value names a
/// bundle and the unknown ones are ignored (the next carrier is looked at).
fn from_values(s: &str, book: &ScopeBook) -> Result<Option<(ScopeSpec, ScopeSource)>, CarrierError> {
    let values: Vec<&str> = s.split(' ').filter(|v| !v.is_empty()).collect();
    if values.len() > MAX_VALUES {
        return Err(CarrierError::ScopeClaim(format!(
            "{} values; at most {MAX_VALUES} are read",
            values.len()
        )));
    }
    let mut spec = ScopeSpec::default();
    let (mut bundles, mut ignored) = (Vec::new(), Vec::new());
    for v in values {
        match book.bundles.get(v) {
            Some(b) => {
                if !bundles.iter().any(|x| x == v) {
                    union(&mut spec, b);
                    bundles.push(v.to_string());
                }
            }
            None if book.unknown == Unknown::Refuse => return Err(CarrierError::UnknownValue(v.to_string())),
            None => ignored.push(v.to_string()),
        }
    }
    if bundles.is_empty() {
        return Ok(None);
    }
    Ok(Some((spec, ScopeSource::ScopeString { bundles, ignored })))
}

/// Adds `b`'s entries to `a` (each once).
fn union(a: &mut ScopeSpec, b: &ScopeSpec) {
    for (dst, src) in [
        (&mut a.exec, &b.exec),
        (&mut a.connect, &b.connect),
        (&mut a.write, &b.write),
        (&mut a.listen, &b.listen),
        (&mut a.sockets, &b.sockets),
    ] {
        for e in src {
            if !dst.contains(e) {
                dst.push(e.clone());
            }
        }
    }
    a.io_uring |= b.io_uring;
}

/// The grants of `authorization_details` entries of Tether's types; None: it has none.
fn from_details(details: &Value) -> Result<Option<(ScopeSpec, usize)>, CarrierError> {
    let bad = |why: String| CarrierError::Details(why);
    let Value::Array(entries) = details else {
        return Err(bad(format!("a {}, not a list of entries (RFC 9396)", kind(details))));
    };
    if entries.len() > MAX_VALUES {
        return Err(bad(format!("{} entries; at most {MAX_VALUES} are read", entries.len())));
    }
    let mut spec = ScopeSpec::default();
    let mut owned = 0;
    for (i, e) in entries.iter().enumerate() {
        let Value::Object(m) = e else {
            return Err(bad(format!("[{i}] is a {}, not an object", kind(e))));
        };
        let Some(Value::String(ty)) = m.get("type") else {
            return Err(bad(format!("[{i}] has no string `type` (RFC 9396 requires one)")));
        };
        if !OWNED_TYPES.contains(&ty.as_str()) {
            continue;
        }
        owned += 1;
        let (field, dst): (&str, Option<&mut Vec<String>>) = match ty.as_str() {
            "exec" => ("locations", Some(&mut spec.exec)),
            "write" => ("locations", Some(&mut spec.write)),
            "connect" => ("locations", Some(&mut spec.connect)),
            "listen" => ("locations", Some(&mut spec.listen)),
            "sockets" => ("kinds", Some(&mut spec.sockets)),
            _ => ("", None),
        };
        for k in m.keys() {
            if k != "type" && k != field {
                return Err(bad(format!(
                    "[{i}] (type {ty}) has member {k:?}, which Tether does not read{}",
                    if field.is_empty() {
                        String::new()
                    } else {
                        format!(" (it reads `{field}`)")
                    }
                )));
            }
        }
        match dst {
            None => spec.io_uring = true,
            Some(dst) => {
                let Some(Value::Array(values)) = m.get(field) else {
                    return Err(bad(format!("[{i}] (type {ty}) needs `{field}`: a list of strings")));
                };
                for v in values {
                    let Value::String(s) = v else {
                        return Err(bad(format!("[{i}].{field} holds a {}, not a string", kind(v))));
                    };
                    if dst.len() >= MAX_ENTRIES {
                        return Err(CarrierError::Scope(ScopeError::TooMany {
                            class: ty_class(ty),
                            count: dst.len() + 1,
                        }));
                    }
                    if !dst.contains(s) {
                        dst.push(s.clone());
                    }
                }
            }
        }
    }
    Ok((owned > 0).then_some((spec, owned)))
}

fn ty_class(ty: &str) -> &'static str {
    OWNED_TYPES
        .iter()
        .copied()
        .find(|t| *t == ty)
        .unwrap_or("authorization_details")
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn spec(v: Value) -> ScopeSpec {
        serde_json::from_value(v).unwrap()
    }

    fn book(unknown: Unknown) -> ScopeBook {
        ScopeBook::compile(
            [
                (
                    "repo.write".to_string(),
                    spec(json!({"write": ["/srv/repo/"], "exec": ["/usr/bin/git"]})),
                ),
                (
                    "net.api".to_string(),
                    spec(json!({"connect": ["tcp:127.0.0.1:8443"], "exec": ["/usr/bin/git"]})),
                ),
            ]
            .into(),
            [
                (
                    "spiffe://corp.test/agent/coder".to_string(),
                    spec(json!({"exec": ["/usr/bin/make"]})),
                ),
                (
                    "spiffe://corp.test/agent/*".to_string(),
                    spec(json!({"exec": ["/usr/bin/true"]})),
                ),
                (
                    "spiffe://corp.test/**".to_string(),
                    spec(json!({"exec": ["/usr/bin/false"]})),
                ),
            ]
            .into(),
            Some(unknown),
        )
        .unwrap()
    }

    fn of(
        details: Option<Value>,
        scope: Option<Value>,
        identity: &str,
        b: &ScopeBook,
    ) -> Result<(ScopeSpec, ScopeSource), CarrierError> {
        scope_of(
            Carriers {
                authorization_details: details.as_ref(),
                scope: scope.as_ref(),
                identity,
                issuer: "spiffe://corp.test",
            },
            b,
        )
    }

    #[test]
    fn authorization_details_of_tethers_types_win_and_others_are_left_alone() {
        let b = book(Unknown::Refuse);
        let details = json!([
            {"type": "payment_initiation", "instructedAmount": {"currency": "EUR", "amount": "1"}},
            {"type": "exec", "locations": ["/usr/bin/git", "/usr/bin/python3*"]},
            {"type": "write", "locations": ["/srv/task-42/"]},
            {"type": "connect", "locations": ["tcp:127.0.0.1:8080"]},
            {"type": "sockets", "kinds": ["raw"]},
            {"type": "io_uring"}
        ]);
        // A scope string is there too: the first carrier wins.
        let (s, src) = of(Some(details), Some(json!("repo.write")), "x", &b).unwrap();
        assert_eq!(src, ScopeSource::AuthorizationDetails { entries: 5 });
        assert_eq!(s.exec, ["/usr/bin/git", "/usr/bin/python3*"]);
        assert_eq!(s.write, ["/srv/task-42/"]);
        assert_eq!(s.connect, ["tcp:127.0.0.1:8080"]);
        assert_eq!(s.sockets, ["raw"]);
        assert!(s.io_uring);
        // Only other parties' entries: the next carrier.
        let (_, src) = of(
            Some(json!([{"type": "payment_initiation"}])),
            Some(json!("repo.write")),
            "x",
            &b,
        )
        .unwrap();
        assert_eq!(src.as_str(), "scope_string");
    }

    #[test]
    fn authorization_details_that_could_be_misread_are_refused() {
        let b = book(Unknown::Refuse);
        for (bad, why) in [
            (json!({"type": "exec"}), "not a list"),
            (json!([{"locations": ["/x"]}]), "no string `type`"),
            (
                json!([{"type": "exec", "locations": ["/x"], "actions": ["run"]}]),
                "\"actions\"",
            ),
            (json!([{"type": "exec", "paths": ["/x"]}]), "\"paths\""),
            (json!([{"type": "write"}]), "needs `locations`"),
            (json!([{"type": "write", "locations": [1]}]), "not a string"),
            (json!([{"type": "io_uring", "locations": []}]), "\"locations\""),
            (json!([1]), "not an object"),
        ] {
            let e = of(Some(bad.clone()), None, "x", &b).unwrap_err().to_string();
            assert!(e.contains(why), "{bad}: {e}");
        }
    }

    #[test]
    fn the_scope_object_is_todays_format() {
        let b = book(Unknown::Refuse);
        let (s, src) = of(None, Some(json!({"exec": ["/usr/bin/git"]})), "x", &b).unwrap();
        assert_eq!(
            (s.exec.as_slice(), src),
            (&["/usr/bin/git".to_string()][..], ScopeSource::ScopeObject)
        );
        let e = of(None, Some(json!({"exec": ["/a"], "bogus": 1})), "x", &b).unwrap_err();
        assert!(e.to_string().contains("bogus"), "{e}");
        let e = of(None, Some(json!(["repo.write"])), "x", &b).unwrap_err();
        assert!(e.to_string().contains("a list"), "{e}");
    }

    #[test]
    fn scope_strings_name_bundles_and_unknown_values_follow_the_rule_file() {
        let strict = book(Unknown::Refuse);
        let (s, src) = of(None, Some(json!("repo.write  net.api repo.write")), "x", &strict).unwrap();
        assert_eq!(
            src,
            ScopeSource::ScopeString {
                bundles: vec!["repo.write".into(), "net.api".into()],
                ignored: vec![]
            }
        );
        assert_eq!(s.exec, ["/usr/bin/git"], "the union, each entry once");
        assert_eq!(s.write, ["/srv/repo/"]);
        assert_eq!(s.connect, ["tcp:127.0.0.1:8443"]);
        let e = of(None, Some(json!("openid repo.write")), "x", &strict).unwrap_err();
        assert_eq!(e, CarrierError::UnknownValue("openid".into()));
        let lax = book(Unknown::Ignore);
        let (_, src) = of(None, Some(json!("openid repo.write")), "x", &lax).unwrap();
        assert_eq!(
            src,
            ScopeSource::ScopeString {
                bundles: vec!["repo.write".into()],
                ignored: vec!["openid".into()]
            }
        );
        // Nothing known, ignored: the identity binding is next.
        let (s, src) = of(
            None,
            Some(json!("openid profile")),
            "spiffe://corp.test/agent/coder",
            &lax,
        )
        .unwrap();
        assert_eq!(src.as_str(), "identity");
        assert_eq!(s.exec, ["/usr/bin/make"]);
        let e = of(None, Some(json!("openid")), "user:bob", &lax).unwrap_err();
        assert!(matches!(e, CarrierError::NoScope(_)), "{e}");
    }

    #[test]
    fn identities_bind_exact_entries_first_then_the_longest_pattern() {
        let b = book(Unknown::Refuse);
        let exec = |id: &str| of(None, None, id, &b).map(|(s, src)| (s.exec[0].clone(), src));
        let (e, src) = exec("spiffe://corp.test/agent/coder").unwrap();
        assert_eq!(e, "/usr/bin/make");
        assert_eq!(
            src,
            ScopeSource::Identity {
                identity: "spiffe://corp.test/agent/coder".into(),
                entry: "spiffe://corp.test/agent/coder".into()
            }
        );
        assert_eq!(exec("spiffe://corp.test/agent/tests").unwrap().0, "/usr/bin/true");
        assert_eq!(exec("spiffe://corp.test/ns/a/sa/b").unwrap().0, "/usr/bin/false");
        assert!(matches!(
            exec("spiffe://other.test/agent/coder"),
            Err(CarrierError::NoScope(_))
        ));
        // `*` stays within one segment.
        assert_eq!(exec("spiffe://corp.test/agent/x/y").unwrap().0, "/usr/bin/false");
        // A SPIFFE ID binds only where its own trust domain's bundle verified the token.
        let other = scope_of(
            Carriers {
                authorization_details: None,
                scope: None,
                identity: "spiffe://corp.test/agent/coder",
                issuer: "https://idp.test",
            },
            &b,
        );
        assert!(matches!(other, Err(CarrierError::NoScope(_))), "{other:?}");
        let bad = ScopeBook::compile(
            BTreeMap::new(),
            [("spiffe://corp.test/[!x]".to_string(), ScopeSpec::default())].into(),
            None,
        );
        assert!(matches!(bad, Err(BookError::Identity { .. })), "{bad:?}");
    }

    #[test]
    fn rule_file_books_are_checked_and_merged() {
        let bad = ScopeBook::compile(
            [("w".to_string(), spec(json!({"write": ["relative"]})))].into(),
            BTreeMap::new(),
            None,
        );
        assert!(matches!(bad, Err(BookError::Bundle { .. })), "{bad:?}");
        let bad = ScopeBook::compile(
            [("a b".to_string(), ScopeSpec::default())].into(),
            BTreeMap::new(),
            None,
        );
        assert!(matches!(bad, Err(BookError::BundleName(_))));
        let mut a = book(Unknown::Refuse);
        let same = book(Unknown::Refuse);
        a.merge(same, false).unwrap();
        let other = ScopeBook::compile(
            [("repo.write".to_string(), spec(json!({"write": ["/elsewhere/"]})))].into(),
            BTreeMap::new(),
            None,
        )
        .unwrap();
        assert!(matches!(a.merge(other, false), Err(BookError::Twice { .. })));
    }
}
