//! Task credentials against the real daemon and probes: binding with `tether exec --token`,
//! attribution in every event, scope alerts, expiry seen by the kernel, revocation, delegation,
//! the environment variable, JWKS over a real HTTPS server, and every kind of bad input.
use std::{
    path::{Path, PathBuf},
    process::{Command, Output},
    time::Duration,
};

use serde_json::Value;
use tether::credentials::{
    devissuer::{self, IssueRequest, SigningKey},
    now_epoch,
    scope::ScopeSpec,
};

use super::{Daemon, check_ocsf, netprobe_bin, tcp_listener, test_dir, tether_bin};

#[path = "../support/mint.rs"]
mod mint;

const ISS: &str = "https://issuer.test";

/// A development issuer in a temporary directory.
pub(super) struct Issuer {
    dir: tempfile::TempDir,
    key: SigningKey,
}

impl Issuer {
    pub(super) fn new() -> Issuer {
        let dir = tempfile::tempdir().unwrap();
        let key = devissuer::keygen(dir.path(), "EdDSA").expect("keygen");
        Issuer { dir, key }
    }

    fn jwks(&self) -> PathBuf {
        self.dir.path().join("jwks.json")
    }

    pub(super) fn trust_arg(&self) -> Vec<String> {
        vec!["--trust".into(), format!("{ISS}={}", self.jwks().display())]
    }

    pub(super) fn request(&self, jti: &str, actors: &[&str], scope: ScopeSpec) -> IssueRequest {
        IssueRequest {
            iss: ISS.into(),
            sub: "user:alice".into(),
            actors: actors.iter().map(|a| a.to_string()).collect(),
            aud: vec!["tether".into()],
            ttl: Duration::from_secs(600),
            not_before: Duration::ZERO,
            jti: Some(jti.into()),
            scope,
        }
    }

    /// Signs `req` with this issuer's key and writes the token to a file.
    pub(super) fn token_file(&self, req: &IssueRequest) -> PathBuf {
        let claims = devissuer::claims(req, now_epoch());
        self.write(&req.jti.clone().unwrap(), &devissuer::sign(&self.key, &claims).unwrap())
    }

    fn write(&self, name: &str, token: &str) -> PathBuf {
        let p = self.dir.path().join(format!("{name}.jwt"));
        std::fs::write(&p, token).unwrap();
        p
    }
}

pub(super) fn scope(exec: &[&str], connect: &[String], write: &[&str]) -> ScopeSpec {
    ScopeSpec {
        exec: exec.iter().map(|s| s.to_string()).collect(),
        connect: connect.to_vec(),
        write: write.iter().map(|s| s.to_string()).collect(),
        ..Default::default()
    }
}

pub(super) fn bash() -> String {
    std::fs::canonicalize("/bin/bash").unwrap().display().to_string()
}

fn true_bin() -> String {
    std::fs::canonicalize("/bin/true").unwrap().display().to_string()
}

/// `tether exec --token TOKEN -- bash -c SCRIPT`, with $DIR, $NETPROBE, $TETHER and $SOCK
/// (the daemon's agent socket) set for the script.
pub(super) fn token_command(d: &Daemon, token: &Path, dir: &Path, script: &str) -> Command {
    let mut c = Command::new(tether_bin());
    c.arg("exec")
        .arg("--socket")
        .arg(d.socket())
        .arg("--token")
        .arg(token)
        .arg("--")
        .arg("bash")
        .arg("-c")
        .arg(script)
        .env("DIR", dir)
        .env("NETPROBE", netprobe_bin())
        .env("TETHER", tether_bin())
        .env("SOCK", d.socket());
    c
}

/// Runs [`token_command`] to completion.
pub(super) fn exec_with_token(d: &Daemon, token: &Path, dir: &Path, script: &str) -> Output {
    token_command(d, token, dir, script).output().expect("tether exec")
}

/// Starts [`token_command`] in the background.
pub(super) fn spawn_with_token(d: &Daemon, token: &Path, dir: &Path, script: &str) -> std::process::Child {
    token_command(d, token, dir, script).spawn().expect("tether exec")
}

pub(super) fn alerts<'a>(events: &'a [Value], kind: &str) -> Vec<&'a Value> {
    events
        .iter()
        .filter(|e| e["class_uid"] == 2004 && e["unmapped"]["tether"]["alert"] == kind)
        .collect()
}

fn file_event<'a>(events: &'a [Value], path: &Path) -> &'a Value {
    super::exactly_one(events, &format!("write of {}", path.display()), |e| {
        e["class_uid"] == 1001 && e["file"]["path"] == path.display().to_string()
    })
}

/// Waits until `path` exists.
pub(super) fn wait_for(path: &Path) {
    super::poll(
        Duration::from_secs(20),
        Duration::from_millis(20),
        || if path.exists() { Ok(()) } else { Err(()) },
        |()| format!("{} never appeared", path.display()),
    )
}

#[test]
fn a_bound_task_is_attributed_in_every_event_and_out_of_scope_actions_raise_alerts() {
    let issuer = Issuer::new();
    let d = Daemon::start_with(None, &issuer.trust_arg(), &[]);
    let (_t, dir) = test_dir();
    std::fs::create_dir(dir.join("ok")).unwrap();
    let (l_in, p_in) = tcp_listener("127.0.0.1:0");
    let (l_out, p_out) = tcp_listener("127.0.0.1:0");
    let ok_dir = format!("{}/ok/", dir.display());
    let token = issuer.token_file(&issuer.request(
        "task-attr",
        &["spiffe://corp/agent/coder"],
        scope(&[&bash(), &true_bin()], &[format!("tcp:127.0.0.1:{p_in}")], &[&ok_dir]),
    ));
    let script = format!(
        "set -eu; cd \"$DIR\"; echo a > ok/in-scope.txt; echo b > out-of-scope.txt; /bin/true; \
         exec 3<>/dev/tcp/127.0.0.1/{p_in}; exec 4<>/dev/tcp/127.0.0.1/{p_out}; \"$NETPROBE\" sendto 127.0.0.1 {p_in} || true"
    );
    let out = exec_with_token(&d, &token, &dir, &script);
    assert!(out.status.success(), "{out:?}");
    super::accept_one(&l_in, "in-scope connect");
    super::accept_one(&l_out, "out-of-scope connect");
    std::thread::sleep(Duration::from_millis(300));
    let (events, log) = d.stop();
    for e in &events {
        check_ocsf(e);
    }
    let mine: Vec<&Value> = events
        .iter()
        .filter(|e| e["class_uid"] != 2004 && e["unmapped"]["tether"]["task"]["jti"] == "task-attr")
        .collect();
    assert!(mine.len() >= 5, "events of the task:\n{events:#?}\n{log}");
    for e in &mine {
        let t = &e["unmapped"]["tether"];
        assert_eq!(t["task"]["state"], "valid", "{e}");
        assert_eq!(t["task"]["iss"], ISS);
        assert_eq!(t["task"]["sub"], "user:alice");
        assert_eq!(
            t["delegation"],
            serde_json::json!(["user:alice", "spiffe://corp/agent/coder"])
        );
    }
    // In scope: no alert. Out of scope: one alert each, naming the clause.
    let violations = alerts(&events, "scope-violation");
    let clause_of = |attempted: &str| -> Vec<&str> {
        violations
            .iter()
            .filter(|a| a["unmapped"]["tether"]["details"]["attempted"] == attempted)
            .map(|a| a["unmapped"]["tether"]["details"]["clause"].as_str().unwrap())
            .collect()
    };
    assert_eq!(
        clause_of(&dir.join("out-of-scope.txt").display().to_string()),
        ["write"]
    );
    assert_eq!(clause_of(&format!("tcp:127.0.0.1:{p_out}")), ["connect"]);
    assert_eq!(
        clause_of(&netprobe_bin().canonicalize().unwrap().display().to_string()),
        ["exec"]
    );
    assert!(clause_of(&dir.join("ok/in-scope.txt").display().to_string()).is_empty());
    assert!(clause_of(&format!("tcp:127.0.0.1:{p_in}")).is_empty());
    assert!(clause_of(&true_bin()).is_empty());
    // The alert points at its audit event and names the task.
    let write_alert = violations
        .iter()
        .find(|a| a["unmapped"]["tether"]["details"]["clause"] == "write")
        .unwrap();
    let audit = file_event(&events, &dir.join("out-of-scope.txt"));
    assert_eq!(
        write_alert["finding_info"]["related_events"][0]["uid"],
        audit["metadata"]["uid"]
    );
    assert_eq!(write_alert["unmapped"]["tether"]["task"]["jti"], "task-attr");
    // Observe mode (the default rules): the decision says what enforcement would have done.
    assert_eq!(write_alert["unmapped"]["tether"]["details"]["would"], "deny");
    assert_eq!(audit["unmapped"]["tether"]["decision"]["rule"], "scope:write");
    assert_eq!(audit["unmapped"]["tether"]["decision"]["would"], "deny");
    assert!(
        file_event(&events, &dir.join("ok/in-scope.txt"))["unmapped"]["tether"]
            .get("decision")
            .is_none(),
        "allowed actions carry no decision"
    );
}

#[test]
fn expiry_is_carried_by_the_kernel_and_revocation_applies_at_once() {
    let issuer = Issuer::new();
    let d = Daemon::start_with(None, &issuer.trust_arg(), &[]);
    let (_t, dir) = test_dir();
    let everything = scope(&["/**"], &[], &["/"]);

    // Expiry: a 2-second credential; the second write happens after it expired.
    // Expiry: a 10-second credential; the second write waits (on a file the test creates)
    // until the credential has expired, so the test does not race the machine's speed.
    let mut req = issuer.request("task-exp", &["agent"], everything.clone());
    req.ttl = Duration::from_secs(10);
    let issued = now_epoch();
    let token = issuer.token_file(&req);
    let expiring = spawn_with_token(
        &d,
        &token,
        &dir,
        "cd \"$DIR\"; echo a > before.txt; \"$NETPROBE\" sendto 169.254.169.254 9 || true; \
                 while [ ! -e expired ]; do sleep 0.05; done; echo b > after.txt",
    );
    wait_for(&dir.join("before.txt"));
    // exp is at most issued + 1 + ttl (the issuer's clock may tick between the two reads).
    while now_epoch() <= issued + 1 + 10 {
        std::thread::sleep(Duration::from_millis(100));
    }
    std::fs::write(dir.join("expired"), "").unwrap();
    assert!(expiring.wait_with_output().unwrap().status.success());

    // Revocation: the second write waits for the revocation.
    let token = issuer.token_file(&issuer.request("task-rev", &["agent"], everything));
    let child = spawn_with_token(
        &d,
        &token,
        &dir,
        "cd \"$DIR\"; echo a > r1.txt; while [ ! -e go ]; do sleep 0.05; done; echo b > r2.txt",
    );
    wait_for(&dir.join("r1.txt"));
    let out = Command::new(tether_bin())
        .args(["tasks", "--admin-socket"])
        .arg(d.admin_socket())
        .args(["revoke", "task-rev"])
        .output()
        .unwrap();
    assert!(out.status.success(), "revoke: {out:?}");
    std::fs::write(dir.join("go"), "").unwrap();
    assert!(child.wait_with_output().unwrap().status.success());
    // A revoked credential cannot be bound again.
    let out = exec_with_token(&d, &token, &dir, "true");
    assert_eq!(out.status.code(), Some(126));
    assert!(String::from_utf8_lossy(&out.stderr).contains("revoked"), "{out:?}");
    std::thread::sleep(Duration::from_millis(300));
    let (events, _log) = d.stop();
    for e in &events {
        check_ocsf(e);
    }
    let task = |p: &str| file_event(&events, &dir.join(p))["unmapped"]["tether"]["task"].clone();
    assert_eq!(task("before.txt")["state"], "valid");
    assert_eq!(task("before.txt")["kernel_expired"], false);
    assert_eq!(task("after.txt")["state"], "expired");
    assert_eq!(
        task("after.txt")["kernel_expired"],
        true,
        "the kernel itself saw the expiry"
    );
    assert_eq!(task("r1.txt")["state"], "valid");
    assert_eq!(task("r2.txt")["state"], "revoked");
    assert_eq!(
        task("r2.txt")["kernel_expired"],
        true,
        "revocation reached the kernel map"
    );
    assert!(
        alerts(&events, "credential-expired")
            .iter()
            .any(|a| a["finding_info"]["related_events"][0]["uid"]
                == file_event(&events, &dir.join("after.txt"))["metadata"]["uid"])
    );
    assert!(!alerts(&events, "credential-revoked").is_empty());
    // A guardrail holds even for a credential that allows everything.
    let meta = alerts(&events, "guardrail-violation");
    assert_eq!(meta.len(), 1, "{meta:#?}");
    assert_eq!(meta[0]["unmapped"]["tether"]["task"]["jti"], "task-exp");
    assert_eq!(
        meta[0]["unmapped"]["tether"]["details"]["rule"],
        "guardrail:cloud-metadata"
    );
    assert_eq!(meta[0]["unmapped"]["tether"]["details"]["would"], "deny");
    assert_eq!(meta[0]["severity_id"], 4);
    // The rule, where a SOC queries it: policy, analytic, and the guardrail's ATT&CK technique.
    assert_eq!(meta[0]["policy"]["uid"], "guardrail:cloud-metadata");
    assert_eq!(meta[0]["policy"]["is_applied"], false, "observe mode");
    assert_eq!(meta[0]["finding_info"]["analytic"]["name"], "guardrail:cloud-metadata");
    assert_eq!(meta[0]["finding_info"]["attacks"][0]["technique"]["uid"], "T1552.005");
    assert_eq!(
        meta[0]["finding_info"]["attacks"][0]["tactic"]["name"],
        "Credential Access"
    );
}

/// Revocation lists every node reads, one a file and one an https:// URL (a real HTTPS
/// server on loopback): naming a running task's jti in either cuts that task off in the kernel
/// at the list's next read (enforce mode, `expired: kill`: its next exec and write are
/// killed), the other task runs on, and the credential never binds again. Bindings wait for
/// every list's first read.
#[test]
fn a_task_named_on_a_revocation_list_is_cut_off_in_the_kernel() {
    use std::os::unix::process::ExitStatusExt;
    let issuer = Issuer::new();
    let (_t, dir) = test_dir();
    let list = dir.join("revoked.json");
    std::fs::write(&list, r#"{"jti": [], "txn": ["some-other-txn"]}"#).unwrap();
    let srv = HttpsServer::routes(|_| vec![("/revoked.json".into(), br#"{"jti": ["unrelated"]}"#.to_vec())]);
    let policy = format!(
        "version: 1\nagents: []\nmode: enforce\nactions:\n  expired: {{action: kill, severity: high}}\n\
         revocations:\n  - {{list: \"{}\", every: 1}}\n  - {{list: \"https://127.0.0.1:{}/revoked.json\", every: 1}}\n",
        list.display(),
        srv.port
    );
    let d = Daemon::start_with(
        Some(&policy),
        &[
            issuer.trust_arg(),
            vec!["--ca-bundle".into(), srv.ca.display().to_string()],
        ]
        .concat(),
        &[],
    );
    // Bindings wait for every list's first read (fail closed).
    super::poll(
        Duration::from_secs(10),
        Duration::from_millis(50),
        || {
            let l = d.status()["revocation_lists"].clone();
            if l[0]["entries"] == 1 && l[1]["entries"] == 1 {
                Ok(())
            } else {
                Err(l)
            }
        },
        |l| format!("the lists were never read: {l}"),
    );
    let everything = scope(&["/**"], &[], &["/"]);
    let loop_script = |tag: &str| {
        format!("cd \"$DIR\"; echo a > {tag}1.txt; while true; do echo t > {tag}-tick.txt; /bin/sleep 0.05; done")
    };
    let by_file = issuer.token_file(&issuer.request("task-listed", &["agent"], everything.clone()));
    let by_url = issuer.token_file(&issuer.request("task-url", &["agent"], everything));
    let mut file_child = spawn_with_token(&d, &by_file, &dir, &loop_script("f"));
    let mut url_child = spawn_with_token(&d, &by_url, &dir, &loop_script("u"));
    wait_for(&dir.join("f1.txt"));
    wait_for(&dir.join("u1.txt"));
    let killed = |child: &mut std::process::Child, what: &str| {
        let status = super::poll(
            Duration::from_secs(20),
            Duration::from_millis(50),
            || child.try_wait().unwrap().ok_or(()),
            |()| format!("{what} was never cut off"),
        );
        assert_eq!(status.signal(), Some(libc::SIGKILL), "{what}: {status:?}");
    };
    // The file names the first task: it is cut off at the next read; the second runs on.
    std::fs::write(&list, r#"{"jti": ["task-listed"], "issued_by": "soc"}"#).unwrap();
    killed(&mut file_child, "the task the file names");
    assert!(url_child.try_wait().unwrap().is_none(), "a task no list names runs on");
    // The URL names the second.
    srv.set("/revoked.json", br#"{"jti": ["unrelated", "task-url"]}"#.to_vec());
    killed(&mut url_child, "the task the URL names");
    // Neither credential binds again.
    for (token, name) in [(&by_file, "again-f.txt"), (&by_url, "again-u.txt")] {
        let out = exec_with_token(&d, token, &dir, &format!("echo x > \"$DIR\"/{name}"));
        assert_eq!(out.status.code(), Some(126), "{out:?}");
        assert!(
            String::from_utf8_lossy(&out.stderr).contains("revocation list"),
            "{out:?}"
        );
        assert!(!dir.join(name).exists());
    }
    let (events, log) = d.stop();
    assert!(log.contains("on a revocation list"), "{log}");
    assert!(!alerts(&events, "credential-revoked").is_empty(), "{events:#?}");
}

#[test]
fn delegation_must_narrow_the_parent_task() {
    let issuer = Issuer::new();
    let d = Daemon::start_with(None, &issuer.trust_arg(), &[]);
    let (_t, dir) = test_dir();
    let tether = tether_bin().canonicalize().unwrap().display().to_string();
    let dir_s = format!("{}/", dir.display());
    let parent = issuer.token_file(&issuer.request(
        "task-parent",
        &["spiffe://corp/agent/coder"],
        scope(&[&bash(), &tether, &true_bin()], &[], &[&dir_s]),
    ));
    // Children live shorter than the parent (exp not later is part of narrowing).
    let child = |jti: &str, s: ScopeSpec| {
        let mut r = issuer.request(jti, &["spiffe://corp/agent/coder", "spiffe://corp/agent/tests"], s);
        r.ttl = Duration::from_secs(500);
        issuer.token_file(&r)
    };
    let narrow = child("task-narrow", scope(&[&true_bin()], &[], &[&format!("{dir_s}sub/")]));
    let wide = child("task-wide", scope(&["/**"], &[], &[&dir_s]));
    let script = format!(
        "cd \"$DIR\"; mkdir -p sub; \"$TETHER\" exec --socket \"$SOCK\" --token {} -- bash -c 'echo n > sub/narrow.txt'; echo narrow=$?; \
         \"$TETHER\" exec --socket \"$SOCK\" --token {} -- bash -c 'echo w > wide.txt'; echo wide=$?",
        narrow.display(),
        wide.display()
    );
    let out = exec_with_token(&d, &parent, &dir, &script);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("narrow=0"), "{out:?}");
    assert!(stdout.contains("wide=126"), "the wider credential is refused: {out:?}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("delegation escalation"),
        "{out:?}"
    );
    assert!(!dir.join("wide.txt").exists(), "the refused command never ran");
    std::thread::sleep(Duration::from_millis(300));
    let (events, _log) = d.stop();
    let narrow_write = file_event(&events, &dir.join("sub/narrow.txt"));
    assert_eq!(narrow_write["unmapped"]["tether"]["task"]["jti"], "task-narrow");
    assert_eq!(
        narrow_write["unmapped"]["tether"]["delegation"],
        serde_json::json!(["user:alice", "spiffe://corp/agent/coder", "spiffe://corp/agent/tests"])
    );
    let esc = alerts(&events, "delegation-escalation");
    assert_eq!(esc.len(), 1, "{esc:#?}");
    assert!(
        esc[0]["unmapped"]["tether"]["details"]["reason"]
            .as_str()
            .unwrap()
            .contains("scope.exec")
    );
    assert_eq!(
        esc[0]["unmapped"]["tether"]["task"]["jti"], "task-parent",
        "raised in the parent's tree"
    );
}

#[test]
fn a_selected_agent_binds_the_credential_in_its_environment() {
    let issuer = Issuer::new();
    let (_t, dir) = test_dir();
    let agent = dir.join("tt-envagent");
    std::fs::copy("/bin/bash", &agent).unwrap();
    let policy = "version: 1\nagents:\n  - id: env-agent\n    comm: [tt-envagent]\n";
    let d = Daemon::start_with(Some(policy), &issuer.trust_arg(), &[]);
    let claims = devissuer::claims(
        &issuer.request("task-env", &["spiffe://corp/agent/env"], scope(&["/**"], &[], &["/"])),
        now_epoch(),
    );
    let token = devissuer::sign(&issuer.key, &claims).unwrap();
    // The write waits until the daemon has bound the credential it read from the environment
    // (the test watches the task list), so it does not race the daemon.
    let child = Command::new(&agent)
        .arg("-c")
        .arg("while [ ! -e go ]; do sleep 0.05; done; echo x > env.txt")
        .current_dir(&dir)
        .env("TETHER_TASK_TOKEN", &token)
        .spawn()
        .unwrap();
    super::poll(
        Duration::from_secs(30),
        Duration::from_millis(100),
        || {
            let out = Command::new(tether_bin())
                .args(["tasks", "--admin-socket"])
                .arg(d.admin_socket())
                .arg("list")
                .output()
                .unwrap();
            let list: Value = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
            let bound = list["tasks"].as_array().into_iter().flatten().any(|t| {
                t["jti"] == "task-env"
                    && t["processes"]
                        .as_array()
                        .is_some_and(|p| p.contains(&serde_json::json!(child.id())))
            });
            if bound { Ok(()) } else { Err(list) }
        },
        |list| format!("never bound: {list:#}\n{}", d.log()),
    );
    std::fs::write(dir.join("go"), "").unwrap();
    assert!(child.wait_with_output().unwrap().status.success());
    std::thread::sleep(Duration::from_millis(300));
    let (events, log) = d.stop();
    let w = file_event(&events, &dir.join("env.txt"));
    assert_eq!(w["unmapped"]["tether"]["task"]["jti"], "task-env", "{log}");
    assert_eq!(w["unmapped"]["tether"]["task"]["state"], "valid");
}

/// A real HTTPS server on loopback (rustls, with a CA and a server certificate made by rcgen)
/// that answers every request with `body` ([`HttpsServer::start`]), or each path with its
/// own body and any other with 404 ([`HttpsServer::routes`]).
/// (path, body) pairs, shared with the server's connections.
type Routes = std::sync::Arc<std::sync::Mutex<Vec<(String, Vec<u8>)>>>;

struct HttpsServer {
    port: u16,
    ca: PathBuf,
    /// What each path answers (changed by [`HttpsServer::set`]).
    routes: Routes,
    _dir: tempfile::TempDir,
    _rt: tokio::runtime::Runtime,
}

impl HttpsServer {
    fn start(body: &[u8]) -> HttpsServer {
        let body = body.to_vec();
        HttpsServer::routes(move |_| vec![(String::new(), body)])
    }

    /// `routes` is given the port and returns (path, body) pairs; an empty path answers
    /// every request.
    fn routes(routes: impl FnOnce(u16) -> Vec<(String, Vec<u8>)>) -> HttpsServer {
        use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair};
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params.distinguished_name.push(DnType::CommonName, "tether-test-ca");
        let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().unwrap()).unwrap();
        let leaf_key = KeyPair::generate().unwrap();
        let leaf = CertificateParams::new(vec!["127.0.0.1".to_string()])
            .unwrap()
            .signed_by(&leaf_key, &ca)
            .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let ca_path = dir.path().join("ca.pem");
        std::fs::write(&ca_path, ca.pem()).unwrap();
        let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(
                vec![leaf.der().clone()],
                rustls::pki_types::PrivateKeyDer::Pkcs8(leaf_key.serialize_der().into()),
            )
            .unwrap();
        let acceptor = tokio_rustls::TlsAcceptor::from(std::sync::Arc::new(config));
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let listener = rt.block_on(tokio::net::TcpListener::bind("127.0.0.1:0")).unwrap();
        let port = listener.local_addr().unwrap().port();
        let routes = std::sync::Arc::new(std::sync::Mutex::new(routes(port)));
        let served = routes.clone();
        rt.spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else { continue };
                let (acceptor, routes) = (acceptor.clone(), routes.clone());
                tokio::spawn(async move {
                    let Ok(mut tls) = acceptor.accept(tcp).await else { return };
                    // Read the request head, then answer.
                    let mut head = Vec::new();
                    let mut buf = [0u8; 1024];
                    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                        match tls.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => head.extend_from_slice(&buf[..n]),
                        }
                    }
                    let path = String::from_utf8_lossy(&head)
                        .split_whitespace()
                        .nth(1)
                        .unwrap_or_default()
                        .to_string();
                    let found = routes
                        .lock()
                        .unwrap()
                        .iter()
                        .find(|(p, _)| p.is_empty() || *p == path)
                        .map(|(_, b)| b.clone());
                    let (status, body) = match found {
                        Some(b) => ("200 OK", b),
                        None => ("404 Not Found", b"{}".to_vec()),
                    };
                    let resp = format!(
                        "HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
                        body.len()
                    );
                    let _ = tls.write_all(resp.as_bytes()).await;
                    let _ = tls.write_all(&body).await;
                    let _ = tls.shutdown().await;
                });
            }
        });
        HttpsServer {
            port,
            ca: ca_path,
            routes: served,
            _dir: dir,
            _rt: rt,
        }
    }

    /// Path `path` answers `body` from now on.
    fn set(&self, path: &str, body: Vec<u8>) {
        let mut r = self.routes.lock().unwrap();
        r.retain(|(p, _)| p != path);
        r.push((path.to_string(), body));
    }
}

#[test]
fn jwks_urls_are_fetched_over_https_and_a_down_or_garbage_url_only_refuses_its_tokens() {
    let good = Issuer::new();
    let garbage_srv = HttpsServer::start(b"<html>this is not a key set</html>");
    let good_srv = HttpsServer::start(&std::fs::read(good.jwks()).unwrap());
    // One CA bundle with both self-signed certificates.
    let (_cadir, cadir) = test_dir();
    let bundle = cadir.join("ca.pem");
    let mut pem = std::fs::read(&garbage_srv.ca).unwrap();
    pem.extend(std::fs::read(&good_srv.ca).unwrap());
    std::fs::write(&bundle, pem).unwrap();
    let closed = tcp_listener("127.0.0.1:0").1; // bound then dropped: nothing listens
    let args = vec![
        "--ca-bundle".into(),
        bundle.display().to_string(),
        "--trust".into(),
        format!("{ISS}=https://127.0.0.1:{}/jwks.json", good_srv.port),
        "--trust".into(),
        format!("https://down.test=https://127.0.0.1:{closed}/jwks.json"),
        "--trust".into(),
        format!("https://garbage.test=https://127.0.0.1:{}/jwks.json", garbage_srv.port),
    ];
    let d = Daemon::start_with(None, &args, &[]);
    let (_t, dir) = test_dir();
    let all = scope(&["/**"], &[], &["/"]);
    let ok = good.token_file(&good.request("task-url", &["agent"], all.clone()));
    let out = exec_with_token(&d, &ok, &dir, "echo ok > \"$DIR\"/url.txt");
    assert!(out.status.success(), "a key fetched over HTTPS verifies: {out:?}");
    for iss in ["https://down.test", "https://garbage.test"] {
        let mut req = good.request(&format!("task-{}", &iss[8..12]), &["agent"], all.clone());
        req.iss = iss.into();
        let t = good.token_file(&req);
        let out = exec_with_token(&d, &t, &dir, "echo bad > \"$DIR\"/bad.txt");
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(126), "{iss}: {out:?}");
        assert!(err.contains("keys are unavailable"), "{iss}: {err}");
    }
    assert!(!dir.join("bad.txt").exists());
    let s = d.status();
    let issuers = s["trusted_issuers"].to_string();
    assert!(issuers.contains("not a JWKS"), "garbage is named: {issuers}");
    let (events, log) = d.stop();
    assert!(log.contains("down.test"), "the failed fetch is logged:\n{log}");
    assert_eq!(alerts(&events, "credential-refused").len(), 2);
}

/// An OpenID Provider shaped like Keycloak, on a real HTTPS server: its keys found by OIDC
/// discovery; an RS256 token minted by PyJWT (not by Tether) with an OAuth scope string that
/// names a rule-file bundle among OIDC values, and a Transaction Token `txn`. Bound with
/// `tether exec`, in enforce mode: the write its bundle allows happens, the one outside is
/// refused (checked on disk), and every event of the task names its scope source and carries
/// the txn as metadata.correlation_uid.
#[test]
fn an_oidc_discovered_issuers_token_binds_and_its_scope_string_holds_in_the_kernel() {
    let (_t, dir) = test_dir();
    std::fs::create_dir(dir.join("ok")).unwrap();
    let token = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
    let minted = token.clone();
    let srv = HttpsServer::routes(|port| {
        let iss = format!("https://127.0.0.1:{port}/realms/agents");
        let m = mint::mint(&serde_json::json!({
            "keys": {"kc": {"type": "rsa2048", "x5c": true}, "kc-enc": {"type": "rsa2048"}},
            "tokens": [{"lib": "pyjwt", "key": "kc", "alg": "RS256", "kid": "kc", "header": {"typ": "JWT"},
                        "claims": {"iss": iss, "sub": "user:alice", "aud": ["tether", "account"], "jti": "kc-task",
                                   "azp": "agent-gateway", "typ": "Bearer", "iat": now_epoch(), "exp": now_epoch() + 600,
                                   "scope": "openid profile repo.write", "txn": "txn-kc-1",
                                   "act": {"sub": "service-account-coder"}}}]
        }));
        *minted.lock().unwrap() = m.tokens[0].clone();
        let mut enc = m.key("kc-enc");
        enc["use"] = serde_json::json!("enc");
        let certs = "/realms/agents/protocol/openid-connect/certs".to_string();
        let config = serde_json::json!({
            "issuer": iss, "jwks_uri": format!("https://127.0.0.1:{port}{certs}"),
            "authorization_endpoint": format!("{iss}/protocol/openid-connect/auth"),
            "id_token_signing_alg_values_supported": ["RS256"]});
        vec![
            (
                "/realms/agents/.well-known/openid-configuration".into(),
                config.to_string().into_bytes(),
            ),
            (certs, mint::jwks(&[m.key("kc"), enc], serde_json::json!({}))),
        ]
    });
    let iss = format!("https://127.0.0.1:{}/realms/agents", srv.port);
    let policy = format!(
        "version: 1\nagents: []\nmode: enforce\nactions:\n  scope: {{action: deny, severity: high}}\n\
         trust:\n  - {{issuer: \"{iss}\", jwks: discover, algorithms: [RS256], audiences: [tether]}}\n\
         scopes:\n  repo.write: {{exec: [\"{bash}\"], write: [\"{ok}/\"]}}\nunknown_scopes: ignore\n",
        bash = bash(),
        ok = dir.join("ok").display()
    );
    let d = Daemon::start_with(
        Some(&policy),
        &["--ca-bundle".into(), srv.ca.display().to_string()],
        &[],
    );
    let issuers = d.status()["trusted_issuers"].to_string();
    assert!(
        issuers.contains("discover") && issuers.contains("\"keys\":1"),
        "{issuers}"
    );
    assert!(
        issuers.contains("a key for \\\"enc\\\""),
        "the enc key is left out, with why: {issuers}"
    );
    let path = dir.join("token.jwt");
    std::fs::write(&path, token.lock().unwrap().as_str()).unwrap();
    let out = exec_with_token(
        &d,
        &path,
        &dir,
        "echo in > \"$DIR\"/ok/in.txt; echo out > \"$DIR\"/out.txt; true",
    );
    assert!(out.status.success(), "{out:?}");
    assert_eq!(std::fs::read_to_string(dir.join("ok/in.txt")).unwrap(), "in\n");
    assert!(
        !dir.join("out.txt").exists(),
        "a write outside the token's bundle was refused"
    );
    let (events, log) = d.stop();
    let mine: Vec<&Value> = events
        .iter()
        .filter(|e| e["unmapped"]["tether"]["task"]["jti"] == "kc-task")
        .collect();
    assert!(!mine.is_empty(), "{log}");
    for e in &mine {
        check_ocsf(e);
        assert_eq!(e["unmapped"]["tether"]["task"]["scope_source"], "scope_string", "{e}");
        assert_eq!(e["metadata"]["correlation_uid"], "txn-kc-1", "{e}");
    }
    let w = file_event(&events, &dir.join("ok/in.txt"));
    assert_eq!(
        w["unmapped"]["tether"]["delegation"],
        serde_json::json!(["user:alice", "service-account-coder"])
    );
}

/// A SPIFFE trust domain whose bundle is served over HTTPS with `spiffe_refresh_hint: 5`:
/// JWT-SVIDs (minted by jwcrypto) verify against it with their identity's scope; a key the
/// bundle does not have yet is refused; once the server's bundle has it, it verifies within
/// the hint (the daemon refetched the bundle as it said), with no restart.
#[test]
fn a_spiffe_bundle_is_refetched_as_its_refresh_hint_says() {
    let m = mint::mint(&serde_json::json!({
        "keys": {"old": {"type": "p256"}, "new": {"type": "p384"}, "x509": {"type": "p256", "x5c": true}},
        "tokens": [
            {"lib": "jwcrypto", "key": "old", "alg": "ES256", "kid": "old", "header": {"typ": "JWT"},
             "claims": {"sub": "spiffe://corp.test/agent/coder", "aud": "tether", "exp": now_epoch() + 600}},
            {"lib": "jwcrypto", "key": "new", "alg": "ES384", "kid": "new", "header": {"typ": "JOSE"},
             "claims": {"sub": "spiffe://corp.test/agent/coder", "aud": ["tether"], "exp": now_epoch() + 600}}
        ]
    }));
    let svid_key = |name: &str| {
        let mut k = m.key(name);
        k["use"] = serde_json::json!("jwt-svid");
        k
    };
    let mut x509 = m.key("x509");
    x509["use"] = serde_json::json!("x509-svid");
    let bundle = |keys: &[serde_json::Value], seq: u64| {
        mint::jwks(
            keys,
            serde_json::json!({"spiffe_refresh_hint": 5, "spiffe_sequence": seq}),
        )
    };
    let srv = HttpsServer::routes(|_| vec![("/bundle".into(), bundle(&[x509.clone(), svid_key("old")], 1))]);
    let (_t, dir) = test_dir();
    let policy = format!(
        "version: 1\ntrust:\n  - {{trust_domain: corp.test, bundle: \"https://127.0.0.1:{}/bundle\"}}\n\
         identities:\n  \"spiffe://corp.test/agent/coder\": {{exec: [\"/**\"], write: [\"{}/\"]}}\n",
        srv.port,
        dir.display()
    );
    let d = Daemon::start_with(
        Some(&policy),
        &["--ca-bundle".into(), srv.ca.display().to_string()],
        &[],
    );
    let write = |name: &str, token: &str| {
        let p = dir.join(format!("{name}.jwt"));
        std::fs::write(&p, token).unwrap();
        exec_with_token(&d, &p, &dir, &format!("echo ok > \"$DIR\"/{name}.txt"))
    };
    let out = write("old", &m.tokens[0]);
    assert!(out.status.success(), "{out:?}");
    let out = write("new", &m.tokens[1]);
    assert_eq!(out.status.code(), Some(126), "a key the bundle lacks: {out:?}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("no key with kid \"new\""),
        "{out:?}"
    );
    // The trust domain rotates: the new key joins the bundle; the daemon refetches it within
    // the hint (5 s; 20 s allowed for a loaded machine).
    srv.set("/bundle", bundle(&[x509.clone(), svid_key("old"), svid_key("new")], 2));
    let path = dir.join("new.jwt");
    super::poll(
        Duration::from_secs(20),
        Duration::from_millis(500),
        || {
            let out = exec_with_token(&d, &path, &dir, "echo ok > \"$DIR\"/new.txt");
            if out.status.success() { Ok(()) } else { Err(out) }
        },
        |out| format!("the rotated bundle was never refetched: {out:?}"),
    );
    assert!(dir.join("new.txt").exists());
    let (events, log) = d.stop();
    assert!(!log.contains("refresh failed"), "{log}");
    let w = file_event(&events, &dir.join("new.txt"));
    assert_eq!(w["unmapped"]["tether"]["task"]["scope_source"], "identity");
    assert_eq!(w["unmapped"]["tether"]["task"]["iss"], "", "a JWT-SVID names no issuer");
}

#[test]
fn bad_credentials_are_refused_the_command_never_runs_and_the_daemon_carries_on() {
    let issuer = Issuer::new();
    let stranger = Issuer::new();
    let d = Daemon::start_with(None, &issuer.trust_arg(), &[]);
    let (_t, dir) = test_dir();
    let all = scope(&["/**"], &[], &["/"]);
    let good = issuer.request("task-good", &["agent"], all.clone());
    let signed =
        |req: &IssueRequest, key: &SigningKey| devissuer::sign(key, &devissuer::claims(req, now_epoch())).unwrap();
    let good_token = signed(&good, &issuer.key);
    let mut parts: Vec<String> = good_token.split('.').map(String::from).collect();
    parts[2] = signed(&issuer.request("task-other", &["agent"], all.clone()), &issuer.key)
        .rsplit('.')
        .next()
        .unwrap()
        .into();
    let bad_sig = parts.join(".");
    let mut bad_scope = devissuer::claims(&good, now_epoch());
    bad_scope.scope = Some(serde_json::json!({"connect": ["tcp:not a host:1"]}));
    let mut expired = good.clone();
    expired.ttl = Duration::from_secs(1);
    let expired_token = signed(&expired, &issuer.key);
    let cases: Vec<(&str, String, &str)> = vec![
        ("malformed", "not.a.token".into(), "malformed"),
        ("bad signature", bad_sig, "bad signature"),
        ("unknown kid", signed(&good, &stranger.key), "has no key with kid"),
        (
            "unknown issuer",
            signed(
                &IssueRequest {
                    iss: "https://evil.test".into(),
                    ..good.clone()
                },
                &issuer.key,
            ),
            "is not trusted",
        ),
        (
            "wrong audience",
            signed(
                &IssueRequest {
                    aud: vec!["someone-else".into()],
                    ..good.clone()
                },
                &issuer.key,
            ),
            "audience",
        ),
        (
            "not yet valid",
            signed(
                &IssueRequest {
                    not_before: Duration::from_secs(3600),
                    ..good.clone()
                },
                &issuer.key,
            ),
            "not valid before",
        ),
        (
            "bad scope",
            devissuer::sign(&issuer.key, &bad_scope).unwrap(),
            "bad scope",
        ),
        (
            "deep act",
            signed(
                &IssueRequest {
                    actors: (0..500).map(|i| format!("a{i}")).collect(),
                    ..good.clone()
                },
                &issuer.key,
            ),
            "refused",
        ),
        ("huge", "x".repeat(40_000), "bytes"),
    ];
    std::thread::sleep(Duration::from_millis(1100)); // the 1-second credential has expired
    let mut all_cases = cases;
    all_cases.push(("expired", expired_token, "expired"));
    for (what, token, why) in &all_cases {
        let path = issuer.write(&what.replace(' ', "-"), token);
        let out = exec_with_token(&d, &path, &dir, "echo ran > \"$DIR\"/ran.txt");
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(126), "{what}: {out:?}");
        assert!(err.contains(why), "{what}: {err}");
        assert!(!dir.join("ran.txt").exists(), "{what}: the command ran");
    }
    // Replay: the good credential held by a live tree cannot be bound by another one.
    let good_path = issuer.write("good", &good_token);
    let holder = spawn_with_token(
        &d,
        &good_path,
        &dir,
        "touch \"$DIR\"/holding; while [ ! -e \"$DIR\"/release ]; do sleep 0.05; done",
    );
    wait_for(&dir.join("holding"));
    let out = exec_with_token(&d, &good_path, &dir, "echo ran > \"$DIR\"/ran.txt");
    assert_eq!(out.status.code(), Some(126), "replay: {out:?}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("replay"), "{out:?}");
    std::fs::write(dir.join("release"), "").unwrap();
    assert!(holder.wait_with_output().unwrap().status.success());
    // The daemon still answers, and raised an alert for each refusal it saw.
    assert_eq!(d.status()["mode"], "observe");
    let (events, _log) = d.stop();
    for e in &events {
        check_ocsf(e);
    }
    assert_eq!(
        alerts(&events, "credential-refused").len(),
        all_cases.len(),
        "{events:#?}"
    );
    assert_eq!(alerts(&events, "credential-replay").len(), 1);
}
