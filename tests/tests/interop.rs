//! Interoperability: tokens Tether did not make, minted by independent, widely used libraries
//! (PyJWT and jwcrypto, tests/interop/mint.py) with the key types, key-set shapes and claim
//! sets real issuers emit: a Keycloak-shaped token-exchange token with `act`, an RFC 9068
//! access token with `authorization_details`, a Transaction Token, a SPIFFE JWT-SVID, and
//! every algorithm from each library. Each is accepted, or refused for its documented reason,
//! by Tether's verifier under a real rule file (issuers, scope bundles, identities). Every
//! bad-input case of the credentials issue is tried for every algorithm. No root; the
//! daemon-level run (OIDC discovery over HTTPS, a scope string held in the kernel) is in the
//! kernel suite.
use std::path::Path;

use serde_json::{Value, json};
use tether::credentials::{
    carriers::ScopeSource,
    token::{self, Keys, TokenError, Verified},
    trust::{self, AlgorithmError},
};

#[path = "support/mint.rs"]
mod mint;
use mint::{jwks, mint};

const NOW: i64 = 1_800_000_000;
const KC: &str = "https://keycloak.test/realms/agents";
const AS: &str = "https://as.test";
const TTS: &str = "https://tts.test";
const DEV: &str = "https://dev.test";

/// The rule file: four issuers as an operator would write them, scope bundles, identities.
fn rules(dir: &Path, unknown: &str) -> String {
    let f = |n: &str| dir.join(format!("{n}.json")).display().to_string();
    format!(
        r#"version: 1
trust:
  - {{issuer: "{KC}", jwks: "{kc}", algorithms: [RS256], typ: [JWT], audiences: [tether, account]}}
  - {{issuer: "{AS}", jwks: "{asj}", typ: [at+jwt], audiences: [tether]}}
  - {{issuer: "{TTS}", jwks: "{tts}", typ: [txntoken+jwt], audiences: [trust-domain.test], leeway: 30}}
  - {{trust_domain: corp.test, bundle: "{spiffe}"}}
  - {{issuer: "{DEV}", jwks: "{dev}"}}
scopes:
  repo.read: {{exec: [/usr/bin/git, /usr/bin/cat]}}
  repo.write: {{exec: [/usr/bin/git], write: [/srv/repo/]}}
unknown_scopes: {unknown}
identities:
  "spiffe://corp.test/agent/coder": {{exec: [/usr/bin/make], write: [/srv/build/]}}
  "spiffe://corp.test/agent/*": {{exec: [/usr/bin/true]}}
"#,
        kc = f("kc"),
        asj = f("as"),
        tts = f("tts"),
        spiffe = f("spiffe"),
        dev = f("dev"),
    )
}

/// Verifies tokens against the rule file and the key files in a directory.
struct Verifier {
    keys: Keys,
    book: tether::credentials::carriers::ScopeBook,
}

impl Verifier {
    fn new(dir: &Path, unknown: &str) -> Verifier {
        let policy = tether::policy::parse_policy("interop.yaml", &rules(dir, unknown)).expect("the rule file loads");
        let mut keys = Keys::default();
        for t in policy.trust {
            let trust::JwksSource::File(p) = &t.source else {
                panic!("file sources only here")
            };
            let set = trust::read_file(p);
            keys.trust(t, set);
        }
        Verifier {
            keys,
            book: policy.scopes,
        }
    }

    fn verify(&self, token: &str) -> Result<Verified, TokenError> {
        token::verify(
            token,
            &token::Checks {
                keys: &self.keys,
                scopes: &self.book,
                max_chain: 8,
            },
            NOW,
        )
    }
}

fn write(dir: &Path, name: &str, doc: Vec<u8>) {
    std::fs::write(dir.join(format!("{name}.json")), doc).unwrap();
}

fn claims(iss: &str, jti: &str, extra: Value) -> Value {
    let mut c = json!({"iss": iss, "sub": "user:alice", "aud": "tether", "jti": jti,
                       "iat": NOW - 10, "nbf": NOW - 10, "exp": NOW + 300});
    c.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
    c
}

/// The four real-issuer shapes, each accepted with its scope from the documented carrier.
#[test]
fn tokens_of_real_issuer_shapes_are_accepted_with_their_scope_carrier() {
    let dir = tempfile::tempdir().unwrap();
    let m = mint(&json!({
        "keys": {
            "kc-rsa": {"type": "rsa2048", "x5c": true},
            "kc-enc": {"type": "rsa2048"},
            "as-rsa": {"type": "rsa3072"},
            "tts-ec": {"type": "p256"},
            "svid-p384": {"type": "p384"},
            "x509-svid": {"type": "p256", "x5c": true}
        },
        "tokens": [
            // Keycloak token exchange (RFC 8693 through Keycloak): RS256, typ JWT, aud a list,
            // Keycloak's own claims, `act`, an OAuth scope string with OIDC values in it.
            {"lib": "pyjwt", "key": "kc-rsa", "alg": "RS256", "kid": "kc-rsa", "header": {"typ": "JWT"},
             "claims": claims(KC, "5f3c1b2a-kc", json!({
                "sub": "0b6c5f8e-1d2a-4c43-9d5e-user-alice", "aud": ["tether", "account"],
                "typ": "Bearer", "azp": "agent-gateway", "sid": "a1b2", "acr": "1",
                "realm_access": {"roles": ["offline_access"]}, "preferred_username": "alice",
                "scope": "openid profile repo.write", "act": {"sub": "service-account-coder"}}))},
            // RFC 9068 access token: PS256 through jwcrypto, typ at+jwt, authorization_details
            // beside another party's entry, and a scope string it wins over.
            {"lib": "jwcrypto", "key": "as-rsa", "alg": "PS256", "kid": "as-rsa", "header": {"typ": "at+jwt"},
             "claims": claims(AS, "at-9068", json!({
                "client_id": "agent-gateway", "scope": "repo.read",
                "authorization_details": [
                    {"type": "payment_initiation", "instructedAmount": {"currency": "EUR", "amount": "9"}},
                    {"type": "exec", "locations": ["/usr/bin/python3"]},
                    {"type": "write", "locations": ["/srv/task-9068/"]}]}))},
            // Transaction Token: ES256, typ txntoken+jwt, no jti (txn is the id), aud the
            // trust domain, tctx/rctx/req_wl, issued 20 s in the future of this clock (leeway 30).
            {"lib": "pyjwt", "key": "tts-ec", "alg": "ES256", "kid": "tts-ec", "header": {"typ": "txntoken+jwt"},
             "claims": {"iss": TTS, "aud": "trust-domain.test", "sub": "user:alice", "txn": "txn-8f2e",
                        "iat": NOW + 20, "nbf": NOW + 20, "exp": NOW + 120, "scope": "repo.read",
                        "tctx": {"action": "build"}, "rctx": {"req_ip": "10.0.0.7"},
                        "req_wl": "spiffe://corp.test/gateway"}},
            // JWT-SVID: ES384 through jwcrypto, kid and typ JWT only, no iss, no jti, no scope.
            {"lib": "jwcrypto", "key": "svid-p384", "alg": "ES384", "kid": "svid-p384", "header": {"typ": "JWT"},
             "claims": {"sub": "spiffe://corp.test/agent/coder", "aud": ["tether"], "exp": NOW + 300, "iat": NOW}},
            // The same JWT-SVID under the other valid ECDSA signature (r, n - s).
            {"lib": "jwcrypto", "key": "svid-p384", "alg": "ES384", "kid": "svid-p384", "header": {"typ": "JWT"},
             "claims": {"sub": "spiffe://corp.test/agent/coder", "aud": ["tether"], "exp": NOW + 300, "iat": NOW},
             "malleate": true},
            // The same workload, a sibling identity under the pattern.
            {"lib": "jwcrypto", "key": "svid-p384", "alg": "ES384", "kid": "svid-p384",
             "claims": {"sub": "spiffe://corp.test/agent/tests", "aud": "tether", "exp": NOW + 300}}
        ]
    }));
    // Key sets as their issuers publish them.
    let mut enc = m.key("kc-enc");
    enc["use"] = json!("enc");
    enc["alg"] = json!("RSA-OAEP");
    let mut kc = m.key("kc-rsa");
    kc["use"] = json!("sig");
    kc["alg"] = json!("RS256");
    write(dir.path(), "kc", jwks(&[kc, enc], json!({})));
    write(dir.path(), "as", jwks(&[m.key("as-rsa")], json!({})));
    write(dir.path(), "tts", jwks(&[m.key("tts-ec")], json!({})));
    let mut svid = m.key("svid-p384");
    svid["use"] = json!("jwt-svid");
    let mut x509 = m.key("x509-svid");
    x509["use"] = json!("x509-svid");
    x509.as_object_mut().unwrap().remove("kid");
    write(
        dir.path(),
        "spiffe",
        jwks(
            &[x509, svid],
            json!({"spiffe_refresh_hint": 300, "spiffe_sequence": 12}),
        ),
    );
    write(dir.path(), "dev", jwks(&[m.key("tts-ec")], json!({})));
    let v = Verifier::new(dir.path(), "ignore");

    let kc = v.verify(&m.tokens[0]).unwrap_or_else(|e| panic!("Keycloak: {e}"));
    assert_eq!(kc.id, "5f3c1b2a-kc");
    assert_eq!(
        kc.chain,
        ["0b6c5f8e-1d2a-4c43-9d5e-user-alice", "service-account-coder"]
    );
    assert_eq!(
        kc.scope_source,
        ScopeSource::ScopeString {
            bundles: vec!["repo.write".into()],
            ignored: vec!["openid".into(), "profile".into()]
        }
    );
    assert!(kc.scope.check_write("/srv/repo/README", true).is_ok());
    assert!(kc.scope.check_write("/etc/passwd", true).is_err());

    let at = v.verify(&m.tokens[1]).unwrap_or_else(|e| panic!("RFC 9068: {e}"));
    assert_eq!(at.scope_source, ScopeSource::AuthorizationDetails { entries: 2 });
    assert!(at.scope.check_exec("/usr/bin/python3").is_ok());
    assert!(
        at.scope.check_exec("/usr/bin/git").is_err(),
        "the scope string lost to the details"
    );
    assert!(at.scope.check_write("/srv/task-9068/out", true).is_ok());

    let txn = v
        .verify(&m.tokens[2])
        .unwrap_or_else(|e| panic!("Transaction Token: {e}"));
    assert!(
        txn.id.starts_with("sha256:"),
        "a token without jti is named by what was signed: {}",
        txn.id
    );
    assert_eq!(txn.claims.txn.as_deref(), Some("txn-8f2e"));
    assert_eq!(txn.claims.req_wl.as_deref(), Some("spiffe://corp.test/gateway"));
    assert_eq!(txn.claims.tctx, Some(json!({"action": "build"})));
    assert_eq!(txn.scope_source.as_str(), "scope_string");

    let svid = v.verify(&m.tokens[3]).unwrap_or_else(|e| panic!("JWT-SVID: {e}"));
    assert_eq!(svid.issuer, "spiffe://corp.test");
    assert!(svid.id.starts_with("sha256:"), "{}", svid.id);
    assert_eq!(
        svid.scope_source,
        ScopeSource::Identity {
            identity: "spiffe://corp.test/agent/coder".into(),
            entry: "spiffe://corp.test/agent/coder".into()
        }
    );
    assert!(svid.scope.check_exec("/usr/bin/make").is_ok());
    // The other signature of the same SVID is not another task: refused, or the same id (so
    // it can neither be bound in a second tree nor get past a revocation).
    assert_ne!(m.tokens[4], m.tokens[3]);
    match v.verify(&m.tokens[4]) {
        Ok(again) => assert_eq!(again.id, svid.id, "a second signature made a second task"),
        Err(e) => assert!(matches!(e, TokenError::BadSignature(_)), "{e:?}"),
    }
    let sibling = v
        .verify(&m.tokens[5])
        .unwrap_or_else(|e| panic!("JWT-SVID sibling: {e}"));
    assert!(sibling.scope.check_exec("/usr/bin/true").is_ok());
    assert!(sibling.scope.check_exec("/usr/bin/make").is_err());
    assert_ne!(svid.id, sibling.id);
}

/// Every algorithm from both libraries; and every bad input of the credentials issue for each.
#[test]
fn every_algorithm_from_both_libraries_verifies_and_every_bad_input_is_refused_for_each() {
    let algs = [
        ("RS256", "rsa2048"),
        ("RS384", "rsa2048"),
        ("RS512", "rsa3072"),
        ("PS256", "rsa2048"),
        ("PS384", "rsa2048"),
        ("PS512", "rsa2048"),
        ("ES256", "p256"),
        ("ES384", "p384"),
        ("EdDSA", "ed25519"),
    ];
    let scope = json!({"exec": ["/usr/bin/git"], "write": ["/srv/t/"]});
    let deep = (0..9).fold(None, |inner: Option<Value>, i| {
        Some(match inner {
            Some(x) => json!({"sub": format!("agent-{i}"), "act": x}),
            None => json!({"sub": format!("agent-{i}")}),
        })
    });
    // Per algorithm, in order: good, expired, not yet valid, wrong audience, unknown kid,
    // untrusted issuer, too deep a chain, a scope that does not compile, no jti, and the
    // good one again (whose signature is changed below).
    let cases: Vec<(Option<&str>, Value)> = vec![
        (None, claims(DEV, "t-good", json!({"scope": scope}))),
        (None, claims(DEV, "t-exp", json!({"scope": scope, "exp": NOW - 1}))),
        (None, claims(DEV, "t-nbf", json!({"scope": scope, "nbf": NOW + 60}))),
        (None, claims(DEV, "t-aud", json!({"scope": scope, "aud": ["other"]}))),
        (Some("nobody"), claims(DEV, "t-kid", json!({"scope": scope}))),
        (None, claims("https://evil.test", "t-iss", json!({"scope": scope}))),
        (None, claims(DEV, "t-deep", json!({"scope": scope, "act": deep}))),
        (
            None,
            claims(DEV, "t-scope", json!({"scope": {"connect": ["tcp:nowhere"]}})),
        ),
        (None, claims(DEV, "", json!({"scope": scope}))),
    ];
    let mut keys = serde_json::Map::new();
    let mut tokens = Vec::new();
    for (alg, kind) in algs {
        keys.insert(alg.into(), json!({"type": kind}));
        for lib in ["pyjwt", "jwcrypto"] {
            for (kid, c) in &cases {
                tokens.push(json!({"lib": lib, "key": alg, "alg": alg, "kid": kid.unwrap_or(alg), "claims": c}));
            }
        }
    }
    let m = mint(&json!({"keys": keys, "tokens": tokens}));
    let dir = tempfile::tempdir().unwrap();
    let all: Vec<Value> = algs.iter().map(|(a, _)| m.key(a)).collect();
    for n in ["kc", "as", "tts", "spiffe"] {
        write(dir.path(), n, jwks(&all[..1], json!({})));
    }
    write(dir.path(), "dev", jwks(&all, json!({})));
    let v = Verifier::new(dir.path(), "refuse");
    let mut t = m.tokens.iter();
    for (alg, _) in algs {
        for lib in ["pyjwt", "jwcrypto"] {
            let at = format!("{alg} by {lib}");
            let good = t.next().unwrap();
            let ok = v.verify(good).unwrap_or_else(|e| panic!("{at}: {e}"));
            assert_eq!(ok.scope_source, ScopeSource::ScopeObject, "{at}");
            let mut next = |want: &dyn Fn(&TokenError) -> bool, what: &str| {
                let e = v.verify(t.next().unwrap()).map(|_| ()).unwrap_err();
                assert!(want(&e), "{at}, {what}: {e:?}");
            };
            next(&|e| matches!(e, TokenError::Expired { .. }), "expired");
            next(&|e| matches!(e, TokenError::NotYetValid { .. }), "not yet valid");
            next(&|e| matches!(e, TokenError::Audience { .. }), "audience");
            next(&|e| matches!(e, TokenError::UnknownKid { .. }), "unknown kid");
            next(&|e| matches!(e, TokenError::UnknownIssuer(_)), "untrusted issuer");
            next(
                &|e| matches!(e, TokenError::ChainTooDeep { depth: 9, .. }),
                "deep chain",
            );
            next(&|e| matches!(e, TokenError::Scope(_)), "bad scope");
            next(&|e| matches!(e, TokenError::MissingClaim("jti")), "no jti");
            // The good token with one signature byte changed.
            let (head, sig) = good.rsplit_once('.').unwrap();
            let mut sig = sig.as_bytes().to_vec();
            sig[4] = if sig[4] == b'A' { b'B' } else { b'A' };
            let tampered = format!("{head}.{}", String::from_utf8(sig).unwrap());
            let e = v.verify(&tampered).map(|_| ()).unwrap_err();
            assert!(matches!(e, TokenError::BadSignature(_)), "{at}, tampered: {e:?}");
            // Another algorithm's header on this signature: refused before any key is used
            // for it (the key types do not match, or the signature does not).
            let payload = head.split('.').nth(1).unwrap();
            let other = if alg == "RS256" { "ES256" } else { "RS256" };
            let header = base64url(&json!({"alg": other, "kid": alg}).to_string());
            let swapped = format!("{header}.{payload}.{}", good.rsplit('.').next().unwrap());
            let e = v.verify(&swapped).map(|_| ()).unwrap_err();
            assert!(
                matches!(e, TokenError::UnknownKid { .. } | TokenError::BadSignature(_)),
                "{at} as {other}: {e:?}"
            );
        }
    }
}

fn base64url(s: &str) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(s)
}

/// What a hostile or misconfigured issuer side can send, each refused for its reason.
#[test]
fn tokens_and_key_sets_that_must_not_verify_are_refused_with_the_reason() {
    let m = mint(&json!({
        "keys": {
            "rsa": {"type": "rsa2048"},
            "short": {"type": "rsa1024"},
            "ec": {"type": "p256"},
            "svid": {"type": "p256"},
            "hmac": {"type": "oct"}
        },
        "tokens": [
            {"lib": "pyjwt", "alg": "none", "claims": claims(DEV, "t-none", json!({"scope": {}}))},
            {"lib": "jwcrypto", "key": "hmac", "alg": "HS256", "kid": "hmac", "claims": claims(DEV, "t-hs", json!({"scope": {}}))},
            {"lib": "pyjwt", "key": "short", "alg": "RS256", "kid": "short", "claims": claims(AS, "t-short", json!({"scope": {}})), "header": {"typ": "at+jwt"}},
            {"lib": "jwcrypto", "key": "svid", "alg": "ES256", "kid": "svid", "header": {"typ": "JWT", "jku": "https://evil.test/keys"},
             "claims": {"sub": "spiffe://corp.test/agent/coder", "aud": "tether", "exp": NOW + 60}},
            {"lib": "jwcrypto", "key": "svid", "alg": "ES256", "kid": "svid",
             "claims": {"sub": "spiffe://other.test/agent/coder", "aud": "tether", "exp": NOW + 60}},
            {"lib": "pyjwt", "key": "rsa", "alg": "RS256", "kid": "rsa", "header": {"typ": "dpop+jwt"},
             "claims": claims(DEV, "t-typ", json!({"scope": {}}))},
            {"lib": "pyjwt", "key": "rsa", "alg": "PS256", "kid": "rsa", "header": {"typ": "JWT"},
             "claims": claims(KC, "t-kc-ps", json!({"scope": "repo.read"}))},
            {"lib": "pyjwt", "key": "rsa", "alg": "RS256", "kid": "rsa",
             "claims": claims(DEV, "t-mayact", json!({"scope": {}, "act": {"sub": "agent-x"}, "may_act": {"sub": "agent-y"}}))},
            {"lib": "pyjwt", "key": "rsa", "alg": "RS256", "kid": "rsa", "header": {"crit": ["exp-ext"], "exp-ext": 1},
             "claims": claims(DEV, "t-crit", json!({"scope": {}}))},
            {"lib": "pyjwt", "key": "rsa", "alg": "RS256", "kid": "rsa",
             "claims": claims(DEV, "t-unknown", json!({"scope": "repo.read admin.all"}))},
            {"lib": "pyjwt", "key": "rsa", "alg": "RS256", "kid": "rsa",
             "claims": claims(DEV, "t-noscope", json!({}))},
            {"lib": "pyjwt", "key": "rsa", "alg": "RS256", "kid": "rsa",
             "claims": claims(DEV, "t-details", json!({"authorization_details": [{"type": "write", "locations": ["/srv/"], "actions": ["delete"]}]}))},
            {"lib": "pyjwt", "key": "ec", "alg": "ES256", "kid": "rsa",
             "claims": claims(DEV, "t-confused", json!({"scope": {}}))}
        ]
    }));
    let dir = tempfile::tempdir().unwrap();
    write(
        dir.path(),
        "dev",
        jwks(&[m.key("rsa"), m.key("hmac"), m.key("ec")], json!({})),
    );
    write(dir.path(), "as", jwks(&[m.key("short")], json!({})));
    write(dir.path(), "kc", jwks(&[m.key("rsa")], json!({})));
    write(dir.path(), "tts", jwks(&[m.key("rsa")], json!({})));
    let mut svid = m.key("svid");
    svid["use"] = json!("jwt-svid");
    write(dir.path(), "spiffe", jwks(&[svid], json!({})));
    let v = Verifier::new(dir.path(), "refuse");
    let dev = v.keys.by_issuer[DEV].as_ref().unwrap();
    assert!(
        dev.dropped
            .iter()
            .any(|d| d.contains("\"hmac\": a symmetric (oct) key")),
        "{:?}",
        dev.dropped
    );
    let e = |i: usize| v.verify(&m.tokens[i]).map(|_| ()).unwrap_err();
    assert_eq!(e(0), TokenError::Algorithm(AlgorithmError::None));
    assert_eq!(e(1), TokenError::Algorithm(AlgorithmError::Symmetric("HS256".into())));
    let short = e(2).to_string();
    assert!(
        short.contains("keys are unavailable") && short.contains("1024 bits"),
        "{short}"
    );
    assert_eq!(e(3), TokenError::SvidHeader(vec!["jku".into()]));
    assert_eq!(e(4), TokenError::UnknownIssuer("spiffe://other.test".into()));
    assert!(matches!(e(5), TokenError::Typ { .. }), "{:?}", e(5));
    assert!(matches!(e(6), TokenError::AlgorithmNotAccepted { .. }), "{:?}", e(6));
    assert!(matches!(e(7), TokenError::MayAct { .. }), "{:?}", e(7));
    assert_eq!(e(8), TokenError::Crit(vec!["exp-ext".into()]));
    assert!(e(9).to_string().contains("\"admin.all\" names no bundle"), "{}", e(9));
    assert!(e(10).to_string().contains("carries no scope"), "{}", e(10));
    assert!(e(11).to_string().contains("\"actions\""), "{}", e(11));
    assert!(matches!(e(12), TokenError::UnknownKid { .. }), "{:?}", e(12));
}
