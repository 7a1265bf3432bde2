//! `tether run`: load the probes, adopt running agents, then one event loop that owns the
//! process table, the kernel maps and the sinks, and serves API calls.
use std::{
    path::PathBuf,
    time::{Duration, Instant},
};

use agent_common::{Tracked, counter, track_reason};
use anyhow::Context as _;
use nix::time::{ClockId, clock_gettime};
use tokio::{
    signal::unix::{SignalKind, signal},
    sync::mpsc,
};
use tracing::{error, info, warn};

use crate::{
    api::{self, Call, Reply, Request},
    events::{self, Event},
    lineage::{ProcessTable, Reason, ticks_to_ns},
    loader::{self, CompiledSelectors, Probes},
    ocsf, paths, policy,
    procscan::{self, Procfs},
    sinks::Sinks,
};

/// How often the ring buffer is drained (producers do not wake the reader per record).
const DRAIN_EVERY: Duration = Duration::from_millis(20);
/// How often the kernel loss counters are checked.
const COUNTERS_EVERY: Duration = Duration::from_secs(5);

#[derive(Debug, Clone)]
pub struct RunOptions {
    pub policies: Vec<PathBuf>,
    pub audit_log: Option<PathBuf>,
    pub stdout: bool,
    pub socket: PathBuf,
    pub ready_file: Option<PathBuf>,
}

fn now_ns(clock: ClockId) -> i128 {
    clock_gettime(clock)
        .map(|t| t.tv_sec() as i128 * 1_000_000_000 + t.tv_nsec() as i128)
        .unwrap_or(0)
}

fn context(ticks_per_sec: u64) -> ocsf::Context {
    let boot_id = std::fs::read_to_string("/proc/sys/kernel/random/boot_id").unwrap_or_default();
    let hostname = nix::unistd::gethostname()
        .map(|h| h.to_string_lossy().into_owned())
        .unwrap_or_default();
    let realtime = now_ns(ClockId::CLOCK_REALTIME);
    ocsf::Context {
        hostname,
        boot_epoch_ns: realtime - now_ns(ClockId::CLOCK_BOOTTIME),
        ticks_per_sec,
        uid_prefix: format!(
            "{}-{}",
            boot_id.trim().split('-').next().unwrap_or("host"),
            realtime / 1_000_000
        ),
    }
}

struct Daemon {
    probes: Probes,
    table: ProcessTable,
    sinks: Sinks,
    ctx: ocsf::Context,
    /// Records decoded, and records that could not be (never dropped silently: logged).
    decoded: u64,
    decode_errors: u64,
    seq: u64,
    last_counters: [u64; counter::COUNT as usize],
    ticks_per_sec: u64,
    started: Instant,
}

impl Daemon {
    /// Puts a live process into the kernel's tracked map and the table.
    fn track(&mut self, pid: u32, reason: Reason, root: Option<u32>) -> Result<(), String> {
        if pid == std::process::id() {
            return Err("the daemon never tracks itself".into());
        }
        let snap =
            crate::lineage::ProcSource::snapshot(&Procfs, pid).ok_or_else(|| format!("process {pid} is gone"))?;
        let root_key = root.and_then(|r| self.table.live_key(r));
        let start_ns = ticks_to_ns(snap.start, self.ticks_per_sec);
        let kernel_reason = match reason {
            Reason::Registered => track_reason::REGISTERED,
            Reason::Adopted => track_reason::ADOPTED,
            Reason::Selected => track_reason::SELECTED,
            Reason::Inherited => track_reason::INHERITED,
        };
        let entry = Tracked {
            start_ns,
            root_tgid: root.unwrap_or(pid),
            reason: kernel_reason,
            task: agent_common::NO_TASK,
            _pad: 0,
            expires_ns: 0,
        };
        self.probes
            .tracked
            .insert(pid, entry, 0)
            .map_err(|e| format!("tracked map: {e}"))?;
        self.table.insert_snapshot(&snap, reason, root_key);
        Ok(())
    }

    fn call(&mut self, call: Call) {
        let reply = match call.request {
            Request::Register {} => match self.track(call.pid, Reason::Registered, None) {
                Ok(()) => {
                    info!(pid = call.pid, uid = call.uid, "registered by tether exec");
                    Reply {
                        ok: true,
                        pid: Some(call.pid),
                        error: None,
                        status: None,
                    }
                }
                Err(e) => Reply::error(e),
            },
            Request::Status {} => Reply {
                ok: true,
                pid: None,
                error: None,
                status: Some(self.status()),
            },
        };
        let _ = call.reply.send(reply);
    }

    /// The status report: what the kernel allows and what is in effect, and the loss counters.
    fn status(&self) -> serde_json::Value {
        let counters: serde_json::Map<String, serde_json::Value> = counter::NAMES
            .iter()
            .zip(self.probes.counters())
            .map(|(n, v)| (n.to_string(), v.into()))
            .collect();
        serde_json::json!({
            "mode": "observe",
            "pid": std::process::id(),
            "uptime_s": self.started.elapsed().as_secs(),
            "kernel": self.probes.report.kernel,
            "features": self.probes.report.features,
            "hooks": self.probes.report.hooks,
            "degraded": self.probes.report.degraded,
            "missing_tracepoints": self.probes.report.missing_tracepoints,
            "programs": self.probes.attached.programs,
            "tracked_processes": self.table.len(),
            "events_written": self.sinks.written,
            "decode_errors": self.decode_errors,
            "kernel_counters": counters,
        })
    }

    /// Adopts running processes that match the selectors, with their descendants.
    fn adopt(&mut self, selectors: &CompiledSelectors) {
        // Twice: a child forked by an adopted process between the scan and its insertion is
        // caught by the second pass (after insertion the kernel tracks new children itself).
        for _ in 0..2 {
            let running = procscan::running();
            let pids = procscan::select_for_adoption(&running, &selectors.comm, &selectors.exe, std::process::id());
            let ppid_of: std::collections::HashMap<u32, u32> = running.iter().map(|r| (r.pid, r.ppid)).collect();
            for pid in pids {
                if self.table.live_key(pid).is_some() {
                    continue;
                }
                // The root of an adopted tree is its topmost adopted ancestor.
                let mut root = pid;
                while let Some(pp) = ppid_of.get(&root) {
                    if self.table.live_key(*pp).is_some() {
                        root = *pp;
                    } else {
                        break;
                    }
                }
                let root = (root != pid).then_some(root);
                match self.track(pid, Reason::Adopted, root) {
                    Ok(()) => info!(pid, "adopted running agent process"),
                    Err(e) => warn!(pid, "could not adopt: {e}"),
                }
            }
        }
    }

    fn drain(&mut self) -> anyhow::Result<()> {
        let mut records = Vec::new();
        while let Some(item) = self.probes.events.next() {
            records.push(events::decode(&item));
        }
        for r in records {
            match r {
                Ok(ev) => {
                    self.decoded += 1;
                    self.handle(ev)?;
                }
                Err(e) => {
                    self.decode_errors += 1;
                    let n = self.decode_errors;
                    error!(decode_errors = n, "undecodable ring buffer record: {e}");
                }
            }
        }
        self.sinks.flush()?;
        Ok(())
    }

    fn handle(&mut self, mut ev: Event) -> anyhow::Result<()> {
        if ev.actor().tgid == std::process::id() {
            return Ok(()); // never watch or judge ourselves
        }
        let before = self.table.get(&self.table.key_of(ev.actor())).cloned();
        let key = self.table.apply(&ev, &Procfs);
        if let Event::File { path, path2, .. } = &mut ev {
            paths::resolve(path);
            if let Some(p2) = path2 {
                paths::resolve(p2);
            }
        }
        let Some(after) = self.table.get(&key).cloned() else {
            return Ok(());
        };
        let actor = before.unwrap_or_else(|| after.clone());
        self.seq += 1;
        if let Some(v) = ocsf::audit(&self.ctx, self.seq, &ev, &actor, &after, &self.table) {
            self.sinks.line(&v.to_string())?;
        }
        Ok(())
    }

    fn check_counters(&mut self) {
        let now = self.probes.counters();
        for (i, (&n, &before)) in now.iter().zip(self.last_counters.iter()).enumerate() {
            if n > before {
                warn!(
                    counter = counter::NAMES[i],
                    total = n,
                    new = n - before,
                    "kernel-side loss or error"
                );
            }
        }
        self.last_counters = now;
    }
}

pub async fn run(opts: RunOptions) -> anyhow::Result<()> {
    let started = Instant::now();
    let selectors = policy::load(&opts.policies)?;
    info!(comm = ?selectors.comm, exe = ?selectors.exe, "agent selectors");
    let sinks = Sinks::new(opts.stdout, opts.audit_log.as_deref())?;
    let selectors = loader::compile_selectors(&selectors)?;
    let probes = loader::load(&selectors)?;
    info!(programs = ?probes.attached.programs, cgroup = %probes.attached.cgroup_root.display(), "probes attached");
    for line in probes.report.lines() {
        if line.starts_with("DEGRADED") || line.starts_with("coverage") {
            warn!("{line}");
        } else {
            info!("{line}");
        }
    }
    let ticks_per_sec = procfs::ticks_per_second();
    let mut d = Daemon {
        probes,
        table: ProcessTable::new(ticks_per_sec),
        sinks,
        ctx: context(ticks_per_sec),
        decoded: 0,
        decode_errors: 0,
        seq: 0,
        last_counters: [0; counter::COUNT as usize],
        ticks_per_sec,
        started,
    };
    d.adopt(&selectors);

    let listener = api::bind(&opts.socket)?;
    let (calls_tx, mut calls) = mpsc::channel::<Call>(64);
    tokio::spawn(api::serve(listener, calls_tx));

    if let Some(ready) = &opts.ready_file {
        std::fs::write(ready, format!("{}\n", std::process::id()))
            .with_context(|| format!("writing {}", ready.display()))?;
    }
    info!(socket = %opts.socket.display(), startup_ms = started.elapsed().as_millis() as u64, "tether ready (observe-only)");

    let mut sigint = signal(SignalKind::interrupt())?;
    let mut sigterm = signal(SignalKind::terminate())?;
    let mut drain = tokio::time::interval(DRAIN_EVERY);
    let mut counters = tokio::time::interval(COUNTERS_EVERY);
    loop {
        tokio::select! {
            _ = drain.tick() => d.drain()?,
            _ = counters.tick() => d.check_counters(),
            Some(call) = calls.recv() => d.call(call),
            _ = sigint.recv() => break,
            _ = sigterm.recv() => break,
        }
    }
    d.drain()?;
    d.check_counters();
    let _ = std::fs::remove_file(&opts.socket);
    info!(
        events = d.sinks.written,
        decoded = d.decoded,
        decode_errors = d.decode_errors,
        kernel_counters = ?d.probes.counters(),
        "stopping; all probes detached"
    );
    Ok(())
}
