//! `cargo xtask bench` (root): what Tether costs, beside its peers, in one run. Two parts, both
//! in interleaved rounds so every configuration shares the machine's noise:
//!
//! - the comparison ([`compare`]): each workload ([`work`]) tracked and untracked under no
//!   tracer, each `tether` binary and the peers ([`tracers`]: bpftrace, auditd), as ratios to
//!   no tracer, with each tracer's start-to-attached time, loss, memory and alert latency;
//! - the flood (below): the daemon's CPU time per event, the sustained rate and each BPF
//!   program's cost, for one or more `tether` binaries.
//!
//! One flood: start `tether run` (observe mode, the built-in default policy, audit and alerts
//! to file sinks, sockets and ready file in a fresh temporary directory), wait until it is
//! ready and quiet, read its CPU time (utime + stime of /proc/PID/stat, every thread), run
//! `tether exec -- xtask work open` (this executable re-executed: N times open(O_WRONLY|O_CREAT)
//! of an existing file and close in a fresh temporary directory — the cheapest call with write
//! intent, so the highest rate one process offers — the tracked process itself), wait until the
//! daemon's status (events written, kernel counters) stops moving, read its CPU time again,
//! stop it with SIGTERM (it detaches its probes) and remove both directories.
//!
//! Around the flood (from just before `tether exec` to its exit) the kernel's BPF run-time
//! stats are on ([`progs::StatsOn`]); the run_time_ns and run_cnt of each of the daemon's
//! programs before and after give each program's calls and ns per call during the flood
//! (issue 19: ≤ 500 ns per call for sys_exit_file and the LSM file hooks). A kernel that keeps
//! no such stats is said so in the report; the rest of the bench does not depend on them.
mod compare;
pub use compare::violate;
mod progs;
mod tracers;
pub mod work;

use std::{
    collections::BTreeMap,
    fmt::Write as _,
    os::unix::process::CommandExt,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::atomic::{AtomicU32, Ordering},
    time::{Duration, Instant},
};

use anyhow::{Context, bail};
use clap::Args;

/// Prefix of every temporary directory the bench makes (then the pid of the xtask that made it).
const TEMP_PREFIX: &str = "tether-bench-";
/// How long the daemon's status must stay unchanged to count as settled.
const QUIET: Duration = Duration::from_millis(1000);
const POLL: Duration = Duration::from_millis(100);
/// How long the idle daemon is watched before the flood.
const IDLE: Duration = Duration::from_secs(2);
/// Environment `tether run` reads (clap `env`) that would change what is measured or where.
const DAEMON_ENV: &[&str] = &[
    "TETHER_SOCKET",
    "TETHER_ADMIN_SOCKET",
    "TETHER_PERSIST",
    "TETHER_PIN_DIR",
    "TETHER_STATE_DIR",
    "TETHER_HIDE_BTF_FIELDS",
    "TETHER_LAYOUT_OVERRIDE",
];

#[derive(Debug, Args)]
pub struct BenchArgs {
    /// A `tether` binary to measure; repeatable: several are run interleaved, round by round.
    /// Default: this workspace's release build (built first).
    #[arg(long = "tether", value_name = "PATH")]
    tethers: Vec<PathBuf>,
    /// Rounds (each binary once per round; the first binary rotates).
    #[arg(long, default_value_t = 5)]
    rounds: usize,
    /// Write-opens the flood makes per run.
    #[arg(long, value_name = "N", default_value_t = 200_000)]
    events: u64,
    /// A smoke run: one round, small workloads, 20000 flood events (overrides --rounds and
    /// --events).
    #[arg(long)]
    quick: bool,
    /// Leave out the peers (bpftrace, auditd); no tracer and Tether still run.
    #[arg(long)]
    no_peers: bool,
    /// Only the flood (daemon CPU per event, sustained rate, BPF programs), not the comparison.
    #[arg(long, conflicts_with = "no_peers")]
    flood_only: bool,
}

impl BenchArgs {
    /// `--quick` with this `tether`.
    pub fn smoke(tether: PathBuf) -> BenchArgs {
        BenchArgs {
            tethers: vec![tether],
            rounds: 1,
            events: 20_000,
            quick: true,
            no_peers: false,
            flood_only: false,
        }
    }
}

/// One daemon, one flood.
struct Run {
    round: usize,
    bin: usize,
    /// Daemon CPU time from just before the flood to when its last event was written.
    cpu: Duration,
    /// Events the daemon wrote meanwhile (audit and alerts).
    written: u64,
    /// Records the kernel could not reserve in a ring (`ringbuf_full:*`).
    lost: u64,
    /// Increase of every other kernel counter (tracked/pending map full, read errors, unjudged).
    other: u64,
    /// From the flood's start to the poll that first saw the final status.
    span: Duration,
    /// The flood's own time for its N opens, as it measured it.
    flood: Duration,
    /// Daemon CPU per second of wall time while idle ([`IDLE`] before the flood).
    idle: f64,
    /// What each of the daemon's BPF programs did during the flood, or why that is unknown.
    progs: Result<Vec<progs::Cost>, String>,
    /// Bytes and lines of the daemon's audit file after the flood.
    audit: (u64, u64),
    /// Kernel records read during the flood and their bytes.
    records: (u64, u64),
    /// Peak resident memory of the daemon (VmHWM), KiB.
    rss_kib: u64,
}

impl Run {
    fn us_per_event(&self) -> f64 {
        self.cpu.as_secs_f64() * 1e6 / self.written.max(1) as f64
    }
    fn written_per_s(&self) -> f64 {
        self.written as f64 / self.span.as_secs_f64()
    }
    fn cpu_share(&self) -> f64 {
        self.cpu.as_secs_f64() / self.span.as_secs_f64()
    }
}

pub fn run(args: &BenchArgs) -> anyhow::Result<()> {
    crate::require_root("cargo xtask bench")?;
    let (rounds, events) = if args.quick {
        (1, 20_000)
    } else {
        (args.rounds, args.events)
    };
    if rounds == 0 || events == 0 {
        bail!("--rounds and --events must be at least 1");
    }
    let bins = if args.tethers.is_empty() {
        crate::setup_toolchain()?;
        crate::build(true)?;
        vec![crate::target_dir().join("release/tether")]
    } else {
        args.tethers.clone()
    };
    let bins: Vec<PathBuf> = bins
        .iter()
        .map(|b| std::fs::canonicalize(b).with_context(|| format!("--tether {}", b.display())))
        .collect::<anyhow::Result<_>>()?;
    let me = std::env::current_exe().context("this executable's path")?;
    sweep_stale_dirs();
    let load_before = loadavg();
    let started = Instant::now();
    let compared = if args.flood_only {
        None
    } else {
        let mut list = vec![tracers::Tracer::None];
        list.extend(bins.iter().cloned().map(tracers::Tracer::Tether));
        if !args.no_peers {
            tracers::install_peers()?;
            list.extend([tracers::Tracer::Bpftrace, tracers::Tracer::Auditd]);
        }
        let sizes = if args.quick {
            compare::Sizes::QUICK
        } else {
            compare::Sizes::FULL
        };
        Some(compare::run(list, rounds, sizes, &me)?)
    };
    let runs = flood_rounds(&bins, &me, rounds, events)?;
    let out = crate::target_dir().join("bench");
    std::fs::create_dir_all(&out)?;
    let comparison = match &compared {
        Some(c) => {
            let mut part = String::new();
            c.report(&mut part);
            let chart = compare::chart_path();
            std::fs::write(&chart, c.svg()).with_context(|| format!("writing {}", chart.display()))?;
            let _ = writeln!(part, "Chart: `{}`.\n", chart.display());
            Some(part)
        }
        None => None,
    };
    let report = report(
        &bins,
        &runs,
        events,
        rounds,
        &load_before,
        started.elapsed(),
        comparison.as_deref(),
    );
    print!("{report}");
    let file = out.join("bench.md");
    std::fs::write(&file, &report).with_context(|| format!("writing {}", file.display()))?;
    eprintln!("bench: written to {}", file.display());
    Ok(())
}

/// The flood, each binary once per round (the first rotates).
fn flood_rounds(bins: &[PathBuf], me: &Path, rounds: usize, events: u64) -> anyhow::Result<Vec<Run>> {
    let mut runs = Vec::new();
    for round in 0..rounds {
        for k in 0..bins.len() {
            // Rotate who goes first, so no binary always runs right after a daemon exit.
            let bin = (round + k) % bins.len();
            eprintln!(
                "bench: round {}/{rounds}: {} ({events} write-opens)",
                round + 1,
                bins[bin].display()
            );
            let r = one_run(&bins[bin], me, events, round, bin)
                .with_context(|| format!("round {} with {}", round + 1, bins[bin].display()))?;
            eprintln!(
                "bench:   {:.2} µs daemon CPU/event, {} written, {} lost, {:.0} written/s, flood {:.0} opens/s",
                r.us_per_event(),
                r.written,
                r.lost,
                r.written_per_s(),
                events as f64 / r.flood.as_secs_f64()
            );
            match &r.progs {
                Ok(costs) => {
                    let mut top: Vec<&progs::Cost> = costs.iter().filter(|c| c.calls > 0).collect();
                    top.sort_by_key(|c| std::cmp::Reverse(c.ns));
                    let top: Vec<String> = top
                        .iter()
                        .take(4)
                        .map(|c| format!("{} {:.0} ns × {}", c.name, c.ns_per_call().unwrap_or(0.0), c.calls))
                        .collect();
                    eprintln!("bench:   BPF per call: {}", top.join(", "));
                }
                Err(e) => eprintln!("bench:   BPF per-program stats absent: {e}"),
            }
            runs.push(r);
        }
    }
    Ok(runs)
}

fn one_run(bin: &Path, me: &Path, events: u64, round: usize, bin_idx: usize) -> anyhow::Result<Run> {
    let daemon = Daemon::start(bin)?;
    let work = TempDir::new_in(&flood_base(), "flood")?;
    // Start-up events (adopted agents, if any) first; then the idle cost.
    let (_, _, _) = daemon.settle()?;
    let c0 = daemon.cpu()?;
    std::thread::sleep(IDLE);
    let before = daemon.status()?;
    let cpu0 = daemon.cpu()?;
    let idle = cpu0.saturating_sub(c0).as_secs_f64() / IDLE.as_secs_f64();

    // The programs' stats count from here to the flood's exit (not the daemon's settling).
    let pid = daemon.child.id();
    let stats = progs::StatsOn::enable();
    let progs0 = match &stats {
        Ok(_) => progs::snapshot(pid),
        Err(e) => Err(format!("the kernel would not keep BPF run-time stats: {e}")),
    };
    let t0 = Instant::now();
    let out = Command::new(bin)
        .arg("exec")
        .arg("--socket")
        .arg(daemon.socket())
        .arg("--")
        .arg(me)
        .arg("work")
        .arg("open")
        .arg("--dir")
        .arg(work.path())
        .arg("--n")
        .arg(events.to_string())
        .stdin(Stdio::null())
        .output()
        .context("running the flood under tether exec")?;
    let progs = progs0.and_then(|p0| Ok(progs::delta(&p0, &progs::snapshot(pid)?)));
    drop(stats);
    if !out.status.success() {
        bail!(
            "the flood failed ({}): {}\ndaemon log:\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr),
            daemon.log_tail()
        );
    }
    let flood_ns: u64 = String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .context("the flood's elapsed time")?;
    let (after, cpu1, t1) = daemon.settle()?;
    let r = Run {
        round,
        bin: bin_idx,
        cpu: cpu1.saturating_sub(cpu0),
        written: after.written.saturating_sub(before.written),
        lost: after.lost.saturating_sub(before.lost),
        other: after.other.saturating_sub(before.other),
        span: t1.saturating_duration_since(t0),
        flood: Duration::from_nanos(flood_ns),
        idle,
        progs,
        audit: daemon.audit_size()?,
        records: (
            after.records.saturating_sub(before.records),
            after.record_bytes.saturating_sub(before.record_bytes),
        ),
        rss_kib: tracers::hwm(daemon.child.id())?,
    };
    // Every write-open is either written or counted lost; far fewer means the flood was not
    // the tracked process (or the status fields changed meaning).
    if r.written + r.lost < events * 9 / 10 {
        bail!(
            "{} events written and {} lost for {events} write-opens: was the flood tracked?",
            r.written,
            r.lost
        );
    }
    daemon.stop()?;
    drop(work);
    Ok(r)
}

/// What the bench reads of `tether status --json`.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
struct Status {
    written: u64,
    lost: u64,
    other: u64,
    /// Records read from the rings and their bytes (absent from older daemons: 0).
    records: u64,
    record_bytes: u64,
}

/// A `tether run` of the bench, in its own temporary directory; stopped (SIGTERM, then
/// SIGKILL) when dropped, and sent SIGTERM by the kernel if this process dies first.
struct Daemon {
    bin: PathBuf,
    child: Child,
    dir: TempDir,
}

impl Daemon {
    fn start(bin: &Path) -> anyhow::Result<Daemon> {
        let dir = TempDir::new("daemon")?;
        let d = dir.path();
        let log = std::fs::File::create(d.join("daemon.log"))?;
        let mut cmd = Command::new(bin);
        cmd.arg("run")
            .arg("--socket")
            .arg(d.join("api.sock"))
            .arg("--admin-socket")
            .arg(d.join("admin.sock"))
            .arg("--ready-file")
            .arg(d.join("ready"))
            .arg("--audit")
            .arg(format!("file:{}", d.join("audit.jsonl").display()))
            .arg("--alerts")
            .arg(format!("file:{}", d.join("alerts.jsonl").display()))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log);
        for v in DAEMON_ENV {
            cmd.env_remove(v);
        }
        let child = spawn(&mut cmd, libc::SIGTERM)?;
        let mut daemon = Daemon {
            bin: bin.to_path_buf(),
            child,
            dir,
        };
        let ready = daemon.dir.path().join("ready");
        let t = Instant::now();
        while !ready.exists() {
            if let Some(status) = daemon.child.try_wait()? {
                bail!(
                    "the daemon exited ({status}) before it was ready:\n{}",
                    daemon.log_tail()
                );
            }
            if t.elapsed() > Duration::from_secs(120) {
                bail!("the daemon was not ready after 120 s:\n{}", daemon.log_tail());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(daemon)
    }

    /// Bytes and lines of the audit file so far.
    fn audit_size(&self) -> anyhow::Result<(u64, u64)> {
        let path = self.dir.path().join("audit.jsonl");
        let bytes = std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?;
        Ok((bytes.len() as u64, bytes.iter().filter(|&&b| b == b'\n').count() as u64))
    }

    fn socket(&self) -> PathBuf {
        self.dir.path().join("api.sock")
    }

    fn log_tail(&self) -> String {
        let log = std::fs::read_to_string(self.dir.path().join("daemon.log")).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }

    fn status(&self) -> anyhow::Result<Status> {
        let out = Command::new(&self.bin)
            .args(["status", "--json", "--socket"])
            .arg(self.socket())
            .env_remove("TETHER_SOCKET")
            .output()
            .context("tether status")?;
        if !out.status.success() {
            bail!("tether status failed: {}", String::from_utf8_lossy(&out.stderr));
        }
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).context("tether status --json")?;
        let written = v["events_written"]
            .as_u64()
            .context("no events_written in tether status")?;
        let counters = v["kernel_counters"]
            .as_object()
            .context("no kernel_counters in tether status")?;
        let (mut lost, mut other) = (0, 0);
        for (name, n) in counters {
            let n = n.as_u64().unwrap_or(0);
            if name.starts_with("ringbuf_full") {
                lost += n;
            } else {
                other += n;
            }
        }
        Ok(Status {
            written,
            lost,
            other,
            records: v["records_decoded"].as_u64().unwrap_or(0),
            record_bytes: v["record_bytes"].as_u64().unwrap_or(0),
        })
    }

    /// The daemon's CPU time so far: utime + stime of every thread, live or gone.
    fn cpu(&self) -> anyhow::Result<Duration> {
        let path = format!("/proc/{}/stat", self.child.id());
        let stat = std::fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
        // The fields after the command name (which may hold spaces), from field 3 (state) on.
        let rest = stat.rsplit_once(')').map(|(_, r)| r).context("/proc/PID/stat format")?;
        let f: Vec<&str> = rest.split_whitespace().collect();
        let ticks: u64 = f.get(11).and_then(|u| u.parse().ok()).context("utime")?;
        let ticks = ticks + f.get(12).and_then(|s| s.parse::<u64>().ok()).context("stime")?;
        // SAFETY: sysconf has no preconditions.
        let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
        if hz <= 0 {
            bail!("sysconf(_SC_CLK_TCK) failed");
        }
        Ok(Duration::from_nanos(ticks * 1_000_000_000 / hz as u64))
    }

    /// Polls status until it has not moved for [`QUIET`]; returns the final status with the
    /// CPU time and instant of the first poll that saw it (the quiet tail is not counted).
    fn settle(&self) -> anyhow::Result<(Status, Duration, Instant)> {
        let t = Instant::now();
        let mut last = (self.status()?, self.cpu()?, Instant::now());
        loop {
            std::thread::sleep(POLL);
            let s = self.status()?;
            if s != last.0 {
                last = (s, self.cpu()?, Instant::now());
            } else if last.2.elapsed() >= QUIET {
                return Ok(last);
            }
            if t.elapsed() > Duration::from_secs(300) {
                bail!("the daemon's status still moves after 300 s");
            }
        }
    }

    /// SIGTERM and wait: the daemon detaches its probes and exits 0.
    fn stop(mut self) -> anyhow::Result<()> {
        match self.terminate() {
            Ok(s) if s.success() => Ok(()),
            Ok(s) => bail!("the daemon exited with {s} on SIGTERM:\n{}", self.log_tail()),
            Err(stuck) => bail!("the daemon did not exit on SIGTERM: {stuck}\n{}", self.log_tail()),
        }
    }

    /// SIGTERM, then SIGKILL after [`END_GRACE`].
    fn terminate(&mut self) -> Result<std::process::ExitStatus, String> {
        end(&mut self.child, libc::SIGTERM)
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.terminate();
    }
}

/// A child started with `sig` as its parent-death signal, so a bench that dies takes it along
/// (a daemon gets SIGTERM: it detaches, so nothing stays attached).
fn spawn(cmd: &mut Command, sig: i32) -> anyhow::Result<Child> {
    // SAFETY: only prctl between fork and exec.
    unsafe {
        cmd.pre_exec(move || {
            if libc::prctl(libc::PR_SET_PDEATHSIG, sig) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    cmd.spawn().with_context(|| format!("starting {cmd:?}"))
}

/// How long a tracer has to exit once signalled.
const END_GRACE: Duration = Duration::from_secs(60);

/// Signals `child` and waits up to [`END_GRACE`] for it; its exit status, or (then it is
/// killed) where each of its threads was when the wait ran out.
fn end(child: &mut Child, sig: i32) -> Result<std::process::ExitStatus, String> {
    end_within(child, sig, END_GRACE)
}

fn end_within(child: &mut Child, sig: i32, grace: Duration) -> Result<std::process::ExitStatus, String> {
    if let Ok(Some(s)) = child.try_wait() {
        return Ok(s);
    }
    // SAFETY: kill(2) on our own child, not yet reaped.
    unsafe { libc::kill(child.id() as libc::pid_t, sig) };
    let t = Instant::now();
    while t.elapsed() < grace {
        if let Ok(Some(s)) = child.try_wait() {
            return Ok(s);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let stuck = threads_state(child.id());
    let _ = child.kill();
    let _ = child.wait();
    Err(format!(
        "still running {grace:?} after signal {sig}, killed; its threads: {stuck}"
    ))
}

/// Each thread of `pid`: its state, wait channel and kernel stack (for a process that does
/// not exit when told to).
fn threads_state(pid: u32) -> String {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return "unreadable".into();
    };
    let mut out = vec![];
    for task in tasks.flatten() {
        let dir = task.path();
        let read = |f: &str| std::fs::read_to_string(dir.join(f)).unwrap_or_default();
        let state = read("status")
            .lines()
            .find_map(|l| l.strip_prefix("State:"))
            .unwrap_or("?")
            .trim()
            .to_owned();
        let stack: Vec<String> = read("stack")
            .lines()
            .filter_map(|l| l.split_whitespace().nth(1).map(str::to_owned))
            .take(8)
            .collect();
        out.push(format!(
            "{} {} [{}] wchan {} stack {}",
            task.file_name().to_string_lossy(),
            read("comm").trim(),
            state,
            read("wchan").trim(),
            stack.join("<")
        ));
    }
    out.join("; ")
}

/// A directory under the system's temporary directory, removed with everything in it when
/// dropped. Its name carries this process's pid, so a later bench can sweep what a killed one
/// left ([`sweep_stale_dirs`]).
struct TempDir(PathBuf);

impl TempDir {
    fn new(what: &str) -> anyhow::Result<TempDir> {
        TempDir::new_in(&std::env::temp_dir(), what)
    }

    fn new_in(base: &Path, what: &str) -> anyhow::Result<TempDir> {
        static SEQ: AtomicU32 = AtomicU32::new(0);
        let path = base.join(format!(
            "{TEMP_PREFIX}{}-{}-{what}",
            std::process::id(),
            SEQ.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir(&path).with_context(|| format!("creating {}", path.display()))?;
        Ok(TempDir(path))
    }

    fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Where the flood writes: /dev/shm when it is a tmpfs (as the open loops of
/// shared/PERFORMANCE.md), so the loop measures the syscalls and the probes, not the disk (ext4
/// starts writeback at the close of every file it truncated and rewrote: auto_da_alloc);
/// otherwise the system's temporary directory.
fn flood_base() -> PathBuf {
    const TMPFS_MAGIC: i64 = 0x0102_1994;
    let shm = Path::new("/dev/shm");
    // SAFETY: a zeroed statfs is valid; the path is NUL-terminated.
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    let tmpfs = unsafe { libc::statfs(c"/dev/shm".as_ptr(), &mut st) } == 0 && st.f_type as i64 == TMPFS_MAGIC;
    if tmpfs { shm.to_path_buf() } else { std::env::temp_dir() }
}

/// Removes the temporary directories of benches that no longer run.
fn sweep_stale_dirs() {
    let mut bases = vec![std::env::temp_dir(), flood_base()];
    bases.dedup();
    for e in bases
        .iter()
        .filter_map(|b| std::fs::read_dir(b).ok())
        .flatten()
        .flatten()
    {
        let name = e.file_name().to_string_lossy().into_owned();
        let Some(pid) = name
            .strip_prefix(TEMP_PREFIX)
            .and_then(|r| r.split('-').next())
            .and_then(|p| p.parse::<u32>().ok())
        else {
            continue;
        };
        if !Path::new(&format!("/proc/{pid}")).exists() {
            eprintln!("bench: removing {} (left by a bench that is gone)", e.path().display());
            let _ = std::fs::remove_dir_all(e.path());
        }
    }
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

fn min_max(v: &[f64]) -> (f64, f64) {
    v.iter().fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), &x| {
        (lo.min(x), hi.max(x))
    })
}

/// The markdown report: the setup, the comparison (rendered by [`compare`]) where there is one,
/// then the flood's summary per binary (median, min–max over the rounds) and every run.
fn report(
    bins: &[PathBuf],
    runs: &[Run],
    events: u64,
    rounds: usize,
    load: &str,
    took: Duration,
    comparison: Option<&str>,
) -> String {
    let mut s = String::new();
    let cmd = |args: &[&str]| crate::stdout_of(Command::new(args[0]).args(&args[1..])).unwrap_or_default();
    let _ = writeln!(s, "# Tether's benchmark\n");
    let _ = writeln!(
        s,
        "`cargo xtask bench`, {}: kernel {}, {} CPUs, load average {load} before and {} after; \
         {rounds} round(s), binaries interleaved; each run a fresh `tether run` (observe, default \
         policy, audit and alerts to files) and one tracked process making {events} \
         open(O_WRONLY|O_CREAT)+close of existing files in {}. Took {:.0} s.\n",
        cmd(&["date", "-u", "+%F %H:%M UTC"]),
        cmd(&["uname", "-r"]),
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        loadavg(),
        flood_base().display(),
        took.as_secs_f64()
    );
    if let Some(c) = comparison {
        let _ = write!(s, "{c}## The flood: daemon CPU per event, sustained rate\n\n");
    }
    let _ = writeln!(
        s,
        "| tether | µs daemon CPU / event written | min–max | events written / s | events written | lost (ring full) | daemon CPU (cores) | flood opens / s | bytes / audit line | bytes / kernel record | daemon peak RSS (MiB) |"
    );
    let _ = writeln!(s, "|---|---|---|---|---|---|---|---|---|---|---|");
    for (i, bin) in bins.iter().enumerate() {
        let mine: Vec<&Run> = runs.iter().filter(|r| r.bin == i).collect();
        let col = |f: &dyn Fn(&Run) -> f64| mine.iter().map(|r| f(r)).collect::<Vec<f64>>();
        let us = col(&|r| r.us_per_event());
        let (lo, hi) = min_max(&us);
        let _ = writeln!(
            s,
            "| `{}` | {:.2} | {lo:.2}–{hi:.2} | {:.0} | {:.0} | {:.0} | {:.2} | {:.0} | {:.0} | {} | {:.1} |",
            bin.display(),
            median(us.clone()),
            median(col(&|r| r.written_per_s())),
            median(col(&|r| r.written as f64)),
            median(col(&|r| r.lost as f64)),
            median(col(&|r| r.cpu_share())),
            median(col(&|r| events as f64 / r.flood.as_secs_f64())),
            median(col(&|r| r.audit.0 as f64 / r.audit.1.max(1) as f64)),
            match median(col(&|r| r.records.1 as f64 / r.records.0.max(1) as f64)) {
                0.0 => "–".to_string(),
                b => format!("{b:.0}"),
            },
            median(col(&|r| r.rss_kib as f64 / 1024.0)),
        );
    }
    let _ = writeln!(
        s,
        "\nMedians over the rounds. CPU is the daemon's utime+stime (/proc/PID/stat, all threads) from \
         just before the flood to the first status poll that saw its last event written; events \
         written are `tether status` events_written (audit and alerts), lost the increase of its \
         `ringbuf_full:*` kernel counters; events/s and cores over that same span.\n"
    );
    prog_report(&mut s, bins, runs, events);
    let _ = writeln!(s, "## Every run, in order\n");
    let _ = writeln!(
        s,
        "| round | tether | µs CPU / event | written | lost | other kernel counters | span (s) | flood (s) | idle daemon CPU (ms/s) |"
    );
    let _ = writeln!(s, "|---|---|---|---|---|---|---|---|---|");
    for r in runs {
        let _ = writeln!(
            s,
            "| {} | `{}` | {:.2} | {} | {} | {} | {:.2} | {:.2} | {:.1} |",
            r.round + 1,
            bins[r.bin].display(),
            r.us_per_event(),
            r.written,
            r.lost,
            r.other,
            r.span.as_secs_f64(),
            r.flood.as_secs_f64(),
            r.idle * 1000.0
        );
    }
    s
}

/// One program of one binary over the rounds: calls, ns per call (rounds where it was called)
/// and total ns, one entry per round.
struct ProgRow<'a> {
    cost: &'a progs::Cost,
    calls: Vec<f64>,
    per_call: Vec<f64>,
    total: Vec<f64>,
}

/// Per binary, the daemon's BPF programs during the flood, by total time: calls, ns per call
/// (median and min–max over the rounds), and issue 19's target where it applies.
fn prog_report(s: &mut String, bins: &[PathBuf], runs: &[Run], events: u64) {
    let _ = writeln!(s, "## The daemon's BPF programs during the flood\n");
    let _ = writeln!(
        s,
        "Kernel BPF run-time stats (`BPF_ENABLE_STATS`, or `kernel.bpf_stats_enabled`=1 and back) \
         on from just before `tether exec` to the flood's exit; each program's run_time_ns and \
         run_cnt (`bpf_prog_info`) before and after, for the programs the daemon holds (its \
         fdinfo's `prog_id`). Calls are every call in that span, by any process (an untracked \
         one returns early), so ns per call is the flood's mix, not the tracked path alone; the \
         stats add two clock reads per call. Medians over the rounds. Issue 19: ≤ {:.0} ns per \
         call for sys_exit_file and the LSM file hooks (file_*, path_*, inode_*).\n",
        progs::TARGET_NS
    );
    for (i, bin) in bins.iter().enumerate() {
        let mine: Vec<&Run> = runs.iter().filter(|r| r.bin == i).collect();
        let with: Vec<&Vec<progs::Cost>> = mine.iter().filter_map(|r| r.progs.as_ref().ok()).collect();
        let _ = writeln!(
            s,
            "### `{}`: {} of {} round(s) with stats\n",
            bin.display(),
            with.len(),
            mine.len()
        );
        for r in &mine {
            if let Err(e) = &r.progs {
                let _ = writeln!(s, "Round {}: no per-program stats: {e}\n", r.round + 1);
            }
        }
        if with.is_empty() {
            continue;
        }
        let mut rows: BTreeMap<&str, ProgRow> = BTreeMap::new();
        for costs in &with {
            for c in costs.iter() {
                let row = rows.entry(&c.name).or_insert_with(|| ProgRow {
                    cost: c,
                    calls: vec![],
                    per_call: vec![],
                    total: vec![],
                });
                row.calls.push(c.calls as f64);
                row.per_call.extend(c.ns_per_call());
                row.total.push(c.ns as f64);
            }
        }
        let totals: Vec<f64> = with.iter().map(|cs| cs.iter().map(|c| c.ns as f64).sum()).collect();
        let (idle, mut called): (Vec<_>, Vec<_>) = rows.into_iter().partition(|(_, r)| r.per_call.is_empty());
        called.sort_by(|a, b| median(b.1.total.clone()).total_cmp(&median(a.1.total.clone())));
        let _ = writeln!(
            s,
            "| program | type | calls / flood | ns / call | min–max | ms / flood | share | ≤ {:.0} ns (issue 19) |",
            progs::TARGET_NS
        );
        let _ = writeln!(s, "|---|---|---|---|---|---|---|---|");
        let mut over = Vec::new();
        let mut met = 0;
        for (name, row) in &called {
            let ns = median(row.per_call.clone());
            let (lo, hi) = min_max(&row.per_call);
            let target = if !progs::has_target(row.cost) {
                ""
            } else if ns <= progs::TARGET_NS {
                met += 1;
                "met"
            } else {
                over.push(format!("{name} ({ns:.0} ns)"));
                "**over**"
            };
            let _ = writeln!(
                s,
                "| {name} | {} | {:.0} | {ns:.0} | {lo:.0}–{hi:.0} | {:.2} | {:.0}% | {target} |",
                row.cost.kind,
                median(row.calls.clone()),
                median(row.total.clone()) / 1e6,
                100.0 * median(row.total.clone()) / median(totals.clone()).max(1.0),
            );
        }
        let _ = writeln!(
            s,
            "\nAll programs: {:.1} ms per flood, {:.0} ns per write-open. Issue 19 target: met by {met}, over: {}.",
            median(totals.clone()) / 1e6,
            median(totals) / events as f64,
            if over.is_empty() {
                "none".to_string()
            } else {
                over.join(", ")
            }
        );
        // Calls the kernel ran no program for (its recursion guard: the program was already
        // running on that CPU): calls nobody judged.
        let mut skipped: BTreeMap<&str, u64> = BTreeMap::new();
        let mut uncounted = false;
        for c in with.iter().flat_map(|cs| cs.iter()) {
            match c.skipped {
                Some(n) if n > 0 => *skipped.entry(&c.name).or_default() += n,
                Some(_) => {}
                None => uncounted = true,
            }
        }
        let _ = if uncounted {
            writeln!(
                s,
                "Calls the kernel skipped (`recursion_misses`): not counted by this kernel (5.12+)."
            )
        } else if skipped.is_empty() {
            writeln!(
                s,
                "Calls the kernel skipped (`recursion_misses`, its recursion guard): none, in every round."
            )
        } else {
            let list: Vec<String> = skipped.iter().map(|(n, k)| format!("{n} {k}")).collect();
            writeln!(
                s,
                "**Calls the kernel skipped** (`recursion_misses`, its recursion guard: nobody judged them), all rounds: {}.",
                list.join(", ")
            )
        };
        let lsm_file_hook = |r: &ProgRow| progs::has_target(r.cost) && r.cost.name != "sys_exit_file";
        if !called.iter().chain(&idle).any(|(_, r)| lsm_file_hook(r)) {
            let _ = writeln!(
                s,
                "No LSM file hook among the daemon's programs (neither BPF LSM nor fmod_ret in effect: \
                 `tether status`), so only sys_exit_file is measured against the target."
            );
        }
        if !idle.is_empty() {
            let names: Vec<&str> = idle.iter().map(|(n, _)| *n).collect();
            let _ = writeln!(s, "Not called during the flood: {}.", names.join(", "));
        }
        let _ = writeln!(s);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn medians_and_spreads() {
        assert_eq!(median(vec![3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(vec![4.0, 1.0, 2.0, 3.0]), 2.5);
        assert_eq!(min_max(&[2.0, 5.0, 1.0]), (1.0, 5.0));
    }

    #[test]
    fn a_process_that_ignores_its_signal_is_killed_and_described() {
        let mut child = Command::new("sleep").arg("600").spawn().unwrap();
        // SIGCONT's default is to go on: the child does not exit on it.
        let t = Instant::now();
        let stuck = end_within(&mut child, libc::SIGCONT, Duration::from_millis(200)).unwrap_err();
        assert!(t.elapsed() < Duration::from_secs(10));
        assert!(stuck.contains("sleep ["), "{stuck}");
        assert!(child.try_wait().unwrap().is_some(), "killed and reaped");
    }

    fn run(round: usize, progs: Result<Vec<progs::Cost>, String>) -> Run {
        Run {
            round,
            bin: 0,
            cpu: Duration::from_secs(1),
            written: 1000,
            lost: 0,
            other: 0,
            span: Duration::from_secs(1),
            flood: Duration::from_secs(1),
            idle: 0.0,
            progs,
            audit: (2_000_000, 1000),
            records: (1000, 100_000),
            rss_kib: 1024,
        }
    }

    fn cost(name: &str, kind: &'static str, calls: u64, ns: u64) -> progs::Cost {
        progs::Cost {
            name: name.into(),
            kind,
            calls,
            ns,
            skipped: Some(calls / 1000),
        }
    }

    #[test]
    fn the_program_table_sorts_by_total_time_and_marks_the_target() {
        let runs = [
            run(
                0,
                Ok(vec![
                    cost("file_open", "lsm", 1000, 300_000),
                    cost("sys_exit_file", "tracepoint", 1000, 1_700_000),
                    cost("sys_enter_file", "tracepoint", 1000, 170_000),
                    cost("bind4", "cgroup_sock_addr", 0, 0),
                ]),
            ),
            run(1, Err("the kernel said no".into())),
        ];
        let mut s = String::new();
        prog_report(&mut s, &[PathBuf::from("tether")], &runs, 1000);
        let rows: Vec<&str> = s
            .lines()
            .filter(|l| l.starts_with("| ") && !l.starts_with("| program"))
            .collect();
        assert_eq!(rows.len(), 3, "{s}");
        assert!(
            rows[0].starts_with("| sys_exit_file | tracepoint | 1000 | 1700 |"),
            "{s}"
        );
        assert!(rows[0].ends_with("| **over** |"), "{s}");
        assert!(
            rows[1].starts_with("| file_open |") && rows[1].ends_with("| met |"),
            "{s}"
        );
        assert!(
            rows[2].starts_with("| sys_enter_file |") && rows[2].ends_with("|  |"),
            "{s}"
        );
        assert!(s.contains("1 of 2 round(s) with stats"), "{s}");
        assert!(s.contains("Round 2: no per-program stats: the kernel said no"), "{s}");
        assert!(s.contains("over: sys_exit_file (1700 ns)"), "{s}");
        assert!(s.contains("Not called during the flood: bind4."), "{s}");
        assert!(!s.contains("No LSM file hook"), "{s}");
        // One skip in each program called 1000 times (the helper's stand-in count).
        assert!(
            s.contains("**Calls the kernel skipped** (`recursion_misses`, its recursion guard: nobody judged them), all rounds: file_open 1, sys_enter_file 1, sys_exit_file 1."),
            "{s}"
        );
        let mut s = String::new();
        let none_skipped = progs::Cost {
            skipped: Some(0),
            ..cost("sys_exit_file", "tracepoint", 1000, 400_000)
        };
        let runs = [run(0, Ok(vec![none_skipped]))];
        prog_report(&mut s, &[PathBuf::from("tether")], &runs, 1000);
        assert!(s.contains("met by 1, over: none"), "{s}");
        assert!(
            s.contains("`recursion_misses`, its recursion guard): none, in every round."),
            "{s}"
        );
        assert!(s.contains("No LSM file hook"), "{s}");
    }
}
