//! Wire types shared by Tether's BPF programs (`agent-ebpf`) and its daemon (`agent-user`).
//!
//! Everything that crosses the kernel/user boundary is defined here, once: ring-buffer records
//! (each starting with a [`Header`] whose `kind` is a stable id from [`kind`]), map keys and
//! values, the load-time [`Config`] global (kernel struct offsets resolved from the running
//! kernel's BTF), and the limits both sides rely on. All types are `#[repr(C)]` with explicit
//! padding, so their layout is the same for the BPF target and the host; the size assertions at
//! the bottom of each module fail the build if anyone changes that by accident.
#![no_std]
#[cfg(test)]
extern crate std;

pub mod config;
pub mod contain;
pub mod syscalls;

pub use config::{Config, Offsets};

/// Length of a task's `comm` (TASK_COMM_LEN).
pub const COMM_LEN: usize = 16;
/// Bytes of a path built by walking dentries: the path ends at [`WALK_MAIN`] and starts at
/// `WalkedPath::start`; the extra bytes after it are slack the verifier needs to prove that a
/// copy of one name (at most [`NAME_MAX_WIRE`] bytes) at any start offset stays in bounds.
pub const WALK_MAIN: usize = 1024;
pub const WALK_BUF: usize = WALK_MAIN + NAME_MAX_WIRE + 1;
/// Longest single path component copied while walking (NAME_MAX is 255).
pub const NAME_MAX_WIRE: usize = 255;
/// Bytes of a path string copied from the caller's memory (a syscall argument).
pub const RAW_PATH_LEN: usize = 256;
/// Bytes of argv copied at exec (NUL-separated, as in /proc/PID/cmdline).
pub const ARGV_LEN: usize = 1024;
/// Bytes of the exec tracepoint's `filename` (the path as passed to execve).
pub const FILENAME_LEN: usize = 256;
/// How many dentries (plus mount crossings) a walk follows before it gives up and flags the
/// path as truncated.
pub const WALK_MAX_STEPS: u32 = 48;

/// Capacity of the in-kernel tracked-process map.
pub const MAX_TRACKED: u32 = 32768;
/// Capacity of the per-thread map that carries a file syscall from its entry to its exit.
pub const MAX_PENDING: u32 = 8192;
/// Records go to one of four rings by what they are about, so that a flood of one kind
/// (cheap file writes, say) cannot crowd out the others: `PROC_EVENTS` (exec, fork, exit,
/// io_uring), `NET_EVENTS` (every socket record), `FILE_EVENTS` (file records the kernel found
/// no rule against) and `ALERT_EVENTS` (file records a rule matched or the kernel could not
/// judge: a flood of allowed writes cannot hide a violation). Sizes in bytes (powers of two,
/// multiples of the page size).
pub const RING_PROC_BYTES: u32 = 4 << 20;
pub const RING_NET_BYTES: u32 = 4 << 20;
pub const RING_FILE_BYTES: u32 = 8 << 20;
pub const RING_ALERT_BYTES: u32 = 2 << 20;
/// When a ring holds more than this many bytes the producer wakes the reader at once; below
/// it records are submitted without a wakeup and the reader drains on a short timer (one
/// wakeup per event is what makes tracers expensive, see shared/PERFORMANCE.md).
pub const RING_WAKE_BYTES: u64 = 256 << 10;
/// Past [`RING_WAKE_BYTES`], the producer wakes the reader once per this many bytes written
/// (a power of two), not once per record.
pub const RING_WAKE_STEP: u64 = 64 << 10;

/// Stable ids of ring-buffer record kinds (first field of every record). Never renumber.
pub mod kind {
    pub const EXEC: u32 = 1;
    pub const FORK: u32 = 2;
    pub const EXIT: u32 = 3;
    pub const NET: u32 = 4;
    pub const FILE: u32 = 5;
    pub const UNIX: u32 = 6;
    pub const URING: u32 = 7;
    pub const SANDBOX: u32 = 8;
}

/// Stable ids of the kernel hooks that judge actions and make records ([`Header::hook`]):
/// every record names the program that made it, and a record that cannot be made is counted
/// against its hook ([`counter::lost`]). Never renumber.
pub mod hook {
    /// sched_process_exec (tracepoint): execs, and agent selection.
    pub const SCHED_EXEC: u32 = 0;
    /// sched_process_fork (raw tracepoint): a child is tracked.
    pub const SCHED_FORK: u32 = 1;
    /// sched_process_exit (tracepoint).
    pub const SCHED_EXIT: u32 = 2;
    /// sys_exit_execve / sys_exit_execveat: execs the kernel refused.
    pub const EXEC_SYSCALL: u32 = 3;
    /// lsm/bprm_check_security.
    pub const LSM_EXEC: u32 = 4;
    /// cgroup_sock_addr connect4/connect6.
    pub const CGROUP_CONNECT: u32 = 5;
    /// cgroup_sock_addr sendmsg4/sendmsg6.
    pub const CGROUP_SENDMSG: u32 = 6;
    /// lsm/socket_connect.
    pub const LSM_CONNECT: u32 = 7;
    /// sys_enter_* / sys_exit_* of the watched file syscalls.
    pub const FILE_SYSCALL: u32 = 8;
    /// lsm/file_open, lsm/file_truncate.
    pub const LSM_FILE: u32 = 9;
    /// lsm/path_* (name-based file operations).
    pub const LSM_PATH: u32 = 10;
    /// lsm/inode_setxattr, inode_removexattr, inode_setattr.
    pub const LSM_INODE: u32 = 11;
    /// cgroup_sock_addr bind4/bind6.
    pub const CGROUP_BIND: u32 = 12;
    /// cgroup_sock sock_create (AF_INET/AF_INET6 sockets).
    pub const CGROUP_SOCK: u32 = 13;
    /// lsm/socket_create, socket_listen.
    pub const LSM_SOCKET: u32 = 14;
    /// The socket syscall tracepoints (socket, listen, accept, connect, sendto, sendmsg)
    /// where no BPF LSM hook judges them.
    pub const SOCKET_SYSCALL: u32 = 15;
    /// lsm/unix_stream_connect, unix_may_send.
    pub const LSM_UNIX: u32 = 16;
    /// sys_enter_io_uring_setup / sys_enter_io_uring_enter.
    pub const URING_SYSCALL: u32 = 17;
    /// sys_enter_* / sys_exit_* of the calls `tether exec`'s seccomp filter refuses
    /// (agent_common::syscalls::SANDBOXED): a call refused by a seccomp filter never reaches
    /// its entry tracepoint, only its exit.
    pub const SECCOMP: u32 = 18;
    /// sys_enter_connect/bind and sys_exit_connect/bind, for the TCP connects and binds that
    /// the Landlock layer of `tether exec`'s sandbox refused (EACCES, in an LSM hook that runs
    /// before the cgroup hooks and before BPF LSM).
    pub const LANDLOCK_NET: u32 = 19;
    /// sys_exit_connect of a Unix connect to an abstract socket that failed with EPERM: the
    /// abstract-socket scoping of the sandbox's Landlock layer refused it (in an LSM hook
    /// before the connection, where no BPF LSM Unix hook is in effect).
    pub const LANDLOCK_SCOPE: u32 = 20;
    pub const COUNT: u32 = 21;
    /// The mechanism name of each hook, by id (as reported in every event).
    pub const NAMES: [&str; COUNT as usize] = [
        "tracepoint/sched_process_exec",
        "raw_tp/sched_process_fork",
        "tracepoint/sched_process_exit",
        "tracepoint/syscalls/sys_exit_execve",
        "lsm/bprm_check_security",
        "cgroup_sock_addr/connect",
        "cgroup_sock_addr/sendmsg",
        "lsm/socket_connect",
        "tracepoint/syscalls",
        "lsm/file_open",
        "lsm/path",
        "lsm/inode",
        "cgroup_sock_addr/bind",
        "cgroup_sock/sock_create",
        "lsm/socket",
        "tracepoint/syscalls/socket",
        "lsm/unix",
        "tracepoint/syscalls/io_uring",
        "seccomp",
        "landlock/net",
        "landlock/scope",
    ];

    /// The mechanism name of hook `id` (None for an unknown id).
    pub fn name(id: u32) -> Option<&'static str> {
        NAMES.get(id as usize).copied()
    }
}

/// Bits of the `FEATURES` map: what the daemon attached, for programs that defer to a
/// stronger hook.
pub mod feature {
    /// The cgroup sock_create hook judges IP socket creation (the socket syscall
    /// tracepoint leaves AF_INET / AF_INET6 to it).
    pub const CGROUP_SOCK: u32 = 2;
}

/// A socket syscall between its entry and its exit (SOCK_CALLS, by thread id): the fd its
/// exit judges.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct PendingSock {
    pub fd: i32,
    pub nr: u32,
    /// connect: the caller's sockaddr (a user pointer) and its length, for the record of a
    /// connect an LSM refused (Landlock's abstract-socket scoping) before any peer existed.
    pub addr: u64,
    pub addrlen: u32,
    pub _pad: u32,
}

/// An IP connect the BPF LSM socket_connect hook judged and recorded (CONNECT_MARKS, by
/// thread id): the cgroup connect hook that follows in the same call judges it again but
/// does not record it twice. A connect with no mark (TCP Fast Open: sendto/sendmsg with
/// MSG_FASTOPEN, which no LSM connect hook sees) is recorded by the cgroup hook.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct ConnectMark {
    /// When the LSM hook judged it (bpf_ktime_get_ns): a mark older than a moment is stale.
    pub ktime_ns: u64,
    /// The destination, as the cgroup hook sees it (IPv4 in the first four bytes).
    pub addr: [u8; 16],
    pub port: u16,
    pub family: u8,
    pub _pad: [u8; 5],
}

/// A TCP connect or bind between its entry and its exit (LANDLOCK_CALLS, by thread id): its
/// destination (connect) or local address (bind) as the caller passed it, for the record of
/// a Landlock refusal.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct PendingNet {
    /// Network byte order; IPv4 in the first four bytes.
    pub addr: [u8; 16],
    /// Host byte order.
    pub port: u16,
    pub family: u8,
    /// [`net_op`] CONNECT or BIND.
    pub op: u8,
    pub nr: u32,
}

/// Indices of the per-CPU counter array (`COUNTERS`), summed by userspace.
pub mod counter {
    /// A child could not be added to the tracked map (map full): it is not covered.
    pub const TRACKED_FULL: u32 = 0;
    /// A file syscall could not be carried from entry to exit (pending map full): judged as
    /// unjudged at its entry (refused, by a kill, in enforce mode).
    pub const PENDING_FULL: u32 = 1;
    /// A kernel read failed while building a record (the record is still sent, flagged).
    pub const READ_ERROR: u32 = 2;
    /// An action the kernel could not judge (its target unreadable, truncated or not
    /// placeable): its verdict is the `unjudged` posture, never an allow by default.
    pub const UNJUDGED: u32 = 3;
    /// A tracked process reached for Tether itself and was refused by an LSM hook: bpf(2),
    /// a signal to the daemon, ptrace-family access to the daemon or to an untracked process.
    pub const TAMPER: u32 = 4;
    /// First of the per-hook counters of records that did not fit in their ring: the
    /// verdict still applied, the record is lost ([`lost`]).
    pub const LOST: u32 = 5;
    pub const COUNT: u32 = LOST + crate::hook::COUNT;

    /// The lost-records counter of hook `hook` ([`crate::hook`]).
    #[inline(always)]
    pub const fn lost(hook: u32) -> u32 {
        LOST + hook
    }

    /// Names of the counters before [`LOST`] (metrics, logs, alerts); the per-hook ones are
    /// named after their hook (`crate::hook::NAMES`).
    pub const NAMES: [&str; LOST as usize] = [
        "tracked_full",
        "pending_full",
        "read_error",
        "unjudged",
        "tamper_refused",
    ];
}

/// Value of the tracked-process map, keyed by tgid.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Tracked {
    /// The process's start time (task->start_boottime of its leader), ns since boot.
    pub start_ns: u64,
    /// tgid of the agent root this process descends from.
    pub root_tgid: u32,
    /// How the process came to be tracked ([`track_reason`]).
    pub reason: u32,
    /// The task (credential binding) this process acts under, as numbered by the daemon;
    /// [`NO_TASK`] when none. Children inherit it at fork.
    pub task: u32,
    /// The pod guardrails that hold for this process ([`contain::guard_owner`]): a bit per
    /// pod matcher of the rule files that the process's pod matches (0: none, only the
    /// guardrails for every agent). Set from the pod cgroup when the process becomes
    /// tracked; children inherit it at fork.
    pub guard_set: u32,
    /// When the task's credential expires, in bpf_ktime_get_boot_ns() time (0: no expiry).
    /// The kernel flags every record made at or after it ([`flags::TASK_EXPIRED`]) without
    /// waiting for the daemon; revocation sets it to 1 (already past).
    pub expires_ns: u64,
}

/// `Tracked::task` / `Header::task` of a process bound to no task.
pub const NO_TASK: u32 = 0;

/// Why a process is in the tracked map.
pub mod track_reason {
    /// Registered by `tether exec` (or another API caller).
    pub const REGISTERED: u32 = 1;
    /// Matched an agent selector (comm or executable) at exec.
    pub const SELECTED: u32 = 2;
    /// Found running at daemon start and matched a selector.
    pub const ADOPTED: u32 = 3;
    /// Forked from a tracked process.
    pub const INHERITED: u32 = 4;
}

/// Agent selectors as the kernel matches them. Each selector is one bit of a u64 mask; each
/// selector map (comm, executable inode, uid, cgroup id) maps a key to the mask of the
/// selectors that list it. A process matches selector i when, for every criterion, bit i is in
/// the looked-up mask or in `Config::select_free` (the selector does not constrain it): the
/// criteria of one selector are ANDed, the values listed under one criterion ORed.
pub mod select {
    /// At most this many selectors (bits of the mask).
    pub const MAX: usize = 64;
    pub const COMM: usize = 0;
    pub const EXE: usize = 1;
    pub const UID: usize = 2;
    pub const CGROUP: usize = 3;
    pub const KINDS: usize = 4;
    /// A cgroup selector matches processes in its cgroup and in cgroups below it; the kernel
    /// walks up from the process's cgroup at most this many levels (itself included), so a
    /// selector naming a cgroup further up does not match.
    pub const CGROUP_LEVELS: usize = 16;
}

/// Key of the executable selector map: the executable's inode, as the kernel sees it.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct InodeKey {
    pub ino: u64,
    /// Kernel-internal dev_t of the superblock (`MKDEV(major, minor)` = major << 20 | minor).
    pub dev: u32,
    pub _pad: u32,
}

impl InodeKey {
    /// Builds the key from a userspace `st_dev`/`st_ino` pair (glibc's dev_t encoding).
    pub fn from_stat(st_dev: u64, st_ino: u64) -> Self {
        let major = ((st_dev >> 32) & 0xffff_f000) | ((st_dev >> 8) & 0xfff);
        let minor = ((st_dev >> 12) & 0xffff_ff00) | (st_dev & 0xff);
        InodeKey {
            ino: st_ino,
            dev: ((major as u32) << 20) | (minor as u32 & 0xf_ffff),
            _pad: 0,
        }
    }
}

/// Common prefix of every ring-buffer record.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct Header {
    pub kind: u32,
    /// Record-level flags ([`flags`]).
    pub flags: u32,
    /// bpf_ktime_get_boot_ns() when the record was made.
    pub ktime_ns: u64,
    pub tgid: u32,
    pub tid: u32,
    pub uid: u32,
    pub gid: u32,
    pub cgroup_id: u64,
    /// Start time of the acting process (from the tracked map), ns since boot.
    pub start_ns: u64,
    pub comm: [u8; COMM_LEN],
    /// The acting process's task at the time of the record ([`Tracked::task`]).
    pub task: u32,
    /// The kernel's containment decision ([`contain::verdict`] bits; 0: allowed or not judged).
    pub verdict: u32,
    /// The guardrail set the kernel judged by ([`Tracked::guard_set`]).
    pub guard_set: u32,
    /// The program that made the record ([`hook`]).
    pub hook: u32,
}

/// Record-level flags.
pub mod flags {
    /// Some kernel read failed while the record was built; fields may be empty.
    pub const READ_ERROR: u32 = 1;
    /// argv did not fit in [`crate::ARGV_LEN`].
    pub const ARGV_TRUNCATED: u32 = 2;
    /// The process became tracked with this exec (it matched an agent selector).
    pub const NEWLY_SELECTED: u32 = 4;
    /// A BPF LSM hook made this record (file_open, socket_connect), or checked this exec
    /// (bprm_check_security) before it happened, or judged the file operation a syscall
    /// record reports (`FileEvent::hook` names it): the hook that can deny, not a tracepoint.
    pub const VIA_LSM: u32 = 8;
    /// The acting process's task credential had expired (or been revoked) when the record was
    /// made, by the kernel's clock ([`crate::Tracked::expires_ns`]).
    pub const TASK_EXPIRED: u32 = 16;
}

/// A path rebuilt in the kernel by walking dentries and mounts from a `struct path`.
/// The text is `buf[start..WALK_MAIN]`, always absolute (in the process's mount namespace).
#[repr(C)]
#[derive(Clone, Copy)]
pub struct WalkedPath {
    pub buf: [u8; WALK_BUF],
    pub start: u16,
    /// [`walk`] flags.
    pub flags: u16,
    /// Offset in `buf` of the `/` before the last component (the leaf).
    pub leaf: u16,
    pub _pad: u16,
}

/// Flags of a [`WalkedPath`].
pub mod walk {
    /// The path was longer than the buffer or the step limit: leading components are missing.
    pub const TRUNCATED: u16 = 1;
    /// A kernel read failed: the path is incomplete.
    pub const READ_ERROR: u16 = 2;
    /// Nothing was walked (no object).
    pub const EMPTY: u16 = 4;
    /// Path walking is off on this kernel (a struct field it needs is missing from its BTF;
    /// reported at start): only the path as passed is known.
    pub const UNAVAILABLE: u16 = 8;
    /// The walk ended at no root of the process's mount namespace: an unnamed object (a
    /// pipe, a socket, a memfd), or a file of a mount tree attached nowhere in it (a
    /// detached clone of a mount, a lazily unmounted one). The text is relative to that
    /// tree's root, so it names no file a rule could mean: judged unjudged.
    pub const DETACHED: u16 = 16;
}

impl WalkedPath {
    /// The walked path's bytes (empty when nothing was walked or `start` is corrupt).
    pub fn bytes(&self) -> &[u8] {
        let start = self.start as usize;
        if self.flags & walk::EMPTY != 0 || start > WALK_MAIN {
            return &[];
        }
        &self.buf[start..WALK_MAIN]
    }
}

/// exec of a tracked process (sched_process_exec).
#[repr(C)]
#[derive(Clone, Copy)]
pub struct ExecEvent {
    pub header: Header,
    /// tgid of the parent (real_parent).
    pub ppid: u32,
    /// Valid bytes of `argv`.
    pub argv_len: u32,
    /// Valid bytes of `filename`.
    pub filename_len: u32,
    /// 0 for an exec that happened; for an execve the kernel refused (EACCES, EPERM: Landlock,
    /// an LSM, permissions, noexec) the errno, and then `exe` is the directory a relative
    /// `filename` is resolved from (empty for an absolute one) and argv is empty.
    pub failed_errno: u32,
    /// The executable actually running (mm->exe_file), resolved by the kernel.
    pub exe: WalkedPath,
    /// The path as passed to execve (may be relative).
    pub filename: [u8; FILENAME_LEN],
    /// NUL-separated argv, as in /proc/PID/cmdline.
    pub argv: [u8; ARGV_LEN],
}

/// An execve of a tracked thread between its entry and its exit (EXEC_PENDING, by thread id).
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct PendingExec {
    /// The user pointer to the path as passed.
    pub filename: u64,
    /// execveat's dirfd (AT_FDCWD for execve).
    pub dfd: i32,
    pub _pad: u32,
}

/// A tracked process forked a new process (threads are not reported).
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct ForkEvent {
    /// Header of the parent.
    pub header: Header,
    pub child_tgid: u32,
    pub root_tgid: u32,
    pub child_start_ns: u64,
}

/// The last thread of a tracked process exited.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct ExitEvent {
    pub header: Header,
    /// task->exit_code: (status << 8) | signal.
    pub exit_code: u32,
    pub _pad: u32,
}

/// Socket operations of [`NetEvent`].
pub mod net_op {
    /// A connect to `addr`:`port`.
    pub const CONNECT: u8 = 1;
    /// A send with an explicit destination `addr`:`port`.
    pub const SENDMSG: u8 = 2;
    /// A bind to local `addr`:`port` (a port other than 0: a service being set up).
    pub const BIND: u8 = 3;
    /// A listen on local `addr`:`port` (0: not bound yet; the kernel picks one).
    pub const LISTEN: u8 = 4;
    /// An accepted connection from `addr`:`port` on local port `local_port`.
    pub const ACCEPT: u8 = 5;
    /// A socket of kind `sock_kind` was created (raw, packet, ICMP, vsock).
    pub const SOCKET: u8 = 6;
}

/// Socket kinds a task must be granted (`sockets:` in scopes and guardrails): one bit each
/// in [`contain::Grants`]. Ordinary TCP, UDP and Unix sockets are not in this list.
pub mod sock_kind {
    /// Not one of the kinds below.
    pub const NONE: u8 = 0;
    /// AF_INET / AF_INET6 SOCK_RAW: raw IP, hand-made packets.
    pub const RAW: u8 = 1;
    /// AF_PACKET: every frame on an interface, any protocol.
    pub const PACKET: u8 = 2;
    /// AF_INET / AF_INET6 SOCK_DGRAM with IPPROTO_ICMP / ICMPV6 ("ping" sockets).
    pub const ICMP: u8 = 3;
    /// AF_VSOCK: to the hypervisor host or other VMs.
    pub const VSOCK: u8 = 4;
    /// io_uring (not a socket, granted alike: `io_uring: true`).
    pub const IO_URING: u8 = 5;
    pub const COUNT: u8 = 6;
    pub const NAMES: [&str; COUNT as usize] = ["", "raw", "packet", "icmp", "vsock", "io_uring"];

    /// The kind of a socket from its family, type and protocol, as socket(2) names them.
    #[inline(always)]
    pub const fn of(family: u32, sock_type: u32, protocol: u32) -> u8 {
        const AF_INET: u32 = 2;
        const AF_INET6: u32 = 10;
        const AF_PACKET: u32 = 17;
        const AF_VSOCK: u32 = 40;
        const SOCK_DGRAM: u32 = 2;
        const SOCK_RAW: u32 = 3;
        const IPPROTO_ICMP: u32 = 1;
        const IPPROTO_ICMPV6: u32 = 58;
        // SOCK_NONBLOCK / SOCK_CLOEXEC ride in the type argument.
        let t = sock_type & 0xf;
        match family {
            AF_INET | AF_INET6 if t == SOCK_RAW => RAW,
            AF_INET | AF_INET6 if t == SOCK_DGRAM && (protocol == IPPROTO_ICMP || protocol == IPPROTO_ICMPV6) => ICMP,
            AF_PACKET => PACKET,
            AF_VSOCK => VSOCK,
            _ => NONE,
        }
    }
}

/// A tracked process's socket operation on an IP (or, for SOCKET, any) socket.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct NetEvent {
    pub header: Header,
    /// [`net_op`].
    pub op: u8,
    /// AF_INET (2) or AF_INET6 (10), from the socket (SOCKET: the family asked for).
    pub family: u8,
    /// IPPROTO_* of the socket (6 TCP, 17 UDP, ...), low byte of socket(2)'s protocol.
    pub protocol: u8,
    /// SOCK_STREAM (1), SOCK_DGRAM (2), SOCK_RAW (3), ...
    pub sock_type: u8,
    /// Remote port (connect, send, accept) or local port (bind, listen), host byte order.
    pub port: u16,
    /// ACCEPT: the local port the connection came in on.
    pub local_port: u16,
    /// Remote address (connect, send, accept) or local address (bind, listen), network byte
    /// order; IPv4 in the first four bytes.
    pub addr: [u8; 16],
    /// SOCKET: [`sock_kind`].
    pub sock_kind: u8,
    pub _pad: [u8; 7],
}

/// Unix-socket operations of [`UnixEvent`].
pub mod unix_op {
    pub const CONNECT: u8 = 1;
    /// A datagram sent to a named peer (not through an earlier connect).
    pub const SEND: u8 = 2;
}

/// How the peer of a [`UnixEvent`] is named.
pub mod unix_name {
    /// `peer` is the peer's socket file, rebuilt from the kernel's objects after the kernel
    /// resolved the name (symlinks, `..`, bind mounts and hard links no longer matter).
    pub const RESOLVED: u8 = 1;
    /// `name` is an abstract name (no file); judged as `@name`.
    pub const ABSTRACT: u8 = 2;
    /// `name` is the path as the caller gave it (not resolved: a datagram judged before the
    /// kernel looked the name up, where no BPF LSM hook sees the resolved peer).
    pub const AS_GIVEN: u8 = 3;
}

/// Bytes of a Unix socket name (sockaddr_un.sun_path).
pub const UNIX_NAME_LEN: usize = 108;

/// A tracked process connects or sends to a Unix socket.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct UnixEvent {
    pub header: Header,
    /// [`unix_op`].
    pub op: u8,
    /// SOCK_STREAM (1), SOCK_DGRAM (2), SOCK_SEQPACKET (5).
    pub sock_type: u8,
    /// [`unix_name`].
    pub naming: u8,
    pub _pad: u8,
    /// Valid bytes of `name`.
    pub name_len: u32,
    /// The abstract name (without its leading NUL) or the path as given.
    pub name: [u8; UNIX_NAME_LEN],
    pub _pad2: u32,
    /// RESOLVED: the peer's socket file.
    pub peer: WalkedPath,
}

/// io_uring operations of [`UringEvent`].
pub mod uring_op {
    /// io_uring_setup: a ring is created.
    pub const SETUP: u32 = 1;
    /// io_uring_enter on a ring (created before the process was tracked, or passed to it).
    pub const ENTER: u32 = 2;
}

/// A tracked process creates or drives an io_uring instance (judged where no BPF LSM hook
/// sees the operations a ring performs).
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct UringEvent {
    pub header: Header,
    /// [`uring_op`].
    pub op: u32,
    /// ENTER: the ring's fd.
    pub fd: i32,
}

/// A tracked process made a call that a seccomp filter refused before it ran (its exit
/// tracepoint saw EPERM, its entry tracepoint never ran): the refusal of `tether exec`'s
/// sandbox, or of another filter the process runs under.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct SandboxEvent {
    pub header: Header,
    /// The syscall refused (this architecture's number).
    pub syscall_nr: u32,
    pub _pad: u32,
    /// What it returned (-EPERM).
    pub ret: i64,
}

/// File operations with write intent.
pub mod file_op {
    /// open/openat/openat2/creat with O_WRONLY, O_RDWR, O_CREAT or O_TRUNC.
    pub const OPEN_WRITE: u16 = 1;
    pub const TRUNCATE: u16 = 2;
    pub const RENAME: u16 = 3;
    pub const UNLINK: u16 = 4;
    pub const RMDIR: u16 = 5;
    pub const MKDIR: u16 = 6;
    pub const LINK: u16 = 7;
    pub const SYMLINK: u16 = 8;
    pub const CHMOD: u16 = 9;
    pub const CHOWN: u16 = 10;
    /// A new file (an O_CREAT open or mknod), refused by the BPF LSM path_mknod hook before
    /// it existed, with no watched syscall in flight to carry the record.
    pub const CREATE: u16 = 11;
    /// mknod/mknodat: a device node, FIFO or socket file (a device node is judged as a write
    /// of the device it names, see [`crate::contain::device_key`]).
    pub const MKNOD: u16 = 12;
    /// setxattr family (ACLs, capabilities, security labels): the attribute name in `b.raw`.
    pub const SETXATTR: u16 = 13;
    /// removexattr family: the attribute name in `b.raw`.
    pub const REMOVEXATTR: u16 = 14;
    /// utimensat, utimes, utime, futimesat: the file's times.
    pub const UTIMES: u16 = 15;
}

/// The BPF LSM hook that judged a file operation ([`FileEvent::hook`], [`PendingFile::hook`]);
/// [`file_hook::NONE`]: judged at the syscall's exit, or by the daemon.
pub mod file_hook {
    pub const NONE: u16 = 0;
    pub const FILE_OPEN: u16 = 1;
    pub const PATH_MKNOD: u16 = 2;
    pub const PATH_MKDIR: u16 = 3;
    pub const PATH_RMDIR: u16 = 4;
    pub const PATH_UNLINK: u16 = 5;
    pub const PATH_RENAME: u16 = 6;
    pub const PATH_LINK: u16 = 7;
    pub const PATH_SYMLINK: u16 = 8;
    pub const PATH_TRUNCATE: u16 = 9;
    pub const PATH_CHMOD: u16 = 10;
    pub const PATH_CHOWN: u16 = 11;
    pub const FILE_TRUNCATE: u16 = 12;
    pub const INODE_SETXATTR: u16 = 13;
    pub const INODE_REMOVEXATTR: u16 = 14;
    pub const INODE_SETATTR: u16 = 15;

    /// The mechanism name of each hook (`lsm/<hook>`), by id.
    pub const MECHANISMS: [&str; 16] = [
        "",
        "lsm/file_open",
        "lsm/path_mknod",
        "lsm/path_mkdir",
        "lsm/path_rmdir",
        "lsm/path_unlink",
        "lsm/path_rename",
        "lsm/path_link",
        "lsm/path_symlink",
        "lsm/path_truncate",
        "lsm/path_chmod",
        "lsm/path_chown",
        "lsm/file_truncate",
        "lsm/inode_setxattr",
        "lsm/inode_removexattr",
        "lsm/inode_setattr",
    ];

    /// `lsm/<hook>` of hook `id`; None for NONE or an unknown id.
    pub fn mechanism(id: u16) -> Option<&'static str> {
        MECHANISMS.get(id as usize).copied().filter(|n| !n.is_empty())
    }
}

/// Where the text of a [`FilePath`] comes from.
pub mod path_source {
    /// Not used by this operation.
    pub const NONE: u8 = 0;
    /// `walked` is the object itself, from the kernel's `struct file` (an opened file, or the
    /// file behind an fd argument): fully resolved, immune to argument races.
    pub const OBJECT: u8 = 1;
    /// `walked` is the directory the name is resolved from (the cwd, a dirfd, or the process
    /// root for absolute names), from kernel objects; `raw` is the name as passed, copied from
    /// the caller's memory at syscall entry.
    pub const DIR_AND_NAME: u8 = 2;
    /// Only the name as passed is known (a symlink's target text, which is never resolved).
    pub const NAME_ONLY: u8 = 3;
}

/// One path argument of a file record: where its text comes from and how long each part is.
/// The text itself is in the record's [`FileEvent::text`], which holds `a`'s walked text,
/// `a`'s name as passed, `b`'s walked text and `b`'s name, in that order, without gaps.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FilePath {
    /// Bytes of the walked text (at most [`WALK_MAIN`]; 0 when nothing was walked).
    pub walked_len: u16,
    /// [`walk`] flags of the walk.
    pub walk_flags: u16,
    /// Bytes of the name as passed (at most `RAW_PATH_LEN - 1`; without the NUL). Only
    /// [`path_source::DIR_AND_NAME`] and [`path_source::NAME_ONLY`] carry it.
    pub raw_len: u16,
    /// [`path_source`].
    pub source: u8,
    /// 1 when the name was cut at [`RAW_PATH_LEN`]; [`RAW_UNREADABLE`] when it could not be
    /// read from the caller's memory at all.
    pub raw_truncated: u8,
}

/// `FileEvent::syscall_nr` of a record made by an LSM hook (no syscall context).
pub const NO_SYSCALL: u32 = u32::MAX;

/// A tracked process performed a file operation with write intent (reported at syscall exit,
/// or, for opens where BPF LSM is in effect, by the file_open hook before the open completes).
#[repr(C)]
#[derive(Clone, Copy)]
pub struct FileEvent {
    pub header: Header,
    /// [`file_op`].
    pub op: u16,
    /// [`file_hook`]: the BPF LSM hook that judged the operation (its verdict is in the
    /// header), or NONE.
    pub hook: u16,
    /// The syscall number (architecture-specific, see [`syscalls`]); [`NO_SYSCALL`] when an
    /// LSM hook made the record.
    pub syscall_nr: u32,
    /// The syscall's return value (negative errno on failure); for an LSM record, the hook's
    /// verdict (0 = allowed).
    pub ret: i64,
    /// open flags, rename flags or AT_* flags, as passed.
    pub flags: u64,
    /// Mode for open/creat/mkdir/chmod.
    pub mode: u32,
    /// New owner for chown (u32::MAX = unchanged).
    pub uid: u32,
    pub gid: u32,
    /// The object as the kernel judged it ([`Object`]; `mode` 0: not looked at). MKNOD: the
    /// node to be made (its type in `mode`, the device in `rdev`).
    pub obj: Object,
    /// The object, the source of a rename/link, or the new symlink's path.
    pub a: FilePath,
    /// The destination of a rename/link, or a symlink's target text.
    pub b: FilePath,
    /// The paths' text (see [`FilePath`]). Records are variable-size: a ring record is
    /// [`FILE_TEXT_OFFSET`] bytes plus the text's used bytes, never the whole array.
    pub text: [u8; FILE_TEXT_LEN],
}

/// Where [`FileEvent::text`] starts: the fixed part of a file record.
pub const FILE_TEXT_OFFSET: usize = core::mem::offset_of!(FileEvent, text);
/// Room for the text of a file record: two walks of at most [`WALK_MAIN`] bytes and two names
/// of at most `RAW_PATH_LEN - 1` (2558 bytes), rounded up.
pub const FILE_TEXT_LEN: usize = 2 * (WALK_MAIN + RAW_PATH_LEN);

/// The inode a file operation acts on, as the kernel judged it: a device node is judged as
/// the device it names, a regular file with more than one hard link cannot be judged by one
/// name (see agent-ebpf's `contain::judge_object`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Object {
    /// inode.i_mode (S_IFMT bits and permissions); 0 when not looked at.
    pub mode: u32,
    /// inode.i_rdev of a device node (kernel encoding: major << 20 | minor).
    pub rdev: u32,
    /// inode.i_nlink.
    pub nlink: u32,
}

/// State carried in the kernel from a file syscall's entry to its exit, keyed by thread id.
/// Built in a per-CPU scratch slot (it is too large for the BPF stack).
#[repr(C)]
#[derive(Clone, Copy)]
pub struct PendingFile {
    pub op: u16,
    /// [`file_hook`] of a BPF LSM path hook that judged this call while it ran (NONE: none
    /// did); its verdict is `verdict`, which the exit record carries.
    pub hook: u16,
    pub syscall_nr: u32,
    pub flags: u64,
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    /// fd argument for f* operations (ftruncate, fchmod, fchown), else -1.
    pub fd: i32,
    pub dfd_a: i32,
    pub dfd_b: i32,
    pub raw_len_a: u16,
    pub raw_len_b: u16,
    /// [`path_source`] for a and b as decided at entry.
    pub source_a: u8,
    pub source_b: u8,
    pub raw_truncated_a: u8,
    pub raw_truncated_b: u8,
    pub verdict: u32,
    /// mknod's device (kernel encoding, major << 20 | minor).
    pub dev: u32,
    /// The callers' name pointers: a name whose page was not resident at entry (probe reads
    /// cannot fault) is read again at exit, after the kernel itself has read it.
    pub ptr_a: u64,
    pub ptr_b: u64,
    pub raw_a: [u8; RAW_PATH_LEN],
    pub raw_b: [u8; RAW_PATH_LEN],
}

/// `FilePath::raw_truncated` value: the caller's name could not be read.
pub const RAW_UNREADABLE: u8 = 2;

/// `PendingFile::raw_truncated_a` of an open: the name is not read at entry, only at exit
/// where the record needs it (the open failed, or its fd no longer names the file); a
/// successful open is reported by the file it opened. Never on the wire.
pub const RAW_DEFERRED: u8 = 3;

/// AT_FDCWD as passed in a dirfd argument.
pub const AT_FDCWD: i32 = -100;

const _: () = {
    use core::mem::size_of;
    assert!(size_of::<Tracked>() == 32);
    assert!(size_of::<InodeKey>() == 16);
    assert!(size_of::<Header>() == 80);
    assert!(size_of::<Object>() == 12);
    assert!(size_of::<WalkedPath>() == WALK_BUF + 8);
    assert!(size_of::<WalkedPath>().is_multiple_of(8));
    assert!(size_of::<ExecEvent>() == 80 + 16 + size_of::<WalkedPath>() + FILENAME_LEN + ARGV_LEN);
    assert!(size_of::<ForkEvent>() == 96);
    assert!(size_of::<ExitEvent>() == 88);
    assert!(size_of::<NetEvent>() == 112);
    assert!(size_of::<UnixEvent>() == 80 + 8 + UNIX_NAME_LEN + 4 + size_of::<WalkedPath>());
    assert!(size_of::<UringEvent>() == 88);
    assert!(size_of::<SandboxEvent>() == 96);
    assert!(size_of::<FilePath>() == 8);
    assert!(FILE_TEXT_OFFSET == 80 + 48 + 2 * size_of::<FilePath>());
    assert!(size_of::<FileEvent>() == FILE_TEXT_OFFSET + FILE_TEXT_LEN);
    assert!(size_of::<PendingFile>() == 72 + 2 * RAW_PATH_LEN);
    assert!(size_of::<PendingExec>() == 16);
    assert!(size_of::<PendingSock>() == 24);
    assert!(size_of::<ConnectMark>() == 32);
    assert!(size_of::<PendingNet>() == 24);
    // The walk masks offsets with WALK_MAIN - 1 and name lengths with NAME_MAX_WIRE.
    assert!(WALK_MAIN.is_power_of_two());
    assert!((NAME_MAX_WIRE + 1).is_power_of_two());
    assert!(ARGV_LEN.is_power_of_two());
    assert!(RAW_PATH_LEN.is_power_of_two());
    assert!(FILENAME_LEN.is_power_of_two());
    assert!(RING_WAKE_STEP.is_power_of_two());
};

#[cfg(feature = "user")]
mod pod {
    // SAFETY: all of these are repr(C), Copy, have explicit padding and no invalid bit patterns.
    unsafe impl aya::Pod for super::Tracked {}
    unsafe impl aya::Pod for super::InodeKey {}
    unsafe impl aya::Pod for super::Config {}
}
