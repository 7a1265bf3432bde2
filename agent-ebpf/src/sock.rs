//! Sockets the cgroup hooks cannot see, where no BPF LSM hook judges them: one entry and one
//! exit program on the socket syscalls (agent_common::syscalls::SOCKET_WATCHED), tracked
//! processes only. They can only kill (SIGKILL before the call returns to the caller), so:
//! - socket(): a packet or vsock socket (and an IP one where the cgroup sock hook is not in
//!   effect) not granted: killed at entry, the socket never reaches the caller;
//! - connect() to a Unix socket: judged at exit on the peer the kernel resolved (its socket
//!   file, or its abstract name); refused: killed before a byte is sent (`after_effect`: the
//!   connection was made);
//! - sendto()/sendmsg() of a datagram to a named Unix socket: judged at entry on the name as
//!   given (no resolved peer exists yet), killed (`after_effect`: the datagram goes);
//! - listen(): judged at exit on the port it listens on (`after_effect`);
//! - accept(): every accepted connection is reported, and judged on the local port
//!   (`after_effect`).
//!
//! Also the Unix peer judgement the BPF LSM hooks share.
use core::ffi::c_void;

use agent_common::{
    NetEvent, PendingSock, Tracked, UNIX_NAME_LEN, UnixEvent,
    contain::verdict,
    counter, feature, hook, kind, net_op, sock_kind,
    syscalls::{self, SockShape},
    unix_name, unix_op,
};
use aya_ebpf::{
    helpers::{bpf_get_current_pid_tgid, bpf_probe_read_user, generated},
    macros::tracepoint,
    programs::TracePointContext,
};

use crate::{
    contain::{judge_grant, judge_listen, judge_path, judge_unix_name, kill_current, mapped_v4, refuses, unjudged},
    kernel::{
        KPtr, current_task, file_of_fd, fill_header, masked, off, read_ptr, read_u32, tp, walk_empty, walk_socket_file,
    },
    maps::{self, NET_EVENTS, SOCK_CALLS, UNIX_WALK, count, reserve, tracked, wake_flags_of},
};

const AF_UNIX: u16 = 1;
const EPERM: i64 = 1;
const AF_INET: u16 = 2;
const AF_INET6: u16 = 10;

#[inline(always)]
pub(crate) fn u16_at(p: KPtr, offset: usize) -> u16 {
    read_u32(p, offset).map(|v| v as u16).unwrap_or(0)
}

/// The `struct sock` behind descriptor `fd` of the current thread (null when it is no socket
/// the kernel lets us read).
#[inline(always)]
pub(crate) fn sock_of_fd(fd: i32) -> KPtr {
    let Ok(file) = file_of_fd(current_task(), fd) else {
        return core::ptr::null();
    };
    // A socket's file holds its `struct socket` in private_data.
    let Ok(socket) = read_ptr(file, off!(file_private_data)) else {
        return core::ptr::null();
    };
    if socket.is_null() {
        return core::ptr::null();
    }
    read_ptr(socket, off!(socket_sk)).unwrap_or_default()
}

/// The family of `sk` (sock_common.skc_family), 0 if unknown.
#[inline(always)]
pub(crate) fn family_of(sk: KPtr) -> u16 {
    if sk.is_null() { 0 } else { u16_at(sk, off!(sock_family)) }
}

/// Judges a connect or send by `t` to the Unix socket `peer` (a `struct sock`, a unix_sock),
/// as the kernel resolved it, and fills `ev` (but its header): by the peer's socket file,
/// rebuilt from its bound `struct path` (symlinks, `..`, bind mounts, hard links and
/// /proc/PID/root routes are all behind it), or by its abstract name.
#[inline(always)]
pub fn judge_peer(t: &Tracked, peer: KPtr, ev: &mut UnixEvent) -> u32 {
    ev.name_len = 0;
    ev._pad = 0;
    ev._pad2 = 0;
    if peer.is_null() {
        walk_empty(&mut ev.peer);
        return unjudged(t);
    }
    let path = peer.wrapping_add(off!(unix_path));
    let dentry = read_ptr(path, off!(path_dentry)).unwrap_or_default();
    if !dentry.is_null() {
        ev.naming = unix_name::RESOLVED;
        walk_socket_file(path, &mut ev.peer);
        return judge_path(t, agent_common::contain::class::UNIX, &ev.peer);
    }
    walk_empty(&mut ev.peer);
    ev.naming = unix_name::ABSTRACT;
    let Ok(addr) = read_ptr(peer, off!(unix_addr)) else {
        return unjudged(t);
    };
    if addr.is_null() {
        return unjudged(t);
    }
    // unix_address.len covers sun_family, the leading NUL and the name.
    let Ok(len) = read_u32(addr, off!(unix_address_len)) else {
        return unjudged(t);
    };
    let n = (len as usize).wrapping_sub(3);
    if n == 0 || n >= UNIX_NAME_LEN {
        return unjudged(t);
    }
    let n = masked(n, 0x7f);
    // SAFETY: n < UNIX_NAME_LEN bytes into the name buffer; the name follows the family and
    // the leading NUL of the abstract sockaddr_un.
    let r = unsafe {
        generated::bpf_probe_read_kernel(
            ev.name.as_mut_ptr() as *mut c_void,
            n as u32,
            addr.wrapping_add(off!(unix_address_name) + 3) as *const c_void,
        )
    };
    if r != 0 {
        return unjudged(t);
    }
    ev.name_len = n as u32;
    judge_unix_name(t, &ev.name, n, true)
}

/// Emits the Unix record staged in `ev` (judged already) for hook `hook_id`.
#[inline(always)]
pub fn unix_record(ev: &mut UnixEvent, hook_id: u32, pid_tgid: u64, t: &Tracked, judged: u32, op: u8, flags: u32) {
    let sock_type = ev.sock_type;
    fill_header(&mut ev.header, kind::UNIX, hook_id, pid_tgid, t, flags);
    ev.header.verdict = judged;
    ev.op = op;
    ev.sock_type = sock_type;
    let Some(mut slot) = reserve::<UnixEvent>(&NET_EVENTS, hook_id) else {
        return;
    };
    // SAFETY: both are UnixEvent-sized.
    unsafe {
        generated::bpf_probe_read_kernel(
            slot.as_mut_ptr() as *mut c_void,
            core::mem::size_of::<UnixEvent>() as u32,
            ev as *const UnixEvent as *const c_void,
        )
    };
    slot.submit(wake_flags_of::<UnixEvent>(&NET_EVENTS));
}

/// SIGKILL for a verdict that refuses an action the kernel has let happen; returns the
/// verdict as recorded (`after` marks the effect as done).
#[inline(always)]
fn kill_after(mut judged: u32, after: bool) -> u32 {
    if refuses(judged) && kill_current() {
        judged |= verdict::KILLED;
        if after {
            judged |= verdict::AFTER_EFFECT;
        }
    }
    judged
}

#[inline(always)]
fn arg(ctx: &TracePointContext, n: usize) -> u64 {
    // SAFETY: offsets from this kernel's syscall tracepoint format.
    unsafe { ctx.read_at::<u64>(tp!(sys_args) as usize + 8 * n) }.unwrap_or(0)
}

#[tracepoint]
pub fn sys_enter_sock(ctx: TracePointContext) -> u32 {
    let pid_tgid = bpf_get_current_pid_tgid();
    let Some(t) = tracked((pid_tgid >> 32) as u32) else {
        return 0;
    };
    // SAFETY: offset from this kernel's syscall tracepoint format.
    let Ok(nr) = (unsafe { ctx.read_at::<i32>(tp!(sys_nr) as usize) }) else {
        return 0;
    };
    let Some(sc) = syscalls::sock_by_nr(nr as u32) else {
        return 0;
    };
    match sc.shape {
        SockShape::Socket => socket_enter(&ctx, pid_tgid, &t),
        SockShape::Connect | SockShape::Listen => {
            // Followed to the exit, where the kernel has resolved the peer or bound the port.
            let fd = arg(&ctx, 0) as i32;
            let family = family_of(sock_of_fd(fd));
            let wanted = match sc.shape {
                SockShape::Connect => family == AF_UNIX,
                _ => family == AF_INET || family == AF_INET6,
            };
            let pending = PendingSock {
                fd,
                nr: nr as u32,
                addr: arg(&ctx, 1),
                addrlen: arg(&ctx, 2) as u32,
                _pad: 0,
            };
            if wanted && SOCK_CALLS.insert(&(pid_tgid as u32), &pending, 0).is_err() {
                count(counter::PENDING_FULL);
                kill_after(unjudged(&t), true);
            }
        }
        SockShape::SendTo | SockShape::SendMsg | SockShape::SendMmsg => send_enter(&ctx, sc.shape, pid_tgid, &t),
        SockShape::Accept => {}
    }
    0
}

/// socket(): kinds that must be granted, judged before the socket reaches the caller.
#[inline(always)]
fn socket_enter(ctx: &TracePointContext, pid_tgid: u64, t: &Tracked) {
    let (family, sock_type, protocol) = (arg(ctx, 0) as u32, arg(ctx, 1) as u32, arg(ctx, 2) as u32);
    let k = sock_kind::of(family, sock_type, protocol);
    if k == sock_kind::NONE
        || ((family == AF_INET as u32 || family == AF_INET6 as u32) && maps::feature(feature::CGROUP_SOCK))
    {
        return;
    }
    let judged = kill_after(judge_grant(t, k), false);
    crate::net::record(
        hook::SOCKET_SYSCALL,
        0,
        pid_tgid,
        t,
        judged,
        net_op::SOCKET,
        family as u8,
        (sock_type & 0xf) as u8,
        protocol as u8,
        0,
        &[0; 16],
        k,
    );
}

/// sendmmsg's messages after the first: does any name a destination (so is not judged by
/// the first's)? More than [`MMSG_SCAN`] of them, or one unreadable: yes (fail closed).
#[inline(always)]
fn any_named(msgs: u64, vlen: u32) -> bool {
    /// struct mmsghdr: a msghdr (msg_name first) and the length sent, 64 bytes on 64-bit.
    const MMSG_SIZE: u64 = 64;
    const MMSG_SCAN: u32 = 16;
    if vlen > MMSG_SCAN {
        return true;
    }
    for i in 1..MMSG_SCAN {
        if i >= vlen {
            break;
        }
        // SAFETY: user memory read through the helper.
        match unsafe { bpf_probe_read_user((msgs + MMSG_SIZE * i as u64) as *const u64) } {
            Ok(0) => {}
            _ => return true,
        }
    }
    false
}

/// A datagram to a named Unix socket: judged on the name given (before the kernel looks it
/// up, the only moment a tracepoint has), killed if refused.
#[inline(always)]
fn send_enter(ctx: &TracePointContext, shape: SockShape, pid_tgid: u64, t: &Tracked) {
    let fd = arg(ctx, 0) as i32;
    let sk = sock_of_fd(fd);
    if family_of(sk) != AF_UNIX {
        return;
    }
    // The destination: sendto's (addr, addrlen), a msghdr's (msg_name, msg_namelen).
    let (addr, addrlen, more) = match shape {
        SockShape::SendTo => (arg(ctx, 4), arg(ctx, 5) as u32, false),
        _ => {
            let msg = arg(ctx, 1);
            let vlen = if shape == SockShape::SendMmsg {
                arg(ctx, 2) as u32
            } else {
                1
            };
            // SAFETY: user memory read through the helper.
            let name = unsafe { bpf_probe_read_user(msg as *const u64) }.unwrap_or(0);
            // SAFETY: as above (msg_namelen follows msg_name).
            let len = unsafe { bpf_probe_read_user((msg + 8) as *const u32) }.unwrap_or(0);
            (name, len, vlen > 1 && any_named(msg, vlen))
        }
    };
    if addr == 0 && !more {
        return; // a send on a connected socket: its connect was judged
    }
    let Some(ev) = UNIX_WALK.get_ptr_mut(0) else {
        kill_after(unjudged(t), true);
        return;
    };
    // SAFETY: per-CPU scratch owned by this program run.
    let ev = unsafe { &mut *ev };
    ev.sock_type = u16_at(sk, off!(sock_type)) as u8;
    ev.naming = unix_name::AS_GIVEN;
    ev._pad = 0;
    ev._pad2 = 0;
    walk_empty(&mut ev.peer);
    let n = (addrlen as usize).wrapping_sub(2);
    // SAFETY: user memory read through the helper.
    let first = unsafe { bpf_probe_read_user((addr + 2) as *const u8) };
    let judged = if more || n == 0 || n > UNIX_NAME_LEN {
        // Several datagrams to names the kernel has not resolved yet (or a name the first
        // message does not give while a later one does): fail closed.
        ev.name_len = 0;
        unjudged(t)
    } else if first == Ok(0) {
        // An abstract name: the bytes after the leading NUL (NULs inside are the name's).
        ev.naming = unix_name::ABSTRACT;
        let m = masked(n - 1, 0x7f);
        // SAFETY: m < UNIX_NAME_LEN bytes into the name buffer.
        let r = unsafe {
            generated::bpf_probe_read_user(
                ev.name.as_mut_ptr() as *mut c_void,
                m as u32,
                (addr + 3) as *const c_void,
            )
        };
        ev.name_len = m as u32;
        if r == 0 {
            judge_unix_name(t, &ev.name, m, true)
        } else {
            unjudged(t)
        }
    } else {
        // A path: the bytes up to its NUL within the n given (the kernel's reading). One
        // byte past them is read too, so a name with no NUL is told from one that has it.
        let n = masked(n, 0x7f);
        let size = if n < UNIX_NAME_LEN { n + 1 } else { UNIX_NAME_LEN };
        // SAFETY: at most size <= UNIX_NAME_LEN bytes into the name buffer.
        let r = unsafe {
            generated::bpf_probe_read_user_str(
                ev.name.as_mut_ptr() as *mut c_void,
                masked(size, 0x7f) as u32,
                (addr + 2) as *const c_void,
            )
        };
        if r <= 0 || (n == UNIX_NAME_LEN && r as usize == UNIX_NAME_LEN) {
            // Unreadable, or a full-length name whose last byte is beyond what was copied.
            ev.name_len = 0;
            unjudged(t)
        } else {
            let len = core::cmp::min(r as usize - 1, n);
            ev.name_len = len as u32;
            judge_unix_name(t, &ev.name, len, false)
        }
    };
    let judged = kill_after(judged, true);
    unix_record(ev, hook::SOCKET_SYSCALL, pid_tgid, t, judged, unix_op::SEND, 0);
}

#[tracepoint]
pub fn sys_exit_sock(ctx: TracePointContext) -> u32 {
    let pid_tgid = bpf_get_current_pid_tgid();
    let Some(t) = tracked((pid_tgid >> 32) as u32) else {
        return 0;
    };
    // SAFETY: offset from this kernel's syscall tracepoint format.
    let ret = unsafe { ctx.read_at::<i64>(tp!(sys_ret) as usize) }.unwrap_or(-1);
    // SAFETY: offset from this kernel's syscall tracepoint format.
    let Ok(nr) = (unsafe { ctx.read_at::<i32>(tp!(sys_nr) as usize) }) else {
        return 0;
    };
    let Some(sc) = syscalls::sock_by_nr(nr as u32) else {
        return 0;
    };
    let tid = pid_tgid as u32;
    match sc.shape {
        SockShape::Accept => {
            if ret >= 0 {
                accept_exit(pid_tgid, &t, ret as i32);
            }
        }
        SockShape::Connect | SockShape::Listen => {
            // SAFETY: map lookup, copied out.
            let Some(p) = (unsafe { SOCK_CALLS.get(&tid) }).copied() else {
                return 0;
            };
            let _ = SOCK_CALLS.remove(&tid);
            if ret == -EPERM && sc.shape == SockShape::Connect {
                refused_abstract(pid_tgid, &t, &p);
                return 0;
            }
            if ret != 0 {
                return 0; // it did not happen
            }
            if sc.shape == SockShape::Connect {
                connect_exit(pid_tgid, &t, p.fd);
            } else {
                listen_exit(pid_tgid, &t, p.fd);
            }
        }
        _ => {}
    }
    0
}

/// A Unix connect to an abstract name that an LSM refused before any connection (EPERM: the
/// abstract-socket scoping of the sandbox's Landlock layer, which runs where no BPF LSM Unix
/// hook does): recorded with the name read again from the caller's sockaddr (what it asked
/// for; a name it changed meanwhile is its own doing, and the refusal held either way).
#[inline(always)]
fn refused_abstract(pid_tgid: u64, t: &Tracked, p: &PendingSock) {
    let n = (p.addrlen as usize).wrapping_sub(3);
    // SAFETY: user memory read through the helper.
    let first = unsafe { bpf_probe_read_user((p.addr + 2) as *const u8) };
    if first != Ok(0) || n == 0 || n >= UNIX_NAME_LEN {
        return;
    }
    let Some(ev) = UNIX_WALK.get_ptr_mut(0) else {
        count(counter::lost(hook::LANDLOCK_SCOPE));
        return;
    };
    // SAFETY: per-CPU scratch owned by this program run.
    let ev = unsafe { &mut *ev };
    ev.sock_type = 0;
    ev.naming = unix_name::ABSTRACT;
    ev._pad = 0;
    ev._pad2 = 0;
    walk_empty(&mut ev.peer);
    let m = masked(n, 0x7f);
    // SAFETY: m < UNIX_NAME_LEN bytes into the name buffer.
    let r = unsafe {
        generated::bpf_probe_read_user(
            ev.name.as_mut_ptr() as *mut c_void,
            m as u32,
            (p.addr + 3) as *const c_void,
        )
    };
    ev.name_len = if r == 0 { m as u32 } else { 0 };
    unix_record(
        ev,
        hook::LANDLOCK_SCOPE,
        pid_tgid,
        t,
        verdict::DENIED,
        unix_op::CONNECT,
        0,
    );
}

/// A Unix connect that succeeded: judged on the peer the kernel connected it to.
#[inline(always)]
fn connect_exit(pid_tgid: u64, t: &Tracked, fd: i32) {
    let Some(ev) = UNIX_WALK.get_ptr_mut(0) else {
        kill_after(unjudged(t), true);
        return;
    };
    // SAFETY: per-CPU scratch owned by this program run.
    let ev = unsafe { &mut *ev };
    let sk = sock_of_fd(fd);
    let peer = if sk.is_null() {
        core::ptr::null()
    } else {
        read_ptr(sk, off!(unix_peer)).unwrap_or_default()
    };
    ev.sock_type = if sk.is_null() {
        0
    } else {
        u16_at(sk, off!(sock_type)) as u8
    };
    let judged = kill_after(judge_peer(t, peer, ev), true);
    unix_record(ev, hook::SOCKET_SYSCALL, pid_tgid, t, judged, unix_op::CONNECT, 0);
}

/// The local address (IPv4 mapped) and port of IP sock `sk`.
#[inline(always)]
pub fn local_of(sk: KPtr, family: u16) -> ([u8; 16], u16) {
    let port = u16_at(sk, off!(sock_num));
    let mut addr = [0u8; 16];
    if family == AF_INET {
        let a = read_u32(sk, off!(sock_rcv_saddr)).unwrap_or(0).to_ne_bytes();
        addr = mapped_v4([a[0], a[1], a[2], a[3]]);
    } else {
        // SAFETY: 16 bytes into the 16-byte array.
        unsafe {
            generated::bpf_probe_read_kernel(
                addr.as_mut_ptr() as *mut c_void,
                16,
                sk.wrapping_add(off!(sock_v6_rcv_saddr)) as *const c_void,
            )
        };
    }
    (addr, port)
}

/// An address as judged (IPv4 mapped) in the wire layout of [`NetEvent::addr`] (IPv4 in the
/// first four bytes).
#[inline(always)]
pub fn wire_addr(judged: &[u8; 16], family: u16) -> [u8; 16] {
    if family != AF_INET {
        return *judged;
    }
    let mut out = [0u8; 16];
    out[..4].copy_from_slice(&judged[12..]);
    out
}

/// A listen that succeeded: judged on the port it listens on (the kernel has bound it).
#[inline(always)]
fn listen_exit(pid_tgid: u64, t: &Tracked, fd: i32) {
    let sk = sock_of_fd(fd);
    if sk.is_null() {
        kill_after(unjudged(t), true);
        return;
    }
    let family = family_of(sk);
    let (addr, port) = local_of(sk, family);
    let protocol = u16_at(sk, off!(sock_sk_protocol));
    let judged = kill_after(judge_listen(t, protocol as u8, &addr, port), true);
    crate::net::record(
        hook::SOCKET_SYSCALL,
        0,
        pid_tgid,
        t,
        judged,
        net_op::LISTEN,
        family as u8,
        u16_at(sk, off!(sock_type)) as u8,
        protocol as u8,
        port,
        &wire_addr(&addr, family),
        sock_kind::NONE,
    );
}

/// An accepted IP connection: reported with its peer, judged on the local port.
#[inline(always)]
fn accept_exit(pid_tgid: u64, t: &Tracked, fd: i32) {
    let sk = sock_of_fd(fd);
    let family = family_of(sk);
    if family != AF_INET && family != AF_INET6 {
        return;
    }
    let (local, local_port) = local_of(sk, family);
    let protocol = u16_at(sk, off!(sock_sk_protocol));
    let judged = kill_after(judge_listen(t, protocol as u8, &local, local_port), true);
    let mut peer = [0u8; 16];
    if family == AF_INET {
        let a = read_u32(sk, off!(sock_daddr)).unwrap_or(0).to_ne_bytes();
        peer[..4].copy_from_slice(&a);
    } else {
        // SAFETY: 16 bytes into the 16-byte array.
        unsafe {
            generated::bpf_probe_read_kernel(
                peer.as_mut_ptr() as *mut c_void,
                16,
                sk.wrapping_add(off!(sock_v6_daddr)) as *const c_void,
            )
        };
    }
    let peer_port = u16::from_be(u16_at(sk, off!(sock_dport)));
    let Some(mut slot) = reserve::<NetEvent>(&NET_EVENTS, hook::SOCKET_SYSCALL) else {
        return;
    };
    // SAFETY: the reservation is sized for NetEvent; every field is written below.
    let ev = unsafe { &mut *slot.as_mut_ptr() };
    fill_header(&mut ev.header, kind::NET, hook::SOCKET_SYSCALL, pid_tgid, t, 0);
    ev.header.verdict = judged;
    ev.op = net_op::ACCEPT;
    ev.family = family as u8;
    ev.sock_type = u16_at(sk, off!(sock_type)) as u8;
    ev.protocol = protocol as u8;
    ev.port = peer_port;
    ev.local_port = local_port;
    ev.addr = peer;
    ev.sock_kind = sock_kind::NONE;
    ev._pad = [0; 7];
    slot.submit(wake_flags_of::<NetEvent>(&NET_EVENTS));
}
