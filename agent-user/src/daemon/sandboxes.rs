//! The sandboxes of `tether exec`: the plan sent with every registration or binding (from the
//! task's scope, the enforced guardrails and Tether's own files), and the layers each
//! sandboxed tree reported back, for `tether status` and the task's events.
use serde_json::json;
use tracing::{info, warn};

use super::Daemon;
use crate::{
    api::ApiError,
    contain::{
        landlock::{LandlockPlan, guard_tree},
        sandbox::{Layers, Plan},
        seccomp::SeccompPlan,
    },
    credentials::scope::Grant,
    policy::engine,
};

/// A sandboxed tree: the task it runs under (NO_TASK: registered without a credential) and
/// what its `tether exec` applied.
#[derive(Debug, Clone)]
pub struct Sandboxed {
    pub task: u32,
    pub layers: Layers,
}

impl Daemon {
    /// What `tether exec` applies to itself for `task` (None: a registration without a
    /// credential). Scope restrictions only where scope violations are enforced; the guarded
    /// trees where no BPF LSM hook refuses writes; signal scoping and the seccomp filter
    /// always.
    pub(super) fn sandbox_plan(&self, task: Option<u32>) -> Plan {
        let report = &self.probes.report;
        let scope_enforced = engine::refuses(self.rulebook.rules().postures().scope);
        let scope = task.and_then(|id| self.tasks.get(id)).map(|t| &t.verified.scope);
        // Guarded trees go to Landlock only where the LSM hooks cannot refuse writes: where
        // they can, they refuse first *and* record, and a Landlock refusal (an LSM that runs
        // before them) would leave no record.
        let guarded = if report.lsm_in_effect("file_write") {
            Vec::new()
        } else {
            self.rulebook.rules().enforced_write_guards()
        };
        let mut landlock = LandlockPlan {
            guarded: guarded
                .iter()
                .filter_map(|p| guard_tree(p))
                .map(|p| p.display().to_string())
                .collect(),
            scope_signal: true,
            ..Default::default()
        };
        landlock.guarded.sort();
        landlock.guarded.dedup();
        if let Some(s) = scope.filter(|_| scope_enforced) {
            landlock.write = (!report.lsm_in_effect("file_write")).then(|| s.spec.write.clone());
            landlock.exec = (!report.lsm_in_effect("exec")).then(|| s.spec.exec.clone());
            // TCP by port (Landlock's rights name no address): the ports of the scope's TCP
            // `connect` and `listen` rules, whatever their addresses; the cgroup hooks judge
            // the addresses. Binds to port 0 (the kernel picks) stay open, as in the rules.
            // A refusal comes from an LSM hook before ours; the Landlock probes record it.
            let tcp = |rules: &[crate::credentials::scope::ConnectRule]| -> Vec<(u16, u16)> {
                rules
                    .iter()
                    .filter(|r| r.proto == crate::credentials::scope::Proto::Tcp)
                    .map(|r| r.ports)
                    .collect()
            };
            landlock.connect = Some(tcp(&s.connect));
            // Abstract Unix sockets made outside the sandbox (ABI 6+), where the scope allows
            // none and no BPF LSM Unix hook judges the resolved peer before the connection
            // (Landlock, an LSM before it, would refuse first; here the kernel probes judge
            // at the connect's exit, after it was made). A refused connect is recorded at its
            // exit (landlock/scope).
            landlock.scope_abstract_unix =
                !report.lsm_in_effect("unix") && !s.spec.connect.iter().any(|c| c.starts_with("unix:@"));
            let mut bind = tcp(&s.listen);
            bind.push((0, 0));
            landlock.bind = Some(bind);
        }
        // The channels the seccomp filter refuses where the class that judges the process
        // refuses (scope for a bound task, the unbound posture otherwise): io_uring, raw and
        // packet sockets unless the scope grants them (io_uring also where the BPF LSM hooks
        // judge what a ring does), device nodes and chown/xattr writes where no BPF LSM hook
        // refuses them before they happen. Each refusal is recorded by the sandbox probes
        // (agent-ebpf sandbox). The tamper class is refused always.
        let unbound_enforced = self.rulebook.rules().postures().unbound.is_some_and(engine::refuses);
        let refusing = if scope.is_some() {
            scope_enforced
        } else {
            unbound_enforced
        };
        let open = |grant: Grant| !refusing || scope.is_some_and(|s| s.grants(grant));
        Plan {
            landlock,
            seccomp: SeccompPlan {
                io_uring: open(Grant::IoUring) || report.lsm_group("io_uring"),
                raw: open(Grant::Raw),
                packet: open(Grant::Packet),
                devices: !refusing || report.lsm_group("file_names"),
                metadata: refusing && !(report.lsm_group("file_owner") && report.lsm_group("file_attrs")),
            },
        }
    }

    /// `tether exec` (pid `pid`, before it execs the agent) says what it applied. Once per
    /// process: the agent it becomes cannot overwrite it.
    pub(super) fn record_sandbox(&mut self, pid: u32, layers: Layers) -> Result<serde_json::Value, ApiError> {
        let entry = self
            .kernel_entry(pid)
            .ok_or_else(|| ApiError::new(409, format!("process {pid} is not tracked: register first")))?;
        if self.sandboxes.contains_key(&pid)
            || (entry.task != agent_common::NO_TASK && self.sandboxes.values().any(|s| s.task == entry.task))
        {
            return Err(ApiError::new(
                409,
                "this process's (or its task's) sandbox is already reported",
            ));
        }
        info!(pid, task = entry.task, layers = %layers.summary(), "sandbox applied by tether exec");
        for m in &layers.missing {
            warn!(pid, task = entry.task, "sandbox layer missing on this kernel: {m}");
        }
        if layers.landlock.as_ref().is_some_and(|l| l.write || l.exec) && entry.task != agent_common::NO_TASK {
            self.landlocked.insert(entry.task);
        }
        self.sandboxes.insert(
            pid,
            Sandboxed {
                task: entry.task,
                layers,
            },
        );
        Ok(json!({}))
    }

    /// Does `a` run under a sandbox of `tether exec` that has a seccomp filter?
    pub(super) fn sandboxed(&self, a: &crate::events::Actor) -> bool {
        let root = self.kernel_entry(a.tgid).map(|t| t.root_tgid);
        self.sandboxes.iter().any(|(pid, s)| {
            !s.layers.seccomp.is_empty()
                && ((a.task != agent_common::NO_TASK && s.task == a.task) || Some(*pid) == root || *pid == a.tgid)
        })
    }

    /// The layers task `id` runs under (its first sandboxed tree).
    pub(super) fn sandbox_of_task(&self, id: u32) -> Option<&Layers> {
        self.sandboxes.values().find(|s| s.task == id).map(|s| &s.layers)
    }

    /// Forgets sandboxes whose task has ended, or (without a task) whose process and tree
    /// are gone.
    pub(super) fn prune_sandboxes(&mut self) {
        if self.sandboxes.is_empty() {
            return;
        }
        let entries = self.kernel_entries();
        let live: std::collections::HashSet<u32> = entries.iter().flat_map(|(pid, t)| [*pid, t.root_tgid]).collect();
        let tasks: std::collections::HashSet<u32> = self.tasks.all().map(|t| t.id).collect();
        self.sandboxes.retain(|pid, s| {
            if s.task != agent_common::NO_TASK {
                tasks.contains(&s.task)
            } else {
                live.contains(pid)
            }
        });
    }

    pub(super) fn sandboxes_json(&self) -> serde_json::Value {
        let mut v: Vec<serde_json::Value> = self
            .sandboxes
            .iter()
            .map(|(root, s)| {
                json!({
                    "root_pid": root,
                    "task": self.tasks.get(s.task).map(|t| t.jti().to_string()),
                    "layers": s.layers,
                    "summary": s.layers.summary(),
                })
            })
            .collect();
        v.sort_by_key(|s| s["root_pid"].as_u64());
        json!(v)
    }
}
