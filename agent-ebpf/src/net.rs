//! Network: cgroup sock_addr hooks at the cgroup v2 root see every connect (TCP, UDP, and
//! io_uring's IORING_OP_CONNECT, which makes no syscall) and every send with an explicit
//! destination. A tracked process's attempt is judged from the compiled rule maps
//! (crate::contain); in enforce mode a refused one gets EPERM. They cannot send signals: a
//! kill verdict is carried out by the daemon when it reads the record.
use agent_common::{NetEvent, contain::verdict, counter, kind, net_op};
use aya_ebpf::{helpers::bpf_get_current_pid_tgid, macros::cgroup_sock_addr, programs::SockAddrContext};
use core::ptr::read_volatile;

use crate::{
    contain::{judge_net, mapped_v4, refuses},
    kernel::fill_header,
    maps::{EVENTS, count, tracked, wake_flags},
};

const ALLOW: i32 = 1;
const REFUSE: i32 = 0;

#[cgroup_sock_addr(connect4)]
pub fn connect4(ctx: SockAddrContext) -> i32 {
    report(&ctx, net_op::CONNECT, false)
}

#[cgroup_sock_addr(connect6)]
pub fn connect6(ctx: SockAddrContext) -> i32 {
    report(&ctx, net_op::CONNECT, true)
}

#[cgroup_sock_addr(sendmsg4)]
pub fn sendmsg4(ctx: SockAddrContext) -> i32 {
    report(&ctx, net_op::SENDMSG, false)
}

#[cgroup_sock_addr(sendmsg6)]
pub fn sendmsg6(ctx: SockAddrContext) -> i32 {
    report(&ctx, net_op::SENDMSG, true)
}

/// Judges and reports; returns the hook's answer.
#[inline(always)]
fn report(ctx: &SockAddrContext, op: u8, v6: bool) -> i32 {
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
    let judged = if v6 {
        judge_net(&tracked, protocol, &addr, port)
    } else {
        judge_net(
            &tracked,
            protocol,
            &mapped_v4([addr[0], addr[1], addr[2], addr[3]]),
            port,
        )
    };
    let refused = refuses(judged);
    let answer = if refused { REFUSE } else { ALLOW };
    let Some(mut slot) = EVENTS.reserve::<NetEvent>(0) else {
        count(counter::RINGBUF_FULL);
        return answer;
    };
    // SAFETY: the reservation is sized for NetEvent; every field is written below.
    let ev = unsafe { &mut *slot.as_mut_ptr() };
    fill_header(&mut ev.header, kind::NET, pid_tgid, &tracked, 0);
    ev.header.verdict = if refused { judged | verdict::DENIED } else { judged };
    // SAFETY: context fields, read at their natural (u32) size as the verifier requires.
    unsafe {
        ev.family = read_volatile(&(*sa).family) as u8;
        ev.sock_type = read_volatile(&(*sa).type_) as u8;
    }
    ev.op = op;
    ev.protocol = protocol;
    ev.port = port;
    ev._pad = 0;
    ev.addr = addr;
    slot.submit(wake_flags());
    answer
}
