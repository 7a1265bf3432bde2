//! Red team: a tracked process that tries to get out, each attempt checked by its *effect*
//! (a file's content, mode, times or attributes; the bytes a privileged service received; a
//! socket that exists; a port that answers; what reached the kernel log), never by Tether's
//! own events. The same attacks run under a narrow credential, under a permissive one (the
//! guardrails must hold whatever the credential says), and in observe mode (every attempt
//! takes effect and is in the audit stream with what enforcement would have done).
//!
//! Where the kernel gives Tether no hook before the effect (no BPF LSM: these machines), the
//! attack is killed after it, and the event must say so (`after_effect`); the README's table
//! says which.
use std::{
    io::Read,
    net::TcpListener,
    os::unix::{
        fs::{MetadataExt, PermissionsExt},
        net::{UnixDatagram, UnixListener},
        process::ExitStatusExt,
    },
    path::{Path, PathBuf},
    process::{Command, Stdio},
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use serde_json::Value;
use tether::credentials::scope::ScopeSpec;

use super::{
    Daemon, check_ocsf,
    credentials::{Issuer, alerts},
    expect_fmod_ret, lsm_name, redteam_bin, test_dir, tether_bin,
};

/// What this kernel judges before the effect (from `tether status`).
#[derive(Debug, Clone, Copy)]
struct Tier {
    /// BPF LSM path hooks: name-based operations and metadata changes.
    paths: bool,
    /// BPF LSM inode hooks: extended attributes and times.
    attrs: bool,
    /// BPF LSM Unix hooks: the resolved peer, before the connection or datagram.
    unix: bool,
}

impl Tier {
    fn of(status: &Value) -> Tier {
        let mech = |hook: &str| -> String {
            status["hooks"]
                .as_array()
                .unwrap()
                .iter()
                .find(|h| h["hook"] == hook)
                .map(|h| h["mechanism"].as_str().unwrap().to_string())
                .unwrap_or_default()
        };
        let t = Tier {
            paths: mech("file_write").contains(&lsm_name("lsm/path_")),
            attrs: mech("file_attrs").starts_with(&lsm_name("lsm/")),
            unix: mech("unix").starts_with(&lsm_name("lsm/")),
        };
        if std::env::var_os("TETHER_EXPECT_LSM").is_some() || expect_fmod_ret() {
            assert!(
                t.paths && t.attrs && t.unix,
                "BPF LSM must judge every channel here: {status:#}"
            );
        }
        t
    }
}

/// A privileged service on Unix sockets (a stream socket, its abstract twin, a datagram
/// socket): it records every byte it gets, the attack's effect.
struct Service {
    stream: PathBuf,
    dgram: PathBuf,
    abstract_name: String,
    got: Arc<Mutex<Vec<u8>>>,
    stop: Arc<AtomicBool>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl Service {
    fn start(dir: &Path) -> Service {
        use std::os::linux::net::SocketAddrExt;
        let stream = dir.join("service.sock");
        let dgram = dir.join("dgram.sock");
        let abstract_name = format!("tether-redteam-{}", std::process::id());
        let got = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let mut threads = Vec::new();
        let listeners = [
            UnixListener::bind(&stream).unwrap(),
            UnixListener::bind_addr(&std::os::unix::net::SocketAddr::from_abstract_name(&abstract_name).unwrap())
                .unwrap(),
        ];
        for l in listeners {
            l.set_nonblocking(true).unwrap();
            let (got, stop) = (got.clone(), stop.clone());
            threads.push(std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    match l.accept() {
                        Ok((mut c, _)) => {
                            c.set_read_timeout(Some(Duration::from_millis(500))).unwrap();
                            let mut buf = Vec::new();
                            let _ = c.read_to_end(&mut buf);
                            got.lock().unwrap().extend_from_slice(&buf);
                        }
                        Err(_) => std::thread::sleep(Duration::from_millis(10)),
                    }
                }
            }));
        }
        let d = UnixDatagram::bind(&dgram).unwrap();
        d.set_read_timeout(Some(Duration::from_millis(50))).unwrap();
        let (g, s) = (got.clone(), stop.clone());
        threads.push(std::thread::spawn(move || {
            let mut buf = [0u8; 512];
            while !s.load(Ordering::Relaxed) {
                if let Ok(n) = d.recv(&mut buf) {
                    g.lock().unwrap().extend_from_slice(&buf[..n]);
                }
            }
        }));
        Service {
            stream,
            dgram,
            abstract_name,
            got,
            stop,
            threads,
        }
    }

    /// What it received so far (and forgets it).
    fn take(&self) -> String {
        std::thread::sleep(Duration::from_millis(700));
        String::from_utf8_lossy(&std::mem::take(&mut *self.got.lock().unwrap())).into_owned()
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

/// Does the kernel log (/dev/kmsg, every record it still holds) contain `marker`?
fn kmsg_contains(marker: &str) -> bool {
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open("/dev/kmsg")
        .expect("/dev/kmsg");
    let mut buf = vec![0u8; 8192];
    loop {
        match f.read(&mut buf) {
            Ok(0) => return false,
            Ok(n) if String::from_utf8_lossy(&buf[..n]).contains(marker) => return true,
            Ok(_) => {}
            // Records overwritten while reading: go on from the oldest left.
            Err(e) if e.raw_os_error() == Some(libc::EPIPE) => {}
            Err(_) => return false,
        }
    }
}

/// One attack's run: how the attacking process ended.
struct Ran {
    code: Option<i32>,
    signal: Option<i32>,
    out: String,
}

impl std::fmt::Display for Ran {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match (self.code, self.signal) {
            (_, Some(sig)) => write!(f, "killed by signal {sig}")?,
            (Some(code), None) => write!(f, "exit {code}")?,
            (None, None) => write!(f, "no status")?,
        }
        write!(f, ": {}", self.out.trim())
    }
}

/// The attack scene: directories, victims, the service, the daemon and the credential.
struct Scene {
    d: Daemon,
    token: PathBuf,
    work: PathBuf,
    outside: PathBuf,
    service: Service,
    tier: Tier,
    _issuer: Issuer,
    _dirs: Vec<tempfile::TempDir>,
    /// The kernel refuses or kills (enforce), or reports (observe).
    enforce: bool,
}

/// How long an attacking process stays after its attack, where a kill can only come after
/// the fact (from the daemon): long enough for it to land.
fn linger_ms(t: Tier) -> &'static str {
    if t.paths && t.attrs && t.unix { "0" } else { "1500" }
}

impl Scene {
    /// `permissive`: a credential that allows every path and address (the guardrails alone
    /// stand in the way), else one that allows only its own directory.
    fn new(mode: &str, permissive: bool) -> Scene {
        let issuer = Issuer::new();
        let (tw, work) = test_dir();
        let (to, outside) = test_dir();
        let (tp, privileged) = test_dir();
        let service = Service::start(&privileged);
        let rt = redteam_bin().canonicalize().unwrap().display().to_string();
        let policy = format!(
            r#"version: 1
agents: []
mode: {mode}
guardrails:
  - id: outside
    action: deny
    write: ["{outside}/"]
  - id: noted
    action: alert
    mode: observe
    write: ["{outside}/noted"]
  - id: deep
    action: deny
    write: ["{work}/guarded/"]
  - id: privileged
    action: deny
    connect: ["unix:{stream}", "unix:{dgram}", "unix:@{abs}"]
  - id: raw
    action: deny
    sockets: [raw, packet, vsock]
  - id: kmsg
    action: deny
    write: ["/dev/char/1:11", "/dev/block/"]
  - id: port
    action: deny
    listen: ["tcp:0.0.0.0/0:{port}"]
  - id: egress
    action: deny
    connect: ["tcp:127.0.0.1/32:{egress}"]
actions:
  scope: {{action: deny}}
  expired: {{action: kill}}
"#,
            outside = outside.display(),
            work = work.display(),
            stream = service.stream.display(),
            dgram = service.dgram.display(),
            abs = service.abstract_name,
            port = GUARDED_PORT,
            egress = EGRESS_PORT,
        );
        let d = Daemon::start_with(Some(&policy), &issuer.trust_arg(), &[]);
        let tier = Tier::of(&d.status());
        let scope = if permissive {
            ScopeSpec {
                exec: vec!["/**".into()],
                write: vec!["/**".into()],
                connect: vec![
                    "tcp:0.0.0.0/0:*".into(),
                    "udp:0.0.0.0/0:*".into(),
                    "unix:/**".into(),
                    "unix:@*".into(),
                ],
                listen: vec!["tcp:0.0.0.0/0:*".into()],
                sockets: vec!["raw".into(), "packet".into(), "icmp".into(), "vsock".into()],
                io_uring: false,
            }
        } else {
            ScopeSpec {
                exec: vec![rt],
                write: vec![format!("{}/", work.display())],
                ..Default::default()
            }
        };
        let token = issuer.token_file(&issuer.request(
            &format!("redteam-{mode}-{permissive}"),
            &["spiffe://test/agent/redteam"],
            scope,
        ));
        // The victims, made by the test (untracked).
        std::fs::write(outside.join("victim"), "original").unwrap();
        std::fs::set_permissions(outside.join("victim"), std::fs::Permissions::from_mode(0o644)).unwrap();
        std::os::unix::fs::symlink(outside.join("victim"), work.join("link")).unwrap();
        std::os::unix::fs::symlink(&service.stream, work.join("svc")).unwrap();
        std::fs::write(outside.join("linked"), "original").unwrap();
        std::fs::write(outside.join("noted"), "original").unwrap();
        std::fs::hard_link(outside.join("linked"), work.join("door")).unwrap();
        let mut deep = work.join("guarded");
        for _ in 0..52 {
            deep.push("d");
        }
        std::fs::create_dir_all(&deep).unwrap();
        std::fs::write(deep.join("f"), "original").unwrap();
        let node = std::ffi::CString::new(work.join("kmsg").display().to_string()).unwrap();
        // SAFETY: a valid C string.
        let r = unsafe { libc::mknod(node.as_ptr(), libc::S_IFCHR | 0o600, libc::makedev(1, 11)) };
        assert_eq!(r, 0, "mknod kmsg: {}", std::io::Error::last_os_error());
        Scene {
            d,
            token,
            work,
            outside,
            service,
            tier,
            _issuer: issuer,
            _dirs: vec![tw, to, tp],
            enforce: mode == "enforce",
        }
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut c = Command::new(tether_bin());
        c.arg("exec")
            .arg("--socket")
            .arg(self.d.socket())
            .arg("--token")
            .arg(&self.token)
            .arg("--")
            .arg(redteam_bin())
            .args(args)
            .current_dir(&self.work)
            .env("REDTEAM_LINGER_MS", linger_ms(self.tier));
        c
    }

    /// Runs one attack as the tracked agent.
    fn attack(&self, args: &[&str]) -> Ran {
        Ran::of(self.command(args).output().expect("tether exec"))
    }

    /// [`Scene::attack`] for an attack refused in the call itself on every tier (nothing to
    /// wait for after it).
    fn attack_refused(&self, args: &[&str]) -> Ran {
        Ran::of(
            self.command(args)
                .env("REDTEAM_LINGER_MS", "0")
                .output()
                .expect("tether exec"),
        )
    }
}

impl Ran {
    fn of(out: std::process::Output) -> Ran {
        Ran {
            code: out.status.code(),
            signal: out.status.signal(),
            out: format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ),
        }
    }
}

impl Scene {
    fn path(&self, rel: &str) -> String {
        self.work.join(rel).display().to_string()
    }

    fn victim(&self, name: &str) -> PathBuf {
        self.outside.join(name)
    }
}

/// A port the `port` guardrail forbids listening on.
const GUARDED_PORT: u16 = 47931;
/// A loopback port the `egress` guardrail forbids connecting to.
const EGRESS_PORT: u16 = 47933;

/// Did a connection to `l` arrive within a moment (the attack has ended)?
fn connection_arrived(l: &TcpListener) -> bool {
    let t = std::time::Instant::now();
    while t.elapsed() < Duration::from_millis(1000) {
        if l.accept().is_ok() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    false
}

fn deep_file(work: &Path) -> PathBuf {
    let mut p = work.join("guarded");
    for _ in 0..52 {
        p.push("d");
    }
    p.join("f")
}

fn port_answers(port: u16) -> bool {
    std::net::TcpStream::connect_timeout(&([127, 0, 0, 1], port).into(), Duration::from_millis(300)).is_ok()
}

fn xattr(path: &Path, name: &str) -> Option<Vec<u8>> {
    let p = std::ffi::CString::new(path.display().to_string()).unwrap();
    let n = std::ffi::CString::new(name).unwrap();
    let mut buf = [0u8; 64];
    // SAFETY: valid C strings and buffer.
    let r = unsafe { libc::getxattr(p.as_ptr(), n.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
    (r >= 0).then(|| buf[..r as usize].to_vec())
}

/// The result of one attack, by its effect, with what a report needs.
struct Verdict {
    name: &'static str,
    /// The attack took effect.
    effect: bool,
    ran: Ran,
    /// Where the kernel cannot refuse in advance on this tier: the effect is allowed, but the
    /// event must say the process was killed after it.
    after_the_fact: bool,
    /// What to look for in the audit stream: a predicate on events.
    event: Box<dyn Fn(&Value) -> bool>,
}

/// Every attack of the suite against `s`; each result is the attack's effect.
fn attacks(s: &Scene) -> Vec<Verdict> {
    let mut out = Vec::new();
    let t = s.tier;
    let file_event = |path: String| -> Box<dyn Fn(&Value) -> bool> {
        Box::new(move |e: &Value| e["class_uid"] == 1001 && e["file"]["path"] == path.as_str())
    };
    // A call the sandbox's seccomp filter refused before it ran (no arguments are known then).
    let refused_call = |e: &Value, calls: &[&str]| {
        e["class_uid"] == 1007 && calls.iter().any(|c| e["unmapped"]["tether"]["sandbox"]["call"] == *c)
    };
    let unix_event = |name: String| -> Box<dyn Fn(&Value) -> bool> {
        Box::new(move |e: &Value| e["class_uid"] == 4001 && e["dst_endpoint"]["name"] == name.as_str())
    };

    // -- Unix sockets to a privileged service: through a symlink, directly, abstract, and a
    //    datagram. The service must get nothing (a datagram: where no LSM hook sees it
    //    before, it arrives and the sender is killed after).
    let stream = s.service.stream.display().to_string();
    let ran = s.attack(&["unix-connect", &s.path("svc"), "RUN id via symlink"]);
    out.push(Verdict {
        name: "unix stream connect through a symlink",
        effect: s.service.take().contains("RUN"),
        ran,
        after_the_fact: false,
        event: unix_event(stream.clone()),
    });
    let ran = s.attack(&["unix-connect", &stream, "RUN id direct"]);
    out.push(Verdict {
        name: "unix stream connect",
        effect: s.service.take().contains("RUN"),
        ran,
        after_the_fact: false,
        event: unix_event(stream.clone()),
    });
    let abs = format!("@{}", s.service.abstract_name);
    let ran = s.attack(&["unix-connect", &abs, "RUN id abstract"]);
    out.push(Verdict {
        name: "unix abstract connect",
        effect: s.service.take().contains("RUN"),
        ran,
        after_the_fact: false,
        event: unix_event(abs.clone()),
    });
    let dgram = s.service.dgram.display().to_string();
    let ran = s.attack(&["unix-send", &dgram, "RUN id datagram"]);
    out.push(Verdict {
        name: "unix datagram to a named socket",
        effect: s.service.take().contains("RUN"),
        ran,
        after_the_fact: !t.unix,
        event: unix_event(dgram.clone()),
    });

    // -- Sockets of kinds that must be granted: the socket must not exist.
    for kind in ["raw", "packet"] {
        let ran = s.attack(&["socket", kind]);
        out.push(Verdict {
            name: if kind == "raw" { "raw socket" } else { "packet socket" },
            effect: ran.out.contains(&format!("socket {kind}: fd")),
            ran,
            after_the_fact: false,
            event: Box::new(move |e| {
                (e["class_uid"] == 4001 && e["unmapped"]["tether"]["socket"]["kind"] == kind)
                    || refused_call(e, &["socket"])
            }),
        });
    }

    // -- Listening on a port the rules forbid: nothing may answer there.
    let mut l = s
        .command(&["listen", &format!("127.0.0.1:{GUARDED_PORT}"), "3"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // The attacker prints the port once it listens (or exits without a line where it was
    // refused or killed): probe then, not after a guess at how long starting takes.
    let mut stdout = std::io::BufReader::new(l.stdout.take().unwrap());
    let mut o = String::new();
    std::io::BufRead::read_line(&mut stdout, &mut o).unwrap();
    let answered = port_answers(GUARDED_PORT);
    let st = l.wait().unwrap();
    stdout.read_to_string(&mut o).unwrap();
    out.push(Verdict {
        name: "listen on a guarded port",
        effect: answered,
        ran: Ran {
            code: st.code(),
            signal: st.signal(),
            out: o,
        },
        after_the_fact: false,
        event: Box::new(|e| {
            e["class_uid"] == 4001 && e["activity_id"] == 7 && e["dst_endpoint"]["port"] == GUARDED_PORT
        }),
    });

    // -- TCP to a forbidden destination: by connect, and by TCP Fast Open (no connect call,
    //    which no LSM connect hook sees). Nothing may arrive.
    let l = TcpListener::bind(("127.0.0.1", EGRESS_PORT)).unwrap();
    l.set_nonblocking(true).unwrap();
    for (name, how) in [
        ("tcp connect to a guarded port", "plain"),
        ("TCP Fast Open to a guarded port", "fastopen"),
    ] {
        let ran = s.attack(&["tcp", &format!("127.0.0.1:{EGRESS_PORT}"), "EXFIL", how]);
        out.push(Verdict {
            name,
            effect: connection_arrived(&l),
            ran,
            after_the_fact: false,
            event: Box::new(|e| e["class_uid"] == 4001 && e["dst_endpoint"]["port"] == EGRESS_PORT),
        });
    }
    drop(l);

    // -- io_uring: a file written through a ring, no syscall of its own.
    let uring = s.victim("uring");
    let ran = s.attack(&["uring-write", &uring.display().to_string(), "PWNED"]);
    out.push(Verdict {
        name: "io_uring write outside the scope",
        effect: std::fs::read_to_string(&uring).is_ok_and(|c| c.contains("PWNED")),
        ran,
        after_the_fact: false,
        event: Box::new(move |e| {
            (e["class_uid"] == 1007 && e["unmapped"]["tether"]["io_uring"]["op"] == "setup")
                || refused_call(e, &["io_uring_setup"])
                || (e["class_uid"] == 1001 && e["file"]["path"].as_str().is_some_and(|p| p.ends_with("/uring")))
        }),
    });

    // -- Device nodes: writing to one the agent did not make (judged as its device), and
    //    making one.
    let marker = format!(
        "tether-redteam-{}",
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos()
    );
    // A line of its own (the kernel holds a record without its newline until the next one).
    let ran = s.attack(&["write", &s.path("kmsg"), &format!("{marker}\n")]);
    out.push(Verdict {
        name: "write to a device node under another name",
        effect: kmsg_contains(&marker),
        ran,
        after_the_fact: false,
        event: file_event(s.path("kmsg")),
    });
    let ran = s.attack(&["mknod", &s.path("disk"), "b", "7", "199"]);
    out.push(Verdict {
        name: "mknod of a block device",
        effect: Path::new(&s.path("disk")).symlink_metadata().is_ok(),
        ran,
        after_the_fact: !t.paths,
        event: {
            let f = file_event(s.path("disk"));
            Box::new(move |e| f(e) || refused_call(e, &["mknod", "mknodat"]))
        },
    });

    // -- The real target: metadata changes through a symlink, an fd, a hard link.
    let victim = s.victim("victim");
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    let ran = s.attack(&["chmod", &s.path("link"), "777"]);
    out.push(Verdict {
        name: "chmod through a symlink",
        effect: mode(&victim) == 0o777,
        ran,
        after_the_fact: !t.paths,
        event: file_event(victim.display().to_string()),
    });
    std::fs::set_permissions(&victim, std::fs::Permissions::from_mode(0o644)).unwrap();
    let ran = s.attack(&["fchmod", &victim.display().to_string(), "777"]);
    out.push(Verdict {
        name: "fchmod of a file opened read-only",
        effect: mode(&victim) == 0o777,
        ran,
        after_the_fact: !t.paths,
        event: file_event(victim.display().to_string()),
    });
    std::fs::set_permissions(&victim, std::fs::Permissions::from_mode(0o644)).unwrap();
    let ran = s.attack(&["setxattr", &s.path("link"), "trusted.tether", "pwned"]);
    out.push(Verdict {
        name: "setxattr through a symlink",
        effect: xattr(&victim, "trusted.tether").is_some(),
        ran,
        after_the_fact: !t.attrs,
        event: {
            let f = file_event(victim.display().to_string());
            Box::new(move |e| f(e) || refused_call(e, &["setxattr", "lsetxattr"]))
        },
    });
    let ran = s.attack(&["chown", &s.path("link"), "4242", "4242"]);
    let owner = std::fs::metadata(&victim).unwrap().uid();
    std::os::unix::fs::chown(&victim, Some(0), Some(0)).unwrap();
    out.push(Verdict {
        name: "chown through a symlink",
        effect: owner == 4242,
        ran,
        // Refused before the change on every tier: by lsm/path_chown, or where that is not
        // in effect by the sandbox's seccomp filter.
        after_the_fact: false,
        event: {
            let f = file_event(victim.display().to_string());
            Box::new(move |e| f(e) || refused_call(e, &["chown"]))
        },
    });
    let mtime = std::fs::metadata(&victim).unwrap().mtime();
    let ran = s.attack(&["utimes", &s.path("link")]);
    out.push(Verdict {
        name: "utimes through a symlink",
        effect: std::fs::metadata(&victim).unwrap().mtime() != mtime,
        ran,
        after_the_fact: !t.attrs,
        event: file_event(victim.display().to_string()),
    });
    let ran = s.attack(&["link", &victim.display().to_string(), &s.path("hard")]);
    out.push(Verdict {
        name: "hard link to a file outside the scope",
        effect: Path::new(&s.path("hard")).exists(),
        ran,
        after_the_fact: !t.paths,
        event: file_event(victim.display().to_string()),
    });
    let ran = s.attack(&["write", &s.path("door"), "PWNED"]);
    out.push(Verdict {
        name: "write through a hard link made before",
        effect: std::fs::read_to_string(s.victim("linked")).unwrap() != "original",
        ran,
        after_the_fact: false,
        event: file_event(s.path("door")),
    });
    // -- Overlapping guardrails: a narrow observe-only one (`noted`) under a broad enforced
    //    one (`outside`) earlier in the file. The earlier decides, in the kernel as in the
    //    engine: the narrow rule opens no door through the broad one.
    let noted = s.victim("noted");
    let ran = s.attack(&["write", &noted.display().to_string(), "PWNED"]);
    out.push(Verdict {
        name: "write under a narrow observe-only guardrail inside an enforced one",
        effect: std::fs::read_to_string(&noted).unwrap() != "original",
        ran,
        after_the_fact: false,
        event: {
            let path = noted.display().to_string();
            Box::new(move |e| {
                e["class_uid"] == 1001
                    && e["file"]["path"] == path.as_str()
                    && e["unmapped"]["tether"]["decision"]["rule"] == "guardrail:outside"
            })
        },
    });
    let deep = deep_file(&s.work);
    let ran = s.attack(&["write", &deep.display().to_string(), "PWNED"]);
    out.push(Verdict {
        name: "write under a path too deep to walk",
        effect: std::fs::read_to_string(&deep).unwrap() != "original",
        ran,
        after_the_fact: false,
        event: Box::new(|e| e["class_uid"] == 1001 && e["file"]["path"].as_str().is_some_and(|p| p.ends_with("/d/f"))),
    });
    out
}

/// Runs every attack in `mode` and checks each by its effect; returns the report lines and
/// the number that failed.
fn run(mode: &str, permissive: bool) -> (Vec<String>, usize) {
    let s = Scene::new(mode, permissive);
    let results = attacks(&s);
    let tier = s.tier;
    let enforce = s.enforce;
    let Scene { d, service, .. } = s;
    drop(service);
    let (events, log) = d.stop();
    for e in &events {
        check_ocsf(e);
    }
    let mut lines = Vec::new();
    let mut failed = 0;
    for r in &results {
        let ev = events.iter().find(|e| (r.event)(e));
        let problem = if enforce && r.effect && !r.after_the_fact {
            Some("took effect".to_string())
        } else if enforce && r.effect && r.after_the_fact {
            // Allowed by the kernel's lack of a hook: the event must say it was killed after.
            match ev {
                Some(e)
                    if e["unmapped"]["tether"]["outcome"]["after_effect"] == true
                        && e["unmapped"]["tether"]["outcome"]["killed"] == true =>
                {
                    None
                }
                Some(e) => Some(format!(
                    "took effect, and the event does not say it was killed after it: {e}"
                )),
                None => Some("took effect, and there is no event".into()),
            }
        } else if !enforce && !r.effect {
            Some("did not take effect in observe mode (the test would prove nothing)".into())
        } else {
            None
        };
        // Seen: in every mode the audit stream has it, with the rules' decision (observe:
        // what enforcement would have done).
        let problem = problem.or_else(|| match ev {
            None => Some("no audit event".into()),
            Some(e) if e["unmapped"]["tether"]["decision"]["action"].is_null() => {
                Some(format!("the audit event has no decision: {e}"))
            }
            Some(e) if !enforce && e["unmapped"]["tether"]["decision"]["would"].is_null() => Some(format!(
                "observe mode: the event does not say what would have been done: {e}"
            )),
            _ => None,
        });
        let verdict = match &problem {
            None => "ok".to_string(),
            Some(p) => {
                failed += 1;
                format!("FAILED: {p}; the attacker: {}", r.ran)
            }
        };
        lines.push(format!(
            "redteam {mode}{}: {}: {verdict}",
            if permissive { " (permissive)" } else { "" },
            r.name
        ));
    }
    if enforce {
        // Every refusal raised an alert.
        assert!(
            !alerts(&events, "guardrail-violation").is_empty() || permissive,
            "{log}"
        );
    }
    eprintln!("tier: {tier:?}");
    for l in &lines {
        eprintln!("{l}");
    }
    if failed > 0 {
        eprintln!("daemon log:\n{log}");
    }
    (lines, failed)
}

fn report(results: &[(Vec<String>, usize)]) {
    let total: usize = results.iter().map(|(l, _)| l.len()).sum();
    let failed: usize = results.iter().map(|(_, f)| f).sum();
    eprintln!("redteam: {} passed, {failed} failed", total - failed);
    assert_eq!(failed, 0, "attacks got out (see the lines above)");
}

#[test]
fn a_narrow_credential_holds_every_attack_back() {
    report(&[run("enforce", false)]);
}

#[test]
fn guardrails_hold_every_attack_back_under_a_permissive_credential() {
    report(&[run("enforce", true)]);
}

#[test]
fn observe_mode_lets_every_attack_through_and_reports_what_enforcement_would_do() {
    report(&[run("observe", false)]);
}

/// An agent fills the filesystem under one of Tether's sinks (a file sink on a small tmpfs it
/// may write), keeps acting so every record for that sink fails, then connects to a guarded
/// port. Checked by effect: nothing arrives, the filesystem is full, the daemon answers and
/// keeps delivering to its other sink, where the refusal, the actions and a `delivery-failed`
/// alert all are (the daemon never exits on a sink error).
#[test]
fn an_agent_that_fills_the_disk_under_a_sink_leaves_enforcement_and_the_other_sinks_intact() {
    let issuer = Issuer::new();
    let (_t, work) = test_dir();
    let disk = work.join("disk");
    std::fs::create_dir(&disk).unwrap();
    nix::mount::mount(
        Some("tmpfs"),
        &disk,
        Some("tmpfs"),
        nix::mount::MsFlags::empty(),
        Some("size=256k,mode=0777"),
    )
    .expect("mounting a small tmpfs");
    struct Unmount(PathBuf);
    impl Drop for Unmount {
        fn drop(&mut self) {
            let _ = nix::mount::umount2(&self.0, nix::mount::MntFlags::MNT_DETACH);
        }
    }
    let _unmount = Unmount(disk.clone());
    // The sinks in a directory of their own (Tether's files: no agent may write there), the
    // agent's filler beside it on the same filesystem.
    std::fs::create_dir(disk.join("tether")).unwrap();
    std::fs::create_dir(disk.join("agent")).unwrap();
    let policy = format!(
        "version: 1\nagents: []\nmode: enforce\nguardrails:\n  - id: egress\n    action: deny\n    connect: [\"tcp:127.0.0.1/32:{EGRESS_PORT}\"]\nactions:\n  scope: {{action: deny}}\n"
    );
    let mut args = issuer.trust_arg();
    for (stream, file) in [("--audit", "audit.jsonl"), ("--alerts", "alerts.jsonl")] {
        args.extend([
            stream.to_string(),
            format!("file:{}", disk.join("tether").join(file).display()),
        ]);
    }
    let d = Daemon::start_with(Some(&policy), &args, &[]);
    let rt = redteam_bin().canonicalize().unwrap().display().to_string();
    let token = issuer.token_file(&issuer.request(
        "fill",
        &["spiffe://test/agent/fill"],
        ScopeSpec {
            exec: vec![super::credentials::bash(), rt.clone()],
            write: vec![format!("{}/", work.display())],
            ..Default::default()
        },
    ));
    let l = TcpListener::bind(("127.0.0.1", EGRESS_PORT)).unwrap();
    l.set_nonblocking(true).unwrap();
    let script = format!(
        "\"$RT\" fill \"$DIR/disk/agent/fill\"; for i in {{1..40}}; do : > \"$DIR/made-$i\"; done; \
         \"$RT\" tcp 127.0.0.1:{EGRESS_PORT} EXFIL plain; true"
    );
    let out = super::credentials::token_command(&d, &token, &work, &script)
        .env("RT", &rt)
        .output()
        .unwrap();
    let ran = Ran::of(out);
    assert!(
        !connection_arrived(&l),
        "the agent got past the egress guardrail: {ran}"
    );
    assert!(ran.out.contains("No space left"), "the agent filled the disk: {ran}");
    let vfs = nix::sys::statvfs::statvfs(&disk).unwrap();
    assert_eq!(vfs.blocks_available(), 0, "the filesystem under the sink is full");
    // Give the daemon the agent's records (each a failed write to the full sink).
    std::thread::sleep(Duration::from_millis(1500));
    assert!(d.status()["pid"].as_u64().is_some(), "the daemon answers");
    let (events, log) = d.stop();
    assert!(
        !alerts(&events, "delivery-failed").is_empty(),
        "the failing sink is alerted on the others:\n{log}"
    );
    assert!(
        alerts(&events, "guardrail-violation")
            .iter()
            .any(|a| a["unmapped"]["tether"]["details"]["rule"] == "guardrail:egress"),
        "the refusal is alerted:\n{log}"
    );
    let made = events
        .iter()
        .filter(|e| {
            e["class_uid"] == 1001
                && e["file"]["path"]
                    .as_str()
                    .is_some_and(|p| p.starts_with(&work.join("made-").display().to_string()))
        })
        .count();
    assert_eq!(
        made, 40,
        "every action after the disk filled is delivered to the working sink"
    );
    assert!(log.contains("enforcement goes on"), "{log}");
}

/// A burst of processes with huge argv and environments: 300 children at once, each with a
/// 100 KiB argument and a 100 KiB environment variable, then a connect to a guarded port.
/// Checked by effect: nothing arrives, the daemon answers, every exec is either recorded
/// (with its argv cut to what the kernel copies, and said to be cut) or counted as lost, and
/// the daemon's process table is back to the live tree afterwards (bounded by what runs, not
/// by what ran).
#[test]
fn a_burst_of_processes_with_huge_argv_is_bounded_counted_and_hides_no_violation() {
    let issuer = Issuer::new();
    let (_t, work) = test_dir();
    let policy = format!(
        "version: 1\nagents: []\nmode: enforce\nguardrails:\n  - id: egress\n    action: deny\n    connect: [\"tcp:127.0.0.1/32:{EGRESS_PORT}\"]\nactions:\n  scope: {{action: deny}}\n"
    );
    let d = Daemon::start_with(Some(&policy), &issuer.trust_arg(), &[]);
    let rt = redteam_bin().canonicalize().unwrap().display().to_string();
    let token = issuer.token_file(&issuer.request(
        "burst",
        &["spiffe://test/agent/burst"],
        ScopeSpec {
            exec: vec![super::credentials::bash(), rt.clone()],
            write: vec![format!("{}/", work.display())],
            ..Default::default()
        },
    ));
    let l = TcpListener::bind(("127.0.0.1", EGRESS_PORT)).unwrap();
    l.set_nonblocking(true).unwrap();
    let script = format!(
        "printf -v big '%*s' 102400 ''; big=${{big// /A}}; export BIG=$big; \
         for i in {{1..300}}; do \"$RT\" noop burst-marker \"$big\" & done; wait; \
         \"$RT\" tcp 127.0.0.1:{EGRESS_PORT} EXFIL plain; true"
    );
    let out = super::credentials::token_command(&d, &token, &work, &script)
        .env("RT", &rt)
        .output()
        .unwrap();
    let ran = Ran::of(out);
    assert!(
        !connection_arrived(&l),
        "the agent got past the egress guardrail: {ran}"
    );
    // The records of the burst drain; then only the daemon's own view is left to check.
    std::thread::sleep(Duration::from_millis(2000));
    let status = d.status();
    assert!(status["pid"].as_u64().is_some(), "the daemon answers");
    let table = status["tracked_processes"].as_u64().unwrap();
    assert!(table < 50, "the process table holds what ran, not what runs: {table}");
    let lost: u64 = status["kernel_counters"]
        .as_object()
        .unwrap()
        .iter()
        .filter(|(k, _)| k.starts_with("ringbuf_full:") || *k == "tracked_full")
        .map(|(_, v)| v.as_u64().unwrap_or(0))
        .sum();
    let (events, log) = d.stop();
    let execs: Vec<&Value> = events
        .iter()
        .filter(|e| {
            e["class_uid"] == 1007
                && e["activity_id"] == 1
                && e["unmapped"]["tether"]["exec"]["argv"]
                    .as_array()
                    .is_some_and(|a| a.iter().any(|x| x == "burst-marker"))
        })
        .collect();
    assert!(
        execs.len() as u64 + lost >= 300,
        "{} execs recorded and {lost} counted lost of 300:\n{log}",
        execs.len()
    );
    assert!(!execs.is_empty(), "no exec of the burst recorded:\n{log}");
    for e in &execs {
        let t = &e["unmapped"]["tether"]["exec"];
        let copied: usize = t["argv"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| a.as_str().unwrap().len() + 1)
            .sum();
        assert!(
            copied <= agent_common::ARGV_LEN + 1,
            "argv copied whole: {copied} bytes"
        );
        assert_eq!(t["argv_truncated"], true, "the cut is said: {e}");
    }
    assert!(
        alerts(&events, "guardrail-violation")
            .iter()
            .any(|a| a["unmapped"]["tether"]["details"]["rule"] == "guardrail:egress"),
        "the refusal is alerted:\n{log}"
    );
}

/// Fail closed under a flood: an agent floods the file ring with cheap creating opens, and
/// meanwhile connects out of scope, execs what its scope does not allow and writes a file
/// outside it. None may get through (the connect reaches no listener, the exec never runs, the
/// file keeps its content), and none's record may be lost (they are in rings of their own:
/// the violating write in the ring of file records a rule matched); every lost file record is
/// counted against its hook and alerted.
#[test]
fn a_flood_of_file_records_hides_no_violation_and_every_loss_is_counted() {
    let issuer = Issuer::new();
    let (_t, work) = test_dir();
    let (_o, outside) = test_dir();
    let victim = outside.join("victim");
    std::fs::write(&victim, "original").unwrap();
    let policy = "version: 1\nagents: []\nmode: enforce\nactions:\n  scope: {action: deny}\n";
    let d = Daemon::start_with(Some(policy), &issuer.trust_arg(), &[]);
    let (listener, port) = super::tcp_listener("127.0.0.1:0");
    listener.set_nonblocking(true).unwrap();
    let rt = redteam_bin().canonicalize().unwrap().display().to_string();
    let token = issuer.token_file(&issuer.request(
        "flood",
        &["spiffe://test/agent/flood"],
        ScopeSpec {
            exec: vec![super::credentials::bash(), rt.clone()],
            write: vec![format!("{}/", work.display())],
            ..Default::default()
        },
    ));
    // The flood runs in the background while the same task connects and execs.
    let script = format!(
        "\"$RT\" open-flood \"$DIR\" 3 > \"$DIR/flood.count\" & sleep 0.5; \
         (exec 3<>/dev/tcp/127.0.0.1/{port}) 2>/dev/null && : > \"$DIR/connected\"; \
         \"$TETHER\" help > /dev/null 2>&1 && : > \"$DIR/exec-ran\"; \
         (\"$RT\" write \"$VICTIM\" PWNED); \
         wait; true"
    );
    let out = super::credentials::token_command(&d, &token, &work, &script)
        .env("RT", &rt)
        .env("VICTIM", &victim)
        .output()
        .unwrap();
    std::thread::sleep(Duration::from_millis(500));
    let arrived = listener.accept().is_ok();
    let status = d.status();
    let (events, log) = d.stop();
    assert!(!arrived, "the out-of-scope connect reached the listener: {out:?}");
    assert!(
        !work.join("connected").exists() && !work.join("exec-ran").exists(),
        "{out:?}"
    );
    let connect = events
        .iter()
        .find(|e| e["class_uid"] == 4001 && e["dst_endpoint"]["port"] == port)
        .unwrap_or_else(|| panic!("the refused connect's record was lost in the flood:\n{log}"));
    assert_eq!(connect["action_id"], 2, "{connect}");
    let tether = tether_bin().canonicalize().unwrap().display().to_string();
    assert!(
        events.iter().any(|e| e["class_uid"] == 1007
            && (e["process"]["file"]["path"] == tether.as_str()
                || e["unmapped"]["tether"]["exec"]["exe"]["path"] == tether.as_str())),
        "the refused exec's record was lost in the flood:\n{log}"
    );
    let counters = &status["kernel_counters"];
    let lost_files = counters["ringbuf_full:tracepoint/syscalls"].as_u64().unwrap_or(0)
        + counters["ringbuf_full:lsm/file_open"].as_u64().unwrap_or(0);
    let file_records = events.iter().filter(|e| e["class_uid"] == 1001).count();
    let opens = std::fs::read_to_string(work.join("flood.count")).unwrap_or_default();
    eprintln!(
        "flood: {} in 3 s, {file_records} file records written, {lost_files} lost (counted); counters {counters}",
        opens.trim()
    );
    for other in [
        "ringbuf_full:cgroup_sock_addr/connect",
        "ringbuf_full:tracepoint/sched_process_exec",
    ] {
        assert_eq!(counters[other].as_u64(), Some(0), "{other}: {counters}");
    }
    if lost_files > 0 {
        let lost = alerts(&events, "events-lost");
        assert!(
            lost.iter()
                .any(|a| a["unmapped"]["tether"]["details"]["hook"].as_str().is_some()),
            "a loss is alerted with its hook: {lost:#?}"
        );
    }
}

/// Fail closed when a map is full: an agent blocks as many threads in write-opens of a FIFO
/// as the kernel's in-flight map holds, then writes a file outside its scope. The kernel
/// cannot follow that open to its exit, so it judges it unjudged at its entry: the process
/// is killed and the file keeps its content. (Where BPF LSM judges opens, they are not
/// parked in that map at all.)
#[test]
fn a_full_in_flight_map_fails_closed() {
    let issuer = Issuer::new();
    let (_t, work) = test_dir();
    let (_o, outside) = test_dir();
    let policy = "version: 1\nagents: []\nmode: enforce\nactions:\n  scope: {action: deny}\n";
    let d = Daemon::start_with(Some(policy), &issuer.trust_arg(), &[]);
    let status = d.status();
    if Tier::of(&status).paths {
        eprintln!("BPF LSM judges write-opens here: they are not parked in the in-flight map");
        return;
    }
    let fifo = work.join("fifo");
    let f = std::ffi::CString::new(fifo.display().to_string()).unwrap();
    // SAFETY: a valid C string.
    assert_eq!(unsafe { libc::mkfifo(f.as_ptr(), 0o600) }, 0);
    let victim = outside.join("victim");
    std::fs::write(&victim, "original").unwrap();
    let rt = redteam_bin().canonicalize().unwrap().display().to_string();
    let token = issuer.token_file(&issuer.request(
        "pending",
        &["spiffe://test/agent/pending"],
        ScopeSpec {
            exec: vec![rt],
            write: vec![format!("{}/", work.display())],
            ..Default::default()
        },
    ));
    let out = Command::new(tether_bin())
        .arg("exec")
        .arg("--socket")
        .arg(d.socket())
        .arg("--token")
        .arg(&token)
        .arg("--")
        .arg(redteam_bin())
        .args([
            "pending-flood",
            &fifo.display().to_string(),
            &agent_common::MAX_PENDING.to_string(),
        ])
        .arg(victim.display().to_string())
        .arg("PWNED")
        .output()
        .unwrap();
    let (events, log) = d.stop();
    assert_eq!(std::fs::read_to_string(&victim).unwrap(), "original", "{out:?}\n{log}");
    assert_eq!(out.status.signal(), Some(libc::SIGKILL), "{out:?}");
    let e = events
        .iter()
        .find(|e| e["class_uid"] == 1001 && e["unmapped"]["tether"]["kernel_verdict"]["unjudged"] == true)
        .unwrap_or_else(|| panic!("no unjudged write:\n{log}"));
    assert_eq!(e["unmapped"]["tether"]["decision"]["rule"], "unjudged", "{e}");
    assert!(!alerts(&events, "unjudged-action").is_empty() || !alerts(&events, "unjudged-actions").is_empty());
}

/// Tamper-proofing, the admin API: a tracked agent, root and with a credential that allows
/// every Unix socket, asks the admin socket to switch enforcement off. The daemon refuses it
/// (by the caller's pid: tracked) and alerts; by its effect, the mode is still enforce. The
/// same request from an untracked process (the test) does switch it: the request itself is
/// one the API takes.
#[test]
fn a_tracked_agent_cannot_switch_enforcement_off_through_the_admin_socket() {
    let s = Scene::new("enforce", true);
    let admin = s.d.admin_socket().display().to_string();
    let body = r#"{"mode":"observe"}"#;
    let ran = s.attack(&["http", &admin, "POST", "/v1/mode", body]);
    let mode = |d: &Daemon| d.status()["mode"].as_str().unwrap_or_default().to_string();
    assert_eq!(mode(&s.d), "enforce", "the agent switched enforcement off: {ran}");
    assert_ne!(ran.code, Some(0), "the agent's request must be refused: {ran}");
    // Refused as forbidden by the admin gate, or before that at the connect by the built-in
    // guardrail over Tether's own sockets (EPERM from the LSM hook; killed where that is
    // judged at the call's exit).
    assert!(
        ran.out.contains(" 403 ") || ran.signal == Some(9) || ran.out.contains("Operation not permitted"),
        "refused: {ran}"
    );
    // The same, sent by a child after the process that connected (the peer the daemon sees)
    // has exited: its tracked entry is gone, and it must not pass for an untracked caller.
    let ran = s.attack(&["http-handoff", &admin, "POST", "/v1/mode", body]);
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(
        mode(&s.d),
        "enforce",
        "a handed-off connection switched enforcement off: {ran}"
    );
    // The control: the same request, untracked.
    let out = Command::new(redteam_bin())
        .args(["http", &admin, "POST", "/v1/mode", body])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stdout));
    assert_eq!(mode(&s.d), "observe", "the untracked request must take effect");
    let Scene { d, .. } = s;
    let (events, log) = d.stop();
    assert!(
        !alerts(&events, "admin-refused").is_empty()
            || alerts(&events, "guardrail-violation")
                .iter()
                .any(|a| a["unmapped"]["tether"]["details"]["rule"] == "guardrail:tether-self"),
        "the refusal is alerted:\n{log}"
    );
}

/// A root agent under `tether exec` reaches for the daemon itself: signals it, traces it,
/// reads its memory, and walks the kernel's BPF maps to delete its own tracked entry. Each is
/// refused before the effect on every kernel (the sandbox: Landlock signal scoping and its
/// ptrace rule, seccomp for bpf/ptrace/process_vm_*; where BPF LSM is in effect, also the
/// `self` LSM hooks). Checked by effect: the daemon still runs and answers, and the agent is
/// still judged (a connect to a guarded port arrives nowhere).
#[test]
fn a_sandboxed_agent_cannot_signal_trace_or_untrack_itself() {
    let s = Scene::new("enforce", true);
    let pid = s.d.pid().to_string();
    for attack in [
        vec!["signal", pid.as_str(), "15"],
        vec!["signal", pid.as_str(), "19"],
        vec!["ptrace", pid.as_str()],
        vec!["vm-read", pid.as_str()],
        vec!["untrack-self"],
    ] {
        let ran = s.attack_refused(&attack);
        assert_ne!(ran.code, Some(0), "{attack:?} must be refused: {ran}");
        assert!(
            ran.out.contains("Operation not permitted") || ran.out.contains("Permission denied"),
            "{attack:?} refused by the kernel (EPERM/EACCES): {ran}"
        );
        // The effect: the daemon is alive, not stopped, and answers.
        assert!(
            s.d.status()["pid"].as_u64().is_some(),
            "after {attack:?} the daemon answers"
        );
        let state = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
        let state = state
            .rsplit(')')
            .next()
            .unwrap()
            .split_whitespace()
            .next()
            .unwrap()
            .to_string();
        assert!(
            state == "S" || state == "R",
            "after {attack:?} the daemon runs (state {state})"
        );
    }
    // Channels this credential does not grant (io_uring) or that no BPF LSM hook refuses in
    // advance on this tier (device nodes), inside the directory the scope lets it write.
    let ring = s.work.join("ring-written");
    let ring_ran = s.attack_refused(&["uring-write", &ring.display().to_string(), "RING"]);
    let ring_written = std::fs::read_to_string(&ring).is_ok_and(|c| c.contains("RING"));
    let node = s.work.join("null-node");
    let node_ran = s.attack_refused(&["mknod", &node.display().to_string(), "c", "1", "3"]);
    let node_made = node.symlink_metadata().is_ok();
    // Still judged: the guarded egress port gets nothing.
    let l = TcpListener::bind(("127.0.0.1", EGRESS_PORT)).unwrap();
    l.set_nonblocking(true).unwrap();
    let ran = s.attack(&["tcp", &format!("127.0.0.1:{EGRESS_PORT}"), "EXFIL", "plain"]);
    assert!(
        !connection_arrived(&l),
        "the agent got past the egress guardrail: {ran}"
    );
    let status = s.d.status();
    let s_tier = s.tier;
    let Scene { d, .. } = s;
    let (events, log) = d.stop();
    // Every event of the task says which layers its tree runs under.
    let abi = tether::features::landlock_abi().ok();
    let layered = events
        .iter()
        .find(|e| !e["unmapped"]["tether"]["task"]["sandbox"].is_null())
        .unwrap_or_else(|| panic!("no event names the task's sandbox layers:\n{log}"));
    let layers = &layered["unmapped"]["tether"]["task"]["sandbox"];
    assert!(
        layers["seccomp"]
            .as_array()
            .is_some_and(|l| l.iter().any(|c| c == "bpf")),
        "{layers:#}"
    );
    // Each call the filter refused is recorded (the kernel probes never saw it enter) with
    // the sandbox as its decision, and alerted.
    let refused: Vec<&str> = layers["seccomp"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|c| c.as_str())
        .collect();
    let recorded = |call: &str| {
        events.iter().any(|e| {
            e["class_uid"] == 1007
                && e["unmapped"]["tether"]["sandbox"]["call"] == call
                && e["unmapped"]["tether"]["decision"]["rule"] == format!("sandbox:{call}")
                && e["disposition_id"] == 2
        })
    };
    assert!(recorded("bpf"), "the refused bpf(2) is recorded:\n{log}");
    assert!(!alerts(&events, "sandbox-refused").is_empty(), "{log}");
    if !s_tier.paths {
        // No BPF LSM here: these are the sandbox's to refuse before the effect.
        for call in ["io_uring_setup", "mknod/mknodat (devices)", "chown family"] {
            assert!(refused.contains(&call), "{call} in {refused:?}");
        }
    }
    if refused.contains(&"io_uring_setup") {
        assert!(!ring_written, "the ring wrote the file: {ring_ran}");
        assert!(recorded("io_uring_setup"), "{ring_ran}\n{log}");
    }
    if refused.contains(&"mknod/mknodat (devices)") {
        assert!(!node_made, "the device node was made: {node_ran}");
        assert!(recorded("mknod") || recorded("mknodat"), "{node_ran}\n{log}");
    }
    if let Some(abi) = abi {
        assert_eq!(layers["landlock"]["abi"], abi, "{layers:#}");
        if abi >= 6 {
            assert!(
                layers["landlock"]["scopes"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .any(|s| s == "signal"),
                "{layers:#}"
            );
        }
    }
    let tamper = status["hooks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|h| h["hook"] == "tamper")
        .cloned()
        .unwrap_or_default();
    assert!(!tamper.is_null(), "status reports how tampering is met: {status:#}");
}

/// The sandbox's Landlock TCP rights (ABI 4+): a credential that may connect to one port and
/// listen on none. A connect to another port and a bind to a port are refused by Landlock
/// before any of Tether's hooks run, and still recorded (`landlock/net`) with the rules'
/// decision; the connect the scope allows arrives. Where Landlock has no network rights the
/// cgroup hooks refuse the same, and the task's layers say Landlock TCP is missing.
#[test]
fn the_sandbox_refuses_tcp_by_port_in_landlock_and_every_refusal_is_recorded() {
    let issuer = Issuer::new();
    let (_t, work) = test_dir();
    let (allowed, a_port) = super::tcp_listener("127.0.0.1:0");
    let (other, o_port) = super::tcp_listener("127.0.0.1:0");
    allowed.set_nonblocking(true).unwrap();
    other.set_nonblocking(true).unwrap();
    let policy = "version: 1\nagents: []\nmode: enforce\nactions:\n  scope: {action: deny}\n";
    let d = Daemon::start_with(Some(policy), &issuer.trust_arg(), &[]);
    let rt = redteam_bin().canonicalize().unwrap().display().to_string();
    let token = issuer.token_file(&issuer.request(
        "landlock-tcp",
        &["spiffe://test/agent/landlock-tcp"],
        ScopeSpec {
            exec: vec![rt],
            write: vec![format!("{}/", work.display())],
            connect: vec![format!("tcp:127.0.0.1/32:{a_port}")],
            ..Default::default()
        },
    ));
    let attack = |args: &[&str]| {
        Ran::of(
            Command::new(tether_bin())
                .arg("exec")
                .arg("--socket")
                .arg(d.socket())
                .arg("--token")
                .arg(&token)
                .arg("--")
                .arg(redteam_bin())
                .args(args)
                .current_dir(&work)
                .output()
                .unwrap(),
        )
    };
    let to_other = attack(&["tcp", &format!("127.0.0.1:{o_port}"), "EXFIL", "plain"]);
    let to_allowed = attack(&["tcp", &format!("127.0.0.1:{a_port}"), "HELLO", "plain"]);
    let listen = attack(&["listen", &format!("127.0.0.1:{GUARDED_PORT}"), "0"]);
    assert!(
        !connection_arrived(&other),
        "the out-of-scope port got a connection: {to_other}"
    );
    assert!(
        connection_arrived(&allowed),
        "the port the scope allows got nothing: {to_allowed}"
    );
    assert_ne!(
        listen.code,
        Some(0),
        "the bind outside `listen` must be refused: {listen}"
    );
    let (events, log) = d.stop();
    let layers = events
        .iter()
        .find(|e| !e["unmapped"]["tether"]["task"]["sandbox"].is_null())
        .map(|e| e["unmapped"]["tether"]["task"]["sandbox"].clone())
        .unwrap_or_else(|| panic!("no event names the sandbox layers:\n{log}"));
    let landlock_tcp = layers["landlock"]["connect"] == true;
    let abi = tether::features::landlock_abi().unwrap_or(0);
    assert_eq!(
        landlock_tcp,
        abi >= 4,
        "Landlock TCP is applied where the ABI has it: {layers:#}"
    );
    let refused = |port: u16, activity: u64| {
        events
            .iter()
            .find(|e| e["class_uid"] == 4001 && e["activity_id"] == activity && e["dst_endpoint"]["port"] == port)
            .unwrap_or_else(|| panic!("no record of the refused call to port {port}:\n{log}"))
    };
    let c = refused(o_port, 1);
    assert_eq!(c["action_id"], 2, "{c}");
    assert_eq!(c["unmapped"]["tether"]["decision"]["rule"], "scope:connect", "{c}");
    let b = refused(GUARDED_PORT, 7);
    assert_eq!(b["action_id"], 2, "{b}");
    if landlock_tcp {
        assert!(
            to_other.out.contains("Permission denied"),
            "EACCES from Landlock: {to_other}"
        );
        for e in [c, b] {
            assert_eq!(e["unmapped"]["tether"]["mechanism"], "landlock/net", "{e}");
        }
        assert_eq!(layers["landlock"]["bind"], true, "{layers:#}");
    } else {
        assert!(
            layers["missing"].to_string().contains("tcp") || layers["landlock"].is_null(),
            "{layers:#}"
        );
    }
}

/// A root agent that registered itself (no `tether exec`, so no seccomp filter) deletes its
/// own entry from the kernel's tracked map through bpf(2), waits, then connects to a guarded
/// port 4 s later. Where BPF LSM is in effect the `bpf` hook refuses the call; elsewhere it
/// succeeds, and the daemon's integrity check (every 2 s) puts the entry back and raises a `tamper`
/// alert. Either way the connect that follows is refused: nothing arrives.
#[test]
fn an_agent_that_deletes_its_tracked_entry_is_tracked_again() {
    let rt = redteam_bin();
    let policy = format!(
        r#"version: 1
agents: []
mode: enforce
guardrails:
  - id: egress
    action: deny
    connect: ["tcp:127.0.0.1/32:{EGRESS_PORT}"]
"#
    );
    let d = Daemon::start(Some(&policy));
    let tier = Tier::of(&d.status());
    let l = TcpListener::bind(("127.0.0.1", EGRESS_PORT)).unwrap();
    l.set_nonblocking(true).unwrap();
    let out = Command::new(&rt)
        .arg("register-untrack-then-tcp")
        .arg(d.socket())
        .args([&format!("127.0.0.1:{EGRESS_PORT}"), "EXFIL", "4000"])
        .output()
        .unwrap();
    let ran = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        !connection_arrived(&l),
        "the untracked agent reached the guarded port: {ran}"
    );
    let deleted = ran.contains("deleted pid");
    if tier.paths {
        assert!(!deleted, "BPF LSM must refuse bpf(2) to a tracked process: {ran}");
        assert!(ran.contains("Operation not permitted"), "{ran}");
    }
    let (events, log) = d.stop();
    if deleted {
        assert!(
            !alerts(&events, "tamper").is_empty(),
            "the deletion is found, repaired and alerted:\n{ran}\n{log}"
        );
    } else {
        assert!(
            !alerts(&events, "tamper").is_empty() || !tier.paths,
            "the refused bpf(2) is counted and alerted:\n{ran}\n{log}"
        );
    }
}

/// `tether exec` pointed at a socket an agent made (root-owned: the agent is root) refuses to
/// run the command: the serving process is not the daemon. Checked by effect: the command's
/// marker file does not exist.
#[test]
fn tether_exec_refuses_a_socket_that_is_not_the_daemons() {
    let (_t, dir) = test_dir();
    let sock = dir.join("fake.sock");
    let listener = UnixListener::bind(&sock).unwrap();
    // The fake daemon: answers every request as the real one would, with an empty sandbox.
    let server = std::thread::spawn(move || {
        use std::io::Write as _;
        for c in listener.incoming().take(4) {
            let Ok(mut c) = c else { break };
            let mut buf = [0u8; 4096];
            let _ = std::io::Read::read(&mut c, &mut buf);
            let body = r#"{"pid":1,"sandbox":{"landlock":{"write":null,"exec":null},"seccomp":{"io_uring":true,"raw":true,"packet":true}}}"#;
            let _ = write!(
                c,
                "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
                body.len()
            );
        }
    });
    let marker = dir.join("ran");
    for chown in [false, true] {
        if chown {
            std::os::unix::fs::chown(&sock, Some(65534), Some(65534)).unwrap();
        }
        let out = Command::new(tether_bin())
            .args(["exec", "--socket"])
            .arg(&sock)
            .args(["--", "/usr/bin/touch"])
            .arg(&marker)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(126), "{err}");
        assert!(err.contains("is not the tether daemon's socket"), "{err}");
        assert!(!marker.exists(), "the command ran against a fake daemon: {err}");
    }
    let _ = std::os::unix::net::UnixStream::connect(&sock);
    drop(server);
}

/// The built-in guardrail over Tether's own files holds whatever the rule files say (this
/// daemon's rules name none of them) and in observe mode: a root agent with a credential that
/// allows every write cannot rewrite the rule file, the ready file or the audit stream.
#[test]
fn tethers_own_files_are_out_of_reach_of_a_permissive_agent() {
    let s = Scene::new("observe", true);
    for file in [s.d.policy_path(), s.d.dir.path().join("ready")] {
        let before = std::fs::read(&file).unwrap();
        let ran = s.attack_refused(&["write", &file.display().to_string(), "PWNED"]);
        std::thread::sleep(Duration::from_millis(200));
        assert_eq!(
            std::fs::read(&file).unwrap(),
            before,
            "{} changed: {ran}",
            file.display()
        );
    }
    let status = s.d.status();
    assert!(
        status["self_protection"]["write"]
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p.as_str() == Some(&s.d.policy_path().display().to_string())),
        "{:#}",
        status["self_protection"]
    );
    let Scene { d, .. } = s;
    let (events, log) = d.stop();
    assert!(
        events
            .iter()
            .any(|e| e["unmapped"]["tether"]["decision"]["rule"] == "guardrail:tether-self"),
        "the attempt is judged by the built-in guardrail:\n{log}"
    );
}

/// A root agent opens hundreds of idle connections to the agent socket: its tree's share (8) is
/// all it gets, so the operator's calls (root, like the agent) are still answered while it
/// holds them. Checked by effect: `tether status` from an untracked shell answers.
#[test]
fn an_agent_cannot_exhaust_the_api_with_idle_connections() {
    let s = Scene::new("enforce", true);
    let sock = s.d.socket().display().to_string();
    let mut hold = s.command(&["hold", &sock, "300", "4"]);
    let mut child = hold.stdout(Stdio::piped()).spawn().unwrap();
    let mut line = String::new();
    std::io::BufRead::read_line(&mut std::io::BufReader::new(child.stdout.take().unwrap()), &mut line).unwrap();
    assert!(line.starts_with("held "), "{line}");
    for _ in 0..3 {
        if let Err(e) = s.d.try_status() {
            panic!(
                "the operator is answered while the agent holds {line}: {e}\n{}",
                s.d.log()
            );
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    let Scene { d, .. } = s;
    let (_, log) = d.stop();
    assert!(
        log.contains("its share is open"),
        "the refused connections are logged:\n{log}"
    );
}
