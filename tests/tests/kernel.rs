//! Kernel integration tests: the real `tether` daemon with its real BPF programs, driving real
//! processes. Root only; run by `cargo xtask test` (with --test-threads=1). Test-only
//! directories and ephemeral high ports on loopback.
use std::{
    collections::BTreeSet,
    net::{TcpListener, UdpSocket},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use serde_json::Value;

#[path = "kernel/containment.rs"]
mod containment;
#[path = "kernel/credentials.rs"]
mod credentials;
#[path = "kernel/pods.rs"]
mod pods;
#[path = "kernel/redteam.rs"]
mod redteam;
#[path = "kernel/restart.rs"]
mod restart;
#[path = "kernel/soc.rs"]
mod soc;

fn tether_bin() -> PathBuf {
    std::env::var_os("TETHER_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/debug/tether"))
}

/// The netprobe helper (its build path, or TETHER_NETPROBE in the VM tier).
fn netprobe_bin() -> PathBuf {
    std::env::var_os("TETHER_NETPROBE")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_netprobe")))
}

/// The redteam helper (its build path, or TETHER_REDTEAM in the VM tier).
fn redteam_bin() -> PathBuf {
    std::env::var_os("TETHER_REDTEAM")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_redteam")))
}

/// The OCSF class schemas (tests/data/ocsf, or TETHER_OCSF_DIR in the VM tier).
fn ocsf_dir() -> PathBuf {
    std::env::var_os("TETHER_OCSF_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("data/ocsf"))
}

struct Daemon {
    child: Child,
    dir: tempfile::TempDir,
}

impl Daemon {
    fn start(policy: Option<&str>) -> Daemon {
        Daemon::start_with_env(policy, &[])
    }

    fn start_with_env(policy: Option<&str>, env: &[(&str, &str)]) -> Daemon {
        Daemon::start_with(policy, &[], env)
    }

    /// Starts the daemon with extra `tether run` arguments and environment.
    fn start_with(policy: Option<&str>, args: &[String], env: &[(&str, &str)]) -> Daemon {
        Daemon::start_capped(None, policy, args, env)
    }

    /// Starts the daemon as [`Daemon::start_with`] does; with `bounding`, as root with only
    /// those capabilities (every other one dropped from the bounding set before the exec).
    fn start_capped(bounding: Option<u64>, policy: Option<&str>, args: &[String], env: &[(&str, &str)]) -> Daemon {
        assert!(
            nix::unistd::geteuid().is_root(),
            "kernel tests need root: run them with `cargo xtask test` as root"
        );
        let dir = tempfile::tempdir().expect("tempdir");
        let mut cmd = Command::new(tether_bin());
        if let Some(keep) = bounding {
            use std::os::unix::process::CommandExt;
            // SAFETY: only prctl between fork and exec.
            unsafe {
                cmd.pre_exec(move || {
                    for cap in 0..64u64 {
                        if keep & (1 << cap) == 0
                            && libc::prctl(libc::PR_CAPBSET_DROP, cap, 0, 0, 0) != 0
                            && std::io::Error::last_os_error().raw_os_error() != Some(libc::EINVAL)
                        {
                            return Err(std::io::Error::last_os_error());
                        }
                    }
                    Ok(())
                })
            };
        }
        cmd.arg("run")
            .arg("--socket")
            .arg(dir.path().join("api.sock"))
            .arg("--ready-file")
            .arg(dir.path().join("ready"))
            .arg("--audit")
            .arg(format!("file:{}", dir.path().join("audit.jsonl").display()))
            .arg("--alerts")
            .arg(format!("file:{}", dir.path().join("audit.jsonl").display()))
            .arg("--admin-socket")
            .arg(dir.path().join("admin.sock"))
            .args(args)
            // The tests read every event's lineage and identity: self-contained lines, unless
            // a test asks for the compact form.
            .args(if args.iter().any(|a| a == "--record-form") {
                &[][..]
            } else {
                &["--record-form", "full"][..]
            })
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.path().join("daemon.log")).expect("log file"))
            .envs(env.iter().copied());
        if let Some(p) = policy {
            let path = dir.path().join("policy.yaml");
            std::fs::write(&path, p).expect("policy");
            cmd.arg("--policy").arg(path);
        }
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("starting {}: {e}", tether_bin().display()));
        let d = Daemon { child, dir };
        let t = Instant::now();
        // Under qemu/TCG (the VM tier) loading and verifying every program takes far longer
        // than on hardware.
        let limit = std::env::var("TETHER_TEST_READY_SECS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(60);
        let ready = d.dir.path().join("ready");
        poll(
            Duration::from_secs(limit),
            Duration::from_millis(50),
            || if ready.exists() { Ok(()) } else { Err(()) },
            |()| format!("daemon not ready after {limit} s; its log:\n{}", d.log()),
        );
        eprintln!("daemon ready in {:.1} s", t.elapsed().as_secs_f64());
        d
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    fn socket(&self) -> PathBuf {
        self.dir.path().join("api.sock")
    }

    /// The rule file the daemon was started with.
    fn policy_path(&self) -> PathBuf {
        self.dir.path().join("policy.yaml")
    }

    fn admin_socket(&self) -> PathBuf {
        self.dir.path().join("admin.sock")
    }

    /// `tether status --json` against this daemon.
    fn status(&self) -> Value {
        self.try_status()
            .unwrap_or_else(|e| panic!("tether status failed: {e}"))
    }

    /// [`Daemon::status`], its failure (stderr) returned.
    fn try_status(&self) -> Result<Value, String> {
        let out = Command::new(tether_bin())
            .arg("status")
            .arg("--json")
            .arg("--socket")
            .arg(self.socket())
            .output()
            .expect("tether status");
        if !out.status.success() {
            return Err(String::from_utf8_lossy(&out.stderr).into_owned());
        }
        Ok(serde_json::from_slice(&out.stdout).expect("status is JSON"))
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("daemon.log")).unwrap_or_default()
    }

    /// Stops the daemon with SIGINT and returns every audit event it wrote.
    fn stop(mut self) -> (Vec<Value>, String) {
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.child.id() as i32),
            nix::sys::signal::Signal::SIGINT,
        )
        .expect("SIGINT");
        let status = self.child.wait().expect("wait");
        let log = self.log();
        assert!(status.success(), "daemon exited with {status}; log:\n{log}");
        // A flood can take the file past its rotation size (100 MiB of full-form lines):
        // the rotated files, oldest first, then the current one.
        let path = self.dir.path().join("audit.jsonl");
        let rotated = (1..)
            .map(|n| self.dir.path().join(format!("audit.jsonl.{n}")))
            .take_while(|p| p.exists())
            .collect::<Vec<_>>();
        let mut events = Vec::new();
        for p in rotated.iter().rev().chain([&path]) {
            let text = std::fs::read_to_string(p).unwrap_or_default();
            events.extend(
                text.lines()
                    .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("audit line is not JSON ({e}): {l}"))),
            );
        }
        (events, log)
    }
}

/// A test that fails before [`Daemon::stop`] must not leave its daemon running: its programs
/// would go on judging (and its selectors selecting) the processes of the tests after it.
impl Drop for Daemon {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// A temporary test directory with its canonical path.
fn test_dir() -> (tempfile::TempDir, PathBuf) {
    let t = tempfile::Builder::new()
        .prefix("tether-test-")
        .tempdir()
        .expect("tempdir");
    let canon = std::fs::canonicalize(t.path()).expect("canonicalize");
    (t, canon)
}

fn tcp_listener(addr: &str) -> (TcpListener, u16) {
    let l = TcpListener::bind(addr).unwrap_or_else(|e| panic!("bind {addr}: {e}"));
    let port = l.local_addr().unwrap().port();
    (l, port)
}

fn accept_one(l: &TcpListener, what: &str) {
    l.set_nonblocking(true).unwrap();
    let t = Instant::now();
    loop {
        match l.accept() {
            Ok(_) => return,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock && t.elapsed() < Duration::from_secs(20) => {
                std::thread::sleep(Duration::from_millis(20))
            }
            Err(e) => panic!("{what}: no connection arrived: {e}"),
        }
    }
}

const SCRIPT: &str = r#"set -eu
cd "$DIR"
echo one > rel.txt
echo two > link/through-link.txt
mv rel.txt renamed.txt
rm renamed.txt
/bin/true child-marker
exec 3<>/dev/tcp/127.0.0.1/$P4
exec 4<>/dev/tcp/::1/$P6
"$NETPROBE" sendto 127.0.0.1 "$PU"
( setsid bash -c 'exec 5<>/dev/tcp/127.0.0.1/'"$P4B" & )
"#;

struct Run {
    dir: PathBuf,
    _tmp: tempfile::TempDir,
    ports: [u16; 4],
    pid: u32,
}

/// Runs SCRIPT (optionally under `tether exec`) and waits until every action has happened.
fn run_script(tether_socket: Option<&Path>) -> Run {
    let (tmp, dir) = test_dir();
    std::fs::create_dir(dir.join("real")).unwrap();
    std::os::unix::fs::symlink(dir.join("real"), dir.join("link")).unwrap();
    let (l4, p4) = tcp_listener("127.0.0.1:0");
    let (l6, p6) = tcp_listener("[::1]:0");
    let (l4b, p4b) = tcp_listener("127.0.0.1:0");
    let udp = UdpSocket::bind("127.0.0.1:0").unwrap();
    let pu = udp.local_addr().unwrap().port();
    let mut cmd = match tether_socket {
        Some(sock) => {
            let mut c = Command::new(tether_bin());
            c.arg("exec")
                .arg("--socket")
                .arg(sock)
                .arg("--")
                .arg("bash")
                .arg("-c")
                .arg(SCRIPT);
            c
        }
        None => {
            let mut c = Command::new("bash");
            c.arg("-c").arg(SCRIPT);
            c
        }
    };
    cmd.env("DIR", &dir)
        .env("P4", p4.to_string())
        .env("P6", p6.to_string())
        .env("P4B", p4b.to_string())
        .env("PU", pu.to_string())
        .env("NETPROBE", netprobe_bin());
    let child = cmd.spawn().expect("spawn script");
    let pid = child.id();
    let out = child.wait_with_output().expect("script");
    assert!(out.status.success(), "script failed: {:?}", out.status);
    accept_one(&l4, "tcp 127.0.0.1");
    accept_one(&l6, "tcp ::1");
    accept_one(&l4b, "tcp 127.0.0.1 from the grandchild");
    udp.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut buf = [0u8; 16];
    let (n, _) = udp.recv_from(&mut buf).expect("udp datagram");
    assert_eq!(&buf[..n], b"tether");
    assert_eq!(
        std::fs::read_to_string(dir.join("real/through-link.txt")).unwrap(),
        "two\n",
        "written through the link"
    );
    Run {
        dir,
        _tmp: tmp,
        ports: [p4, p6, pu, p4b],
        pid,
    }
}

/// The acting process: `actor` where the class has one, else `unmapped.tether.actor` (4001).
fn actor(e: &Value) -> &Value {
    if e.get("actor").is_some() {
        &e["actor"]
    } else {
        &e["unmapped"]["tether"]["actor"]
    }
}

fn lineage_pids(e: &Value) -> Vec<u64> {
    e["unmapped"]["tether"]["lineage"]
        .as_array()
        .expect("lineage")
        .iter()
        .map(|l| l["pid"].as_u64().unwrap())
        .collect()
}

fn root_pid(e: &Value) -> u64 {
    e["unmapped"]["tether"]["agent_root"]["pid"]
        .as_u64()
        .expect("agent_root.pid")
}

/// Events matching `pred`; asserts there is exactly one.
fn exactly_one<'a>(events: &'a [Value], what: &str, pred: impl Fn(&Value) -> bool) -> &'a Value {
    let found: Vec<&Value> = events.iter().filter(|e| pred(e)).collect();
    assert_eq!(
        found.len(),
        1,
        "{what}: expected exactly one event, got {}:\n{found:#?}",
        found.len()
    );
    found[0]
}

fn is_net(e: &Value, ip: &str, port: u16, proto: &str, activity: u64) -> bool {
    e["class_uid"] == 4001
        && e["dst_endpoint"]["ip"] == ip
        && e["dst_endpoint"]["port"] == port
        && e["connection_info"]["protocol_name"] == proto
        && e["activity_id"] == activity
}

fn is_file(e: &Value, activity: u64, path: &Path) -> bool {
    e["class_uid"] == 1001 && e["activity_id"] == activity && e["file"]["path"] == path.display().to_string()
}

/// Required fields present, no top-level field the class does not define.
fn check_ocsf(e: &Value) {
    let class = e["class_uid"].as_u64().expect("class_uid");
    let file = match class {
        1001 => "1001-file_activity",
        1007 => "1007-process_activity",
        4001 => "4001-network_activity",
        2004 => "2004-detection_finding",
        other => panic!("unexpected class {other}: {e}"),
    };
    let path = ocsf_dir().join(format!("{file}.schema.json"));
    let schema: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    let obj = e.as_object().unwrap();
    for req in schema["required"].as_array().unwrap() {
        assert!(
            obj.contains_key(req.as_str().unwrap()),
            "{file}: missing required {req}: {e}"
        );
    }
    let props = schema["properties"].as_object().unwrap();
    for k in obj.keys() {
        assert!(props.contains_key(k), "{file}: field {k} is not in the class: {e}");
    }
    let type_uid = e["type_uid"].as_u64().unwrap();
    assert_eq!(type_uid, class * 100 + e["activity_id"].as_u64().unwrap());
    let allowed = schema["properties"]["type_uid"]["enum"].as_array().unwrap();
    assert!(
        allowed.iter().any(|v| v.as_u64() == Some(type_uid)),
        "{file}: type_uid {type_uid} not allowed"
    );
}

/// The capability mask the DaemonSet grants (deploy/kubernetes/base/daemonset.yaml, compiled
/// in: the VM tier has no checkout).
fn daemonset_capabilities() -> u64 {
    let ds: serde_yaml_ng::Value =
        serde_yaml_ng::from_str(include_str!("../../deploy/kubernetes/base/daemonset.yaml")).unwrap();
    let add = &ds["spec"]["template"]["spec"]["containers"][0]["securityContext"]["capabilities"]["add"];
    add.as_sequence()
        .expect("capabilities.add")
        .iter()
        .map(|c| match c.as_str().unwrap() {
            "DAC_READ_SEARCH" => 2,
            "KILL" => 5,
            "NET_ADMIN" => 12,
            "SYS_PTRACE" => 19,
            "SYS_ADMIN" => 21,
            "SYS_RESOURCE" => 24,
            "PERFMON" => 38,
            "BPF" => 39,
            other => panic!("capability {other}: add its number here"),
        })
        .fold(0u64, |m, n| m | (1 << n))
}

/// A capability mask line ("CapEff:", "CapBnd:") of a /proc/PID/status text.
fn capability_mask(proc_status: &str, field: &str) -> u64 {
    proc_status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .map(|v| u64::from_str_radix(v.trim(), 16).unwrap())
        .unwrap_or_else(|| panic!("{field} in {proc_status}"))
}

/// Is BPF LSM in effect for this daemon, or its programs as fmod_ret programs on the
/// `security_*` functions (where `bpf` is not in `lsm=`)? In the VM tier it must be: BPF LSM
/// (TETHER_EXPECT_LSM=1), or fmod_ret (TETHER_EXPECT_FMOD_RET=1, a kernel booted without `bpf`).
fn lsm_in_effect(status: &Value) -> bool {
    let lsm = status["features"]["bpf_lsm"]["available"]
        .as_bool()
        .expect("features.bpf_lsm.available");
    let fmod_ret = status["features"]["fmod_ret"]["available"]
        .as_bool()
        .expect("features.fmod_ret.available");
    if std::env::var_os("TETHER_EXPECT_LSM").is_some() {
        assert!(lsm, "this kernel should allow BPF LSM (VM tier): {status:#}");
    }
    if expect_fmod_ret() {
        assert!(
            fmod_ret && !lsm,
            "this kernel, booted without `bpf` in lsm=, should run the LSM programs as fmod_ret: {status:#}"
        );
    }
    lsm || fmod_ret
}

/// The VM variant booted without `bpf` in `lsm=`: the verdicts before the effect come from
/// fmod_ret programs.
pub fn expect_fmod_ret() -> bool {
    std::env::var_os("TETHER_EXPECT_FMOD_RET").is_some()
}

/// An LSM mechanism as this tier names it: `lsm/file_open`, or in the fmod_ret variant the
/// `security_*` function the program is attached to (`fmod_ret/security_file_open`).
pub fn lsm_name(name: &str) -> String {
    if expect_fmod_ret() {
        name.replace("lsm/bprm_check_security", "fmod_ret/security_bprm_check")
            .replace("lsm/", "fmod_ret/security_")
    } else {
        name.to_string()
    }
}

#[test]
fn status_reports_probed_features_and_the_mechanism_of_each_hook() {
    // A free loopback port for the metrics endpoint.
    let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    // With exactly the capabilities the DaemonSet grants: everything below holds with them.
    let caps = daemonset_capabilities();
    // A capability outside this test's own bounding set cannot be granted (some container hosts
    // drop CAP_SYS_RESOURCE, which the daemon only needs on kernels before 5.11): say so openly.
    let own_bounding = capability_mask(&std::fs::read_to_string("/proc/self/status").unwrap(), "CapBnd:");
    let caps_here = caps & own_bounding;
    if caps_here != caps {
        println!(
            "this environment's bounding set lacks capability bits {:#x} of the DaemonSet's; \
             the daemon runs with the rest",
            caps & !own_bounding
        );
    }
    let d = Daemon::start_capped(
        Some(caps),
        None,
        &["--metrics".into(), format!("127.0.0.1:{port}")],
        &[],
    );
    let proc_status = std::fs::read_to_string(format!("/proc/{}/status", d.pid())).unwrap();
    let eff = capability_mask(&proc_status, "CapEff:");
    assert_eq!(eff, caps_here, "the daemon runs with the DaemonSet's capabilities only");
    let s = d.status();
    let get = |path: &str| -> String {
        use std::io::{Read, Write};
        let mut c = std::net::TcpStream::connect(("127.0.0.1", port)).expect("metrics endpoint");
        write!(c, "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").unwrap();
        let mut out = String::new();
        c.read_to_string(&mut out).unwrap();
        out
    };
    let (metrics, healthz, readyz) = (get("/metrics"), get("/healthz"), get("/readyz"));
    let text = Command::new(tether_bin())
        .arg("status")
        .arg("--socket")
        .arg(d.socket())
        .output()
        .expect("tether status");
    let (_, log) = d.stop();
    assert!(healthz.starts_with("HTTP/1.1 200"), "{healthz}");
    assert!(readyz.starts_with("HTTP/1.1 200"), "{readyz}");
    // The mechanism in effect per hook is a metric too, agreeing with the status.
    for h in s["hooks"].as_array().expect("hooks") {
        let line = format!(
            "tether_enforcement_mechanism{{hook=\"{}\",mechanism=\"{}\",enforcement=\"{}\"}} 1",
            h["hook"].as_str().unwrap(),
            h["mechanism"].as_str().unwrap(),
            h["enforcement"].as_str().unwrap()
        );
        assert!(metrics.contains(&line), "missing {line} in\n{metrics}");
    }
    assert!(metrics.contains("tether_decode_errors_total 0"), "{metrics}");
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap();
    assert_eq!(s["kernel"], kernel.trim());
    assert_eq!(s["mode"], "observe");
    for f in ["ring_buffer", "cgroup_sock_addr"] {
        assert_eq!(s["features"][f]["available"], true, "{f}: {s:#}");
    }
    for f in ["bpf_lsm", "fentry", "send_signal", "landlock"] {
        assert!(
            s["features"][f]["detail"].as_str().is_some_and(|d| !d.is_empty()),
            "{f} has no detail: {s:#}"
        );
    }
    // The Landlock answer agrees with the kernel's, asked here directly.
    // SAFETY: landlock_create_ruleset(NULL, 0, LANDLOCK_CREATE_RULESET_VERSION) only returns a number.
    let abi = unsafe { libc::syscall(libc::SYS_landlock_create_ruleset, std::ptr::null::<u8>(), 0usize, 1u32) };
    if abi > 0 {
        assert_eq!(s["features"]["landlock_abi"], abi, "{s:#}");
    } else {
        assert!(s["features"]["landlock_abi"].is_null(), "{s:#}");
    }
    let hook = |name: &str| -> String {
        s["hooks"]
            .as_array()
            .unwrap()
            .iter()
            .find(|h| h["hook"] == name)
            .unwrap_or_else(|| panic!("no hook {name}: {s:#}"))["mechanism"]
            .as_str()
            .unwrap()
            .to_string()
    };
    let programs = s["programs"].to_string();
    if lsm_in_effect(&s) {
        assert!(hook("exec").starts_with(&lsm_name("lsm/bprm_check_security")), "{s:#}");
        assert!(hook("file_write").starts_with(&lsm_name("lsm/file_open")), "{s:#}");
        // The path hooks are on by default where BPF LSM is (path_chown from 6.0).
        assert!(hook("file_write").contains(&lsm_name("lsm/path_* (create,")), "{s:#}");
        assert!(
            programs.contains(&lsm_name("lsm/path_unlink")) && programs.contains(&lsm_name("lsm/path_rename")),
            "path hooks not attached: {programs}"
        );
        assert_eq!(
            hook("connect"),
            lsm_name("lsm/socket_connect, cgroup_sock_addr/connect4,connect6 (TCP Fast Open)")
        );
        for p in ["lsm/bprm_check_security", "lsm/file_open", "lsm/socket_connect"] {
            assert!(programs.contains(&lsm_name(p)), "{p} not attached: {programs}");
        }
        if expect_fmod_ret() {
            assert!(!programs.contains("\"lsm/"), "no BPF LSM program here: {programs}");
            let why = s["features"]["bpf_lsm"]["detail"].as_str().unwrap();
            assert!(
                why.contains("active LSMs"),
                "BPF LSM is off for want of `bpf` in lsm=: {why}"
            );
        }
        assert!(
            programs.contains("connect4"),
            "the cgroup connect hooks stay for TCP Fast Open: {programs}"
        );
        // Where a ring's async work runs in kernel threads no hook attributes (before 5.12;
        // Debian's 5.10 has the 5.15 io_uring backported, with create_io_thread) rings are
        // judged at their creation, as without BPF LSM.
        let kallsyms = std::fs::read_to_string("/proc/kallsyms").unwrap();
        let io_threads = kallsyms
            .lines()
            .any(|l| l.split_whitespace().nth(2) == Some("create_io_thread"));
        if !io_threads {
            assert!(hook("io_uring").contains("sys_enter_io_uring_setup"), "{s:#}");
        } else {
            assert!(hook("io_uring").contains("BPF LSM hooks"), "{s:#}");
        }
    } else {
        let why = s["features"]["bpf_lsm"]["detail"].as_str().unwrap();
        assert!(
            why.contains("not permitted") || why.contains("active LSMs") || why.contains("BTF"),
            "the reason BPF LSM is off is the kernel's answer: {why}"
        );
        assert_eq!(hook("exec"), "tracepoint/sched/sched_process_exec");
        assert_eq!(hook("file_write"), "tracepoint/syscalls");
        assert_eq!(hook("connect"), "cgroup_sock_addr/connect4,connect6");
        assert!(!programs.contains("lsm/"), "{programs}");
    }
    assert!(log.contains("bpf_lsm="), "the report is logged at start:\n{log}");
    let text = String::from_utf8_lossy(&text.stdout);
    for h in ["exec", "file_write", "connect", "send", "lineage"] {
        assert!(text.contains(&format!("  {h}")), "text status lacks hook {h}:\n{text}");
    }
    assert!(text.contains("landlock"), "{text}");
}

#[test]
fn a_kernel_without_path_fields_degrades_openly_to_names_as_passed() {
    let d = Daemon::start_with_env(
        None,
        &[("TETHER_HIDE_BTF_FIELDS", "dentry.d_name.name,mm_struct.arg_start")],
    );
    let s = d.status();
    let degraded: Vec<String> = s["degraded"]
        .as_array()
        .expect("degraded")
        .iter()
        .map(|d| d["feature"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(degraded, ["argv", "path resolution"], "{s:#}");
    // file_open only has the object, so without path resolution writes go to the tracepoints.
    let file_hook = s["hooks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|h| h["hook"] == "file_write")
        .unwrap()["mechanism"]
        .clone();
    assert_eq!(file_hook, "tracepoint/syscalls", "{s:#}");
    let (_t, dir) = test_dir();
    let out = Command::new(tether_bin())
        .arg("exec")
        .arg("--socket")
        .arg(d.socket())
        .arg("--")
        .arg("bash")
        .arg("-c")
        .arg("cd \"$1\" && echo x > rel.txt && /bin/true marker")
        .arg("bash")
        .arg(&dir)
        .output()
        .expect("script");
    assert!(out.status.success(), "{out:?}");
    std::thread::sleep(Duration::from_millis(300));
    let (events, log) = d.stop();
    assert!(log.contains("DEGRADED path resolution"), "logged at start:\n{log}");
    let write = exactly_one(&events, "the relative write", |e| {
        e["class_uid"] == 1001 && e["activity_id"] == 14 && e["file"]["path"] == "rel.txt"
    });
    assert_eq!(
        write["unmapped"]["tether"]["file"]["path"]["origin"],
        "as-passed (path resolution unavailable on this kernel)"
    );
    let exec = exactly_one(&events, "exec of /bin/true", |e| {
        e["class_uid"] == 1007 && e["process"]["file"]["path"] == "/bin/true"
    });
    assert_eq!(
        exec["unmapped"]["tether"]["exec"]["argv"],
        serde_json::json!([]),
        "no argv without mm_struct.arg_start: {exec:#}"
    );
}

#[test]
fn tracked_script_actions_appear_exactly_once_with_lineage_and_resolved_paths() {
    let d = Daemon::start(None);
    let lsm = lsm_in_effect(&d.status());
    let daemon_pid = d.pid();
    let tracked = run_script(Some(&d.socket()));
    let untracked = run_script(None);
    // Let the last records drain (the daemon polls the ring buffer every 20 ms).
    std::thread::sleep(Duration::from_millis(300));
    let (events, log) = d.stop();
    for e in &events {
        check_ocsf(e);
        assert!(
            e["unmapped"]["tether"]["mechanism"]
                .as_str()
                .is_some_and(|m| !m.is_empty()),
            "every event names the mechanism that saw it: {e}"
        );
    }
    let mine: Vec<Value> = events
        .iter()
        .filter(|e| root_pid(e) == tracked.pid as u64)
        .cloned()
        .collect();
    assert!(
        !mine.is_empty(),
        "no events from the tracked script; daemon log:\n{log}"
    );
    let [p4, p6, pu, p4b] = tracked.ports;
    let dir = &tracked.dir;

    let exec = exactly_one(&mine, "exec of /bin/true", |e| {
        e["class_uid"] == 1007 && e["process"]["cmd_line"] == "/bin/true child-marker"
    });
    let true_path = std::fs::canonicalize("/bin/true").unwrap();
    assert_eq!(
        exec["process"]["file"]["path"],
        true_path.display().to_string(),
        "exe resolved by the kernel"
    );
    assert_eq!(
        exec["unmapped"]["tether"]["exec"]["argv"],
        serde_json::json!(["/bin/true", "child-marker"])
    );
    let child_lineage = lineage_pids(exec);
    assert_eq!(
        child_lineage.last(),
        Some(&(tracked.pid as u64)),
        "lineage ends at the agent root"
    );
    assert_eq!(child_lineage.len(), 2, "child -> script");
    let mechanism = |e: &Value| e["unmapped"]["tether"]["mechanism"].as_str().unwrap().to_string();
    let (exec_by, open_by, connect_by) = if lsm {
        (
            lsm_name("lsm/bprm_check_security"),
            lsm_name("lsm/file_open"),
            lsm_name("lsm/socket_connect"),
        )
    } else {
        (
            "tracepoint/sched_process_exec".to_string(),
            "tracepoint/syscalls".to_string(),
            "cgroup_sock_addr/connect".to_string(),
        )
    };
    assert_eq!(mechanism(exec), exec_by, "exec seen by");

    let c4 = exactly_one(&mine, "tcp connect 127.0.0.1", |e| is_net(e, "127.0.0.1", p4, "tcp", 1));
    assert_eq!(actor(c4)["process"]["pid"], tracked.pid, "the script itself connects");
    assert_eq!(
        actor(c4)["process"]["file"]["path"],
        std::fs::canonicalize("/bin/bash").unwrap().display().to_string()
    );
    let c6 = exactly_one(&mine, "tcp connect ::1", |e| is_net(e, "::1", p6, "tcp", 1));
    let send = exactly_one(&mine, "udp sendto 127.0.0.1", |e| is_net(e, "127.0.0.1", pu, "udp", 6));
    assert_eq!((mechanism(c4), mechanism(c6)), (connect_by.clone(), connect_by.clone()));
    assert_eq!(mechanism(send), "cgroup_sock_addr/sendmsg");

    let rel = exactly_one(&mine, "write via a relative path", |e| {
        is_file(e, 14, &dir.join("rel.txt"))
    });
    assert_eq!(mechanism(rel), open_by, "write-open seen by");
    let through = exactly_one(&mine, "write through a symlinked directory", |e| {
        is_file(e, 14, &dir.join("real/through-link.txt"))
    });
    assert_eq!(through["unmapped"]["tether"]["file"]["path"]["origin"], "kernel-object");
    let rename = exactly_one(&mine, "rename", |e| is_file(e, 5, &dir.join("rel.txt")));
    assert_eq!(
        rename["file_result"]["path"],
        dir.join("renamed.txt").display().to_string()
    );
    assert_eq!(rename["status_id"], 1);
    // Judged by the BPF LSM path hook where BPF LSM is (on by default), recorded at the exit.
    let rename_by = if lsm {
        lsm_name("lsm/path_rename")
    } else {
        "tracepoint/syscalls".into()
    };
    assert_eq!(mechanism(rename), rename_by);
    exactly_one(&mine, "unlink", |e| is_file(e, 4, &dir.join("renamed.txt")));

    let grandchild = exactly_one(&mine, "the setsid grandchild's connect", |e| {
        is_net(e, "127.0.0.1", p4b, "tcp", 1)
    });
    let gl = grandchild["unmapped"]["tether"]["lineage"].as_array().unwrap();
    assert!(gl.len() >= 3, "grandchild -> exited subshell -> script: {gl:#?}");
    assert_eq!(gl.last().unwrap()["pid"], tracked.pid);
    assert!(
        gl[1..gl.len() - 1].iter().any(|p| p["exited"] == true),
        "the intermediate parent had exited: {gl:#?}"
    );

    // The same actions from an untracked process appear nowhere.
    let udir = untracked.dir.display().to_string();
    for e in &events {
        let s = e.to_string();
        assert!(!s.contains(&udir), "untracked activity reported: {e}");
        assert_ne!(root_pid(e), untracked.pid as u64, "untracked process reported: {e}");
        if e["class_uid"] == 4001 {
            let port = e["dst_endpoint"]["port"].as_u64().unwrap() as u16;
            assert!(!untracked.ports.contains(&port), "untracked connect/send reported: {e}");
        }
    }
    // The daemon never reports itself (it writes the audit log, which would be a write-open).
    assert!(
        events.iter().all(|e| actor(e)["process"]["pid"] != daemon_pid),
        "the daemon reported itself"
    );
}

/// In the compact form (the default) every event of a process refers to a full form written
/// before it in the same file: its own (`actor.process.uid`), and its parent's where the
/// parent is tracked (an earlier actor, or an entry of its lineage).
#[test]
fn compact_records_refer_only_to_identities_written_before_them() {
    let d = Daemon::start_with(None, &["--record-form".into(), "compact".into()], &[]);
    let tracked = run_script(Some(&d.socket()));
    std::thread::sleep(Duration::from_millis(300));
    let (events, _) = d.stop();
    let mut known = BTreeSet::new();
    let (mut full, mut compact) = (0, 0);
    for e in events.iter().filter(|e| e["class_uid"] != 2004) {
        check_ocsf(e);
        let p = &actor(e)["process"];
        let uid = p["uid"]
            .as_str()
            .unwrap_or_else(|| panic!("no process uid: {e}"))
            .to_string();
        let t = &e["unmapped"]["tether"];
        if let Some(lineage) = t["lineage"].as_array() {
            full += 1;
            assert!(p["cmd_line"].is_string(), "a full form names the command line: {e}");
            known.insert(uid.clone());
            known.extend(lineage.iter().map(|a| a["uid"].as_str().unwrap().to_string()));
        } else {
            compact += 1;
            assert!(known.contains(&uid), "{uid} is referred to before its full form: {e}");
            assert!(p.get("cmd_line").is_none() && t.get("delegation").is_none(), "{e}");
        }
        if let Some(parent) = p["parent_process"]["uid"].as_str() {
            assert!(known.contains(parent), "parent {parent} unknown: {e}");
        }
    }
    assert!(full > 0 && compact > 0, "{full} full, {compact} compact events");
    assert!(
        events
            .iter()
            .any(|e| e["class_uid"] == 1007 && actor(e)["process"]["pid"] == tracked.pid),
        "the tracked script's events are there"
    );
}

#[test]
fn agent_selectors_track_at_exec_and_adopt_running_processes() {
    let (_t, dir) = test_dir();
    // An "agent" binary: a copy of bash under a distinctive name (its comm).
    let agent = dir.join("tt-agent");
    std::fs::copy("/bin/bash", &agent).unwrap();
    let adopted = dir.join("tt-adoptee");
    std::fs::copy("/bin/bash", &adopted).unwrap();
    // Started before the daemon: must be adopted, with its child.
    let early = Command::new(&adopted)
        .arg("-c")
        .arg("while [ ! -e go ]; do sleep 0.05; done; echo adopted > adopted.txt; sh -c 'echo kid > adopted-kid.txt'")
        .current_dir(&dir)
        .spawn()
        .unwrap();
    let policy = "version: 1\nagents:\n  - id: test-agents\n    comm: [tt-agent, tt-adoptee]\n";
    let d = Daemon::start(Some(policy));
    std::fs::write(dir.join("go"), "").unwrap();
    let out = Command::new(&agent)
        .arg("-c")
        .arg("echo selected > selected.txt")
        .current_dir(&dir)
        .output()
        .unwrap();
    assert!(out.status.success());
    let early_pid = early.id();
    assert!(early.wait_with_output().unwrap().status.success());
    std::thread::sleep(Duration::from_millis(300));
    let (events, log) = d.stop();
    let sel = exactly_one(&events, "write by the selected agent", |e| {
        is_file(e, 14, &dir.join("selected.txt"))
    });
    assert_eq!(sel["unmapped"]["tether"]["tracked_by"], "selector", "log:\n{log}");
    let ad = exactly_one(&events, "write by the adopted agent", |e| {
        is_file(e, 14, &dir.join("adopted.txt"))
    });
    assert_eq!(ad["unmapped"]["tether"]["tracked_by"], "adopted");
    assert_eq!(actor(ad)["process"]["pid"], early_pid);
    let kid = exactly_one(&events, "write by the adopted agent's child", |e| {
        is_file(e, 14, &dir.join("adopted-kid.txt"))
    });
    assert_eq!(lineage_pids(kid).last(), Some(&(early_pid as u64)));
}

/// A test-only cgroup v2 directory, removed (after its processes are gone) on drop.
struct TestCgroup(PathBuf);

impl TestCgroup {
    fn new() -> TestCgroup {
        let dir = tether::loader::cgroup2_root()
            .expect("a cgroup2 mount")
            .join(format!("tether-test-{}", std::process::id()));
        std::fs::create_dir(&dir).unwrap_or_else(|e| panic!("mkdir {}: {e}", dir.display()));
        TestCgroup(dir)
    }

    /// The cgroup's path as /proc/PID/cgroup shows it.
    fn path(&self) -> String {
        format!("/{}", self.0.file_name().unwrap().to_string_lossy())
    }
}

impl Drop for TestCgroup {
    fn drop(&mut self) {
        for _ in 0..50 {
            if std::fs::remove_dir(&self.0).is_ok() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        eprintln!("could not remove test cgroup {}", self.0.display());
    }
}

#[test]
fn agent_selectors_by_uid_and_cgroup_select_only_what_they_name() {
    use std::os::unix::{fs::PermissionsExt, process::CommandExt};
    let (_t, dir) = test_dir();
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o777)).unwrap();
    let agent = dir.join("tt-uidagent");
    std::fs::copy("/bin/bash", &agent).unwrap();
    let cg = TestCgroup::new();
    const AGENT_UID: u32 = 4242;
    let policy = format!(
        "version: 1\nagents:\n  - id: agent-user-only\n    comm: [tt-uidagent]\n    uid: [{AGENT_UID}]\n  - id: agent-cgroup\n    cgroup: [{}]\n",
        cg.path()
    );
    let d = Daemon::start(Some(&policy));
    let write = |name: &str| format!("echo x > {}", dir.join(name).display());
    // The agent binary run by the agent uid: selected (comm AND uid).
    let st = Command::new(&agent)
        .args(["-c", &write("by-agent-uid.txt")])
        .uid(AGENT_UID)
        .gid(AGENT_UID)
        .status()
        .unwrap();
    assert!(st.success());
    // The same binary run by root: not selected (the uid criterion fails).
    assert!(
        Command::new(&agent)
            .args(["-c", &write("by-root.txt")])
            .status()
            .unwrap()
            .success()
    );
    // Any program exec'd inside the selected cgroup: selected; outside it: not.
    let procs = cg.0.join("cgroup.procs");
    let inside = format!(
        "echo $$ > {} && exec /bin/sh -c '{}'",
        procs.display(),
        write("in-cgroup.txt")
    );
    assert!(
        Command::new("/bin/bash")
            .args(["-c", &inside])
            .status()
            .unwrap()
            .success()
    );
    assert!(
        Command::new("/bin/bash")
            .args(["-c", &format!("exec /bin/sh -c '{}'", write("outside.txt"))])
            .status()
            .unwrap()
            .success()
    );
    std::thread::sleep(Duration::from_millis(300));
    let (events, log) = d.stop();
    for (name, selected) in [
        ("by-agent-uid.txt", true),
        ("by-root.txt", false),
        ("in-cgroup.txt", true),
        ("outside.txt", false),
    ] {
        let path = dir.join(name);
        assert!(path.exists(), "{name} was not written");
        let n = events.iter().filter(|e| is_file(e, 14, &path)).count();
        assert_eq!(n, usize::from(selected), "writes of {name} reported; log:\n{log}");
        if selected {
            let e = exactly_one(&events, name, |e| is_file(e, 14, &path));
            assert_eq!(e["unmapped"]["tether"]["tracked_by"], "selector");
        }
    }
}

#[test]
fn exec_refuses_to_run_the_command_when_the_daemon_is_unreachable() {
    let (_t, dir) = test_dir();
    let marker = dir.join("ran");
    let out = Command::new(tether_bin())
        .args(["exec", "--socket"])
        .arg(dir.join("no-daemon.sock"))
        .args(["--", "touch"])
        .arg(&marker)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("cannot reach the tether daemon"), "{err}");
    assert!(!marker.exists(), "the command must not run untracked");
}

fn program_ids() -> BTreeSet<u32> {
    aya::programs::loaded_programs()
        .filter_map(|p| p.ok())
        .map(|p| p.id())
        .collect()
}

#[test]
fn a_sigkilled_daemon_leaves_no_program_attached() {
    let before = program_ids();
    let d = Daemon::start(None);
    let during = program_ids();
    let ours: BTreeSet<u32> = during.difference(&before).copied().collect();
    assert!(
        ours.len() >= 9,
        "expected the daemon's programs to be loaded, new ids: {ours:?}"
    );
    let pid = d.pid();
    let mut d = d;
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    d.child.wait().unwrap();
    wait_unloaded(&ours, "programs still loaded after SIGKILL");
}

/// Calls `probe` every `every` until it returns Ok (its value is returned); after `limit`,
/// panics with `fail` of what the last probe returned. Every wait of the kernel tests.
fn poll<T, S>(
    limit: Duration,
    every: Duration,
    mut probe: impl FnMut() -> Result<T, S>,
    fail: impl FnOnce(S) -> String,
) -> T {
    let t = Instant::now();
    loop {
        match probe() {
            Ok(v) => return v,
            Err(last) if t.elapsed() >= limit => panic!("{}", fail(last)),
            Err(_) => std::thread::sleep(every),
        }
    }
}

/// Waits until none of the programs `ids` is loaded: the kernel frees a program once its last
/// link or fd is gone, asynchronously (RCU).
fn wait_unloaded(ids: &BTreeSet<u32>, what: &str) {
    poll(
        Duration::from_secs(10),
        Duration::from_millis(100),
        || {
            let left: BTreeSet<u32> = program_ids().intersection(ids).copied().collect();
            if left.is_empty() { Ok(()) } else { Err(left) }
        },
        |left| format!("{what}: {left:?}"),
    )
}
