//! The sandboxes component: the layers each tree `tether exec` sandboxed reported back (for
//! `tether status` and the task's events), and the plan sent with every registration or
//! binding (from the task's scope, the enforced guardrails and Tether's own files; pure).
use std::collections::{HashMap, HashSet};

use agent_common::{NO_TASK, Tracked};
use serde_json::json;
use tracing::{info, warn};

use crate::{
    api::ApiError,
    contain::{
        landlock::{LandlockPlan, guard_tree},
        sandbox::{Layers, Plan},
        seccomp::SeccompPlan,
    },
    credentials::scope::{CompiledScope, Grant},
    events::Actor,
    features::KernelReport,
    policy::engine::{self, Rules},
};

/// A sandboxed tree: the task it runs under (NO_TASK: registered without a credential) and
/// what its `tether exec` applied.
#[derive(Debug, Clone)]
pub struct Sandboxed {
    pub task: u32,
    pub layers: Layers,
}

/// The sandboxed trees, by the pid that reported them ...
#[derive(Default)]
pub(super) struct Sandboxes {
    trees: HashMap<u32, Sandboxed>,
    /// ... and the tasks whose `tether exec` applied Landlock to writes or execs (an EACCES
    /// there is Landlock's).
    landlocked: HashSet<u32>,
}

/// What `tether exec` applies to itself for a task with `scope` (None: a registration
/// without a credential). Scope restrictions only where scope violations are enforced; the
/// guarded trees where no BPF LSM hook refuses writes; signal scoping and the seccomp filter
/// always.
pub(super) fn plan(report: &KernelReport, rules: &Rules, scope: Option<&CompiledScope>) -> Plan {
    let scope_enforced = engine::refuses(rules.postures().scope);
    // Guarded trees go to Landlock only where the LSM hooks cannot refuse writes: where
    // they can, they refuse first *and* record, and a Landlock refusal (an LSM that runs
    // before them) would leave no record.
    let guarded = if report.lsm_in_effect("file_write") {
        Vec::new()
    } else {
        rules.enforced_write_guards()
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
    let unbound_enforced = rules.postures().unbound.is_some_and(engine::refuses);
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

impl Sandboxes {
    /// `tether exec` (pid `pid`, before it execs the agent) says what it applied. Once per
    /// process: the agent it becomes cannot overwrite it.
    /// `entry`: the kernel's tracking entry of `pid` (None: not tracked).
    pub(super) fn record(
        &mut self,
        pid: u32,
        entry: Option<Tracked>,
        layers: Layers,
    ) -> Result<serde_json::Value, ApiError> {
        let entry = entry.ok_or_else(|| ApiError::new(409, format!("process {pid} is not tracked: register first")))?;
        if self.trees.contains_key(&pid) || (entry.task != NO_TASK && self.trees.values().any(|s| s.task == entry.task))
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
        if layers.landlock.as_ref().is_some_and(|l| l.write || l.exec) && entry.task != NO_TASK {
            self.landlocked.insert(entry.task);
        }
        self.trees.insert(
            pid,
            Sandboxed {
                task: entry.task,
                layers,
            },
        );
        Ok(json!({}))
    }

    /// Does `a` (whose tree's root is `root`) run under a sandbox of `tether exec` that has a
    /// seccomp filter?
    pub(super) fn filtered(&self, a: &Actor, root: Option<u32>) -> bool {
        self.trees.iter().any(|(pid, s)| {
            !s.layers.seccomp.is_empty()
                && ((a.task != NO_TASK && s.task == a.task) || Some(*pid) == root || *pid == a.tgid)
        })
    }

    /// The layers task `id` runs under (its first sandboxed tree).
    pub(super) fn of_task(&self, id: u32) -> Option<&Layers> {
        self.trees.values().find(|s| s.task == id).map(|s| &s.layers)
    }

    /// Did task `id`'s `tether exec` apply Landlock to writes or execs?
    pub(super) fn landlocked(&self, id: u32) -> bool {
        self.landlocked.contains(&id)
    }

    /// The Landlocked tasks, sorted (for the state file).
    pub(super) fn landlocked_tasks(&self) -> Vec<u32> {
        let mut v: Vec<u32> = self.landlocked.iter().copied().collect();
        v.sort_unstable();
        v
    }

    /// The previous daemon's Landlocked tasks (those restored).
    pub(super) fn restore_landlocked(&mut self, tasks: impl IntoIterator<Item = u32>) {
        self.landlocked.extend(tasks);
    }

    /// Forgets sandboxes whose task has ended (`task_live`), or (without a task) whose
    /// process and tree are gone (`entries`: the kernel's tracked processes, read only when a
    /// tree is kept).
    pub(super) fn prune(&mut self, entries: impl FnOnce() -> Vec<(u32, Tracked)>, task_live: impl Fn(u32) -> bool) {
        self.landlocked.retain(|id| task_live(*id));
        if self.trees.is_empty() {
            return;
        }
        let live: HashSet<u32> = entries().iter().flat_map(|(pid, t)| [*pid, t.root_tgid]).collect();
        self.trees.retain(|pid, s| {
            if s.task != NO_TASK {
                task_live(s.task)
            } else {
                live.contains(pid)
            }
        });
    }

    /// `tether status`'s sandboxes; `jti`: a task's jti.
    pub(super) fn json(&self, jti: impl Fn(u32) -> Option<String>) -> serde_json::Value {
        let mut v: Vec<serde_json::Value> = self
            .trees
            .iter()
            .map(|(root, s)| {
                json!({
                    "root_pid": root,
                    "task": jti(s.task),
                    "layers": s.layers,
                    "summary": s.layers.summary(),
                })
            })
            .collect();
        v.sort_by_key(|s| s["root_pid"].as_u64());
        json!(v)
    }
}
