//! A development issuer, for standalone use and tests: `tether token keygen` makes a signing key
//! and the JWKS that verifies it; `tether token issue` signs task credentials with it. Keys are
//! generated and encoded by ed25519-dalek and p256 (PKCS#8 PEM), tokens signed by jsonwebtoken.
use std::{path::Path, time::Duration};

use base64::Engine as _;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use rand_core::{OsRng, RngCore};

use super::{
    scope::{CompiledScope, ScopeSpec},
    token::{Actor, Audience, Claims},
};

#[derive(Debug, thiserror::Error)]
pub enum IssuerError {
    #[error("{path}: {source}")]
    Io { path: String, source: std::io::Error },
    #[error("{path}: not a PKCS#8 PEM Ed25519 or P-256 private key")]
    BadKey { path: String },
    #[error("scope file {path}: {reason}")]
    Scope { path: String, reason: String },
    #[error("signing failed: {0}")]
    Sign(String),
    #[error("unknown algorithm {0:?} (EdDSA or ES256)")]
    Algorithm(String),
}

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// A signing key with its key id and public JWK.
pub struct SigningKey {
    pub alg: Algorithm,
    pub kid: String,
    pub pem: String,
    pub jwk: serde_json::Value,
}

fn ed25519(key: &ed25519_dalek::SigningKey) -> Result<SigningKey, IssuerError> {
    use ed25519_dalek::pkcs8::{EncodePrivateKey, spki::der::pem::LineEnding};
    let x = key.verifying_key().to_bytes();
    // The key id is derived from the public key, so `issue` finds it from the private key alone.
    let kid = format!("ed-{}", b64(&x[..9]));
    let pem = key
        .to_pkcs8_pem(LineEnding::LF)
        .map_err(|e| IssuerError::Sign(e.to_string()))?
        .to_string();
    Ok(SigningKey {
        alg: Algorithm::EdDSA,
        jwk: serde_json::json!({"kty": "OKP", "crv": "Ed25519", "x": b64(&x), "kid": kid, "alg": "EdDSA", "use": "sig"}),
        kid,
        pem,
    })
}

fn p256(key: &p256::SecretKey) -> Result<SigningKey, IssuerError> {
    use p256::{
        elliptic_curve::sec1::ToEncodedPoint,
        pkcs8::{EncodePrivateKey, LineEnding},
    };
    let point = key.public_key().to_encoded_point(false);
    let (x, y) = (
        point.x().map(|v| v.to_vec()).unwrap_or_default(),
        point.y().map(|v| v.to_vec()).unwrap_or_default(),
    );
    let kid = format!("es-{}", b64(&x[..9.min(x.len())]));
    let pem = key
        .to_pkcs8_pem(LineEnding::LF)
        .map_err(|e| IssuerError::Sign(e.to_string()))?
        .to_string();
    Ok(SigningKey {
        alg: Algorithm::ES256,
        jwk: serde_json::json!({"kty": "EC", "crv": "P-256", "x": b64(&x), "y": b64(&y), "kid": kid, "alg": "ES256", "use": "sig"}),
        kid,
        pem,
    })
}

/// A new random key: `EdDSA` (Ed25519) or `ES256` (P-256).
pub fn generate(alg: &str) -> Result<SigningKey, IssuerError> {
    match alg {
        "EdDSA" | "Ed25519" | "ed25519" => {
            let mut seed = [0u8; 32];
            OsRng.fill_bytes(&mut seed);
            ed25519(&ed25519_dalek::SigningKey::from_bytes(&seed))
        }
        "ES256" | "es256" => p256(&p256::SecretKey::random(&mut OsRng)),
        other => Err(IssuerError::Algorithm(other.into())),
    }
}

/// Reads a key written by [`keygen`].
pub fn load(path: &Path) -> Result<SigningKey, IssuerError> {
    let pem = std::fs::read_to_string(path).map_err(|source| IssuerError::Io {
        path: path.display().to_string(),
        source,
    })?;
    {
        use ed25519_dalek::pkcs8::DecodePrivateKey;
        if let Ok(k) = ed25519_dalek::SigningKey::from_pkcs8_pem(&pem) {
            return ed25519(&k);
        }
    }
    {
        use p256::pkcs8::DecodePrivateKey;
        if let Ok(k) = p256::SecretKey::from_pkcs8_pem(&pem) {
            return p256(&k);
        }
    }
    Err(IssuerError::BadKey {
        path: path.display().to_string(),
    })
}

/// Writes `DIR/issuer.key` (mode 0600) and `DIR/jwks.json`; returns the key.
pub fn keygen(dir: &Path, alg: &str) -> Result<SigningKey, IssuerError> {
    use std::os::unix::fs::OpenOptionsExt;
    let io = |path: &Path| {
        let path = path.display().to_string();
        move |source| IssuerError::Io { path, source }
    };
    std::fs::create_dir_all(dir).map_err(io(dir))?;
    let key = generate(alg)?;
    let key_path = dir.join("issuer.key");
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&key_path)
        .map_err(io(&key_path))?;
    std::io::Write::write_all(&mut f, key.pem.as_bytes()).map_err(io(&key_path))?;
    let jwks_path = dir.join("jwks.json");
    let jwks = serde_json::json!({"keys": [key.jwk]});
    std::fs::write(&jwks_path, format!("{jwks:#}\n")).map_err(io(&jwks_path))?;
    Ok(key)
}

/// What `tether token issue` puts in a credential.
#[derive(Debug, Clone)]
pub struct IssueRequest {
    pub iss: String,
    pub sub: String,
    /// Delegates in order: the first agent the principal delegated to, ..., the current actor.
    pub actors: Vec<String>,
    pub aud: Vec<String>,
    pub ttl: Duration,
    /// Valid from now + this.
    pub not_before: Duration,
    pub jti: Option<String>,
    pub scope: ScopeSpec,
}

/// Reads and checks a scope file (JSON, the `scope` claim).
pub fn read_scope(path: &Path) -> Result<ScopeSpec, IssuerError> {
    let err = |reason: String| IssuerError::Scope {
        path: path.display().to_string(),
        reason,
    };
    let text = std::fs::read_to_string(path).map_err(|e| err(e.to_string()))?;
    let spec: ScopeSpec = serde_json::from_str(&text).map_err(|e| err(e.to_string()))?;
    CompiledScope::compile(&spec).map_err(|e| err(e.to_string()))?;
    Ok(spec)
}

/// The claims of a new credential at time `now` (seconds since the epoch).
pub fn claims(req: &IssueRequest, now: i64) -> Claims {
    let act = req.actors.iter().fold(None, |inner: Option<Actor>, sub| {
        Some(Actor {
            sub: sub.clone(),
            act: inner.map(Box::new),
        })
    });
    let jti = req.jti.clone().unwrap_or_else(|| {
        let mut b = [0u8; 12];
        OsRng.fill_bytes(&mut b);
        format!("task-{}", b.iter().map(|x| format!("{x:02x}")).collect::<String>())
    });
    let nbf = now + req.not_before.as_secs() as i64;
    Claims {
        iss: req.iss.clone(),
        sub: req.sub.clone(),
        aud: if req.aud.len() == 1 {
            Audience::One(req.aud[0].clone())
        } else {
            Audience::Many(req.aud.clone())
        },
        jti,
        iat: Some(now),
        nbf: Some(nbf),
        exp: nbf + req.ttl.as_secs() as i64,
        act,
        may_act: None,
        scope: Some(super::token::scope_claim(&req.scope)),
        authorization_details: None,
        txn: None,
        tctx: None,
        rctx: None,
        req_wl: None,
    }
}

/// Signs `claims` with `key`.
pub fn sign(key: &SigningKey, claims: &Claims) -> Result<String, IssuerError> {
    let enc = match key.alg {
        Algorithm::EdDSA => EncodingKey::from_ed_pem(key.pem.as_bytes()),
        _ => EncodingKey::from_ec_pem(key.pem.as_bytes()),
    }
    .map_err(|e| IssuerError::Sign(e.to_string()))?;
    let mut header = Header::new(key.alg);
    header.kid = Some(key.kid.clone());
    jsonwebtoken::encode(&header, claims, &enc).map_err(|e| IssuerError::Sign(e.to_string()))
}
