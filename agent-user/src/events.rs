//! Ring-buffer records -> the one domain [`Event`] enum. This is the only place wire structs
//! are interpreted; everything after works on [`Event`].
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use agent_common::{
    ExecEvent, ExitEvent, FILE_TEXT_OFFSET, FileEvent, FilePath, ForkEvent, Header, NO_SYSCALL, NetEvent, SandboxEvent,
    UnixEvent, UringEvent, WALK_MAIN,
    contain::{S_IFBLK, S_IFCHR, S_IFMT, S_IFREG},
    file_op, flags, hook, kind, net_op, path_source, syscalls, unix_name, unix_op, uring_op, walk,
};

use crate::{
    credentials::scope::Grant,
    programs::{self, Mechanism},
};

/// Why a record could not be decoded.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DecodeError {
    #[error("record of {0} bytes is shorter than a header")]
    Short(usize),
    #[error("record kind {kind} needs {need} bytes, got {got}")]
    Truncated { kind: u32, need: usize, got: usize },
    #[error("unknown record kind {0}")]
    UnknownKind(u32),
    #[error("unknown {what} value {value}")]
    BadValue { what: &'static str, value: u64 },
}

/// Who acted: the common header of every record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Actor {
    pub tgid: u32,
    pub tid: u32,
    pub uid: u32,
    pub gid: u32,
    pub comm: String,
    pub cgroup_id: u64,
    /// Process start time, ns since boot (0 if unknown).
    pub start_ns: u64,
    /// Event time, ns since boot.
    pub ktime_ns: u64,
    /// The task the process acted under (kernel's view at the time; 0: none).
    pub task: u32,
    /// The kernel saw the task's credential expired (or revoked) at the time.
    pub task_expired: bool,
    /// What the kernel decided and did about this action.
    pub kernel: crate::model::KernelVerdict,
    /// The pod guardrail set the kernel judged by (agent_common::Tracked::guard_set).
    pub guard_set: u32,
    /// The program that made the record (agent_common::hook).
    pub hook: u32,
}

/// A path as reported, with how much the kernel vouches for it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReportedPath {
    /// Absolute path. Bytes that are not UTF-8 are replaced (the raw bytes are kept below).
    pub path: String,
    pub raw: Vec<u8>,
    pub origin: PathOrigin,
    /// Leading components or the name were cut (buffer limits), or the walk reached no root
    /// of the process's mount namespace: `path` names no file a rule could mean.
    pub truncated: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PathOrigin {
    /// Rebuilt from the kernel's own object (the opened file, the fd's file).
    KernelObject,
    /// Directory from kernel objects + the name as passed (copied at syscall entry).
    KernelDirAndName,
    /// Only the text as passed (a symlink's target): never resolved.
    NameOnly,
    /// The string the process passed, unresolved: this kernel lacks fields the walk needs.
    AsPassed,
}

impl PathOrigin {
    pub fn as_str(self) -> &'static str {
        match self {
            PathOrigin::KernelObject => "kernel-object",
            PathOrigin::KernelDirAndName => "kernel-dir+name",
            PathOrigin::NameOnly => "name-only",
            PathOrigin::AsPassed => "as-passed (path resolution unavailable on this kernel)",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FileOp {
    OpenWrite,
    Truncate,
    Rename,
    Unlink,
    Rmdir,
    Mkdir,
    Link,
    Symlink,
    Chmod,
    Chown,
    /// A new file (O_CREAT open or mknod) refused by the BPF LSM path_mknod hook, with no
    /// syscall record to carry it.
    Create,
    /// A device node, FIFO or socket file made by mknod.
    Mknod,
    /// An extended attribute (capability, security label, ACL) set or removed.
    SetXattr,
    RemoveXattr,
    /// The file's times changed.
    Utimes,
}

impl FileOp {
    fn from_wire(v: u16) -> Result<Self, DecodeError> {
        Ok(match v {
            file_op::OPEN_WRITE => FileOp::OpenWrite,
            file_op::TRUNCATE => FileOp::Truncate,
            file_op::RENAME => FileOp::Rename,
            file_op::UNLINK => FileOp::Unlink,
            file_op::RMDIR => FileOp::Rmdir,
            file_op::MKDIR => FileOp::Mkdir,
            file_op::LINK => FileOp::Link,
            file_op::SYMLINK => FileOp::Symlink,
            file_op::CHMOD => FileOp::Chmod,
            file_op::CHOWN => FileOp::Chown,
            file_op::CREATE => FileOp::Create,
            file_op::MKNOD => FileOp::Mknod,
            file_op::SETXATTR => FileOp::SetXattr,
            file_op::REMOVEXATTR => FileOp::RemoveXattr,
            file_op::UTIMES => FileOp::Utimes,
            other => {
                return Err(DecodeError::BadValue {
                    what: "file op",
                    value: other as u64,
                });
            }
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            FileOp::OpenWrite => "open-write",
            FileOp::Truncate => "truncate",
            FileOp::Rename => "rename",
            FileOp::Unlink => "unlink",
            FileOp::Rmdir => "rmdir",
            FileOp::Mkdir => "mkdir",
            FileOp::Link => "link",
            FileOp::Symlink => "symlink",
            FileOp::Chmod => "chmod",
            FileOp::Chown => "chown",
            FileOp::Create => "create",
            FileOp::Mknod => "mknod",
            FileOp::SetXattr => "setxattr",
            FileOp::RemoveXattr => "removexattr",
            FileOp::Utimes => "utimes",
        }
    }

    /// Does the operation change the file it names itself (its content or attributes),
    /// rather than a name in a directory? Those are judged by what the file is (a device
    /// node as its device).
    pub fn changes_object(self) -> bool {
        matches!(
            self,
            FileOp::OpenWrite
                | FileOp::Truncate
                | FileOp::Chmod
                | FileOp::Chown
                | FileOp::SetXattr
                | FileOp::RemoveXattr
                | FileOp::Utimes
        )
    }
}

/// The inode a file operation acted on, as the kernel judged it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Object {
    pub kind: ObjectKind,
    /// Hard links to it.
    pub nlink: u32,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ObjectKind {
    Regular,
    Directory,
    Symlink,
    Fifo,
    Socket,
    /// A device node: judged as the device (`/dev/char/M:m`, `/dev/block/M:m`).
    Device {
        block: bool,
        major: u32,
        minor: u32,
    },
}

impl Object {
    fn from_wire(o: &agent_common::Object) -> Option<Object> {
        if o.mode == 0 {
            return None;
        }
        let kind = match o.mode & S_IFMT {
            S_IFCHR | S_IFBLK => ObjectKind::Device {
                block: o.mode & S_IFMT == S_IFBLK,
                major: o.rdev >> 20,
                minor: o.rdev & 0xf_ffff,
            },
            agent_common::contain::S_IFDIR => ObjectKind::Directory,
            agent_common::contain::S_IFLNK => ObjectKind::Symlink,
            agent_common::contain::S_IFIFO => ObjectKind::Fifo,
            agent_common::contain::S_IFSOCK => ObjectKind::Socket,
            S_IFREG => ObjectKind::Regular,
            _ => ObjectKind::Regular,
        };
        Some(Object { kind, nlink: o.nlink })
    }

    /// The path a device is judged as (the rules' form; the kernel's key holds the numbers in binary).
    pub fn device_path(&self) -> Option<String> {
        match self.kind {
            ObjectKind::Device { block, major, minor } => {
                Some(format!("/dev/{}/{major}:{minor}", if block { "block" } else { "char" }))
            }
            _ => None,
        }
    }

    /// A regular file with more than one name: the kernel could not judge it by the one used.
    pub fn multiply_linked(&self) -> bool {
        self.kind == ObjectKind::Regular && self.nlink > 1
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NetOp {
    Connect,
    Send,
    /// A bind to a local port (a service being set up).
    Bind,
    /// A listen on a local port.
    Listen,
    /// An accepted inbound connection (`addr`:`port` is the peer).
    Accept,
}

impl NetOp {
    pub fn as_str(self) -> &'static str {
        match self {
            NetOp::Connect => "connect",
            NetOp::Send => "send",
            NetOp::Bind => "bind",
            NetOp::Listen => "listen",
            NetOp::Accept => "accept",
        }
    }

    /// Is it judged against the `listen` clause (by the local address and port)?
    pub fn is_listen(self) -> bool {
        matches!(self, NetOp::Bind | NetOp::Listen | NetOp::Accept)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UnixOp {
    Connect,
    /// A datagram to a named peer.
    Send,
}

/// How the peer of a Unix connect or send was named.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum UnixPeer {
    /// The peer's socket file, as the kernel resolved the name.
    File(ReportedPath),
    /// An abstract name (without its leading NUL).
    Abstract(String),
    /// A path as the caller gave it, not resolved (a datagram judged before the lookup).
    AsGiven(String),
}

impl UnixPeer {
    /// What the rules judge: the socket file's path, `@name`, or the path given.
    pub fn judged_name(&self) -> String {
        match self {
            UnixPeer::File(p) => p.path.clone(),
            UnixPeer::Abstract(n) => format!("@{n}"),
            UnixPeer::AsGiven(p) => p.clone(),
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UringOp {
    Setup,
    Enter,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transport {
    Tcp,
    Udp,
    Other(u8),
}

impl Transport {
    pub fn name(self) -> &'static str {
        match self {
            Transport::Tcp => "tcp",
            Transport::Udp => "udp",
            Transport::Other(_) => "other",
        }
    }
    pub fn number(self) -> u8 {
        match self {
            Transport::Tcp => 6,
            Transport::Udp => 17,
            Transport::Other(n) => n,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    Exec {
        actor: Actor,
        ppid: u32,
        /// The executable actually running (resolved by the kernel).
        exe: ReportedPath,
        /// The path as passed to execve.
        filename: String,
        argv: Vec<String>,
        argv_truncated: bool,
        /// The process became tracked with this exec (agent selector match).
        newly_selected: bool,
        /// The BPF LSM exec hook checked this exec before it happened.
        via_lsm: bool,
        /// Some(errno) for an execve the kernel refused (EACCES, EPERM): no new image ran,
        /// and `exe` is the file that was asked for (`filename`, resolved).
        failed: Option<i64>,
    },
    Fork {
        parent: Actor,
        child_tgid: u32,
        child_start_ns: u64,
        root_tgid: u32,
    },
    Exit {
        actor: Actor,
        /// (status << 8) | signal; None where the kernel lacks task_struct.exit_code.
        exit_code: Option<u32>,
    },
    Net {
        actor: Actor,
        op: NetOp,
        transport: Transport,
        /// The remote address (connect, send, accept) or the local one (bind, listen);
        /// IPv4-mapped IPv6 addresses are reported as IPv4.
        addr: IpAddr,
        port: u16,
        /// Accept: the local port the connection came in on.
        local_port: u16,
        /// Seen by a BPF LSM hook (else by a cgroup hook or a syscall tracepoint).
        via_lsm: bool,
    },
    /// A socket of a kind that must be granted (raw, packet, ICMP, vsock) was created.
    Socket {
        actor: Actor,
        kind: Grant,
        family: u8,
        sock_type: u8,
        protocol: u8,
    },
    /// A connect or send to a Unix socket.
    Unix {
        actor: Actor,
        op: UnixOp,
        sock_type: u8,
        peer: UnixPeer,
    },
    /// An io_uring ring created (setup) or driven (enter), where no BPF LSM hook judges its
    /// operations.
    Uring { actor: Actor, op: UringOp, fd: i32 },
    /// A call a seccomp filter refused before it ran (`tether exec`'s sandbox, or another
    /// filter the process runs under): `call` is its name.
    Sandbox {
        actor: Actor,
        syscall_nr: u32,
        call: &'static str,
    },
    File {
        actor: Actor,
        op: FileOp,
        /// None when the BPF LSM file_open hook made the record.
        syscall_nr: Option<u32>,
        /// Return value: >= 0 success, else -errno.
        ret: i64,
        flags: u64,
        mode: u32,
        /// New owner for chown (None = unchanged).
        owner: Option<(Option<u32>, Option<u32>)>,
        /// The object, a rename/link source, or a new symlink.
        path: ReportedPath,
        /// A rename/link destination, or a symlink's target text.
        path2: Option<ReportedPath>,
        /// The BPF LSM hook that judged the operation before it happened (`lsm/file_open`,
        /// `lsm/path_unlink`, ...); None: judged at the syscall's exit and by the daemon.
        lsm: Option<Mechanism>,
        /// The file the operation acted on, as the kernel judged it (None: not looked at).
        object: Option<Object>,
    },
}

impl Event {
    /// The kernel mechanism that saw this event (reported in every event).
    /// Is it an action (exec, network, file) rather than process lifecycle (fork, exit)?
    /// Only actions are written as audit events.
    pub fn is_action(&self) -> bool {
        !matches!(self, Event::Fork { .. } | Event::Exit { .. })
    }

    pub fn mechanism(&self) -> Mechanism {
        let h = self.actor().hook;
        let lsm = Mechanism::lsm;
        let at = Mechanism::at;
        match self {
            Event::Exec { via_lsm: true, .. } => lsm("bprm_check_security"),
            Event::File { lsm: Some(hook), .. } => *hook,
            Event::Net { op, .. } if h == hook::LSM_SOCKET => match op {
                NetOp::Listen => lsm("socket_listen"),
                _ => lsm("socket_create"),
            },
            Event::Socket { .. } if h == hook::LSM_SOCKET => lsm("socket_create"),
            Event::Socket { .. } if h == hook::SOCKET_SYSCALL => at("sys_enter_sock", "sys_enter_socket"),
            Event::Unix {
                op: UnixOp::Connect, ..
            } if h == hook::LSM_UNIX => lsm("unix_stream_connect"),
            Event::Unix { op: UnixOp::Send, .. } if h == hook::LSM_UNIX => lsm("unix_may_send"),
            Event::Unix {
                op: UnixOp::Connect, ..
            } => at("sys_exit_sock", "sys_exit_connect"),
            Event::Unix { op: UnixOp::Send, .. } => at("sys_enter_sock", "sys_enter_sendmsg"),
            Event::Net { op: NetOp::Listen, .. } if h == hook::SOCKET_SYSCALL => at("sys_exit_sock", "sys_exit_listen"),
            Event::Net { op: NetOp::Accept, .. } => at("sys_exit_sock", "sys_exit_accept"),
            Event::Uring { op: UringOp::Setup, .. } => at("sys_enter_io_uring_setup", "sys_enter_io_uring_setup"),
            Event::Uring { op: UringOp::Enter, .. } => at("sys_enter_io_uring_enter", "sys_enter_io_uring_enter"),
            Event::Sandbox { .. } => Mechanism::Seccomp,
            _ => programs::record(h),
        }
    }

    /// Why the action could not be judged, when it could not: the kernel said so, or it
    /// left to the daemon a name it had cut short (a name longer than it copies is never
    /// judged by what it starts with).
    pub fn unjudged_reason(&self) -> Option<&'static str> {
        let kv = self.actor().kernel;
        let (path, object) = match self {
            Event::File { path, object, .. } => (Some(path), *object),
            Event::Exec { exe, .. } => (Some(exe), None),
            Event::Unix {
                peer: UnixPeer::File(p),
                ..
            } => (Some(p), None),
            _ => (None, None),
        };
        let truncated = path.is_some_and(|p| p.truncated);
        if kv.unjudged {
            return Some(if object.is_some_and(|o| o.multiply_linked()) {
                "the file has more than one hard link and the kernel can name only the one used"
            } else if truncated {
                "the path is incomplete: too long, unreadable, or outside the process's mount namespace"
            } else {
                match self {
                    Event::Unix { .. } => "the socket's name could not be read or is ambiguous",
                    Event::Fork { .. } | Event::Exec { .. } => "the tracked-process map is full",
                    _ => "what the kernel needed could not be read, or a map was full",
                }
            });
        }
        (kv.undecided && truncated).then_some("the name is longer than the kernel copies")
    }

    pub fn actor(&self) -> &Actor {
        match self {
            Event::Exec { actor, .. }
            | Event::Exit { actor, .. }
            | Event::Net { actor, .. }
            | Event::Socket { actor, .. }
            | Event::Unix { actor, .. }
            | Event::Uring { actor, .. }
            | Event::Sandbox { actor, .. }
            | Event::File { actor, .. } => actor,
            Event::Fork { parent, .. } => parent,
        }
    }
}

fn read<T: Copy>(buf: &[u8], kind: u32) -> Result<T, DecodeError> {
    let need = std::mem::size_of::<T>();
    if buf.len() < need {
        return Err(DecodeError::Truncated {
            kind,
            need,
            got: buf.len(),
        });
    }
    // SAFETY: length checked; T is a repr(C) wire type valid for any bit pattern, read unaligned.
    Ok(unsafe { std::ptr::read_unaligned(buf.as_ptr() as *const T) })
}

fn cstr(bytes: &[u8]) -> String {
    let end = bytes.iter().position(|&b| b == 0).unwrap_or(bytes.len());
    String::from_utf8_lossy(&bytes[..end]).into_owned()
}

fn actor(h: &Header) -> Actor {
    Actor {
        tgid: h.tgid,
        tid: h.tid,
        uid: h.uid,
        gid: h.gid,
        comm: cstr(&h.comm),
        cgroup_id: h.cgroup_id,
        start_ns: h.start_ns,
        ktime_ns: h.ktime_ns,
        task: h.task,
        task_expired: h.flags & flags::TASK_EXPIRED != 0,
        kernel: crate::model::KernelVerdict::from_bits(h.verdict),
        guard_set: h.guard_set,
        hook: h.hook,
    }
}

/// The address of a NetEvent, IPv4-mapped IPv6 as IPv4.
fn net_addr(family: u8, addr: [u8; 16]) -> Result<IpAddr, DecodeError> {
    Ok(match family as i32 {
        libc::AF_INET => IpAddr::V4(Ipv4Addr::new(addr[0], addr[1], addr[2], addr[3])),
        libc::AF_INET6 => {
            let v6 = Ipv6Addr::from(addr);
            match v6.to_ipv4_mapped() {
                Some(v4) => IpAddr::V4(v4),
                None => IpAddr::V6(v6),
            }
        }
        other => {
            return Err(DecodeError::BadValue {
                what: "address family",
                value: other as u64,
            });
        }
    })
}

/// Decodes one ring-buffer record.
pub fn decode(buf: &[u8]) -> Result<Event, DecodeError> {
    if buf.len() < std::mem::size_of::<Header>() {
        return Err(DecodeError::Short(buf.len()));
    }
    let h: Header = read(buf, 0)?;
    if hook::name(h.hook).is_none() {
        return Err(DecodeError::BadValue {
            what: "hook",
            value: h.hook as u64,
        });
    }
    match h.kind {
        kind::EXEC => {
            let e: ExecEvent = read(buf, h.kind)?;
            let argv_len = (e.argv_len as usize).min(e.argv.len());
            let mut argv: Vec<String> = e.argv[..argv_len]
                .split(|&b| b == 0)
                .map(|s| String::from_utf8_lossy(s).into_owned())
                .collect();
            // A NUL-terminated list leaves one empty tail element; no argv at all is none.
            if e.argv[..argv_len].last() == Some(&0) || argv_len == 0 {
                argv.pop();
            }
            let filename_len = (e.filename_len as usize).min(e.filename.len());
            let filename = String::from_utf8_lossy(&e.filename[..filename_len]).into_owned();
            let failed = (e.failed_errno != 0).then(|| -(e.failed_errno as i64));
            let exe = if failed.is_some() {
                // A refused exec: the file asked for, relative to the directory the kernel
                // resolves it from (walked into `exe`).
                let name = &e.filename[..filename_len];
                let dir = walked_only(&e.exe);
                let raw = if name.first() == Some(&b'/') || dir.raw.is_empty() {
                    join_dir_and_name(b"/", name)
                } else {
                    join_dir_and_name(&dir.raw, name)
                };
                ReportedPath {
                    path: String::from_utf8_lossy(&raw).into_owned(),
                    raw,
                    origin: PathOrigin::KernelDirAndName,
                    truncated: dir.truncated,
                }
            } else if e.exe.flags & walk::UNAVAILABLE != 0 {
                // No path resolution on this kernel: the path execve was given.
                ReportedPath {
                    path: filename.clone(),
                    raw: e.filename[..filename_len].to_vec(),
                    origin: PathOrigin::AsPassed,
                    truncated: false,
                }
            } else {
                walked_only(&e.exe)
            };
            Ok(Event::Exec {
                actor: actor(&e.header),
                ppid: e.ppid,
                exe,
                filename,
                argv,
                argv_truncated: e.header.flags & flags::ARGV_TRUNCATED != 0,
                newly_selected: e.header.flags & flags::NEWLY_SELECTED != 0,
                via_lsm: e.header.flags & flags::VIA_LSM != 0,
                failed,
            })
        }
        kind::FORK => {
            let e: ForkEvent = read(buf, h.kind)?;
            Ok(Event::Fork {
                parent: actor(&e.header),
                child_tgid: e.child_tgid,
                child_start_ns: e.child_start_ns,
                root_tgid: e.root_tgid,
            })
        }
        kind::EXIT => {
            let e: ExitEvent = read(buf, h.kind)?;
            Ok(Event::Exit {
                actor: actor(&e.header),
                exit_code: (e.exit_code != u32::MAX).then_some(e.exit_code),
            })
        }
        kind::NET => {
            let e: NetEvent = read(buf, h.kind)?;
            let op = match e.op {
                net_op::CONNECT => NetOp::Connect,
                net_op::SENDMSG => NetOp::Send,
                net_op::BIND => NetOp::Bind,
                net_op::LISTEN => NetOp::Listen,
                net_op::ACCEPT => NetOp::Accept,
                net_op::SOCKET => {
                    let kind = Grant::from_kind(e.sock_kind).ok_or(DecodeError::BadValue {
                        what: "socket kind",
                        value: e.sock_kind as u64,
                    })?;
                    return Ok(Event::Socket {
                        actor: actor(&e.header),
                        kind,
                        family: e.family,
                        sock_type: e.sock_type,
                        protocol: e.protocol,
                    });
                }
                other => {
                    return Err(DecodeError::BadValue {
                        what: "net op",
                        value: other as u64,
                    });
                }
            };
            let transport = match (e.protocol as i32, e.sock_type as i32) {
                (libc::IPPROTO_TCP, _) => Transport::Tcp,
                (libc::IPPROTO_UDP, _) => Transport::Udp,
                (0, libc::SOCK_STREAM) => Transport::Tcp,
                (0, libc::SOCK_DGRAM) => Transport::Udp,
                (p, _) => Transport::Other(p as u8),
            };
            Ok(Event::Net {
                actor: actor(&e.header),
                op,
                transport,
                addr: net_addr(e.family, e.addr)?,
                port: e.port,
                local_port: e.local_port,
                via_lsm: e.header.flags & flags::VIA_LSM != 0,
            })
        }
        kind::UNIX => {
            let e: UnixEvent = read(buf, h.kind)?;
            let op = match e.op {
                unix_op::CONNECT => UnixOp::Connect,
                unix_op::SEND => UnixOp::Send,
                other => {
                    return Err(DecodeError::BadValue {
                        what: "unix op",
                        value: other as u64,
                    });
                }
            };
            let name = &e.name[..(e.name_len as usize).min(e.name.len())];
            let text = String::from_utf8_lossy(name).into_owned();
            let peer = match e.naming {
                unix_name::RESOLVED => UnixPeer::File(walked_only(&e.peer)),
                unix_name::ABSTRACT => UnixPeer::Abstract(text),
                unix_name::AS_GIVEN => UnixPeer::AsGiven(text),
                other => {
                    return Err(DecodeError::BadValue {
                        what: "unix naming",
                        value: other as u64,
                    });
                }
            };
            Ok(Event::Unix {
                actor: actor(&e.header),
                op,
                sock_type: e.sock_type,
                peer,
            })
        }
        kind::URING => {
            let e: UringEvent = read(buf, h.kind)?;
            let op = match e.op {
                uring_op::SETUP => UringOp::Setup,
                uring_op::ENTER => UringOp::Enter,
                other => {
                    return Err(DecodeError::BadValue {
                        what: "io_uring op",
                        value: other as u64,
                    });
                }
            };
            Ok(Event::Uring {
                actor: actor(&e.header),
                op,
                fd: e.fd,
            })
        }
        kind::SANDBOX => {
            let e: SandboxEvent = read(buf, h.kind)?;
            let call = syscalls::sandboxed_by_nr(e.syscall_nr)
                .ok_or(DecodeError::BadValue {
                    what: "sandboxed syscall",
                    value: e.syscall_nr as u64,
                })?
                .name;
            Ok(Event::Sandbox {
                actor: actor(&e.header),
                syscall_nr: e.syscall_nr,
                call,
            })
        }
        kind::FILE => {
            let (e, text) = read_file(buf)?;
            let op = FileOp::from_wire(e.op)?;
            let mut text = Text(text);
            let path = file_path(&e.a, &mut text)?.ok_or(DecodeError::BadValue {
                what: "path source",
                value: 0,
            })?;
            let path2 = file_path(&e.b, &mut text)?;
            let owner = (op == FileOp::Chown).then(|| {
                let keep = |v: u32| (v != u32::MAX).then_some(v);
                (keep(e.uid), keep(e.gid))
            });
            Ok(Event::File {
                actor: actor(&e.header),
                op,
                syscall_nr: (e.syscall_nr != NO_SYSCALL).then_some(e.syscall_nr),
                ret: e.ret,
                flags: e.flags,
                mode: e.mode,
                owner,
                path,
                path2,
                lsm: if e.header.flags & flags::VIA_LSM != 0 {
                    Some(programs::file_hook(e.hook).ok_or(DecodeError::BadValue {
                        what: "file hook",
                        value: e.hook as u64,
                    })?)
                } else {
                    None
                },
                object: Object::from_wire(&e.obj),
            })
        }
        other => Err(DecodeError::UnknownKind(other)),
    }
}

/// Walk flags that leave a path naming no file a rule could mean.
const INCOMPLETE: u16 = walk::TRUNCATED | walk::READ_ERROR | walk::DETACHED;

fn walked_only(w: &agent_common::WalkedPath) -> ReportedPath {
    let bytes = w.bytes().to_vec();
    ReportedPath {
        path: String::from_utf8_lossy(&bytes).into_owned(),
        raw: bytes,
        origin: PathOrigin::KernelObject,
        truncated: w.flags & INCOMPLETE != 0,
    }
}

/// A file record's fixed part and its text (agent_common::FileEvent: variable-size, only
/// the used bytes of the text are sent).
fn read_file(buf: &[u8]) -> Result<(FileEvent, &[u8]), DecodeError> {
    if buf.len() < FILE_TEXT_OFFSET {
        return Err(DecodeError::Truncated {
            kind: kind::FILE,
            need: FILE_TEXT_OFFSET,
            got: buf.len(),
        });
    }
    // SAFETY: FileEvent is a repr(C) wire type valid for any bit pattern; the fixed part is
    // copied from a buffer checked to hold it, the text is left zeroed (it is read from `buf`).
    let e = unsafe {
        let mut e: FileEvent = std::mem::zeroed();
        std::ptr::copy_nonoverlapping(buf.as_ptr(), &mut e as *mut FileEvent as *mut u8, FILE_TEXT_OFFSET);
        e
    };
    Ok((e, &buf[FILE_TEXT_OFFSET..]))
}

/// The rest of a file record's text, taken piece by piece in the order the kernel wrote it.
struct Text<'a>(&'a [u8]);

impl<'a> Text<'a> {
    fn take(&mut self, n: u16, what: &'static str) -> Result<&'a [u8], DecodeError> {
        let n = n as usize;
        if n > self.0.len() {
            return Err(DecodeError::BadValue { what, value: n as u64 });
        }
        let (piece, rest) = self.0.split_at(n);
        self.0 = rest;
        Ok(piece)
    }
}

fn file_path(p: &FilePath, text: &mut Text) -> Result<Option<ReportedPath>, DecodeError> {
    if p.walked_len as usize > WALK_MAIN {
        return Err(DecodeError::BadValue {
            what: "walked length",
            value: p.walked_len as u64,
        });
    }
    let walked = text.take(p.walked_len, "walked length")?;
    let raw = text.take(p.raw_len, "name length")?;
    match p.source {
        path_source::NONE => Ok(None),
        path_source::OBJECT => Ok(Some(walked_text(walked, p.walk_flags))),
        path_source::NAME_ONLY => Ok(Some(ReportedPath {
            path: String::from_utf8_lossy(raw).into_owned(),
            raw: raw.to_vec(),
            origin: PathOrigin::NameOnly,
            truncated: p.raw_truncated != 0,
        })),
        path_source::DIR_AND_NAME if p.walk_flags & walk::UNAVAILABLE != 0 => Ok(Some(ReportedPath {
            path: String::from_utf8_lossy(raw).into_owned(),
            raw: raw.to_vec(),
            origin: PathOrigin::AsPassed,
            truncated: p.raw_truncated != 0,
        })),
        path_source::DIR_AND_NAME => {
            let dir = if p.walk_flags & walk::EMPTY != 0 {
                &[][..]
            } else {
                walked
            };
            let joined = join_dir_and_name(dir, raw);
            Ok(Some(ReportedPath {
                path: String::from_utf8_lossy(&joined).into_owned(),
                raw: joined,
                origin: PathOrigin::KernelDirAndName,
                truncated: p.raw_truncated != 0 || p.walk_flags & INCOMPLETE != 0,
            }))
        }
        other => Err(DecodeError::BadValue {
            what: "path source",
            value: other as u64,
        }),
    }
}

/// A walk sent as text (a file record's): what [`walked_only`] makes of a WalkedPath.
fn walked_text(bytes: &[u8], flags: u16) -> ReportedPath {
    let bytes = if flags & walk::EMPTY != 0 { &[][..] } else { bytes };
    ReportedPath {
        path: String::from_utf8_lossy(bytes).into_owned(),
        raw: bytes.to_vec(),
        origin: PathOrigin::KernelObject,
        truncated: flags & INCOMPLETE != 0,
    }
}

/// Joins the kernel-resolved directory and the name as passed, then removes `.` components and
/// repeated slashes. `..` is left for [`crate::paths`] to resolve against the filesystem (it
/// cannot be resolved lexically when the directory before it is a symlink). An absolute name
/// is relative to `dir`, which is then the process's root.
pub fn join_dir_and_name(dir: &[u8], name: &[u8]) -> Vec<u8> {
    let mut out: Vec<u8> = Vec::with_capacity(dir.len() + name.len() + 1);
    for part in dir.split(|&b| b == b'/').chain(name.split(|&b| b == b'/')) {
        if part.is_empty() || part == b"." {
            continue;
        }
        out.push(b'/');
        out.extend_from_slice(part);
    }
    if out.is_empty() {
        out.push(b'/');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use agent_common::{WALK_BUF, WALK_MAIN, WalkedPath, file_hook};

    fn header(kind: u32) -> Header {
        let hook = match kind {
            kind::FILE => hook::FILE_SYSCALL,
            kind::NET => hook::CGROUP_CONNECT,
            kind::FORK => hook::SCHED_FORK,
            kind::EXIT => hook::SCHED_EXIT,
            _ => hook::SCHED_EXEC,
        };
        let mut comm = [0u8; 16];
        comm[..4].copy_from_slice(b"bash");
        Header {
            kind,
            flags: 0,
            ktime_ns: 5,
            tgid: 10,
            tid: 11,
            uid: 1000,
            gid: 1000,
            cgroup_id: 1,
            start_ns: 7,
            comm,
            task: 0,
            verdict: 0,
            guard_set: 0,
            hook,
        }
    }

    fn walked(s: &str) -> WalkedPath {
        let mut w = WalkedPath {
            buf: [0; WALK_BUF],
            start: (WALK_MAIN - s.len()) as u16,
            flags: 0,
            leaf: 0,
            _pad: 0,
        };
        w.buf[WALK_MAIN - s.len()..WALK_MAIN].copy_from_slice(s.as_bytes());
        w
    }

    fn bytes_of<T>(v: &T) -> Vec<u8> {
        // SAFETY: test helper over plain-data wire structs.
        unsafe { std::slice::from_raw_parts(v as *const T as *const u8, std::mem::size_of::<T>()).to_vec() }
    }

    /// One path of a test file record: source, walked text, name as passed.
    type P<'a> = (u8, &'a str, &'a str);
    const NO_PATH: P = (path_source::NONE, "", "");

    /// File record `e` with paths `a` and `b` as the kernel sends it: the fixed part (its
    /// walk flags as set in `e`), then the used bytes of the text.
    fn file_record(e: &mut FileEvent, a: P, b: P) -> Vec<u8> {
        let mut text = Vec::new();
        for (head, (source, walked, raw)) in [(&mut e.a, a), (&mut e.b, b)] {
            head.source = source;
            head.walked_len = walked.len() as u16;
            head.raw_len = raw.len() as u16;
            text.extend_from_slice(walked.as_bytes());
            text.extend_from_slice(raw.as_bytes());
        }
        let mut out = bytes_of(e)[..FILE_TEXT_OFFSET].to_vec();
        out.extend_from_slice(&text);
        out
    }

    #[test]
    fn exec_decodes_argv_exe_and_filename() {
        let mut e: ExecEvent = unsafe { std::mem::zeroed() };
        e.header = header(kind::EXEC);
        e.ppid = 9;
        let argv = b"curl\0-s\0http://x\0";
        e.argv[..argv.len()].copy_from_slice(argv);
        e.argv_len = argv.len() as u32;
        e.exe = walked("/usr/bin/curl");
        e.filename[..4].copy_from_slice(b"curl");
        e.filename_len = 4;
        let ev = decode(&bytes_of(&e)).expect("decodes");
        match ev {
            Event::Exec {
                actor,
                ppid,
                exe,
                filename,
                argv,
                argv_truncated,
                newly_selected,
                via_lsm,
                failed,
            } => {
                assert_eq!(failed, None);
                assert_eq!(actor.comm, "bash");
                assert_eq!((actor.tgid, actor.tid, actor.uid), (10, 11, 1000));
                assert_eq!(ppid, 9);
                assert_eq!(exe.path, "/usr/bin/curl");
                assert_eq!(exe.origin, PathOrigin::KernelObject);
                assert_eq!(filename, "curl");
                assert_eq!(argv, vec!["curl", "-s", "http://x"]);
                assert!(!argv_truncated && !newly_selected && !via_lsm);
            }
            other => panic!("expected exec, got {other:?}"),
        }
    }

    #[test]
    fn a_refused_exec_names_the_file_asked_for() {
        let mut e: ExecEvent = unsafe { std::mem::zeroed() };
        e.header = header(kind::EXEC);
        e.header.hook = hook::EXEC_SYSCALL;
        e.failed_errno = libc::EACCES as u32;
        e.exe = walked("/home/a/work");
        e.filename[..9].copy_from_slice(b"./bin/run");
        e.filename_len = 9;
        match decode(&bytes_of(&e)).expect("decodes") {
            ev @ Event::Exec { .. } => {
                assert_eq!(ev.mechanism(), "tracepoint/syscalls/sys_exit_execve");
                let Event::Exec { exe, failed, argv, .. } = ev else {
                    unreachable!()
                };
                assert_eq!(failed, Some(-(libc::EACCES as i64)));
                assert_eq!(exe.path, "/home/a/work/bin/run");
                assert!(argv.is_empty());
            }
            other => panic!("expected exec, got {other:?}"),
        }
        // Absolute: the directory is not walked.
        e.exe = unsafe { std::mem::zeroed() };
        e.exe.flags = agent_common::walk::EMPTY;
        e.filename[..9].copy_from_slice(b"/usr/bin/");
        match decode(&bytes_of(&e)).expect("decodes") {
            Event::Exec { exe, .. } => assert_eq!(exe.path, "/usr/bin"),
            other => panic!("expected exec, got {other:?}"),
        }
    }

    #[test]
    fn ipv4_mapped_ipv6_is_reported_as_ipv4() {
        let mut e: NetEvent = unsafe { std::mem::zeroed() };
        e.header = header(kind::NET);
        e.op = net_op::CONNECT;
        e.family = libc::AF_INET6 as u8;
        e.protocol = libc::IPPROTO_TCP as u8;
        e.port = 443;
        e.addr = "::ffff:169.254.169.254".parse::<Ipv6Addr>().unwrap().octets();
        match decode(&bytes_of(&e)).expect("decodes") {
            Event::Net {
                addr,
                port,
                transport,
                op,
                ..
            } => {
                assert_eq!(addr, "169.254.169.254".parse::<IpAddr>().unwrap());
                assert_eq!((port, transport, op), (443, Transport::Tcp, NetOp::Connect));
            }
            other => panic!("expected net, got {other:?}"),
        }
        e.addr = "::1".parse::<Ipv6Addr>().unwrap().octets();
        e.protocol = libc::IPPROTO_UDP as u8;
        e.op = net_op::SENDMSG;
        match decode(&bytes_of(&e)).expect("decodes") {
            Event::Net {
                addr, transport, op, ..
            } => {
                assert_eq!(addr, "::1".parse::<IpAddr>().unwrap());
                assert_eq!((transport, op), (Transport::Udp, NetOp::Send));
            }
            other => panic!("expected net, got {other:?}"),
        }
    }

    #[test]
    fn lsm_records_name_their_hook_and_have_no_syscall() {
        let mut e: FileEvent = unsafe { std::mem::zeroed() };
        e.header = header(kind::FILE);
        e.header.flags = flags::VIA_LSM;
        e.op = file_op::OPEN_WRITE;
        e.hook = file_hook::FILE_OPEN;
        e.syscall_nr = NO_SYSCALL;
        let a = (path_source::OBJECT, "/tmp/x", "");
        let ev = decode(&file_record(&mut e, a, NO_PATH)).expect("decodes");
        assert_eq!(ev.mechanism(), "lsm/file_open");
        assert!(matches!(
            ev,
            Event::File {
                syscall_nr: None,
                lsm: Some(m),
                ..
            } if m == "lsm/file_open"
        ));
        // A syscall record a path hook judged names the hook; a hook id it does not know is
        // a decode error, not a guess.
        e.op = file_op::UNLINK;
        e.hook = file_hook::PATH_UNLINK;
        e.syscall_nr = 87;
        assert_eq!(
            decode(&file_record(&mut e, a, NO_PATH)).expect("decodes").mechanism(),
            "lsm/path_unlink"
        );
        e.hook = 99;
        assert!(matches!(
            decode(&file_record(&mut e, a, NO_PATH)),
            Err(DecodeError::BadValue { what: "file hook", .. })
        ));
        e.op = file_op::OPEN_WRITE;
        e.hook = file_hook::NONE;
        e.header.flags = 0;
        e.syscall_nr = 257;
        let ev = decode(&file_record(&mut e, a, NO_PATH)).expect("decodes");
        assert_eq!(ev.mechanism(), "tracepoint/syscalls");
        assert!(matches!(
            ev,
            Event::File {
                syscall_nr: Some(257),
                ..
            }
        ));
    }

    #[test]
    fn without_path_resolution_the_name_is_reported_as_passed() {
        let mut e: FileEvent = unsafe { std::mem::zeroed() };
        e.header = header(kind::FILE);
        e.op = file_op::UNLINK;
        e.a.walk_flags = walk::EMPTY | walk::UNAVAILABLE;
        let a = (path_source::DIR_AND_NAME, "", "rel/f.txt");
        match decode(&file_record(&mut e, a, NO_PATH)).expect("decodes") {
            Event::File { path, .. } => {
                assert_eq!(path.path, "rel/f.txt");
                assert_eq!(path.origin, PathOrigin::AsPassed);
            }
            other => panic!("expected file, got {other:?}"),
        }
    }

    #[test]
    fn rename_joins_directories_and_names() {
        let mut e: FileEvent = unsafe { std::mem::zeroed() };
        e.header = header(kind::FILE);
        e.op = file_op::RENAME;
        let a = (path_source::DIR_AND_NAME, "/work/dir", "./sub//a.txt");
        let b = (path_source::DIR_AND_NAME, "/", "/abs/b.txt");
        match decode(&file_record(&mut e, a, b)).expect("decodes") {
            Event::File {
                op, path, path2, owner, ..
            } => {
                assert_eq!(op, FileOp::Rename);
                assert_eq!(path.path, "/work/dir/sub/a.txt");
                assert_eq!(path.origin, PathOrigin::KernelDirAndName);
                assert_eq!(path2.expect("destination").path, "/abs/b.txt");
                assert_eq!(owner, None);
            }
            other => panic!("expected file, got {other:?}"),
        }
    }

    #[test]
    fn object_paths_come_from_the_walk_and_symlink_targets_stay_text() {
        let mut e: FileEvent = unsafe { std::mem::zeroed() };
        e.header = header(kind::FILE);
        e.op = file_op::SYMLINK;
        let a = (path_source::OBJECT, "/real/dir/f", "");
        let b = (path_source::NAME_ONLY, "", "../target");
        match decode(&file_record(&mut e, a, b)).expect("decodes") {
            Event::File { path, path2, .. } => {
                assert_eq!(path.path, "/real/dir/f");
                let t = path2.expect("target");
                assert_eq!((t.path.as_str(), t.origin), ("../target", PathOrigin::NameOnly));
            }
            other => panic!("expected file, got {other:?}"),
        }
    }

    #[test]
    fn bad_records_are_errors_not_panics() {
        assert_eq!(decode(&[0u8; 3]), Err(DecodeError::Short(3)));
        let h = header(99);
        assert_eq!(decode(&bytes_of(&h)), Err(DecodeError::UnknownKind(99)));
        let h = header(kind::EXEC);
        assert!(matches!(
            decode(&bytes_of(&h)),
            Err(DecodeError::Truncated { kind: 1, .. })
        ));
        let mut e: FileEvent = unsafe { std::mem::zeroed() };
        e.header = header(kind::FILE);
        e.op = 77;
        assert_eq!(
            decode(&file_record(&mut e, (path_source::OBJECT, "/x", ""), NO_PATH)),
            Err(DecodeError::BadValue {
                what: "file op",
                value: 77
            })
        );
    }

    #[test]
    fn file_records_carry_only_their_text_and_a_short_one_is_an_error() {
        let mut e: FileEvent = unsafe { std::mem::zeroed() };
        e.header = header(kind::FILE);
        e.op = file_op::RENAME;
        let a = (path_source::DIR_AND_NAME, "/w", "a");
        let b = (path_source::DIR_AND_NAME, "/w", "b");
        let bytes = file_record(&mut e, a, b);
        assert_eq!(bytes.len(), FILE_TEXT_OFFSET + 6);
        assert!(decode(&bytes).is_ok());
        // Text cut short: a length past the record's end is an error, not a read past it.
        assert_eq!(
            decode(&bytes[..bytes.len() - 1]),
            Err(DecodeError::BadValue {
                what: "name length",
                value: 1
            })
        );
        // The fixed part cut short.
        assert!(matches!(
            decode(&bytes[..FILE_TEXT_OFFSET - 1]),
            Err(DecodeError::Truncated { kind: kind::FILE, .. })
        ));
        // A walk longer than a walk can be.
        e.a.walked_len = (WALK_MAIN + 1) as u16;
        let mut long = bytes_of(&e)[..FILE_TEXT_OFFSET].to_vec();
        long.resize(FILE_TEXT_OFFSET + WALK_MAIN + 10, b'x');
        assert!(matches!(
            decode(&long),
            Err(DecodeError::BadValue {
                what: "walked length",
                ..
            })
        ));
    }

    #[test]
    fn join_handles_root_and_dots() {
        assert_eq!(join_dir_and_name(b"/", b""), b"/");
        assert_eq!(join_dir_and_name(b"/a", b"."), b"/a");
        assert_eq!(join_dir_and_name(b"/a", b"b/../c"), b"/a/b/../c");
    }
}
