//! BPF LSM hooks: where the kernel allows them (BPF LSM built in and in `lsm=`), these replace
//! the tracepoint/cgroup observers for exec, write-opens, connects, socket creation, listens
//! and Unix sockets, because an LSM hook runs before the action and can refuse it: a refused
//! action gets EPERM (and, for a kill verdict, the process a SIGKILL) before anything
//! happened. An action another BPF LSM program already refused is left alone (its verdict is
//! returned). Every hook judges first and records after: a full ring loses the record
//! (counted), never the verdict.
//!
//! Also the feature probes: programs that are only ever loaded (never attached), so the
//! daemon learns by a real load whether this kernel allows fentry and bpf_send_signal.
use core::ffi::c_void;

use agent_common::{
    ExecEvent, NO_SYSCALL, Object, Tracked, WalkedPath,
    contain::{class, verdict},
    file_op,
    flags::VIA_LSM,
    hook, kind, net_op, path_source, sock_kind, unix_op,
};
use aya_ebpf::{
    helpers::{bpf_get_current_pid_tgid, generated},
    macros::{fentry, lsm, tracepoint},
    programs::{FEntryContext, LsmContext, TracePointContext},
};

use crate::{
    contain::{
        judge_grant, judge_listen, judge_net, judge_object, judge_path, kill_current, kills, lsm_answer, mapped_v4,
        refuses, unjudged,
    },
    kernel::{KPtr, current_task, fill_header, off, parent_tgid, read_ptr, read_u32, walk_empty, walk_path},
    maps::{
        self, EXEC_CHECKED, EXEC_WALK, LSM_FILE_SCRATCH, PROC_EVENTS, UNIX_WALK, file_ring, reserve, wake_flags_of,
    },
    net,
    record::{put_raw, put_walk, send},
    sock,
};

const FMODE_WRITE: u32 = 0x2;
/// f_mode bit: this open created the file (O_CREAT on a name that did not exist).
const FMODE_CREATED: u32 = 0x10_0000;
const AF_INET: u16 = 2;
const AF_INET6: u16 = 10;
/// Marks an EXEC_CHECKED value (a verdict may be 0).
pub const CHECKED: u32 = 1 << 31;
/// EXEC_CHECKED value of an exec this hook refused and reported itself (the failed execve's
/// exit must not report it again).
pub const REPORTED: u32 = 1 << 30;

/// The tracked-map entry of the current process, unless it is untracked (or the daemon
/// itself).
#[inline(always)]
pub(crate) fn tracked(pid_tgid: u64) -> Option<Tracked> {
    maps::tracked((pid_tgid >> 32) as u32)
}

/// Refuses (and kills, for a kill verdict) what `judged` refuses; returns the hook's answer
/// and the verdict as recorded.
#[inline(always)]
fn enforce(mut judged: u32) -> (i32, u32) {
    if !refuses(judged) {
        return (0, judged);
    }
    judged |= verdict::DENIED;
    if kills(judged) && kill_current() {
        judged |= verdict::KILLED;
    }
    (lsm_answer(true), judged)
}

/// bprm_check_security(struct linux_binprm *bprm): an exec about to happen, judged on the file
/// it would run. Allowed: the record is the sched_process_exec one that follows, which finds
/// this hook's verdict in EXEC_CHECKED. Refused: there is no exec to follow, so the record is
/// made here.
#[lsm(hook = "bprm_check_security")]
pub fn bprm_check_security(ctx: LsmContext) -> i32 {
    let ret: i32 = ctx.arg(1);
    if ret != 0 {
        return ret;
    }
    let pid_tgid = bpf_get_current_pid_tgid();
    let Some(t) = tracked(pid_tgid) else {
        return 0;
    };
    let Some(walked) = EXEC_WALK.get_ptr_mut(0) else {
        return enforce(unjudged(&t)).0;
    };
    let bprm: KPtr = ctx.arg::<u64>(0) as KPtr;
    let file = read_ptr(bprm, off!(binprm_file)).unwrap_or_default();
    // SAFETY: per-CPU scratch owned by this program run.
    let walked = unsafe { &mut *walked };
    if file.is_null() {
        walk_empty(walked);
    } else {
        walk_path(file.wrapping_add(off!(file_f_path)), walked);
    }
    let judged = judge_path(&t, class::EXEC, walked);
    if !refuses(judged) {
        let _ = EXEC_CHECKED.insert(&(pid_tgid as u32), &(judged | CHECKED), 0);
        return 0;
    }
    let (answer, judged) = enforce(judged);
    let _ = EXEC_CHECKED.insert(&(pid_tgid as u32), &REPORTED, 0);
    if let Some(mut slot) = reserve::<ExecEvent>(&PROC_EVENTS, hook::LSM_EXEC) {
        // SAFETY: the reservation is sized for ExecEvent; the fields userspace reads for a
        // refused exec (header, ppid, lengths, exe) are written.
        let ev = unsafe { &mut *slot.as_mut_ptr() };
        fill_header(&mut ev.header, kind::EXEC, hook::LSM_EXEC, pid_tgid, &t, VIA_LSM);
        ev.header.verdict = judged;
        ev.ppid = parent_tgid(current_task()).unwrap_or(0);
        ev.argv_len = 0;
        ev.filename_len = 0;
        ev.failed_errno = 0;
        // SAFETY: both are WalkedPath-sized.
        unsafe {
            generated::bpf_probe_read_kernel(
                &mut ev.exe as *mut WalkedPath as *mut c_void,
                core::mem::size_of::<WalkedPath>() as u32,
                walked as *const WalkedPath as *const c_void,
            )
        };
        slot.submit(wake_flags_of::<ExecEvent>(&PROC_EVENTS));
    }
    answer
}

/// file_open(struct file *file): an open that passed the permission checks. A write-open is
/// judged on the object (a device node as its device, a hard-linked file fails closed).
#[lsm(hook = "file_open")]
pub fn file_open(ctx: LsmContext) -> i32 {
    let ret: i32 = ctx.arg(1);
    if ret != 0 {
        return ret;
    }
    let pid_tgid = bpf_get_current_pid_tgid();
    let Some(t) = tracked(pid_tgid) else {
        return 0;
    };
    let file: KPtr = ctx.arg::<u64>(0) as KPtr;
    let Ok(mode) = read_u32(file, off!(file_f_mode)) else {
        // Write intent unknown: fail closed.
        return enforce(unjudged(&t)).0;
    };
    if mode & FMODE_WRITE == 0 {
        return 0;
    }
    let Some(walked) = EXEC_WALK.get_ptr_mut(0) else {
        return enforce(unjudged(&t)).0;
    };
    // SAFETY: per-CPU scratch owned by this program run.
    let walked = unsafe { &mut *walked };
    walk_path(file.wrapping_add(off!(file_f_path)), walked);
    let mut obj = Object::default();
    let inode = read_ptr(file, off!(file_f_inode)).unwrap_or_default();
    let (answer, mut judged) = enforce(judge_object(&t, inode, walked, &mut obj));
    // The open is refused, but an O_CREAT that made the file made it before this hook.
    if answer != 0 && mode & FMODE_CREATED != 0 {
        judged |= verdict::AFTER_EFFECT;
    }
    let Some(ev) = LSM_FILE_SCRATCH.get_ptr_mut(0) else {
        maps::count(agent_common::counter::lost(hook::LSM_FILE));
        return unrecorded(&t, answer, judged);
    };
    // SAFETY: per-CPU scratch owned by this program run.
    let ev = unsafe { &mut *ev };
    fill_header(&mut ev.header, kind::FILE, hook::LSM_FILE, pid_tgid, &t, VIA_LSM);
    ev.header.verdict = judged;
    ev.op = file_op::OPEN_WRITE;
    ev.hook = agent_common::file_hook::FILE_OPEN;
    ev.syscall_nr = NO_SYSCALL;
    ev.ret = answer as i64;
    ev.flags = read_u32(file, off!(file_f_flags)).unwrap_or(0) as u64;
    ev.mode = 0;
    ev.uid = u32::MAX;
    ev.gid = u32::MAX;
    ev.obj = obj;
    ev.a.source = path_source::OBJECT;
    ev.b.source = path_source::NONE;
    let end = put_walk(&mut ev.text, 0, &mut ev.a, walked);
    let end = put_raw(&mut ev.text, end, &mut ev.a, core::ptr::null(), 0, 0);
    let end = put_walk(&mut ev.text, end, &mut ev.b, core::ptr::null());
    let end = put_raw(&mut ev.text, end, &mut ev.b, core::ptr::null(), 0, 0);
    if !send(file_ring(judged), ev, end, hook::LSM_FILE) {
        return unrecorded(&t, answer, judged);
    }
    answer
}

/// The answer for an operation whose record was lost (counted by the caller): one the daemon
/// was to judge (`judged` UNDECIDED, let through) is now judged by nobody, so the unjudged
/// posture decides (fail closed); anything else keeps `answer`.
#[inline(always)]
pub fn unrecorded(t: &Tracked, answer: i32, judged: u32) -> i32 {
    if answer == 0 && judged & verdict::UNDECIDED != 0 {
        enforce(unjudged(t)).0
    } else {
        answer
    }
}

/// The (family, type, protocol) of a `struct socket`'s sock.
#[inline(always)]
fn sock_of(sock: KPtr) -> KPtr {
    read_ptr(sock, off!(socket_sk)).unwrap_or_default()
}

#[inline(always)]
fn sock_u16(sk: KPtr, offset: usize) -> u16 {
    read_u32(sk, offset).map(|v| v as u16).unwrap_or(0)
}

/// socket_connect(struct socket *sock, struct sockaddr *address, int addrlen): IP connects
/// (Unix ones are judged on the resolved peer by unix_stream_connect / unix_may_send).
#[lsm(hook = "socket_connect")]
pub fn socket_connect(ctx: LsmContext) -> i32 {
    let ret: i32 = ctx.arg(3);
    if ret != 0 {
        return ret;
    }
    let pid_tgid = bpf_get_current_pid_tgid();
    let Some(t) = tracked(pid_tgid) else {
        return 0;
    };
    let sock: KPtr = ctx.arg::<u64>(0) as KPtr;
    let addr: KPtr = ctx.arg::<u64>(1) as KPtr;
    let addrlen: i32 = ctx.arg(2);
    // SAFETY: kernel copy of the caller's sockaddr, read through the helper.
    let Ok(family) = (unsafe { aya_ebpf::helpers::bpf_probe_read_kernel(addr as *const u16) }) else {
        return enforce(unjudged(&t)).0;
    };
    let (want, addr_off, addr_len) = match family {
        AF_INET => (8, 4usize, 4u32),
        AF_INET6 => (24, 8usize, 16u32),
        _ => return 0, // AF_UNIX by the unix hooks; other families are not IP egress
    };
    if addrlen < want {
        return 0; // the kernel refuses it with EINVAL
    }
    let sock_type = read_u32(sock, off!(socket_type)).map(|t| t as u16).unwrap_or(0);
    let sk = sock_of(sock);
    let protocol = if sk.is_null() {
        0
    } else {
        sock_u16(sk, off!(sock_sk_protocol))
    };
    // SAFETY: the kernel copy of the sockaddr, at least `want` bytes (checked above).
    let port = u16::from_be(
        unsafe { aya_ebpf::helpers::bpf_probe_read_kernel(addr.wrapping_add(2) as *const u16) }.unwrap_or(0),
    );
    let mut raw = [0u8; 16];
    // SAFETY: addr_len <= 16 bytes into the 16-byte array.
    unsafe {
        generated::bpf_probe_read_kernel(
            raw.as_mut_ptr() as *mut c_void,
            addr_len,
            addr.wrapping_add(addr_off) as *const c_void,
        )
    };
    let judged = if family == AF_INET {
        judge_net(&t, protocol as u8, &mapped_v4([raw[0], raw[1], raw[2], raw[3]]), port)
    } else {
        judge_net(&t, protocol as u8, &raw, port)
    };
    let (answer, judged) = enforce(judged);
    if answer == 0 {
        net::mark_connect(pid_tgid as u32, family as u8, &raw, port);
    }
    net::record(
        hook::LSM_CONNECT,
        VIA_LSM,
        pid_tgid,
        &t,
        judged,
        net_op::CONNECT,
        family as u8,
        sock_type as u8,
        protocol as u8,
        port,
        &raw,
        sock_kind::NONE,
    );
    answer
}

/// socket_create(int family, int type, int protocol, int kern): raw, packet, ICMP and vsock
/// sockets must be granted (sockets the kernel makes for itself are not judged).
#[lsm(hook = "socket_create")]
pub fn socket_create(ctx: LsmContext) -> i32 {
    let ret: i32 = ctx.arg(4);
    if ret != 0 {
        return ret;
    }
    let (family, sock_type, protocol, kern): (i32, i32, i32, i32) = (ctx.arg(0), ctx.arg(1), ctx.arg(2), ctx.arg(3));
    if kern != 0 {
        return 0;
    }
    let k = sock_kind::of(family as u32, sock_type as u32, protocol as u32);
    if k == sock_kind::NONE {
        return 0;
    }
    let pid_tgid = bpf_get_current_pid_tgid();
    let Some(t) = tracked(pid_tgid) else {
        return 0;
    };
    let (answer, judged) = enforce(judge_grant(&t, k));
    net::record(
        hook::LSM_SOCKET,
        VIA_LSM,
        pid_tgid,
        &t,
        judged,
        net_op::SOCKET,
        family as u8,
        (sock_type & 0xf) as u8,
        protocol as u8,
        0,
        &[0; 16],
        k,
    );
    answer
}

/// socket_listen(struct socket *sock, int backlog): a TCP listen on its local address and
/// port (0: not bound yet, the kernel picks a port), judged against the `listen` clause.
#[lsm(hook = "socket_listen")]
pub fn socket_listen(ctx: LsmContext) -> i32 {
    let ret: i32 = ctx.arg(2);
    if ret != 0 {
        return ret;
    }
    let pid_tgid = bpf_get_current_pid_tgid();
    let Some(t) = tracked(pid_tgid) else {
        return 0;
    };
    let sock: KPtr = ctx.arg::<u64>(0) as KPtr;
    let sk = sock_of(sock);
    if sk.is_null() {
        return enforce(unjudged(&t)).0;
    }
    let family = sock_u16(sk, off!(sock_family));
    if family != AF_INET && family != AF_INET6 {
        return 0;
    }
    let (addr, port) = sock::local_of(sk, family);
    let protocol = sock_u16(sk, off!(sock_sk_protocol));
    let (answer, judged) = enforce(judge_listen(&t, protocol as u8, &addr, port));
    net::record(
        hook::LSM_SOCKET,
        VIA_LSM,
        pid_tgid,
        &t,
        judged,
        net_op::LISTEN,
        family as u8,
        sock_u16(sk, off!(sock_type)) as u8,
        protocol as u8,
        port,
        &sock::wire_addr(&addr, family),
        sock_kind::NONE,
    );
    answer
}

// ---- Unix sockets ----

/// Judges and records a Unix connect or send to `peer` by the current thread.
#[inline(always)]
/// `sk`: the caller's `struct sock` (its type is recorded).
fn unix_judge(ret: i32, op: u8, sk: KPtr, peer: KPtr) -> i32 {
    if ret != 0 {
        return ret;
    }
    let pid_tgid = bpf_get_current_pid_tgid();
    let Some(t) = tracked(pid_tgid) else {
        return 0;
    };
    let Some(ev) = UNIX_WALK.get_ptr_mut(0) else {
        return enforce(unjudged(&t)).0;
    };
    // SAFETY: per-CPU scratch owned by this program run.
    let ev = unsafe { &mut *ev };
    let (answer, judged) = enforce(sock::judge_peer(&t, peer, ev));
    ev.sock_type = if sk.is_null() {
        0
    } else {
        sock_u16(sk, off!(sock_type)) as u8
    };
    sock::unix_record(ev, hook::LSM_UNIX, pid_tgid, &t, judged, op, VIA_LSM);
    answer
}

/// unix_stream_connect(struct sock *sock, struct sock *other, struct sock *newsk): a stream
/// or seqpacket connect, to the listening socket the kernel found.
#[lsm(hook = "unix_stream_connect")]
pub fn unix_stream_connect(ctx: LsmContext) -> i32 {
    let sk: KPtr = ctx.arg::<u64>(0) as KPtr;
    let other: KPtr = ctx.arg::<u64>(1) as KPtr;
    unix_judge(ctx.arg(3), unix_op::CONNECT, sk, other)
}

/// unix_may_send(struct socket *sock, struct socket *other): a datagram connect, and every
/// datagram send. A send to a named peer (or the connect that names it) is judged and
/// recorded; a send on a connected socket goes to the peer its connect was judged for.
#[lsm(hook = "unix_may_send")]
pub fn unix_may_send(ctx: LsmContext) -> i32 {
    let ret: i32 = ctx.arg(2);
    if tracked(bpf_get_current_pid_tgid()).is_none() {
        return ret;
    }
    let sock: KPtr = ctx.arg::<u64>(0) as KPtr;
    let other: KPtr = ctx.arg::<u64>(1) as KPtr;
    let (sk, other_sk) = (sock_of(sock), sock_of(other));
    if ret == 0 && !sk.is_null() && read_ptr(sk, off!(unix_peer)).ok() == Some(other_sk) {
        return 0;
    }
    unix_judge(ret, unix_op::SEND, sk, other_sk)
}

/// Feature probe (loaded, never attached): does this kernel allow fentry programs?
#[fentry(function = "security_file_open")]
pub fn probe_fentry(_ctx: FEntryContext) -> i32 {
    0
}

/// Feature probe (loaded, never attached): does this kernel allow bpf_send_signal?
#[tracepoint]
pub fn probe_send_signal(_ctx: TracePointContext) -> u32 {
    // SAFETY: never runs; the verifier checks the helper is allowed at load.
    unsafe { generated::bpf_send_signal(9) };
    0
}

/// Refuses a tracked process's reach for Tether itself (counted; the daemon alerts). Not a
/// rule of the files: no agent needs bpf(2), nor to signal or trace the daemon.
#[inline(always)]
fn tamper(ret: i32, refuse: impl FnOnce() -> bool) -> i32 {
    if ret != 0 {
        return ret;
    }
    if tracked(bpf_get_current_pid_tgid()).is_none() || !refuse() {
        return 0;
    }
    maps::count(agent_common::counter::TAMPER);
    lsm_answer(true)
}

/// bpf(int cmd, union bpf_attr *attr, unsigned int size, bool kernel) (6.9+; [`bpf_old`]
/// before): every bpf(2) call of a tracked process. Its maps (the tracked entries, the
/// posture, the rules) and programs are reached only through it.
#[lsm(hook = "bpf")]
pub fn bpf(ctx: LsmContext) -> i32 {
    let kernel: u8 = ctx.arg(3);
    tamper(ctx.arg(4), || kernel == 0)
}

/// bpf(int cmd, union bpf_attr *attr, unsigned int size) (before 6.9).
#[lsm(hook = "bpf")]
pub fn bpf_old(ctx: LsmContext) -> i32 {
    tamper(ctx.arg(3), || true)
}

/// task_kill(struct task_struct *p, struct kernel_siginfo *info, int sig, const struct cred
/// *cred): a signal (kill, tgkill, pidfd_send_signal, sigqueue, a fcntl F_SETOWN one) to the
/// daemon.
#[lsm(hook = "task_kill")]
pub fn task_kill(ctx: LsmContext) -> i32 {
    let target: KPtr = ctx.arg(0);
    tamper(ctx.arg(4), || {
        read_u32(target, off!(task_tgid)).map_or(true, |tgid| tgid == maps::self_tgid())
    })
}

/// ptrace_access_check(struct task_struct *child, unsigned int mode): every ptrace-mode check
/// on the daemon (even reading its /proc files), and the attach-mode ones (ptrace attach,
/// process_vm_readv/writev, /proc/PID/mem, pidfd_getfd) on any untracked process: code run
/// there would run untracked.
#[lsm(hook = "ptrace_access_check")]
pub fn ptrace_access_check(ctx: LsmContext) -> i32 {
    const PTRACE_MODE_ATTACH: u32 = 0x02;
    let target: KPtr = ctx.arg(0);
    let mode: u32 = ctx.arg(1);
    tamper(ctx.arg(2), || match read_u32(target, off!(task_tgid)) {
        Ok(tgid) => tgid == maps::self_tgid() || (mode & PTRACE_MODE_ATTACH != 0 && maps::tracked(tgid).is_none()),
        Err(_) => true,
    })
}
