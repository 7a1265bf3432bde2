//! deploy/ agrees with the daemon (no root): the flags the DaemonSet, the webhook overlay and
//! the systemd unit pass are flags `tether run` accepts; the rule file the ConfigMap ships is
//! policies/default.yaml (observe only) and compiles; the image is this version; the unit's
//! capability bounding set is the DaemonSet's capability list. (Schema validation and the
//! security lint of the same files run in `cargo xtask check-deploy`.)
use std::path::{Path, PathBuf};

use clap::Parser;
use serde_yaml_ng::Value;
use tether::cli::Cli;

fn repo(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(path)
}

fn read(path: &str) -> String {
    std::fs::read_to_string(repo(path)).unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn yaml(path: &str) -> Value {
    serde_yaml_ng::from_str(&read(path)).unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn container() -> Value {
    yaml("deploy/kubernetes/base/daemonset.yaml")["spec"]["template"]["spec"]["containers"][0].clone()
}

fn strings(v: &Value) -> Vec<String> {
    v.as_sequence()
        .unwrap_or_else(|| panic!("not a list: {v:?}"))
        .iter()
        .map(|s| s.as_str().expect("a string").to_string())
        .collect()
}

fn accepts(what: &str, args: &[String]) {
    let mut argv = vec!["tether".to_string()];
    argv.extend(args.iter().cloned());
    if let Err(e) = Cli::try_parse_from(&argv) {
        panic!("{what}: `tether` refuses {argv:?}:\n{e}");
    }
}

#[test]
fn the_daemonset_overlay_and_unit_pass_flags_tether_run_accepts() {
    let base = strings(&container()["args"]);
    assert_eq!(base[0], "run");
    accepts("daemonset.yaml", &base);

    // The webhook overlay appends to the same list.
    let k = yaml("deploy/kubernetes/overlays/webhook/kustomization.yaml");
    let patch: Value = serde_yaml_ng::from_str(k["patches"][0]["patch"].as_str().unwrap()).unwrap();
    let mut with_webhook = base.clone();
    for op in patch.as_sequence().unwrap() {
        assert_eq!(op["path"], "/spec/template/spec/containers/0/args/-", "{op:?}");
        with_webhook.push(op["value"].as_str().unwrap().to_string());
    }
    accepts("overlays/webhook", &with_webhook);

    let unit = read("deploy/systemd/tether.service");
    let exec = unit
        .lines()
        .find_map(|l| l.strip_prefix("ExecStart="))
        .expect("ExecStart=");
    let argv: Vec<String> = exec.split_whitespace().skip(1).map(str::to_string).collect();
    accepts("tether.service", &argv);

    // The uninstall overlay replaces the arguments with an unpin of the same directories.
    let k = yaml("deploy/kubernetes/overlays/uninstall/kustomization.yaml");
    let patch: Value = serde_yaml_ng::from_str(k["patches"][0]["patch"].as_str().unwrap()).unwrap();
    let replace = patch
        .as_sequence()
        .unwrap()
        .iter()
        .find(|op| op["op"] == "replace" && op["path"] == "/spec/template/spec/containers/0/args")
        .expect("the uninstall overlay replaces the arguments");
    let unpin = strings(&replace["value"]);
    assert_eq!(unpin[0], "unpin");
    accepts("overlays/uninstall", &unpin);
    assert!(
        base.contains(&"--persist".to_string()),
        "the DaemonSet keeps the kernel side across restarts"
    );
    for dir in ["--pin-dir=", "--state-dir="] {
        let of = |args: &[String]| args.iter().find(|a| a.starts_with(dir)).cloned();
        assert!(of(&base).is_some(), "the DaemonSet names its {dir}");
        assert_eq!(of(&base), of(&unpin), "uninstall unpins what the DaemonSet pins");
    }

    // And a misspelt flag is refused: the check can fail.
    assert!(Cli::try_parse_from(["tether", "run", "--polciy=/x"]).is_err());
}

/// The shipped unit and DaemonSet serve the agent and admin sockets where `tether exec`,
/// `tether status` and `tether tasks` look for them by default (the quickstart on an
/// installed node: they once served /run/tether/api.sock while the clients looked at
/// /run/tether/tether.sock).
#[test]
fn the_shipped_daemon_serves_its_sockets_where_the_clients_look_by_default() {
    use tether::cli::Command;
    let served = |what: &str, args: &[String]| -> (PathBuf, PathBuf) {
        let mut argv = vec!["tether".to_string()];
        argv.extend(args.iter().cloned());
        match Cli::try_parse_from(&argv)
            .unwrap_or_else(|e| panic!("{what}: {e}"))
            .command
        {
            Command::Run {
                socket, admin_socket, ..
            } => (socket, admin_socket),
            other => panic!("{what}: not `run`: {other:?}"),
        }
    };
    let unit = read("deploy/systemd/tether.service");
    let exec = unit
        .lines()
        .find_map(|l| l.strip_prefix("ExecStart="))
        .expect("ExecStart=");
    let unit_args: Vec<String> = exec.split_whitespace().skip(1).map(str::to_string).collect();
    let client = |args: &[&str]| Cli::try_parse_from(args).unwrap().command;
    let exec_socket = match client(&["tether", "exec", "--", "true"]) {
        Command::Exec { socket, .. } => socket,
        _ => unreachable!(),
    };
    let status_socket = match client(&["tether", "status"]) {
        Command::Status { socket, .. } => socket,
        _ => unreachable!(),
    };
    let tasks_socket = match client(&["tether", "tasks", "list"]) {
        Command::Tasks { admin_socket, .. } => admin_socket,
        _ => unreachable!(),
    };
    for (what, args) in [
        ("daemonset.yaml", strings(&container()["args"])),
        ("tether.service", unit_args),
    ] {
        let (socket, admin) = served(what, &args);
        assert_eq!(socket, exec_socket, "{what}: tether exec looks elsewhere");
        assert_eq!(socket, status_socket, "{what}: tether status looks elsewhere");
        assert_eq!(admin, tasks_socket, "{what}: tether tasks looks elsewhere");
    }
}

#[test]
fn the_configmap_ships_the_default_rule_file_in_observe_mode() {
    let cm = yaml("deploy/kubernetes/base/configmap.yaml");
    let shipped = cm["data"]["policy.yaml"].as_str().expect("data.policy.yaml");
    assert_eq!(
        shipped,
        read("policies/default.yaml"),
        "the ConfigMap's rule file is policies/default.yaml"
    );
    let parsed: Value = serde_yaml_ng::from_str(shipped).unwrap();
    assert_eq!(parsed["mode"], "observe", "observe is the shipped default");
    tether::policy::parse_policy("configmap.yaml", shipped).expect("the shipped rule file compiles");
    // The file the DaemonSet reads is the ConfigMap's key.
    let args = strings(&container()["args"]);
    assert!(args.contains(&"--policy=/etc/tether/policy/policy.yaml".to_string()));
    let mounts = container()["volumeMounts"].clone();
    assert!(
        mounts
            .as_sequence()
            .unwrap()
            .iter()
            .any(|m| m["name"] == "policy" && m["mountPath"] == "/etc/tether/policy"),
        "{mounts:?}"
    );
}

#[test]
fn image_version_and_capabilities_agree_everywhere() {
    let c = container();
    let image = c["image"].as_str().unwrap();
    assert_eq!(
        image.rsplit_once(':').map(|(_, tag)| tag),
        Some(env!("CARGO_PKG_VERSION")),
        "the DaemonSet runs this version: {image}"
    );
    let sc = &c["securityContext"]["capabilities"];
    assert_eq!(strings(&sc["drop"]), ["ALL"]);
    let mut added: Vec<String> = strings(&sc["add"]).into_iter().map(|c| format!("CAP_{c}")).collect();
    added.sort();
    let unit = read("deploy/systemd/tether.service");
    let mut bounding: Vec<String> = unit
        .lines()
        .find_map(|l| l.strip_prefix("CapabilityBoundingSet="))
        .expect("CapabilityBoundingSet=")
        .split_whitespace()
        .map(str::to_string)
        .collect();
    bounding.sort();
    assert_eq!(
        added, bounding,
        "the unit bounds the daemon to the DaemonSet's capabilities"
    );
    // The README names them too.
    let readme = read("README.md");
    for cap in &added {
        let name = cap.trim_start_matches("CAP_");
        assert!(readme.contains(&format!("`{name}`")), "README does not explain {name}");
    }
}
