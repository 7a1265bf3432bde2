//! `tether run --persist`: the kernel side keeps enforcing while no daemon runs, and the next
//! daemon takes over the pinned state (tracked processes, tasks, the records of the gap).
use std::{
    collections::BTreeSet,
    path::{Path, PathBuf},
    process::Command,
    time::Duration,
};

use serde_json::Value;

use super::{
    Daemon, check_ocsf,
    credentials::{Issuer, scope, token_command, wait_for},
    program_ids, tcp_listener, test_dir, tether_bin, wait_unloaded,
};

/// A pin directory of this test's own on bpffs, and a state directory; whatever is left
/// pinned is removed when it goes (a failed test leaves nothing attached).
struct Persisted {
    pins: PathBuf,
    state: tempfile::TempDir,
}

impl Persisted {
    fn new() -> Persisted {
        Persisted {
            pins: PathBuf::from(format!("/sys/fs/bpf/tether-test-{}", std::process::id())),
            state: tempfile::tempdir().expect("state dir"),
        }
    }

    fn args(&self) -> Vec<String> {
        vec![
            "--persist".into(),
            "--pin-dir".into(),
            self.pins.display().to_string(),
            "--state-dir".into(),
            self.state.path().display().to_string(),
        ]
    }

    fn unpin(&self) -> std::process::Output {
        Command::new(tether_bin())
            .arg("unpin")
            .arg("--pin-dir")
            .arg(&self.pins)
            .arg("--state-dir")
            .arg(self.state.path())
            .output()
            .expect("tether unpin")
    }

    fn entries(&self) -> BTreeSet<String> {
        std::fs::read_dir(&self.pins)
            .map(|rd| {
                rd.filter_map(|e| e.ok())
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default()
    }
}

impl Drop for Persisted {
    fn drop(&mut self) {
        let _ = self.unpin();
    }
}

/// The audit events written so far by a running daemon.
fn events_so_far(d: &Daemon) -> Vec<Value> {
    std::fs::read_to_string(d.dir.path().join("audit.jsonl"))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

fn connects_to(events: &[Value], port: u16) -> Vec<Value> {
    events
        .iter()
        .filter(|e| e["class_uid"] == 4001 && e["dst_endpoint"]["port"] == port)
        .cloned()
        .collect()
}

/// Waits until the daemon has written `n` connect events to `port`.
fn wait_for_connects(d: &Daemon, port: u16, n: usize) -> Vec<Value> {
    super::poll(
        Duration::from_secs(30),
        Duration::from_millis(50),
        || {
            let found = connects_to(&events_so_far(d), port);
            if found.len() >= n { Ok(found) } else { Err(found) }
        },
        |found| {
            format!(
                "{n} connect event(s) to port {port} never came; found {found:#?}\nlog:\n{}",
                d.log()
            )
        },
    )
}

fn assert_denied_for_the_task(e: &Value, jti: &str) {
    assert_eq!(e["action_id"], 2, "{e}");
    assert_eq!(e["unmapped"]["tether"]["outcome"]["denied"], true, "{e}");
    assert_eq!(e["unmapped"]["tether"]["task"]["jti"], jti, "{e}");
    check_ocsf(e);
}

fn no_connection(l: &std::net::TcpListener) -> bool {
    l.set_nonblocking(true).unwrap();
    matches!(l.accept(), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock)
}

/// Enforce, with scope violations denied.
const POLICY: &str = "version: 1\nagents: []\nmode: enforce\nactions:\n  scope: {action: deny, severity: medium}\n";

/// A first daemon with --persist and `issuer` trusted: (its run arguments, the programs
/// loaded before it, the daemon, its layout and generation).
fn first_daemon(issuer: &Issuer, persisted: &Persisted) -> (Vec<String>, BTreeSet<u32>, Daemon, String, u64) {
    let mut args = issuer.trust_arg();
    args.extend(persisted.args());
    let before = program_ids();
    let d = Daemon::start_with(Some(POLICY), &args, &[]);
    let s = d.status();
    let layout = s["persist"]["layout"].as_str().expect("persist status").to_string();
    let generation = s["persist"]["generation"].as_u64().expect("persist status");
    (args, before, d, layout, generation)
}

fn write_fifo(p: &Path) {
    std::fs::write(p, "go\n").unwrap_or_else(|e| panic!("writing {}: {e}", p.display()));
}

#[test]
fn a_sigkilled_daemon_keeps_enforcing_and_the_next_one_takes_over_and_reports_the_gap() {
    let issuer = Issuer::new();
    let persisted = Persisted::new();
    let (args, before, d1, layout, gen1) = first_daemon(&issuer, &persisted);
    let status1 = d1.status();
    let gen1_dir = format!("gen-{layout}-{gen1}");
    assert!(persisted.entries().contains(&gen1_dir), "{:?}", persisted.entries());
    let ours: BTreeSet<u32> = program_ids().difference(&before).copied().collect();

    let (_t, dir) = test_dir();
    let (_in_l, port_in) = tcp_listener("127.0.0.1:0");
    let (out_l, port_out) = tcp_listener("127.0.0.1:0");
    let jti = "task-restart";
    let token = issuer.token_file(&issuer.request(
        jti,
        &["agent"],
        scope(
            &["/**"],
            &[format!("tcp:127.0.0.1:{port_in}")],
            &[&format!("{}/", dir.display())],
        ),
    ));
    for f in ["gap", "after"] {
        nix::unistd::mkfifo(&dir.join(f), nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
    }
    // The out-of-scope connect comes from a subshell forked while no daemon runs: the pinned
    // fork hook tracks it, the pinned connect hook refuses it.
    let script = format!(
        "cd \"$DIR\"; exec 3<>/dev/tcp/127.0.0.1/{port_in} && : > in-ok; exec 3>&-; : > started; \
         read line < gap; \
         if (exec 4<>/dev/tcp/127.0.0.1/{port_out}) 2>/dev/null; then : > gap-connected; else : > gap-refused; fi; \
         read line < after; \
         if (exec 4<>/dev/tcp/127.0.0.1/{port_out}) 2>/dev/null; then : > after-connected; else : > after-refused; fi"
    );
    let mut agent = token_command(&d1, &token, &dir, &script).spawn().expect("tether exec");
    wait_for(&dir.join("started"));
    assert!(dir.join("in-ok").exists());

    // The daemon dies; its programs stay (pinned) and go on judging.
    let mut d1 = d1;
    d1.child.kill().unwrap();
    d1.child.wait().unwrap();
    let left: BTreeSet<u32> = program_ids().intersection(&ours).copied().collect();
    let not_pinned = status1["persist"]["not_pinned"].as_array().expect("not_pinned");
    if not_pinned.is_empty() {
        assert_eq!(left, ours, "the pinned programs must stay loaded with no daemon");
    } else {
        // Before 5.15 tracepoint attachments are not links: those go with the daemon, the
        // rest (fork, LSM, cgroup hooks) stay. Said in the status, checked here.
        eprintln!("kept across the restart on this kernel: all but {not_pinned:?}");
        assert!(
            not_pinned
                .iter()
                .all(|n| n.as_str().is_some_and(|n| n.contains("before Linux 5.15"))),
            "{not_pinned:?}"
        );
        assert!(
            !left.is_empty() && left.len() < ours.len(),
            "the pinned programs must stay loaded with no daemon: {left:?} of {ours:?}"
        );
    }
    write_fifo(&dir.join("gap"));
    wait_for(&dir.join("gap-refused"));
    assert!(!dir.join("gap-connected").exists());
    assert!(
        no_connection(&out_l),
        "the out-of-scope connect during the gap reached the listener"
    );

    // The next daemon takes over: the task, its processes, and the gap's record.
    let d2 = Daemon::start_with(Some(POLICY), &args, &[]);
    let both: BTreeSet<u32> = program_ids().difference(&before).copied().collect();
    let gap = wait_for_connects(&d2, port_out, 1);
    assert_eq!(gap.len(), 1, "{gap:#?}");
    assert_denied_for_the_task(&gap[0], jti);
    let status2 = d2.status();
    let took = &status2["persist"]["took_over"];
    assert_eq!(took["previous_generation"], gen1, "{took}");
    assert_eq!(took["adopted_maps"], true, "{took}");
    assert_eq!(took["tasks_restored"], 1, "{took}");
    assert!(took["processes_adopted"].as_u64().unwrap_or(0) >= 1, "{took}");
    assert!(
        took["unpinned"].as_array().unwrap().iter().any(|u| u == &gen1_dir),
        "{took}"
    );
    let gen2 = status2["persist"]["generation"].as_u64().unwrap();
    assert!(!persisted.entries().contains(&gen1_dir), "{:?}", persisted.entries());
    // The first daemon's programs are gone once the hand-over is done.
    wait_unloaded(
        &ours,
        "the previous generation's programs stay loaded after the hand-over",
    );

    // The new generation enforces the restored scope and attributes to the task.
    write_fifo(&dir.join("after"));
    let status = agent.wait().unwrap();
    assert!(status.success(), "{status:?}");
    assert!(dir.join("after-refused").exists());
    let after = wait_for_connects(&d2, port_out, 2);
    assert_eq!(after.len(), 2, "{after:#?}");
    assert_denied_for_the_task(&after[1], jti);
    assert!(no_connection(&out_l));

    // A clean stop keeps the pins (a rolling update); `tether unpin` removes them all.
    let (_, log) = d2.stop();
    assert!(log.contains("the programs stay attached"), "{log}");
    let gen2_dir = format!("gen-{layout}-{gen2}");
    assert!(persisted.entries().contains(&gen2_dir), "{:?}", persisted.entries());
    let out = persisted.unpin();
    assert!(
        out.status.success(),
        "tether unpin: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(persisted.entries().is_empty(), "{:?}", persisted.entries());
    wait_unloaded(&both, "programs still loaded after tether unpin");
}

#[test]
fn an_upgrade_across_a_layout_change_replaces_the_programs_and_says_what_it_cannot_carry_over() {
    let issuer = Issuer::new();
    let persisted = Persisted::new();
    let (args, before, d1, layout1, gen1) = first_daemon(&issuer, &persisted);
    let ours: BTreeSet<u32> = program_ids().difference(&before).copied().collect();
    let (_t, dir) = test_dir();
    let token = issuer.token_file(&issuer.request(
        "task-upgrade",
        &["agent"],
        scope(&["/**"], &[], &[&format!("{}/", dir.display())]),
    ));
    nix::unistd::mkfifo(&dir.join("done"), nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
    let mut agent = token_command(&d1, &token, &dir, "cd \"$DIR\"; : > started; read line < done")
        .spawn()
        .expect("tether exec");
    wait_for(&dir.join("started"));
    let mut d1 = d1;
    d1.child.kill().unwrap();
    d1.child.wait().unwrap();

    // The "new version": another layout, so nothing can be shared.
    let layout2 = "0123456789abcdef";
    let d2 = Daemon::start_with(Some(POLICY), &args, &[("TETHER_LAYOUT_OVERRIDE", layout2)]);
    let s2 = d2.status();
    let took = &s2["persist"]["took_over"];
    assert_eq!(s2["persist"]["layout"], layout2);
    assert_eq!(took["adopted_maps"], false, "{took}");
    let gen2 = s2["persist"]["generation"].as_u64().unwrap();
    let unpinned: BTreeSet<String> = took["unpinned"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u.as_str().unwrap().to_string())
        .collect();
    assert_eq!(
        unpinned,
        [format!("gen-{layout1}-{gen1}"), format!("maps-{layout1}")].into(),
        "{took}"
    );
    assert_eq!(
        persisted.entries(),
        [format!("gen-{layout2}-{gen2}"), format!("maps-{layout2}")].into()
    );
    wait_unloaded(&ours, "the old version's programs stay loaded after the upgrade");
    write_fifo(&dir.join("done"));
    assert!(agent.wait().unwrap().success());
    let (events, log) = d2.stop();
    // What could not be carried over is said, not hidden.
    let lost = super::credentials::alerts(&events, "restart-state-lost");
    assert_eq!(lost.len(), 1, "{log}");
    assert!(
        lost[0].to_string().contains("cannot be taken over") && lost[0].to_string().contains(&layout1),
        "{}",
        lost[0]
    );
    let gap = super::credentials::alerts(&events, "events-lost");
    assert!(
        gap.iter().any(|a| a.to_string().contains("wire layout change")),
        "{gap:#?}\n{log}"
    );
    for a in lost.iter().chain(gap.iter()) {
        check_ocsf(a);
    }
}

/// The pinned pod guard map (pod cgroup id -> guard set).
fn pinned_pod_guards(persisted: &Persisted, layout: &str) -> aya::maps::HashMap<aya::maps::MapData, u64, u32> {
    let data = aya::maps::MapData::from_pin(persisted.pins.join(format!("maps-{layout}/POD_GUARDS")))
        .expect("the pinned POD_GUARDS map");
    aya::maps::HashMap::try_from(aya::maps::Map::HashMap(data)).expect("a hash map")
}

/// What the pinned pod guard map holds.
fn pod_guards(persisted: &Persisted, layout: &str) -> std::collections::BTreeMap<u64, u32> {
    pinned_pod_guards(persisted, layout)
        .iter()
        .filter_map(|r| r.ok())
        .collect()
}

#[test]
fn pod_guard_sets_survive_a_restart_and_those_of_pods_gone_meanwhile_are_swept() {
    let cluster = super::pods::Cluster::start();
    let persisted = Persisted::new();
    let mut args = cluster.kube_args();
    args.extend(persisted.args());
    let policy = "version: 1\nmode: enforce\nagents: []\nguardrails:\n  - {id: agents-no-port, action: deny, pods: {namespace: [agents]}, connect: [\"tcp:127.0.0.1:1\"]}\n";
    let d1 = Daemon::start_with(Some(policy), &args, &[]);
    super::pods::wait_status(&d1, "the pod's guard set", |s| {
        s["kubernetes"]["pod_cgroups_guarded"] == 1
    });
    let layout = d1.status()["persist"]["layout"].as_str().unwrap().to_string();
    let placed = pod_guards(&persisted, &layout);
    assert_eq!(placed.values().copied().collect::<Vec<_>>(), vec![1], "{placed:?}");
    let mut d1 = d1;
    d1.child.kill().unwrap();
    d1.child.wait().unwrap();

    // A pod deleted while no daemon ran: its cgroup is gone, its entry is still pinned.
    let root = tether::loader::cgroup2_root().unwrap();
    let gone = root.join(format!("tether-test-gone-{}", std::process::id()));
    std::fs::create_dir(&gone).unwrap();
    let gone_id = std::os::unix::fs::MetadataExt::ino(&std::fs::metadata(&gone).unwrap());
    std::fs::remove_dir(&gone).unwrap();
    pinned_pod_guards(&persisted, &layout).insert(gone_id, 1, 0).unwrap();
    let d2 = Daemon::start_with(Some(policy), &args, &[]);
    super::pods::wait_status(&d2, "the pod's guard set", |s| {
        s["kubernetes"]["pod_cgroups_guarded"] == 1
    });
    let now = super::poll(
        Duration::from_secs(20),
        Duration::from_millis(100),
        || {
            let now = pod_guards(&persisted, &layout);
            if now.contains_key(&gone_id) { Err(now) } else { Ok(now) }
        },
        |now| format!("the gone pod's entry stays: {now:?}\n{}", d2.log()),
    );
    assert_eq!(now, placed, "the live pod keeps its set across the restart");
    let (_, log) = d2.stop();
    assert!(
        log.contains("removed pod guard entries of pods whose cgroup is gone"),
        "{log}"
    );
    drop(cluster);
}
