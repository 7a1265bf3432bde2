//! BPF LSM hooks: where the kernel allows them (BPF LSM built in and in `lsm=`), these replace
//! the tracepoint/cgroup observers for exec, write-opens and connects, because an LSM hook runs
//! before the action and can refuse it: a refused action gets EPERM (and, for a kill verdict,
//! the process a SIGKILL) before anything happened. An action another BPF LSM program
//! already refused is left alone (its verdict is returned).
//!
//! Also the feature probes: programs that are only ever loaded (never attached), so the
//! daemon learns by a real load whether this kernel allows fentry and bpf_send_signal.
use core::ffi::c_void;

use agent_common::{
    ExecEvent, FileEvent, NO_SYSCALL, NetEvent, Tracked, WalkedPath,
    contain::{class, verdict},
    counter, file_op, kind, net_op, path_source,
};
use aya_ebpf::{
    helpers::{bpf_get_current_pid_tgid, generated},
    macros::{fentry, lsm, tracepoint},
    programs::{FEntryContext, LsmContext, TracePointContext},
};

use crate::{
    contain::{judge_net, judge_path, kill_current, kills, mapped_v4, refuses},
    kernel::{KPtr, current_task, fill_header, off, parent_tgid, read_ptr, read_u32, walk_empty, walk_path},
    maps::{self, EVENTS, EXEC_CHECKED, EXEC_WALK, count, wake_flags},
};

const FMODE_WRITE: u32 = 0x2;
/// f_mode bit: this open created the file (O_CREAT on a name that did not exist).
const FMODE_CREATED: u32 = 0x10_0000;
const AF_INET: u16 = 2;
const AF_INET6: u16 = 10;
const EPERM: i32 = 1;
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
        return 0;
    };
    let bprm: KPtr = ctx.arg::<u64>(0) as KPtr;
    let file = read_ptr(bprm, off!(binprm_file)).unwrap_or(core::ptr::null());
    // SAFETY: per-CPU scratch owned by this program run.
    let walked = unsafe { &mut *walked };
    if file.is_null() {
        walk_empty(walked);
    } else {
        walk_path(file.wrapping_add(off!(file_f_path)), walked);
    }
    let mut judged = judge_path(&t, class::EXEC, walked);
    if !refuses(judged) {
        let _ = EXEC_CHECKED.insert(&(pid_tgid as u32), &(judged | CHECKED), 0);
        return 0;
    }
    judged |= verdict::DENIED;
    if kills(judged) && kill_current() {
        judged |= verdict::KILLED;
    }
    let _ = EXEC_CHECKED.insert(&(pid_tgid as u32), &REPORTED, 0);
    if let Some(mut slot) = EVENTS.reserve::<ExecEvent>(0) {
        // SAFETY: the reservation is sized for ExecEvent; the fields userspace reads for a
        // refused exec (header, ppid, lengths, exe) are written.
        let ev = unsafe { &mut *slot.as_mut_ptr() };
        fill_header(&mut ev.header, kind::EXEC, pid_tgid, &t, agent_common::flags::VIA_LSM);
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
        slot.submit(wake_flags());
    } else {
        count(counter::RINGBUF_FULL);
    }
    -EPERM
}

/// file_open(struct file *file): an open that passed the permission checks.
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
        count(counter::READ_ERROR);
        return 0;
    };
    if mode & FMODE_WRITE == 0 {
        return 0;
    }
    let Some(mut slot) = EVENTS.reserve::<FileEvent>(0) else {
        count(counter::RINGBUF_FULL);
        return 0;
    };
    // SAFETY: the reservation is sized for FileEvent; the fields userspace reads are written.
    let ev = unsafe { &mut *slot.as_mut_ptr() };
    fill_header(&mut ev.header, kind::FILE, pid_tgid, &t, agent_common::flags::VIA_LSM);
    ev.op = file_op::OPEN_WRITE;
    ev.hook = agent_common::file_hook::FILE_OPEN;
    ev.syscall_nr = NO_SYSCALL;
    ev.ret = 0;
    ev.flags = read_u32(file, off!(file_f_flags)).unwrap_or(0) as u64;
    ev.mode = 0;
    ev.uid = u32::MAX;
    ev.gid = u32::MAX;
    ev._pad1 = 0;
    ev.a.source = path_source::OBJECT;
    ev.a.raw_len = 0;
    ev.a.raw_truncated = 0;
    ev.a._pad = 0;
    walk_path(file.wrapping_add(off!(file_f_path)), &mut ev.a.walked);
    ev.b.source = path_source::NONE;
    ev.b.raw_len = 0;
    ev.b.raw_truncated = 0;
    ev.b._pad = 0;
    walk_empty(&mut ev.b.walked);
    let mut judged = judge_path(&t, class::WRITE, &ev.a.walked);
    let answer = if refuses(judged) {
        judged |= verdict::DENIED;
        if kills(judged) && kill_current() {
            judged |= verdict::KILLED;
        }
        // The open is refused, but an O_CREAT that made the file made it before this hook.
        if mode & FMODE_CREATED != 0 {
            judged |= verdict::AFTER_EFFECT;
        }
        -EPERM
    } else {
        0
    };
    ev.header.verdict = judged;
    ev.ret = answer as i64;
    slot.submit(wake_flags());
    answer
}

/// socket_connect(struct socket *sock, struct sockaddr *address, int addrlen).
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
        count(counter::READ_ERROR);
        return 0;
    };
    let (want, addr_off, addr_len) = match family {
        AF_INET => (8, 4usize, 4u32),
        AF_INET6 => (24, 8usize, 16u32),
        _ => return 0, // AF_UNIX and others: not network egress
    };
    if addrlen < want {
        return 0; // the kernel refuses it with EINVAL
    }
    let Some(mut slot) = EVENTS.reserve::<NetEvent>(0) else {
        count(counter::RINGBUF_FULL);
        return 0;
    };
    // SAFETY: the reservation is sized for NetEvent; every field is written below.
    let ev = unsafe { &mut *slot.as_mut_ptr() };
    fill_header(&mut ev.header, kind::NET, pid_tgid, &t, agent_common::flags::VIA_LSM);
    ev.op = net_op::CONNECT;
    ev.header.verdict = 0;
    ev.family = family as u8;
    ev._pad = 0;
    ev.sock_type = read_u32(sock, off!(socket_type)).map(|t| t as u16 as u8).unwrap_or(0);
    ev.protocol = match read_ptr(sock, off!(socket_sk)) {
        Ok(sk) => read_u32(sk, off!(sock_sk_protocol))
            .map(|p| p as u16 as u8)
            .unwrap_or(0),
        Err(_) => 0,
    };
    // SAFETY: the kernel copy of the sockaddr, at least `want` bytes (checked above).
    ev.port = u16::from_be(
        unsafe { aya_ebpf::helpers::bpf_probe_read_kernel(addr.wrapping_add(2) as *const u16) }.unwrap_or(0),
    );
    ev.addr = [0; 16];
    // SAFETY: addr_len <= 16 bytes into the 16-byte array.
    unsafe {
        generated::bpf_probe_read_kernel(
            ev.addr.as_mut_ptr() as *mut c_void,
            addr_len,
            addr.wrapping_add(addr_off) as *const c_void,
        )
    };
    let mut judged = if family == AF_INET {
        judge_net(
            &t,
            ev.protocol,
            &mapped_v4([ev.addr[0], ev.addr[1], ev.addr[2], ev.addr[3]]),
            ev.port,
        )
    } else {
        judge_net(&t, ev.protocol, &ev.addr, ev.port)
    };
    let answer = if refuses(judged) {
        judged |= verdict::DENIED;
        if kills(judged) && kill_current() {
            judged |= verdict::KILLED;
        }
        -EPERM
    } else {
        0
    };
    ev.header.verdict = judged;
    slot.submit(wake_flags());
    answer
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
