//! `tether run`: load the probes, adopt running agents, then one event loop that owns the
//! process table, the kernel maps and the sinks, and serves API calls.
mod backlog;
mod calls;
mod emitter;
mod kernel;
mod pods;
mod rulebook;
mod sandboxes;
mod stages;
mod takeover;
mod tasks;
mod tracking;
mod upkeep;

use std::{
    path::PathBuf,
    sync::{Arc, RwLock},
    time::{Duration, Instant},
};

use anyhow::Context as _;
use nix::time::{ClockId, clock_gettime};
use serde_json::json;
use tokio::{
    signal::unix::{SignalKind, signal},
    sync::mpsc,
};
use tracing::{error, info, warn};

use crate::{
    api::{self, ApiState, Call},
    credentials::{self, trust::Trust},
    delivery::{Delivery, DeliveryArgs, fold::Folder},
    loader::{self},
    ocsf::{self},
    policy::{
        self,
        engine::{self, Rules},
    },
};

/// How often the ring buffer is drained (producers do not wake the reader per record).
const DRAIN_EVERY: Duration = Duration::from_millis(20);
/// The environment variable a selected agent may carry its task credential in.
pub const TOKEN_ENV: &str = "TETHER_TASK_TOKEN";
/// How often JWKS URLs and scope host names are refreshed.
const REFRESH_EVERY: Duration = Duration::from_secs(300);
/// How often the kernel loss counters are checked.
const COUNTERS_EVERY: Duration = Duration::from_secs(5);
/// How often the rule files are read for changes (a ConfigMap update, an edit): a change
/// reloads them as SIGHUP does.
const RULES_POLL_EVERY: Duration = Duration::from_secs(10);

#[derive(Debug, Clone)]
pub struct RunOptions {
    pub policies: Vec<PathBuf>,
    /// Where the audit and alert streams go.
    pub delivery: DeliveryArgs,
    /// Use the BPF LSM path hooks (where BPF LSM is in effect).
    pub lsm_path_hooks: bool,
    pub socket: PathBuf,
    pub admin_socket: PathBuf,
    /// Who may call the admin socket (empty: every untracked caller that can open it).
    pub admins: api::Admins,
    pub ready_file: Option<PathBuf>,
    /// Trusted issuers from the command line (added to the policy files' `trust`).
    pub trust: Vec<Trust>,
    /// CA bundle for JWKS URLs (default: the web PKI roots).
    pub ca_bundle: Option<PathBuf>,
    /// Longest delegation chain (principal excluded).
    pub max_chain: usize,
    /// Where to serve Prometheus metrics and health.
    pub metrics: Option<std::net::SocketAddr>,
    /// Node name and the Kubernetes API for pod identity.
    pub kube: crate::pods::KubeArgs,
    /// Keep the kernel side across restarts (None: everything goes with the process).
    pub persist: Option<crate::persist::Persist>,
}

fn now_ns(clock: ClockId) -> i128 {
    clock_gettime(clock)
        .map(|t| t.tv_sec() as i128 * 1_000_000_000 + t.tv_nsec() as i128)
        .unwrap_or(0)
}

fn context(ticks_per_sec: u64, hostname: String, fmod_ret: bool) -> ocsf::Context {
    let boot_id = std::fs::read_to_string("/proc/sys/kernel/random/boot_id").unwrap_or_default();
    let boot = boot_id.trim().split('-').next().unwrap_or("host").to_string();
    let realtime = now_ns(ClockId::CLOCK_REALTIME);
    ocsf::Context {
        hostname,
        boot_epoch_ns: realtime - now_ns(ClockId::CLOCK_BOOTTIME),
        ticks_per_sec,
        fmod_ret,
        uid_prefix: format!("{boot}-{}", realtime / 1_000_000),
        boot,
    }
}

/// The one event loop's state: the components, each owning its state and reached through
/// its methods only, and what they share (the records' context, the metrics).
struct Daemon {
    /// The loaded programs, their maps, the generation, the loss counters, integrity.
    kernel: kernel::Kernel,
    /// The process table and the agent selectors.
    tracking: tracking::Tracking,
    /// The task table, the trusted issuers' keys, scope host-name resolution.
    tasks: tasks::TaskBook,
    /// The layers each `tether exec` tree reported.
    sandboxes: sandboxes::Sandboxes,
    /// The rule files and the rules compiled from them (reloads, the runtime mode).
    rulebook: rulebook::Rulebook,
    /// Pod identity, the pod selectors' cgroups, the guardrails with `pods:`.
    pods: pods::Pods,
    /// Sequence numbers, folding and the sinks.
    emitter: emitter::Emitter,
    ctx: ocsf::Context,
    metrics: crate::metrics::Metrics,
    started: Instant,
    /// The daemon's own pid (read once: `getpid` is a system call, and every event is checked
    /// against it).
    pid: u32,
    /// Records decoded.
    decoded: u64,
    /// Bytes of the records read from the rings (their size on the wire, header included).
    record_bytes: u64,
    /// Records in the last drain (the next one's first allocation).
    batch: usize,
    /// Records read and held back to the next drain (kernel order across rings).
    backlog: backlog::Backlog,
    /// `--persist`: the pins and state file, and what the take-over did (None: off).
    persist: Option<takeover::PersistView>,
}

/// What the built-in guardrail keeps agents off: the rule files, the state, pin and spool
/// directories, the file sinks (and their rotations), the sockets, the ready file and the
/// daemon's executable (each also by the path it resolves to); connects: the admin socket.
fn tether_files(opts: &RunOptions) -> engine::TetherFiles {
    let mut write: Vec<String> = Vec::new();
    let mut file = |p: &std::path::Path, tree: bool| {
        for q in [Some(p.to_path_buf()), std::fs::canonicalize(p).ok()]
            .into_iter()
            .flatten()
        {
            let mut text = q.display().to_string();
            if tree && !text.ends_with('/') {
                text.push('/');
            }
            if q.is_absolute() && !write.contains(&text) {
                write.push(text);
            }
        }
    };
    for p in &opts.policies {
        file(p, false);
    }
    if let Some(p) = &opts.persist {
        file(&p.state_dir, true);
        file(&p.pin_dir, true);
    }
    file(&opts.delivery.spool_dir, true);
    for s in opts.delivery.audit.iter().chain(&opts.delivery.alerts) {
        if let crate::delivery::SinkSpec::File(p) = s {
            file(p, false);
            file(std::path::Path::new(&format!("{}.*", p.display())), false);
        }
    }
    for p in [&opts.socket, &opts.admin_socket] {
        file(p, false);
    }
    if let Some(r) = &opts.ready_file {
        file(r, false);
    }
    if let Ok(exe) = std::env::current_exe() {
        file(&exe, false);
    }
    let mut sockets = vec![opts.admin_socket.display().to_string()];
    if let Ok(c) = std::fs::canonicalize(&opts.admin_socket) {
        let c = c.display().to_string();
        if !sockets.contains(&c) {
            sockets.push(c);
        }
    }
    engine::TetherFiles { write, sockets }
}

/// Raises the soft limit of open descriptors to the hard one: kills and pidfds must never
/// fail for want of a descriptor, whatever the API connections and rings hold (the API caps
/// its connections, so the rest stays free).
fn raise_fd_limit() {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    match getrlimit(Resource::RLIMIT_NOFILE) {
        Ok((soft, hard)) if soft < hard => match setrlimit(Resource::RLIMIT_NOFILE, hard, hard) {
            Ok(()) => info!(from = soft, to = hard, "open-descriptor limit raised"),
            Err(e) => warn!("raising the open-descriptor limit from {soft} to {hard}: {e}"),
        },
        Ok(_) => {}
        Err(e) => warn!("reading the open-descriptor limit: {e}"),
    }
}

pub async fn run(opts: RunOptions) -> anyhow::Result<()> {
    let started = Instant::now();
    raise_fd_limit();
    let policy = policy::load_policy(&opts.policies)?;
    let (selectors, policy_trust, containment) = (policy.selectors, policy.trust, policy.containment);
    let scopes = Arc::new(policy.scopes);
    let lists = policy.revocations;
    let workload = policy.workload;
    // The rules, with the built-in guardrail over Tether's own files.
    let rulebook = rulebook::Rulebook::new(containment, opts.policies.clone(), tether_files(&opts))
        .map_err(|e| anyhow::anyhow!("rules: {e}"))?;
    let rules = rulebook.rules();
    info!(mode = rules.mode.as_str(), guardrails = ?rules.guardrail_ids(), "containment rules");
    for s in &selectors {
        info!(id = %s.id, exe = ?s.exe, comm = ?s.comm, uid = ?s.uid, cgroup = ?s.cgroup, "agent selector");
    }
    let (node, kube) = opts.kube.resolve()?;
    if kube.is_none()
        && let Some(s) = selectors.iter().find(|s| s.by_pod())
    {
        anyhow::bail!(
            "agent selector {:?} selects by namespace or pod_labels, but pod identity is off (not in a cluster: give --kube-api, --kube-ca and --kube-token-file)",
            s.id
        );
    }
    if kube.is_none()
        && workload
            .as_ref()
            .is_some_and(|w| w.must_match != credentials::workload::MustMatch::Off)
    {
        anyhow::bail!(
            "workload_identity.actor_must_match checks the pod's service account, but pod identity is off (not in a cluster: give --kube-api, --kube-ca and --kube-token-file)"
        );
    }
    if kube.is_none()
        && let Some(id) = pod_guardrail(rules)
    {
        anyhow::bail!(
            "guardrail {id:?} holds only in some pods (`pods:`), but pod identity is off (not in a cluster: give --kube-api, --kube-ca and --kube-token-file)"
        );
    }
    let metrics = crate::metrics::Metrics::new();
    let (out, webhook) = Delivery::open(&opts.delivery, metrics.clone())?;
    let selectors = loader::compile_selectors(&selectors)?;
    // --persist: one daemon per state directory; what the previous one left.
    let persisted = match &opts.persist {
        Some(p) => {
            std::fs::create_dir_all(&p.state_dir).with_context(|| format!("creating {}", p.state_dir.display()))?;
            let lock = p.lock()?;
            let saved = p.load_state()?;
            Some((p.clone(), lock, saved))
        }
        None => None,
    };
    let generation = now_ns(ClockId::CLOCK_REALTIME).max(1) as u64;
    let probes = loader::load(
        &selectors,
        rules,
        opts.lsm_path_hooks,
        opts.persist.as_ref(),
        generation,
    )?;
    if let Some(k) = &probes.kept {
        info!(
            generation,
            pinned = k.pinned.len(),
            adopted_maps = k.adopted_maps,
            "persist: links pinned, state maps shared"
        );
        for n in &k.not_pinned {
            warn!("persist: not kept across a restart: {n}");
        }
    }
    info!(programs = ?probes.attached.programs, cgroup = %probes.attached.cgroup_root.display(), "probes attached");
    for line in probes.report.lines() {
        if line.starts_with("DEGRADED") || line.starts_with("coverage") {
            warn!("{line}");
        } else {
            info!("{line}");
        }
    }
    // Trusted issuers: keys loaded now (a failure is kept per issuer and reported, not fatal).
    let _ = rustls::crypto::ring::default_provider().install_default();
    let mut trust = policy_trust;
    trust.extend(opts.trust.iter().cloned());
    credentials::trust::check_unique(&trust).map_err(|e| anyhow::anyhow!("--trust and the rule files: {e}"))?;
    let client = credentials::trust::https_client(opts.ca_bundle.as_deref()).map_err(|e| anyhow::anyhow!(e))?;
    let keys = credentials::trust::load_all(&trust, &client).await;
    for t in &trust {
        match keys.by_issuer.get(&t.issuer) {
            Some(Ok(set)) => {
                info!(issuer = %t.issuer, keys = set.jwks.keys.len(), "trusted issuer");
                for d in &set.dropped {
                    warn!(issuer = %t.issuer, "key left out: {d}");
                }
            }
            Some(Err(e)) => warn!(issuer = %t.issuer, "trusted issuer has no usable keys yet: {e}"),
            None => {}
        }
    }
    let keys = Arc::new(RwLock::new(keys));
    let (resolved_tx, mut resolved_rx) = mpsc::unbounded_channel();
    let ticks_per_sec = procfs::ticks_per_second();
    let cgroup_root = loader::cgroup2_root()?;
    let fmod_ret = probes.report.features.fmod_ret.available;
    let ctx = context(ticks_per_sec, node.clone(), fmod_ret);
    let mut d = Daemon {
        kernel: kernel::Kernel::new(probes, generation),
        pods: pods::Pods::new(node, &selectors, rules, cgroup_root),
        tracking: tracking::Tracking::new(selectors, ticks_per_sec),
        tasks: tasks::TaskBook::new(
            keys.clone(),
            scopes.clone(),
            trust.clone(),
            lists,
            workload.clone(),
            opts.max_chain,
            resolved_tx,
        ),
        sandboxes: Default::default(),
        rulebook,
        emitter: emitter::Emitter::new(
            out,
            Folder::new(opts.delivery.fold_window),
            opts.delivery.record_form,
            ctx.clone(),
            metrics.clone(),
        ),
        ctx,
        metrics,
        started,
        pid: std::process::id(),
        decoded: 0,
        record_bytes: 0,
        batch: 0,
        backlog: backlog::Backlog::default(),
        persist: None,
    };
    if let Some((dirs, lock, saved)) = persisted {
        d.persist = Some(takeover::PersistView {
            dirs,
            _lock: lock,
            took_over: json!(null),
            saved: None,
        });
        d.take_over(saved);
    }
    d.adopt(|d, c| d.selected(c));
    // The node's pods: listed, then watched, by a worker of their own.
    let (pod_tx, mut pod_rx) = mpsc::channel(1024);
    if let Some(cfg) = kube {
        let client = crate::pods::kube::client(&cfg)?;
        let cache = crate::pods::kube::SharedPods::default();
        let stats = Arc::new(crate::pods::kube::KubeStats::default());
        info!(server = %cfg.server, node = %cfg.node, "watching this node's pods");
        d.pods.watch(pods::KubeView {
            server: cfg.server.clone(),
            pods: cache.clone(),
            stats: stats.clone(),
        });
        tokio::spawn(
            crate::pods::kube::Watcher {
                cfg,
                client,
                cache,
                changes: Some(pod_tx),
                stats,
                min_backoff: Duration::from_millis(500),
            }
            .run(),
        );
    } else {
        drop(pod_tx);
    }
    if let Some(worker) = webhook {
        tokio::spawn(worker);
    }

    let (calls_tx, mut calls) = mpsc::channel::<Call>(64);
    let state = ApiState {
        calls: calls_tx,
        keys: keys.clone(),
        scopes,
        max_chain: opts.max_chain,
        admins: opts.admins.clone(),
    };
    let view = d.kernel.tracked_view();
    let tree_of: api::TreeOf = Arc::new(move |pid| {
        let view = view.lock().ok()?;
        view.as_ref()?.get(&pid, 0).ok().map(|t| t.root_tgid)
    });
    tokio::spawn(api::serve(
        api::bind(&opts.socket, 0o666)?,
        api::router(state.clone(), false),
        tree_of.clone(),
    ));
    let admin = api::bind(&opts.admin_socket, 0o600)?;
    if let Some(&gid) = opts.admins.gids.first() {
        use std::os::unix::fs::PermissionsExt;
        std::os::unix::fs::chown(&opts.admin_socket, Some(0), Some(gid))
            .and_then(|()| std::fs::set_permissions(&opts.admin_socket, std::fs::Permissions::from_mode(0o660)))
            .with_context(|| format!("giving {} to group {gid}", opts.admin_socket.display()))?;
    }
    tokio::spawn(api::serve(admin, api::router(state, true), tree_of));
    // Keys fetched over HTTPS are refreshed (a trust bundle when its hint says); the last
    // good keys stay when a refresh fails.
    // Revocation lists: each read now and every interval after, on a worker; the loop applies.
    let (listed_tx, mut listed_rx) = mpsc::unbounded_channel();
    for (i, cfg) in d.tasks.list_configs().into_iter().enumerate() {
        info!(list = %cfg.source.describe(), every_s = cfg.every.as_secs(), "revocation list");
        tokio::spawn(credentials::revocations::watch(
            i,
            cfg,
            client.clone(),
            listed_tx.clone(),
        ));
    }
    drop(listed_tx);
    if trust.iter().any(|t| t.source.remote()) {
        tokio::spawn(credentials::trust::refresh(
            trust.clone(),
            client,
            keys.clone(),
            |iss, e| warn!("keys of issuer {iss}: refresh failed (keeping the last good keys): {e}"),
        ));
    }

    d.metrics.set_mechanisms(&d.kernel.report().hooks);
    if let Some(addr) = opts.metrics {
        let bound = crate::metrics::serve(addr, d.metrics.clone())
            .await
            .with_context(|| format!("serving metrics on {addr}"))?;
        info!(addr = %bound, "metrics at /metrics, health at /healthz and /readyz");
    }
    d.metrics.set_ready();
    if let Some(ready) = &opts.ready_file {
        std::fs::write(ready, format!("{}\n", std::process::id()))
            .with_context(|| format!("writing {}", ready.display()))?;
    }
    info!(socket = %opts.socket.display(), admin_socket = %opts.admin_socket.display(), startup_ms = started.elapsed().as_millis() as u64, mode = d.rulebook.rules().mode.as_str(), "tether ready");
    for h in &d.kernel.report().hooks {
        info!(hook = h.hook, mechanism = %h.mechanism, enforcement = %h.enforcement, "enforcement mechanism");
    }

    let mut sigint = signal(SignalKind::interrupt())?;
    let mut sigterm = signal(SignalKind::terminate())?;
    let mut sighup = signal(SignalKind::hangup())?;
    let mut drain = tokio::time::interval(DRAIN_EVERY);
    // A ring past its fill watermark wakes the daemon at once (below it, the timer drains).
    let wake = RingWake::new(d.kernel.rings())?;
    let mut counters = tokio::time::interval(COUNTERS_EVERY);
    let mut refresh = tokio::time::interval(REFRESH_EVERY);
    refresh.tick().await;
    let mut fold = tokio::time::interval(Duration::from_secs(1));
    let mut rules_poll = tokio::time::interval(RULES_POLL_EVERY);
    let mut pod_retry = tokio::time::interval(Duration::from_millis(250));
    let mut integrity = tokio::time::interval(kernel::CHECK_EVERY);
    // A drain that left records (a ring past its budget) goes on at the next turn of the
    // loop, after whatever else is ready (API calls, revocations, timers, signals): the
    // yield hands the task back to the runtime first (an always-ready branch never would,
    // and tokio's budget would then starve every other branch).
    let mut again = false;
    loop {
        tokio::select! {
            _ = drain.tick() => again = d.drain(),
            _ = wake.any() => again = d.drain(),
            _ = go_on(), if again => again = d.drain(),
            _ = fold.tick() => d.emitter.fold_tick(false),
            _ = counters.tick() => d.check_counters(),
            _ = integrity.tick() => d.check_integrity(),
            _ = refresh.tick() => d.refresh_tasks(),
            Some(call) = calls.recv() => d.call(call),
            Some((task, hosts)) = resolved_rx.recv() => d.resolved(task, hosts),
            Some((list, read)) = listed_rx.recv() => d.listed(list, read),
            Some(change) = pod_rx.recv() => d.pod_changed(Some(change)),
            _ = pod_retry.tick(), if d.pods.pending() > 0 => d.pod_changed(None),
            _ = sigint.recv() => break,
            _ = sigterm.recv() => break,
            _ = sighup.recv() => {
                let _ = d.reload();
            }
            _ = rules_poll.tick() => d.reload_if_changed(),
        }
    }
    // What the rings hold at exit (bounded: agents may still be writing), then every record
    // read and held back, whatever may follow it.
    for _ in 0..64 {
        if !d.drain() {
            break;
        }
    }
    d.handle_held();
    d.check_counters();
    d.emitter.fold_tick(true);
    if let Err(e) = d.emitter.close() {
        error!("flushing the sinks at exit: {e}");
    }
    d.save_state();
    let _ = std::fs::remove_file(&opts.socket);
    let _ = std::fs::remove_file(&opts.admin_socket);
    let detached = match &opts.persist {
        Some(p) => format!(
            "stopping; the programs stay attached (pinned under {}) until the next daemon takes over or `tether unpin`",
            p.pin_dir.display()
        ),
        None => "stopping; all probes detached".into(),
    };
    info!(
        events = d.emitter.written(),
        decoded = d.decoded,
        decode_errors = d.metrics.decode_errors.get(),
        kernel_counters = ?d.kernel.counters(),
        "{detached}"
    );
    Ok(())
}

/// Wakeups from the record rings: each ring's fd (a duplicate, owned here) registered with
/// the reactor. The kernel wakes a reader only when a ring fills past its watermark
/// (agent_common::RING_WAKE_BYTES); records below it wait for the drain timer.
struct RingWake(Vec<tokio::io::unix::AsyncFd<std::os::fd::OwnedFd>>);

impl RingWake {
    fn new(rings: &[aya::maps::RingBuf<aya::maps::MapData>]) -> anyhow::Result<RingWake> {
        use std::os::fd::AsFd;
        let mut out = Vec::new();
        for r in rings {
            let fd = r.as_fd().try_clone_to_owned().context("duplicating a ring buffer fd")?;
            // SAFETY: the OwnedFd is moved into the AsyncFd and stays open, unchanged, for
            // its whole life.
            let fd = unsafe { tokio::io::unix::AsyncFd::register_with_interest(fd, tokio::io::Interest::READABLE) }
                .map_err(|e| anyhow::anyhow!("registering a ring buffer with the reactor: {}", e.into_parts().1))?;
            out.push(fd);
        }
        Ok(RingWake(out))
    }

    /// Resolves when a ring says it has records (its readiness cleared: the caller drains).
    async fn any(&self) {
        let mut waits: Vec<_> = self.0.iter().map(|f| Box::pin(f.readable())).collect();
        let ready = std::future::poll_fn(|cx| {
            for w in waits.iter_mut() {
                if let std::task::Poll::Ready(r) = w.as_mut().poll(cx) {
                    return std::task::Poll::Ready(r);
                }
            }
            std::task::Poll::Pending
        })
        .await;
        if let Ok(mut guard) = ready {
            guard.clear_ready();
        }
    }
}

/// The first guardrail with `pods:`, if any.
fn pod_guardrail(rules: &Rules) -> Option<String> {
    rules
        .guardrail_ids()
        .iter()
        .enumerate()
        .find(|(i, _)| rules.guardrail_pods(*i).is_some())
        .map(|(_, id)| id.to_string())
}

/// What the rule files hold, each with its path and its length (a file that cannot be read
/// counts by its error), for noticing a change: a ConfigMap update swaps the file behind
/// its path, an edit rewrites it.
fn rules_fingerprint(paths: &[PathBuf]) -> Vec<u8> {
    let mut out = Vec::new();
    for p in paths {
        out.extend_from_slice(p.as_os_str().as_encoded_bytes());
        out.push(0);
        match std::fs::read(p) {
            Ok(bytes) => {
                out.extend_from_slice(&(bytes.len() as u64).to_le_bytes());
                out.extend_from_slice(&bytes);
            }
            Err(e) => out.extend_from_slice(format!("unreadable: {e}").as_bytes()),
        }
        out.push(0);
    }
    out
}

/// Ready at the event loop's next turn, once the runtime has run what else is ready (other
/// tasks, and the tasks this one woke, which wait in its worker's slot until it yields).
fn go_on() -> impl std::future::Future<Output = ()> {
    tokio::task::yield_now()
}

#[cfg(test)]
mod tests {
    use super::{go_on, rules_fingerprint};

    /// A loop that always has more to drain still lets a call in: the other task runs and its
    /// message is received.
    #[test]
    fn a_drain_that_goes_on_lets_other_tasks_run() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let drains = rt.block_on(async {
            let (tx, mut rx) = tokio::sync::mpsc::channel::<()>(1);
            tokio::spawn(async move {
                tokio::time::sleep(std::time::Duration::from_millis(20)).await;
                let _ = tx.send(()).await;
            });
            let started = std::time::Instant::now();
            let mut drains = 0u64;
            loop {
                assert!(started.elapsed().as_secs() < 10, "the call never came in");
                tokio::select! {
                    _ = go_on() => drains += 1,
                    Some(()) = rx.recv() => return drains,
                }
            }
        });
        assert!(drains > 0);
    }

    #[test]
    fn the_rules_fingerprint_changes_with_content_and_readability_only() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (dir.path().join("a.yaml"), dir.path().join("b.yaml"));
        std::fs::write(&a, "mode: observe\n").unwrap();
        std::fs::write(&b, "x").unwrap();
        let paths = [a.clone(), b.clone()];
        let first = rules_fingerprint(&paths);
        assert_eq!(first, rules_fingerprint(&paths), "same content, same print");
        // A ConfigMap update: the new file is swapped in behind the same path.
        std::fs::write(dir.path().join("new"), "mode: enforce\n").unwrap();
        std::fs::rename(dir.path().join("new"), &a).unwrap();
        let second = rules_fingerprint(&paths);
        assert_ne!(first, second);
        std::fs::remove_file(&b).unwrap();
        assert_ne!(second, rules_fingerprint(&paths), "a file gone is a change");
        assert!(rules_fingerprint(&[]).is_empty());
    }
}
