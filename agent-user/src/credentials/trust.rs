//! Trusted issuers: `--trust ISSUER=JWKS` (or `trust:` in a rule file), where JWKS is a file,
//! an `https://` URL, or `discover` (OIDC discovery: the `jwks_uri` of
//! `ISSUER/.well-known/openid-configuration`); or a SPIFFE trust domain with its trust bundle
//! (a JWKS whose `spiffe_refresh_hint` says how often to fetch it again). Each carries what its
//! tokens must be ([`Acceptance`]: algorithms, `typ`, leeway, audiences, profile). URL keys are
//! fetched with reqwest over rustls and refreshed; the last good key set is kept when a refresh
//! fails.
use std::{path::PathBuf, time::Duration};

use jsonwebtoken::{
    Algorithm,
    jwk::{AlgorithmParameters, EllipticCurve, Jwk, JwkSet, KeyAlgorithm, PublicKeyUse},
};

use super::token::Keys;

/// A JWKS larger than this is refused (a key set is a few KiB).
pub const MAX_JWKS_BYTES: usize = 1 << 20;
/// How long a fetch may take.
pub const FETCH_TIMEOUT: Duration = Duration::from_secs(5);
/// Every algorithm a token may be signed with (`none` and the symmetric HS* never).
pub const ALGORITHMS: &[Algorithm] = &[
    Algorithm::RS256,
    Algorithm::RS384,
    Algorithm::RS512,
    Algorithm::PS256,
    Algorithm::PS384,
    Algorithm::PS512,
    Algorithm::ES256,
    Algorithm::ES384,
    Algorithm::EdDSA,
];
/// The `typ` values accepted where an issuer names none (a token without `typ` too): plain
/// JWTs, RFC 9068 access tokens, Transaction Tokens, and JOSE (JWT-SVIDs may say either).
pub const DEFAULT_TYP: &[&str] = &["jwt", "at+jwt", "txntoken+jwt", "jose"];
/// The smallest RSA key accepted.
pub const MIN_RSA_BITS: usize = 2048;
/// Bounds of a trust bundle's `spiffe_refresh_hint`, and how often other URLs are refreshed.
pub const REFRESH_MIN: Duration = Duration::from_secs(5);
pub const REFRESH_MAX: Duration = Duration::from_secs(24 * 3600);
pub const REFRESH_EVERY: Duration = Duration::from_secs(300);
/// A failed fetch is tried again after this.
pub const RETRY_AFTER: Duration = Duration::from_secs(30);

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JwksSource {
    File(PathBuf),
    Url(String),
    /// OIDC discovery from the issuer URL.
    Discovery(String),
}

impl JwksSource {
    /// Fetched over HTTPS (and so refreshed)?
    pub fn remote(&self) -> bool {
        !matches!(self, JwksSource::File(_))
    }

    pub fn describe(&self) -> String {
        match self {
            JwksSource::File(p) => p.display().to_string(),
            JwksSource::Url(u) => u.clone(),
            JwksSource::Discovery(i) => format!("discover ({})", discovery_url(i)),
        }
    }
}

/// Which token profile an issuer's tokens follow, beyond the common checks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Profile {
    /// OAuth/OIDC JWTs (RFC 9068 access tokens, RFC 8693 exchanged tokens, Transaction
    /// Tokens, Tether's development issuer).
    Jwt,
    /// SPIFFE JWT-SVIDs of one trust domain: `sub` is a SPIFFE ID of that domain, the
    /// header carries only `alg`, `kid` and `typ` (JWT or JOSE), the keys come from the
    /// domain's trust bundle, `iss` is not needed.
    Spiffe { trust_domain: String },
}

/// What an issuer's tokens must be.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Acceptance {
    pub algorithms: Vec<Algorithm>,
    /// Normalised `typ` values (lower case, no `application/`); None: [`DEFAULT_TYP`] or none.
    pub typ: Option<Vec<String>>,
    /// Clock skew allowed on `exp` and `nbf`, in seconds.
    pub leeway: u64,
    /// `aud` must name one of these.
    pub audiences: Vec<String>,
    pub profile: Profile,
}

impl Default for Acceptance {
    fn default() -> Self {
        Acceptance {
            algorithms: ALGORITHMS.to_vec(),
            typ: None,
            leeway: 0,
            audiences: vec![super::token::AUDIENCE.to_string()],
            profile: Profile::Jwt,
        }
    }
}

impl Acceptance {
    /// Is header `typ` acceptable?
    pub fn typ_ok(&self, typ: Option<&str>) -> bool {
        let spiffe = matches!(self.profile, Profile::Spiffe { .. });
        match (typ.map(normal_typ), &self.typ) {
            (None, None) => true,
            (None, Some(_)) => false,
            (Some(t), _) if spiffe && t != "jwt" && t != "jose" => false,
            (Some(t), None) => DEFAULT_TYP.contains(&t.as_str()),
            (Some(t), Some(list)) => list.contains(&t),
        }
    }
}

/// `typ` as compared: media types are case-insensitive and `application/` may be left out
/// (RFC 7515 4.1.9).
pub fn normal_typ(t: &str) -> String {
    let t = t.trim().to_ascii_lowercase();
    t.strip_prefix("application/").map(str::to_string).unwrap_or(t)
}

/// An algorithm name as a rule file or a header writes it: the asymmetric ones only.
pub fn algorithm(name: &str) -> Result<Algorithm, AlgorithmError> {
    match name {
        "none" | "None" | "NONE" => return Err(AlgorithmError::None),
        "HS256" | "HS384" | "HS512" => return Err(AlgorithmError::Symmetric(name.into())),
        _ => {}
    }
    ALGORITHMS
        .iter()
        .copied()
        .find(|a| format!("{a:?}") == name)
        .ok_or_else(|| AlgorithmError::Unknown(name.into()))
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AlgorithmError {
    #[error("algorithm \"none\" is refused: an unsigned token proves nothing")]
    None,
    #[error("algorithm {0} is refused: a shared secret would let anyone who verifies also sign")]
    Symmetric(String),
    #[error("algorithm {0:?} is not supported (RS256/384/512, PS256/384/512, ES256, ES384, EdDSA)")]
    Unknown(String),
}

/// One trusted issuer (or SPIFFE trust domain, named `spiffe://DOMAIN`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Trust {
    pub issuer: String,
    pub source: JwksSource,
    pub accept: Acceptance,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TrustError {
    #[error("--trust {0:?}: expected ISSUER=JWKS (a file path, an https:// URL, or `discover`)")]
    Syntax(String),
    #[error("--trust {0:?}: JWKS URLs must be https://")]
    NotHttps(String),
    #[error("issuer {0:?}: discovery needs an https:// issuer URL")]
    DiscoveryNotHttps(String),
    #[error("trust domain {0:?}: a SPIFFE trust domain is a DNS-like name (letters, digits, '.', '-', '_')")]
    TrustDomain(String),
    #[error("{0}")]
    Algorithm(#[from] AlgorithmError),
    #[error("audiences: at least one is needed")]
    NoAudience,
    #[error("typ: at least one value is needed (leave it out for the default)")]
    NoTyp,
    #[error("issuer {0:?}: spiffe:// names are trust domains (`trust_domain:` with its `bundle:`)")]
    SpiffeIssuer(String),
    #[error("issuer {0:?} is trusted twice: each issuer or trust domain once, with one key source and one acceptance")]
    Twice(String),
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

    /// An issuer with its keys at `jwks` (a file, an https:// URL, or `discover`), accepting
    /// what [`Acceptance::default`] accepts.
    pub fn new(issuer: &str, jwks: &str) -> Result<Trust, TrustError> {
        if issuer.starts_with("spiffe://") {
            return Err(TrustError::SpiffeIssuer(issuer.into()));
        }
        Trust::sourced(issuer, jwks)
    }

    fn sourced(issuer: &str, jwks: &str) -> Result<Trust, TrustError> {
        let source = if jwks == "discover" {
            if !issuer.starts_with("https://") {
                return Err(TrustError::DiscoveryNotHttps(issuer.into()));
            }
            JwksSource::Discovery(issuer.into())
        } else if jwks.starts_with("https://") {
            JwksSource::Url(jwks.into())
        } else if jwks.contains("://") {
            return Err(TrustError::NotHttps(format!("{issuer}={jwks}")));
        } else {
            JwksSource::File(PathBuf::from(jwks))
        };
        Ok(Trust {
            issuer: issuer.into(),
            source,
            accept: Acceptance::default(),
        })
    }

    /// A SPIFFE trust domain whose trust bundle is at `bundle` (a file or an https:// URL).
    pub fn spiffe(trust_domain: &str, bundle: &str) -> Result<Trust, TrustError> {
        check_trust_domain(trust_domain)?;
        if bundle == "discover" {
            return Err(TrustError::Syntax(format!("{trust_domain}={bundle}")));
        }
        let mut t = Trust::sourced(&format!("spiffe://{trust_domain}"), bundle)?;
        t.accept.profile = Profile::Spiffe {
            trust_domain: trust_domain.into(),
        };
        Ok(t)
    }

    /// Restricts the algorithms accepted.
    pub fn algorithms(mut self, names: &[String]) -> Result<Trust, TrustError> {
        let mut algs = Vec::new();
        for n in names {
            algs.push(algorithm(n.trim())?);
        }
        if algs.is_empty() {
            return Err(TrustError::Algorithm(AlgorithmError::Unknown(String::new())));
        }
        self.accept.algorithms = algs;
        Ok(self)
    }

    pub fn typ(mut self, values: &[String]) -> Result<Trust, TrustError> {
        if values.is_empty() {
            return Err(TrustError::NoTyp);
        }
        self.accept.typ = Some(values.iter().map(|v| normal_typ(v)).collect());
        Ok(self)
    }

    pub fn audiences(mut self, values: &[String]) -> Result<Trust, TrustError> {
        let values: Vec<String> = values
            .iter()
            .map(|v| v.trim().to_string())
            .filter(|v| !v.is_empty())
            .collect();
        if values.is_empty() {
            return Err(TrustError::NoAudience);
        }
        self.accept.audiences = values;
        Ok(self)
    }

    pub fn leeway(mut self, seconds: u64) -> Trust {
        self.accept.leeway = seconds;
        self
    }
}

/// A SPIFFE trust domain name: lower-case letters, digits, `.`, `-`, `_`, at most 255 bytes.
pub fn check_trust_domain(td: &str) -> Result<(), TrustError> {
    let ok = !td.is_empty()
        && td.len() <= 255
        && td
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(TrustError::TrustDomain(td.into()))
    }
}

/// Refuses an issuer (or trust domain) named twice: the later entry would silently replace
/// the earlier one's keys and acceptance.
pub fn check_unique(trust: &[Trust]) -> Result<(), TrustError> {
    let mut seen = std::collections::BTreeSet::new();
    for t in trust {
        if !seen.insert(t.issuer.as_str()) {
            return Err(TrustError::Twice(t.issuer.clone()));
        }
    }
    Ok(())
}

/// A usable key set, as fetched or read.
#[derive(Debug, Clone, PartialEq)]
pub struct KeySet {
    /// The keys a token may be verified with.
    pub jwks: JwkSet,
    /// Keys of the document left out, with why (kept for `tether status`).
    pub dropped: Vec<String>,
    /// A trust bundle's `spiffe_refresh_hint` (seconds).
    pub refresh_hint: Option<u64>,
}

impl KeySet {
    /// When to fetch the set again: its hint (bounded), else [`REFRESH_EVERY`].
    pub fn refresh_after(&self) -> Duration {
        self.refresh_hint
            .map(Duration::from_secs)
            .map_or(REFRESH_EVERY, |d| d.clamp(REFRESH_MIN, REFRESH_MAX))
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
    #[error("the JWKS has no key Tether can verify with: {}", .0.join("; "))]
    NoUsableKey(Vec<String>),
    /// Reading a JWKS file, or its contents (`why`).
    #[error("{path}: {why}")]
    File { path: String, why: String },
    /// Fetching a JWKS URL: the connection, the status, or the document (`why`).
    #[error("{url}: {why}")]
    Fetch { url: String, why: String },
    /// OIDC discovery: the configuration document, or its `issuer` / `jwks_uri`.
    #[error("discovery {url}: {why}")]
    Discovery { url: String, why: String },
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
    OkpCurve(EllipticCurve),
    #[error("an Ed25519 public key (x) is 32 bytes, this one {0}")]
    Ed25519Length(usize),
    #[error("a {curve} public key has {want}-byte x and y, this one {x} and {y}")]
    EcLength {
        curve: &'static str,
        want: usize,
        x: usize,
        y: usize,
    },
    #[error("an EC key of curve {0:?}: P-256 (ES256) and P-384 (ES384) are supported")]
    EcCurve(EllipticCurve),
    #[error("an RSA key of {0} bits: at least {MIN_RSA_BITS} are required")]
    RsaShort(usize),
    #[error("a symmetric (oct) key: shared secrets are never trusted")]
    Symmetric,
    #[error("a key for {0:?}, not for signatures")]
    Use(String),
    #[error("a key for algorithm {0:?}, which Tether does not verify with")]
    KeyAlgorithm(String),
    #[error("not a key Tether reads: {0}")]
    Unreadable(String),
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

/// Parses a JWKS document (or a SPIFFE trust bundle), keeping the keys Tether can verify
/// with: members it does not know, `x5c` chains, keys for other uses (encryption, X.509-SVIDs)
/// and keys of other types are accepted in the document and left out of the set, each with
/// its reason; a document with no usable key is refused with every reason.
pub fn parse_jwks(bytes: &[u8]) -> Result<KeySet, JwksError> {
    #[derive(serde::Deserialize)]
    struct Doc {
        keys: Vec<serde_json::Value>,
        #[serde(default)]
        spiffe_refresh_hint: Option<serde_json::Value>,
    }
    if bytes.len() > MAX_JWKS_BYTES {
        return Err(JwksError::TooLarge(bytes.len()));
    }
    let doc: Doc = serde_json::from_slice(bytes).map_err(|e| JwksError::NotJwks(e.to_string()))?;
    if doc.keys.is_empty() {
        return Err(JwksError::NoKeys);
    }
    let mut keys = Vec::new();
    let mut dropped = Vec::new();
    for (i, v) in doc.keys.into_iter().enumerate() {
        let name = v
            .get("kid")
            .and_then(|k| k.as_str())
            .map_or_else(|| format!("key #{i}"), |k| format!("key {k:?}"));
        match serde_json::from_value::<Jwk>(v)
            .map_err(|e| KeyError::Unreadable(e.to_string()))
            .and_then(|k| check_key(&k).map(|()| k))
        {
            Ok(k) => keys.push(k),
            Err(why) => dropped.push(format!("{name}: {why}")),
        }
    }
    if keys.is_empty() {
        return Err(JwksError::NoUsableKey(dropped));
    }
    // A hint that is not a positive integer is ignored (the default interval applies).
    let refresh_hint = doc.spiffe_refresh_hint.and_then(|h| h.as_u64()).filter(|h| *h > 0);
    Ok(KeySet {
        jwks: JwkSet { keys },
        dropped,
        refresh_hint,
    })
}

/// The algorithms a key verifies: from its type and curve, narrowed to its `alg` when it
/// names one. Keys without `alg` are matched by their type.
pub fn key_algorithms(k: &Jwk) -> Vec<Algorithm> {
    let by_type: &[Algorithm] = match &k.algorithm {
        AlgorithmParameters::RSA(_) => &ALGORITHMS[..6],
        AlgorithmParameters::EllipticCurve(p) if p.curve == EllipticCurve::P256 => &[Algorithm::ES256],
        AlgorithmParameters::EllipticCurve(p) if p.curve == EllipticCurve::P384 => &[Algorithm::ES384],
        AlgorithmParameters::OctetKeyPair(p) if p.curve == EllipticCurve::Ed25519 => &[Algorithm::EdDSA],
        _ => &[],
    };
    match &k.common.key_algorithm {
        None => by_type.to_vec(),
        Some(a) => by_type
            .iter()
            .copied()
            .filter(|x| format!("{x:?}") == format!("{a:?}"))
            .collect(),
    }
}

/// The key shapes the verifier relies on. An Ed25519 `x` must be 32 bytes: jsonwebtoken 11.1
/// slices it to 32 without checking (a shorter one panicked the verifier, found by the `jwks`
/// fuzz target; a longer one was silently cut). EC coordinates must fit their curve, RSA
/// moduli be at least [`MIN_RSA_BITS`].
fn check_key(k: &Jwk) -> Result<(), KeyError> {
    use base64::Engine as _;
    let bytes = |field: &'static str, v: &str| {
        base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(v.trim_end_matches('='))
            .map_err(|source| KeyError::NotBase64 { field, source })
    };
    match &k.common.public_key_use {
        None | Some(PublicKeyUse::Signature) => {}
        Some(PublicKeyUse::Other(u)) if u == "jwt-svid" => {}
        Some(PublicKeyUse::Encryption) => return Err(KeyError::Use("enc".into())),
        Some(PublicKeyUse::Other(u)) => return Err(KeyError::Use(u.clone())),
    }
    match &k.algorithm {
        AlgorithmParameters::OctetKey(_) => return Err(KeyError::Symmetric),
        // jsonwebtoken takes every OKP key for Ed25519, whatever its crv.
        AlgorithmParameters::OctetKeyPair(p) if p.curve != EllipticCurve::Ed25519 => {
            return Err(KeyError::OkpCurve(p.curve.clone()));
        }
        AlgorithmParameters::OctetKeyPair(p) => match bytes("x", &p.x)?.len() {
            32 => {}
            n => return Err(KeyError::Ed25519Length(n)),
        },
        AlgorithmParameters::EllipticCurve(p) => {
            let (curve, want) = match p.curve {
                EllipticCurve::P256 => ("P-256", 32),
                EllipticCurve::P384 => ("P-384", 48),
                ref c => return Err(KeyError::EcCurve(c.clone())),
            };
            match (bytes("x", &p.x)?.len(), bytes("y", &p.y)?.len()) {
                (x, y) if x == want && y == want => {}
                (x, y) => return Err(KeyError::EcLength { curve, want, x, y }),
            }
        }
        AlgorithmParameters::RSA(p) => {
            let n = bytes("n", &p.n)?;
            bytes("e", &p.e)?;
            let n: &[u8] = &n[n.iter().take_while(|b| **b == 0).count()..];
            let bits = n.first().map_or(0, |b| n.len() * 8 - b.leading_zeros() as usize);
            if bits < MIN_RSA_BITS {
                return Err(KeyError::RsaShort(bits));
            }
        }
        _ => return Err(KeyError::Unreadable("unknown key type".into())),
    }
    if key_algorithms(k).is_empty() {
        let alg = k
            .common
            .key_algorithm
            .as_ref()
            .map_or_else(String::new, |a: &KeyAlgorithm| format!("{a:?}"));
        return Err(KeyError::KeyAlgorithm(alg));
    }
    Ok(())
}

/// Reads a JWKS file.
pub fn read_file(path: &std::path::Path) -> Result<KeySet, JwksError> {
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
pub async fn fetch(client: &reqwest::Client, url: &str) -> Result<KeySet, JwksError> {
    let fetch = |why: String| JwksError::Fetch { url: url.into(), why };
    let bytes = crate::tls::get_capped(client, url, MAX_JWKS_BYTES)
        .await
        .map_err(fetch)?;
    parse_jwks(&bytes).map_err(|e| fetch(e.to_string()))
}

/// Where OIDC discovery reads an issuer's configuration.
pub fn discovery_url(issuer: &str) -> String {
    format!("{}/.well-known/openid-configuration", issuer.trim_end_matches('/'))
}

/// The `jwks_uri` of an OpenID Provider configuration document, which must name `issuer`
/// exactly (OpenID Connect Discovery 4.3) and point at an https:// URL.
pub fn jwks_uri(issuer: &str, document: &[u8]) -> Result<String, String> {
    #[derive(serde::Deserialize)]
    struct Config {
        issuer: Option<String>,
        jwks_uri: Option<String>,
    }
    let c: Config = serde_json::from_slice(document).map_err(|e| format!("not a configuration document: {e}"))?;
    match c.issuer.as_deref() {
        Some(i) if i == issuer => {}
        Some(i) => return Err(format!("it names issuer {i:?}, not {issuer:?}")),
        None => return Err("it names no issuer".into()),
    }
    match c.jwks_uri {
        Some(u) if u.starts_with("https://") => Ok(u),
        Some(u) => Err(format!("jwks_uri {u:?} is not https://")),
        None => Err("it has no jwks_uri".into()),
    }
}

/// OIDC discovery: the issuer's configuration, then its `jwks_uri`.
pub async fn discover(client: &reqwest::Client, issuer: &str) -> Result<KeySet, JwksError> {
    let url = discovery_url(issuer);
    let err = |why: String| JwksError::Discovery { url: url.clone(), why };
    let document = crate::tls::get_capped(client, &url, MAX_JWKS_BYTES)
        .await
        .map_err(err)?;
    let jwks = jwks_uri(issuer, &document).map_err(err)?;
    fetch(client, &jwks).await
}

/// Reads or fetches one issuer's keys.
pub async fn load(t: &Trust, client: &reqwest::Client) -> Result<KeySet, JwksError> {
    match &t.source {
        JwksSource::File(p) => read_file(p),
        JwksSource::Url(u) => fetch(client, u).await,
        JwksSource::Discovery(i) => discover(client, i).await,
    }
}

/// Loads every issuer's keys once: files are read, URLs fetched. A failure is kept as the
/// issuer's state (tokens from it are refused with that reason), not fatal.
pub async fn load_all(trust: &[Trust], client: &reqwest::Client) -> Keys {
    let mut keys = Keys::default();
    for t in trust {
        let set = load(t, client).await;
        keys.trust(t.clone(), set);
    }
    keys
}

/// Applies one fetch result to `keys`: a good set replaces the old one; a failure keeps the
/// last good set, or is recorded when there is none. Returns the failure, if any.
pub fn merge(keys: &mut Keys, issuer: &str, fetched: Result<KeySet, JwksError>) -> Option<JwksError> {
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

/// Refreshes, for ever, the issuers whose keys come over HTTPS: each when its set says
/// (a trust bundle's hint) or every [`REFRESH_EVERY`]; a failed fetch is tried again after
/// [`RETRY_AFTER`], the last good set staying meanwhile. `failed` hears of every failure.
pub async fn refresh(
    trust: Vec<Trust>,
    client: reqwest::Client,
    keys: std::sync::Arc<std::sync::RwLock<Keys>>,
    failed: impl Fn(&str, &JwksError),
) {
    use std::collections::HashMap;
    let start = tokio::time::Instant::now();
    let mut due: HashMap<String, tokio::time::Instant> = HashMap::new();
    for t in trust.iter().filter(|t| t.source.remote()) {
        let after = keys
            .read()
            .ok()
            .and_then(|k| {
                k.by_issuer
                    .get(&t.issuer)
                    .and_then(|r| r.as_ref().ok())
                    .map(KeySet::refresh_after)
            })
            .unwrap_or(RETRY_AFTER);
        due.insert(t.issuer.clone(), start + after);
    }
    loop {
        let Some(next) = due.values().min().copied() else {
            return;
        };
        tokio::time::sleep_until(next).await;
        let now = tokio::time::Instant::now();
        let ripe: Vec<&Trust> = trust
            .iter()
            .filter(|t| due.get(&t.issuer).is_some_and(|d| *d <= now))
            .collect();
        for t in ripe {
            let fetched = load(t, &client).await;
            let after = fetched.as_ref().map_or(RETRY_AFTER, KeySet::refresh_after);
            if let Ok(mut k) = keys.write()
                && let Some(e) = merge(&mut k, &t.issuer, fetched)
            {
                failed(&t.issuer, &e);
            }
            due.insert(t.issuer.clone(), tokio::time::Instant::now() + after);
        }
    }
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
        assert!(parse_jwks(p384).unwrap_err().to_string().contains("48-byte x and y"));
    }

    fn b64(bytes: &[u8]) -> String {
        use base64::Engine as _;
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
    }

    const ED_X: &str = "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo";

    #[test]
    fn trust_arguments() {
        assert_eq!(
            Trust::parse("https://issuer.test=/etc/tether/jwks.json").unwrap(),
            Trust {
                issuer: "https://issuer.test".into(),
                source: JwksSource::File("/etc/tether/jwks.json".into()),
                accept: Acceptance::default(),
            }
        );
        assert_eq!(
            Trust::parse("corp=https://idp.corp/jwks").unwrap().source,
            JwksSource::Url("https://idp.corp/jwks".into())
        );
        assert_eq!(
            Trust::parse("https://kc.corp/realms/a=discover").unwrap().source,
            JwksSource::Discovery("https://kc.corp/realms/a".into())
        );
        assert!(matches!(
            Trust::parse("corp=discover"),
            Err(TrustError::DiscoveryNotHttps(_))
        ));
        assert!(matches!(Trust::parse("no-equals"), Err(TrustError::Syntax(_))));
        assert!(matches!(Trust::parse("=x"), Err(TrustError::Syntax(_))));
        assert!(matches!(
            Trust::parse("i=http://plain/jwks"),
            Err(TrustError::NotHttps(_))
        ));
        let td = Trust::spiffe("corp.example", "/etc/spire/bundle.json").unwrap();
        assert_eq!(td.issuer, "spiffe://corp.example");
        assert_eq!(
            td.accept.profile,
            Profile::Spiffe {
                trust_domain: "corp.example".into()
            }
        );
        assert!(matches!(Trust::spiffe("Corp/x", "/b"), Err(TrustError::TrustDomain(_))));
        assert!(matches!(
            Trust::parse("spiffe://corp=/j"),
            Err(TrustError::SpiffeIssuer(_))
        ));
        let twice = [Trust::parse("i=/a").unwrap(), Trust::parse("i=/b").unwrap()];
        assert_eq!(check_unique(&twice), Err(TrustError::Twice("i".into())));
        assert!(check_unique(&twice[..1]).is_ok());
    }

    #[test]
    fn none_and_symmetric_algorithms_are_refused_by_name() {
        assert_eq!(algorithm("none"), Err(AlgorithmError::None));
        assert_eq!(algorithm("HS256"), Err(AlgorithmError::Symmetric("HS256".into())));
        assert!(matches!(algorithm("ES512"), Err(AlgorithmError::Unknown(_))));
        for a in ALGORITHMS {
            assert_eq!(algorithm(&format!("{a:?}")), Ok(*a));
        }
        let t = Trust::new("i", "/j").unwrap();
        assert!(t.clone().algorithms(&["RS256".into(), "HS256".into()]).is_err());
        assert_eq!(
            t.algorithms(&["PS256".into()]).unwrap().accept.algorithms,
            [Algorithm::PS256]
        );
    }

    #[test]
    fn typ_values_are_compared_as_media_types() {
        let any = Acceptance::default();
        for ok in [
            None,
            Some("JWT"),
            Some("at+jwt"),
            Some("application/at+JWT"),
            Some("txntoken+jwt"),
        ] {
            assert!(any.typ_ok(ok), "{ok:?}");
        }
        assert!(!any.typ_ok(Some("dpop+jwt")));
        let strict = Trust::new("i", "/j").unwrap().typ(&["at+jwt".into()]).unwrap().accept;
        assert!(strict.typ_ok(Some("application/at+jwt")));
        assert!(!strict.typ_ok(Some("JWT")));
        assert!(!strict.typ_ok(None), "a named list needs a typ");
        let svid = Trust::spiffe("td", "/b").unwrap().accept;
        assert!(svid.typ_ok(Some("JOSE")) && svid.typ_ok(Some("JWT")) && svid.typ_ok(None));
        assert!(!svid.typ_ok(Some("at+jwt")));
    }

    #[test]
    fn a_failed_refresh_keeps_the_last_good_keys() {
        let good =
            parse_jwks(format!(r#"{{"keys":[{{"kty":"OKP","crv":"Ed25519","kid":"k1","x":"{ED_X}"}}]}}"#).as_bytes())
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
            keys.by_issuer["i"].as_ref().unwrap().jwks.keys.len(),
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
        let no_kid = format!(r#"{{"keys":[{{"kty":"OKP","crv":"Ed25519","x":"{ED_X}"}}]}}"#);
        assert_eq!(
            parse_jwks(no_kid.as_bytes()).unwrap().jwks.keys.len(),
            1,
            "keys without kid are kept"
        );
        assert!(parse_jwks(&vec![b' '; MAX_JWKS_BYTES + 1]).is_err());
    }

    /// A JWKS as issuers publish them: several keys, x5c chains, `use`, members nobody
    /// defined; keys Tether cannot or must not verify with are left out, each with why.
    #[test]
    fn real_world_key_sets_keep_what_verifies_and_say_what_was_left_out() {
        let n2048 = b64(&[0xc5; 256]);
        let n1024 = b64(&[0xc5; 128]);
        let e = b64(&[1, 0, 1]);
        let doc = serde_json::json!({
            "keys": [
                {"kid": "rsa", "kty": "RSA", "use": "sig", "n": n2048, "e": e, "x5c": ["MIIC..."], "x5t": "abc", "x5t#S256": "def"},
                {"kid": "rsa-enc", "kty": "RSA", "use": "enc", "alg": "RSA-OAEP", "n": n2048, "e": e},
                {"kid": "short", "kty": "RSA", "alg": "RS256", "n": n1024, "e": e},
                {"kid": "hmac", "kty": "oct", "k": "c2VjcmV0"},
                {"kid": "p384", "kty": "EC", "crv": "P-384", "x": b64(&[1; 48]), "y": b64(&[2; 48])},
                {"kid": "bad-p256", "kty": "EC", "crv": "P-256", "x": "AAAA", "y": "AAAA"},
                {"kid": "p521", "kty": "EC", "crv": "P-521", "x": b64(&[1; 66]), "y": b64(&[2; 66])},
                {"kid": "ed", "kty": "OKP", "crv": "Ed25519", "x": ED_X, "custom": {"nested": true}},
                {"kid": "x448", "kty": "OKP", "crv": "X448", "x": "AAAA"},
                {"kty": "EC", "crv": "P-256", "use": "x509-svid", "x": b64(&[1; 32]), "y": b64(&[2; 32]), "x5c": ["MIIB..."]},
                {"kid": "svid", "kty": "EC", "crv": "P-256", "use": "jwt-svid", "x": b64(&[1; 32]), "y": b64(&[2; 32])},
                {"kid": "mismatch", "kty": "EC", "crv": "P-256", "alg": "ES384", "x": b64(&[1; 32]), "y": b64(&[2; 32])},
                {"kid": "weird", "kty": "XYZ"}
            ],
            "spiffe_refresh_hint": 600,
            "spiffe_sequence": 7,
            "issuer_extension": "ignored"
        });
        let set = parse_jwks(doc.to_string().as_bytes()).unwrap();
        let kept: Vec<&str> = set
            .jwks
            .keys
            .iter()
            .map(|k| k.common.key_id.as_deref().unwrap())
            .collect();
        assert_eq!(kept, ["rsa", "p384", "ed", "svid"]);
        let dropped = set.dropped.join("\n");
        for why in [
            "\"rsa-enc\": a key for \"enc\"",
            "\"short\": an RSA key of 1024 bits",
            "\"hmac\": a symmetric (oct) key",
            "\"bad-p256\": a P-256 public key has 32-byte x and y",
            "\"p521\": an EC key of curve P521",
            "\"x448\": not a key Tether reads",
            "key #9: a key for \"x509-svid\"",
            "\"mismatch\": a key for algorithm",
            "\"weird\": not a key Tether reads",
        ] {
            assert!(dropped.contains(why), "{why} not in:\n{dropped}");
        }
        assert_eq!(set.refresh_hint, Some(600));
        assert_eq!(set.refresh_after(), Duration::from_secs(600));
        // By key type where a key names no alg.
        let rsa = &set.jwks.keys[0];
        assert_eq!(key_algorithms(rsa), &ALGORITHMS[..6]);
        assert_eq!(key_algorithms(&set.jwks.keys[1]), [Algorithm::ES384]);
        // Nothing usable: refused with every reason.
        let none = serde_json::json!({"keys": [{"kid": "hmac", "kty": "oct", "k": "c2VjcmV0"}]});
        let e = parse_jwks(none.to_string().as_bytes()).unwrap_err().to_string();
        assert!(
            e.contains("no key Tether can verify with") && e.contains("symmetric"),
            "{e}"
        );
    }

    #[test]
    fn refresh_hints_are_bounded() {
        let set = |hint| KeySet {
            jwks: JwkSet { keys: vec![] },
            dropped: vec![],
            refresh_hint: hint,
        };
        assert_eq!(set(None).refresh_after(), REFRESH_EVERY);
        assert_eq!(set(Some(1)).refresh_after(), REFRESH_MIN);
        assert_eq!(set(Some(10_000_000)).refresh_after(), REFRESH_MAX);
    }

    #[test]
    fn discovery_documents_must_name_their_issuer_and_an_https_key_set() {
        let iss = "https://kc.test/realms/agents";
        assert_eq!(
            discovery_url(&format!("{iss}/")),
            format!("{iss}/.well-known/openid-configuration")
        );
        let doc = |i: &str, j: &str| {
            serde_json::json!({"issuer": i, "jwks_uri": j, "response_types_supported": ["code"]}).to_string()
        };
        assert_eq!(
            jwks_uri(iss, doc(iss, "https://kc.test/certs").as_bytes()),
            Ok("https://kc.test/certs".into())
        );
        assert!(
            jwks_uri(iss, doc("https://evil.test", "https://kc.test/certs").as_bytes())
                .unwrap_err()
                .contains("evil")
        );
        assert!(
            jwks_uri(iss, doc(iss, "http://kc.test/certs").as_bytes())
                .unwrap_err()
                .contains("not https")
        );
        assert!(
            jwks_uri(iss, br#"{"issuer": "https://kc.test/realms/agents"}"#)
                .unwrap_err()
                .contains("no jwks_uri")
        );
        assert!(jwks_uri(iss, b"<html>").is_err());
    }
}
