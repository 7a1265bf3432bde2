//! SOC delivery against a real HTTPS receiver on loopback (rustls, a CA made by the test),
//! no root needed: alerts arrive; the receiver is stopped for a while and restarted, and
//! every alert raised meanwhile arrives (exactly once after deduplication by metadata.uid);
//! a sender that dies with alerts unacknowledged in its spool delivers them when it starts
//! again on the same spool; with mutual TLS only a client certificate the receiver trusts
//! delivers. The daemon-level run of the same (a SIGKILLed `tether run`) is in
//! the kernel suite.
use std::{
    collections::BTreeSet,
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

#[path = "support/soc.rs"]
mod soc;
use soc::{Pki, Receiver};

use tether::{
    delivery::{Delivery, DeliveryArgs, SinkSpec, Stream},
    metrics::Metrics,
};

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
        record_form: Default::default(),
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

/// A sender: the delivery and the runtime its webhook worker runs on.
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
    let (d, worker) = rt
        .block_on(async { Delivery::open(a, Metrics::new()) })
        .expect("open delivery");
    rt.spawn(worker.expect("a webhook worker"));
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

#[test]
fn mutual_tls_delivers_only_with_a_client_certificate_the_receiver_trusts() {
    let pki = Pki::generate();
    let foreign = Pki::generate();
    let dir = tempfile::tempdir().unwrap();
    let p = |name: &str| dir.path().join(name);
    std::fs::write(p("ca.pem"), &pki.ca_pem).unwrap();
    std::fs::write(p("token"), "s3cret").unwrap();
    for (name, text) in [
        ("cert.pem", &pki.client_cert_pem),
        ("key.pem", &pki.client_key_pem),
        ("foreign-cert.pem", &foreign.client_cert_pem),
        ("foreign-key.pem", &foreign.client_key_pem),
    ] {
        std::fs::write(p(name), text).unwrap();
    }
    let rx = Receiver::start_mutual(&pki, "s3cret");
    let base = |spool: &str| args(rx.port, &p("ca.pem"), &p("token"), &p(spool));

    // No client certificate, or one a CA the receiver does not trust signed: the handshake
    // fails and everything stays spooled.
    let mut refused_by = 0;
    for (name, cert) in [
        ("none", None),
        ("foreign", Some(("foreign-cert.pem", "foreign-key.pem"))),
    ] {
        let mut a = base(&format!("spool-{name}"));
        if let Some((c, k)) = cert {
            (a.webhook_cert, a.webhook_key) = (Some(p(c)), Some(p(k)));
        }
        let mut s = sender(&a);
        for i in 0..3 {
            s.d.send(Stream::Alerts, &alert(i)).unwrap();
        }
        let t = Instant::now();
        let seen = rx.refused_handshakes.load(std::sync::atomic::Ordering::Relaxed);
        while rx.refused_handshakes.load(std::sync::atomic::Ordering::Relaxed) == seen {
            assert!(t.elapsed() < Duration::from_secs(30), "{name}: no handshake attempted");
            std::thread::sleep(Duration::from_millis(50));
        }
        refused_by += 1;
        assert_eq!(
            s.d.spool_depth(),
            Some(3),
            "client certificate {name}: nothing acknowledged"
        );
        s.rt.shutdown_background();
    }
    assert_eq!(refused_by, 2);
    assert!(
        rx.uids().is_empty(),
        "nothing accepted without a trusted client certificate"
    );

    // The client certificate the receiver's CA signed: delivered.
    let mut a = base("spool-good");
    (a.webhook_cert, a.webhook_key) = (Some(p("cert.pem")), Some(p("key.pem")));
    let mut s = sender(&a);
    for i in 0..3 {
        s.d.send(Stream::Alerts, &alert(i)).unwrap();
    }
    wait_for_uids(&rx, &uids(0..3));
    s.rt.shutdown_background();
}
