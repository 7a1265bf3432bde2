//! SOC delivery against a real HTTPS receiver on loopback (rustls, a CA made by the test),
//! no root needed: alerts arrive; the receiver is stopped for a while and restarted, and
//! every alert raised meanwhile arrives (exactly once after deduplication by metadata.uid);
//! a sender that dies with alerts unacknowledged in its spool delivers them when it starts
//! again on the same spool. The daemon-level run of the same (a SIGKILLed `tether run`) is in
//! the kernel suite.
use std::{
    collections::{BTreeMap, BTreeSet},
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use tether::{
    delivery::{Delivery, DeliveryArgs, SinkSpec, Stream},
    metrics::Metrics,
};

/// A CA and a server certificate for 127.0.0.1, made by rcgen.
pub struct Pki {
    pub ca_pem: String,
    cert: rustls::pki_types::CertificateDer<'static>,
    key: Vec<u8>,
}

impl Pki {
    fn generate() -> Pki {
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
        Pki {
            ca_pem: ca.pem(),
            cert: leaf.der().clone(),
            key: key.serialize_der(),
        }
    }
}

/// An HTTPS receiver that records the NDJSON lines POSTed to it (only with the right bearer
/// token) and answers 200; it can be stopped and started again on the same port.
pub struct Receiver {
    pub port: u16,
    pub lines: Arc<Mutex<Vec<String>>>,
    token: String,
    rt: Option<tokio::runtime::Runtime>,
}

impl Receiver {
    pub fn start(pki: &Pki, port: u16, token: &str) -> Receiver {
        let mut r = Receiver {
            port,
            lines: Arc::new(Mutex::new(Vec::new())),
            token: token.to_string(),
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
        let config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
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
        rt.spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    continue;
                };
                let (acceptor, lines, token) = (acceptor.clone(), lines.clone(), token.clone());
                tokio::spawn(async move {
                    let Ok(mut tls) = acceptor.accept(tcp).await else {
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

fn args(port: u16, ca: &Path, token: &Path, spool: &Path) -> DeliveryArgs {
    DeliveryArgs {
        audit: vec![SinkSpec::None],
        alerts: vec![SinkSpec::Webhook],
        file_max_size: 1 << 20,
        file_keep: 1,
        webhook: Some(format!("https://127.0.0.1:{port}/ingest")),
        webhook_ca: Some(ca.to_path_buf()),
        webhook_cert: None,
        webhook_key: None,
        webhook_token_file: Some(token.to_path_buf()),
        webhook_batch: 7,
        spool_dir: spool.to_path_buf(),
        spool_max_size: 16 << 20,
        syslog: None,
        fold_window: Duration::ZERO,
    }
}

fn alert(i: usize) -> String {
    serde_json::json!({"class_uid": 2004, "metadata": {"uid": format!("alert-{i}")}, "message": format!("alert {i}")})
        .to_string()
}

fn wait_for_uids(r: &Receiver, want: &BTreeSet<String>) {
    let t = Instant::now();
    loop {
        let got: BTreeSet<String> = r.uids().into_keys().collect();
        if want.is_subset(&got) {
            return;
        }
        assert!(
            t.elapsed() < Duration::from_secs(60),
            "missing after 60 s: {:?}",
            want.difference(&got).collect::<Vec<_>>()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn uids(range: std::ops::Range<usize>) -> BTreeSet<String> {
    range.map(|i| format!("alert-{i}")).collect()
}

/// A sender: the delivery and the runtime its webhook task runs on.
struct Sender {
    d: Delivery,
    rt: tokio::runtime::Runtime,
}

fn sender(a: &DeliveryArgs) -> Sender {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let (d, task) = rt
        .block_on(async { Delivery::open(a, Metrics::new()) })
        .expect("open delivery");
    rt.spawn(task.expect("a webhook task"));
    Sender { d, rt }
}

#[test]
fn alerts_survive_a_receiver_outage_and_a_sender_restart_and_arrive_exactly_once_by_uid() {
    let pki = Pki::generate();
    let dir = tempfile::tempdir().unwrap();
    let (ca, token, spool) = (
        dir.path().join("ca.pem"),
        dir.path().join("token"),
        dir.path().join("spool"),
    );
    std::fs::write(&ca, &pki.ca_pem).unwrap();
    std::fs::write(&token, "s3cret\n").unwrap();
    let mut rx = Receiver::start(&pki, 0, "s3cret");
    let a = args(rx.port, &ca, &token, &spool);

    let mut s = sender(&a);
    for i in 0..10 {
        s.d.send(Stream::Alerts, &alert(i)).unwrap();
    }
    wait_for_uids(&rx, &uids(0..10));

    // Outage: what is raised meanwhile waits in the spool.
    rx.stop();
    for i in 10..30 {
        s.d.send(Stream::Alerts, &alert(i)).unwrap();
    }
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(
        s.d.spool_depth(),
        Some(20),
        "held in the spool while the receiver is down"
    );
    rx.restart(&pki);
    wait_for_uids(&rx, &uids(0..30));

    // The sender dies with alerts unacknowledged; a new one on the same spool sends them.
    rx.stop();
    for i in 30..35 {
        s.d.send(Stream::Alerts, &alert(i)).unwrap();
    }
    s.rt.shutdown_background();
    drop(s.d);
    rx.restart(&pki);
    let s2 = sender(&a);
    wait_for_uids(&rx, &uids(0..35));
    // Nothing but what was sent; each at least once (exactly once after deduplication by uid).
    let got = rx.uids();
    assert_eq!(got.keys().cloned().collect::<BTreeSet<_>>(), uids(0..35));
    let t = Instant::now();
    while s2.d.spool_depth() != Some(0) && t.elapsed() < Duration::from_secs(10) {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(s2.d.spool_depth(), Some(0), "every alert acknowledged");
}

#[test]
fn a_wrong_token_or_an_unknown_ca_delivers_nothing_and_keeps_everything_spooled() {
    let pki = Pki::generate();
    let other = Pki::generate();
    let dir = tempfile::tempdir().unwrap();
    let (ca, other_ca, token) = (
        dir.path().join("ca.pem"),
        dir.path().join("other.pem"),
        dir.path().join("token"),
    );
    std::fs::write(&ca, &pki.ca_pem).unwrap();
    std::fs::write(&other_ca, &other.ca_pem).unwrap();
    std::fs::write(&token, "wrong").unwrap();
    let rx = Receiver::start(&pki, 0, "s3cret");
    for (ca, name) in [(&ca, "wrong token"), (&other_ca, "unknown CA")] {
        let spool: PathBuf = dir.path().join(format!("spool-{}", name.replace(' ', "-")));
        let s = sender(&args(rx.port, ca, &token, &spool));
        let mut s = s;
        for i in 0..3 {
            s.d.send(Stream::Alerts, &alert(i)).unwrap();
        }
        std::thread::sleep(Duration::from_secs(2));
        assert_eq!(s.d.spool_depth(), Some(3), "{name}: nothing acknowledged");
        s.rt.shutdown_background();
    }
    assert!(rx.uids().is_empty(), "nothing accepted");
}
