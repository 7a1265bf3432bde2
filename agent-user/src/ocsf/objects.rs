//! The OCSF 1.8 records Tether writes, as types: the four classes (File System Activity 1001,
//! Process Activity 1007, Detection Finding 2004, Network Activity 4001), the standard objects
//! they hold, and Tether's own data under `unmapped.tether`. Serialising one of these is the
//! only way a record becomes JSON; the tests check every class against the schemas in
//! `tests/data/ocsf` (required fields present, no field outside the class).
//!
//! A field that is `Option` and skipped when `None` is absent from the record; an `Option`
//! without the skip is written as `null` (receivers rely on the field being there).
use serde::Serialize;

use crate::{
    contain::{Outcome, sandbox::Layers},
    model::{Identity, KernelVerdict},
};

/// The OCSF classes Tether writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Class {
    FileSystem,
    Process,
    Finding,
    Network,
}

impl Class {
    pub fn uid(self) -> u32 {
        match self {
            Class::FileSystem => 1001,
            Class::Process => 1007,
            Class::Finding => 2004,
            Class::Network => 4001,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Class::FileSystem => "File System Activity",
            Class::Process => "Process Activity",
            Class::Finding => "Detection Finding",
            Class::Network => "Network Activity",
        }
    }

    /// The class's schema file in `tests/data/ocsf` (without `.schema.json`).
    pub fn schema(self) -> &'static str {
        match self {
            Class::FileSystem => "1001-file_activity",
            Class::Process => "1007-process_activity",
            Class::Finding => "2004-detection_finding",
            Class::Network => "4001-network_activity",
        }
    }

    /// The class as a metrics label (`process_activity`, ...).
    pub fn label(self) -> &'static str {
        match self {
            Class::FileSystem => "file_system_activity",
            Class::Process => "process_activity",
            Class::Finding => "detection_finding",
            Class::Network => "network_activity",
        }
    }

    fn category(self) -> (u32, &'static str) {
        match self {
            Class::FileSystem | Class::Process => (1, "System Activity"),
            Class::Finding => (2, "Findings"),
            Class::Network => (4, "Network Activity"),
        }
    }
}

/// An OCSF severity (`severity_id`, `severity`).
pub fn severity_name(id: u8) -> &'static str {
    match id {
        1 => "Informational",
        2 => "Low",
        3 => "Medium",
        4 => "High",
        5 => "Critical",
        _ => "Unknown",
    }
}

/// The attributes every record shares (OCSF base event), in the order they are written.
///
/// A caption (the name beside an `_id`: `class_name`, `activity_name`, `severity`, ...) is
/// None in a compact audit event when the OCSF schema names the id (every id but 99,
/// Other): receivers derive it from the schema, as they resolve the process from its uid.
#[derive(Debug, Clone, Serialize)]
pub struct Base {
    pub class_uid: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub class_name: Option<&'static str>,
    pub category_uid: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub category_name: Option<&'static str>,
    pub activity_id: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub activity_name: Option<&'static str>,
    pub type_uid: u32,
    /// Epoch milliseconds.
    pub time: i64,
    pub severity_id: u8,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub severity: Option<&'static str>,
    pub action_id: u8,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub action: Option<&'static str>,
    pub disposition_id: u8,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub disposition: Option<&'static str>,
    pub metadata: Metadata,
}

/// The caption of an enum id as written: always in full records, only for 99 (Other) in
/// compact ones (see [`Base`]).
pub fn caption<I: Into<u32>>(full: bool, id: I, name: &'static str) -> Option<&'static str> {
    (full || id.into() == 99).then_some(name)
}

impl Base {
    /// A record of `class`, activity (`activity_id`, `activity_name`), at `time` (epoch ms),
    /// with its outcome (None: a finding about no action, or an audit event before its
    /// outcome: Allowed); `captions`: every caption, or only those the schema cannot give.
    pub fn new(
        class: Class,
        (activity_id, activity_name): (u32, &'static str),
        time: i64,
        severity_id: u8,
        outcome: Option<&Outcome>,
        metadata: Metadata,
        captions: bool,
    ) -> Base {
        let (category_uid, category_name) = class.category();
        let (action_id, action) = outcome.map_or((1, "Allowed"), |o| (o.action_id, o.action));
        let (disposition_id, disposition) = outcome.map_or((1, "Allowed"), |o| (o.disposition_id, o.disposition));
        Base {
            class_uid: class.uid(),
            class_name: captions.then_some(class.name()),
            category_uid,
            category_name: captions.then_some(category_name),
            activity_id,
            activity_name: caption(captions, activity_id, activity_name),
            type_uid: class.uid() * 100 + activity_id,
            time,
            severity_id,
            severity: caption(captions, severity_id, severity_name(severity_id)),
            action_id,
            action: caption(captions, action_id, action),
            disposition_id,
            disposition: caption(captions, disposition_id, disposition),
            metadata,
        }
    }
}

/// OCSF `metadata`.
#[derive(Debug, Clone, Serialize)]
pub struct Metadata {
    pub product: Product,
    pub version: &'static str,
    pub uid: String,
    pub log_name: &'static str,
    /// The task's transaction (a Transaction Token's `txn`), on every event of the task.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub correlation_uid: Option<String>,
}

/// OCSF `product`.
#[derive(Debug, Clone, Serialize)]
pub struct Product {
    pub name: &'static str,
    pub vendor_name: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub version: Option<&'static str>,
}

/// OCSF `device`: this host.
#[derive(Debug, Clone, Serialize)]
pub struct Device {
    pub hostname: String,
    pub type_id: u8,
    #[serde(rename = "type", skip_serializing_if = "Option::is_none")]
    pub kind: Option<&'static str>,
}

/// OCSF `process`. `uid` names the process for as long as the node runs (boot, pid, start
/// time: a reused pid is another process); `detail` is its identity in full, left out of an
/// audit event whose receivers already hold it (the compact form, see [`AuditData`]).
#[derive(Debug, Clone, Serialize)]
pub struct Process {
    pub pid: u32,
    pub uid: String,
    pub name: String,
    #[serde(flatten)]
    pub detail: Option<ProcessDetail>,
    pub parent_process: ParentProcess,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tid: Option<u32>,
}

/// What a process is: its command line, start, user and image.
#[derive(Debug, Clone, Serialize)]
pub struct ProcessDetail {
    pub cmd_line: String,
    /// Epoch milliseconds.
    pub created_time: i64,
    pub user: User,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub file: Option<File>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
}

/// OCSF `parent_process`: the parent by pid, and by `uid` where Tether tracks it (it is then
/// in the lineage).
#[derive(Debug, Clone, Serialize)]
pub struct ParentProcess {
    pub pid: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub uid: Option<String>,
}

/// OCSF `user`: the principal a task acts for (`name`), and the OS user.
#[derive(Debug, Clone, Serialize)]
pub struct User {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    pub uid: String,
}

/// OCSF `actor`.
#[derive(Debug, Clone, Serialize)]
pub struct Actor {
    pub process: Process,
    pub user: User,
}

/// OCSF `file`.
#[derive(Debug, Clone, Serialize)]
pub struct File {
    pub path: String,
    pub name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub parent_folder: Option<String>,
    pub type_id: u8,
    #[serde(rename = "type", skip_serializing_if = "Option::is_none")]
    pub kind: Option<&'static str>,
}

/// OCSF `network_endpoint`.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Endpoint {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ip: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hostname: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
}

/// OCSF `network_connection_info`.
#[derive(Debug, Clone, Serialize)]
pub struct ConnectionInfo {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub protocol_name: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub protocol_num: Option<u8>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub protocol_ver_id: Option<u8>,
    pub direction_id: u8,
    pub direction: &'static str,
}

/// Process Activity (1007): an exec, a call the sandbox refused, an io_uring ring.
#[derive(Debug, Clone, Serialize)]
pub struct ProcessActivity {
    #[serde(flatten)]
    pub base: Base,
    pub device: Device,
    pub actor: Actor,
    pub process: Process,
    pub unmapped: Unmapped<AuditData>,
}

/// File System Activity (1001): a write, a name or metadata change.
#[derive(Debug, Clone, Serialize)]
pub struct FileActivity {
    #[serde(flatten)]
    pub base: Base,
    pub device: Device,
    pub actor: Actor,
    pub file: File,
    /// A rename's or link's destination.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub file_result: Option<File>,
    pub status_id: u8,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status_code: Option<String>,
    pub unmapped: Unmapped<AuditData>,
}

/// Network Activity (4001): connects, sends, binds, listens, accepts, Unix peers, sockets.
/// The class has no `actor` or `device` without OCSF's host profile: the host is the source
/// endpoint, and the acting process goes with Tether's own data.
#[derive(Debug, Clone, Serialize)]
pub struct NetworkActivity {
    #[serde(flatten)]
    pub base: Base,
    pub src_endpoint: Endpoint,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dst_endpoint: Option<Endpoint>,
    pub connection_info: ConnectionInfo,
    pub unmapped: Unmapped<AuditData>,
}

/// One audit event, of its class.
#[derive(Debug, Clone, Serialize)]
#[serde(untagged)]
pub enum Audit {
    Process(ProcessActivity),
    File(FileActivity),
    Network(NetworkActivity),
}

impl Audit {
    pub fn class(&self) -> Class {
        match self {
            Audit::Process(_) => Class::Process,
            Audit::File(_) => Class::FileSystem,
            Audit::Network(_) => Class::Network,
        }
    }

    pub fn base(&self) -> &Base {
        match self {
            Audit::Process(r) => &r.base,
            Audit::File(r) => &r.base,
            Audit::Network(r) => &r.base,
        }
    }

    /// Tether's own data of the event.
    pub fn data(&self) -> &AuditData {
        match self {
            Audit::Process(r) => &r.unmapped.tether,
            Audit::File(r) => &r.unmapped.tether,
            Audit::Network(r) => &r.unmapped.tether,
        }
    }
}

/// Detection Finding (2004, activity Create): an alert.
#[derive(Debug, Clone, Serialize)]
pub struct DetectionFinding {
    #[serde(flatten)]
    pub base: Base,
    pub is_alert: bool,
    pub device: Device,
    pub finding_info: FindingInfo,
    /// The rule that decided (`guardrail:<id>`, `scope:<clause>`, ...), for findings a rule
    /// made.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub policy: Option<Policy>,
    /// Repeats this alert stands for (a folded alert).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub count: Option<u64>,
    pub unmapped: Unmapped<FindingData>,
}

/// OCSF `finding_info`.
#[derive(Debug, Clone, Serialize)]
pub struct FindingInfo {
    pub uid: String,
    pub title: String,
    pub desc: String,
    pub types: [&'static str; 1],
    pub product: Product,
    /// What detected it: the rule (type Rule), or for a finding no rule made, its kind.
    pub analytic: Analytic,
    /// MITRE ATT&CK techniques the deciding guardrail stands against.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub attacks: Vec<Attack>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub related_events: Option<[Related; 1]>,
}

/// OCSF `analytic`.
#[derive(Debug, Clone, Serialize)]
pub struct Analytic {
    pub uid: String,
    pub name: String,
    /// 1 Rule.
    pub type_id: u8,
    #[serde(rename = "type")]
    pub kind: &'static str,
}

/// OCSF `policy`: the rule that decided, and whether it was enforced.
#[derive(Debug, Clone, Serialize)]
pub struct Policy {
    pub uid: String,
    pub name: String,
    pub desc: String,
    /// The rule ran in enforce mode (observe: reported what it would have done).
    pub is_applied: bool,
}

/// OCSF `attack`: an ATT&CK technique, with its tactic where Tether knows it.
#[derive(Debug, Clone, Serialize)]
pub struct Attack {
    pub technique: Technique,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tactic: Option<Technique>,
    pub version: &'static str,
}

/// OCSF `technique` / `tactic`: uid and name.
#[derive(Debug, Clone, Serialize)]
pub struct Technique {
    pub uid: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<&'static str>,
}

/// A related event: the audit event an alert is about.
#[derive(Debug, Clone, Serialize)]
pub struct Related {
    pub uid: String,
    pub type_uid: u32,
}

/// `unmapped`: where Tether's own data goes (every OCSF class forbids unknown top-level
/// fields).
#[derive(Debug, Clone, Serialize)]
pub struct Unmapped<T> {
    pub tether: T,
}

/// The task an action was attributed to, as written (`unmapped.tether.task`).
#[derive(Debug, Clone, Serialize)]
#[serde(untagged)]
pub enum TaskData {
    Bound {
        jti: String,
        iss: String,
        sub: String,
        exp: i64,
        state: &'static str,
        kernel_expired: bool,
        /// Where the task's scope came from: authorization_details, scope_object,
        /// scope_string or identity.
        scope_source: &'static str,
        sandbox: Option<Box<Layers>>,
    },
    /// The task of a compact audit event: by its id, with what changes from one action to
    /// the next (the rest is in the process's full form).
    Ref {
        jti: String,
        scope_source: &'static str,
        state: &'static str,
        #[serde(skip_serializing_if = "std::ops::Not::not")]
        kernel_expired: bool,
    },
    /// The process acts under no credential.
    None { state: &'static str },
}

/// One process of the lineage, from the actor up to its agent root.
#[derive(Debug, Clone, Serialize)]
pub struct Ancestor {
    pub pid: u32,
    /// The process's `uid` (as in `process.uid`, `parent_process.uid`).
    pub uid: String,
    /// Epoch milliseconds.
    pub start_time: i64,
    pub exe: String,
    pub cmd_line: String,
    pub tracked_by: &'static str,
    pub exited: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct AgentRoot {
    pub pid: u32,
    pub uid: String,
    /// Epoch milliseconds.
    pub start_time: i64,
}

/// Tether's data of an audit event (`unmapped.tether`). The parts an event may leave out are
/// boxed: a record moves from stage to stage, and inline they made every move ~1.5 KB.
///
/// Two forms. The **full** form holds the acting process's identity ([`Introduction`]: the
/// task's credential and delegation, the lineage up to the agent root, node, container and
/// pod) and every per-event field. The **compact** form, written once the audit stream's
/// receivers hold that identity, refers to it by `actor.process.uid` and leaves it out, with
/// the per-event fields that hold their default (no task, an outcome where nothing acted, a
/// kernel verdict that judged nothing, a path not truncated, an object that is no device).
#[derive(Debug, Clone, Serialize)]
pub struct AuditData {
    /// None: compact, and the process acts under no credential.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub task: Option<Box<TaskData>>,
    /// The acting process's identity (None: compact; see `actor.process.uid`).
    #[serde(flatten)]
    pub introduction: Option<Box<Introduction>>,
    /// The kernel mechanism that saw the action (see `tether status` for all hooks).
    pub mechanism: String,
    /// The acting process, for classes without `actor` (Network Activity).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub actor: Option<Box<Actor>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub exec: Option<Box<ExecData>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub net: Option<NetData>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub unix: Option<Box<UnixData>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub socket: Option<Box<SocketData>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sandbox: Option<Box<SandboxData>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub io_uring: Option<UringData>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub file: Option<Box<FileData>>,
    /// What became of the action (None: compact, and nothing acted: the event's
    /// `action`/`disposition` say it all).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub outcome: Option<Outcome>,
    /// None: compact, and the kernel judged nothing and did nothing.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kernel_verdict: Option<KernelVerdict>,
    /// The rules' decision, for a violation.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub decision: Option<Box<DecisionData>>,
}

/// The acting process's identity as the full form writes it into `unmapped.tether`.
#[derive(Debug, Clone, Serialize)]
pub struct Introduction {
    /// Principal first, current actor last.
    pub delegation: Vec<String>,
    pub lineage: Vec<Ancestor>,
    pub agent_root: AgentRoot,
    pub tracked_by: &'static str,
    pub cgroup_id: u64,
    #[serde(flatten)]
    pub identity: Identity,
}

/// How far the kernel vouches for a path (and the path, where it is not in a standard field).
#[derive(Debug, Clone, Serialize)]
pub struct PathData {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    pub origin: &'static str,
    /// None: compact, and not truncated.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub truncated: Option<bool>,
}

#[derive(Debug, Clone, Serialize)]
pub struct ExecData {
    pub filename: String,
    pub argv: Vec<String>,
    pub argv_truncated: bool,
    pub exe: PathData,
    /// An exec the kernel refused.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub refused: Option<Refusal>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Refusal {
    pub errno: i64,
    pub error: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct NetData {
    pub op: &'static str,
}

#[derive(Debug, Clone, Serialize)]
pub struct UnixData {
    pub op: &'static str,
    pub sock_type: u8,
    pub peer: String,
    /// `resolved` (a file the kernel named), `abstract`, or `as-given`.
    pub naming: &'static str,
    pub path: Option<PathData>,
}

#[derive(Debug, Clone, Serialize)]
pub struct SocketData {
    pub kind: &'static str,
    pub family: u8,
    #[serde(rename = "type")]
    pub sock_type: u8,
    pub protocol: u8,
}

#[derive(Debug, Clone, Serialize)]
pub struct SandboxData {
    pub layer: &'static str,
    pub call: &'static str,
    pub syscall_nr: u32,
}

#[derive(Debug, Clone, Serialize)]
pub struct UringData {
    pub op: &'static str,
    pub fd: Option<i32>,
}

#[derive(Debug, Clone, Serialize)]
pub struct FileData {
    pub op: &'static str,
    pub syscall_nr: Option<u32>,
    pub ret: i64,
    pub flags: u64,
    /// Octal.
    pub mode: String,
    pub path: PathData,
    /// An extended attribute's name.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub xattr: Option<String>,
    /// A new symlink's target text.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub target: Option<PathData>,
    /// A rename's or link's destination.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub destination: Option<PathData>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub object: Option<ObjectData>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub owner: Option<Owner>,
}

#[derive(Debug, Clone, Serialize)]
pub struct ObjectData {
    pub nlink: u32,
    /// Some(None), written as null: not a device; None: compact, and not a device.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub device: Option<Option<String>>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Owner {
    pub uid: Option<u32>,
    pub gid: Option<u32>,
}

/// The rules' decision as written in an audit event.
#[derive(Debug, Clone, Serialize)]
pub struct DecisionData {
    pub rule: String,
    pub action: Option<&'static str>,
    pub mode: &'static str,
    pub would: Option<&'static str>,
    pub reason: String,
}

/// Tether's data of a finding (`unmapped.tether`).
#[derive(Debug, Clone, Serialize)]
pub struct FindingData {
    /// The alert kind (`scope-violation`, `events-lost`, ...).
    pub alert: &'static str,
    pub task: TaskData,
    pub delegation: Vec<String>,
    pub details: Details,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub actor: Option<ActorProcess>,
    #[serde(flatten)]
    pub identity: Identity,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub folded: Option<FoldedData>,
}

#[derive(Debug, Clone, Serialize)]
pub struct ActorProcess {
    pub process: Process,
}

/// What a folded alert says of the repeats it stands for.
#[derive(Debug, Clone, Serialize)]
pub struct FoldedData {
    pub repeats: u64,
    pub window_s: u64,
    pub note: &'static str,
}

/// What a finding is about, by kind.
#[derive(Debug, Clone, Serialize)]
#[serde(untagged)]
pub enum Details {
    /// A rule's decision on an action.
    Decision(DecisionDetails),
    /// A credential or binding refused for a process, an admin call refused.
    Refused { pid: u32, reason: String },
    /// A kernel loss or error counter moved.
    KernelCounter {
        kernel_counter: String,
        hook: Option<&'static str>,
        new: u64,
        total: u64,
    },
    /// The webhook spool dropped events to make room.
    SpoolDropped { spool_dropped: Dropped },
    /// A sink failed.
    SinkErrors { sink_errors: u64 },
    /// Tether's kernel state was changed behind its back (and repaired).
    Tamper(Tamper),
    /// A restart could not take over the previous daemon's tasks.
    StateLost { tasks: Vec<u32>, layout: String },
    /// The previous version's records (of these wire layouts) could not be read.
    Layouts { layouts: Vec<String> },
    /// One task of the previous daemon could not be restored.
    Task { task: u32 },
    /// Nothing more than the reason.
    Empty {},
}

/// A rule's decision, as a finding explains it.
#[derive(Debug, Clone, Serialize)]
pub struct DecisionDetails {
    pub rule: String,
    pub action: Option<&'static str>,
    pub mode: &'static str,
    pub would: Option<&'static str>,
    pub reason: String,
    pub outcome: Outcome,
    /// For a scope violation: the clause, what was attempted, what the clause allows.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub clause: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub attempted: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub allowed: Option<Vec<String>>,
    /// The credential's state when the action was judged.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub state: Option<&'static str>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Dropped {
    pub audit: u64,
    pub alerts: u64,
}

/// Which of Tether's maps was changed, and how.
#[derive(Debug, Clone, Serialize)]
pub struct Tamper {
    pub map: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pid: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub task: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub root_pid: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub found_task: Option<u32>,
    /// The acting generation found (ACTIVE), and this daemon's.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub found: Option<Option<u64>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub want: Option<u64>,
}

impl Tamper {
    pub fn map(map: &'static str) -> Tamper {
        Tamper {
            map,
            pid: None,
            task: None,
            root_pid: None,
            found_task: None,
            found: None,
            want: None,
        }
    }
}
