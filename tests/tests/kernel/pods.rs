//! Pod identity end to end: a pod cgroup named as the kubelet (systemd driver) and containerd
//! name theirs, the pod served by a local HTTPS server speaking the Kubernetes API's list/watch
//! protocol with recorded objects, and the real daemon selecting by pod label.
use std::{
    path::{Path, PathBuf},
    process::Command,
    time::Duration,
};

use serde_json::Value;

use super::{Daemon, actor, exactly_one, test_dir};

#[path = "../support/kube_api.rs"]
mod kube_api;
use super::soc::receiver as pki;

const LIST: &str = include_str!("../../fixtures/kubernetes/pods-list.json");
const POD_UID: &str = "6a1f3c2e-8b7d-4e59-9c21-0f4b5a6d7e81";
const CONTAINER: &str = "84ad0790d137467a41a21d7fb29b4973f68d4d00e67390454d587da8e5cc292b";

/// `<cgroup2>/tether-test-kubepods-PID.slice/kubepods-burstable-pod<uid_>.slice/cri-containerd-<id>.scope`,
/// removed (innermost first, once its processes are gone) on drop.
struct PodCgroups(Vec<PathBuf>);

impl PodCgroups {
    fn create() -> PodCgroups {
        let root = tether::loader::cgroup2_root().expect("a cgroup2 mount");
        let top = root.join(format!("tether-test-kubepods-{}.slice", std::process::id()));
        let pod = top.join(format!("kubepods-burstable-pod{}.slice", POD_UID.replace('-', "_")));
        let container = pod.join(format!("cri-containerd-{CONTAINER}.scope"));
        for d in [&top, &pod, &container] {
            std::fs::create_dir(d).unwrap_or_else(|e| panic!("mkdir {}: {e}", d.display()));
        }
        PodCgroups(vec![container, pod, top])
    }

    /// bash running `script` in `dir` after moving itself into the container's cgroup.
    fn in_container(&self, dir: &Path, script: &str) -> Command {
        let mut cmd = Command::new("/bin/bash");
        cmd.arg("-c")
            .arg(format!(
                "echo $$ > {} && {script}",
                self.0[0].join("cgroup.procs").display()
            ))
            .current_dir(dir);
        cmd
    }
}

impl Drop for PodCgroups {
    fn drop(&mut self) {
        for d in &self.0 {
            let gone = (0..50).any(|_| {
                std::fs::remove_dir(d).is_ok() || {
                    std::thread::sleep(Duration::from_millis(100));
                    false
                }
            });
            if !gone {
                eprintln!("could not remove test cgroup {}", d.display());
            }
        }
    }
}

/// A pod cgroup and a local API server that lists the recorded pods.
pub(super) struct Cluster {
    _t: tempfile::TempDir,
    dir: PathBuf,
    cgroups: PodCgroups,
    api: kube_api::KubeApi,
}

impl Cluster {
    pub(super) fn start() -> Cluster {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let (t, dir) = test_dir();
        let cgroups = PodCgroups::create();
        let pki = pki::Pki::generate();
        let api = kube_api::KubeApi::start(pki.acceptor(), LIST, "sa-token");
        std::fs::write(dir.join("ca.crt"), &pki.ca_pem).unwrap();
        std::fs::write(dir.join("token"), "sa-token\n").unwrap();
        Cluster {
            _t: t,
            dir,
            cgroups,
            api,
        }
    }

    /// `tether run`'s arguments to reach the API.
    pub(super) fn kube_args(&self) -> Vec<String> {
        vec![
            "--kube-api".into(),
            self.api.url(),
            "--kube-ca".into(),
            self.dir.join("ca.crt").display().to_string(),
            "--kube-token-file".into(),
            self.dir.join("token").display().to_string(),
        ]
    }
}

pub(super) fn wait_status(d: &Daemon, what: &str, cond: impl Fn(&Value) -> bool) -> Value {
    for _ in 0..150 {
        let s = d.status();
        if cond(&s) {
            return s;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("timed out waiting for {what}: {:#}\nlog:\n{}", d.status(), d.log());
}

#[test]
fn a_pod_label_selects_the_pods_processes_and_every_event_names_node_container_and_pod() {
    let cluster = Cluster::start();
    let (dir, cgroups, api) = (cluster.dir.clone(), &cluster.cgroups, &cluster.api);

    // In the pod's container before the daemon starts: adopted once the pod is selected.
    let early = cgroups
        .in_container(&dir, "while [ ! -e go ]; do sleep 0.05; done; echo early > early.txt")
        .spawn()
        .unwrap();
    let policy = "version: 1\nagents:\n  - id: labelled-agents\n    namespace: [agents]\n    pod_labels: {tether.dev/agent: \"true\"}\n";
    let mut args = cluster.kube_args();
    args.extend(["--node-name".to_string(), "node-a".to_string()]);
    let d = Daemon::start_with(Some(policy), &args, &[]);
    let s = wait_status(&d, "the pod's cgroup in the selector map", |s| {
        s["kubernetes"]["pod_cgroups_selected"] == 1
    });
    assert_eq!(s["kubernetes"]["state"], "watching", "{s:#}");
    assert_eq!(s["kubernetes"]["pods"], 2, "{s:#}");
    assert_eq!(s["node"], "node-a");
    std::fs::write(dir.join("go"), "").unwrap();
    // Exec'd in the container: selected by the kernel at exec.
    let st = cgroups
        .in_container(&dir, "exec /bin/sh -c 'echo in-pod > in-pod.txt'")
        .status()
        .unwrap();
    assert!(st.success());
    // The same outside the pod: not an agent.
    assert!(
        Command::new("/bin/bash")
            .arg("-c")
            .arg("exec /bin/sh -c 'echo outside > outside.txt'")
            .current_dir(&dir)
            .status()
            .unwrap()
            .success()
    );
    let early_pid = early.id();
    assert!(early.wait_with_output().unwrap().status.success());

    // The pod is deleted: its cgroup leaves the selector map; a new exec there is not selected.
    api.push([r#"{"type":"DELETED","object":{"kind":"Pod","apiVersion":"v1","metadata":{"name":"coding-agent-7d9c5b8f6-x2kq4","namespace":"agents","uid":"6a1f3c2e-8b7d-4e59-9c21-0f4b5a6d7e81","resourceVersion":"49000","labels":{"tether.dev/agent":"true"}}}}"#]);
    wait_status(&d, "the deleted pod's cgroup out of the map", |s| {
        s["kubernetes"]["pod_cgroups_selected"] == 0
    });
    let st = cgroups
        .in_container(&dir, "exec /bin/sh -c 'echo after > after-delete.txt'")
        .status()
        .unwrap();
    assert!(st.success());
    std::thread::sleep(Duration::from_millis(300));
    let (events, log) = d.stop();
    let write = |name: &str| {
        let path = dir.join(name);
        events
            .iter()
            .filter(|e| super::is_file(e, 14, &path))
            .collect::<Vec<_>>()
    };
    assert_eq!(
        write("outside.txt").len(),
        0,
        "a process outside the pod was tracked; log:\n{log}"
    );
    assert_eq!(
        write("after-delete.txt").len(),
        0,
        "the deleted pod still selected; log:\n{log}"
    );
    let in_pod = exactly_one(&events, "the in-pod write", |e| {
        super::is_file(e, 14, &dir.join("in-pod.txt"))
    });
    assert_eq!(in_pod["unmapped"]["tether"]["tracked_by"], "selector");
    let early_ev = exactly_one(&events, "the adopted process's write", |e| {
        super::is_file(e, 14, &dir.join("early.txt"))
    });
    assert_eq!(early_ev["unmapped"]["tether"]["tracked_by"], "adopted", "log:\n{log}");
    assert_eq!(actor(early_ev)["process"]["pid"], early_pid);
    for e in [in_pod, early_ev] {
        let t = &e["unmapped"]["tether"];
        assert_eq!(t["node"], "node-a");
        assert_eq!(e["device"]["hostname"], "node-a");
        assert_eq!(t["container"]["id"], CONTAINER);
        assert_eq!(t["container"]["runtime"], "containerd");
        assert_eq!(t["pod"]["uid"], POD_UID);
        assert_eq!(t["pod"]["namespace"], "agents");
        assert_eq!(t["pod"]["name"], "coding-agent-7d9c5b8f6-x2kq4");
        assert_eq!(t["pod"]["labels"]["tether.dev/agent"], "true");
        super::check_ocsf(e);
    }
    // Every event names the node.
    assert!(events.iter().all(|e| e["unmapped"]["tether"]["node"] == "node-a"));
    // One list, one watch: never an API call per event.
    let reqs = api.requests();
    assert_eq!(
        reqs.iter().filter(|(p, _)| !p.contains("watch=true")).count(),
        1,
        "{reqs:?}"
    );
    assert!(reqs.iter().all(|(_, auth)| auth == "Bearer sa-token"));
    drop(cluster);
}

/// The identity check (`actor_must_match: refuse`): in the pod (service account
/// `coding-agent` in namespace `agents`), a credential whose current actor is the pod's SPIFFE
/// ID binds and its command runs; one naming another workload is refused, its command never
/// runs (checked on disk) and an alert says why; outside any pod there is no workload to
/// compare and the same credential binds.
#[test]
fn a_credential_naming_another_workload_is_refused_in_the_pod() {
    use super::credentials::{Issuer, exec_with_token, scope};
    let cluster = Cluster::start();
    let (dir, cgroups) = (cluster.dir.clone(), &cluster.cgroups);
    let issuer = Issuer::new();
    let policy = "version: 1\nworkload_identity: {trust_domain: cluster.local, actor_must_match: refuse}\n";
    let mut args = cluster.kube_args();
    args.extend(issuer.trust_arg());
    let d = Daemon::start_with(Some(policy), &args, &[]);
    wait_status(&d, "the pods listed", |s| s["kubernetes"]["pods"] == 2);
    let all = scope(&["/**"], &[], &["/"]);
    let token = |jti: &str, actor: &str| issuer.token_file(&issuer.request(jti, &[actor], all.clone()));
    let mine = token("task-mine", "spiffe://cluster.local/ns/agents/sa/coding-agent");
    let other = token("task-other", "spiffe://cluster.local/ns/agents/sa/reviewer");
    let in_pod = |token: &Path, out: &str| {
        cgroups
            .in_container(
                &dir,
                &format!(
                    "exec {} exec --socket {} --token {} -- /bin/sh -c 'echo x > {out}'",
                    super::tether_bin().display(),
                    d.socket().display(),
                    token.display()
                ),
            )
            .output()
            .unwrap()
    };
    let ok = in_pod(&mine, "mine.txt");
    assert!(ok.status.success(), "{ok:?}");
    assert!(dir.join("mine.txt").exists());
    let refused = in_pod(&other, "other.txt");
    assert_eq!(refused.status.code(), Some(126), "{refused:?}");
    let err = String::from_utf8_lossy(&refused.stderr);
    assert!(
        err.contains("spiffe://cluster.local/ns/agents/sa/coding-agent"),
        "the refusal names the workload: {err}"
    );
    assert!(!dir.join("other.txt").exists(), "the command never ran");
    // Outside any pod: nothing to compare; the same credential binds.
    let out = exec_with_token(&d, &other, &dir, "echo y > \"$DIR\"/outside.txt");
    assert!(out.status.success(), "{out:?}");
    assert!(dir.join("outside.txt").exists());
    let (events, log) = d.stop();
    let alerts = super::credentials::alerts(&events, "actor-mismatch");
    assert_eq!(alerts.len(), 1, "{alerts:#?}\n{log}");
    // Refused before anything ran: the finding says so (not Allowed).
    assert_eq!(
        (&alerts[0]["action_id"], &alerts[0]["disposition_id"]),
        (&serde_json::json!(2), &serde_json::json!(2)),
        "{}",
        alerts[0]
    );
    super::check_ocsf(alerts[0]);
    assert!(
        alerts[0]["unmapped"]["tether"]["details"]["reason"]
            .as_str()
            .unwrap()
            .contains("sa/reviewer"),
        "{}",
        alerts[0]
    );
    drop(cluster);
}

#[test]
fn a_namespace_guardrail_holds_in_the_kernel_for_the_pods_processes_only() {
    let cluster = Cluster::start();
    let (dir, cgroups) = (cluster.dir.clone(), &cluster.cgroups);
    let (listener, port) = super::tcp_listener("127.0.0.1:0");
    let (_other_l, other_port) = super::tcp_listener("127.0.0.1:0");
    // Connects to $PORT: refused (EPERM) or made; one marker file says which.
    let probe = |tag: &str| {
        format!(
            "if (exec 3<>/dev/tcp/127.0.0.1/{port}) 2>/dev/null; then : > {tag}-connected; else : > {tag}-refused; fi; \
             (exec 3<>/dev/tcp/127.0.0.1/{other_port}) && : > {tag}-other-connected"
        )
    };
    // In the pod before the daemon starts: adopted at start, given the pod's guard set when
    // the pod list arrives.
    let early = cgroups
        .in_container(
            &dir,
            &format!("while [ ! -e go ]; do sleep 0.05; done; {}", probe("early")),
        )
        .spawn()
        .unwrap();
    let policy = format!(
        "version: 1\nmode: enforce\nagents:\n  - id: agents-ns\n    namespace: [agents]\nguardrails:\n  - id: agents-no-port\n    action: deny\n    pods: {{namespace: [agents]}}\n    connect: [\"tcp:127.0.0.1:{port}\"]\n  - id: elsewhere-no-port\n    action: deny\n    pods: {{namespace: [elsewhere], pod_labels: {{tether.dev/agent: \"true\"}}}}\n    connect: [\"tcp:127.0.0.1:{other_port}\"]\n"
    );
    let d = Daemon::start_with(Some(&policy), &cluster.kube_args(), &[]);
    let s = wait_status(&d, "the pod's cgroup with its guard set", |s| {
        s["kubernetes"]["pod_cgroups_guarded"] == 1 && s["kubernetes"]["pod_cgroups_selected"] == 1
    });
    let g = s["rules"]["guardrails"]
        .as_array()
        .unwrap()
        .iter()
        .find(|g| g["id"] == "agents-no-port")
        .unwrap_or_else(|| panic!("{s:#}"));
    assert_eq!(g["pods"]["namespace"][0], "agents", "{s:#}");
    std::fs::write(dir.join("go"), "").unwrap();
    // Exec'd in the container: selected at exec, with the pod's guard set from the kernel.
    let st = cgroups
        .in_container(&dir, &format!("exec /bin/bash -c '{}'", probe("in-pod")))
        .status()
        .unwrap();
    assert!(st.success());
    // The same outside any pod, tracked through `tether exec`: the guardrail is not its.
    let st = Command::new(super::tether_bin())
        .args(["exec", "--socket"])
        .arg(d.socket())
        .args(["--", "/bin/bash", "-c", &probe("outside")])
        .current_dir(&dir)
        .status()
        .unwrap();
    assert!(st.success());
    assert!(early.wait_with_output().unwrap().status.success());
    let (events, log) = d.stop();
    for (tag, refused) in [("early", true), ("in-pod", true), ("outside", false)] {
        let (r, c) = (dir.join(format!("{tag}-refused")), dir.join(format!("{tag}-connected")));
        assert_eq!((r.exists(), c.exists()), (refused, !refused), "{tag}; log:\n{log}");
        // The other namespace's guardrail holds for none of them.
        assert!(
            dir.join(format!("{tag}-other-connected")).exists(),
            "{tag}; log:\n{log}"
        );
    }
    // Only the outside process reached the listener.
    listener.set_nonblocking(true).unwrap();
    assert!(listener.accept().is_ok());
    assert!(listener.accept().is_err(), "a refused connect arrived");
    let connects: Vec<&Value> = events
        .iter()
        .filter(|e| e["class_uid"] == 4001 && e["dst_endpoint"]["port"] == port)
        .collect();
    assert_eq!(connects.len(), 3, "{connects:#?}");
    for e in &connects {
        let in_pod = e["unmapped"]["tether"]["pod"]["namespace"] == "agents";
        if in_pod {
            assert_eq!(e["action_id"], 2, "{e}");
            assert_eq!(
                e["unmapped"]["tether"]["decision"]["rule"], "guardrail:agents-no-port",
                "{e}"
            );
            assert_eq!(e["unmapped"]["tether"]["kernel_verdict"]["undecided"], false, "{e}");
        } else {
            assert_eq!(e["action_id"], 1, "{e}");
            assert!(e["unmapped"]["tether"]["decision"].is_null(), "{e}");
        }
        super::check_ocsf(e);
    }
    assert_eq!(
        connects
            .iter()
            .filter(|e| e["unmapped"]["tether"]["pod"]["namespace"] == "agents")
            .count(),
        2
    );
    drop(cluster);
}

/// Starts `tether run --no-kubernetes` on `policy`: it must refuse; returns what it said.
fn refused_without_pod_identity(policy: &str) -> String {
    let (_t, dir) = test_dir();
    let path = dir.join("p.yaml");
    std::fs::write(&path, policy).unwrap();
    let out = Command::new(super::tether_bin())
        .args(["run", "--no-kubernetes", "--policy"])
        .arg(&path)
        .args(["--socket", &dir.join("s").display().to_string()])
        .output()
        .unwrap();
    assert!(!out.status.success());
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn pod_guardrails_without_a_kubernetes_api_are_refused_at_start() {
    let err = refused_without_pod_identity(
        "version: 1\nguardrails:\n  - {id: ns-only, action: deny, exec: [/x], pods: {namespace: [agents]}}\n",
    );
    assert!(
        err.contains("guardrail \"ns-only\" holds only in some pods (`pods:`), but pod identity is off"),
        "{err}"
    );
}

#[test]
fn pod_selectors_without_a_kubernetes_api_are_refused_at_start() {
    let err = refused_without_pod_identity("version: 1\nagents:\n  - id: ns\n    namespace: [agents]\n");
    assert!(
        err.contains("\"ns\" selects by namespace or pod_labels, but pod identity is off"),
        "{err}"
    );
}
