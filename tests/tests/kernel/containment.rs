//! Containment against the real daemon and probes: the same script under `enforce` and under
//! `observe`. Enforce: an out-of-scope TCP connect gets EPERM and the listener sees nothing,
//! an out-of-scope UDP send is refused, an exec outside `exec` never runs, a guardrail holds
//! for a credential that allows everything, allowed actions are undisturbed. Observe: every
//! action completes and the events say what enforcement would have done.
use std::path::Path;

use serde_json::Value;

use super::{
    Daemon, check_ocsf,
    credentials::{Issuer, alerts, bash, exec_with_token, scope},
    netprobe_bin, tcp_listener, test_dir,
};

fn policy(mode: &str) -> String {
    format!(
        r#"version: 1
agents: []
mode: {mode}
guardrails:
  - id: metadata
    severity: high
    action: deny
    connect: ["udp:127.0.0.2:*", "tcp:127.0.0.2:*"]
actions:
  scope: {{action: deny, severity: medium}}
  expired: {{action: kill, severity: high}}
"#
    )
}

fn net_events(events: &[Value], port: u16) -> Vec<&Value> {
    events
        .iter()
        .filter(|e| e["class_uid"] == 4001 && e["dst_endpoint"]["port"] == port)
        .collect()
}

/// Runs the script under `mode`; returns (exit status of the script, marker files, events).
fn run(mode: &str) -> (bool, Vec<String>, Vec<Value>, String, u16, u16) {
    let issuer = Issuer::new();
    let d = Daemon::start_with(Some(&policy(mode)), &issuer.trust_arg(), &[]);
    let (_t, dir) = test_dir();
    let (l_in, p_in) = tcp_listener("127.0.0.1:0");
    let (l_out, p_out) = tcp_listener("127.0.0.1:0");
    let token = issuer.token_file(&issuer.request(
        &format!("task-{mode}"),
        &["agent"],
        scope(
            &[&bash(), &netprobe_bin().canonicalize().unwrap().display().to_string()],
            &[format!("tcp:127.0.0.1:{p_in}"), "udp:0.0.0.0/0:*".into()],
            &[&format!("{}/", dir.display())],
        ),
    ));
    // Each step leaves a marker when it succeeded; the script goes on either way.
    let script = format!(
        "cd \"$DIR\"; \
         (exec 3<>/dev/tcp/127.0.0.1/{p_in}) && : > in-connect; \
         (exec 3<>/dev/tcp/127.0.0.1/{p_out}) 2> out-connect.err && : > out-connect; \
         \"$NETPROBE\" sendto 127.0.0.1 {p_in} && : > udp-in; \
         \"$NETPROBE\" sendto 127.0.0.2 9 2> udp-meta.err && : > udp-meta; \
         (\"$TETHER\" help > /dev/null) && : > out-exec; \
         true"
    );
    let out = exec_with_token(&d, &token, &dir, &script);
    let in_ok = l_in.set_nonblocking(true).is_ok()
        && (0..200).any(|_| {
            std::thread::sleep(std::time::Duration::from_millis(10));
            l_in.accept().is_ok()
        });
    assert!(in_ok, "the in-scope connect always arrives ({mode})");
    l_out.set_nonblocking(true).unwrap();
    std::thread::sleep(std::time::Duration::from_millis(300));
    let out_arrived = l_out.accept().is_ok();
    let markers: Vec<String> = ["in-connect", "out-connect", "udp-in", "udp-meta", "out-exec"]
        .iter()
        .filter(|m| Path::new(&dir).join(m).exists())
        .map(|m| m.to_string())
        .collect();
    let err = std::fs::read_to_string(dir.join("out-connect.err")).unwrap_or_default();
    let (events, log) = d.stop();
    for e in &events {
        check_ocsf(e);
    }
    let mut m = markers;
    if out_arrived {
        m.push("listener-saw-out-connect".into());
    }
    (out.status.success(), m, events, format!("{err}\n{log}"), p_in, p_out)
}

#[test]
fn enforce_refuses_out_of_scope_actions_and_observe_reports_what_it_would_have_done() {
    let (ok, markers, events, log, p_in, p_out) = run("enforce");
    assert!(ok, "{log}");
    assert_eq!(
        markers,
        ["in-connect", "udp-in"],
        "enforce: only allowed actions succeed\n{log}"
    );
    assert!(log.contains("Operation not permitted"), "the client sees EPERM: {log}");
    let refused = net_events(&events, p_out);
    assert_eq!(refused.len(), 1, "{refused:#?}");
    let r = refused[0];
    assert_eq!(r["action_id"], 2);
    assert_eq!(r["disposition_id"], 2);
    assert_eq!(r["unmapped"]["tether"]["outcome"]["denied"], true);
    assert!(
        r["unmapped"]["tether"]["outcome"]["by"]
            .as_str()
            .unwrap()
            .contains("connect"),
        "{r}"
    );
    for e in net_events(&events, p_in) {
        assert_eq!(e["action_id"], 1, "allowed actions are not disturbed: {e}");
    }
    // The guardrail held for a credential allowing every UDP destination.
    let g = alerts(&events, "guardrail-violation");
    assert!(!g.is_empty(), "{events:#?}");
    // The exec outside `exec` never ran (the marker is absent). On a kernel without BPF LSM,
    // `tether exec` applied Landlock, which refuses the execve itself (no exec happens, so no
    // exec record); where an exec record exists, the probe killed it before it ran.
    for e in events
        .iter()
        .filter(|e| e["class_uid"] == 1007 && e["unmapped"]["tether"]["decision"]["rule"] == "scope:exec")
    {
        let o = &e["unmapped"]["tether"]["outcome"];
        assert!(o["killed"] == true || o["denied"] == true, "{e}");
    }

    let (ok, markers, events, log, _, p_out) = run("observe");
    assert!(ok, "{log}");
    assert_eq!(
        markers,
        [
            "in-connect",
            "out-connect",
            "udp-in",
            "udp-meta",
            "out-exec",
            "listener-saw-out-connect"
        ],
        "observe: everything completes\n{log}"
    );
    let e = net_events(&events, p_out);
    assert_eq!(e[0]["unmapped"]["tether"]["decision"]["would"], "deny", "{:#?}", e[0]);
    assert_eq!(e[0]["action_id"], 1);
    assert_eq!(e[0]["disposition_id"], 15);
}
