//! API dispatch: each call of the local API (from the agent or the admin socket's workers,
//! over a channel) carried out on the event loop, between two batches of events, through the
//! components' methods.
use agent_common::{NO_TASK, Tracked, track_reason};
use serde_json::json;
use tracing::{error, info, warn};

use super::{Daemon, sandboxes};
use crate::{
    api::{ApiError, Call, Request},
    contain::{self, sandbox::Plan},
    credentials::{
        tasks::{BindError, Bound},
        token::Verified,
        workload::{MustMatch, Workload},
    },
    lineage::{Reason, ticks_to_ns},
    model::Mode,
    policy::engine::{self, ContainmentSpec},
    procscan::Procfs,
};

/// Why a bind was refused, as an alert kind.
fn bind_alert_kind(e: &BindError) -> &'static str {
    match e {
        BindError::Replay { .. } | BindError::TxnReplay { .. } => "credential-replay",
        BindError::Escalation(_) => "delegation-escalation",
        BindError::Revoked(_) | BindError::Listed(_) => "credential-revoked",
    }
}

/// Why a process could not be tracked.
#[derive(Debug, thiserror::Error)]
pub(super) enum TrackError {
    #[error("the daemon never tracks itself")]
    Daemon,
    #[error("process {0} is gone")]
    Gone(u32),
    #[error("tracked map: {0}")]
    Map(#[from] aya::maps::MapError),
}

/// Why a task's scope could not be put in the kernel.
#[derive(Debug, thiserror::Error)]
pub(super) enum ScopeError {
    #[error("no such task")]
    NoTask,
    #[error(transparent)]
    Install(#[from] contain::InstallError),
}

/// Why a reload or a mode switch was refused.
#[derive(Debug, thiserror::Error)]
pub(super) enum ApplyError {
    #[error(transparent)]
    Rules(#[from] crate::policy::engine::RuleError),
    #[error("guardrail {0:?} holds only in some pods (`pods:`), but this daemon runs without pod identity")]
    NoPods(String),
    #[error(transparent)]
    Install(#[from] contain::InstallError),
}

impl Daemon {
    pub(super) fn call(&mut self, call: Call) {
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
            Request::Sandbox { pid, layers } => self.sandboxes.record(pid, self.kernel.entry(pid), *layers),
        };
        let _ = call.reply.send(reply);
    }

    /// Puts a live process into the kernel's tracked map and the table.
    pub(super) fn track(&mut self, pid: u32, reason: Reason, root: Option<u32>) -> Result<(), TrackError> {
        if pid == std::process::id() {
            return Err(TrackError::Daemon);
        }
        let snap = crate::lineage::ProcSource::snapshot(&Procfs, pid).ok_or(TrackError::Gone(pid))?;
        let kernel_reason = match reason {
            Reason::Registered => track_reason::REGISTERED,
            Reason::Adopted => track_reason::ADOPTED,
            Reason::Selected => track_reason::SELECTED,
            Reason::Inherited => track_reason::INHERITED,
        };
        let entry = Tracked {
            start_ns: ticks_to_ns(snap.start, self.tracking.ticks_per_sec()),
            root_tgid: root.unwrap_or(pid),
            reason: kernel_reason,
            task: NO_TASK,
            guard_set: self.pods.guard_set_of(self.rulebook.rules(), pid),
            expires_ns: 0,
        };
        self.kernel.write(pid, entry, 0)?;
        self.tracking.insert(&snap, reason, root);
        Ok(())
    }

    /// What `tether exec` applies to itself for `task` (None: a registration without a
    /// credential).
    fn sandbox_plan(&self, task: Option<u32>) -> Plan {
        let scope = task.and_then(|id| self.tasks.get(id)).map(|t| &t.verified.scope);
        sandboxes::plan(self.kernel.report(), self.rulebook.rules(), scope)
    }

    fn register(&mut self, pid: u32) -> Result<serde_json::Value, ApiError> {
        let task = match self.kernel.entry(pid) {
            Some(t) => t.task,
            None => {
                self.track(pid, Reason::Registered, None)
                    .map_err(|e| ApiError::new(409, e.to_string()))?;
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
        let refuse = match self.kernel.lookup(pid) {
            Ok(_) => Some("admin calls from a tracked process are refused".to_string()),
            // The pid is the one that connected (SO_PEERCRED, at connect time): one that has
            // exited since (an agent that connected, handed the socket to a child and
            // exited, so that its entry is gone) is refused, not taken for an untracked one.
            Err(aya::maps::MapError::KeyNotFound) if contain::kill::is_zombie(pid) => {
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

    /// A credential's `exp` in the kernel's clock (ns since boot); at least 1 (already past).
    fn exp_boot_ns(&self, exp: i64) -> u64 {
        let ns = exp as i128 * 1_000_000_000 - self.ctx.boot_epoch_ns;
        ns.clamp(1, u64::MAX as i128) as u64
    }

    fn task_list(&self) -> Vec<serde_json::Value> {
        let entries = self.kernel.entries();
        self.tasks
            .all()
            .map(|t| {
                let mut v = self.tasks.json(t.id);
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
    pub(super) fn bind(&mut self, pid: u32, verified: Verified) -> Result<serde_json::Value, ApiError> {
        if self.kernel.entry(pid).is_none() {
            self.track(pid, Reason::Registered, None)
                .map_err(|e| ApiError::new(409, e.to_string()))?;
        }
        let current = self.kernel.entry(pid).map(|t| t.task).unwrap_or(NO_TASK);
        // A scope the kernel cannot hold is refused now, not enforced wrongly later.
        if let Err(e) = contain::compile::scope(0, &verified.scope) {
            let reason = format!("binding refused: the scope cannot be enforced in the kernel: {e}");
            warn!(pid, "{reason}");
            self.alert_refused(pid, "credential-refused", &reason);
            return Err(ApiError::new(403, reason));
        }
        // Fail closed: no binding before every revocation list has been read once.
        let unread = self.tasks.lists_unread();
        if !unread.is_empty() {
            let reason = format!(
                "binding refused: revocation list not read yet: {} (bindings wait until it has been read)",
                unread.join(", ")
            );
            warn!(pid, "{reason}");
            self.alert_refused(pid, "credential-refused", &reason);
            return Err(ApiError::new(503, reason));
        }
        // The identity check: the current actor against the pod's service account.
        if let Some(check) = self.tasks.workload().cloned() {
            let pod = self.pods.pod_of(pid);
            let at = match &pod {
                None => Workload::None,
                Some(Ok(p)) => Workload::Pod(p),
                Some(Err(uid)) => Workload::UnknownPod(uid),
            };
            if let Err(m) = check.check(verified.claims.actor(), at) {
                let reason = format!("workload identity: {m}");
                if check.must_match == MustMatch::Refuse {
                    self.alert_refused(pid, "actor-mismatch", &reason);
                    let reason = format!("binding refused: {reason}");
                    warn!(pid, "{reason}");
                    return Err(ApiError::new(403, reason));
                }
                warn!(pid, "{reason} (actor_must_match: alert; bound)");
                self.alert_request(pid, "actor-mismatch", crate::ocsf::Concluded::Detected, &reason);
            }
        }
        let live = self.kernel.live_tasks();
        let jti = verified.id.clone();
        match self.tasks.bind(verified, pid, current, |id| live.contains(&id)) {
            Ok(Bound::Already(id)) => {
                Ok(json!({"pid": pid, "task": self.tasks.json(id), "sandbox": self.sandbox_plan(Some(id))}))
            }
            Ok(Bound::New(id)) => {
                let exp = self.tasks.get(id).map(|t| t.verified.expires()).unwrap_or(0);
                let expires_ns = self.exp_boot_ns(exp);
                let mut entry = self
                    .kernel
                    .entry(pid)
                    .ok_or_else(|| ApiError::new(409, format!("process {pid} is gone")))?;
                self.install_scope(id)
                    .map_err(|e| ApiError::new(500, format!("kernel rule maps: {e}")))?;
                entry.task = id;
                entry.expires_ns = expires_ns;
                self.kernel
                    .write(pid, entry, 0)
                    .map_err(|e| ApiError::new(500, format!("tracked map: {e}")))?;
                info!(pid, jti = %jti, task = id, "credential bound");
                self.save_state();
                self.tasks.resolve(id);
                Ok(json!({"pid": pid, "task": self.tasks.json(id), "sandbox": self.sandbox_plan(Some(id))}))
            }
            Err(e) => {
                let reason = format!("binding refused: {e}");
                warn!(pid, jti = %jti, "{reason}");
                self.alert_refused(pid, bind_alert_kind(&e), &reason);
                Err(ApiError::new(403, reason))
            }
        }
    }

    /// Compiles task `id`'s scope into the kernel's rule maps (replacing what it had there).
    pub(super) fn install_scope(&mut self, id: u32) -> Result<(), ScopeError> {
        let t = self.tasks.get(id).ok_or(ScopeError::NoTask)?;
        let c = contain::compile::scope(id, &t.verified.scope).map_err(contain::InstallError::from)?;
        for u in &c.undecided {
            info!(
                task = id,
                "scope pattern {u}: not judged by the kernel; the daemon decides"
            );
        }
        self.kernel
            .install_scope(id, &c)
            .map_err(|e| ScopeError::Install(e.into()))
    }

    /// Compiles the rule files' containment with the runtime mode and puts it in force; on
    /// any error the previous rules stay.
    fn apply_containment(&mut self, spec: ContainmentSpec, mode: Option<Mode>) -> Result<(), ApplyError> {
        let rules = self.rulebook.compile(&spec, mode)?;
        if !self.pods.on()
            && let Some(id) = super::pod_guardrail(&rules)
        {
            return Err(ApplyError::NoPods(id));
        }
        self.pods.reload_guards(&mut self.kernel, &rules)?;
        self.rulebook.put(rules, spec, mode);
        Ok(())
    }

    /// Switches the global mode (rules with a mode of their own keep it).
    fn set_mode(&mut self, mode: Mode) -> Result<serde_json::Value, ApiError> {
        let spec = self.rulebook.spec().clone();
        self.apply_containment(spec, Some(mode))
            .map_err(|e| ApiError::new(500, e.to_string()))?;
        warn!(mode = mode.as_str(), "containment mode switched");
        Ok(json!({"mode": mode.as_str(), "rules": self.rulebook.json()}))
    }

    /// Reloads the rule files; a file that fails is refused and the previous rules stay.
    pub(super) fn reload(&mut self) -> Result<serde_json::Value, ApiError> {
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
        info!(mode = rules.mode.as_str(), guardrails = ?rules.guardrail_ids(), "rules reloaded (agent selectors, trust, scope bundles, identities and revocation lists take effect at restart)");
        Ok(json!({"reloaded": true, "rules": self.rulebook.json()}))
    }

    /// Reloads the rule files if what they hold changed since they were last read. A file
    /// refused at reload is not retried until it changes again.
    pub(super) fn reload_if_changed(&mut self) {
        if self.rulebook.changed() {
            info!("rule files changed; reloading");
            let _ = self.reload();
        }
    }

    fn revoke(&mut self, jti: &str) -> Result<serde_json::Value, ApiError> {
        let (id, tree) = self
            .tasks
            .revoke(jti)
            .ok_or_else(|| ApiError::new(404, format!("no task with jti {jti:?}")))?;
        self.cut_off(&tree);
        info!(jti, task = id, "task revoked");
        self.save_state();
        Ok(json!({"task": self.tasks.json(id)}))
    }

    /// Tasks `ids` were revoked: the kernel flags their processes from their next action on.
    /// Pass after pass until a pass finds none left to flag: a child forked during a pass
    /// inherits its parent's entry as it was, and is caught by the next (bounded: once a
    /// parent is flagged its children are born flagged). Entries are rewritten only where
    /// they still exist (a process that exited meanwhile is not put back).
    pub(super) fn cut_off(&mut self, ids: &[u32]) {
        const BPF_EXIST: u64 = 2;
        for _ in 0..64 {
            let left: Vec<_> = self
                .kernel
                .entries()
                .into_iter()
                .filter(|(_, e)| ids.contains(&e.task) && e.expires_ns != 1)
                .collect();
            if left.is_empty() {
                return;
            }
            for (pid, mut e) in left {
                e.expires_ns = 1;
                if let Err(err) = self.kernel.write(pid, e, BPF_EXIST)
                    && self.kernel.entry(pid).is_some()
                {
                    warn!(pid, "revoking in the tracked map: {err}");
                }
            }
        }
        warn!(tasks = ?ids, "revocation: processes of the task were still being forked after 64 passes");
    }

    /// The status report: what the kernel allows and what is in effect, and the loss counters.
    fn status(&self) -> serde_json::Value {
        let counters: serde_json::Map<String, serde_json::Value> = self
            .kernel
            .counters()
            .iter()
            .enumerate()
            .map(|(i, v)| (crate::loader::counter_name(i as u32), (*v).into()))
            .collect();
        let report = self.kernel.report();
        serde_json::json!({
            "mode": self.rulebook.rules().mode.as_str(),
            "rules": self.rulebook.json(),
            "daemon_kills": self.metrics.daemon_kills.get(),
            "daemon_kill_errors": self.metrics.daemon_kill_errors.get(),
            "pid": std::process::id(),
            "uptime_s": self.started.elapsed().as_secs(),
            "kernel": report.kernel,
            "features": report.features,
            "hooks": report.hooks,
            "degraded": report.degraded,
            "missing_tracepoints": report.missing_tracepoints,
            "programs": self.kernel.attached().programs,
            "tracked_processes": self.tracking.len(),
            "events_written": self.emitter.written(),
            "records_decoded": self.decoded,
            "record_bytes": self.record_bytes,
            "records_held": self.backlog.held(),
            "decode_errors": self.metrics.decode_errors.get(),
            "kernel_counters": counters,
            "tasks": self.tasks.count(),
            "node": self.ctx.hostname,
            "kubernetes": self.pods.status(),
            "trusted_issuers": self.tasks.issuers_status(),
            "revocation_lists": self.tasks.lists_status(),
            "workload_identity": self.tasks.workload().map(|w| serde_json::json!({
                "trust_domain": w.trust_domain, "actor_must_match": w.must_match})),
            "max_delegation_depth": self.tasks.max_chain(),
            "persist": self.persist_status(),
            "sandboxes": self.sandboxes.json(|id| self.tasks.get(id).map(|t| t.jti().to_string())),
            "tamper_repaired": self.kernel.repaired(),
            "self_protection": {
                "guardrail": engine::SELF_GUARDRAIL,
                "write": self.rulebook.tether().write,
                "connect": self.rulebook.tether().sockets,
                "narrowed": self.rulebook.spec().self_protection.as_ref().map(|p| json!({"except": p.except, "mode": p.mode})),
            },
        })
    }
}
