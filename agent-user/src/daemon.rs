//! `tether run`: load the probes, adopt running agents, then one event loop that owns the
//! process table, the kernel maps and the sinks, and serves API calls.
mod emitter;
mod integrity;
mod pod_guards;
mod rulebook;
mod sandboxes;
mod stages;
mod takeover;

use std::{
    collections::HashSet,
    path::PathBuf,
    sync::{Arc, RwLock},
    time::{Duration, Instant},
};

use agent_common::{NO_TASK, Tracked, counter, track_reason};
use anyhow::Context as _;
use nix::time::{ClockId, clock_gettime};
use serde_json::json;
use tokio::{
    signal::unix::{SignalKind, signal},
    sync::mpsc,
};
use tracing::{debug, error, info, warn};

use crate::{
    api::{self, ApiError, ApiState, Call, Request},
    contain::{self, DaemonAct},
    credentials::{
        self,
        tasks::{BindError, Bound, Tasks},
        token::{self, Keys, Verified},
        trust::Trust,
    },
    delivery::{Delivery, DeliveryArgs, fold::Folder},
    events,
    lineage::{ProcessTable, Reason, ticks_to_ns},
    loader::{self, Probes},
    ocsf::{self, Finding, TaskView, objects::Details},
    policy::{
        self,
        engine::{self, ContainmentSpec, Mode, Rules},
    },
    procscan::{self, Procfs},
    selectors::CompiledSelectors,
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
    let realtime = now_ns(ClockId::CLOCK_REALTIME);
    ocsf::Context {
        hostname,
        boot_epoch_ns: realtime - now_ns(ClockId::CLOCK_BOOTTIME),
        ticks_per_sec,
        fmod_ret,
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
    /// Sequence numbers, folding and the sinks.
    emitter: emitter::Emitter,
    ctx: ocsf::Context,
    /// Records decoded, and records that could not be (never dropped silently: logged).
    decoded: u64,
    last_counters: [u64; counter::COUNT as usize],
    ticks_per_sec: u64,
    started: Instant,
    tasks: Tasks,
    /// The rule files and the rules compiled from them (reloads, the runtime mode).
    rulebook: rulebook::Rulebook,
    /// Tasks whose `tether exec` applied Landlock to writes or execs (an EACCES there is
    /// Landlock's) ...
    landlocked: HashSet<u32>,
    /// This daemon's generation (the ACTIVE map's value while it acts).
    generation: u64,
    /// The kernel state at the last integrity check.
    integrity: integrity::Integrity,
    /// ... and every tree `tether exec` sandboxed, by the pid that reported it.
    sandboxes: std::collections::HashMap<u32, sandboxes::Sandboxed>,
    /// Kills the daemon carried out, and kills that failed.
    metrics: crate::metrics::Metrics,
    keys: Arc<RwLock<Keys>>,
    trust: Vec<Trust>,
    max_chain: usize,
    /// Host-name resolutions for a task's scope, from spawned resolver tasks.
    resolved_tx: mpsc::UnboundedSender<(u32, credentials::Resolved)>,
    /// The agent selectors, compiled (for adopting processes of newly selected pods).
    selectors: CompiledSelectors,
    /// Pod identity: cgroup ids to container and pod, the node's pods (None: no Kubernetes
    /// API), the pod selectors' cgroups.
    resolver: crate::pods::CgroupResolver,
    kube: Option<KubeView>,
    pod_selection: crate::pods::selection::PodSelection,
    /// The guardrails' pod matchers, placed on the pods' cgroups (see `pod_guards`) ...
    pod_guards: crate::pods::selection::PodSelection,
    /// ... and whether entries left by a previous daemon were swept after the first list.
    pod_guards_swept: bool,
    /// cgroup id -> the pod selectors' bits written for it (merged with the rule files').
    pod_masks: std::collections::BTreeMap<u64, u64>,
    cgroup_root: PathBuf,
    /// `--persist`: the pins and state file, and what the take-over did (None: off).
    persist: Option<takeover::PersistView>,
}

/// What the daemon sees of the pod watch (its task owns the rest).
struct KubeView {
    server: String,
    pods: crate::pods::kube::SharedPods,
    stats: Arc<crate::pods::kube::KubeStats>,
}

/// Why a bind was refused, as an alert kind.
fn bind_alert_kind(e: &BindError) -> &'static str {
    match e {
        BindError::Replay { .. } => "credential-replay",
        BindError::Escalation(_) => "delegation-escalation",
        BindError::Revoked(_) => "credential-revoked",
    }
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
            guard_set: self.guard_set_of_pid(pid),
            expires_ns: 0,
        };
        self.write_tracked(pid, entry, 0)
            .map_err(|e| format!("tracked map: {e}"))?;
        self.table.insert_snapshot(&snap, reason, root_key);
        Ok(())
    }

    fn call(&mut self, call: Call) {
        let reply = match call.request {
            Request::Register { pid } => self.register(pid),
            Request::Bind { pid, verified } => self.bind(pid, *verified),
            Request::Refused { pid, uid, reason } => {
                warn!(pid, uid, "{reason}");
                self.alert_refused(pid, "credential-refused", &reason);
                Ok(json!({}))
            }
            Request::Revoke { jti } => self.revoke(&jti),
            Request::Tasks => Ok(json!({"tasks": self.task_list()})),
            Request::Status => Ok(self.status()),
            Request::Mode { mode } => self.set_mode(mode),
            Request::Reload => self.reload(),
            Request::AdminCaller { pid } => self.admit_admin(pid),
            Request::Sandbox { pid, layers } => self.record_sandbox(pid, *layers),
        };
        let _ = call.reply.send(reply);
    }

    fn register(&mut self, pid: u32) -> Result<serde_json::Value, ApiError> {
        let task = match self.kernel_entry(pid) {
            Some(t) => t.task,
            None => {
                self.track(pid, Reason::Registered, None)
                    .map_err(|e| ApiError::new(409, e))?;
                info!(pid, "registered");
                NO_TASK
            }
        };
        let plan = self.sandbox_plan((task != NO_TASK).then_some(task));
        Ok(json!({"pid": pid, "sandbox": plan}))
    }

    /// Admin calls from a tracked process (an agent or anything it started, whatever its uid)
    /// are refused and alerted; so are calls whose tracking cannot be read (fail closed).
    fn admit_admin(&mut self, pid: u32) -> Result<serde_json::Value, ApiError> {
        let refuse = match self.probes.tracked.get(&pid, 0) {
            Ok(_) => Some("admin calls from a tracked process are refused".to_string()),
            // The pid is the one that connected (SO_PEERCRED, at connect time): one that has
            // exited since (an agent that connected, handed the socket to a child and
            // exited, so that its entry is gone) is refused, not taken for an untracked one.
            Err(aya::maps::MapError::KeyNotFound) if crate::contain::kill::is_zombie(pid) => {
                Some("the process that connected has exited: admin call refused".to_string())
            }
            Err(aya::maps::MapError::KeyNotFound) => None,
            Err(e) => Some(format!(
                "the caller's tracking cannot be read ({e}): admin call refused"
            )),
        };
        match refuse {
            None => Ok(json!({})),
            Some(reason) => {
                warn!(pid, "{reason}");
                self.alert_refused(pid, "admin-refused", &reason);
                Err(ApiError::new(403, reason))
            }
        }
    }

    /// The kernel's tracking entry of `pid`.
    fn kernel_entry(&self, pid: u32) -> Option<Tracked> {
        self.probes.tracked.get(&pid, 0).ok()
    }

    /// (pid, entry) of every tracked process.
    fn kernel_entries(&self) -> Vec<(u32, Tracked)> {
        self.probes.tracked.iter().filter_map(|r| r.ok()).collect()
    }

    /// Task ids that still have a live (tracked) process.
    fn live_tasks(&self) -> HashSet<u32> {
        self.kernel_entries()
            .into_iter()
            .map(|(_, t)| t.task)
            .filter(|&t| t != NO_TASK)
            .collect()
    }

    /// A credential's `exp` in the kernel's clock (ns since boot); at least 1 (already past).
    fn exp_boot_ns(&self, exp: i64) -> u64 {
        let ns = exp as i128 * 1_000_000_000 - self.ctx.boot_epoch_ns;
        ns.clamp(1, u64::MAX as i128) as u64
    }

    /// The task `id` as events show it: `action` is Some(the kernel's expired flag) for an
    /// action (its state as it was then), None for the state now.
    fn task_view(&self, id: u32, action: Option<bool>) -> Option<TaskView<'_>> {
        let t = self.tasks.get(id)?;
        let c = &t.verified.claims;
        let kernel_expired = action.unwrap_or(false);
        Some(TaskView {
            jti: &c.jti,
            iss: &c.iss,
            sub: &c.sub,
            exp: c.exp,
            state: match action {
                Some(k) => t.state_at_action(k),
                None => t.state(credentials::now_epoch(), false),
            },
            kernel_expired,
            chain: &t.verified.chain,
            sandbox: self.sandbox_of_task(id),
        })
    }

    fn task_json(&self, id: u32) -> serde_json::Value {
        let Some(t) = self.tasks.get(id) else {
            return json!(null);
        };
        let c = &t.verified.claims;
        json!({
            "jti": c.jti,
            "iss": c.iss,
            "sub": c.sub,
            "exp": c.exp,
            "state": t.state(credentials::now_epoch(), false).as_str(),
            "delegation": t.verified.chain,
            "parent": t.parent.and_then(|p| self.tasks.get(p)).map(|p| p.jti().to_string()),
            "root_pid": t.root_pid,
            "scope": c.scope,
        })
    }

    fn task_list(&self) -> Vec<serde_json::Value> {
        let entries = self.kernel_entries();
        self.tasks
            .all()
            .map(|t| {
                let mut v = self.task_json(t.id);
                let mut pids: Vec<u32> = entries
                    .iter()
                    .filter(|(_, e)| e.task == t.id)
                    .map(|(p, _)| *p)
                    .collect();
                pids.sort_unstable();
                v["processes"] = json!(pids);
                v
            })
            .collect()
    }

    /// Binds a verified credential to `pid` (tracking it first if needed): the kernel entry
    /// carries the task and its expiry from now on, and children inherit both at fork.
    fn bind(&mut self, pid: u32, verified: Verified) -> Result<serde_json::Value, ApiError> {
        if self.kernel_entry(pid).is_none() {
            self.track(pid, Reason::Registered, None)
                .map_err(|e| ApiError::new(409, e))?;
        }
        let current = self.kernel_entry(pid).map(|t| t.task).unwrap_or(NO_TASK);
        // A scope the kernel cannot hold is refused now, not enforced wrongly later.
        if let Err(e) = contain::compile::scope(0, &verified.scope) {
            let reason = format!("binding refused: the scope cannot be enforced in the kernel: {e}");
            warn!(pid, "{reason}");
            self.alert_refused(pid, "credential-refused", &reason);
            return Err(ApiError::new(403, reason));
        }
        let live = self.live_tasks();
        let hosts = verified.scope.host_names();
        let jti = verified.claims.jti.clone();
        match self.tasks.bind(verified, pid, current, |id| live.contains(&id)) {
            Ok(Bound::Already(id)) => {
                Ok(json!({"pid": pid, "task": self.task_json(id), "sandbox": self.sandbox_plan(Some(id))}))
            }
            Ok(Bound::New(id)) => {
                let exp = self.tasks.get(id).map(|t| t.verified.claims.exp).unwrap_or(0);
                let expires_ns = self.exp_boot_ns(exp);
                let mut entry = self
                    .kernel_entry(pid)
                    .ok_or_else(|| ApiError::new(409, format!("process {pid} is gone")))?;
                self.install_scope(id)
                    .map_err(|e| ApiError::new(500, format!("kernel rule maps: {e}")))?;
                entry.task = id;
                entry.expires_ns = expires_ns;
                self.write_tracked(pid, entry, 0)
                    .map_err(|e| ApiError::new(500, format!("tracked map: {e}")))?;
                info!(pid, jti = %jti, task = id, "credential bound");
                self.save_state();
                if !hosts.is_empty() {
                    self.spawn_resolve(id, hosts);
                }
                Ok(json!({"pid": pid, "task": self.task_json(id), "sandbox": self.sandbox_plan(Some(id))}))
            }
            Err(e) => {
                let reason = format!("binding refused: {e}");
                warn!(pid, jti = %jti, "{reason}");
                self.alert_refused(pid, bind_alert_kind(&e), &reason);
                Err(ApiError::new(403, reason))
            }
        }
    }

    /// Re-resolves a task's scope host names off the event loop.
    fn spawn_resolve(&self, task: u32, hosts: Vec<String>) {
        let tx = self.resolved_tx.clone();
        tokio::spawn(async move {
            let r = credentials::resolve_hosts(&hosts).await;
            let _ = tx.send((task, r));
        });
    }

    fn resolved(&mut self, task: u32, hosts: credentials::Resolved) {
        if let Some(t) = self.tasks.get_mut(task) {
            t.verified.scope.resolved = hosts;
            if let Err(e) = self.install_scope(task) {
                error!(task, "updating the kernel's scope after host-name resolution: {e}");
            }
        }
    }

    /// Compiles task `id`'s scope into the kernel's rule maps (replacing what it had there).
    fn install_scope(&mut self, id: u32) -> Result<(), String> {
        let t = self.tasks.get(id).ok_or("no such task")?;
        let c = contain::compile::scope(id, &t.verified.scope).map_err(|e| e.to_string())?;
        for u in &c.undecided {
            info!(
                task = id,
                "scope pattern {u}: not judged by the kernel; the daemon decides"
            );
        }
        self.probes.rules.install(id, &c).map_err(|e| e.to_string())
    }

    /// Compiles the rule files' containment with the runtime mode and puts it in force; on
    /// any error the previous rules stay.
    fn apply_containment(&mut self, spec: ContainmentSpec, mode: Option<Mode>) -> Result<(), String> {
        let rules = self.rulebook.compile(&spec, mode).map_err(|e| e.to_string())?;
        if self.kube.is_none()
            && let Some(id) = pod_guardrail(&rules)
        {
            return Err(format!(
                "guardrail {id:?} holds only in some pods (`pods:`), but this daemon runs without pod identity"
            ));
        }
        self.reload_pod_guards(&rules).map_err(|e| e.to_string())?;
        self.rulebook.put(rules, spec, mode);
        Ok(())
    }

    /// Switches the global mode (rules with a mode of their own keep it).
    fn set_mode(&mut self, mode: Mode) -> Result<serde_json::Value, ApiError> {
        let spec = self.rulebook.spec().clone();
        self.apply_containment(spec, Some(mode))
            .map_err(|e| ApiError::new(500, e))?;
        warn!(mode = mode.as_str(), "containment mode switched");
        Ok(json!({"mode": mode.as_str(), "rules": self.rulebook.json()}))
    }

    /// Reloads the rule files; a file that fails is refused and the previous rules stay.
    fn reload(&mut self) -> Result<serde_json::Value, ApiError> {
        let spec = match self.rulebook.read() {
            Ok(p) => p,
            Err(e) => {
                let reason = format!("reload refused, the previous rules stay in force: {e}");
                error!("{reason}");
                return Err(ApiError::new(400, reason));
            }
        };
        if let Err(e) = self.apply_containment(spec, None) {
            let reason = format!("reload refused, the previous rules stay in force: {e}");
            error!("{reason}");
            return Err(ApiError::new(400, reason));
        }
        let rules = self.rulebook.rules();
        info!(mode = rules.mode.as_str(), guardrails = ?rules.guardrail_ids(), "rules reloaded (agent selectors and trust take effect at restart)");
        Ok(json!({"reloaded": true, "rules": self.rulebook.json()}))
    }

    /// Reloads the rule files if what they hold changed since they were last read. A file
    /// refused at reload is not retried until it changes again.
    fn reload_if_changed(&mut self) {
        if self.rulebook.changed() {
            info!("rule files changed; reloading");
            let _ = self.reload();
        }
    }

    fn revoke(&mut self, jti: &str) -> Result<serde_json::Value, ApiError> {
        let id = self
            .tasks
            .revoke(jti)
            .ok_or_else(|| ApiError::new(404, format!("no task with jti {jti:?}")))?;
        // The kernel flags the task's processes from their next action on.
        for (pid, mut e) in self.kernel_entries() {
            if e.task == id {
                e.expires_ns = 1;
                if let Err(err) = self.write_tracked(pid, e, 0) {
                    warn!(pid, "revoking in the tracked map: {err}");
                }
            }
        }
        info!(jti, task = id, "task revoked");
        self.save_state();
        Ok(json!({"task": self.task_json(id)}))
    }

    /// Binds the credential in TETHER_TASK_TOKEN of a process a selector just made an agent.
    fn bind_from_environment(&mut self, pid: u32) {
        let Some(token) = procscan::environ_var(pid, TOKEN_ENV) else {
            return;
        };
        let verified = {
            let Ok(keys) = self.keys.read() else { return };
            token::verify(&token, &keys, credentials::now_epoch(), self.max_chain)
        };
        match verified {
            Ok(v) => {
                if let Err(e) = self.bind(pid, v) {
                    debug!(pid, "{TOKEN_ENV}: {}", e.message);
                }
            }
            Err(e) => {
                let reason = format!("{TOKEN_ENV} of pid {pid} refused: {e}");
                warn!("{reason}");
                self.alert_refused(pid, "credential-refused", &reason);
            }
        }
    }

    /// An alert about a refused credential or binding for process `pid`.
    fn alert_refused(&mut self, pid: u32, kind: &'static str, reason: &str) {
        let proc_info = self.table.live_key(pid).and_then(|k| self.table.get(&k).cloned());
        let task_id = self.kernel_entry(pid).map(|t| t.task).unwrap_or(NO_TASK);
        let identity = self.identify(proc_info.as_ref().map(|p| p.cgroup_id));
        let seq = self.emitter.take();
        let finding = {
            let task = self.task_view(task_id, None);
            let f = Finding {
                kind,
                title: format!("{kind} (pid {pid})"),
                desc: reason.to_string(),
                process: proc_info.as_ref(),
                task: task.as_ref(),
                related: None,
                details: Details::Refused {
                    pid,
                    reason: reason.to_string(),
                },
                time_ns: None,
                severity_id: if kind == "delegation-escalation" { 4 } else { 3 },
                outcome: None,
            };
            ocsf::finding(&self.ctx, seq, f, identity)
        };
        self.emitter.alert(finding, None);
    }

    /// The status report: what the kernel allows and what is in effect, and the loss counters.
    fn status(&self) -> serde_json::Value {
        let counters: serde_json::Map<String, serde_json::Value> = self
            .probes
            .counters()
            .iter()
            .enumerate()
            .map(|(i, v)| (loader::counter_name(i as u32), (*v).into()))
            .collect();
        serde_json::json!({
            "mode": self.rulebook.rules().mode.as_str(),
            "rules": self.rulebook.json(),
            "daemon_kills": self.metrics.daemon_kills.get(),
            "daemon_kill_errors": self.metrics.daemon_kill_errors.get(),
            "pid": std::process::id(),
            "uptime_s": self.started.elapsed().as_secs(),
            "kernel": self.probes.report.kernel,
            "features": self.probes.report.features,
            "hooks": self.probes.report.hooks,
            "degraded": self.probes.report.degraded,
            "missing_tracepoints": self.probes.report.missing_tracepoints,
            "programs": self.probes.attached.programs,
            "tracked_processes": self.table.len(),
            "events_written": self.emitter.written(),
            "decode_errors": self.metrics.decode_errors.get(),
            "kernel_counters": counters,
            "tasks": self.tasks.all().count(),
            "node": self.ctx.hostname,
            "kubernetes": self.kube_status(),
            "trusted_issuers": self.trust.iter().map(|t| {
                let keys = self.keys.read().ok().and_then(|k| k.by_issuer.get(&t.issuer).map(|r| match r {
                    Ok(set) => json!({"keys": set.keys.len()}),
                    Err(e) => json!({"error": e.to_string()}),
                }));
                json!({"issuer": t.issuer, "jwks": match &t.source {
                    credentials::trust::JwksSource::File(p) => p.display().to_string(),
                    credentials::trust::JwksSource::Url(u) => u.clone(),
                }, "state": keys})
            }).collect::<Vec<_>>(),
            "max_delegation_depth": self.max_chain,
            "persist": self.persist_status(),
            "sandboxes": self.sandboxes_json(),
            "tamper_repaired": self.integrity.repaired,
            "self_protection": {
                "guardrail": engine::SELF_GUARDRAIL,
                "write": self.rulebook.tether().write,
                "connect": self.rulebook.tether().sockets,
                "narrowed": self.rulebook.spec().self_protection.as_ref().map(|p| json!({"except": p.except, "mode": p.mode})),
            },
        })
    }

    fn kube_status(&self) -> serde_json::Value {
        use std::sync::atomic::Ordering::Relaxed;
        let lookups_failed = self.resolver.failures.load(Relaxed);
        match &self.kube {
            Some(KubeView {
                server,
                pods,
                stats: st,
            }) => {
                let cache = pods.read().expect("pod cache lock");
                json!({
                    "state": if cache.synced() { "watching" } else { "listing" },
                    "server": server,
                    "pods": cache.len(),
                    "lists": st.lists.load(Relaxed),
                    "watch_events": st.watch_events.load(Relaxed),
                    "errors": st.errors.load(Relaxed),
                    "decode_errors": st.decode_errors.load(Relaxed),
                    "pod_cgroups_selected": self.pod_masks.len(),
                    "pods_waiting_for_cgroup": self.pod_selection.pending() + self.pod_guards.pending(),
                    "pod_cgroups_guarded": self.pod_guards.placed().count(),
                    "cgroup_lookups_failed": lookups_failed,
                })
            }
            None => json!({
                "state": "off",
                "why": "not in a cluster (no KUBERNETES_SERVICE_HOST) and no --kube-api, or --no-kubernetes: events carry container ids and pod UIDs from cgroup paths, without pod names or labels",
                "cgroup_lookups_failed": lookups_failed,
            }),
        }
    }

    /// A process `c` as the selectors see it: with its pod, when the node's pods are known.
    fn with_pod(&self, c: &crate::selectors::Candidate) -> crate::selectors::Candidate {
        let mut c = c.clone();
        if let (Some(KubeView { pods, .. }), Some(path)) = (&self.kube, &c.cgroup)
            && let Some(uid) = crate::pods::cgroup_path::parse(path).pod_uid
        {
            c.pod = pods.read().expect("pod cache lock").get_live(&uid);
        }
        c
    }

    /// A pod changed: the pod selectors' cgroups in the kernel follow, and the running
    /// processes of a newly selected pod are adopted.
    fn pod_changed(&mut self, change: Option<crate::pods::kube::PodChange>) {
        self.pod_guards_changed(change.as_ref());
        if self.pod_selection.is_empty() {
            return;
        }
        let root = self.cgroup_root.clone();
        let find = |uid: &str| crate::pods::find_pod_cgroup(&root, uid);
        let (updates, selected) = match &change {
            Some(c) => self.pod_selection.apply(c, find),
            None => self.pod_selection.retry(find),
        };
        for (cg, mask) in updates {
            let value = self.probes.static_cgroups.get(&cg).copied().unwrap_or(0) | mask;
            let res = if value == 0 {
                self.probes.select_cgroup.remove(&cg)
            } else {
                self.probes.select_cgroup.insert(cg, value, 0)
            };
            match res {
                Ok(()) => {
                    if mask == 0 {
                        self.pod_masks.remove(&cg);
                    } else {
                        self.pod_masks.insert(cg, mask);
                    }
                }
                Err(e) => error!(cgroup = cg, "updating the cgroup selector map for a pod: {e}"),
            }
        }
        for pod in selected {
            info!(namespace = %pod.namespace, pod = %pod.name, uid = %pod.uid, "pod selected by an agent selector");
            self.adopt(|d, c| {
                let c = d.with_pod(c);
                c.pod.as_ref().is_some_and(|p| p.uid == pod.uid) && d.selectors.matching(&c).is_some()
            });
        }
    }

    /// Adopts running processes `select` picks, with their descendants.
    fn adopt(&mut self, select: impl Fn(&Self, &crate::selectors::Candidate) -> bool) {
        // Twice: a child forked by an adopted process between the scan and its insertion is
        // caught by the second pass (after insertion the kernel tracks new children itself).
        for _ in 0..2 {
            let running = procscan::running();
            let pids = procscan::select_for_adoption(&running, |c| select(self, c), std::process::id());
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

    /// Reads every ring and handles the records in the order the kernel made them (each
    /// ring is in order; records of one process can be in several: a fork, then the child's
    /// writes).
    fn drain(&mut self) -> anyhow::Result<()> {
        let mut records = Vec::new();
        for ring in &mut self.probes.rings {
            while let Some(item) = ring.next() {
                records.push(events::decode(&item));
            }
        }
        let mut events = Vec::with_capacity(records.len());
        for r in records {
            match r {
                Ok(ev) => events.push(ev),
                Err(e) => {
                    let n = self.metrics.decode_errors.inc() + 1;
                    error!(decode_errors = n, "undecodable ring buffer record: {e}");
                }
            }
        }
        events.sort_by_key(|e| e.actor().ktime_ns);
        for ev in events {
            self.decoded += 1;
            self.handle(ev);
        }
        self.emitter.flush();
        Ok(())
    }

    /// Carries out the daemon's share of enforcement; true when the process (or tree) was
    /// signalled.
    fn carry_out(&mut self, act: DaemonAct, a: &events::Actor) -> bool {
        let result = match act {
            DaemonAct::None => return false,
            DaemonAct::Kill => contain::kill::kill(a.tgid, a.start_ns, self.ticks_per_sec)
                .map(|k| k == contain::kill::Killed::Signalled),
            DaemonAct::KillTree => {
                let root = self.kernel_entry(a.tgid).map(|t| t.root_tgid).unwrap_or(a.tgid);
                let (task, tracked) = (a.task, &self.probes.tracked);
                let members = || {
                    tracked
                        .iter()
                        .filter_map(|r| r.ok())
                        .filter(|(_, t)| {
                            if task != NO_TASK {
                                t.task == task
                            } else {
                                t.root_tgid == root
                            }
                        })
                        .map(|(pid, t)| (pid, t.start_ns))
                        .collect::<Vec<_>>()
                };
                let r = contain::kill::kill_tree(members, self.ticks_per_sec);
                if let Ok(pids) = &r {
                    warn!(
                        task,
                        root,
                        killed = pids.len(),
                        pids = ?pids,
                        "kill-tree: every process of the task was killed"
                    );
                }
                r.map(|_| true)
            }
        };
        match result {
            Ok(done) => {
                self.metrics.daemon_kills.inc_by(u64::from(done));
                done
            }
            Err(e) => {
                self.metrics.daemon_kill_errors.inc();
                error!(pid = a.tgid, "enforcement kill failed: {e}");
                false
            }
        }
    }

    /// Periodic: re-resolves scope host names, forgets ended tasks without processes.
    fn refresh_tasks(&mut self) {
        let live = self.live_tasks();
        let before: HashSet<u32> = self.tasks.all().map(|t| t.id).collect();
        self.tasks.collect(credentials::now_epoch(), |id| live.contains(&id));
        let after: HashSet<u32> = self.tasks.all().map(|t| t.id).collect();
        for gone in before.difference(&after) {
            self.probes.rules.remove(*gone);
            self.landlocked.remove(gone);
        }
        self.prune_sandboxes();
        // Scopes a previous daemon installed for tasks this one could not restore: kept while
        // a process still carries the task.
        let orphans: Vec<u32> = self.orphan_owners().into_iter().filter(|o| !live.contains(o)).collect();
        for o in orphans {
            self.probes.rules.remove(o);
        }
        self.save_state();
        let work: Vec<(u32, Vec<String>)> = self
            .tasks
            .all()
            .map(|t| (t.id, t.verified.scope.host_names()))
            .filter(|(_, h)| !h.is_empty())
            .collect();
        for (id, hosts) in work {
            self.spawn_resolve(id, hosts);
        }
    }

    fn check_counters(&mut self) {
        let now = self.probes.counters();
        let last = self.last_counters;
        for (i, (&n, &before)) in now.iter().zip(last.iter()).enumerate() {
            if n > before {
                let name = loader::counter_name(i as u32);
                self.metrics.kernel_loss(&name, n - before);
                warn!(counter = %name, total = n, new = n - before, "kernel-side loss or error");
                // Losses (a full ring buffer or map) and actions the kernel could not judge
                // are alerted; read errors leave a field empty in an event that is still
                // delivered: metric and log only.
                let (kind, what) = match i as u32 {
                    counter::READ_ERROR => continue,
                    counter::TAMPER => (
                        "tamper",
                        "tracked processes reached for Tether itself (bpf(2), a signal or ptrace-family access to the daemon, ptrace of an untracked process) and were refused",
                    ),
                    counter::UNJUDGED => (
                        "unjudged-actions",
                        "the kernel could not judge these actions; their verdict was the unjudged posture",
                    ),
                    counter::TRACKED_FULL | counter::PENDING_FULL => (
                        "events-lost",
                        "a kernel map was full; the calls it could not hold were judged as unjudged",
                    ),
                    _ => (
                        "events-lost",
                        "records did not fit in their ring; the verdicts still applied",
                    ),
                };
                let reason = format!("kernel-side: {name} +{} (total {n}); {what}", n - before);
                let hook = (i as u32).checked_sub(counter::LOST).and_then(agent_common::hook::name);
                self.emitter.system(
                    kind,
                    &reason,
                    Details::KernelCounter {
                        kernel_counter: name,
                        hook,
                        new: n - before,
                        total: n,
                    },
                );
            }
        }
        let changed = self.last_counters != now;
        self.last_counters = now;
        if changed {
            self.save_state();
        }
        self.metrics.tracked_processes.set(self.table.len() as i64);
        self.metrics.live_tasks.set(self.tasks.all().count() as i64);
    }
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
    let client = credentials::trust::https_client(opts.ca_bundle.as_deref()).map_err(|e| anyhow::anyhow!(e))?;
    let keys = credentials::trust::load_all(&trust, &client).await;
    for t in &trust {
        match keys.by_issuer.get(&t.issuer) {
            Some(Ok(set)) => info!(issuer = %t.issuer, keys = set.keys.len(), "trusted issuer"),
            Some(Err(e)) => warn!(issuer = %t.issuer, "trusted issuer has no usable keys yet: {e}"),
            None => {}
        }
    }
    let keys = Arc::new(RwLock::new(keys));
    let (resolved_tx, mut resolved_rx) = mpsc::unbounded_channel();
    let ticks_per_sec = procfs::ticks_per_second();
    let cgroup_root = loader::cgroup2_root()?;
    let pod_guards = crate::pods::selection::PodSelection::guards(rules);
    let fmod_ret = probes.report.features.fmod_ret.available;
    let ctx = context(ticks_per_sec, node, fmod_ret);
    let mut d = Daemon {
        probes,
        table: ProcessTable::new(ticks_per_sec),
        emitter: emitter::Emitter::new(
            out,
            Folder::new(opts.delivery.fold_window),
            ctx.clone(),
            metrics.clone(),
        ),
        ctx,
        decoded: 0,
        last_counters: [0; counter::COUNT as usize],
        ticks_per_sec,
        started,
        tasks: Tasks::default(),
        rulebook,
        landlocked: HashSet::new(),
        sandboxes: Default::default(),
        generation,
        integrity: Default::default(),
        metrics,
        keys: keys.clone(),
        trust: trust.clone(),
        max_chain: opts.max_chain,
        resolved_tx,
        pod_selection: crate::pods::selection::PodSelection::new(&selectors),
        pod_guards,
        pod_guards_swept: false,
        selectors,
        resolver: crate::pods::CgroupResolver::open(&cgroup_root),
        kube: None,
        pod_masks: Default::default(),
        cgroup_root,
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
    d.adopt(|d, c| d.selectors.matching(&d.with_pod(c)).is_some());
    // The node's pods: listed, then watched, by a task of their own.
    let (pod_tx, mut pod_rx) = mpsc::channel(1024);
    if let Some(cfg) = kube {
        let client = crate::pods::kube::client(&cfg)?;
        let cache = crate::pods::kube::SharedPods::default();
        let stats = Arc::new(crate::pods::kube::KubeStats::default());
        info!(server = %cfg.server, node = %cfg.node, "watching this node's pods");
        d.kube = Some(KubeView {
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
    if let Some(task) = webhook {
        tokio::spawn(task);
    }

    let (calls_tx, mut calls) = mpsc::channel::<Call>(64);
    let state = ApiState {
        calls: calls_tx,
        keys: keys.clone(),
        max_chain: opts.max_chain,
        admins: opts.admins.clone(),
    };
    let view = d.probes.tracked_view.clone();
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
    // JWKS URLs are refreshed on a timer; the last good keys stay when a refresh fails.
    if trust
        .iter()
        .any(|t| matches!(t.source, credentials::trust::JwksSource::Url(_)))
    {
        let (trust, keys) = (trust.clone(), keys.clone());
        tokio::spawn(async move {
            let mut every = tokio::time::interval(REFRESH_EVERY);
            every.tick().await;
            loop {
                every.tick().await;
                for f in credentials::trust::refresh(&trust, &client, &keys).await {
                    warn!("JWKS refresh failed (keeping the last good keys): {f}");
                }
            }
        });
    }

    d.metrics.set_mechanisms(&d.probes.report.hooks);
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
    for h in &d.probes.report.hooks {
        info!(hook = h.hook, mechanism = %h.mechanism, enforcement = %h.enforcement, "enforcement mechanism");
    }

    let mut sigint = signal(SignalKind::interrupt())?;
    let mut sigterm = signal(SignalKind::terminate())?;
    let mut sighup = signal(SignalKind::hangup())?;
    let mut drain = tokio::time::interval(DRAIN_EVERY);
    // A ring past its fill watermark wakes the daemon at once (below it, the timer drains).
    let wake = RingWake::new(&d.probes.rings)?;
    let mut counters = tokio::time::interval(COUNTERS_EVERY);
    let mut refresh = tokio::time::interval(REFRESH_EVERY);
    refresh.tick().await;
    let mut fold = tokio::time::interval(Duration::from_secs(1));
    let mut rules_poll = tokio::time::interval(RULES_POLL_EVERY);
    let mut pod_retry = tokio::time::interval(Duration::from_millis(250));
    let mut integrity = tokio::time::interval(integrity::CHECK_EVERY);
    loop {
        tokio::select! {
            _ = drain.tick() => d.drain()?,
            _ = wake.any() => d.drain()?,
            _ = fold.tick() => d.emitter.fold_tick(false),
            _ = counters.tick() => d.check_counters(),
            _ = integrity.tick() => d.check_integrity(),
            _ = refresh.tick() => d.refresh_tasks(),
            Some(call) = calls.recv() => d.call(call),
            Some((task, hosts)) = resolved_rx.recv() => d.resolved(task, hosts),
            Some(change) = pod_rx.recv() => d.pod_changed(Some(change)),
            _ = pod_retry.tick(), if d.pod_selection.pending() + d.pod_guards.pending() > 0 => d.pod_changed(None),
            _ = sigint.recv() => break,
            _ = sigterm.recv() => break,
            _ = sighup.recv() => {
                let _ = d.reload();
            }
            _ = rules_poll.tick() => d.reload_if_changed(),
        }
    }
    d.drain()?;
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
        kernel_counters = ?d.probes.counters(),
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

#[cfg(test)]
mod tests {
    use super::rules_fingerprint;

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
