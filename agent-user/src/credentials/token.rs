//! Task credentials: compact JWS (JWT) signed with RS256/384/512, PS256/384/512, ES256,
//! ES384 or EdDSA, verified with the jsonwebtoken crate against the issuer's keys; `none` and
//! the symmetric algorithms are refused. Every check that depends on time takes `now` as an
//! argument, so the whole verification is pure and tested without a clock.
//!
//! Claims (the contract with issuers, also in the README): `iss` (picks the issuer's keys; a
//! SPIFFE JWT-SVID may leave it out, its trust domain is then that of `sub`), `sub` (the
//! principal the task acts for), `act` (RFC 8693 actor chain, outermost = current actor),
//! `may_act` (who may be that actor), `aud` (one of the issuer's accepted audiences; `tether`
//! unless the rule file says otherwise), `jti` (the task id; else the Transaction Token's
//! `txn`; else, for a JWT-SVID, a digest of the token), `iat`, `nbf`, `exp`, the scope
//! carriers ([`super::carriers`]) and the Transaction Token context (`txn`, `tctx`, `rctx`,
//! `req_wl`).
use std::collections::HashMap;

use base64::Engine as _;
use jsonwebtoken::{Algorithm, DecodingKey, Validation, jwk::Jwk};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::{
    carriers::{self, CarrierError, Carriers, ScopeBook, ScopeSource},
    scope::{CompiledScope, ScopeError, ScopeSpec},
    trust::{self, Acceptance, AlgorithmError, JwksError, KeySet, Profile, Trust},
};

/// The audience a Tether credential names unless its issuer's entry says otherwise.
pub const AUDIENCE: &str = "tether";
/// A larger token is refused before it is parsed.
pub const MAX_TOKEN_BYTES: usize = 16 * 1024;
/// Default longest delegation chain (principal excluded), configurable.
pub const DEFAULT_MAX_CHAIN: usize = 8;
/// At most this many keys are tried for a token without a `kid`.
pub const MAX_CANDIDATES: usize = 4;
/// The header members a JWT-SVID may carry (SPIFFE JWT-SVID 3).
pub const SVID_HEADER: &[&str] = &["alg", "kid", "typ"];

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("token is {0} bytes; at most {MAX_TOKEN_BYTES} are accepted")]
    TooLarge(usize),
    #[error("malformed token: {0}")]
    Malformed(String),
    #[error("{0}")]
    Algorithm(#[from] AlgorithmError),
    #[error("issuer {iss:?} does not accept {alg:?} (it accepts {accepted})")]
    AlgorithmNotAccepted { iss: String, alg: String, accepted: String },
    #[error("header typ {typ:?} is not accepted by issuer {iss:?}")]
    Typ { iss: String, typ: Option<String> },
    #[error("header names critical extensions {0:?}, which Tether does not implement (RFC 7515 4.1.11)")]
    Crit(Vec<String>),
    #[error("a JWT-SVID header carries only alg, kid and typ; this one also {0:?}")]
    SvidHeader(Vec<String>),
    #[error("a JWT-SVID needs a kid")]
    SvidKid,
    #[error("sub {sub:?} is not a SPIFFE ID of trust domain {trust_domain:?}")]
    SvidSubject { sub: String, trust_domain: String },
    #[error("issuer {0:?} is not trusted (see --trust)")]
    UnknownIssuer(String),
    #[error("issuer {iss:?} has no key with kid {kid:?} for {alg}")]
    UnknownKid { iss: String, kid: String, alg: String },
    #[error("issuer {iss:?} has no key for {alg} (the token names no kid)")]
    NoKey { iss: String, alg: String },
    #[error("issuer {iss:?} keys are unavailable: {reason}")]
    NoKeys { iss: String, reason: String },
    #[error("bad signature (kid {0:?})")]
    BadSignature(String),
    #[error("audience {aud:?} names none of {accepted:?}")]
    Audience { aud: Vec<String>, accepted: Vec<String> },
    #[error("expired at {exp} (now {now})")]
    Expired { exp: i64, now: i64 },
    #[error("not valid before {nbf} (now {now})")]
    NotYetValid { nbf: i64, now: i64 },
    #[error("claim {0} is missing or empty")]
    MissingClaim(&'static str),
    #[error("jti {0:?}: ids starting with sha256: are Tether's own (tokens without a jti)")]
    ReservedJti(String),
    #[error("the actor chain is {depth} deep; at most {max} is allowed")]
    ChainTooDeep { depth: usize, max: usize },
    #[error("may_act names {may_act:?}, but the current actor is {actor:?}")]
    MayAct { actor: String, may_act: String },
    #[error("bad scope: {0}")]
    Scope(#[from] ScopeError),
    #[error("{0}")]
    Carrier(#[from] CarrierError),
}

/// `aud`: one string or a list.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Eq)]
#[serde(untagged)]
pub enum Audience {
    One(String),
    Many(Vec<String>),
}

impl Audience {
    pub fn list(&self) -> Vec<String> {
        match self {
            Audience::One(a) => vec![a.clone()],
            Audience::Many(l) => l.clone(),
        }
    }
}

/// RFC 8693 `act`: the current actor, with the prior ones nested inside.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Eq)]
pub struct Actor {
    pub sub: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub act: Option<Box<Actor>>,
}

/// RFC 8693 `may_act`: who may act for `sub`.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Eq)]
pub struct MayAct {
    pub sub: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iss: Option<String>,
}

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Eq)]
pub struct Claims {
    #[serde(default)]
    pub iss: String,
    pub sub: String,
    pub aud: Audience,
    #[serde(default)]
    pub jti: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iat: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nbf: Option<i64>,
    pub exp: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub act: Option<Actor>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub may_act: Option<MayAct>,
    /// Tether's scope object or an OAuth scope string ([`super::carriers`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scope: Option<Value>,
    /// RFC 9396.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub authorization_details: Option<Value>,
    /// Transaction Tokens: the transaction id, its context, the requester's context and the
    /// requesting workload.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub txn: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tctx: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rctx: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub req_wl: Option<String>,
}

impl Verified {
    /// When the task's credential expires: `exp` with the issuer's leeway.
    pub fn expires(&self) -> i64 {
        self.claims.exp.saturating_add(self.leeway)
    }
}

impl Claims {
    /// The delegation chain from the principal to the current actor: `sub`, then the actors
    /// from the innermost (first delegate) to the outermost (current).
    pub fn chain(&self) -> Vec<String> {
        let mut actors = Vec::new();
        let mut a = self.act.as_ref();
        while let Some(x) = a {
            actors.push(x.sub.clone());
            a = x.act.as_deref();
        }
        actors.reverse();
        let mut chain = vec![self.sub.clone()];
        chain.extend(actors);
        chain
    }

    /// The current actor: the outermost `act`, else `sub`.
    pub fn actor(&self) -> &str {
        self.act.as_ref().map_or(&self.sub, |a| &a.sub)
    }
}

/// A verified credential.
#[derive(Debug, Clone)]
pub struct Verified {
    /// The compact JWS as presented (kept so that a restarted daemon can verify it again).
    pub token: String,
    /// When it was verified (seconds since the epoch): a restarted daemon verifies it again
    /// as of then, so a task bound before its `exp` keeps its identity after it.
    pub verified_at: i64,
    pub claims: Claims,
    /// The task id: `jti`, else `sha256:` and a digest of what was signed.
    pub id: String,
    /// Seconds of clock skew the issuer allows: the task's expiry is `exp` + this.
    pub leeway: i64,
    /// The trusted issuer (or `spiffe://DOMAIN`) whose keys verified it.
    pub issuer: String,
    /// Principal first, current actor last.
    pub chain: Vec<String>,
    pub scope: CompiledScope,
    pub scope_source: ScopeSource,
}

/// The issuers Tether trusts: issuer -> its keys, and what its tokens must be.
#[derive(Debug, Clone, Default)]
pub struct Keys {
    pub by_issuer: HashMap<String, Result<KeySet, JwksError>>,
    /// Issuers without an entry here accept what [`Acceptance::default`] accepts.
    pub accept: HashMap<String, Acceptance>,
}

impl Keys {
    /// Trusts `t` with its keys (or why there are none yet).
    pub fn trust(&mut self, t: Trust, set: Result<KeySet, JwksError>) {
        self.by_issuer.insert(t.issuer.clone(), set);
        self.accept.insert(t.issuer, t.accept);
    }
}

/// What a verification is checked against besides the token.
#[derive(Debug, Clone, Copy)]
pub struct Checks<'a> {
    pub keys: &'a Keys,
    pub scopes: &'a ScopeBook,
    /// Longest delegation chain (principal excluded).
    pub max_chain: usize,
}

/// The parts of a token read before its signature is checked: the header, and the claims
/// that pick the keys (nothing else of the unverified payload is used).
struct Unverified {
    alg: Algorithm,
    kid: Option<String>,
    typ: Option<String>,
    header_members: Vec<String>,
    iss: String,
    sub: String,
}

fn unverified(token: &str) -> Result<Unverified, TokenError> {
    #[derive(Deserialize)]
    struct Picks {
        iss: Option<String>,
        sub: Option<String>,
    }
    let malformed = |w: String| TokenError::Malformed(w);
    let mut parts = token.split('.');
    let (Some(h), Some(p), Some(_), None) = (parts.next(), parts.next(), parts.next(), parts.next()) else {
        return Err(malformed("not three dot-separated parts".into()));
    };
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let header = b64
        .decode(h)
        .map_err(|e| malformed(format!("header is not base64url: {e}")))?;
    let header: serde_json::Map<String, Value> =
        serde_json::from_slice(&header).map_err(|e| malformed(format!("header is not a JSON object: {e}")))?;
    let alg = match header.get("alg") {
        Some(Value::String(a)) => trust::algorithm(a)?,
        _ => return Err(malformed("header has no alg".into())),
    };
    if let Some(crit) = header.get("crit") {
        let names = crit
            .as_array()
            .map(|l| l.iter().map(|v| v.as_str().unwrap_or("?").to_string()).collect())
            .unwrap_or_else(|| vec![crit.to_string()]);
        return Err(TokenError::Crit(names));
    }
    let text = |k: &str| match header.get(k) {
        None => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(_) => Err(malformed(format!("header {k} is not a string"))),
    };
    let (kid, typ) = (text("kid")?, text("typ")?);
    let payload = b64
        .decode(p)
        .map_err(|e| malformed(format!("payload is not base64url: {e}")))?;
    let picks: Picks = serde_json::from_slice(&payload).map_err(|e| malformed(format!("payload is not JSON: {e}")))?;
    Ok(Unverified {
        alg,
        kid,
        typ,
        header_members: header.keys().cloned().collect(),
        iss: picks.iss.unwrap_or_default(),
        sub: picks.sub.unwrap_or_default(),
    })
}

/// The SPIFFE trust domain of a SPIFFE ID.
pub fn trust_domain(id: &str) -> Option<&str> {
    let rest = id.strip_prefix("spiffe://")?;
    let td = rest.split('/').next()?;
    (!td.is_empty()).then_some(td)
}

/// Verifies `token` at time `now` (seconds since the epoch).
pub fn verify(token: &str, checks: &Checks, now: i64) -> Result<Verified, TokenError> {
    let token = token.trim();
    if token.len() > MAX_TOKEN_BYTES {
        return Err(TokenError::TooLarge(token.len()));
    }
    let u = unverified(token)?;
    let keys = checks.keys;
    // The keys: those of `iss` where it is trusted; else, for a SPIFFE ID subject, those of
    // its trust domain (a JWT-SVID's `iss` is optional and not what it is verified by).
    let issuer = if keys.by_issuer.contains_key(&u.iss) {
        u.iss.clone()
    } else {
        match trust_domain(&u.sub).map(|td| format!("spiffe://{td}")) {
            Some(td) if keys.by_issuer.contains_key(&td) => td,
            Some(td) if u.iss.is_empty() => return Err(TokenError::UnknownIssuer(td)),
            _ if u.iss.is_empty() => return Err(TokenError::MissingClaim("iss")),
            _ => return Err(TokenError::UnknownIssuer(u.iss)),
        }
    };
    let default = Acceptance::default();
    let accept = keys.accept.get(&issuer).unwrap_or(&default);
    if !accept.algorithms.contains(&u.alg) {
        return Err(TokenError::AlgorithmNotAccepted {
            iss: issuer,
            alg: format!("{:?}", u.alg),
            accepted: accept
                .algorithms
                .iter()
                .map(|a| format!("{a:?}"))
                .collect::<Vec<_>>()
                .join(", "),
        });
    }
    if !accept.typ_ok(u.typ.as_deref()) {
        return Err(TokenError::Typ {
            iss: issuer,
            typ: u.typ,
        });
    }
    if let Profile::Spiffe { trust_domain: td } = &accept.profile {
        let extra: Vec<String> = u
            .header_members
            .iter()
            .filter(|m| !SVID_HEADER.contains(&m.as_str()))
            .cloned()
            .collect();
        if !extra.is_empty() {
            return Err(TokenError::SvidHeader(extra));
        }
        if u.kid.is_none() {
            return Err(TokenError::SvidKid);
        }
        if trust_domain(&u.sub) != Some(td.as_str()) {
            return Err(TokenError::SvidSubject {
                sub: u.sub,
                trust_domain: td.clone(),
            });
        }
    }
    let set = match keys.by_issuer.get(&issuer) {
        Some(Ok(set)) => set,
        Some(Err(reason)) => {
            return Err(TokenError::NoKeys {
                iss: issuer,
                reason: reason.to_string(),
            });
        }
        None => return Err(TokenError::UnknownIssuer(issuer)),
    };
    // The keys that may have signed it: its kid's, else every key of a type for its alg.
    let fits = |k: &&Jwk| trust::key_algorithms(k).contains(&u.alg);
    let candidates: Vec<&Jwk> = match &u.kid {
        Some(kid) => set
            .jwks
            .keys
            .iter()
            .filter(|k| k.common.key_id.as_deref() == Some(kid.as_str()))
            .filter(fits)
            .take(1)
            .collect(),
        // Without a kid every key of the type is a candidate; a bounded number (each costs
        // a signature check).
        None => set.jwks.keys.iter().filter(fits).take(MAX_CANDIDATES).collect(),
    };
    if candidates.is_empty() {
        let alg = format!("{:?}", u.alg);
        return Err(match u.kid {
            Some(kid) => TokenError::UnknownKid { iss: issuer, kid, alg },
            None => TokenError::NoKey { iss: issuer, alg },
        });
    }
    // Signature and algorithm only; every claim is checked below, against `now`.
    let mut validation = Validation::new(u.alg);
    validation.required_spec_claims.clear();
    validation.validate_exp = false;
    validation.validate_nbf = false;
    validation.validate_aud = false;
    let kid = u.kid.clone().unwrap_or_default();
    let mut outcome = Err(TokenError::BadSignature(kid.clone()));
    for jwk in candidates {
        // A key jsonwebtoken cannot read is skipped (the others may still verify).
        let Ok(key) = DecodingKey::from_jwk(jwk) else {
            continue;
        };
        match jsonwebtoken::decode::<Claims>(token, &key, &validation) {
            Ok(data) => {
                outcome = Ok(data.claims);
                break;
            }
            Err(e) => {
                outcome = Err(match e.kind() {
                    jsonwebtoken::errors::ErrorKind::InvalidSignature => TokenError::BadSignature(kid.clone()),
                    _ => TokenError::Malformed(e.to_string()),
                });
                if !matches!(outcome, Err(TokenError::BadSignature(_))) {
                    break;
                }
            }
        }
    }
    let claims = outcome?;
    check_claims(&claims, accept, now, checks.max_chain)?;
    let (spec, scope_source) = carriers::scope_of(
        Carriers {
            authorization_details: claims.authorization_details.as_ref(),
            scope: claims.scope.as_ref(),
            identity: claims.actor(),
            issuer: &issuer,
        },
        checks.scopes,
    )?;
    let scope = CompiledScope::compile(&spec)?;
    let id = task_id(&claims, token);
    Ok(Verified {
        leeway: accept.leeway.min(i64::MAX as u64) as i64,
        token: token.to_string(),
        verified_at: now,
        chain: claims.chain(),
        claims,
        id,
        issuer,
        scope,
        scope_source,
    })
}

/// Task ids made from a token's digest start with this; a `jti` may not.
pub const DIGEST_ID: &str = "sha256:";

/// The task id of verified claims: `jti`, else a digest of what was signed (header and
/// claims: the same token under another valid signature, such as ECDSA's (r, n-s), is the
/// same task).
fn task_id(c: &Claims, token: &str) -> String {
    use sha2::Digest as _;
    if !c.jti.trim().is_empty() {
        return c.jti.clone();
    }
    let signed = token.rsplit_once('.').map_or(token, |(s, _)| s);
    let d = sha2::Sha256::digest(signed.as_bytes());
    let hex: String = d[..16].iter().map(|b| format!("{b:02x}")).collect();
    format!("{DIGEST_ID}{hex}")
}

/// The time and shape checks of verified claims, as issuer `accept` wants them.
pub fn check_claims(c: &Claims, accept: &Acceptance, now: i64, max_chain: usize) -> Result<(), TokenError> {
    if c.sub.trim().is_empty() {
        return Err(TokenError::MissingClaim("sub"));
    }
    let spiffe = matches!(accept.profile, Profile::Spiffe { .. });
    // A task needs an id: `jti`, or a Transaction Token's `txn`; a JWT-SVID has neither.
    let has_id = !c.jti.trim().is_empty() || c.txn.as_ref().is_some_and(|t| !t.trim().is_empty());
    if !spiffe && !has_id {
        return Err(TokenError::MissingClaim("jti"));
    }
    if c.jti.starts_with(DIGEST_ID) {
        return Err(TokenError::ReservedJti(c.jti.clone()));
    }
    if !spiffe && c.iss.trim().is_empty() {
        return Err(TokenError::MissingClaim("iss"));
    }
    let aud = c.aud.list();
    if !aud.iter().any(|a| accept.audiences.contains(a)) {
        return Err(TokenError::Audience {
            aud,
            accepted: accept.audiences.clone(),
        });
    }
    let leeway = accept.leeway.min(i64::MAX as u64) as i64;
    if now >= c.exp.saturating_add(leeway) {
        return Err(TokenError::Expired { exp: c.exp, now });
    }
    if let Some(nbf) = c.nbf
        && now < nbf.saturating_sub(leeway)
    {
        return Err(TokenError::NotYetValid { nbf, now });
    }
    let depth = c.chain().len() - 1;
    if depth > max_chain {
        return Err(TokenError::ChainTooDeep { depth, max: max_chain });
    }
    if let (Some(may), Some(act)) = (&c.may_act, &c.act)
        && may.sub != act.sub
    {
        return Err(TokenError::MayAct {
            actor: act.sub.clone(),
            may_act: may.sub.clone(),
        });
    }
    Ok(())
}

/// The scope object a development credential carries.
pub fn scope_claim(spec: &ScopeSpec) -> Value {
    serde_json::to_value(spec).unwrap_or_default()
}
