//! SOC delivery from the real daemon: alerts of real violations reach a real HTTPS receiver
//! on loopback; the daemon is SIGKILLed while the receiver is down, with alerts in its spool,
//! and the next daemon on the same spool delivers them.
use std::time::{Duration, Instant};

use super::{
    Daemon, check_ocsf,
    credentials::{Issuer, bash, exec_with_token, scope},
    tcp_listener, test_dir,
};

#[path = "../support/soc.rs"]
pub(crate) mod receiver;
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
    super::poll(
        Duration::from_secs(90),
        Duration::from_millis(100),
        || if f() { Ok(()) } else { Err(()) },
        |()| format!("timed out waiting for {what}"),
    )
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

/// Files with hostile names (a newline with a forged JSON object after it, quotes that try to
/// close the field, ANSI escapes with a carriage return, invalid UTF-8) written by a tracked
/// process out of its scope: in the audit file, over syslog and at the webhook (mutual TLS),
/// every event stays one line, every name is data in its field, nothing is forged and no
/// control byte goes out raw. Repeats of one violation are folded into one alert with a
/// count, and every event written, folded alert included, passes its OCSF class's checks.
#[test]
fn hostile_file_names_stay_data_in_the_file_syslog_and_webhook_sinks() {
    use serde_json::Value;
    let pki = Pki::generate();
    let (_k, keep) = test_dir();
    let p = |name: &str| keep.join(name).display().to_string();
    for (name, text) in [
        ("ca.pem", &pki.ca_pem),
        ("cert.pem", &pki.client_cert_pem),
        ("key.pem", &pki.client_key_pem),
    ] {
        std::fs::write(keep.join(name), text).unwrap();
    }
    std::fs::write(keep.join("token"), "soc-token").unwrap();
    let rx = Receiver::start_mutual(&pki, "soc-token");
    let syslog = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    syslog.set_read_timeout(Some(Duration::from_millis(200))).unwrap();
    let issuer = Issuer::new();
    let mut args = issuer.trust_arg();
    args.extend([
        "--audit".into(),
        "syslog".into(),
        "--syslog".into(),
        format!("udp://{}", syslog.local_addr().unwrap()),
        "--alerts".into(),
        "webhook".into(),
        "--webhook".into(),
        format!("https://127.0.0.1:{}/ingest", rx.port),
        "--webhook-ca".into(),
        p("ca.pem"),
        "--webhook-cert".into(),
        p("cert.pem"),
        "--webhook-key".into(),
        p("key.pem"),
        "--webhook-token-file".into(),
        p("token"),
        "--spool-dir".into(),
        p("spool"),
        "--fold-window".into(),
        "2s".into(),
    ]);
    let (_t, dir) = test_dir();
    let (_o, outside) = test_dir();
    // (bash $'...' text, the name as the events must carry it)
    let names = [
        (
            r#"nl\n{"class_uid":2004,"forged":true}"#,
            "nl\n{\"class_uid\":2004,\"forged\":true}".to_string(),
        ),
        (r#"quote"},"forged":{"x":""#, r#"quote"},"forged":{"x":""#.to_string()),
        (r"ansi\x1b[31mred\x1b[0m\r", "ansi\u{1b}[31mred\u{1b}[0m\r".to_string()),
        // Not UTF-8: carried with the replacement character (lossy, never raw).
        (r"bad-\xff\xfe", "bad-\u{fffd}\u{fffd}".to_string()),
    ];
    let want: Vec<String> = names
        .iter()
        .map(|(_, n)| format!("{}/{n}", outside.display()))
        .collect();
    let mut script = names
        .iter()
        .map(|(b, _)| format!(": > {}/$'{b}'", outside.display()))
        .collect::<Vec<_>>()
        .join("; ");
    // One more out-of-scope file, written three times: one alert at once, two folded.
    let repeat = format!("{}/repeat", outside.display());
    script.push_str(&format!("; for i in 1 2 3; do : > {repeat}; done"));
    let tok = issuer.token_file(&issuer.request(
        "task-hostile",
        &["agent"],
        scope(&[&bash()], &[], &[&dir.display().to_string()]),
    ));
    let policy = "version: 1\nagents: []\nmode: observe\n";
    let d = Daemon::start_with(Some(policy), &args, &[]);
    let out = exec_with_token(&d, &tok, &dir, &script);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(
        std::fs::read_dir(&outside).unwrap().count(),
        5,
        "observe mode: the files exist"
    );

    // Syslog: each datagram one line, no raw control byte, its JSON whole.
    let mut syslog_paths = Vec::new();
    let mut buf = vec![0u8; 65536];
    let t = Instant::now();
    while !want.iter().all(|w| syslog_paths.contains(w)) {
        assert!(
            t.elapsed() < Duration::from_secs(60),
            "syslog got {syslog_paths:?}, want {want:?}"
        );
        let Ok(n) = syslog.recv(&mut buf) else {
            continue;
        };
        let msg = std::str::from_utf8(&buf[..n]).expect("syslog datagram is UTF-8");
        assert!(
            !msg.contains(['\n', '\r', '\u{1b}']),
            "raw control byte in syslog: {msg:?}"
        );
        let json = &msg[msg.find(" {").expect("JSON message") + 1..];
        let v: Value = serde_json::from_str(json).unwrap_or_else(|e| panic!("syslog JSON broken ({e}): {msg:?}"));
        assert!(v.get("forged").is_none(), "{msg}");
        if v["class_uid"] == 1001
            && let Some(p) = v["file"]["path"].as_str()
        {
            syslog_paths.push(p.to_string());
        }
    }

    // Webhook (mutual TLS): one scope-violation alert per name, the name in its field.
    let attempted = || -> Vec<String> {
        rx.lines
            .lock()
            .unwrap()
            .iter()
            .map(|l| serde_json::from_str::<Value>(l).unwrap_or_else(|e| panic!("webhook line broken ({e}): {l:?}")))
            .filter(|v| v["class_uid"] == 2004)
            .filter_map(|v| {
                v["unmapped"]["tether"]["details"]["attempted"]
                    .as_str()
                    .map(str::to_string)
            })
            .collect()
    };
    wait_until("the alerts at the webhook", || {
        want.iter().all(|w| attempted().contains(w))
    });
    let folded = || -> Option<Value> {
        rx.lines
            .lock()
            .unwrap()
            .iter()
            .map(|l| serde_json::from_str::<Value>(l).unwrap())
            .find(|v| v["unmapped"]["tether"]["details"]["attempted"] == repeat.as_str() && v.get("count").is_some())
    };
    wait_until("the folded alert", || folded().is_some());
    let f = folded().unwrap();
    assert_eq!(f["count"], 2, "two repeats folded: {f:#}");
    assert!(f["unmapped"]["tether"]["folded"].is_object(), "{f:#}");
    for l in rx.lines.lock().unwrap().iter() {
        assert!(!l.contains(['\r', '\u{1b}']), "raw control byte at the webhook: {l:?}");
        let v: Value = serde_json::from_str(l).unwrap();
        assert!(v.get("forged").is_none(), "{l}");
        check_ocsf(&v);
    }

    // The audit file: every line JSON (stop() parses each), one event per name.
    let text = std::fs::read_to_string(d.dir.path().join("audit.jsonl")).unwrap();
    assert!(!text.contains(['\r', '\u{1b}']), "raw control byte in the audit file");
    let (events, log) = d.stop();
    assert!(events.iter().all(|e| e.get("forged").is_none()), "{log}");
    for e in &events {
        check_ocsf(e);
    }
    for w in &want {
        let n = events
            .iter()
            .filter(|e| e["class_uid"] == 1001 && e["file"]["path"] == w.as_str())
            .count();
        assert_eq!(n, 1, "write of {w:?} in the audit file; log:\n{log}");
    }
}
