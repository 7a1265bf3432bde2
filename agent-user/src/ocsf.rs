//! OCSF 1.8 records of what Tether saw: Process Activity (1007) for exec, Network Activity
//! (4001) for connects and sends, File System Activity (1001) for writes, Detection Finding
//! (2004) for alerts. Standard fields wherever OCSF has one; Tether's own data (lineage,
//! tracking reason, path provenance) under `unmapped.tether`, since every OCSF class forbids
//! unknown top-level fields. The records are the typed structs of [`objects`], built once
//! with their outcome; they become JSON only at the sink. Pure.
pub mod objects;

use crate::{
    contain::Outcome,
    credentials::tasks::CredState,
    events::{Event, FileOp, NetOp, ObjectKind, ReportedPath, UnixOp, UnixPeer, UringOp},
    lineage::{ProcInfo, ProcKey, ProcessTable, ticks_to_ns},
    model::{Identity, KernelVerdict},
    policy::engine::Decision,
};
use objects::*;

/// The task an action was attributed to (None: the process acts under no credential).
#[derive(Clone, Debug)]
pub struct TaskView<'a> {
    pub jti: &'a str,
    pub iss: &'a str,
    pub sub: &'a str,
    pub exp: i64,
    pub state: CredState,
    /// The kernel had flagged the credential expired or revoked when it made the record.
    pub kernel_expired: bool,
    /// Principal first, current actor last.
    pub chain: &'a [String],
    /// The layers `tether exec` applied to the task's tree (None: not started by it).
    pub sandbox: Option<&'a crate::contain::sandbox::Layers>,
    /// Where the task's scope came from ([`crate::credentials::carriers::ScopeSource`]).
    pub scope_source: &'static str,
    /// The Transaction Token's `txn`: every event of the task carries it as
    /// `metadata.correlation_uid`.
    pub txn: Option<&'a str>,
}

/// `unmapped.tether.task` and `unmapped.tether.delegation` of a record in full.
fn task_data(task: Option<&TaskView>) -> (TaskData, Vec<String>) {
    match task {
        Some(t) => (
            TaskData::Bound {
                jti: t.jti.to_string(),
                iss: t.iss.to_string(),
                sub: t.sub.to_string(),
                exp: t.exp,
                state: t.state.as_str(),
                kernel_expired: t.kernel_expired,
                scope_source: t.scope_source,
                sandbox: t.sandbox.cloned().map(Box::new),
            },
            t.chain.to_vec(),
        ),
        None => (
            TaskData::None {
                state: CredState::None.as_str(),
            },
            Vec::new(),
        ),
    }
}

/// `unmapped.tether.task` of a compact audit event: the task by its id, with its state then
/// (None: no task, as the full form said).
fn task_ref(task: Option<&TaskView>) -> Option<TaskData> {
    task.map(|t| TaskData::Ref {
        jti: t.jti.to_string(),
        scope_source: t.scope_source,
        state: t.state.as_str(),
        kernel_expired: t.kernel_expired,
    })
}

pub const OCSF_VERSION: &str = "1.8.0";
pub const PRODUCT: &str = "Tether";

/// What every event of this daemon shares.
#[derive(Clone, Debug)]
pub struct Context {
    pub hostname: String,
    /// Wall-clock ns at boot (CLOCK_REALTIME - CLOCK_BOOTTIME), to turn kernel times into time.
    pub boot_epoch_ns: i128,
    pub ticks_per_sec: u64,
    /// The BPF LSM programs run as fmod_ret programs on the `security_*` functions: records
    /// name those (see [`crate::modret`]).
    pub fmod_ret: bool,
    /// Prefix of metadata.uid, unique per daemon run (boot id + daemon start).
    pub uid_prefix: String,
    /// This boot of this node (the boot id's first group): the prefix of process uids.
    pub boot: String,
}

impl Context {
    /// The kernel mechanism that saw `event`, as in effect on this kernel.
    pub fn mechanism(&self, event: &Event) -> String {
        use crate::programs::Via;
        let via = if self.fmod_ret { Via::FmodRet } else { Via::Lsm };
        event.mechanism().name(via)
    }

    fn epoch_ms(&self, boot_ns: u64) -> i64 {
        ((self.boot_epoch_ns + boot_ns as i128) / 1_000_000) as i64
    }
    fn start_ms(&self, ticks: u64) -> i64 {
        self.epoch_ms(ticks_to_ns(ticks, self.ticks_per_sec))
    }

    /// The OCSF `uid` of process `key`: unique on this node for as long as it runs (a reused
    /// pid has another start time), and across nodes by the boot id.
    pub fn process_uid(&self, key: &ProcKey) -> String {
        joined(&self.boot, &[key.pid as u64, key.start])
    }
}

/// `prefix-n1-n2...`, written straight into a string of its size (written once or more per
/// event: no formatting machinery).
fn joined(prefix: &str, numbers: &[u64]) -> String {
    let mut s = String::with_capacity(prefix.len() + 21 * numbers.len());
    s.push_str(prefix);
    let mut b = itoa::Buffer::new();
    for n in numbers {
        s.push('-');
        s.push_str(b.format(*n));
    }
    s
}

fn metadata(uid: String, log_name: &'static str, task: Option<&TaskView>) -> Metadata {
    Metadata {
        correlation_uid: task.and_then(|t| t.txn).map(str::to_string),
        product: Product {
            name: PRODUCT,
            vendor_name: PRODUCT,
            version: Some(env!("CARGO_PKG_VERSION")),
        },
        version: OCSF_VERSION,
        uid,
        log_name,
    }
}

/// OCSF `device`: this host (`full`: with every caption).
fn device(ctx: &Context, full: bool) -> Device {
    Device {
        hostname: ctx.hostname.clone(),
        type_id: 1,
        kind: full.then_some("Server"),
    }
}

fn basename(path: &str) -> &str {
    match path.rsplit('/').next() {
        Some("") | None => path,
        Some(name) => name,
    }
}

fn parent_folder(path: &str) -> &str {
    match path.rfind('/') {
        Some(0) => "/",
        Some(i) => &path[..i],
        None => "",
    }
}

/// OCSF `process` of `p`: in full, or (`full` false) by its uid, pid and name.
fn process_obj(ctx: &Context, p: &ProcInfo, tid: Option<u32>, full: bool) -> Process {
    let detail = full.then(|| {
        let exe = (!p.exe.is_empty()).then_some(&p.exe);
        ProcessDetail {
            cmd_line: p.cmd_line(),
            created_time: ctx.start_ms(p.key.start),
            user: User {
                name: None,
                uid: p.uid.to_string(),
            },
            file: exe.map(|exe| File {
                path: exe.clone(),
                name: basename(exe).to_string(),
                parent_folder: None,
                type_id: 1,
                kind: Some("Regular File"),
            }),
            path: exe.cloned(),
        }
    });
    Process {
        pid: p.key.pid,
        uid: ctx.process_uid(&p.key),
        name: p.comm.clone(),
        detail,
        parent_process: ParentProcess {
            pid: p.ppid,
            uid: p.parent.as_ref().map(|k| ctx.process_uid(k)),
        },
        tid,
    }
}

/// An OCSF `file` object for a path, with its type (`type_id`, `type`); `full`: with what
/// follows from the rest (the caption, the parent folder), left out of compact events.
fn file_obj(path: &str, (type_id, kind): (u8, &'static str), full: bool) -> File {
    File {
        path: path.to_string(),
        name: basename(path).to_string(),
        parent_folder: full.then(|| parent_folder(path).to_string()),
        type_id,
        kind: caption(full, type_id, kind),
    }
}

fn lineage(ctx: &Context, table: &ProcessTable, p: &ProcInfo) -> Vec<Ancestor> {
    table
        .lineage(&p.key)
        .into_iter()
        .map(|q| Ancestor {
            pid: q.key.pid,
            uid: ctx.process_uid(&q.key),
            start_time: ctx.start_ms(q.key.start),
            exe: q.exe.clone(),
            cmd_line: q.cmd_line(),
            tracked_by: q.reason.as_str(),
            exited: q.exited,
        })
        .collect()
}

fn path_data(p: &ReportedPath, with_path: bool, full: bool) -> PathData {
    PathData {
        path: with_path.then(|| p.path.clone()),
        origin: p.origin.as_str(),
        truncated: (full || p.truncated).then_some(p.truncated),
    }
}

/// A digest of what the full form of `p`'s audit events says of it (see [`AuditData`]): its
/// image and user, its lineage up to the agent root (which processes, tracked why), its task
/// binding (credential, delegation, sandbox) and where it runs (`identity`, `cgroup_id`).
/// When it changes, the next event of `p` is written in full again. Not what changes from
/// one action to the next (the task's state, an ancestor's exit).
pub fn identity_stamp(
    table: &ProcessTable,
    p: &ProcInfo,
    task: Option<&TaskView>,
    identity: &Identity,
    cgroup_id: u64,
) -> u64 {
    use std::hash::{BuildHasher, Hash, Hasher};
    // Computed per event and compared within this process only: foldhash (fixed seed, as
    // DefaultHasher's SipHash keys were), a fraction of SipHash's cost.
    let mut h = foldhash::quality::FixedState::default().build_hasher();
    (&p.exe, p.uid, p.root, cgroup_id, identity).hash(&mut h);
    for q in table.lineage(&p.key) {
        (q.key, q.reason as u8).hash(&mut h);
    }
    if let Some(t) = task {
        (t.jti, t.iss, t.sub, t.exp, t.chain, t.sandbox.is_some()).hash(&mut h);
    }
    h.finish()
}

/// What became of an action: the outcome reported, the kernel's verdict, and the rules'
/// decision (for an audit event; a violation's decision is written with it).
#[derive(Clone, Copy, Debug)]
pub struct Verdict<'a> {
    /// The kernel mechanism that saw the action, as in effect ([`Context::mechanism`]).
    pub mechanism: &'a str,
    pub outcome: &'a Outcome,
    pub kernel: KernelVerdict,
    pub decision: Option<&'a Decision>,
}

/// The decision as written in an audit event.
fn decision_data(d: &Decision) -> DecisionData {
    DecisionData {
        rule: d.rule.clone(),
        action: d.action.map(|a| a.as_str()),
        mode: d.mode.as_str(),
        would: d.would().map(|a| a.as_str()),
        reason: d.reason.clone(),
    }
}

/// Activity of a file operation (`activity_id`, `activity_name`).
fn file_activity(op: FileOp, path2: Option<&ReportedPath>) -> (u32, &'static str) {
    match op {
        FileOp::OpenWrite => (14, "Open"),
        FileOp::Truncate => (3, "Update"),
        FileOp::Rename => (5, "Rename"),
        FileOp::Unlink | FileOp::Rmdir => (4, "Delete"),
        FileOp::Mkdir | FileOp::Link | FileOp::Symlink | FileOp::Create | FileOp::Mknod => (1, "Create"),
        FileOp::Chmod | FileOp::Chown => (7, "Set Security"),
        // Capabilities, security labels and ACLs are security; other attributes not.
        FileOp::SetXattr | FileOp::RemoveXattr
            if path2.is_some_and(|n| n.path.starts_with("security.") || n.path.starts_with("system.")) =>
        {
            (7, "Set Security")
        }
        FileOp::SetXattr | FileOp::RemoveXattr | FileOp::Utimes => (6, "Set Attributes"),
    }
}

/// Which form of an audit event to build (see [`AuditData`]).
#[derive(Clone, Debug)]
pub enum Form {
    /// With the acting process's identity, where it runs (`Identity`): the process's first
    /// event for the stream's receivers, a changed identity, or full records asked for.
    Full(Identity),
    /// Referring to the identity the stream's receivers hold, by `actor.process.uid`.
    Compact,
}

/// The audit event of one action, built once with what became of it, in `form`. `actor` is
/// the acting process as it was when it acted (for an exec: before the exec); `after` is the
/// process after the event (the new image for an exec). None for events that are not actions
/// (fork, exit). Boxed: the record passes through the emitter to the alert stage.
#[allow(clippy::too_many_arguments)]
pub fn audit(
    ctx: &Context,
    seq: u64,
    event: &Event,
    actor: &ProcInfo,
    after: &ProcInfo,
    table: &ProcessTable,
    task: Option<&TaskView>,
    verdict: Verdict,
    form: Form,
) -> Option<Box<Audit>> {
    if !event.is_action() {
        return None;
    }
    let a = event.actor();
    let full = matches!(form, Form::Full(_));
    let (task_obj, introduction) = match form {
        Form::Full(identity) => {
            let (task_obj, delegation) = task_data(task);
            let introduction = Introduction {
                delegation,
                lineage: lineage(ctx, table, after),
                agent_root: AgentRoot {
                    pid: after.root.pid,
                    uid: ctx.process_uid(&after.root),
                    start_time: ctx.start_ms(after.root.start),
                },
                tracked_by: after.reason.as_str(),
                cgroup_id: a.cgroup_id,
                identity,
            };
            (Some(task_obj), Some(introduction))
        }
        Form::Compact => (task_ref(task), None),
    };
    // The compact form leaves out what holds its default: nothing acted, nothing judged.
    let o = verdict.outcome;
    let acted = o.by.is_some() || o.denied || o.killed || o.after_effect;
    let mut data = AuditData {
        task: task_obj.map(Box::new),
        introduction: introduction.map(Box::new),
        mechanism: verdict.mechanism.to_string(),
        actor: None,
        exec: None,
        net: None,
        unix: None,
        socket: None,
        sandbox: None,
        io_uring: None,
        file: None,
        outcome: (full || acted).then(|| verdict.outcome.clone()),
        kernel_verdict: (full || verdict.kernel != KernelVerdict::default()).then_some(verdict.kernel),
        decision: verdict
            .decision
            .filter(|d| d.action.is_some())
            .map(|d| Box::new(decision_data(d))),
    };
    let base = |class: Class, activity: (u32, &'static str)| {
        Base::new(
            class,
            activity,
            ctx.epoch_ms(a.ktime_ns),
            1,
            Some(verdict.outcome),
            metadata(joined(&ctx.uid_prefix, &[seq]), "audit", task),
            full,
        )
    };
    let actor_obj = || Actor {
        process: process_obj(ctx, actor, Some(a.tid), full),
        // The principal the task acts for, when there is one; else the OS user.
        user: User {
            name: task.map(|t| t.sub.to_string()),
            uid: a.uid.to_string(),
        },
    };
    // The table already holds the new image (exe, argv) for `after`; for a refused exec,
    // the process as it still is.
    let process = |activity, data: AuditData| {
        Audit::Process(ProcessActivity {
            base: base(Class::Process, activity),
            device: device(ctx, full),
            actor: actor_obj(),
            process: process_obj(ctx, after, Some(a.tid), full),
            unmapped: Unmapped { tether: data },
        })
    };
    let network = |activity, src: Option<Endpoint>, dst, info, mut data: AuditData| {
        data.actor = Some(Box::new(actor_obj()));
        Audit::Network(NetworkActivity {
            base: base(Class::Network, activity),
            // The host is the source, unless an accepted connection's peer is.
            src_endpoint: src.unwrap_or_else(|| Endpoint {
                hostname: Some(ctx.hostname.clone()),
                ..Default::default()
            }),
            dst_endpoint: dst,
            connection_info: info,
            unmapped: Unmapped { tether: data },
        })
    };
    Some(Box::new(match event {
        Event::Exec {
            exe,
            filename,
            argv,
            argv_truncated,
            failed,
            ..
        } => {
            data.exec = Some(Box::new(ExecData {
                filename: filename.clone(),
                argv: argv.clone(),
                argv_truncated: *argv_truncated,
                exe: path_data(exe, true, full),
                refused: failed.map(|errno| Refusal {
                    errno: -errno,
                    error: std::io::Error::from_raw_os_error((-errno) as i32).to_string(),
                }),
            }));
            process((1, "Launch"), data)
        }
        Event::Sandbox { syscall_nr, call, .. } => {
            data.sandbox = Some(Box::new(SandboxData {
                layer: "seccomp",
                call,
                syscall_nr: *syscall_nr,
            }));
            process((99, "Syscall Refused"), data)
        }
        Event::Uring { op, fd, .. } => {
            data.io_uring = Some(UringData {
                op: match op {
                    UringOp::Setup => "setup",
                    UringOp::Enter => "enter",
                },
                fd: (*op == UringOp::Enter).then_some(*fd),
            });
            let activity = match op {
                UringOp::Setup => (99, "io_uring Setup"),
                UringOp::Enter => (99, "io_uring Enter"),
            };
            process(activity, data)
        }
        Event::Net {
            transport,
            addr,
            port,
            local_port,
            op,
            ..
        } => {
            let endpoint = Endpoint {
                ip: Some(addr.to_string()),
                port: Some(*port),
                ..Default::default()
            };
            let (activity, direction) = match op {
                NetOp::Connect => ((1, "Open"), (2, "Outbound")),
                NetOp::Accept => ((1, "Open"), (1, "Inbound")),
                NetOp::Send => ((6, "Traffic"), (2, "Outbound")),
                NetOp::Bind | NetOp::Listen => ((7, "Listen"), (1, "Inbound")),
            };
            // A listen: the endpoint is the local one; an accept: from the peer to us.
            let (src, dst) = match op {
                NetOp::Accept => (
                    Some(endpoint),
                    Endpoint {
                        hostname: Some(ctx.hostname.clone()),
                        port: Some(*local_port),
                        ..Default::default()
                    },
                ),
                _ => (None, endpoint),
            };
            let info = ConnectionInfo {
                protocol_name: Some(transport.name()),
                protocol_num: Some(transport.number()),
                protocol_ver_id: Some(if addr.is_ipv4() { 4 } else { 6 }),
                direction_id: direction.0,
                direction: direction.1,
            };
            data.net = Some(NetData { op: op.as_str() });
            network(activity, src, Some(dst), info, data)
        }
        Event::Unix {
            op, sock_type, peer, ..
        } => {
            let activity = match op {
                UnixOp::Connect => (1, "Open"),
                UnixOp::Send => (6, "Traffic"),
            };
            let (naming, path) = match peer {
                UnixPeer::File(p) => ("resolved", Some(path_data(p, false, full))),
                UnixPeer::Abstract(_) => ("abstract", None),
                UnixPeer::AsGiven(_) => ("as-given", None),
            };
            let name = peer.judged_name();
            data.unix = Some(Box::new(UnixData {
                op: match op {
                    UnixOp::Connect => "connect",
                    UnixOp::Send => "send",
                },
                sock_type: *sock_type,
                peer: name.clone(),
                naming,
                path,
            }));
            let dst = Endpoint {
                name: Some(name),
                ..Default::default()
            };
            let info = ConnectionInfo {
                protocol_name: Some("unix"),
                protocol_num: None,
                protocol_ver_id: None,
                direction_id: 2,
                direction: "Outbound",
            };
            network(activity, None, Some(dst), info, data)
        }
        Event::Socket {
            kind,
            family,
            sock_type,
            protocol,
            ..
        } => {
            data.socket = Some(Box::new(SocketData {
                kind: kind.as_str(),
                family: *family,
                sock_type: *sock_type,
                protocol: *protocol,
            }));
            let info = ConnectionInfo {
                protocol_name: None,
                protocol_num: Some(*protocol),
                protocol_ver_id: None,
                direction_id: 0,
                direction: "Unknown",
            };
            network((99, "Socket Create"), None, None, info, data)
        }
        Event::File {
            op,
            ret,
            flags,
            mode,
            owner,
            path,
            path2,
            syscall_nr,
            object,
            ..
        } => {
            let type_id = match (op, object.map(|o| o.kind)) {
                (FileOp::Mkdir | FileOp::Rmdir, _) | (_, Some(ObjectKind::Directory)) => (2, "Folder"),
                (FileOp::Symlink, _) | (_, Some(ObjectKind::Symlink)) => (7, "Symbolic Link"),
                (_, Some(ObjectKind::Regular)) => (1, "Regular File"),
                (_, Some(ObjectKind::Device { block: false, .. })) => (3, "Character Device"),
                (_, Some(ObjectKind::Device { block: true, .. })) => (4, "Block Device"),
                (_, Some(ObjectKind::Socket)) => (5, "Local Socket"),
                (_, Some(ObjectKind::Fifo)) => (6, "Named Pipe"),
                _ => (0, "Unknown"),
            };
            let file_result = match (op, path2) {
                (FileOp::Rename | FileOp::Link, Some(dst)) => Some(file_obj(&dst.path, (0, "Unknown"), full)),
                _ => None,
            };
            let (status_id, status, status_code) = if *ret >= 0 {
                (1, "Success", None)
            } else {
                let errno = nix::errno::Errno::from_raw((-*ret) as i32);
                (2, "Failure", Some(format!("{errno:?}")))
            };
            let mut f = FileData {
                op: op.as_str(),
                syscall_nr: *syscall_nr,
                ret: *ret,
                flags: *flags,
                mode: format!("{mode:o}"),
                path: path_data(path, false, full),
                xattr: None,
                target: None,
                destination: None,
                object: object.map(|o| ObjectData {
                    nlink: o.nlink,
                    device: match o.device_path() {
                        None if !full => None,
                        device => Some(device),
                    },
                }),
                owner: owner.map(|(uid, gid)| Owner { uid, gid }),
            };
            match (op, path2) {
                (_, None) => {}
                (FileOp::SetXattr | FileOp::RemoveXattr, Some(p2)) => f.xattr = Some(p2.path.clone()),
                (FileOp::Symlink, Some(p2)) => f.target = Some(path_data(p2, true, full)),
                (_, Some(p2)) => f.destination = Some(path_data(p2, true, full)),
            }
            data.file = Some(Box::new(f));
            Audit::File(FileActivity {
                base: base(Class::FileSystem, file_activity(*op, path2.as_ref())),
                device: device(ctx, full),
                actor: actor_obj(),
                file: file_obj(&path.path, type_id, full),
                file_result,
                status_id,
                status: caption(full, status_id, status),
                status_code,
                unmapped: Unmapped { tether: data },
            })
        }
        Event::Fork { .. } | Event::Exit { .. } => return None,
    }))
}

/// What an alert is about.
#[derive(Clone, Debug)]
pub struct Finding<'a> {
    /// Stable kind, e.g. `scope-violation`, `credential-expired`, `delegation-escalation`.
    pub kind: &'static str,
    pub title: String,
    pub desc: String,
    /// The acting process, when known.
    pub process: Option<&'a ProcInfo>,
    pub task: Option<&'a TaskView<'a>>,
    /// The audit event the alert is about (it becomes a related event).
    pub related: Option<&'a Audit>,
    /// Kind-specific details (the scope clause that failed, the refusal reason, ...).
    pub details: Details,
    /// Event time, ns since boot (None: now).
    pub time_ns: Option<u64>,
    pub severity_id: u8,
    /// What became of what the finding is about: an action's outcome (as in its audit
    /// event), or for a finding about no action what Tether did.
    pub outcome: Concluded<'a>,
    /// The rule that decided, when one did (`policy`, `finding_info.analytic`).
    pub rule: Option<RuleRef<'a>>,
}

/// The rule behind a finding.
#[derive(Debug, Clone, Copy)]
pub struct RuleRef<'a> {
    /// `guardrail:<id>`, `scope:<clause>`, `unbound`, `credential-expired`, ...
    pub name: &'a str,
    pub reason: &'a str,
    pub enforced: bool,
    /// ATT&CK technique ids of a guardrail.
    pub attack: &'a [String],
}

/// The ATT&CK version the names below are from.
const ATTACK_VERSION: &str = "v16";

/// Name and tactic (uid, name) of the ATT&CK techniques the shipped guardrails use; other ids
/// are written by their uid alone.
fn technique(uid: &str) -> Option<(&'static str, &'static str, &'static str)> {
    Some(match uid {
        "T1552.005" => ("Cloud Instance Metadata API", "TA0006", "Credential Access"),
        "T1552.001" => ("Credentials In Files", "TA0006", "Credential Access"),
        "T1098.004" => ("SSH Authorized Keys", "TA0003", "Persistence"),
        "T1053.003" => ("Cron", "TA0003", "Persistence"),
        "T1543.002" => ("Systemd Service", "TA0003", "Persistence"),
        "T1136.001" => ("Local Account", "TA0003", "Persistence"),
        "T1611" => ("Escape to Host", "TA0004", "Privilege Escalation"),
        "T1610" => ("Deploy Container", "TA0005", "Defense Evasion"),
        "T1040" => ("Network Sniffing", "TA0006", "Credential Access"),
        "T1006" => ("Direct Volume Access", "TA0005", "Defense Evasion"),
        "T1562.001" => ("Disable or Modify Tools", "TA0005", "Defense Evasion"),
        _ => return None,
    })
}

fn attacks(ids: &[String]) -> Vec<Attack> {
    ids.iter()
        .map(|uid| {
            let known = technique(uid);
            Attack {
                technique: Technique {
                    uid: uid.clone(),
                    name: known.map(|k| k.0),
                },
                tactic: known.map(|k| Technique {
                    uid: k.1.to_string(),
                    name: Some(k.2),
                }),
                version: ATTACK_VERSION,
            }
        })
        .collect()
}

/// What became of what a finding is about: its `action_id` / `disposition_id`. Allowed only
/// where it was.
#[derive(Debug, Clone, Copy)]
pub enum Concluded<'a> {
    /// An action: its audit event's outcome (refused, killed, or let through).
    Action(&'a Outcome),
    /// A request Tether refused before anything ran (a credential, a binding, an admin call,
    /// tampering the kernel refused): Denied / Blocked.
    Refused,
    /// Seen and let be, as the rules say (an identity mismatch under `alert`): Observed /
    /// Detected.
    Detected,
    /// About Tether itself (a loss, a restart, a failing sink): Observed / Logged.
    Logged,
    /// Tether's own kernel state was changed and Tether put it back: Modified / Corrected.
    Corrected,
}

impl Concluded<'_> {
    fn outcome(self) -> Outcome {
        let (action_id, action, disposition_id, disposition, denied) = match self {
            Concluded::Action(o) => return o.clone(),
            Concluded::Refused => (2, "Denied", 2, "Blocked", true),
            Concluded::Detected => (3, "Observed", 15, "Detected", false),
            Concluded::Logged => (3, "Observed", 17, "Logged", false),
            Concluded::Corrected => (4, "Modified", 11, "Corrected", false),
        };
        Outcome {
            action_id,
            action,
            disposition_id,
            disposition,
            by: None,
            denied,
            killed: false,
            after_effect: false,
        }
    }
}

/// An alert as an OCSF Detection Finding (2004, activity Create), for an actor where
/// `identity` says.
pub fn finding(ctx: &Context, seq: u64, f: Finding, identity: Identity) -> DetectionFinding {
    let time = match f.time_ns {
        Some(ns) => ctx.epoch_ms(ns),
        None => {
            (std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_millis())
                .unwrap_or(0)) as i64
        }
    };
    let uid = joined(&ctx.uid_prefix, &[seq]);
    let (task, delegation) = task_data(f.task);
    let outcome = f.outcome.outcome();
    DetectionFinding {
        // The action's outcome, as in its audit event (refused, killed, or let through), or
        // what Tether did about what is not an action.
        base: Base::new(
            Class::Finding,
            (1, "Create"),
            time,
            f.severity_id,
            Some(&outcome),
            metadata(uid.clone(), "alert", f.task),
            true,
        ),
        is_alert: true,
        device: device(ctx, true),
        finding_info: FindingInfo {
            uid,
            title: f.title,
            desc: f.desc,
            types: [f.kind],
            product: Product {
                name: PRODUCT,
                vendor_name: PRODUCT,
                version: None,
            },
            analytic: Analytic {
                uid: f.rule.map_or(f.kind, |r| r.name).to_string(),
                name: f.rule.map_or(f.kind, |r| r.name).to_string(),
                type_id: 1,
                kind: "Rule",
            },
            attacks: f.rule.map(|r| attacks(r.attack)).unwrap_or_default(),
            related_events: f.related.map(|r| {
                [Related {
                    uid: r.base().metadata.uid.clone(),
                    type_uid: r.base().type_uid,
                }]
            }),
        },
        policy: f.rule.map(|r| Policy {
            uid: r.name.to_string(),
            name: r.name.to_string(),
            desc: r.reason.to_string(),
            is_applied: r.enforced,
        }),
        count: None,
        unmapped: Unmapped {
            tether: FindingData {
                alert: f.kind,
                task,
                delegation,
                details: f.details,
                actor: f.process.map(|p| ActorProcess {
                    process: process_obj(ctx, p, None, true),
                }),
                identity,
                folded: None,
            },
        },
    }
}

/// The details of a finding about a rule's decision on an action.
pub fn decision_details(d: &Decision, outcome: &Outcome, state: Option<CredState>) -> Details {
    let v = d.violation.as_ref();
    Details::Decision(DecisionDetails {
        rule: d.rule.clone(),
        action: d.action.map(|a| a.as_str()),
        mode: d.mode.as_str(),
        would: d.would().map(|a| a.as_str()),
        reason: d.reason.clone(),
        outcome: outcome.clone(),
        clause: v.map(|v| v.clause),
        attempted: v.map(|v| v.attempted.clone()),
        allowed: v.map(|v| v.allowed.clone()),
        state: state.map(CredState::as_str),
    })
}

/// What the tests of the records and of the emitter build them from.
#[cfg(test)]
pub(crate) mod testing {
    use super::*;
    use crate::{
        events::{Actor, PathOrigin},
        lineage::{ProcSnapshot, Reason},
    };

    pub fn allowed() -> Outcome {
        crate::contain::outcome(
            None,
            &KernelVerdict::default(),
            "m",
            None,
            false,
            crate::contain::DaemonAct::None,
            false,
        )
    }

    pub fn ctx() -> Context {
        Context {
            hostname: "node-1".into(),
            boot_epoch_ns: 1_700_000_000_000_000_000,
            ticks_per_sec: 100,
            fmod_ret: false,
            uid_prefix: "b00t-1".into(),
            boot: "b00t".into(),
        }
    }

    /// A process of uid 1000 as /proc would show it; its comm is argv[0].
    pub fn snapshot(pid: u32, ppid: u32, start: u64, exe: &str, argv: &[&str]) -> ProcSnapshot {
        ProcSnapshot {
            pid,
            ppid,
            start,
            exe: exe.into(),
            argv: argv.iter().map(|a| a.to_string()).collect(),
            comm: argv[0].into(),
            uid: 1000,
        }
    }

    /// The task of alice's agent (`chain`), valid, with `sandbox`.
    pub fn task_view<'a>(chain: &'a [String], sandbox: Option<&'a crate::contain::sandbox::Layers>) -> TaskView<'a> {
        TaskView {
            jti: "j1",
            iss: "https://issuer.example",
            sub: "alice",
            exp: 5,
            state: CredState::Valid,
            kernel_expired: false,
            chain,
            sandbox,
            scope_source: "scope_string",
            txn: Some("txn-7"),
        }
    }

    pub fn table_with_root() -> (ProcessTable, ProcInfo) {
        let mut t = ProcessTable::new(100);
        let snap = snapshot(42, 1, 500, "/usr/bin/bash", &["bash", "run.sh"]);
        let k = t.insert_snapshot(&snap, Reason::Registered, None);
        let p = t.get(&k).unwrap().clone();
        (t, p)
    }

    pub fn actor() -> Actor {
        Actor {
            tgid: 42,
            tid: 43,
            uid: 1000,
            gid: 1000,
            comm: "bash".into(),
            cgroup_id: 1,
            start_ns: 5_000_000_000,
            ktime_ns: 6_000_000_000,
            task: 0,
            task_expired: false,
            kernel: Default::default(),
            guard_set: 0,
            hook: 0,
        }
    }

    pub fn rp(path: &str, origin: PathOrigin) -> ReportedPath {
        ReportedPath {
            path: path.into(),
            raw: path.as_bytes().to_vec(),
            origin,
            truncated: false,
        }
    }

    /// A write-open of `path` by the actor.
    pub fn file_write(path: &str) -> Event {
        Event::File {
            actor: actor(),
            op: FileOp::OpenWrite,
            syscall_nr: Some(257),
            ret: 3,
            flags: 0o1101,
            mode: 0o644,
            owner: None,
            path: rp(path, PathOrigin::KernelDirAndName),
            path2: None,
            lsm: None,
            object: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::{Value, json};

    use super::{testing::*, *};
    use crate::events::{Actor, PathOrigin, Transport};

    /// An audit event with no decision, as JSON.
    fn audit_json(ev: &Event, p: &ProcInfo, t: &ProcessTable, seq: u64) -> Option<Value> {
        let outcome = allowed();
        let verdict = Verdict {
            mechanism: &ctx().mechanism(ev),
            outcome: &outcome,
            kernel: KernelVerdict::default(),
            decision: None,
        };
        let identity = Identity {
            node: "node-1".into(),
            ..Default::default()
        };
        audit(&ctx(), seq, ev, p, p, t, None, verdict, Form::Full(identity)).map(|a| serde_json::to_value(a).unwrap())
    }

    #[test]
    fn network_event_has_standard_fields_and_tether_lineage() {
        let (t, p) = table_with_root();
        let ev = Event::Net {
            actor: Actor {
                hook: agent_common::hook::CGROUP_CONNECT,
                ..actor()
            },
            op: NetOp::Connect,
            transport: Transport::Tcp,
            addr: "127.0.0.1".parse().unwrap(),
            port: 8080,
            local_port: 0,
            via_lsm: false,
        };
        let v = audit_json(&ev, &p, &t, 7).expect("an action");
        assert_eq!(v["class_uid"], 4001);
        assert_eq!(v["type_uid"], 400101);
        assert_eq!(v["time"], 1_700_000_006_000i64);
        assert_eq!(v["dst_endpoint"], json!({"ip": "127.0.0.1", "port": 8080}));
        assert_eq!(v["connection_info"]["protocol_name"], "tcp");
        assert!(
            v.get("actor").is_none() && v.get("device").is_none(),
            "not in class 4001"
        );
        assert_eq!(v["src_endpoint"]["hostname"], "node-1");
        let actor = &v["unmapped"]["tether"]["actor"];
        assert_eq!(actor["process"]["pid"], 42);
        assert_eq!(actor["process"]["cmd_line"], "bash run.sh");
        assert_eq!(actor["process"]["file"]["path"], "/usr/bin/bash");
        assert_eq!(actor["user"]["uid"], "1000");
        assert_eq!(v["metadata"]["uid"], "b00t-1-7");
        assert_eq!(v["metadata"]["version"], "1.8.0");
        assert_eq!(v["unmapped"]["tether"]["lineage"][0]["pid"], 42);
        assert_eq!(v["unmapped"]["tether"]["tracked_by"], "registered");
        assert_eq!(v["unmapped"]["tether"]["mechanism"], "cgroup_sock_addr/connect");
        assert!(v.get("tether").is_none(), "no top-level tether field");
    }

    #[test]
    fn lineage_and_fork_are_not_audit_actions() {
        let (t, p) = table_with_root();
        let ev = Event::Exit {
            actor: actor(),
            exit_code: Some(0),
        };
        assert!(audit_json(&ev, &p, &t, 1).is_none());
    }

    #[test]
    fn failed_write_reports_errno() {
        let (t, p) = table_with_root();
        let path = ReportedPath {
            path: "/etc/shadow".into(),
            raw: b"/etc/shadow".to_vec(),
            origin: PathOrigin::KernelDirAndName,
            truncated: false,
        };
        let ev = Event::File {
            actor: actor(),
            op: FileOp::OpenWrite,
            syscall_nr: Some(257),
            ret: -13,
            flags: 0o1101,
            mode: 0o644,
            owner: None,
            path,
            path2: None,
            lsm: None,
            object: None,
        };
        let v = audit_json(&ev, &p, &t, 2).unwrap();
        assert_eq!(v["class_uid"], 1001);
        assert_eq!(v["type_uid"], 100114);
        assert_eq!(v["file"]["name"], "shadow");
        assert_eq!(v["file"]["parent_folder"], "/etc");
        assert_eq!(v["status_code"], "EACCES");
        assert_eq!(v["unmapped"]["tether"]["file"]["path"]["origin"], "kernel-dir+name");
    }

    #[test]
    fn a_finding_says_what_became_of_its_action() {
        let refused = Outcome {
            action_id: 2,
            action: "Denied",
            disposition_id: 2,
            disposition: "Blocked",
            by: Some("lsm/file_open".into()),
            denied: true,
            killed: false,
            after_effect: false,
        };
        let (_, p) = table_with_root();
        let f = |outcome| Finding {
            kind: "guardrail-violation",
            title: "t".into(),
            desc: "d".into(),
            process: Some(&p),
            task: None,
            related: None,
            details: Details::Empty {},
            time_ns: None,
            severity_id: 4,
            outcome,
            rule: None,
        };
        let v = |f| serde_json::to_value(finding(&ctx(), 1, f, Identity::default())).unwrap();
        let v = v(f(Concluded::Action(&refused)));
        assert_eq!(
            (&v["action_id"], &v["action"], &v["disposition_id"], &v["disposition"]),
            (&json!(2), &json!("Denied"), &json!(2), &json!("Blocked"))
        );
        // A finding about no action says what Tether did: never Allowed.
        for (c, want) in [
            (Concluded::Refused, (2, "Denied", 2, "Blocked")),
            (Concluded::Detected, (3, "Observed", 15, "Detected")),
            (Concluded::Logged, (3, "Observed", 17, "Logged")),
            (Concluded::Corrected, (4, "Modified", 11, "Corrected")),
        ] {
            let v = serde_json::to_value(finding(&ctx(), 2, f(c), Identity::default())).unwrap();
            assert_eq!(
                (&v["action_id"], &v["action"], &v["disposition_id"], &v["disposition"]),
                (&json!(want.0), &json!(want.1), &json!(want.2), &json!(want.3)),
                "{c:?}"
            );
        }
    }
    /// One event of every kind and shape the daemon writes.
    fn samples() -> Vec<Event> {
        use crate::{
            credentials::scope::Grant,
            events::{Object, UnixPeer},
        };
        let file = |op, ret, path2: Option<ReportedPath>, object, owner| Event::File {
            actor: actor(),
            op,
            syscall_nr: if op == FileOp::Create { None } else { Some(257) },
            ret,
            flags: 0o1101,
            mode: 0o644,
            owner,
            path: rp("/work/out/a.txt", PathOrigin::KernelDirAndName),
            path2,
            lsm: None,
            object,
        };
        let net = |op, addr: &str| Event::Net {
            actor: actor(),
            op,
            transport: Transport::Tcp,
            addr: addr.parse().unwrap(),
            port: 8443,
            local_port: 40000,
            via_lsm: false,
        };
        let exec = |failed| Event::Exec {
            actor: actor(),
            ppid: 1,
            exe: rp("/usr/bin/curl", PathOrigin::KernelObject),
            filename: "curl".into(),
            argv: vec!["curl".into(), "-s".into()],
            argv_truncated: false,
            newly_selected: false,
            via_lsm: false,
            failed,
        };
        let object = |kind| Some(Object { kind, nlink: 2 });
        vec![
            exec(None),
            exec(Some(-13)),
            Event::Sandbox {
                actor: actor(),
                syscall_nr: 425,
                call: "io_uring_setup",
            },
            Event::Uring {
                actor: actor(),
                op: UringOp::Setup,
                fd: -1,
            },
            Event::Uring {
                actor: actor(),
                op: UringOp::Enter,
                fd: 5,
            },
            net(NetOp::Connect, "10.1.2.3"),
            net(NetOp::Send, "::1"),
            net(NetOp::Accept, "127.0.0.1"),
            net(NetOp::Listen, "0.0.0.0"),
            net(NetOp::Bind, "::"),
            Event::Unix {
                actor: actor(),
                op: UnixOp::Connect,
                sock_type: 1,
                peer: UnixPeer::File(rp("/run/docker.sock", PathOrigin::KernelObject)),
            },
            Event::Unix {
                actor: actor(),
                op: UnixOp::Send,
                sock_type: 2,
                peer: UnixPeer::Abstract("x".into()),
            },
            Event::Unix {
                actor: actor(),
                op: UnixOp::Send,
                sock_type: 2,
                peer: UnixPeer::AsGiven("rel/sock".into()),
            },
            Event::Socket {
                actor: actor(),
                kind: Grant::Raw,
                family: 2,
                sock_type: 3,
                protocol: 1,
            },
            file(FileOp::OpenWrite, 3, None, object(ObjectKind::Regular), None),
            file(FileOp::OpenWrite, -13, None, None, None),
            file(
                FileOp::Rename,
                0,
                Some(rp("/work/out/b.txt", PathOrigin::KernelDirAndName)),
                None,
                None,
            ),
            file(
                FileOp::Link,
                0,
                Some(rp("/work/out/l", PathOrigin::KernelDirAndName)),
                None,
                None,
            ),
            file(FileOp::Symlink, 0, Some(rp("../etc", PathOrigin::NameOnly)), None, None),
            file(
                FileOp::SetXattr,
                0,
                Some(rp("security.capability", PathOrigin::NameOnly)),
                None,
                None,
            ),
            file(
                FileOp::RemoveXattr,
                0,
                Some(rp("user.note", PathOrigin::NameOnly)),
                None,
                None,
            ),
            file(
                FileOp::Chown,
                0,
                None,
                object(ObjectKind::Directory),
                Some((Some(0), None)),
            ),
            file(FileOp::Chmod, 0, None, object(ObjectKind::Symlink), None),
            file(
                FileOp::Mknod,
                0,
                None,
                object(ObjectKind::Device {
                    block: false,
                    major: 1,
                    minor: 3,
                }),
                None,
            ),
            file(FileOp::Mkdir, 0, None, None, None),
            file(FileOp::Rmdir, 0, None, object(ObjectKind::Fifo), None),
            file(FileOp::Unlink, 0, None, object(ObjectKind::Socket), None),
            file(FileOp::Truncate, 0, None, None, None),
            file(FileOp::Utimes, 0, None, None, None),
            file(FileOp::Create, -1, None, None, None),
        ]
    }

    /// Every record Tether writes, of every class and shape, is valid against its OCSF class
    /// schema (tests/data/ocsf: required fields, types, no field outside the class).
    #[test]
    fn every_record_is_valid_against_its_ocsf_class_schema() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/data/ocsf");
        let validators: std::collections::HashMap<u32, jsonschema::Validator> =
            [Class::FileSystem, Class::Process, Class::Finding, Class::Network]
                .into_iter()
                .map(|class| {
                    let path = dir.join(format!("{}.schema.json", class.schema()));
                    let schema: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
                    (
                        class.uid(),
                        jsonschema::validator_for(&schema).expect("a valid JSON Schema"),
                    )
                })
                .collect();
        let errors = |class: Class, v: &Value| -> Vec<String> {
            validators[&class.uid()]
                .iter_errors(v)
                .map(|e| format!("{e} at {}", e.instance_path()))
                .collect()
        };
        let check = |class: Class, v: &Value| {
            let errors = errors(class, v);
            assert!(errors.is_empty(), "{}: {errors:#?}\n{v:#}", class.name());
            assert_eq!(v["class_uid"], class.uid());
        };
        let (t, p) = table_with_root();
        let chain = vec!["alice".to_string(), "agent".to_string()];
        let layers = crate::contain::sandbox::Layers::default();
        let view = task_view(&chain, Some(&layers));
        let decision = Decision {
            action: Some(crate::model::Action::Deny),
            rule: "guardrail:cloud-metadata".into(),
            reason: "outside the scope".into(),
            severity: crate::model::Severity::High,
            mode: crate::model::Mode::Enforce,
            violation: None,
            attack: vec!["T1552.005".into(), "T9999".into()],
        };
        let denied = crate::contain::outcome(
            Some(&decision),
            &KernelVerdict {
                denied: true,
                ..Default::default()
            },
            "lsm/file_open",
            Some(-1),
            false,
            crate::contain::DaemonAct::None,
            false,
        );
        let identity = Identity {
            node: "node-1".into(),
            container: Some(crate::model::Container {
                id: "ab".repeat(32),
                runtime: crate::model::Runtime::Containerd,
            }),
            pod: Some(crate::model::PodRef::Unresolved {
                uid: "u".into(),
                resolved: false,
            }),
        };
        let allowed = allowed();
        for (i, ev) in samples().iter().enumerate() {
            for task in [None, Some(&view)] {
                // Both forms, of an allowed action and of a refused one.
                for (outcome, decision) in [(&allowed, None), (&denied, Some(&decision))] {
                    for form in [Form::Full(identity.clone()), Form::Compact] {
                        let verdict = Verdict {
                            mechanism: &ctx().mechanism(ev),
                            outcome,
                            kernel: ev.actor().kernel,
                            decision,
                        };
                        let record = audit(&ctx(), i as u64, ev, &p, &p, &t, task, verdict, form).unwrap();
                        check(record.class(), &serde_json::to_value(&record).unwrap());
                    }
                }
                let verdict = Verdict {
                    mechanism: &ctx().mechanism(ev),
                    outcome: &denied,
                    kernel: ev.actor().kernel,
                    decision: Some(&decision),
                };
                let record = audit(&ctx(), i as u64, ev, &p, &p, &t, task, verdict, Form::Compact).unwrap();
                let f = Finding {
                    kind: decision.alert_kind(),
                    title: "t".into(),
                    desc: "d".into(),
                    process: Some(&p),
                    task,
                    related: Some(&record),
                    details: decision_details(&decision, &denied, task.map(|t| t.state)),
                    time_ns: Some(1),
                    severity_id: decision.severity.ocsf_id(),
                    outcome: Concluded::Action(&denied),
                    rule: Some(RuleRef {
                        name: &decision.rule,
                        reason: &decision.reason,
                        enforced: true,
                        attack: &decision.attack,
                    }),
                };
                // The same finding about no action, each way Tether concludes one.
                for c in [
                    Concluded::Refused,
                    Concluded::Detected,
                    Concluded::Logged,
                    Concluded::Corrected,
                ] {
                    let g = Finding {
                        outcome: c,
                        rule: None,
                        related: None,
                        details: Details::Empty {},
                        ..f.clone()
                    };
                    check(
                        Class::Finding,
                        &serde_json::to_value(finding(&ctx(), 98, g, identity.clone())).unwrap(),
                    );
                }
                let mut finding = finding(&ctx(), 99, f, identity.clone());
                let mut v = serde_json::to_value(&finding).unwrap();
                check(Class::Finding, &v);
                // The rule names the finding's analytic and policy; its ATT&CK techniques are
                // attacks, named where Tether knows them.
                assert_eq!(v["finding_info"]["analytic"]["name"], "guardrail:cloud-metadata");
                assert_eq!(v["finding_info"]["analytic"]["type_id"], 1);
                assert_eq!(v["policy"]["uid"], "guardrail:cloud-metadata");
                assert_eq!(v["policy"]["is_applied"], true);
                let a = &v["finding_info"]["attacks"];
                assert_eq!(a[0]["technique"]["uid"], "T1552.005");
                assert_eq!(a[0]["technique"]["name"], "Cloud Instance Metadata API");
                assert_eq!(a[0]["tactic"]["uid"], "TA0006");
                assert_eq!(a[1]["technique"], json!({"uid": "T9999"}));
                // The check can fail: a field outside the class is refused.
                v["tether"] = json!({});
                assert!(!errors(Class::Finding, &v).is_empty());
                finding.count = Some(3);
                check(Class::Finding, &serde_json::to_value(&finding).unwrap());
            }
        }
    }

    /// The compact form refers to the process by the uid its full form gave it, and carries
    /// what changes from one action to the next; the full form is self-contained.
    #[test]
    fn a_compact_event_refers_to_the_full_form_by_process_uid() {
        let mut t = ProcessTable::new(100);
        let agent = snapshot(40, 1, 400, "/usr/bin/agent", &["agent", "--serve"]);
        let root = t.insert_snapshot(&agent, crate::lineage::Reason::Registered, None);
        let bash = snapshot(42, 40, 500, "/usr/bin/bash", &["bash", "run.sh"]);
        let k = t.insert_snapshot(&bash, crate::lineage::Reason::Adopted, Some(root));
        let p = t.get(&k).unwrap().clone();
        let chain = vec!["alice".to_string(), "agent".to_string()];
        let view = task_view(&chain, None);
        let outcome = allowed();
        let ev = file_write("/work/out/a.txt");
        let render = |form| {
            let verdict = Verdict {
                mechanism: "tracepoint/syscalls",
                outcome: &outcome,
                kernel: KernelVerdict::default(),
                decision: None,
            };
            let identity = Identity {
                node: "node-1".into(),
                ..Default::default()
            };
            let form = match form {
                true => Form::Full(identity),
                false => Form::Compact,
            };
            serde_json::to_value(audit(&ctx(), 1, &ev, &p, &p, &t, Some(&view), verdict, form).unwrap()).unwrap()
        };
        let (full, compact) = (render(true), render(false));
        let (fp, cp) = (&full["actor"]["process"], &compact["actor"]["process"]);
        assert_eq!(fp["uid"], "b00t-42-500");
        assert_eq!(fp["parent_process"], json!({"pid": 40, "uid": "b00t-40-400"}));
        let ft = &full["unmapped"]["tether"];
        let lineage: Vec<&Value> = ft["lineage"].as_array().unwrap().iter().map(|a| &a["uid"]).collect();
        assert_eq!(lineage, [&json!("b00t-42-500"), &json!("b00t-40-400")], "{ft}");
        assert_eq!(ft["agent_root"]["uid"], "b00t-40-400");
        assert_eq!(ft["delegation"], json!(["alice", "agent"]));
        assert_eq!(ft["task"]["iss"], "https://issuer.example");
        assert_eq!((&ft["node"], &ft["tracked_by"]), (&json!("node-1"), &json!("adopted")));
        assert_eq!(fp["cmd_line"], "bash run.sh");
        assert!(ft["outcome"].is_object() && ft["kernel_verdict"].is_object());
        // The compact event: the same uid, pid, name, thread and parent; nothing else of the
        // process, no lineage, no identity, no default outcome or verdict.
        assert_eq!(
            cp,
            &json!({"pid": 42, "uid": "b00t-42-500", "name": "bash", "tid": 43,
                    "parent_process": {"pid": 40, "uid": "b00t-40-400"}})
        );
        let ct = &compact["unmapped"]["tether"];
        for absent in [
            "lineage",
            "delegation",
            "agent_root",
            "tracked_by",
            "node",
            "cgroup_id",
            "outcome",
            "kernel_verdict",
        ] {
            assert!(ct.get(absent).is_none(), "{absent} in a compact event: {ct}");
        }
        assert_eq!(
            ct["task"],
            json!({"jti": "j1", "scope_source": "scope_string", "state": "valid"})
        );
        // Every event of a task names where its scope came from and carries its transaction.
        assert_eq!(full["unmapped"]["tether"]["task"]["scope_source"], "scope_string");
        for e in [&full, &compact] {
            assert_eq!(e["metadata"]["correlation_uid"], "txn-7", "{e}");
        }
        assert_eq!(ct["file"]["op"], "open-write", "per-event data in both");
        assert_eq!(
            ct["file"]["path"],
            json!({"origin": "kernel-dir+name"}),
            "not truncated"
        );
        assert_eq!(full["unmapped"]["tether"]["file"]["path"]["truncated"], false);
        assert_eq!(
            compact["file"],
            json!({"path": "/work/out/a.txt", "name": "a.txt", "type_id": 0})
        );
        assert_eq!(full["file"]["parent_folder"], "/work/out");
        // The captions the OCSF schema gives for an id are left to the receiver.
        for caption in [
            "class_name",
            "category_name",
            "activity_name",
            "severity",
            "action",
            "disposition",
            "status",
        ] {
            assert!(compact.get(caption).is_none() && full[caption].is_string(), "{caption}");
        }
        assert_eq!(
            (&compact["class_uid"], &compact["activity_id"]),
            (&json!(1001), &json!(14))
        );
        assert_eq!(compact["actor"]["user"], full["actor"]["user"]);
        let (fl, cl) = (full.to_string().len(), compact.to_string().len());
        assert!(cl * 3 < fl * 2, "compact {cl} bytes, full {fl}: {compact}");
    }
}
