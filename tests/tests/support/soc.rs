//! A real HTTPS receiver for the SOC delivery tests (the delivery test and the kernel suite).
#![allow(dead_code)]
use std::{
    collections::BTreeMap,
    sync::{Arc, Mutex},
    time::Duration,
};

/// A CA, a server certificate for 127.0.0.1 and a client certificate (for mutual TLS), made
/// by rcgen.
pub struct Pki {
    pub ca_pem: String,
    /// The client certificate and its key, PEM.
    pub client_cert_pem: String,
    pub client_key_pem: String,
    ca_der: rustls::pki_types::CertificateDer<'static>,
    cert: rustls::pki_types::CertificateDer<'static>,
    key: Vec<u8>,
}

impl Pki {
    pub fn generate() -> Pki {
        use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair};
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(DnType::CommonName, "tether-test-soc-ca");
        let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().unwrap()).unwrap();
        let key = KeyPair::generate().unwrap();
        let leaf = CertificateParams::new(vec!["127.0.0.1".to_string()])
            .unwrap()
            .signed_by(&key, &ca)
            .unwrap();
        let client_key = KeyPair::generate().unwrap();
        let mut client_params = CertificateParams::new(Vec::<String>::new()).unwrap();
        client_params
            .distinguished_name
            .push(DnType::CommonName, "tether-test-node");
        client_params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ClientAuth];
        let client = client_params.signed_by(&client_key, &ca).unwrap();
        Pki {
            ca_pem: ca.pem(),
            client_cert_pem: client.pem(),
            client_key_pem: client_key.serialize_pem(),
            ca_der: ca.der().clone(),
            cert: leaf.der().clone(),
            key: key.serialize_der(),
        }
    }
}

impl Pki {
    /// A TLS acceptor with the server certificate (no client certificates asked).
    pub fn acceptor(&self) -> tokio_rustls::TlsAcceptor {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(
                vec![self.cert.clone()],
                rustls::pki_types::PrivateKeyDer::Pkcs8(self.key.clone().into()),
            )
            .unwrap();
        tokio_rustls::TlsAcceptor::from(Arc::new(config))
    }
}

/// An HTTPS receiver that records the NDJSON lines POSTed to it (only with the right bearer
/// token) and answers 200; it can be stopped and started again on the same port. With mutual
/// TLS it completes a handshake only with a client certificate its CA signed.
pub struct Receiver {
    pub port: u16,
    pub lines: Arc<Mutex<Vec<String>>>,
    /// TLS handshakes that failed (e.g. no or a foreign client certificate).
    pub refused_handshakes: Arc<std::sync::atomic::AtomicUsize>,
    token: String,
    mutual: bool,
    rt: Option<tokio::runtime::Runtime>,
}

impl Receiver {
    pub fn start(pki: &Pki, port: u16, token: &str) -> Receiver {
        Receiver::start_with(pki, port, token, false)
    }

    /// A receiver that requires a client certificate signed by `pki`'s CA.
    pub fn start_mutual(pki: &Pki, token: &str) -> Receiver {
        Receiver::start_with(pki, 0, token, true)
    }

    fn start_with(pki: &Pki, port: u16, token: &str, mutual: bool) -> Receiver {
        let mut r = Receiver {
            port,
            lines: Arc::new(Mutex::new(Vec::new())),
            refused_handshakes: Arc::default(),
            token: token.to_string(),
            mutual,
            rt: None,
        };
        r.restart(pki);
        r
    }

    pub fn stop(&mut self) {
        if let Some(rt) = self.rt.take() {
            rt.shutdown_timeout(Duration::from_secs(2));
        }
    }

    pub fn restart(&mut self, pki: &Pki) {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .unwrap();
        let builder = if self.mutual {
            let mut roots = rustls::RootCertStore::empty();
            roots.add(pki.ca_der.clone()).unwrap();
            let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                .build()
                .unwrap();
            builder.with_client_cert_verifier(verifier)
        } else {
            builder.with_no_client_auth()
        };
        let config = builder
            .with_single_cert(
                vec![pki.cert.clone()],
                rustls::pki_types::PrivateKeyDer::Pkcs8(pki.key.clone().into()),
            )
            .unwrap();
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let listener = rt
            .block_on(tokio::net::TcpListener::bind(("127.0.0.1", self.port)))
            .expect("bind the receiver");
        self.port = listener.local_addr().unwrap().port();
        let (lines, token) = (self.lines.clone(), format!("bearer {}", self.token));
        let refused = self.refused_handshakes.clone();
        rt.spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    continue;
                };
                let (acceptor, lines, token, refused) =
                    (acceptor.clone(), lines.clone(), token.clone(), refused.clone());
                tokio::spawn(async move {
                    let Ok(mut tls) = acceptor.accept(tcp).await else {
                        refused.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        return;
                    };
                    let mut data = Vec::new();
                    let mut buf = [0u8; 8192];
                    let head_end = loop {
                        if let Some(i) = data.windows(4).position(|w| w == b"\r\n\r\n") {
                            break i + 4;
                        }
                        match tls.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => data.extend_from_slice(&buf[..n]),
                        }
                    };
                    let head = String::from_utf8_lossy(&data[..head_end]).to_lowercase();
                    let len: usize = head
                        .lines()
                        .find_map(|l| l.strip_prefix("content-length:"))
                        .and_then(|v| v.trim().parse().ok())
                        .unwrap_or(0);
                    while data.len() < head_end + len {
                        match tls.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => data.extend_from_slice(&buf[..n]),
                        }
                    }
                    let authorized = head.lines().any(|l| l.trim() == format!("authorization: {token}"));
                    let status = if authorized {
                        let body = String::from_utf8_lossy(&data[head_end..head_end + len]).into_owned();
                        lines.lock().unwrap().extend(body.lines().map(str::to_string));
                        "200 OK"
                    } else {
                        "401 Unauthorized"
                    };
                    let resp = format!("HTTP/1.1 {status}\r\ncontent-length: 0\r\nconnection: close\r\n\r\n");
                    let _ = tls.write_all(resp.as_bytes()).await;
                    let _ = tls.shutdown().await;
                });
            }
        });
        self.rt = Some(rt);
    }

    /// metadata.uid of every line received, with how many times each came.
    pub fn uids(&self) -> BTreeMap<String, usize> {
        let mut m = BTreeMap::new();
        for l in self.lines.lock().unwrap().iter() {
            let v: serde_json::Value = serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}"));
            *m.entry(v["metadata"]["uid"].as_str().expect("metadata.uid").to_string())
                .or_insert(0) += 1;
        }
        m
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.stop();
    }
}
