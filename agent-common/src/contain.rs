//! Containment: the map layout the daemon compiles rules and credential scopes into, and the
//! verdict bits the programs write into every record's header. The kernel decides from these
//! maps alone, with no round trip to userspace (see agent-user's `contain` module for how
//! patterns become entries).
//!
//! ## Owners
//! Every rule entry belongs to an owner: a task id (its credential's scope, an allow-list),
//! [`GUARDRAILS`] (operator guardrails, a deny-list whatever the credential says),
//! [`guard_owner`]`(set)` (the guardrails for the processes of pods a combination of pod
//! matchers selects: the same deny-list with the pod guardrails added; `POD_GUARDS` maps a
//! pod's cgroup id to its set) or [`EXEMPT`] (writes that are never a violation: /dev/null
//! and the like).
//!
//! ## Paths ([`PATH_RULES`](PathKey), an LPM trie)
//! Key: owner, class ([`class::EXEC`] or [`class::WRITE`]), then the path bytes. An exact
//! pattern is stored with its terminating NUL (so it matches only itself), a subtree by its
//! directory with the trailing `/`, a last-segment wildcard (`/tmp/job-*`) by its literal
//! part. The lookup returns the longest stored prefix; when that entry's condition fails (a
//! wildcard that may not cross a `/`), the program retries at `fallback_bits`, the next
//! shorter entry of the same owner and class, at most [`MAX_FALLBACKS`] times.
//! A whole-segment wildcard in the middle (`/home/*/.ssh/`) is a [`path_kind::SEGMENT`] entry
//! at its literal part; the rest of the path after the segment is looked up in
//! [`TAIL_RULES`](TailKey) under the entry's `tail_id`.
//! Patterns the kernel cannot judge exactly (`?`, `[...]`, `{a,b}`, `**` in the middle) are
//! stored at their literal part as [`path_kind::UNDECIDED`]: the record says so and the daemon
//! decides (after the fact).
//!
//! Unix sockets are path entries too, of class [`class::UNIX`]: a socket file by its path
//! (`/run/docker.sock`), an abstract socket as `@` and its name (`@/tmp/.X11-unix/X0`).
//! Device nodes are judged as the device they name, never by the node's path: a write to a
//! character device is a write of `/dev/char/MAJOR:MINOR`, to a block device of
//! `/dev/block/MAJOR:MINOR`, the names udev gives them, so the same patterns serve (the
//! shipped guardrail holds `/dev/block/`); in the keys the numbers are binary
//! ([`device_key`]).
//!
//! ## Network ([`NET_RULES`](NetKey), an LPM trie)
//! Key: owner, IP protocol (6 TCP, 17 UDP; with [`LISTEN`] added for the `listen` clause,
//! whose address is the local one bound), address as IPv6 (IPv4 as `::ffff:a.b.c.d`, so
//! IPv4-mapped IPv6 destinations meet the same entries). Value: up to [`MAX_PORT_RANGES`]
//! port ranges. The compiler merges into each network the ranges of every network that
//! contains it, so the longest match alone decides.
//!
//! ## Grants ([`GRANTS`](Grants), a hash map by owner)
//! The socket kinds ([`crate::sock_kind`]: raw, packet, ICMP, vsock) and io_uring a task's
//! scope grants, and those a guardrail forbids (with the deciding guardrail per kind).
//!
//! ## Verdicts
//! [`POSTURE`](Verdict) (an array: [`posture::UNBOUND`], [`posture::EXPIRED`],
//! [`posture::SCOPE`], [`posture::UNJUDGED`]) and [`GUARD_VERDICTS`](Verdict) (indexed by
//! guardrail) hold the action and mode of each violation class; the daemon rewrites them when
//! the mode switches. An action the kernel cannot judge (a path it cannot read whole, a
//! target it cannot name, a full map) takes the UNJUDGED posture: refused in enforce mode,
//! reported as unjudged in observe mode, never allowed by default.

/// Owner id of the operator guardrails (those for every agent process).
pub const GUARDRAILS: u32 = u32::MAX;
/// Owner id of the writes that are never a violation (pseudo devices).
pub const EXEMPT: u32 = u32::MAX - 1;
/// Pod matchers (`pods:` of guardrails) the kernel can tell apart: a process's
/// [`crate::Tracked::guard_set`] has one bit per matcher its pod matches.
pub const MAX_POD_MATCHERS: u32 = 16;

/// The guard set whose owner `owner` is (the inverse of [`guard_owner`] for a non-empty set),
/// or None when `owner` is not a guard set's.
pub const fn guard_set_of_owner(owner: u32) -> Option<u32> {
    if owner < EXEMPT && owner >= EXEMPT - ((1 << MAX_POD_MATCHERS) - 1) {
        Some(EXEMPT - owner)
    } else {
        None
    }
}

/// The owner whose guardrail entries hold for a process with guard set `set`: the guardrails
/// for every agent ([`GUARDRAILS`]) when the set is empty, else the guardrail set compiled
/// for that combination of pod matchers (the guardrails for every agent, and those of each
/// matcher in the set), at `EXEMPT - set` (below every other owner; task ids count up from 1).
#[inline(always)]
pub const fn guard_owner(set: u32) -> u32 {
    if set == 0 {
        GUARDRAILS
    } else {
        EXEMPT - (set & ((1 << MAX_POD_MATCHERS) - 1))
    }
}

/// Attempt classes in path keys.
pub mod class {
    pub const EXEC: u8 = 1;
    pub const WRITE: u8 = 2;
    /// A connect or send to a Unix socket (its file's path, or `@name`).
    pub const UNIX: u8 = 3;
}

/// Added to the IP protocol of a [`NetKey`] for the `listen` clause (binds and listens, by
/// the local address and port).
pub const LISTEN: u8 = 0x80;

/// Bytes of a device key ([`device_key`]).
pub const DEVICE_KEY_LEN: usize = 32;

/// The kernel's key for the device a node names, as the rules write it
/// (`/dev/char/MAJOR:MINOR`, `/dev/block/MAJOR:MINOR`, udev's names) but with the numbers in
/// binary, so the kernel need not print decimals: the prefix, the major as 4 big-endian
/// bytes, `:`, the minor likewise. The daemon compiles device patterns into the same form
/// (`contain::compile`). None for an inode that is not a device; else the key's length.
#[inline(always)]
pub fn device_key(mode: u32, rdev: u32, out: &mut [u8; DEVICE_KEY_LEN]) -> Option<usize> {
    let prefix: &[u8] = match mode & S_IFMT {
        S_IFCHR => DEVICE_CHAR,
        S_IFBLK => DEVICE_BLOCK,
        _ => return None,
    };
    Some(device_key_of(prefix, rdev >> 20, rdev & 0xf_ffff, out))
}

/// The udev directories of character and block devices.
pub const DEVICE_CHAR: &[u8] = b"/dev/char/";
pub const DEVICE_BLOCK: &[u8] = b"/dev/block/";

/// [`device_key`] for an explicit prefix and numbers.
#[inline(always)]
pub fn device_key_of(prefix: &[u8], major: u32, minor: u32, out: &mut [u8; DEVICE_KEY_LEN]) -> usize {
    let n = prefix.len();
    out[..n].copy_from_slice(prefix);
    out[n..n + 4].copy_from_slice(&major.to_be_bytes());
    out[n + 4] = b':';
    out[n + 5..n + 9].copy_from_slice(&minor.to_be_bytes());
    n + 9
}

/// inode.i_mode file types.
pub const S_IFMT: u32 = 0o170000;
pub const S_IFSOCK: u32 = 0o140000;
pub const S_IFLNK: u32 = 0o120000;
pub const S_IFREG: u32 = 0o100000;
pub const S_IFBLK: u32 = 0o060000;
pub const S_IFDIR: u32 = 0o040000;
pub const S_IFCHR: u32 = 0o020000;
pub const S_IFIFO: u32 = 0o010000;

/// Value of `GRANTS`: what an owner's entry says about each [`crate::sock_kind`] (bit k).
/// For a task: the kinds its scope grants. For a guardrail owner: the kinds a guardrail
/// forbids, `rule[k]` naming the first such guardrail.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Grants {
    pub kinds: u32,
    pub _pad: u32,
    pub rule: [u16; 8],
}

/// Bytes of path in a [`PathKey`] (4 owner + 1 class + this = 256, the LPM trie's limit).
pub const PATH_KEY_LEN: usize = 251;
/// Bytes of path in a [`TailKey`].
pub const TAIL_KEY_LEN: usize = 252;
/// Retries at a shorter entry when a conditional entry does not match.
pub const MAX_FALLBACKS: usize = 4;
/// Port ranges per network entry.
pub const MAX_PORT_RANGES: usize = 16;
/// Guardrails the kernel can tell apart.
pub const MAX_GUARDRAILS: u32 = 256;
/// Entries of each rule trie.
pub const MAX_RULES: u32 = 16384;

/// Key data of `PATH_RULES` (the LPM prefix length counts bits of this, from `owner`).
#[repr(C)]
#[derive(Clone, Copy)]
pub struct PathKey {
    /// Owner, big-endian bytes (only ever matched whole).
    pub owner: [u8; 4],
    pub class: u8,
    pub path: [u8; PATH_KEY_LEN],
}

/// Key data of `TAIL_RULES`: the rest of a path after a wildcard segment.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct TailKey {
    pub tail_id: [u8; 4],
    pub path: [u8; TAIL_KEY_LEN],
}

/// Bits of a path key before its path bytes.
pub const PATH_KEY_HEAD_BITS: u32 = 5 * 8;
/// Bits of a tail key before its path bytes.
pub const TAIL_KEY_HEAD_BITS: u32 = 4 * 8;

/// How a path entry matches.
pub mod path_kind {
    /// Everything under the stored prefix (an exact path carries its NUL, so it is only
    /// itself).
    pub const PREFIX: u8 = 1;
    /// The stored prefix then anything without a `/` (a wildcard in the last segment).
    pub const LAST_SEGMENT: u8 = 2;
    /// The stored prefix, one path segment (up to the next `/`), then the rest looked up in
    /// TAIL_RULES under `tail_id`.
    pub const SEGMENT: u8 = 3;
    /// A pattern the kernel cannot judge exactly starts here: the daemon decides.
    pub const UNDECIDED: u8 = 4;
}

/// Value of `PATH_RULES` and `TAIL_RULES`.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PathRule {
    /// [`path_kind`].
    pub kind: u8,
    /// For SEGMENT: the path components before the wildcard segment (`/home/*/.ssh`: 1). The
    /// kernel finds where the segment ends from the component boundaries its path walk
    /// recorded, with no byte scan.
    pub depth: u8,
    /// Path bytes of the stored prefix (without the key head).
    pub prefix_bytes: u16,
    /// Guardrail index, for GUARDRAILS entries.
    pub rule: u16,
    pub _pad2: u16,
    /// LPM prefix length of the next shorter entry of the same owner and class (0: none).
    pub fallback_bits: u32,
    /// For SEGMENT: the TAIL_RULES id of the rest.
    pub tail_id: u32,
}

/// Key data of `NET_RULES`.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NetKey {
    pub owner: [u8; 4],
    /// IPPROTO_TCP (6) or IPPROTO_UDP (17).
    pub proto: u8,
    /// IPv6 address (IPv4 mapped), network byte order.
    pub addr: [u8; 16],
}

/// Bits of a net key before its address.
pub const NET_KEY_HEAD_BITS: u32 = 5 * 8;

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PortRange {
    pub lo: u16,
    pub hi: u16,
    /// Guardrail index, for GUARDRAILS entries (the first matching range wins: the compiler
    /// orders them by guardrail, file order).
    pub rule: u16,
    pub _pad: u16,
}

/// Value of `NET_RULES`.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NetRule {
    pub count: u32,
    pub _pad: u32,
    pub ranges: [PortRange; MAX_PORT_RANGES],
}

/// Indexes of the `POSTURE` array.
pub mod posture {
    /// A tracked process with no credential.
    pub const UNBOUND: u32 = 0;
    /// A credential past its exp (or revoked: the daemon sets exp to the past).
    pub const EXPIRED: u32 = 1;
    /// An action outside a valid credential's scope.
    pub const SCOPE: u32 = 2;
    /// An action the kernel could not judge (fail closed).
    pub const UNJUDGED: u32 = 3;
    pub const COUNT: u32 = 4;
}

/// Actions, as in the rule files (wire values).
pub mod action {
    /// Not a violation (or no posture configured).
    pub const NONE: u8 = 0;
    pub const ALERT: u8 = 1;
    pub const DENY: u8 = 2;
    pub const KILL: u8 = 3;
    pub const KILL_TREE: u8 = 4;
}

/// Value of `POSTURE` and `GUARD_VERDICTS`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Verdict {
    /// [`action`].
    pub action: u8,
    /// 1: the rule runs in enforce mode; 0: observe (decide, report, never act).
    pub enforce: u8,
    pub _pad: u16,
}

/// The kernel's decision, in `Header::verdict`.
pub mod verdict {
    /// [`super::action`] of the deciding rule.
    pub const ACTION_MASK: u32 = 0x7;
    /// The deciding rule runs in enforce mode.
    pub const ENFORCE: u32 = 1 << 3;
    /// The kernel refused the action (the caller got EPERM).
    pub const DENIED: u32 = 1 << 4;
    /// The kernel sent SIGKILL to the process.
    pub const KILLED: u32 = 1 << 5;
    /// A pattern the kernel cannot judge exactly matched: the daemon decides.
    pub const UNDECIDED: u32 = 1 << 6;
    /// The SIGKILL came after the operation's side effect (e.g. a file already created or
    /// truncated by the open it answers).
    pub const AFTER_EFFECT: u32 = 1 << 7;
    /// Which rule class decided ([`super::rule_class`]), shifted.
    pub const CLASS_SHIFT: u32 = 8;
    pub const CLASS_MASK: u32 = 0x7 << CLASS_SHIFT;
    /// The kernel could not judge the action (what it needed was unreadable, truncated or
    /// not placeable, or a map was full): the verdict is the UNJUDGED posture's.
    pub const UNJUDGED: u32 = 1 << 11;
    /// Guardrail index, shifted.
    pub const RULE_SHIFT: u32 = 16;
}

/// Rule classes in a verdict.
pub mod rule_class {
    pub const NONE: u32 = 0;
    pub const GUARDRAIL: u32 = 1;
    pub const UNBOUND: u32 = 2;
    pub const EXPIRED: u32 = 3;
    pub const SCOPE: u32 = 4;
    pub const UNJUDGED: u32 = 5;
}

const _: () = {
    use core::mem::size_of;
    assert!(size_of::<PathKey>() == 256);
    assert!(size_of::<TailKey>() == 256);
    assert!(size_of::<PathRule>() == 16);
    // The kernel checks the ranges unrolled, one by one (agent-ebpf contain::net_hit).
    assert!(MAX_PORT_RANGES == 16);
    assert!(size_of::<NetKey>() == 21);
    assert!(size_of::<PortRange>() == 8);
    assert!(size_of::<NetRule>() == 8 + 8 * MAX_PORT_RANGES);
    assert!(size_of::<Verdict>() == 4);
    assert!(size_of::<Grants>() == 24);
    assert!(crate::sock_kind::COUNT as usize <= 8);
    assert!(DEVICE_KEY_LEN > 11 + 9);
};

#[cfg(feature = "user")]
mod pod {
    // SAFETY: repr(C), Copy, explicit padding, no invalid bit patterns.
    unsafe impl aya::Pod for super::PathKey {}
    unsafe impl aya::Pod for super::TailKey {}
    unsafe impl aya::Pod for super::PathRule {}
    unsafe impl aya::Pod for super::NetKey {}
    unsafe impl aya::Pod for super::NetRule {}
    unsafe impl aya::Pod for super::Verdict {}
    unsafe impl aya::Pod for super::Grants {}
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn device_keys_hold_the_udev_prefix_and_binary_numbers() {
        let mut out = [0u8; DEVICE_KEY_LEN];
        let n = device_key(S_IFCHR | 0o666, 1 << 20 | 3, &mut out).unwrap();
        assert_eq!(&out[..n], b"/dev/char/\0\0\0\x01:\0\0\0\x03");
        let n = device_key(S_IFBLK, 259 << 20 | 0xf_ffff, &mut out).unwrap();
        assert_eq!(&out[..n], b"/dev/block/\0\0\x01\x03:\0\x0f\xff\xff");
        assert_eq!(device_key(S_IFREG, 0, &mut out), None);
        assert_eq!(device_key(S_IFIFO, 0, &mut out), None);
    }
}
