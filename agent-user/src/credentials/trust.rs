//! Trusted issuers: `--trust ISSUER=JWKS` (or `trust:` in a policy file), where JWKS is a file
//! or an `https://` URL. URL keys are fetched with reqwest over rustls, refreshed on a timer,
//! and the last good key set is kept when a refresh fails.
use std::{path::PathBuf, time::Duration};

use jsonwebtoken::jwk::JwkSet;

use super::token::Keys;

/// A JWKS larger than this is refused (a key set is a few KiB).
pub const MAX_JWKS_BYTES: usize = 1 << 20;
/// How long a JWKS fetch may take.
pub const FETCH_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JwksSource {
    File(PathBuf),
    Url(String),
}

/// One trusted issuer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Trust {
    pub issuer: String,
    pub source: JwksSource,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TrustError {
    #[error("--trust {0:?}: expected ISSUER=JWKS (a file path or an https:// URL)")]
    Syntax(String),
    #[error("--trust {0:?}: JWKS URLs must be https://")]
    NotHttps(String),
}

impl Trust {
    /// Parses `ISSUER=JWKS`.
    pub fn parse(arg: &str) -> Result<Trust, TrustError> {
        let (issuer, jwks) = arg
            .split_once('=')
            .filter(|(i, j)| !i.trim().is_empty() && !j.trim().is_empty())
            .ok_or_else(|| TrustError::Syntax(arg.into()))?;
        Trust::new(issuer.trim(), jwks.trim())
    }

    pub fn new(issuer: &str, jwks: &str) -> Result<Trust, TrustError> {
        let source = if jwks.starts_with("https://") {
            JwksSource::Url(jwks.into())
        } else if jwks.contains("://") {
            return Err(TrustError::NotHttps(format!("{issuer}={jwks}")));
        } else {
            JwksSource::File(PathBuf::from(jwks))
        };
        Ok(Trust {
            issuer: issuer.into(),
            source,
        })
    }
}

/// Why an issuer's key set could not be had: the issuer's state until a good set arrives
/// (tokens from it are refused with this reason).
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum JwksError {
    #[error("JWKS is {0} bytes; at most {MAX_JWKS_BYTES}")]
    TooLarge(usize),
    #[error("not a JWKS: {0}")]
    NotJwks(String),
    #[error("the JWKS has no keys")]
    NoKeys,
    #[error("every key in the JWKS needs a kid")]
    NoKid,
    #[error("key {kid:?}: {why}")]
    BadKey { kid: String, why: KeyError },
    /// Reading a JWKS file, or its contents (`why`).
    #[error("{path}: {why}")]
    File { path: String, why: String },
    /// Fetching a JWKS URL: the connection, the status, or the document (`why`).
    #[error("{url}: {why}")]
    Fetch { url: String, why: String },
    /// Keys handed to the daemon without a source (tests, the dev issuer).
    #[error("{0}")]
    Unavailable(String),
}

/// A key of a shape the verifier cannot rely on.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum KeyError {
    #[error("{field} is not base64url: {source}")]
    NotBase64 {
        field: &'static str,
        source: base64::DecodeError,
    },
    #[error("an OKP key of curve {0:?}: only Ed25519 is supported (EdDSA)")]
    OkpCurve(jsonwebtoken::jwk::EllipticCurve),
    #[error("an Ed25519 public key (x) is 32 bytes, this one {0}")]
    Ed25519Length(usize),
    #[error("a P-256 public key has 32-byte x and y, this one {x} and {y}")]
    P256Length { x: usize, y: usize },
}

/// Why no HTTPS client for JWKS URLs could be made.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("CA bundle {0}")]
    Ca(crate::tls::PemError),
    #[error("TLS: {0}")]
    Tls(#[from] rustls::Error),
    #[error("HTTPS client: {0}")]
    Http(#[from] reqwest::Error),
}

/// Parses a JWKS document, keeping only the keys Tether can use.
pub fn parse_jwks(bytes: &[u8]) -> Result<JwkSet, JwksError> {
    if bytes.len() > MAX_JWKS_BYTES {
        return Err(JwksError::TooLarge(bytes.len()));
    }
    let set: JwkSet = serde_json::from_slice(bytes).map_err(|e| JwksError::NotJwks(e.to_string()))?;
    if set.keys.is_empty() {
        return Err(JwksError::NoKeys);
    }
    if set.keys.iter().any(|k| k.common.key_id.is_none()) {
        return Err(JwksError::NoKid);
    }
    for k in &set.keys {
        check_key(k).map_err(|why| JwksError::BadKey {
            kid: k.common.key_id.clone().unwrap_or_default(),
            why,
        })?;
    }
    Ok(set)
}

/// The key shapes the verifier relies on. An Ed25519 `x` must be 32 bytes: jsonwebtoken 11.1
/// slices it to 32 without checking (a shorter one panicked the verifier, found by the `jwks`
/// fuzz target; a longer one was silently cut).
fn check_key(k: &jsonwebtoken::jwk::Jwk) -> Result<(), KeyError> {
    use base64::Engine as _;
    use jsonwebtoken::jwk::AlgorithmParameters;
    let len = |field: &'static str, v: &str| {
        base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(v.trim_end_matches('='))
            .map(|b| b.len())
            .map_err(|source| KeyError::NotBase64 { field, source })
    };
    match &k.algorithm {
        // jsonwebtoken takes every OKP key for Ed25519, whatever its crv.
        AlgorithmParameters::OctetKeyPair(p) if p.curve != jsonwebtoken::jwk::EllipticCurve::Ed25519 => {
            Err(KeyError::OkpCurve(p.curve.clone()))
        }
        AlgorithmParameters::OctetKeyPair(p) => match len("x", &p.x)? {
            32 => Ok(()),
            n => Err(KeyError::Ed25519Length(n)),
        },
        AlgorithmParameters::EllipticCurve(p) if p.curve == jsonwebtoken::jwk::EllipticCurve::P256 => {
            match (len("x", &p.x)?, len("y", &p.y)?) {
                (32, 32) => Ok(()),
                (x, y) => Err(KeyError::P256Length { x, y }),
            }
        }
        _ => Ok(()),
    }
}

/// Reads a JWKS file.
pub fn read_file(path: &std::path::Path) -> Result<JwkSet, JwksError> {
    let file = |why: String| JwksError::File {
        path: path.display().to_string(),
        why,
    };
    let bytes = std::fs::read(path).map_err(|e| file(e.to_string()))?;
    parse_jwks(&bytes).map_err(|e| file(e.to_string()))
}

/// An HTTPS client for JWKS URLs: rustls with the web PKI roots, or only the roots of
/// `ca_bundle` when one is given.
pub fn https_client(ca_bundle: Option<&std::path::Path>) -> Result<reqwest::Client, ClientError> {
    let roots = crate::tls::root_store(ca_bundle).map_err(ClientError::Ca)?;
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(reqwest::Client::builder()
        .use_preconfigured_tls(config)
        .timeout(FETCH_TIMEOUT)
        .https_only(true)
        .redirect(reqwest::redirect::Policy::none())
        .build()?)
}

/// Fetches a JWKS URL.
pub async fn fetch(client: &reqwest::Client, url: &str) -> Result<JwkSet, JwksError> {
    let fetch = |why: String| JwksError::Fetch { url: url.into(), why };
    let resp = client
        .get(url)
        .send()
        .await
        .map_err(|e| fetch(crate::tls::error_chain(&e)))?;
    if !resp.status().is_success() {
        return Err(fetch(format!("HTTP {}", resp.status())));
    }
    let bytes = resp.bytes().await.map_err(|e| fetch(crate::tls::error_chain(&e)))?;
    parse_jwks(&bytes).map_err(|e| fetch(e.to_string()))
}

/// Loads every issuer's keys once: files are read, URLs fetched. A failure is kept as the
/// issuer's state (tokens from it are refused with that reason), not fatal.
pub async fn load_all(trust: &[Trust], client: &reqwest::Client) -> Keys {
    let mut keys = Keys::default();
    for t in trust {
        let set = match &t.source {
            JwksSource::File(p) => read_file(p),
            JwksSource::Url(u) => fetch(client, u).await,
        };
        keys.by_issuer.insert(t.issuer.clone(), set);
    }
    keys
}

/// Applies one fetch result to `keys`: a good set replaces the old one; a failure keeps the
/// last good set, or is recorded when there is none. Returns the failure, if any.
pub fn merge(keys: &mut Keys, issuer: &str, fetched: Result<JwkSet, JwksError>) -> Option<JwksError> {
    match fetched {
        Ok(set) => {
            keys.by_issuer.insert(issuer.into(), Ok(set));
            None
        }
        Err(e) => {
            if !matches!(keys.by_issuer.get(issuer), Some(Ok(_))) {
                keys.by_issuer.insert(issuer.into(), Err(e.clone()));
            }
            Some(e)
        }
    }
}

/// Refreshes the URL issuers in `keys`: a new good set replaces the old one; a failure keeps
/// the last good set (and is returned for logging), or records the failure when there is none.
pub async fn refresh(trust: &[Trust], client: &reqwest::Client, keys: &std::sync::RwLock<Keys>) -> Vec<String> {
    let mut failures = Vec::new();
    for t in trust {
        let JwksSource::Url(url) = &t.source else {
            continue;
        };
        let fetched = fetch(client, url).await;
        let Ok(mut k) = keys.write() else {
            continue;
        };
        if let Some(e) = merge(&mut k, &t.issuer, fetched) {
            failures.push(format!("issuer {}: {e}", t.issuer));
        }
    }
    failures
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Found by the `jwks` fuzz target: a short Ed25519 key panicked the verifier.
    #[test]
    fn malformed_ed25519_and_p256_keys_are_refused_with_the_reason() {
        let short = br#"{"keys":[{"kty":"OKP","crv":"Ed25519","kid":"k1","x":"AAAA"}]}"#;
        let e = parse_jwks(short).unwrap_err();
        let e = e.to_string();
        assert!(e.contains("\"k1\"") && e.contains("32 bytes, this one 3"), "{e}");
        let ec = br#"{"keys":[{"kty":"EC","crv":"P-256","kid":"e","x":"AAAA","y":"AAAA"}]}"#;
        assert!(parse_jwks(ec).unwrap_err().to_string().contains("32-byte x and y"));
        let p384 = br#"{"keys":[{"kty":"EC","crv":"P-384","kid":"e","x":"AAAA","y":"AAAA"}]}"#;
        assert!(parse_jwks(p384).is_ok(), "keys Tether does not use are not checked");
    }

    #[test]
    fn trust_arguments() {
        assert_eq!(
            Trust::parse("https://issuer.test=/etc/tether/jwks.json").unwrap(),
            Trust {
                issuer: "https://issuer.test".into(),
                source: JwksSource::File("/etc/tether/jwks.json".into())
            }
        );
        assert_eq!(
            Trust::parse("corp=https://idp.corp/jwks").unwrap().source,
            JwksSource::Url("https://idp.corp/jwks".into())
        );
        assert!(matches!(Trust::parse("no-equals"), Err(TrustError::Syntax(_))));
        assert!(matches!(Trust::parse("=x"), Err(TrustError::Syntax(_))));
        assert!(matches!(
            Trust::parse("i=http://plain/jwks"),
            Err(TrustError::NotHttps(_))
        ));
    }

    #[test]
    fn a_failed_refresh_keeps_the_last_good_keys() {
        let good = parse_jwks(
            br#"{"keys":[{"kty":"OKP","crv":"Ed25519","kid":"k1","x":"11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"}]}"#,
        )
        .unwrap();
        let mut keys = Keys::default();
        let down = || JwksError::Unavailable("down".into());
        assert_eq!(merge(&mut keys, "i", Err(down())), Some(down()));
        assert_eq!(
            keys.by_issuer["i"].as_ref().unwrap_err().to_string(),
            "down",
            "no good keys yet: the failure is the state"
        );
        assert_eq!(merge(&mut keys, "i", Ok(good.clone())), None);
        let garbage = || JwksError::Unavailable("garbage".into());
        assert_eq!(merge(&mut keys, "i", Err(garbage())), Some(garbage()));
        assert_eq!(
            keys.by_issuer["i"].as_ref().unwrap().keys.len(),
            1,
            "the last good keys stay"
        );
    }

    #[test]
    fn jwks_documents_are_checked() {
        assert!(parse_jwks(b"garbage").unwrap_err().to_string().contains("not a JWKS"));
        assert!(
            parse_jwks(br#"{"keys":[]}"#)
                .unwrap_err()
                .to_string()
                .contains("no keys")
        );
        let no_kid = br#"{"keys":[{"kty":"OKP","crv":"Ed25519","x":"11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"}]}"#;
        assert!(parse_jwks(no_kid).unwrap_err().to_string().contains("kid"));
        let ok =
            br#"{"keys":[{"kty":"OKP","crv":"Ed25519","kid":"k1","x":"11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"}]}"#;
        assert_eq!(parse_jwks(ok).unwrap().keys.len(), 1);
        assert!(parse_jwks(&vec![b' '; MAX_JWKS_BYTES + 1]).is_err());
    }
}
