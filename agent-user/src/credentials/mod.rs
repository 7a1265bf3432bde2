//! Task credentials: verification ([`token`]), scopes ([`scope`]), trusted issuers
//! ([`trust`]), the binding of credentials to process trees with delegation and lifecycle
//! ([`tasks`]), and a development issuer ([`devissuer`]).
pub mod carriers;
pub mod devissuer;
pub mod revocations;
pub mod scope;
pub mod tasks;
pub mod token;
pub mod trust;
pub mod workload;

/// Seconds since the epoch.
pub fn now_epoch() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// Host names with the addresses they resolved to.
pub type Resolved = Vec<(String, Vec<std::net::IpAddr>)>;

/// Resolves scope host names (each bounded to 2 s); a name that does not resolve gets no
/// addresses, so connects to it are out of scope until a later resolution succeeds.
pub async fn resolve_hosts(names: &[String]) -> Resolved {
    let mut out = Vec::new();
    for n in names {
        let lookup = tokio::net::lookup_host((n.as_str(), 0));
        let ips = match tokio::time::timeout(std::time::Duration::from_secs(2), lookup).await {
            Ok(Ok(addrs)) => {
                let mut ips: Vec<_> = addrs.map(|a| a.ip()).collect();
                ips.sort();
                ips.dedup();
                ips
            }
            Ok(Err(e)) => {
                tracing::warn!("scope host {n}: {e}");
                Vec::new()
            }
            Err(_) => {
                tracing::warn!("scope host {n}: resolution timed out");
                Vec::new()
            }
        };
        out.push((n.clone(), ips));
    }
    out
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use jsonwebtoken::jwk::JwkSet;

    use super::{
        carriers,
        devissuer::{self, IssueRequest},
        scope::ScopeSpec,
        token::{self, Keys, TokenError},
        trust,
    };

    const NOW: i64 = 1_800_000_000;

    fn keys_for(iss: &str, keys: &[&devissuer::SigningKey]) -> Keys {
        let jwks: JwkSet = serde_json::from_value(serde_json::json!({
            "keys": keys.iter().map(|k| k.jwk.clone()).collect::<Vec<_>>()
        }))
        .unwrap();
        let mut k = Keys::default();
        k.by_issuer.insert(
            iss.into(),
            Ok(trust::KeySet {
                jwks,
                dropped: Vec::new(),
                refresh_hint: None,
            }),
        );
        k
    }

    fn verify(t: &str, keys: &Keys, now: i64) -> Result<token::Verified, TokenError> {
        let book = carriers::ScopeBook::default();
        token::verify(
            t,
            &token::Checks {
                keys,
                scopes: &book,
                max_chain: 8,
            },
            now,
        )
    }

    fn request() -> IssueRequest {
        IssueRequest {
            iss: "https://issuer.test".into(),
            sub: "user:alice".into(),
            actors: vec!["spiffe://corp/agent/coder".into(), "spiffe://corp/agent/tests".into()],
            aud: vec!["tether".into()],
            ttl: Duration::from_secs(600),
            not_before: Duration::ZERO,
            jti: Some("task-42".into()),
            scope: ScopeSpec {
                exec: vec!["/usr/bin/git".into()],
                connect: vec!["tcp:127.0.0.1:8080".into()],
                write: vec!["/srv/task-42/".into()],
                ..Default::default()
            },
        }
    }

    fn issue(key: &devissuer::SigningKey, req: &IssueRequest, now: i64) -> String {
        devissuer::sign(key, &devissuer::claims(req, now)).unwrap()
    }

    #[test]
    fn ed25519_and_es256_credentials_verify_with_their_chain() {
        for alg in ["EdDSA", "ES256"] {
            let key = devissuer::generate(alg).unwrap();
            let keys = keys_for("https://issuer.test", &[&key]);
            let t = issue(&key, &request(), NOW);
            let v = verify(&t, &keys, NOW + 1).unwrap_or_else(|e| panic!("{alg}: {e}"));
            assert_eq!(v.claims.jti, "task-42");
            assert_eq!(
                v.chain,
                ["user:alice", "spiffe://corp/agent/coder", "spiffe://corp/agent/tests"]
            );
            assert!(v.scope.check_exec("/usr/bin/git").is_ok());
            // The key file round-trips to the same key id.
            let dir = tempfile::tempdir().unwrap();
            std::fs::write(dir.path().join("k.pem"), &key.pem).unwrap();
            assert_eq!(devissuer::load(&dir.path().join("k.pem")).unwrap().kid, key.kid);
        }
    }

    #[test]
    fn bad_credentials_are_refused_for_the_right_reason() {
        let key = devissuer::generate("EdDSA").unwrap();
        let other = devissuer::generate("EdDSA").unwrap();
        let keys = keys_for("https://issuer.test", &[&key]);
        let good = issue(&key, &request(), NOW);
        let refused = |t: &str| verify(t, &keys, NOW + 1).unwrap_err();

        assert!(matches!(refused("not-a-token"), TokenError::Malformed(_)));
        assert!(matches!(refused(&"x".repeat(20_000)), TokenError::TooLarge(_)));
        // Bad signature: the payload of one token with the signature of another.
        let mut parts: Vec<&str> = good.split('.').collect();
        let other_sig = issue(
            &key,
            &IssueRequest {
                jti: Some("task-43".into()),
                ..request()
            },
            NOW,
        );
        let sig = other_sig.rsplit('.').next().unwrap().to_string();
        parts[2] = &sig;
        assert!(matches!(refused(&parts.join(".")), TokenError::BadSignature(_)));
        // Unknown kid: signed by a key the issuer does not have.
        assert!(matches!(
            refused(&issue(&other, &request(), NOW)),
            TokenError::UnknownKid { .. }
        ));
        // Unknown issuer.
        let t = issue(
            &key,
            &IssueRequest {
                iss: "https://evil.test".into(),
                ..request()
            },
            NOW,
        );
        assert!(matches!(refused(&t), TokenError::UnknownIssuer(i) if i == "https://evil.test"));
        // Wrong audience.
        let t = issue(
            &key,
            &IssueRequest {
                aud: vec!["other".into()],
                ..request()
            },
            NOW,
        );
        assert!(matches!(refused(&t), TokenError::Audience { .. }));
        // Expired, and not yet valid.
        let t = issue(&key, &request(), NOW - 601);
        assert!(matches!(refused(&t), TokenError::Expired { .. }));
        let t = issue(
            &key,
            &IssueRequest {
                not_before: Duration::from_secs(60),
                ..request()
            },
            NOW,
        );
        assert!(matches!(refused(&t), TokenError::NotYetValid { .. }));
        // A chain deeper than allowed.
        let deep = IssueRequest {
            actors: (0..9).map(|i| format!("agent-{i}")).collect(),
            ..request()
        };
        assert!(matches!(
            refused(&issue(&key, &deep, NOW)),
            TokenError::ChainTooDeep { depth: 9, max: 8 }
        ));
        // A scope that does not parse.
        let mut c = devissuer::claims(&request(), NOW);
        c.scope = Some(serde_json::json!({"connect": ["tcp:nowhere"]}));
        assert!(matches!(
            refused(&devissuer::sign(&key, &c).unwrap()),
            TokenError::Scope(_)
        ));
        // Issuer keys that could not be fetched.
        let mut down = Keys::default();
        down.by_issuer.insert(
            "https://issuer.test".into(),
            Err(super::trust::JwksError::Unavailable("connection refused".into())),
        );
        let e = verify(&good, &down, NOW + 1).unwrap_err();
        assert!(e.to_string().contains("connection refused"), "{e}");
    }

    #[test]
    fn an_absurdly_deep_act_is_refused_without_recursion_trouble() {
        let key = devissuer::generate("EdDSA").unwrap();
        let keys = keys_for("https://issuer.test", &[&key]);
        // Properly signed, with `act` nested 500 deep.
        let deep = IssueRequest {
            actors: (0..500).map(|i| format!("a{i}")).collect(),
            ..request()
        };
        let t = issue(&key, &deep, NOW);
        assert!(
            t.len() < token::MAX_TOKEN_BYTES,
            "fits the size limit, so the depth is what is tested"
        );
        let e = verify(&t, &keys, NOW + 1).unwrap_err();
        assert!(
            matches!(e, TokenError::Malformed(_) | TokenError::ChainTooDeep { .. }),
            "{e}"
        );
    }
}
