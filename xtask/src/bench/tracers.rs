//! What watches the workloads in a round: nothing, a `tether run`, or a peer a user would pick
//! instead, each set to watch only the tracked process and its children, as Tether is:
//!
//! - **bpftrace** with a script on the same tracepoints (write-opens, unlink, rename, mkdir,
//!   connect, exec), filtered on a cgroup v2 the tracked workload joins, one line per event to
//!   a file (Tether's records also name the process, the path and the result);
//! - **auditd** with syscall rules for the same calls, filtered on a login uid the tracked
//!   workload sets (audit's way to follow a process tree), logging to a file.
//!
//! Each is started fresh per round and stopped after it, its start-to-attached time measured.
use std::{
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context, bail};

use super::{Daemon, TempDir, end, spawn};

/// The login uid a tracked workload takes under auditd (no real user has it).
const AUDIT_UID: u32 = 47_000;
const AUDIT_KEY: &str = "tether-bench";

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Tracer {
    None,
    Tether(PathBuf),
    Bpftrace,
    Auditd,
}

impl Tracer {
    pub fn label(&self, several_tethers: bool) -> String {
        match self {
            Tracer::None => "no tracer".into(),
            Tracer::Tether(p) if several_tethers => format!("tether ({})", p.display()),
            Tracer::Tether(_) => "tether".into(),
            Tracer::Bpftrace => "bpftrace".into(),
            Tracer::Auditd => "auditd".into(),
        }
    }

    /// Why this tracer cannot run here, if it cannot.
    pub fn unavailable(&self) -> Option<String> {
        match self {
            Tracer::None | Tracer::Tether(_) => None,
            Tracer::Bpftrace => which("bpftrace").err().map(|e| e.to_string()),
            Tracer::Auditd => {
                if let Err(e) = which("auditd").and(which("auditctl")) {
                    return Some(e.to_string());
                }
                match audit_status() {
                    Ok(s) if s.pid != 0 => Some(format!("an audit daemon already runs (pid {})", s.pid)),
                    Ok(_) => None,
                    Err(e) => Some(format!("auditctl -s: {e:#}")),
                }
            }
        }
    }

    pub fn start(&self, base: &Path) -> anyhow::Result<Running> {
        let t = Instant::now();
        let inner = match self {
            Tracer::None => Inner::None,
            Tracer::Tether(bin) => Inner::Tether(Daemon::start(bin)?),
            Tracer::Bpftrace => Inner::Bpftrace(Bpftrace::start(base)?),
            Tracer::Auditd => Inner::Auditd(Auditd::start()?),
        };
        Ok(Running {
            inner,
            attached: t.elapsed(),
        })
    }
}

pub struct Running {
    inner: Inner,
    /// From the start command to probes attached (the ready file, bpftrace's "Attaching",
    /// auditd registered and its rules loaded).
    pub attached: Duration,
}

enum Inner {
    None,
    Tether(Daemon),
    Bpftrace(Bpftrace),
    Auditd(Auditd),
}

/// What a tracer recorded over its round.
#[derive(Debug, Default, Clone, Copy)]
pub struct Tally {
    /// Events it wrote (Tether: events_written; bpftrace: lines; auditd: SYSCALL records).
    pub written: u64,
    /// Events it lost (Tether: ring-full counters; bpftrace: lost events; auditd: lost).
    pub lost: u64,
    /// Peak resident memory of the tracer's process (VmHWM), KiB.
    pub rss_kib: u64,
    /// Tether: bytes and lines of its audit file.
    pub audit: Option<(u64, u64)>,
}

impl Running {
    /// The command that runs `work` (this executable and its arguments) tracked or not.
    pub fn command(&self, work: &[std::ffi::OsString], tracked: bool) -> Command {
        let mut c;
        match (&self.inner, tracked) {
            (Inner::Tether(d), true) => {
                c = Command::new(&d.bin);
                c.arg("exec").arg("--socket").arg(d.socket()).arg("--").args(work);
            }
            (Inner::Bpftrace(b), true) => {
                c = Command::new(&work[0]);
                c.args(&work[1..]).arg("--cgroup").arg(b.cgroup.path());
            }
            (Inner::Auditd(_), true) => {
                c = Command::new(&work[0]);
                c.args(&work[1..]).arg("--loginuid").arg(AUDIT_UID.to_string());
            }
            _ => {
                c = Command::new(&work[0]);
                c.args(&work[1..]);
            }
        }
        c.stdin(Stdio::null());
        c
    }

    pub fn daemon(&self) -> Option<&Daemon> {
        match &self.inner {
            Inner::Tether(d) => Some(d),
            _ => None,
        }
    }

    pub fn tally(&self) -> anyhow::Result<Tally> {
        match &self.inner {
            Inner::None => Ok(Tally::default()),
            Inner::Tether(d) => {
                let s = d.status()?;
                Ok(Tally {
                    written: s.written,
                    lost: s.lost,
                    rss_kib: hwm(d.child.id())?,
                    audit: Some(d.audit_size()?),
                })
            }
            Inner::Bpftrace(b) => b.tally(),
            Inner::Auditd(a) => a.tally(),
        }
    }

    pub fn stop(self) -> anyhow::Result<()> {
        match self.inner {
            Inner::None => Ok(()),
            Inner::Tether(d) => d.stop(),
            Inner::Bpftrace(b) => b.stop(),
            Inner::Auditd(a) => a.stop(),
        }
    }
}

/// The peers, from Debian's packages, when missing (idempotent: nothing to do once there).
pub fn install_peers() -> anyhow::Result<()> {
    if which("bpftrace").is_ok() && which("auditd").is_ok() && which("auditctl").is_ok() {
        return Ok(());
    }
    eprintln!("bench: installing the peers (bpftrace, auditd) with apt");
    let install = || {
        Command::new("apt-get")
            .args(["install", "-y", "-q", "--no-install-recommends", "bpftrace", "auditd"])
            .env("DEBIAN_FRONTEND", "noninteractive")
            .status()
    };
    if !install().is_ok_and(|s| s.success()) {
        crate::run_cmd(Command::new("apt-get").args(["update", "-q"]))?;
        if !install()?.success() {
            bail!("apt-get install bpftrace auditd failed");
        }
    }
    Ok(())
}

fn which(cmd: &str) -> anyhow::Result<PathBuf> {
    std::env::var_os("PATH")
        .iter()
        .flat_map(std::env::split_paths)
        .map(|d| d.join(cmd))
        .find(|p| p.is_file())
        .with_context(|| format!("{cmd} is not installed (`cargo xtask bench` installs it with apt)"))
}

/// Peak resident set of a process, KiB.
pub fn hwm(pid: u32) -> anyhow::Result<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    s.lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .context("no VmHWM in /proc/PID/status")
}

/// A cgroup v2 directory of the bench's own, removed when dropped (once empty).
pub struct Cgroup(PathBuf);

impl Cgroup {
    fn new() -> anyhow::Result<Cgroup> {
        let mounts = std::fs::read_to_string("/proc/mounts")?;
        let root = mounts
            .lines()
            .map(|l| l.split_whitespace().collect::<Vec<_>>())
            .find(|f| f.len() > 2 && f[2] == "cgroup2")
            .map(|f| PathBuf::from(f[1]))
            .context("no cgroup v2 mount in /proc/mounts (bpftrace's filter needs one)")?;
        let dir = root.join(format!("tether-bench-{}", std::process::id()));
        if !dir.exists() {
            std::fs::create_dir(&dir).with_context(|| format!("creating {}", dir.display()))?;
        }
        Ok(Cgroup(dir))
    }

    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for Cgroup {
    fn drop(&mut self) {
        // Its processes (the workloads) have exited; rmdir of an empty cgroup.
        for _ in 0..50 {
            if std::fs::remove_dir(&self.0).is_ok() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

struct Bpftrace {
    child: Child,
    cgroup: Cgroup,
    dir: TempDir,
}

/// The bpftrace script: the calls Tether records for a tracked process, for processes of
/// cgroup `CG` only, one line each (time, pid, comm, call, path or address, result).
const SCRIPT: &str = r#"
tracepoint:syscalls:sys_enter_openat /cgroup == cgroupid("CG") && (args->flags & 0x243)/
{ @path[tid] = args->filename; }
tracepoint:syscalls:sys_exit_openat /@path[tid]/
{ printf("%lu %d %s open %s %d\n", nsecs, pid, comm, str(@path[tid]), args->ret); delete(@path[tid]); }
tracepoint:syscalls:sys_enter_unlinkat /cgroup == cgroupid("CG")/
{ printf("%lu %d %s unlink %s\n", nsecs, pid, comm, str(args->pathname)); }
tracepoint:syscalls:sys_enter_renameat2 /cgroup == cgroupid("CG")/
{ printf("%lu %d %s rename %s %s\n", nsecs, pid, comm, str(args->oldname), str(args->newname)); }
tracepoint:syscalls:sys_enter_mkdirat /cgroup == cgroupid("CG")/
{ printf("%lu %d %s mkdir %s\n", nsecs, pid, comm, str(args->pathname)); }
tracepoint:syscalls:sys_enter_connect /cgroup == cgroupid("CG")/
{ printf("%lu %d %s connect %r\n", nsecs, pid, comm, buf(args->uservaddr, 16)); }
tracepoint:sched:sched_process_exec /cgroup == cgroupid("CG")/
{ printf("%lu %d %s exec %s\n", nsecs, pid, comm, str(args->filename)); }
"#;

impl Bpftrace {
    fn start(base: &Path) -> anyhow::Result<Bpftrace> {
        let cgroup = Cgroup::new()?;
        let dir = TempDir::new_in(base, "bpftrace")?;
        let script = SCRIPT.replace("CG", &cgroup.path().to_string_lossy());
        let out = dir.path().join("events.txt");
        let err = std::fs::File::create(dir.path().join("stderr"))?;
        let mut cmd = Command::new(which("bpftrace")?);
        cmd.arg("-o").arg(&out).arg("-e").arg(script);
        cmd.stdin(Stdio::null()).stdout(Stdio::null()).stderr(err);
        let mut b = Bpftrace {
            child: spawn(&mut cmd, libc::SIGINT)?,
            cgroup,
            dir,
        };
        let t = Instant::now();
        loop {
            if std::fs::read_to_string(&out).is_ok_and(|s| s.contains("Attaching")) {
                return Ok(b);
            }
            if let Some(s) = b.child.try_wait()? {
                bail!("bpftrace exited ({s}) before attaching: {}", b.stderr());
            }
            if t.elapsed() > Duration::from_secs(120) {
                bail!("bpftrace did not attach in 120 s: {}", b.stderr());
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    fn stderr(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("stderr")).unwrap_or_default()
    }

    fn tally(&self) -> anyhow::Result<Tally> {
        let out = std::fs::read_to_string(self.dir.path().join("events.txt"))?;
        let is_event = |l: &&str| !l.starts_with("Attaching") && !l.contains("Lost ");
        let written = out.lines().filter(is_event).count() as u64;
        // bpftrace reports perf-buffer loss as "Lost N events" (in its output or on stderr).
        let lost = format!("{out}\n{}", self.stderr())
            .lines()
            .filter_map(|l| l.split("Lost ").nth(1)?.split_whitespace().next()?.parse::<u64>().ok())
            .sum();
        Ok(Tally {
            written,
            lost,
            rss_kib: hwm(self.child.id())?,
            audit: None,
        })
    }

    fn stop(mut self) -> anyhow::Result<()> {
        match end(&mut self.child, libc::SIGINT) {
            Ok(s) if s.success() => Ok(()),
            Ok(s) => bail!("bpftrace exited with {s} on SIGINT: {}", self.stderr()),
            Err(stuck) => bail!(
                "bpftrace did not exit on SIGINT: {stuck}; its stderr: {}",
                self.stderr()
            ),
        }
    }
}

/// What `auditctl -s` says.
struct AuditStatus {
    enabled: u32,
    pid: u32,
    lost: u64,
}

fn audit_status() -> anyhow::Result<AuditStatus> {
    let out = Command::new("auditctl")
        .arg("-s")
        .output()
        .context("running auditctl -s")?;
    if !out.status.success() {
        bail!("{}", String::from_utf8_lossy(&out.stderr).trim());
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let field = |name: &str| -> anyhow::Result<u64> {
        text.lines()
            .find_map(|l| l.strip_prefix(name)?.split_whitespace().next()?.parse().ok())
            .with_context(|| format!("no {name} in auditctl -s"))
    };
    Ok(AuditStatus {
        enabled: field("enabled ")? as u32,
        pid: field("pid ")? as u32,
        lost: field("lost ")?,
    })
}

fn auditctl(args: &[&str]) -> anyhow::Result<()> {
    let out = Command::new("auditctl")
        .args(args)
        .output()
        .context("running auditctl")?;
    if !out.status.success() {
        bail!(
            "auditctl {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

struct Auditd {
    child: Child,
    dir: TempDir,
    /// `enabled` before the bench touched it (restored at stop).
    was_enabled: u32,
    lost0: u64,
}

impl Auditd {
    fn start() -> anyhow::Result<Auditd> {
        let before = audit_status()?;
        let dir = TempDir::new("auditd")?;
        let log = dir.path().join("audit.log");
        // auditd refuses a configuration others may write.
        std::fs::write(
            dir.path().join("auditd.conf"),
            format!(
                "local_events = yes\nwrite_logs = yes\nlog_file = {}\nlog_format = RAW\n\
                 flush = INCREMENTAL_ASYNC\nfreq = 50\nmax_log_file = 0\nmax_log_file_action = IGNORE\n\
                 space_left = 2\nspace_left_action = IGNORE\nadmin_space_left = 1\n\
                 admin_space_left_action = IGNORE\ndisk_full_action = IGNORE\ndisk_error_action = IGNORE\n\
                 q_depth = 2000\noverflow_action = IGNORE\nname_format = NONE\n",
                log.display()
            ),
        )?;
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o700))?;
        std::fs::set_permissions(dir.path().join("auditd.conf"), std::fs::Permissions::from_mode(0o600))?;
        let err = std::fs::File::create(dir.path().join("stderr"))?;
        let mut cmd = Command::new(which("auditd")?);
        cmd.arg("-n").arg("-c").arg(dir.path());
        cmd.stdin(Stdio::null()).stdout(Stdio::null()).stderr(err);
        let mut a = Auditd {
            child: spawn(&mut cmd, libc::SIGTERM)?,
            dir,
            was_enabled: before.enabled,
            lost0: before.lost,
        };
        let t = Instant::now();
        loop {
            if audit_status().is_ok_and(|s| s.pid == a.child.id()) {
                break;
            }
            if let Some(s) = a.child.try_wait()? {
                bail!("auditd exited ({s}) before registering: {}", a.stderr());
            }
            if t.elapsed() > Duration::from_secs(60) {
                bail!("auditd did not register in 60 s: {}", a.stderr());
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let uid = format!("auid={AUDIT_UID}");
        auditctl(&["-D"])?;
        auditctl(&["-b", "8192"])?;
        for calls in [
            "open,openat,openat2,creat,truncate,ftruncate,unlink,unlinkat,rename,renameat,renameat2,mkdir,mkdirat",
            "connect",
            "execve,execveat",
        ] {
            auditctl(&[
                "-a",
                "always,exit",
                "-F",
                "arch=b64",
                "-S",
                calls,
                "-F",
                &uid,
                "-k",
                AUDIT_KEY,
            ])?;
        }
        a.lost0 = audit_status()?.lost;
        Ok(a)
    }

    fn stderr(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("stderr")).unwrap_or_default()
    }

    fn tally(&self) -> anyhow::Result<Tally> {
        let log = std::fs::read_to_string(self.dir.path().join("audit.log")).unwrap_or_default();
        let written = log
            .lines()
            .filter(|l| l.starts_with("type=SYSCALL") && l.contains(AUDIT_KEY))
            .count() as u64;
        Ok(Tally {
            written,
            lost: audit_status()?.lost.saturating_sub(self.lost0),
            rss_kib: hwm(self.child.id())?,
            audit: None,
        })
    }

    fn stop(mut self) -> anyhow::Result<()> {
        let rules = auditctl(&["-D"]);
        let exit = end(&mut self.child, libc::SIGTERM);
        let enabled = auditctl(&["-e", &self.was_enabled.to_string()]);
        rules?;
        enabled?;
        match exit {
            Ok(s) if s.success() => Ok(()),
            Ok(s) => bail!("auditd exited with {s} on SIGTERM: {}", self.stderr()),
            Err(stuck) => bail!("auditd did not exit on SIGTERM: {stuck}; its stderr: {}", self.stderr()),
        }
    }
}

impl Drop for Auditd {
    fn drop(&mut self) {
        // A bench that failed mid-round leaves no rules and no audit daemon behind.
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = auditctl(&["-D"]);
            let _ = end(&mut self.child, libc::SIGTERM);
            let _ = auditctl(&["-e", &self.was_enabled.to_string()]);
        }
    }
}

impl Drop for Bpftrace {
    fn drop(&mut self) {
        let _ = end(&mut self.child, libc::SIGINT);
    }
}
