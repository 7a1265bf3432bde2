//! Task credentials: compact JWS (JWT) signed with EdDSA (Ed25519) or ES256, verified with the
//! jsonwebtoken crate against the issuer's JWKS. Every check that depends on time takes `now`
//! as an argument, so the whole verification is pure and tested without a clock.
//!
//! Claims (the contract with issuers, also in the README):
//! `iss`, `sub` (the principal the task acts for), `act` (RFC 8693 actor chain, outermost =
//! current actor), `aud` (must include `tether`), `jti` (the task id), `iat`, `nbf`, `exp`, and
//! `scope` ([`super::scope`]).
use std::collections::HashMap;

use base64::Engine as _;
use jsonwebtoken::{Algorithm, DecodingKey, Validation, jwk::JwkSet};
use serde::{Deserialize, Serialize};

use super::scope::{CompiledScope, ScopeError, ScopeSpec};

/// The audience every Tether credential must name.
pub const AUDIENCE: &str = "tether";
/// A larger token is refused before it is parsed.
pub const MAX_TOKEN_BYTES: usize = 16 * 1024;
/// Default longest delegation chain (principal excluded), configurable.
pub const DEFAULT_MAX_CHAIN: usize = 8;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("token is {0} bytes; at most {MAX_TOKEN_BYTES} are accepted")]
    TooLarge(usize),
    #[error("malformed token: {0}")]
    Malformed(String),
    #[error("unsupported algorithm {0} (EdDSA or ES256)")]
    Algorithm(String),
    #[error("the token header has no `kid`: the issuer's key cannot be picked")]
    NoKid,
    #[error("issuer {0:?} is not trusted (see --trust)")]
    UnknownIssuer(String),
    #[error("issuer {iss:?} has no key with kid {kid:?}")]
    UnknownKid { iss: String, kid: String },
    #[error("issuer {iss:?} keys are unavailable: {reason}")]
    NoKeys { iss: String, reason: String },
    #[error("bad signature (kid {0:?})")]
    BadSignature(String),
    #[error("audience {0:?} does not include \"tether\"")]
    Audience(Vec<String>),
    #[error("expired at {exp} (now {now})")]
    Expired { exp: i64, now: i64 },
    #[error("not valid before {nbf} (now {now})")]
    NotYetValid { nbf: i64, now: i64 },
    #[error("claim {0} is missing or empty")]
    MissingClaim(&'static str),
    #[error("the actor chain is {depth} deep; at most {max} is allowed")]
    ChainTooDeep { depth: usize, max: usize },
    #[error("bad scope: {0}")]
    Scope(#[from] ScopeError),
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

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Eq)]
pub struct Claims {
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
    pub scope: ScopeSpec,
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
    /// Principal first, current actor last.
    pub chain: Vec<String>,
    pub scope: CompiledScope,
}

/// The issuers Tether trusts: issuer -> its keys.
#[derive(Debug, Clone, Default)]
pub struct Keys {
    pub by_issuer: HashMap<String, Result<JwkSet, super::trust::JwksError>>,
}

/// Verifies `token` at time `now` (seconds since the epoch).
pub fn verify(token: &str, keys: &Keys, now: i64, max_chain: usize) -> Result<Verified, TokenError> {
    let token = token.trim();
    if token.len() > MAX_TOKEN_BYTES {
        return Err(TokenError::TooLarge(token.len()));
    }
    let header = jsonwebtoken::decode_header(token).map_err(|e| TokenError::Malformed(e.to_string()))?;
    if !matches!(header.alg, Algorithm::EdDSA | Algorithm::ES256) {
        return Err(TokenError::Algorithm(format!("{:?}", header.alg)));
    }
    let kid = header.kid.clone().ok_or(TokenError::NoKid)?;
    // The issuer picks the keys, so it is read before the signature is checked; nothing else
    // from the unverified payload is used.
    let iss = unverified_issuer(token)?;
    let jwks = match keys.by_issuer.get(&iss) {
        None => return Err(TokenError::UnknownIssuer(iss)),
        Some(Err(reason)) => {
            return Err(TokenError::NoKeys {
                iss,
                reason: reason.to_string(),
            });
        }
        Some(Ok(jwks)) => jwks,
    };
    let jwk = jwks.find(&kid).ok_or_else(|| TokenError::UnknownKid {
        iss: iss.clone(),
        kid: kid.clone(),
    })?;
    let key = DecodingKey::from_jwk(jwk).map_err(|e| TokenError::NoKeys {
        iss: iss.clone(),
        reason: format!("key {kid:?}: {e}"),
    })?;
    // Signature and algorithm only; every claim is checked below, against `now`.
    let mut validation = Validation::new(header.alg);
    validation.required_spec_claims.clear();
    validation.validate_exp = false;
    validation.validate_nbf = false;
    validation.validate_aud = false;
    let data = jsonwebtoken::decode::<Claims>(token, &key, &validation).map_err(|e| match e.kind() {
        jsonwebtoken::errors::ErrorKind::InvalidSignature => TokenError::BadSignature(kid.clone()),
        jsonwebtoken::errors::ErrorKind::InvalidAlgorithm => {
            TokenError::Algorithm(format!("{:?} does not match key {kid:?}", header.alg))
        }
        _ => TokenError::Malformed(e.to_string()),
    })?;
    let claims = data.claims;
    check_claims(&claims, now, max_chain)?;
    let scope = CompiledScope::compile(&claims.scope)?;
    Ok(Verified {
        token: token.to_string(),
        verified_at: now,
        chain: claims.chain(),
        claims,
        scope,
    })
}

/// The time and shape checks of verified claims.
pub fn check_claims(c: &Claims, now: i64, max_chain: usize) -> Result<(), TokenError> {
    for (name, v) in [("iss", &c.iss), ("sub", &c.sub), ("jti", &c.jti)] {
        if v.trim().is_empty() {
            return Err(TokenError::MissingClaim(name));
        }
    }
    let aud = c.aud.list();
    if !aud.iter().any(|a| a == AUDIENCE) {
        return Err(TokenError::Audience(aud));
    }
    if now >= c.exp {
        return Err(TokenError::Expired { exp: c.exp, now });
    }
    if let Some(nbf) = c.nbf
        && now < nbf
    {
        return Err(TokenError::NotYetValid { nbf, now });
    }
    let depth = c.chain().len() - 1;
    if depth > max_chain {
        return Err(TokenError::ChainTooDeep { depth, max: max_chain });
    }
    Ok(())
}

fn unverified_issuer(token: &str) -> Result<String, TokenError> {
    #[derive(Deserialize)]
    struct Iss {
        iss: Option<String>,
    }
    let payload = token
        .split('.')
        .nth(1)
        .ok_or_else(|| TokenError::Malformed("not three dot-separated parts".into()))?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload)
        .map_err(|e| TokenError::Malformed(format!("payload is not base64url: {e}")))?;
    let iss: Iss =
        serde_json::from_slice(&bytes).map_err(|e| TokenError::Malformed(format!("payload is not JSON: {e}")))?;
    iss.iss.filter(|i| !i.is_empty()).ok_or(TokenError::MissingClaim("iss"))
}
