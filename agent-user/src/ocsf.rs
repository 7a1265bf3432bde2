//! OCSF 1.8 serialisation of audit events: Process Activity (1007) for exec, Network Activity
//! (4001) for connects and sends, File System Activity (1001) for writes. Standard fields
//! wherever OCSF has one; Tether's own data (lineage, tracking reason, path provenance) under
//! `unmapped.tether`, since every OCSF class forbids unknown top-level fields. Pure.
use serde_json::{Value, json};

use crate::{
    contain::Outcome,
    credentials::tasks::CredState,
    events::{Event, FileOp, NetOp, ObjectKind, ReportedPath, UnixOp, UnixPeer, UringOp},
    lineage::{ProcInfo, ProcessTable, ticks_to_ns},
};

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
}

/// `unmapped.tether.task` and `unmapped.tether.delegation` of an action.
fn task_fields(task: Option<&TaskView>) -> (Value, Value) {
    match task {
        Some(t) => (
            json!({"jti": t.jti, "iss": t.iss, "sub": t.sub, "exp": t.exp, "state": t.state.as_str(),
                   "kernel_expired": t.kernel_expired, "sandbox": t.sandbox}),
            json!(t.chain),
        ),
        None => (json!({"state": CredState::None.as_str()}), json!([])),
    }
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
}

/// OCSF `metadata` of every object Tether writes.
fn metadata(uid: &str, log_name: &str) -> Value {
    json!({
        "product": {"name": PRODUCT, "vendor_name": PRODUCT, "version": env!("CARGO_PKG_VERSION")},
        "version": OCSF_VERSION,
        "uid": uid,
        "log_name": log_name,
    })
}

/// OCSF `device`: this host.
fn device(ctx: &Context) -> Value {
    json!({"hostname": ctx.hostname, "type_id": 1, "type": "Server"})
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

fn process_obj(ctx: &Context, p: &ProcInfo, tid: Option<u32>) -> Value {
    let mut v = json!({
        "pid": p.key.pid,
        "name": p.comm,
        "cmd_line": p.cmd_line(),
        "created_time": ctx.start_ms(p.key.start),
        "user": {"uid": p.uid.to_string()},
        "parent_process": {"pid": p.ppid},
    });
    if !p.exe.is_empty() {
        v["file"] = json!({"path": p.exe, "name": basename(&p.exe), "type_id": 1, "type": "Regular File"});
        v["path"] = json!(p.exe);
    }
    if let Some(tid) = tid {
        v["tid"] = json!(tid);
    }
    v
}

/// An OCSF `file` object for a path, with its type (`type_id`, `type`).
fn file_obj(path: &str, (type_id, type_name): (u8, &str)) -> Value {
    json!({
        "path": path,
        "name": basename(path),
        "parent_folder": parent_folder(path),
        "type_id": type_id,
        "type": type_name,
    })
}

fn lineage(ctx: &Context, table: &ProcessTable, p: &ProcInfo) -> Value {
    let chain: Vec<Value> = table
        .lineage(&p.key)
        .into_iter()
        .map(|q| {
            json!({
                "pid": q.key.pid,
                "start_time": ctx.start_ms(q.key.start),
                "exe": q.exe,
                "cmd_line": q.cmd_line(),
                "tracked_by": q.reason.as_str(),
                "exited": q.exited,
            })
        })
        .collect();
    Value::Array(chain)
}

fn path_note(p: &ReportedPath) -> Value {
    json!({"origin": p.origin.as_str(), "truncated": p.truncated})
}

/// Serialises one audit event. `actor` is the acting process as it was when it acted (for an
/// exec: before the exec); `after` is the process after the event (the new image for an exec).
/// Returns None for events that are not actions (fork, exit).
pub fn audit(
    ctx: &Context,
    seq: u64,
    event: &Event,
    actor: &ProcInfo,
    after: &ProcInfo,
    table: &ProcessTable,
    task: Option<&TaskView>,
) -> Option<Value> {
    let a = event.actor();
    let (class_uid, category_uid, class_name, category_name, activity_id, activity_name) = match event {
        Event::Exec { .. } => (1007, 1, "Process Activity", "System Activity", 1, "Launch"),
        Event::Sandbox { .. } => (1007, 1, "Process Activity", "System Activity", 99, "Syscall Refused"),
        Event::Uring { op, .. } => (
            1007,
            1,
            "Process Activity",
            "System Activity",
            99,
            match op {
                UringOp::Setup => "io_uring Setup",
                UringOp::Enter => "io_uring Enter",
            },
        ),
        Event::Net { op, .. } => {
            let (id, name) = match op {
                NetOp::Connect | NetOp::Accept => (1, "Open"),
                NetOp::Send => (6, "Traffic"),
                NetOp::Bind | NetOp::Listen => (7, "Listen"),
            };
            (4001, 4, "Network Activity", "Network Activity", id, name)
        }
        Event::Unix { op, .. } => {
            let (id, name) = match op {
                UnixOp::Connect => (1, "Open"),
                UnixOp::Send => (6, "Traffic"),
            };
            (4001, 4, "Network Activity", "Network Activity", id, name)
        }
        Event::Socket { .. } => (4001, 4, "Network Activity", "Network Activity", 99, "Socket Create"),
        Event::File { op, path2, .. } => {
            let (id, name) = match op {
                FileOp::OpenWrite => (14, "Open"),
                FileOp::Truncate => (3, "Update"),
                FileOp::Rename => (5, "Rename"),
                FileOp::Unlink | FileOp::Rmdir => (4, "Delete"),
                FileOp::Mkdir | FileOp::Link | FileOp::Symlink | FileOp::Create | FileOp::Mknod => (1, "Create"),
                FileOp::Chmod | FileOp::Chown => (7, "Set Security"),
                // Capabilities, security labels and ACLs are security; other attributes not.
                FileOp::SetXattr | FileOp::RemoveXattr
                    if path2
                        .as_ref()
                        .is_some_and(|n| n.path.starts_with("security.") || n.path.starts_with("system.")) =>
                {
                    (7, "Set Security")
                }
                FileOp::SetXattr | FileOp::RemoveXattr | FileOp::Utimes => (6, "Set Attributes"),
            };
            (1001, 1, "File System Activity", "System Activity", id, name)
        }
        Event::Fork { .. } | Event::Exit { .. } => return None,
    };
    let mut v = json!({
        "class_uid": class_uid,
        "class_name": class_name,
        "category_uid": category_uid,
        "category_name": category_name,
        "activity_id": activity_id,
        "activity_name": activity_name,
        "type_uid": class_uid * 100 + activity_id,
        "time": ctx.epoch_ms(a.ktime_ns),
        "severity_id": 1,
        "severity": "Informational",
        // Observation only so far: nothing is denied yet.
        "action_id": 1,
        "action": "Allowed",
        "disposition_id": 1,
        "disposition": "Allowed",
        "metadata": metadata(&format!("{}-{seq}", ctx.uid_prefix), "audit"),
        "device": device(ctx),
        "actor": {
            "process": process_obj(ctx, actor, Some(a.tid)),
            // The principal the task acts for, when there is one; else the OS user.
            "user": match task {
                Some(t) => json!({"name": t.sub, "uid": a.uid.to_string()}),
                None => json!({"uid": a.uid.to_string()}),
            },
        },
    });
    let (task_obj, delegation) = task_fields(task);
    let mut tether = json!({
        "task": task_obj,
        "delegation": delegation,
        "lineage": lineage(ctx, table, after),
        "agent_root": {"pid": after.root.pid, "start_time": ctx.start_ms(after.root.start)},
        "tracked_by": after.reason.as_str(),
        "cgroup_id": a.cgroup_id,
        // The kernel mechanism that saw this action (see `tether status` for all hooks).
        "mechanism": ctx.mechanism(event),
    });
    match event {
        Event::Exec {
            exe,
            filename,
            argv,
            argv_truncated,
            failed,
            ..
        } => {
            // The table already holds the new image (exe, argv) for `after`; for a refused
            // exec, the process as it still is.
            v["process"] = process_obj(ctx, after, Some(a.tid));
            tether["exec"] =
                json!({"filename": filename, "argv": argv, "argv_truncated": argv_truncated, "exe": path_note(exe)});
            tether["exec"]["exe"]["path"] = json!(exe.path);
            if let Some(errno) = failed {
                tether["exec"]["refused"] = json!({
                    "errno": -errno,
                    "error": std::io::Error::from_raw_os_error((-errno) as i32).to_string(),
                });
            }
        }
        Event::Net {
            transport,
            addr,
            port,
            local_port,
            op,
            ..
        } => {
            let endpoint = json!({"ip": addr.to_string(), "port": port});
            let (direction_id, direction) = if *op == NetOp::Connect || *op == NetOp::Send {
                (2, "Outbound")
            } else {
                (1, "Inbound")
            };
            match op {
                NetOp::Connect | NetOp::Send => v["dst_endpoint"] = endpoint,
                // A listen: the endpoint is the local one; an accept: from the peer to us.
                NetOp::Bind | NetOp::Listen => v["dst_endpoint"] = endpoint,
                NetOp::Accept => {
                    v["src_endpoint"] = endpoint;
                    v["dst_endpoint"] = json!({"hostname": ctx.hostname, "port": local_port});
                }
            }
            v["connection_info"] = json!({
                "protocol_name": transport.name(),
                "protocol_num": transport.number(),
                "protocol_ver_id": if addr.is_ipv4() { 4 } else { 6 },
                "direction_id": direction_id,
                "direction": direction,
            });
            tether["net"] = json!({"op": op.as_str()});
        }
        Event::Unix {
            op, sock_type, peer, ..
        } => {
            v["dst_endpoint"] = json!({"name": peer.judged_name()});
            v["connection_info"] = json!({
                "protocol_name": "unix",
                "direction_id": 2,
                "direction": "Outbound",
            });
            let (naming, note) = match peer {
                UnixPeer::File(p) => ("resolved", Some(path_note(p))),
                UnixPeer::Abstract(_) => ("abstract", None),
                UnixPeer::AsGiven(_) => ("as-given", None),
            };
            tether["unix"] = json!({
                "op": match op { UnixOp::Connect => "connect", UnixOp::Send => "send" },
                "sock_type": sock_type,
                "peer": peer.judged_name(),
                "naming": naming,
                "path": note,
            });
        }
        Event::Socket {
            kind,
            family,
            sock_type,
            protocol,
            ..
        } => {
            v["connection_info"] = json!({"protocol_num": protocol, "direction_id": 0, "direction": "Unknown"});
            tether["socket"] =
                json!({"kind": kind.as_str(), "family": family, "type": sock_type, "protocol": protocol});
        }
        Event::Sandbox { syscall_nr, call, .. } => {
            v["process"] = process_obj(ctx, after, Some(a.tid));
            tether["sandbox"] = json!({"layer": "seccomp", "call": call, "syscall_nr": syscall_nr});
        }
        Event::Uring { op, fd, .. } => {
            v["process"] = process_obj(ctx, after, Some(a.tid));
            tether["io_uring"] = json!({
                "op": match op { UringOp::Setup => "setup", UringOp::Enter => "enter" },
                "fd": if *op == UringOp::Enter { Some(*fd) } else { None },
            });
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
            v["file"] = file_obj(&path.path, type_id);
            if let (FileOp::Rename | FileOp::Link, Some(dst)) = (op, path2) {
                v["file_result"] = file_obj(&dst.path, (0, "Unknown"));
            }
            if *ret >= 0 {
                v["status_id"] = json!(1);
                v["status"] = json!("Success");
            } else {
                v["status_id"] = json!(2);
                v["status"] = json!("Failure");
                v["status_code"] = json!(format!("{:?}", nix::errno::Errno::from_raw((-*ret) as i32)));
            }
            let mut f = json!({
                "op": op.as_str(),
                "syscall_nr": syscall_nr,
                "ret": ret,
                "flags": flags,
                "mode": format!("{mode:o}"),
                "path": path_note(path),
            });
            if let Some(p2) = path2 {
                match op {
                    FileOp::SetXattr | FileOp::RemoveXattr => f["xattr"] = json!(p2.path),
                    _ => {
                        f[if *op == FileOp::Symlink {
                            "target"
                        } else {
                            "destination"
                        }] = json!({"path": p2.path, "origin": p2.origin.as_str(), "truncated": p2.truncated})
                    }
                }
            }
            if let Some(o) = object {
                f["object"] = json!({"nlink": o.nlink, "device": o.device_path()});
            }
            if let Some((uid, gid)) = owner {
                f["owner"] = json!({"uid": uid, "gid": gid});
            }
            tether["file"] = f;
        }
        Event::Fork { .. } | Event::Exit { .. } => unreachable!("returned above"),
    }
    if class_uid == 4001 {
        // Network Activity has no `actor` or `device` without OCSF's host profile: the host is
        // the source endpoint, and the acting process goes with Tether's own data.
        if let Some(obj) = v.as_object_mut() {
            obj.remove("device");
            if let Some(actor) = obj.remove("actor") {
                tether["actor"] = actor;
            }
        }
        // The host is the source, unless an accepted connection's peer is.
        if v.get("src_endpoint").is_none() {
            v["src_endpoint"] = json!({"hostname": ctx.hostname});
        }
    }
    v["unmapped"] = json!({"tether": tether});
    Some(v)
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
    /// The audit event the alert is about (its metadata.uid becomes a related event).
    pub related: Option<&'a Value>,
    /// Kind-specific details (the scope clause that failed, the refusal reason, ...).
    pub details: Value,
    /// Event time, ns since boot (None: now).
    pub time_ns: Option<u64>,
    pub severity_id: u8,
    /// What became of the action the finding is about (the audit event's outcome); None for
    /// a finding about no action (a refused credential, Tether's own losses).
    pub outcome: Option<&'a Outcome>,
}

/// Serialises an alert as an OCSF Detection Finding (2004, activity Create).
pub fn finding(ctx: &Context, seq: u64, f: &Finding) -> Value {
    let time = match f.time_ns {
        Some(ns) => ctx.epoch_ms(ns),
        None => {
            (std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_millis())
                .unwrap_or(0)) as i64
        }
    };
    let severity = match f.severity_id {
        1 => "Informational",
        2 => "Low",
        3 => "Medium",
        4 => "High",
        5 => "Critical",
        _ => "Unknown",
    };
    let uid = format!("{}-{seq}", ctx.uid_prefix);
    let mut info = json!({
        "uid": uid,
        "title": f.title,
        "desc": f.desc,
        "types": [f.kind],
        "product": {"name": PRODUCT, "vendor_name": PRODUCT},
    });
    if let Some(r) = f.related {
        info["related_events"] = json!([{
            "uid": r["metadata"]["uid"],
            "type_uid": r["type_uid"],
        }]);
    }
    let (task_obj, delegation) = task_fields(f.task);
    let mut tether = json!({
        "alert": f.kind,
        "task": task_obj,
        "delegation": delegation,
        "details": f.details,
    });
    if let Some(p) = f.process {
        tether["actor"] = json!({"process": process_obj(ctx, p, None)});
    }
    json!({
        "class_uid": 2004,
        "class_name": "Detection Finding",
        "category_uid": 2,
        "category_name": "Findings",
        "activity_id": 1,
        "activity_name": "Create",
        "type_uid": 200401,
        "time": time,
        "severity_id": f.severity_id,
        "severity": severity,
        "is_alert": true,
        // The action's outcome, as in its audit event (refused, killed, or let through).
        "action_id": f.outcome.map_or(1, |o| o.action_id),
        "action": f.outcome.map_or("Allowed", |o| o.action),
        "disposition_id": f.outcome.map_or(1, |o| o.disposition_id),
        "disposition": f.outcome.map_or("Allowed", |o| o.disposition),
        "metadata": metadata(&uid, "alert"),
        "device": device(ctx),
        "finding_info": info,
        "unmapped": {"tether": tether},
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        events::{Actor, PathOrigin, Transport},
        lineage::{ProcSnapshot, Reason},
    };

    fn ctx() -> Context {
        Context {
            hostname: "node-1".into(),
            boot_epoch_ns: 1_700_000_000_000_000_000,
            ticks_per_sec: 100,
            fmod_ret: false,
            uid_prefix: "b00t-1".into(),
        }
    }

    fn table_with_root() -> (ProcessTable, ProcInfo) {
        let mut t = ProcessTable::new(100);
        let snap = ProcSnapshot {
            pid: 42,
            ppid: 1,
            start: 500,
            exe: "/usr/bin/bash".into(),
            argv: vec!["bash".into(), "run.sh".into()],
            comm: "bash".into(),
            uid: 1000,
        };
        let k = t.insert_snapshot(&snap, Reason::Registered, None);
        let p = t.get(&k).unwrap().clone();
        (t, p)
    }

    fn actor() -> Actor {
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
        let v = audit(&ctx(), 7, &ev, &p, &p, &t, None).expect("an action");
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
        assert!(audit(&ctx(), 1, &ev, &p, &p, &t, None).is_none());
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
        let v = audit(&ctx(), 2, &ev, &p, &p, &t, None).unwrap();
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
            details: json!({}),
            time_ns: None,
            severity_id: 4,
            outcome,
        };
        let v = finding(&ctx(), 1, &f(Some(&refused)));
        assert_eq!(
            (&v["action_id"], &v["action"], &v["disposition_id"], &v["disposition"]),
            (&json!(2), &json!("Denied"), &json!(2), &json!("Blocked"))
        );
        // A finding about no action (Tether's own losses) keeps the neutral values.
        let v = finding(&ctx(), 2, &f(None));
        assert_eq!((&v["action_id"], &v["disposition_id"]), (&json!(1), &json!(1)));
    }
}
