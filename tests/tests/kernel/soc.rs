//! SOC delivery from the real daemon: alerts of real violations reach a real HTTPS receiver
//! on loopback; the daemon is SIGKILLed while the receiver is down, with alerts in its spool,
//! and the next daemon on the same spool delivers them.
use std::time::{Duration, Instant};

use super::{
    Daemon,
    credentials::{Issuer, bash, exec_with_token, scope},
    tcp_listener, test_dir,
};

#[path = "../support/soc.rs"]
mod receiver;
use receiver::{Pki, Receiver};

/// metadata.uid of the scope-violation alerts the receiver holds.
fn violation_uids(r: &Receiver) -> Vec<String> {
    r.lines
        .lock()
        .unwrap()
        .iter()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v["class_uid"] == 2004 && v["finding_info"]["types"][0] == "scope-violation")
        .filter_map(|v| v["metadata"]["uid"].as_str().map(str::to_string))
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect()
}

fn wait_until(what: &str, mut f: impl FnMut() -> bool) {
    let t = Instant::now();
    while !f() {
        assert!(t.elapsed() < Duration::from_secs(90), "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn alerts_reach_the_webhook_and_a_sigkilled_daemon_resends_its_spool_on_restart() {
    let pki = Pki::generate();
    let (_k, keep) = test_dir();
    let (ca, token, spool) = (keep.join("ca.pem"), keep.join("token"), keep.join("spool"));
    std::fs::write(&ca, &pki.ca_pem).unwrap();
    std::fs::write(&token, "soc-token").unwrap();
    let mut rx = Receiver::start(&pki, 0, "soc-token");
    let issuer = Issuer::new();
    let mut args = issuer.trust_arg();
    args.extend(
        [
            "--alerts",
            "webhook",
            "--webhook",
            &format!("https://127.0.0.1:{}/ingest", rx.port),
            "--webhook-ca",
            &ca.display().to_string(),
            "--webhook-token-file",
            &token.display().to_string(),
            "--spool-dir",
            &spool.display().to_string(),
            "--fold-window",
            "0s",
        ]
        .map(String::from),
    );
    let policy = "version: 1\nagents: []\nmode: observe\n";
    let (_l, port) = tcp_listener("127.0.0.1:0");
    let (_t, dir) = test_dir();
    let tok = issuer.token_file(&issuer.request("task-soc", &["agent"], scope(&[&bash()], &[], &[])));
    // Five out-of-scope connects (observe: they complete), five alerts.
    let script = format!("for i in 1 2 3 4 5; do (exec 3<>/dev/tcp/127.0.0.1/{port}); done; true");

    let d = Daemon::start_with(Some(policy), &args, &[]);
    assert!(exec_with_token(&d, &tok, &dir, &script).status.success());
    wait_until("the first five alerts", || violation_uids(&rx).len() >= 5);

    // Receiver down: five more alerts wait in the spool; then the daemon is SIGKILLed.
    rx.stop();
    assert!(exec_with_token(&d, &tok, &dir, &script).status.success());
    let audit = d.dir.path().join("audit.jsonl");
    wait_until("the daemon to record the second round", || {
        std::fs::read_to_string(&audit).is_ok_and(|t| t.matches("\"class_uid\":4001").count() >= 10)
    });
    std::thread::sleep(Duration::from_millis(500));
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(d.pid() as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    drop(d);
    assert_eq!(
        violation_uids(&rx).len(),
        5,
        "nothing delivered while the receiver was down"
    );

    // Receiver back, a new daemon on the same spool: the five spooled alerts arrive.
    rx.restart(&pki);
    let d2 = Daemon::start_with(Some(policy), &args, &[]);
    wait_until("the spooled alerts after the restart", || {
        violation_uids(&rx).len() >= 10
    });
    let (_events, log) = d2.stop();
    assert_eq!(violation_uids(&rx).len(), 10, "{log}");
}
