//! Network: cgroup hooks at the cgroup v2 root. The sock_addr hooks see every connect (TCP,
//! UDP, and io_uring's IORING_OP_CONNECT, which makes no syscall), every send with an
//! explicit destination and every bind; the sock hook sees the creation of every IP socket
//! (raw and ICMP ones must be granted). A tracked process's attempt is judged from the
//! compiled rule maps (crate::contain); in enforce mode a refused one gets EPERM. They
//! cannot send signals: a kill verdict is carried out by the daemon when it reads the record.
//!
//! The connect hooks stay attached where the BPF LSM socket_connect hook judges connects: a
//! TCP Fast Open connect (sendto/sendmsg with MSG_FASTOPEN on an unconnected socket) reaches
//! no LSM connect hook, only these ([`lsm_judged`] keeps the others from being recorded twice).
use agent_common::{ConnectMark, NetEvent, Tracked, hook, kind, net_op, sock_kind};
use aya_ebpf::{
    helpers::{bpf_get_current_pid_tgid, bpf_ktime_get_ns},
    macros::{cgroup_sock, cgroup_sock_addr},
    programs::{SockAddrContext, SockContext},
};
use core::ptr::read_volatile;

use crate::{
    contain::{judge_grant, judge_listen, judge_net, mapped_v4, refuses},
    kernel::fill_header,
    maps::{CONNECT_MARKS, NET_EVENTS, reserve, tracked, wake_flags_of},
};

const ALLOW: i32 = 1;
const REFUSE: i32 = 0;

#[cgroup_sock_addr(connect4)]
pub fn connect4(ctx: SockAddrContext) -> i32 {
    addr_hook(&ctx, net_op::CONNECT, false)
}

#[cgroup_sock_addr(connect6)]
pub fn connect6(ctx: SockAddrContext) -> i32 {
    addr_hook(&ctx, net_op::CONNECT, true)
}

#[cgroup_sock_addr(sendmsg4)]
pub fn sendmsg4(ctx: SockAddrContext) -> i32 {
    addr_hook(&ctx, net_op::SENDMSG, false)
}

#[cgroup_sock_addr(sendmsg6)]
pub fn sendmsg6(ctx: SockAddrContext) -> i32 {
    addr_hook(&ctx, net_op::SENDMSG, true)
}

/// A bind to a port: a service being set up, judged against the `listen` clause. A bind to
/// port 0 (the kernel picks one, as clients do before connecting) is no listen: a listen on
/// it is judged when it happens.
#[cgroup_sock_addr(bind4)]
pub fn bind4(ctx: SockAddrContext) -> i32 {
    addr_hook(&ctx, net_op::BIND, false)
}

#[cgroup_sock_addr(bind6)]
pub fn bind6(ctx: SockAddrContext) -> i32 {
    addr_hook(&ctx, net_op::BIND, true)
}

/// Judges and reports; returns the hook's answer.
#[inline(always)]
fn addr_hook(ctx: &SockAddrContext, op: u8, v6: bool) -> i32 {
    let pid_tgid = bpf_get_current_pid_tgid();
    let tgid = (pid_tgid >> 32) as u32;
    let Some(tracked) = tracked(tgid) else {
        return ALLOW;
    };
    let sa = ctx.sock_addr;
    // SAFETY: context fields, read at their natural (u32) size as the verifier requires.
    let (protocol, port, addr) = unsafe {
        let protocol = read_volatile(&(*sa).protocol) as u8;
        let port = u16::from_be(read_volatile(&(*sa).user_port) as u16);
        let addr = if v6 {
            let a = read_volatile(&(*sa).user_ip6[0]).to_ne_bytes();
            let b = read_volatile(&(*sa).user_ip6[1]).to_ne_bytes();
            let c = read_volatile(&(*sa).user_ip6[2]).to_ne_bytes();
            let d = read_volatile(&(*sa).user_ip6[3]).to_ne_bytes();
            [
                a[0], a[1], a[2], a[3], b[0], b[1], b[2], b[3], c[0], c[1], c[2], c[3], d[0], d[1], d[2], d[3],
            ]
        } else {
            let a = read_volatile(&(*sa).user_ip4).to_ne_bytes();
            [a[0], a[1], a[2], a[3], 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]
        };
        (protocol, port, addr)
    };
    if op == net_op::BIND && port == 0 {
        return ALLOW;
    }
    let key = if v6 {
        addr
    } else {
        mapped_v4([addr[0], addr[1], addr[2], addr[3]])
    };
    let judged = if op == net_op::BIND {
        judge_listen(&tracked, protocol, &key, port)
    } else {
        judge_net(&tracked, protocol, &key, port)
    };
    let refused = refuses(judged);
    if op == net_op::CONNECT && !refused && lsm_judged(pid_tgid as u32, &addr, port) {
        return ALLOW; // judged the same again; recorded by the LSM hook
    }
    let hook_id = match op {
        net_op::CONNECT => hook::CGROUP_CONNECT,
        net_op::SENDMSG => hook::CGROUP_SENDMSG,
        _ => hook::CGROUP_BIND,
    };
    // SAFETY: context fields, read at their natural (u32) size as the verifier requires.
    let (family, sock_type) = unsafe { (read_volatile(&(*sa).family) as u8, read_volatile(&(*sa).type_) as u8) };
    record(
        hook_id,
        0,
        pid_tgid,
        &tracked,
        if refused {
            judged | agent_common::contain::verdict::DENIED
        } else {
            judged
        },
        op,
        family,
        sock_type,
        protocol,
        port,
        &addr,
        sock_kind::NONE,
    );
    if refused { REFUSE } else { ALLOW }
}

/// How long a connect's LSM mark stands for the cgroup hook that follows it in the same call.
const MARK_NS: u64 = 1_000_000_000;

/// Notes that the BPF LSM socket_connect hook judged and recorded thread `tid`'s connect to
/// `addr` (IPv4 in the first four bytes) and `port`.
#[inline(always)]
pub fn mark_connect(tid: u32, family: u8, addr: &[u8; 16], port: u16) {
    let mark = ConnectMark {
        // SAFETY: a helper with no arguments.
        ktime_ns: unsafe { bpf_ktime_get_ns() },
        addr: *addr,
        port,
        family,
        _pad: [0; 5],
    };
    let _ = CONNECT_MARKS.insert(&tid, &mark, 0);
}

/// Is this connect one the BPF LSM hook judged and recorded a moment ago in this thread
/// (consumes the mark)? A connect the LSM hooks never saw (TCP Fast Open) has none.
#[inline(always)]
fn lsm_judged(tid: u32, addr: &[u8; 16], port: u16) -> bool {
    // SAFETY: map lookup, copied out.
    let Some(mark) = (unsafe { CONNECT_MARKS.get(&tid) }).copied() else {
        return false;
    };
    let _ = CONNECT_MARKS.remove(&tid);
    // SAFETY: a helper with no arguments.
    let now = unsafe { bpf_ktime_get_ns() };
    mark.port == port && mark.addr == *addr && now.wrapping_sub(mark.ktime_ns) < MARK_NS
}

/// The creation of an IP socket (every kernel; sockets of other families are judged by the
/// BPF LSM socket_create hook, or the socket syscall where there is none): raw and ICMP
/// sockets must be granted.
#[cgroup_sock(sock_create)]
pub fn sock_create(ctx: SockContext) -> i32 {
    let pid_tgid = bpf_get_current_pid_tgid();
    let tgid = (pid_tgid >> 32) as u32;
    let Some(tracked) = tracked(tgid) else {
        return ALLOW;
    };
    let sk = ctx.sock;
    // SAFETY: context fields, read at their natural (u32) size as the verifier requires.
    let (family, sock_type, protocol) = unsafe {
        (
            read_volatile(&(*sk).family),
            read_volatile(&(*sk).type_),
            read_volatile(&(*sk).protocol),
        )
    };
    let k = sock_kind::of(family, sock_type, protocol);
    if k == sock_kind::NONE {
        return ALLOW;
    }
    let judged = judge_grant(&tracked, k);
    let refused = refuses(judged);
    record(
        hook::CGROUP_SOCK,
        0,
        pid_tgid,
        &tracked,
        if refused {
            judged | agent_common::contain::verdict::DENIED
        } else {
            judged
        },
        net_op::SOCKET,
        family as u8,
        sock_type as u8,
        protocol as u8,
        0,
        &[0; 16],
        k,
    );
    if refused { REFUSE } else { ALLOW }
}

/// Emits a NetEvent made by hook `hook_id` with record flags `flags` (the verdict was
/// applied already).
#[inline(always)]
#[allow(clippy::too_many_arguments)]
pub fn record(
    hook_id: u32,
    flags: u32,
    pid_tgid: u64,
    t: &Tracked,
    judged: u32,
    op: u8,
    family: u8,
    sock_type: u8,
    protocol: u8,
    port: u16,
    addr: &[u8; 16],
    kind_of: u8,
) {
    let Some(mut slot) = reserve::<NetEvent>(&NET_EVENTS, hook_id) else {
        return;
    };
    // SAFETY: the reservation is sized for NetEvent; every field is written below.
    let ev = unsafe { &mut *slot.as_mut_ptr() };
    fill_header(&mut ev.header, kind::NET, hook_id, pid_tgid, t, flags);
    ev.header.verdict = judged;
    ev.op = op;
    ev.family = family;
    ev.sock_type = sock_type;
    ev.protocol = protocol;
    ev.port = port;
    ev.local_port = 0;
    ev.addr = *addr;
    ev.sock_kind = kind_of;
    ev._pad = [0; 7];
    slot.submit(wake_flags_of::<NetEvent>(&NET_EVENTS));
}
