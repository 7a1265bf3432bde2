//! Containment decisions, from the maps the daemon compiled (layout: agent_common::contain).
//! Order as in the daemon's engine: guardrails, then the credential (none -> unbound posture,
//! past exp -> expired posture, else the scope). The result is a verdict word for the record
//! header; the caller applies it the way its hook can (refuse, or SIGKILL).
use core::ffi::c_void;

use agent_common::{
    NO_TASK, Object, Tracked, UNIX_NAME_LEN, WALK_MAIN, WalkedPath, config,
    contain::{
        DEVICE_KEY_LEN, EXEMPT, LISTEN, MAX_FALLBACKS, NET_KEY_HEAD_BITS, NetKey, PATH_KEY_HEAD_BITS, PATH_KEY_LEN,
        PathKey, PathRule, S_IFBLK, S_IFCHR, S_IFIFO, S_IFMT, S_IFREG, S_IFSOCK, TAIL_KEY_HEAD_BITS, TAIL_KEY_LEN,
        Verdict, action, class, device_key, guard_owner, path_kind, posture, rule_class, verdict,
    },
    counter, walk,
};
use aya_ebpf::{
    helpers::{bpf_ktime_get_boot_ns, generated},
    maps::lpm_trie::Key,
};

use crate::{
    kernel::{KPtr, masked, off, read_u32},
    maps::{
        GRANTS, GUARD_VERDICTS, NET_RULES, PATH_KEY, PATH_RULES, POSTURE, SCAN, TAIL_KEY, TAIL_RULES, WALK_SCRATCH,
        count, degraded, opaque,
    },
};

const SIGKILL: u32 = 9;

/// A lookup's answer.
#[derive(Clone, Copy)]
enum Hit {
    No,
    /// Matched; the guardrail index for guardrail entries.
    Yes(u16),
    /// A pattern the kernel cannot judge matched.
    Undecided,
    /// What the lookup needed was not there (a path too long for the key of the rest after a
    /// wildcard segment): fail closed.
    Unjudged,
}

#[inline(always)]
fn bits(v: Verdict, class: u32, rule: u32) -> u32 {
    if v.action == action::NONE {
        return 0;
    }
    let enforce = if v.enforce != 0 { verdict::ENFORCE } else { 0 };
    v.action as u32 | enforce | (class << verdict::CLASS_SHIFT) | (rule << verdict::RULE_SHIFT)
}

#[inline(always)]
fn posture_bits(index: u32, class: u32) -> u32 {
    match POSTURE.get(index) {
        Some(v) => bits(*v, class, 0),
        None => 0,
    }
}

#[inline(always)]
fn guardrail_bits(rule: u16) -> u32 {
    match GUARD_VERDICTS.get(rule as u32) {
        Some(v) => bits(*v, rule_class::GUARDRAIL, rule as u32),
        None => 0,
    }
}

#[inline(always)]
fn expired(t: &Tracked) -> bool {
    // SAFETY: helper call without arguments.
    t.expires_ns != 0 && unsafe { bpf_ktime_get_boot_ns() } >= t.expires_ns
}

/// The verdict on an action the kernel could not judge (what it needed was unreadable,
/// truncated or not placeable, or a map was full): the UNJUDGED posture, or the expired
/// posture when the credential is past its exp and that one refuses. Never an allow by
/// default: fail closed. Counted.
#[inline(always)]
pub fn unjudged(t: &Tracked) -> u32 {
    count(counter::UNJUDGED);
    if t.task != NO_TASK && expired(t) {
        let e = posture_bits(posture::EXPIRED, rule_class::EXPIRED);
        if refuses(e) {
            return e | verdict::UNJUDGED;
        }
    }
    posture_bits(posture::UNJUDGED, rule_class::UNJUDGED) | verdict::UNJUDGED
}

/// The unjudged verdict where the tracked entry itself could not be read.
#[inline(always)]
pub fn unjudged_untracked() -> u32 {
    count(counter::UNJUDGED);
    posture_bits(posture::UNJUDGED, rule_class::UNJUDGED) | verdict::UNJUDGED
}

/// Guardrail first, then the credential.
#[inline(always)]
fn decide(t: &Tracked, guard: Hit, scope: impl FnOnce(u32) -> Hit) -> u32 {
    let mut undecided = 0;
    match guard {
        Hit::Yes(rule) => return guardrail_bits(rule),
        Hit::Undecided => undecided = verdict::UNDECIDED,
        Hit::Unjudged => return unjudged(t),
        Hit::No => {}
    }
    if t.task == NO_TASK {
        return undecided | posture_bits(posture::UNBOUND, rule_class::UNBOUND);
    }
    if expired(t) {
        return undecided | posture_bits(posture::EXPIRED, rule_class::EXPIRED);
    }
    match scope(t.task) {
        Hit::Yes(_) => undecided,
        Hit::No => undecided | posture_bits(posture::SCOPE, rule_class::SCOPE),
        Hit::Undecided => verdict::UNDECIDED,
        Hit::Unjudged => unjudged(t),
    }
}

/// Should the action be refused (enforce mode, deny or stronger)?
#[inline(always)]
pub fn refuses(v: u32) -> bool {
    v & verdict::ENFORCE != 0 && (v & verdict::ACTION_MASK) as u8 >= action::DENY
}

/// Should the process be killed (enforce mode, kill or kill-tree)?
#[inline(always)]
pub fn kills(v: u32) -> bool {
    v & verdict::ENFORCE != 0 && (v & verdict::ACTION_MASK) as u8 >= action::KILL
}

/// A BPF LSM hook's answer: -EPERM when `refused`, else 0, in a form the verifier can bound
/// (kernels from 6.10 check that an LSM program returns 0 or an errno, and lose track of a
/// flag computed across the judgement).
#[inline(always)]
pub fn lsm_answer(refused: bool) -> i32 {
    const EPERM: i32 = 1;
    let v: i32 = if refused { -EPERM } else { 0 };
    // SAFETY: a read of a local.
    if unsafe { core::ptr::read_volatile(&v) } < 0 {
        -EPERM
    } else {
        0
    }
}

/// SIGKILLs the current process (it dies before it returns to user mode).
#[inline(always)]
pub fn kill_current() -> bool {
    // SAFETY: helper call with a constant signal number.
    unsafe { generated::bpf_send_signal(SIGKILL) == 0 }
}

// ---- network ----

#[inline(always)]
fn net_hit(owner: u32, proto: u8, addr: &[u8; 16], port: u16) -> Hit {
    let key = Key::new(
        NET_KEY_HEAD_BITS + 128,
        NetKey {
            owner: owner.to_be_bytes(),
            proto,
            addr: *addr,
        },
    );
    let Some(rule) = NET_RULES.get(&key) else {
        return Hit::No;
    };
    let n = rule.count as usize;
    // Unrolled with constant indexes: older verifiers (5.10, 6.1) cannot bound a loop index
    // into the value.
    macro_rules! range {
        ($($i:literal)*) => {$(
            if $i < n {
                let r = rule.ranges[$i];
                if r.lo <= port && port <= r.hi {
                    return Hit::Yes(r.rule);
                }
            }
        )*};
    }
    range!(0 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15);
    Hit::No
}

/// Judges a connect or send by tracked entry `t` to `addr` (IPv6; IPv4 mapped) and `port`.
#[inline(always)]
pub fn judge_net(t: &Tracked, proto: u8, addr: &[u8; 16], port: u16) -> u32 {
    let guard = net_hit(guard_owner(t.guard_set), proto, addr, port);
    decide(t, guard, |task| net_hit(task, proto, addr, port))
}

/// Judges a bind, listen or accept by `t` on local `addr` (IPv6; IPv4 mapped) and `port`
/// against the `listen` clause (0: a port the kernel picks).
#[inline(always)]
pub fn judge_listen(t: &Tracked, proto: u8, addr: &[u8; 16], port: u16) -> u32 {
    judge_net(t, proto | LISTEN, addr, port)
}

// ---- grants ----

/// Judges the creation of a socket of kind `kind` (agent_common::sock_kind), or of an
/// io_uring, by `t`: forbidden by a guardrail, else it must be granted by the scope.
#[inline(always)]
pub fn judge_grant(t: &Tracked, kind: u8) -> u32 {
    let k = (kind & 7) as usize;
    let bit = 1u32 << k;
    let owner = guard_owner(t.guard_set);
    // SAFETY: map lookups, copied out.
    let guard = match unsafe { GRANTS.get(&owner) }.copied() {
        Some(g) if g.kinds & bit != 0 => Hit::Yes(g.rule[k]),
        _ => Hit::No,
    };
    decide(t, guard, |task| match unsafe { GRANTS.get(&task) }.copied() {
        Some(g) if g.kinds & bit != 0 => Hit::Yes(0),
        _ => Hit::No,
    })
}

/// `a.b.c.d` as `::ffff:a.b.c.d`.
#[inline(always)]
pub fn mapped_v4(v4: [u8; 4]) -> [u8; 16] {
    [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, v4[0], v4[1], v4[2], v4[3]]
}

// ---- paths ----

/// The path of `walked` in the per-CPU lookup key; returns the key and the offset of the
/// last `/` in the path, or None when there is no usable path (nothing walked, or a path
/// that is incomplete: truncated, unreadable, or not reaching a root of this namespace).
#[inline(always)]
fn load_path(walked: *const WalkedPath) -> Option<(&'static mut Key<PathKey>, usize, usize)> {
    let key = PATH_KEY.get_ptr_mut(0)?;
    // SAFETY: per-CPU scratch owned by this program run.
    let key = unsafe { &mut (*key).key };
    // SAFETY: `walked` points at a filled WalkedPath (ring or scratch memory).
    let (start, leaf, flags) = unsafe { ((*walked).start as usize, (*walked).leaf as usize, (*walked).flags) };
    if flags & (walk::EMPTY | walk::TRUNCATED | walk::READ_ERROR | walk::DETACHED) != 0 || start >= WALK_MAIN {
        return None;
    }
    let len = WALK_MAIN - start;
    let copy = if len < PATH_KEY_LEN { len } else { PATH_KEY_LEN };
    // A volatile read keeps the compiler from folding the mask below into the min above (the
    // verifier needs to see the mask).
    // SAFETY: a read of a local.
    let copy = unsafe { core::ptr::read_volatile(&copy) };
    // SAFETY: copy <= PATH_KEY_LEN bytes into the key's path; start + copy <= WALK_MAIN.
    unsafe {
        generated::bpf_probe_read_kernel(
            key.data.path.as_mut_ptr() as *mut c_void,
            (copy & 0xff) as u32,
            (*walked).buf.as_ptr().add(start & (WALK_MAIN - 1)) as *const c_void,
        );
    }
    if len < PATH_KEY_LEN {
        // SAFETY: len < PATH_KEY_LEN; masked, it stays inside the slack after the key.
        unsafe {
            let at = core::ptr::read_volatile(&len) & 0xff;
            *key.data.path.as_mut_ptr().add(at) = 0
        };
        key.prefix_len = PATH_KEY_HEAD_BITS + (len as u32 + 1) * 8;
    } else {
        // Longer than a key: prefix entries still match, exact ones cannot.
        key.prefix_len = PATH_KEY_HEAD_BITS + PATH_KEY_LEN as u32 * 8;
    }
    let leaf = leaf.saturating_sub(start);
    Some((key, len, leaf))
}

/// Longest-prefix lookup with the fallbacks of conditional entries (see agent_common::contain).
#[inline(always)]
fn path_hit(key: &mut Key<PathKey>, walked: *const WalkedPath, owner: u32, cls: u8, len: usize, leaf: usize) -> Hit {
    key.data.owner = owner.to_be_bytes();
    key.data.class = cls;
    let full = key.prefix_len;
    let mut hit = Hit::No;
    let mut segment: Option<PathRule> = None;
    for _ in 0..=MAX_FALLBACKS {
        let Some(r) = PATH_RULES.get(&*key) else {
            break;
        };
        let r: PathRule = *r;
        let matched = match r.kind {
            path_kind::PREFIX => true,
            path_kind::LAST_SEGMENT => leaf < r.prefix_bytes as usize,
            path_kind::SEGMENT => {
                // Judged once, after the loop (the compiler gives a segment entry no
                // shorter entry to fall back to).
                segment = Some(r);
                break;
            }
            path_kind::UNDECIDED => {
                hit = Hit::Undecided;
                break;
            }
            _ => false,
        };
        if matched {
            hit = Hit::Yes(r.rule);
            break;
        }
        if r.fallback_bits == 0 || r.fallback_bits >= key.prefix_len {
            break;
        }
        key.prefix_len = r.fallback_bits;
    }
    key.prefix_len = full;
    match segment {
        Some(r) => tail_hit(walked, &r, len, leaf),
        None => hit,
    }
}

/// The rest of the path after the wildcard segment of SEGMENT entry `r`, looked up in
/// TAIL_RULES. Where the segment ends comes from the component boundaries the path walk left
/// in WALK_SCRATCH (no byte scan: the verifier sees straight-line code).
#[inline(always)]
fn tail_hit(walked: *const WalkedPath, r: &PathRule, len: usize, leaf: usize) -> Hit {
    if walked.is_null() {
        return Hit::Undecided; // a key with no walk (a device, a socket name)
    }
    let (Some(w), Some(slot)) = (WALK_SCRATCH.get_ptr(0), TAIL_KEY.get_ptr_mut(0)) else {
        return Hit::Unjudged;
    };
    // SAFETY: per-CPU scratch owned by this program run; `walked` is a filled WalkedPath.
    let (w, slot, start) = unsafe { (&*w, &mut *slot, (*walked).start) };
    if w.start != start {
        return Hit::Undecided; // the scratch holds another walk's boundaries
    }
    let count = w.count as usize;
    let depth = r.depth as usize;
    // The tail starts at the `/` of the component after the wildcard one (leaf-first index
    // count - 2 - depth); a path that ends in the wildcard segment has an empty tail.
    let i = if count >= depth + 2 {
        // SAFETY: a read of a local (keeps the mask below from being folded away).
        let k = unsafe { core::ptr::read_volatile(&(count - 2 - depth)) } & 63;
        let Some(&p) = w.pos.get(k) else {
            return Hit::Undecided;
        };
        (p as usize).wrapping_sub(start as usize)
    } else {
        len
    };
    if i > len {
        return Hit::Undecided;
    }
    let rest = len - i;
    if rest >= TAIL_KEY_LEN {
        return Hit::Unjudged;
    }
    let tail = &mut slot.key;
    tail.data.tail_id = r.tail_id.to_be_bytes();
    let from = (start as usize + i) & (WALK_MAIN - 1);
    // SAFETY: the source is inside the walked buffer (from < WALK_MAIN, and WALK_BUF leaves
    // room for a whole tail key after it); the NUL goes at a masked offset inside the tail
    // key or its slack.
    unsafe {
        generated::bpf_probe_read_kernel(
            tail.data.path.as_mut_ptr() as *mut c_void,
            (TAIL_KEY_LEN - 1) as u32,
            (*walked).buf.as_ptr().add(from) as *const c_void,
        );
        let at = core::ptr::read_volatile(&rest) & 0xff;
        *tail.data.path.as_mut_ptr().add(at) = 0;
    }
    tail.prefix_len = TAIL_KEY_HEAD_BITS + (rest as u32 + 1) * 8;
    let Some(t) = TAIL_RULES.get(&*tail) else {
        return Hit::No;
    };
    // The tail's own rule: patterns of several rules share one segment entry.
    match t.kind {
        path_kind::PREFIX => Hit::Yes(t.rule),
        path_kind::LAST_SEGMENT if leaf >= i && leaf - i < t.prefix_bytes as usize => Hit::Yes(t.rule),
        path_kind::UNDECIDED => Hit::Undecided,
        _ => Hit::No,
    }
}

/// Guardrails, then the credential, on the key loaded in `key` (`walked`: the walk it came
/// from, for wildcard segments; null for keys that are no walk). A subprogram of its own: its
/// lookups' locals stay out of the callers' frames (the BPF stack is 512 bytes for a whole
/// call chain, and the path hooks walk as well).
#[inline(never)]
fn judge_key(t: &Tracked, cls: u8, walked: *const WalkedPath, len: usize, leaf: usize) -> u32 {
    let Some(key) = PATH_KEY.get_ptr_mut(0) else {
        return unjudged(t);
    };
    // SAFETY: per-CPU scratch owned by this program run (the caller loaded the key).
    let key = unsafe { &mut (*key).key };
    let guard = path_hit(key, walked, guard_owner(t.guard_set), cls, len, leaf);
    opaque(decide(t, guard, |task| path_hit(key, walked, task, cls, len, leaf)))
}

/// Judges an exec (`cls` EXEC), a write (`cls` WRITE) or a Unix socket (`cls` UNIX) of
/// `walked` by tracked entry `t`. A path the walk could not rebuild whole is unjudged: the
/// UNJUDGED posture decides (fail closed). `exempt`: writes to the exempt entries are never
/// a violation (only for writes of an object's content, see [`judge_object`]).
#[inline(always)]
pub fn judge_path(t: &Tracked, cls: u8, walked: *const WalkedPath) -> u32 {
    let Some((_, len, leaf)) = load_path(walked) else {
        return unjudged(t);
    };
    judge_key(t, cls, walked, len, leaf)
}

/// Judges a write of the content or attributes of the object `inode` (a kernel `struct
/// inode`), reached as `walked`, by `t`, and says what the object is in `obj`:
/// - a device node as the device it names (`/dev/char/M:m`, `/dev/block/M:m`), whatever
///   node names it (a node made anywhere cannot open a way around the device rules);
/// - a regular file with more than one hard link: the kernel can name only the link used,
///   so a verdict that does not refuse on that name is unjudged (fail closed);
/// - an unnamed pipe or socket (a walk that reaches no root: pipefs, sockfs): no file write;
/// - anything else by its path.
///
/// Where the kernel lacks the inode fields ([`config::degraded::OBJECT`]), by the path.
#[inline(always)]
pub fn judge_object(t: &Tracked, inode: KPtr, walked: *const WalkedPath, obj: &mut Object) -> u32 {
    obj.mode = 0;
    obj.rdev = 0;
    obj.nlink = 0;
    if inode.is_null() || degraded(config::degraded::OBJECT) {
        return judge_path(t, class::WRITE, walked);
    }
    let (Ok(mode), Ok(rdev), Ok(nlink)) = (
        read_u32(inode, off!(inode_i_mode)),
        read_u32(inode, off!(inode_i_rdev)),
        read_u32(inode, off!(inode_i_nlink)),
    ) else {
        return unjudged(t);
    };
    let mode = mode & 0xffff; // umode_t
    obj.mode = mode;
    obj.rdev = rdev;
    obj.nlink = nlink;
    let fmt = mode & S_IFMT;
    if fmt == S_IFCHR || fmt == S_IFBLK {
        return judge_device(t, mode, rdev);
    }
    // SAFETY: `walked` points at a filled WalkedPath.
    let detached = unsafe { (*walked).flags } & walk::DETACHED != 0;
    if (fmt == S_IFIFO || fmt == S_IFSOCK) && detached {
        return 0;
    }
    let v = judge_path(t, class::WRITE, walked);
    if fmt == S_IFREG && nlink > 1 && !refuses(v) {
        return unjudged(t);
    }
    v
}

/// Judges a write of the device `rdev` (kernel encoding) of type `mode` by `t`, as its udev
/// name: the exempt devices (null, zero, full, tty, ptmx, terminals) first.
#[inline(never)]
pub fn judge_device(t: &Tracked, mode: u32, rdev: u32) -> u32 {
    let Some(key) = PATH_KEY.get_ptr_mut(0) else {
        return unjudged(t);
    };
    // SAFETY: per-CPU scratch owned by this program run.
    let key = unsafe { &mut (*key).key };
    let mut name = [0u8; DEVICE_KEY_LEN];
    let Some(n) = device_key(mode, rdev, &mut name) else {
        return unjudged(t);
    };
    key.data.path[..DEVICE_KEY_LEN].copy_from_slice(&name);
    let n = n & (DEVICE_KEY_LEN - 1);
    key.data.path[n] = 0;
    key.prefix_len = PATH_KEY_HEAD_BITS + (n as u32 + 1) * 8;
    // The `/` before MAJOR:MINOR.
    let leaf = if mode & S_IFMT == S_IFCHR { 9 } else { 10 };
    if let Hit::Yes(_) = path_hit(key, core::ptr::null(), EXEMPT, class::WRITE, n, leaf) {
        return 0;
    }
    judge_key(t, class::WRITE, core::ptr::null(), n, leaf)
}

/// Judges a connect or send by `t` to the Unix socket named `name[..len]`: an abstract name
/// (judged as `@name`; a name with a NUL inside cannot be told from a shorter one: unjudged)
/// or a path as given (only absolute paths are judged; a relative one is unjudged).
#[inline(never)]
pub fn judge_unix_name(t: &Tracked, name: &[u8; UNIX_NAME_LEN], len: usize, is_abstract: bool) -> u32 {
    let Some(key) = PATH_KEY.get_ptr_mut(0) else {
        return unjudged(t);
    };
    // SAFETY: per-CPU scratch owned by this program run.
    let key = unsafe { &mut (*key).key };
    let len = masked(len, 0x7f);
    if len == 0 || len > UNIX_NAME_LEN || (!is_abstract && name[0] != b'/') {
        return unjudged(t);
    }
    let (dst, n) = if is_abstract {
        key.data.path[0] = b'@';
        (1usize, len + 1)
    } else {
        (0, len)
    };
    // SAFETY: at most UNIX_NAME_LEN bytes into the key's path (251 bytes) at offset 0 or 1;
    // the string copy stops at the first NUL, so its length tells a NUL inside the name.
    let copied = unsafe {
        generated::bpf_probe_read_kernel_str(
            key.data.path.as_mut_ptr().add(dst) as *mut c_void,
            (len + 1) as u32,
            name.as_ptr() as *const c_void,
        )
    };
    if copied != (len + 1) as i64 {
        return unjudged(t);
    }
    let n = masked(n, 0xff);
    key.prefix_len = PATH_KEY_HEAD_BITS + (n as u32 + 1) * 8;
    // The last `/` of the name. The scan keeps its state in map memory (the length read back
    // each round, the offset found written there): kernels before 6.4 mark every scalar
    // precise in a program with subprograms, so a loop carrying them in registers would
    // make one verifier state per value they can take, and judge_key verified once per state.
    let Some(scan) = SCAN.get_ptr_mut(0) else {
        return unjudged(t);
    };
    // SAFETY: per-CPU slot owned by this program run.
    let scan = unsafe { &mut *scan };
    scan.len = n as u32;
    scan.leaf = 0;
    let mut i = 0;
    while i < UNIX_NAME_LEN + 1 {
        // SAFETY: a read of a map value.
        if key.data.path[i & 0xff] == b'/' && i < unsafe { core::ptr::read_volatile(&scan.len) } as usize {
            scan.leaf = i as u32;
        }
        i += 1;
    }
    // SAFETY: reads of a map value.
    let (n, leaf) = unsafe {
        (
            core::ptr::read_volatile(&scan.len),
            core::ptr::read_volatile(&scan.leaf),
        )
    };
    opaque(judge_key(
        t,
        class::UNIX,
        core::ptr::null(),
        (n & 0xff) as usize,
        (leaf & 0xff) as usize,
    ))
}
