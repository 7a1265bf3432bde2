//! Pure: guardrails, postures and credential scopes -> the entries of the kernel's rule maps
//! (layout and lookup rules: agent_common::contain). Tested without root.
//!
//! Path patterns, by what the kernel can judge:
//! - `/a/b` (no wildcard): exact, stored with its NUL;
//! - `/a/b/` (subtree) and `/a/b/**`: everything under `/a/b/` (the subtree form also `/a/b`);
//! - `/a/b*`: a wildcard in the last segment;
//! - `/a/*/c`, `/a/x*/c/`, `/home/*/.ssh/**`: one wildcard segment, then one of the above;
//! - anything else (`?`, `[...]`, `{..}`, `**` or a second `*` in the middle, a pattern
//!   longer than a key): undecided from its literal part on, judged by the daemon.
use std::{
    collections::{BTreeMap, BTreeSet},
    net::IpAddr,
};

use agent_common::contain::{
    Grants, LISTEN, MAX_FALLBACKS, MAX_PORT_RANGES, NET_KEY_HEAD_BITS, NetRule, PATH_KEY_HEAD_BITS, PATH_KEY_LEN,
    PathRule, PortRange, TAIL_KEY_LEN, Verdict, action, class, path_kind,
};
use ipnet::IpNet;

use crate::{
    credentials::scope::{
        CompiledScope, ConnectRule, Host, PSEUDO_DEVICE_IDS, PSEUDO_DEVICES, PTS_MAJORS, PathPattern, Proto,
    },
    policy::engine::{Action, Mode, Rules},
};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CompileError {
    #[error(
        "{what}: more than {MAX_PORT_RANGES} port ranges apply to {net}; the kernel cannot hold them (merge ranges or split the networks)"
    )]
    TooManyPorts { what: String, net: String },
    #[error(
        "{what}: patterns nested more than {MAX_FALLBACKS} deep under {prefix:?}; the kernel cannot judge them (flatten the list)"
    )]
    TooDeep { what: String, prefix: String },
}

/// One PATH_RULES entry (before the daemon maps `rule.tail_id` to a global id).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PathEntry {
    pub owner: u32,
    pub class: u8,
    pub bytes: Vec<u8>,
    pub rule: PathRule,
}

impl PathEntry {
    pub fn prefix_bits(&self) -> u32 {
        PATH_KEY_HEAD_BITS + self.bytes.len() as u32 * 8
    }
}

/// One TAIL_RULES entry; `tail` is the owner-local id a SEGMENT entry refers to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TailEntry {
    pub tail: u32,
    pub bytes: Vec<u8>,
    pub rule: PathRule,
}

/// One NET_RULES entry: `addr`/`bits` is an IPv6 network (IPv4 mapped).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetEntry {
    pub owner: u32,
    pub proto: u8,
    pub addr: [u8; 16],
    pub bits: u8,
    pub rule: NetRule,
}

impl NetEntry {
    pub fn prefix_bits(&self) -> u32 {
        NET_KEY_HEAD_BITS + self.bits as u32
    }
}

/// The entries of one owner.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Compiled {
    pub paths: Vec<PathEntry>,
    pub tails: Vec<TailEntry>,
    pub nets: Vec<NetEntry>,
    /// The owner's GRANTS entry (None: grants nothing, forbids nothing).
    pub grants: Option<Grants>,
    /// Patterns the kernel leaves to the daemon (for the start-up report).
    pub undecided: Vec<String>,
}

/// How the kernel matches one pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Form {
    Prefix(Vec<u8>),
    LastSegment(Vec<u8>),
    Segment(Vec<u8>, Box<Form>),
    Undecided(Vec<u8>),
}

const WILDCARDS: &[char] = &['*', '?', '[', '{', '\\'];

fn exact(text: &str) -> Vec<u8> {
    let mut b = text.as_bytes().to_vec();
    b.push(0);
    b
}

/// A literal prefix the key can hold, else undecided at what it can hold.
fn fit(form: Form, limit: usize) -> Form {
    let too_long = |b: &Vec<u8>| b.len() > limit;
    match form {
        Form::Prefix(b) | Form::LastSegment(b) | Form::Undecided(b) | Form::Segment(b, _) if too_long(&b) => {
            Form::Undecided(b[..limit].to_vec())
        }
        f => f,
    }
}

/// The form of the part after a wildcard segment (no further segment wildcards).
fn tail_form(rest: &str) -> Form {
    match rest.find(WILDCARDS) {
        None => Form::Prefix(exact(rest)),
        Some(i) => {
            let (lit, wild) = rest.split_at(i);
            match wild {
                "**" if lit.ends_with('/') => Form::Prefix(lit.as_bytes().to_vec()),
                "*" => Form::LastSegment(lit.as_bytes().to_vec()),
                _ => Form::Undecided(lit.as_bytes().to_vec()),
            }
        }
    }
}

/// A pattern for device nodes (`/dev/char/MAJOR:MINOR`, `/dev/char/MAJOR:*`, and the block
/// forms) in the kernel's binary device keys (agent_common::contain::device_key); None for a
/// pattern that is not of those shapes (a subtree like `/dev/block/` is the same text).
fn device_form(text: &str) -> Option<Form> {
    use agent_common::contain::{DEVICE_BLOCK, DEVICE_CHAR, DEVICE_KEY_LEN, device_key_of};
    let (prefix, rest) = [DEVICE_CHAR, DEVICE_BLOCK]
        .into_iter()
        .find_map(|p| text.as_bytes().strip_prefix(p).map(|r| (p, r)))?;
    let rest = std::str::from_utf8(rest).ok()?;
    if rest.is_empty() || rest == "**" {
        return None;
    }
    let number = |s: &str| {
        (!s.is_empty() && s.len() <= 7 && s.chars().all(|c| c.is_ascii_digit()))
            .then(|| s.parse::<u32>().ok())
            .flatten()
            .filter(|n| *n <= 0xf_ffff)
    };
    let mut key = [0u8; DEVICE_KEY_LEN];
    let undecided = || Some(Form::Undecided(prefix.to_vec()));
    let Some((major, minor)) = rest.split_once(':') else {
        return undecided();
    };
    let Some(major) = number(major) else {
        return undecided();
    };
    if minor == "*" {
        let n = device_key_of(prefix, major, 0, &mut key);
        return Some(Form::LastSegment(key[..n - 4].to_vec()));
    }
    match number(minor) {
        Some(minor) => {
            let n = device_key_of(prefix, major, minor, &mut key);
            let mut b = key[..n].to_vec();
            b.push(0);
            Some(Form::Prefix(b))
        }
        None => undecided(),
    }
}

fn form(p: &PathPattern) -> Vec<Form> {
    let text = p.text();
    if let Some(f) = device_form(text) {
        return vec![f];
    }
    match p {
        PathPattern::Subtree(dir) => vec![
            fit(Form::Prefix(dir.as_bytes().to_vec()), PATH_KEY_LEN),
            fit(Form::Prefix(exact(dir.trim_end_matches('/'))), PATH_KEY_LEN),
        ],
        PathPattern::Glob { .. } => {
            let f = match text.find(WILDCARDS) {
                None => Form::Prefix(exact(text)),
                Some(i) => {
                    let (lit, wild) = text.split_at(i);
                    let lit_b = lit.as_bytes().to_vec();
                    if wild == "**" && lit.ends_with('/') {
                        Form::Prefix(lit_b)
                    } else if wild == "*" {
                        Form::LastSegment(lit_b)
                    } else if let Some(rest) = wild.strip_prefix('*').filter(|r| r.starts_with('/')) {
                        match fit(tail_form(rest), TAIL_KEY_LEN - 1) {
                            Form::Undecided(_) => Form::Undecided(lit_b),
                            t => Form::Segment(lit_b, Box::new(t)),
                        }
                    } else {
                        Form::Undecided(lit_b)
                    }
                }
            };
            vec![fit(f, PATH_KEY_LEN)]
        }
    }
}

fn rule(kind: u8, bytes: &[u8], index: u16) -> PathRule {
    PathRule {
        kind,
        // Components before a wildcard segment: the prefix ends with the `/` before it.
        depth: if kind == path_kind::SEGMENT {
            bytes
                .iter()
                .filter(|&&b| b == b'/')
                .count()
                .saturating_sub(1)
                .min(u8::MAX as usize) as u8
        } else {
            0
        },
        prefix_bytes: bytes.len() as u16,
        rule: index,
        _pad2: 0,
        fallback_bits: 0,
        tail_id: 0,
    }
}

/// Two patterns at the same key: a prefix covers everything; otherwise different conditions
/// cannot share one entry, and the kernel leaves the key to the daemon. The first rule in
/// file order decides: a conditional earlier rule over a later prefix holds only where its
/// condition does, which one entry cannot say (undecided, unless both are the same rule).
fn merge(old: &mut PathRule, new: PathRule) {
    let (first, second) = if new.rule < old.rule { (new, *old) } else { (*old, new) };
    old.rule = first.rule;
    old.kind = if first.kind == path_kind::PREFIX {
        path_kind::PREFIX
    } else if second.kind == path_kind::PREFIX {
        if first.rule == second.rule {
            path_kind::PREFIX
        } else {
            path_kind::UNDECIDED
        }
    } else if first.kind != second.kind {
        path_kind::UNDECIDED
    } else {
        first.kind
    };
}

/// Path entries of one owner: `(class, pattern, rule index)`.
fn paths(owner: u32, what: &str, patterns: &[(u8, &PathPattern, u16)], out: &mut Compiled) -> Result<(), CompileError> {
    let mut top: BTreeMap<(u8, Vec<u8>), PathRule> = BTreeMap::new();
    // (class, literal) -> local tail id; tail id -> its entries
    let mut tail_ids: BTreeMap<(u8, Vec<u8>), u32> = BTreeMap::new();
    let mut tails: BTreeMap<(u32, Vec<u8>), PathRule> = BTreeMap::new();
    for &(cls, p, index) in patterns {
        for f in form(p) {
            let (kind, bytes) = match f {
                Form::Prefix(b) => (path_kind::PREFIX, b),
                Form::LastSegment(b) => (path_kind::LAST_SEGMENT, b),
                Form::Undecided(b) => {
                    out.undecided.push(format!("{what}: {}", p.text()));
                    (path_kind::UNDECIDED, b)
                }
                Form::Segment(b, t) => {
                    let next = tail_ids.len() as u32 + out.tails.len() as u32;
                    let id = *tail_ids.entry((cls, b.clone())).or_insert(next);
                    let (tk, tb) = match *t {
                        Form::Prefix(tb) => (path_kind::PREFIX, tb),
                        Form::LastSegment(tb) => (path_kind::LAST_SEGMENT, tb),
                        _ => (path_kind::UNDECIDED, Vec::new()),
                    };
                    let new = rule(tk, &tb, index);
                    tails.entry((id, tb)).and_modify(|r| merge(r, new)).or_insert(new);
                    let mut r = rule(path_kind::SEGMENT, &b, index);
                    r.tail_id = id;
                    top.entry((cls, b)).and_modify(|o| merge(o, r)).or_insert(r);
                    continue;
                }
            };
            let new = rule(kind, &bytes, index);
            top.entry((cls, bytes)).and_modify(|r| merge(r, new)).or_insert(new);
        }
    }
    // Each entry falls back to the longest shorter entry of its class that is a prefix of it.
    let keys: Vec<(u8, Vec<u8>)> = top.keys().cloned().collect();
    for (cls, bytes) in &keys {
        let parent = keys
            .iter()
            .filter(|(c, b)| c == cls && b.len() < bytes.len() && bytes.starts_with(b))
            .max_by_key(|(_, b)| b.len());
        if let Some((_, pb)) = parent {
            top.get_mut(&(*cls, bytes.clone())).expect("listed").fallback_bits =
                PATH_KEY_HEAD_BITS + pb.len() as u32 * 8;
        }
    }
    // The first rule in file order decides, as in the engine; the kernel stops at the longest
    // entry. An enclosing prefix entry holds for every path a longer entry matches, and an
    // enclosing last-segment entry for those with no further `/`: an earlier rule of theirs is
    // the longer entry's rule. An earlier enclosing entry that holds only on a condition the
    // longer entry does not see (a segment, or undecided) leaves it to the daemon.
    for (cls, bytes) in &keys {
        let mut r = top[&(*cls, bytes.clone())];
        for (pc, pb) in &keys {
            if pc != cls || pb.len() >= bytes.len() || !bytes.starts_with(pb) {
                continue;
            }
            let p = top[&(*pc, pb.clone())];
            if p.rule >= r.rule {
                continue;
            }
            match p.kind {
                path_kind::PREFIX => r.rule = p.rule,
                path_kind::LAST_SEGMENT if !bytes[pb.len()..].contains(&b'/') => r.rule = p.rule,
                path_kind::LAST_SEGMENT => {}
                _ if r.kind != path_kind::UNDECIDED => {
                    r.kind = path_kind::UNDECIDED;
                    out.undecided.push(format!(
                        "{what}: {:?} lies under an earlier rule's pattern the kernel judges only on a condition",
                        String::from_utf8_lossy(bytes)
                    ));
                }
                _ => {}
            }
        }
        top.insert((*cls, bytes.clone()), r);
    }
    // The kernel judges a segment entry by its tail alone, with no fallback: one that has a
    // shorter entry to fall back to is left to the daemon.
    for (cls, bytes) in &keys {
        let r = top.get_mut(&(*cls, bytes.clone())).expect("listed");
        if r.kind == path_kind::SEGMENT && r.fallback_bits != 0 {
            r.kind = path_kind::UNDECIDED;
            out.undecided.push(format!(
                "{what}: wildcard segment after {:?} (inside another pattern's prefix)",
                String::from_utf8_lossy(bytes)
            ));
        }
    }
    // The kernel follows at most MAX_FALLBACKS steps.
    for (cls, bytes) in &keys {
        let mut depth = 0;
        let mut cur = top[&(*cls, bytes.clone())];
        while cur.fallback_bits != 0 {
            depth += 1;
            if depth > MAX_FALLBACKS {
                return Err(CompileError::TooDeep {
                    what: what.to_string(),
                    prefix: String::from_utf8_lossy(bytes).into_owned(),
                });
            }
            let len = ((cur.fallback_bits - PATH_KEY_HEAD_BITS) / 8) as usize;
            cur = top[&(*cls, bytes[..len].to_vec())];
        }
    }
    // A conditional tail enclosed by a prefix tail of the same segment is covered by it; one
    // enclosed by another conditional tail cannot be judged by one lookup.
    let tail_keys: Vec<(u32, Vec<u8>)> = tails.keys().cloned().collect();
    for (id, b) in &tail_keys {
        let enclosing: Vec<PathRule> = tail_keys
            .iter()
            .filter(|(i, pb)| i == id && pb.len() < b.len() && b.starts_with(pb))
            .map(|k| tails[k])
            .collect();
        if enclosing.is_empty() {
            continue;
        }
        let r = tails.get_mut(&(*id, b.clone())).expect("listed");
        if let Some(first) = enclosing
            .iter()
            .filter(|e| e.kind == path_kind::PREFIX)
            .map(|e| e.rule)
            .min()
        {
            r.kind = path_kind::PREFIX;
            r.rule = r.rule.min(first);
        } else if r.kind != path_kind::PREFIX {
            r.kind = path_kind::UNDECIDED;
        }
    }
    out.paths.extend(top.into_iter().map(|((cls, bytes), rule)| PathEntry {
        owner,
        class: cls,
        bytes,
        rule,
    }));
    out.tails.extend(
        tails
            .into_iter()
            .map(|((tail, bytes), rule)| TailEntry { tail, bytes, rule }),
    );
    Ok(())
}

fn ipproto(p: Proto) -> u8 {
    match p {
        Proto::Tcp => 6,
        Proto::Udp => 17,
    }
}

/// A network as an IPv6 network (IPv4 mapped), and whether it came from IPv4.
fn as_v6(net: IpNet) -> ([u8; 16], u8, bool) {
    match net {
        IpNet::V4(n) => (n.network().to_ipv6_mapped().octets(), 96 + n.prefix_len(), true),
        IpNet::V6(n) => (n.network().octets(), n.prefix_len(), false),
    }
}

fn contains(outer: ([u8; 16], u8), inner: ([u8; 16], u8)) -> bool {
    if outer.1 > inner.1 {
        return false;
    }
    let (a, b) = (u128::from_be_bytes(outer.0), u128::from_be_bytes(inner.0));
    let mask = if outer.1 == 0 {
        0
    } else {
        u128::MAX << (128 - outer.1 as u32)
    };
    a & mask == b & mask
}

/// The IPv4-mapped range as an IPv6 network.
const MAPPED: ([u8; 16], u8) = ([0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 0, 0, 0, 0], 96);

/// Net entries of one owner: `(key protocol, network, ports, rule index)`, the key protocol
/// being the IP protocol, plus [`LISTEN`] for the `listen` clause. Each network gets the
/// ranges of every network (of the same address family) that contains it, in rule order, so
/// the kernel's longest match alone decides.
fn nets(
    owner: u32,
    what: &str,
    rules: &[(u8, IpNet, (u16, u16), u16)],
    out: &mut Compiled,
) -> Result<(), CompileError> {
    let mut keys: BTreeSet<(u8, [u8; 16], u8, bool)> = BTreeSet::new();
    for &(proto, net, _, _) in rules {
        let (a, b, v4) = as_v6(net.trunc());
        keys.insert((proto, a, b, v4));
        // An IPv6 network over the mapped range must not let IPv4 through (the engine
        // matches IPv4 only against IPv4 entries): the mapped range gets its own entry.
        if !v4 && contains((a, b), MAPPED) {
            keys.insert((proto, MAPPED.0, MAPPED.1, true));
        }
    }
    for (proto, addr, bits, v4) in keys {
        let mut ranges: Vec<PortRange> = Vec::new();
        for &(p, net, (lo, hi), index) in rules {
            let (a, b, nv4) = as_v6(net.trunc());
            if p != proto || nv4 != v4 || !contains((a, b), (addr, bits)) {
                continue;
            }
            ranges.push(PortRange {
                lo,
                hi,
                rule: index,
                _pad: 0,
            });
        }
        ranges.sort_by_key(|r| (r.rule, r.lo, r.hi));
        // Merge overlapping or adjacent ranges of the same rule.
        let mut merged: Vec<PortRange> = Vec::new();
        for r in ranges {
            match merged.last_mut() {
                Some(m) if m.rule == r.rule && r.lo as u32 <= m.hi as u32 + 1 => m.hi = m.hi.max(r.hi),
                _ => merged.push(r),
            }
        }
        if merged.len() > MAX_PORT_RANGES {
            return Err(CompileError::TooManyPorts {
                what: what.to_string(),
                net: format!("{}/{bits}", std::net::Ipv6Addr::from(addr)),
            });
        }
        let mut rule = NetRule {
            count: merged.len() as u32,
            _pad: 0,
            ranges: [PortRange::default(); MAX_PORT_RANGES],
        };
        rule.ranges[..merged.len()].copy_from_slice(&merged);
        out.nets.push(NetEntry {
            owner,
            proto,
            addr,
            bits,
            rule,
        });
    }
    Ok(())
}

/// The networks of a connect rule, host names through the scope's last resolution.
fn networks(rule: &ConnectRule, resolved: &[(String, Vec<IpAddr>)]) -> Vec<IpNet> {
    match &rule.host {
        Host::Net(n) => vec![*n],
        Host::Name(name) => resolved
            .iter()
            .filter(|(n, _)| n == name)
            .flat_map(|(_, ips)| ips.iter().map(|ip| IpNet::from(*ip)))
            .collect(),
    }
}

/// The path and net entries of one owner's patterns (every entry naming rule `index`).
fn owner_entries(
    owner: u32,
    what: &str,
    m: &CompiledScope,
    index: u16,
    out: &mut Compiled,
) -> Result<(), CompileError> {
    let mut p: Vec<(u8, &PathPattern, u16)> = Vec::new();
    p.extend(m.exec.iter().map(|x| (class::EXEC, x, index)));
    p.extend(m.write.iter().map(|x| (class::WRITE, x, index)));
    p.extend(m.unix.iter().map(|x| (class::UNIX, x, index)));
    paths(owner, what, &p, out)?;
    let mut n = Vec::new();
    push_nets(m, index, &mut n);
    nets(owner, what, &n, out)
}

/// The networks of `m`'s `connect` and `listen` rules, as net entry inputs.
fn push_nets(m: &CompiledScope, index: u16, out: &mut Vec<(u8, IpNet, (u16, u16), u16)>) {
    for (rules, flag) in [(&m.connect, 0), (&m.listen, LISTEN)] {
        for r in rules {
            for net in networks(r, &m.resolved) {
                // A rule on an IPv4 address also holds for its IPv4-mapped IPv6 form: both
                // are the same kernel key.
                out.push((ipproto(r.proto) | flag, net, r.ports, index));
            }
        }
    }
}

/// A credential's scope, owned by task `task`.
pub fn scope(task: u32, scope: &CompiledScope) -> Result<Compiled, CompileError> {
    let mut out = Compiled::default();
    owner_entries(task, "scope", scope, 0, &mut out)?;
    if !scope.grants.is_empty() {
        let mut g = Grants::default();
        for grant in &scope.grants {
            g.kinds |= 1 << grant.kind();
        }
        out.grants = Some(g);
    }
    Ok(out)
}

/// The guardrails that hold for processes of guard set `set` (0: those for every agent; see
/// [`agent_common::contain::guard_owner`]), owned by that set's owner, each entry naming its
/// guardrail's index.
pub fn guardrails(rules: &Rules, set: u32) -> Result<Compiled, CompileError> {
    let owner = agent_common::contain::guard_owner(set);
    let mut p: Vec<(u8, &PathPattern, u16)> = Vec::new();
    let mut n = Vec::new();
    let mut forbidden = Grants::default();
    for (i, (_, _, _, m)) in rules.guardrails().enumerate() {
        if !rules.holds_in(i, set) {
            continue;
        }
        let i = i as u16;
        p.extend(m.exec.iter().map(|x| (class::EXEC, x, i)));
        p.extend(m.write.iter().map(|x| (class::WRITE, x, i)));
        p.extend(m.unix.iter().map(|x| (class::UNIX, x, i)));
        push_nets(m, i, &mut n);
        // The first guardrail (file order) forbidding a kind decides it.
        for g in &m.grants {
            let k = g.kind();
            if forbidden.kinds & (1 << k) == 0 {
                forbidden.kinds |= 1 << k;
                forbidden.rule[k as usize] = i;
            }
        }
    }
    let mut out = Compiled::default();
    paths(owner, "guardrails", &p, &mut out)?;
    nets(owner, "guardrails", &n, &mut out)?;
    out.grants = (forbidden.kinds != 0).then_some(forbidden);
    Ok(out)
}

/// Writes that are never a violation: the pseudo devices of the credential format, as the
/// kernel judges device nodes (`/dev/char/MAJOR:MINOR`; terminals by their majors), and by
/// their usual names for kernels where a node cannot be told by its device.
pub fn exempt() -> Compiled {
    let mut out = Compiled::default();
    let owner = agent_common::contain::EXEMPT;
    for d in PSEUDO_DEVICE_IDS.iter().chain(PSEUDO_DEVICES) {
        let bytes = match device_form(d) {
            Some(Form::Prefix(b)) => b,
            _ => exact(d),
        };
        out.paths.push(PathEntry {
            owner,
            class: class::WRITE,
            rule: rule(path_kind::PREFIX, &bytes, 0),
            bytes,
        });
    }
    // /dev/pts/N and /dev/char/136:N ... 143:N: last-segment wildcards (digits are checked
    // by the daemon's engine; any name there is a terminal).
    let pts = b"/dev/pts/".to_vec();
    out.paths.push(PathEntry {
        owner,
        class: class::WRITE,
        rule: rule(path_kind::LAST_SEGMENT, &pts, 0),
        bytes: pts,
    });
    for m in PTS_MAJORS {
        let Some(Form::LastSegment(t)) = device_form(&format!("/dev/char/{m}:*")) else {
            unreachable!("a terminal major is a device pattern")
        };
        out.paths.push(PathEntry {
            owner,
            class: class::WRITE,
            rule: rule(path_kind::LAST_SEGMENT, &t, 0),
            bytes: t,
        });
    }
    out
}

pub fn verdict(a: Option<(Action, Mode)>) -> Verdict {
    match a {
        None => Verdict::default(),
        Some((a, m)) => Verdict {
            action: match a {
                Action::Alert => action::ALERT,
                Action::Deny => action::DENY,
                Action::Kill => action::KILL,
                Action::KillTree => action::KILL_TREE,
            },
            enforce: u8::from(m == Mode::Enforce),
            _pad: 0,
        },
    }
}

/// POSTURE (unbound, expired, scope, unjudged) and GUARD_VERDICTS, in index order.
pub fn verdicts(rules: &Rules) -> ([Verdict; 4], Vec<Verdict>) {
    (
        rules.postures().kernel_order().map(verdict),
        rules.guardrails().map(|(_, a, m, _)| verdict(Some((a, m)))).collect(),
    )
}

#[cfg(test)]
mod tests {
    //! The kernel's lookup, simulated over the compiled entries, must agree with the engine's
    //! glob matching on every path where the kernel decides.
    use super::*;
    use crate::credentials::scope::ScopeSpec;

    /// Longest-prefix lookup as the kernel does it (agent-ebpf/src/contain.rs).
    fn lpm<'a, T>(entries: impl Iterator<Item = (&'a [u8], T)>, key: &[u8], bits: usize) -> Option<T> {
        entries
            .filter(|(b, _)| b.len() * 8 <= bits && key.starts_with(b))
            .max_by_key(|(b, _)| b.len())
            .map(|(_, t)| t)
    }

    #[derive(Debug, PartialEq)]
    enum Sim {
        Yes,
        No,
        Undecided,
    }

    fn kernel_match(c: &Compiled, owner: u32, cls: u8, path: &str) -> Sim {
        kernel_hit(c, owner, cls, path).0
    }

    /// The kernel's answer and, when it matches, the rule of the entry that matched.
    fn kernel_hit(c: &Compiled, owner: u32, cls: u8, path: &str) -> (Sim, Option<u16>) {
        let mut key = path.as_bytes().to_vec();
        key.push(0);
        let leaf = path.rfind('/').unwrap();
        let mut bits = key.len() * 8;
        for _ in 0..=MAX_FALLBACKS {
            let found = lpm(
                c.paths
                    .iter()
                    .filter(|e| e.owner == owner && e.class == cls)
                    .map(|e| (e.bytes.as_slice(), e.rule)),
                &key,
                bits,
            );
            let Some(r) = found else { return (Sim::No, None) };
            let ok = match r.kind {
                path_kind::PREFIX => true,
                path_kind::LAST_SEGMENT => leaf < r.prefix_bytes as usize,
                path_kind::SEGMENT => {
                    let start = r.prefix_bytes as usize;
                    let i = path[start..].find('/').map(|j| start + j).unwrap_or(path.len());
                    // The kernel finds `i` from component boundaries: the tail starts at the
                    // component after the `depth + 1` first ones.
                    let bounds: Vec<usize> = path.match_indices('/').map(|(k, _)| k).collect();
                    let by_depth = bounds.get(r.depth as usize + 1).copied().unwrap_or(path.len());
                    assert_eq!(by_depth, i, "depth {} of {:?} on {path}", r.depth, r);
                    let mut tkey = path.as_bytes()[i..].to_vec();
                    tkey.push(0);
                    let t = lpm(
                        c.tails
                            .iter()
                            .filter(|t| t.tail == r.tail_id)
                            .map(|t| (t.bytes.as_slice(), t.rule)),
                        &tkey,
                        tkey.len() * 8,
                    );
                    return match t.map(|t| t.kind) {
                        Some(path_kind::PREFIX) => (Sim::Yes, t.map(|t| t.rule)),
                        Some(path_kind::LAST_SEGMENT) if leaf >= i && leaf - i < t.unwrap().prefix_bytes as usize => {
                            (Sim::Yes, t.map(|t| t.rule))
                        }
                        Some(path_kind::UNDECIDED) => (Sim::Undecided, None),
                        _ => (Sim::No, None),
                    };
                }
                path_kind::UNDECIDED => return (Sim::Undecided, None),
                _ => false,
            };
            if ok {
                return (Sim::Yes, Some(r.rule));
            }
            if r.fallback_bits == 0 {
                return (Sim::No, None);
            }
            bits = (r.fallback_bits - PATH_KEY_HEAD_BITS) as usize;
        }
        (Sim::No, None)
    }

    fn write_scope(patterns: &[&str]) -> CompiledScope {
        CompiledScope::compile(&ScopeSpec {
            write: patterns.iter().map(|s| s.to_string()).collect(),
            ..Default::default()
        })
        .unwrap()
    }

    const PATHS: &[&str] = &[
        "/etc/passwd",
        "/etc",
        "/etcx",
        "/etc/ssh/sshd_config",
        "/srv/task/a",
        "/srv/task",
        "/srv/task/deep/er/file",
        "/srv/taskx",
        "/tmp/job-1",
        "/tmp/job-",
        "/tmp/job-1/x",
        "/tmp/jo",
        "/home/alice/.ssh/id_rsa",
        "/home/alice/.ssh",
        "/home/alice/.sshx",
        "/home/alice/x/.ssh/id",
        "/home/bob/.ssh/authorized_keys",
        "/home/bob/notes",
        "/root/.ssh/k",
        "/var/log/a.log",
        "/var/log/sub/a.log",
        "/opt/a/b/c",
        "/usr/bin/python3",
        "/usr/bin/python3.11",
        "/usr/bin/python3/x",
    ];

    /// For every pattern set, the kernel simulation says what the engine says, or undecided
    /// (then the daemon decides with the engine).
    #[test]
    fn kernel_lookup_agrees_with_the_engine() {
        let sets: &[&[&str]] = &[
            &["/etc/", "/boot/", "/root/.ssh/", "/home/*/.ssh", "/home/*/.ssh/**"],
            &["/srv/task/", "/tmp/job-*", "/var/log/*.log"],
            &["/srv/task/**", "/usr/bin/python3*", "/opt/a/"],
            &["/home/*/notes", "/home/alice/", "/tmp/job-1"],
            &["/opt/a/**/c", "/usr/bin/python3?", "/srv/{task,other}/x"],
            &["/"],
        ];
        for set in sets {
            let scope = write_scope(set);
            let c = super::scope(5, &scope).unwrap();
            for path in PATHS {
                let engine = scope.matches_write(path);
                let kernel = kernel_match(&c, 5, class::WRITE, path);
                match kernel {
                    Sim::Undecided => {}
                    Sim::Yes => assert!(engine, "{set:?}: kernel matches {path}, the engine does not"),
                    Sim::No => assert!(!engine, "{set:?}: kernel misses {path}, the engine matches"),
                }
            }
        }
    }

    #[test]
    fn what_the_kernel_cannot_judge_is_undecided_not_guessed() {
        let scope = write_scope(&["/opt/a/**/c", "/usr/bin/python3?"]);
        let c = super::scope(5, &scope).unwrap();
        assert_eq!(kernel_match(&c, 5, class::WRITE, "/opt/a/b/c"), Sim::Undecided);
        assert_eq!(kernel_match(&c, 5, class::WRITE, "/usr/bin/python3x"), Sim::Undecided);
        assert_eq!(kernel_match(&c, 5, class::WRITE, "/etc/passwd"), Sim::No);
        assert_eq!(c.undecided.len(), 2, "{:?}", c.undecided);
        // The shipped guardrails are all judged by the kernel.
        let scope = write_scope(&["/etc/", "/boot/", "/root/.ssh/", "/home/*/.ssh", "/home/*/.ssh/**"]);
        let c = super::scope(5, &scope).unwrap();
        assert!(c.undecided.is_empty(), "{:?}", c.undecided);
        assert_eq!(
            kernel_match(&c, 5, class::WRITE, "/home/bob/.ssh/authorized_keys"),
            Sim::Yes
        );
        assert_eq!(kernel_match(&c, 5, class::WRITE, "/home/bob/notes"), Sim::No);
    }

    fn net_lookup(c: &Compiled, owner: u32, proto: u8, ip: IpAddr, port: u16) -> Option<u16> {
        let addr = match ip {
            IpAddr::V4(v4) => v4.to_ipv6_mapped().octets(),
            IpAddr::V6(v6) => v6.octets(),
        };
        let e = c
            .nets
            .iter()
            .filter(|e| e.owner == owner && e.proto == proto && contains((e.addr, e.bits), (addr, 128)))
            .max_by_key(|e| e.bits)?;
        e.rule.ranges[..e.rule.count as usize]
            .iter()
            .find(|r| r.lo <= port && port <= r.hi)
            .map(|r| r.rule)
    }

    #[test]
    fn networks_carry_the_ports_of_every_network_around_them() {
        let scope = CompiledScope::compile(&ScopeSpec {
            connect: vec![
                "tcp:10.0.0.0/8:443".into(),
                "tcp:10.1.0.0/16:80".into(),
                "udp:0.0.0.0/0:53".into(),
                "tcp:::/0:22".into(),
            ],
            ..Default::default()
        })
        .unwrap();
        let c = super::scope(9, &scope).unwrap();
        let cases: &[(&str, u8, u16)] = &[
            ("10.1.2.3", 6, 443),
            ("10.1.2.3", 6, 80),
            ("10.2.2.3", 6, 80),
            ("10.2.2.3", 6, 443),
            ("8.8.8.8", 17, 53),
            ("8.8.8.8", 6, 53),
            ("8.8.8.8", 6, 22),
            ("2001:db8::1", 6, 22),
            ("2001:db8::1", 17, 53),
            ("::ffff:10.1.2.3", 6, 80),
        ];
        for &(ip, proto, port) in cases {
            let ip: IpAddr = ip.parse().unwrap();
            let p = if proto == 6 { Proto::Tcp } else { Proto::Udp };
            let shown = match ip {
                IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
                v4 => v4,
            };
            let engine = scope.matches_connect(p, shown, port);
            let kernel = net_lookup(&c, 9, proto, ip, port).is_some();
            assert_eq!(kernel, engine, "{ip} {proto} {port}");
        }
    }

    #[test]
    fn guardrails_first_in_file_order_and_mapped_forms() {
        let spec: crate::policy::engine::ContainmentSpec = serde_yaml_ng::from_str(
            r#"
mode: enforce
guardrails:
  - id: meta
    action: kill
    connect: ["tcp:169.254.169.254:*", "udp:169.254.169.254:*"]
  - id: wide
    action: alert
    mode: observe
    connect: ["tcp:169.254.0.0/16:*"]
    write: ["/etc/"]
"#,
        )
        .unwrap();
        let rules = Rules::compile(&spec).unwrap();
        let c = guardrails(&rules, 0).unwrap();
        let g = agent_common::contain::GUARDRAILS;
        assert_eq!(net_lookup(&c, g, 6, "169.254.169.254".parse().unwrap(), 80), Some(0));
        assert_eq!(
            net_lookup(&c, g, 6, "::ffff:169.254.169.254".parse().unwrap(), 80),
            Some(0)
        );
        assert_eq!(net_lookup(&c, g, 6, "169.254.1.1".parse().unwrap(), 80), Some(1));
        assert_eq!(net_lookup(&c, g, 6, "10.0.0.1".parse().unwrap(), 80), None);
        assert_eq!(kernel_match(&c, g, class::WRITE, "/etc/hosts"), Sim::Yes);
        let (postures, guards) = verdicts(&rules);
        assert_eq!(guards[0].action, action::KILL);
        assert_eq!(guards[0].enforce, 1);
        assert_eq!(guards[1].enforce, 0);
        assert_eq!(postures[0], Verdict::default(), "no unbound posture: nothing to do");
    }

    /// Found by `guardrail_paths_decide_as_the_engine`: a longer entry named its own, later
    /// guardrail where an earlier one holds for every path under it.
    #[test]
    fn the_first_guardrail_in_file_order_decides_in_the_kernel_too() {
        let spec: crate::policy::engine::ContainmentSpec = serde_yaml_ng::from_str(
            "mode: enforce\nguardrails:\n  - {id: a, action: kill, write: [\"/etc/\", \"/var/x*\"]}\n  - {id: b, action: alert, mode: observe, write: [\"/etc/passwd\", \"/var/xy\", \"/var/x/y\"]}\n",
        )
        .unwrap();
        let rules = Rules::compile(&spec).unwrap();
        let c = guardrails(&rules, 0).unwrap();
        let g = agent_common::contain::GUARDRAILS;
        assert_eq!(kernel_hit(&c, g, class::WRITE, "/etc/passwd"), (Sim::Yes, Some(0)));
        assert_eq!(kernel_hit(&c, g, class::WRITE, "/var/xy"), (Sim::Yes, Some(0)));
        assert_eq!(kernel_hit(&c, g, class::WRITE, "/var/x/y"), (Sim::Yes, Some(1)));
        // Two guardrails under one wildcard segment: each tail names its own (the kernel read
        // the segment entry's rule, the first of them, for both).
        let spec: crate::policy::engine::ContainmentSpec = serde_yaml_ng::from_str(
            "mode: enforce\nguardrails:\n  - {id: a, action: kill, write: [\"/home/*/.ssh/**\"]}\n  - {id: b, action: alert, write: [\"/home/*/notes\"]}\n",
        )
        .unwrap();
        let c = guardrails(&Rules::compile(&spec).unwrap(), 0).unwrap();
        assert_eq!(kernel_hit(&c, g, class::WRITE, "/home/bob/notes"), (Sim::Yes, Some(1)));
        assert_eq!(kernel_hit(&c, g, class::WRITE, "/home/bob/.ssh/k"), (Sim::Yes, Some(0)));
    }

    #[test]
    fn too_many_port_ranges_is_a_clear_error() {
        let scope = CompiledScope::compile(&ScopeSpec {
            connect: (0..20).map(|i| format!("tcp:10.0.0.1:{}", 1000 + 2 * i)).collect(),
            ..Default::default()
        })
        .unwrap();
        let e = super::scope(1, &scope).unwrap_err();
        assert!(e.to_string().contains("more than 16 port ranges"), "{e}");
    }

    #[test]
    fn pseudo_devices_are_exempt() {
        let c = exempt();
        let o = agent_common::contain::EXEMPT;
        assert_eq!(kernel_match(&c, o, class::WRITE, "/dev/null"), Sim::Yes);
        assert_eq!(kernel_match(&c, o, class::WRITE, "/dev/pts/3"), Sim::Yes);
        assert_eq!(kernel_match(&c, o, class::WRITE, "/dev/sda"), Sim::No);
    }

    /// Properties over random scopes, guardrails and actions: where the kernel decides, it
    /// decides as the engine does.
    mod properties {
        use proptest::prelude::*;

        use super::*;
        use crate::policy::engine::{Attempt, Credential, WritePath};

        const SEGMENTS: &[&str] = &["a", "b", "ab", "x.y", "a*", "abc"];

        /// A path pattern: literal segments, one of them maybe a wildcard form, and an end
        /// that is a name, a subtree `/`, or `/**`.
        fn pattern() -> impl Strategy<Value = String> {
            let seg = prop::sample::select(&SEGMENTS[..4]);
            let wild = prop::sample::select(&["*", "a*", "?", "*b", "{a,b}", "[ab]", "**"][..]);
            (
                prop::collection::vec(seg, 1..4),
                prop::option::of((0usize..4, wild)),
                0u8..3,
            )
                .prop_map(|(mut segs, w, end)| {
                    if let Some((i, w)) = w {
                        let i = i % segs.len();
                        segs[i] = w;
                    }
                    let mut p = format!("/{}", segs.join("/"));
                    match end {
                        1 if !p.contains(['*', '?', '[', '{']) => p.push('/'),
                        2 => p.push_str("/**"),
                        _ => {}
                    }
                    p
                })
        }

        fn path() -> impl Strategy<Value = String> {
            prop::collection::vec(prop::sample::select(SEGMENTS), 1..5).prop_map(|s| format!("/{}", s.join("/")))
        }

        fn agree(kernel: Sim, engine: bool, what: &str) -> Result<(), TestCaseError> {
            match kernel {
                Sim::Undecided => Ok(()),
                Sim::Yes => {
                    prop_assert!(engine, "{what}: the kernel matches, the engine does not");
                    Ok(())
                }
                Sim::No => {
                    prop_assert!(!engine, "{what}: the kernel misses, the engine matches");
                    Ok(())
                }
            }
        }

        proptest! {
            #![proptest_config(ProptestConfig { cases: 2000, failure_persistence: None, ..ProptestConfig::default() })]

            /// A scope's write patterns, compiled to path entries: the kernel's lookup
            /// agrees with the engine's glob matching on every path it decides.
            #[test]
            fn scope_paths_decide_as_the_engine(patterns in prop::collection::vec(pattern(), 1..5), paths in prop::collection::vec(path(), 1..8)) {
                let scope = write_scope(&patterns.iter().map(String::as_str).collect::<Vec<_>>());
                let c = match super::super::scope(5, &scope) {
                    Ok(c) => c,
                    Err(CompileError::TooDeep { .. }) => return Ok(()),
                    Err(e) => panic!("{e}"),
                };
                for p in &paths {
                    agree(kernel_match(&c, 5, class::WRITE, p), scope.matches_write(p), &format!("{patterns:?} {p}"))?;
                }
            }

            /// Guardrails of random write patterns: where the kernel decides, a guardrail
            /// holds for a path exactly when the engine's evaluation names one.
            #[test]
            fn guardrail_paths_decide_as_the_engine(patterns in prop::collection::vec(pattern(), 1..5), paths in prop::collection::vec(path(), 1..8)) {
                let yaml = patterns
                    .iter()
                    .enumerate()
                    .map(|(i, p)| format!("  - {{id: g{i}, action: deny, write: [\"{p}\"]}}\n"))
                    .collect::<String>();
                let spec: crate::policy::engine::ContainmentSpec =
                    serde_yaml_ng::from_str(&format!("mode: enforce\nguardrails:\n{yaml}")).unwrap();
                let rules = Rules::compile(&spec).unwrap();
                let c = match guardrails(&rules, 0) {
                    Ok(c) => c,
                    Err(CompileError::TooDeep { .. }) => return Ok(()),
                    Err(e) => panic!("{e}"),
                };
                let scope = write_scope(&["/"]);
                for p in &paths {
                    let a = Attempt::Write { paths: vec![WritePath::object(p.clone())] };
                    let d = rules.evaluate(&a, Credential::Bound { state: crate::credentials::tasks::CredState::Valid, scope: &scope }, 0);
                    let engine = d.rule.strip_prefix("guardrail:g").map(|i| i.parse::<u16>().unwrap());
                    let (kernel, rule) = kernel_hit(&c, agent_common::contain::GUARDRAILS, class::WRITE, p);
                    agree(kernel, engine.is_some(), &format!("{patterns:?} {p}"))?;
                    if rule.is_some() {
                        prop_assert_eq!(rule, engine, "{:?} {}: the kernel names another guardrail than the engine (file order)", patterns, p);
                    }
                }
            }

            /// Connect rules over IPv4, IPv6 and IPv4-mapped networks: the kernel's net
            /// lookup (addresses as the kernel sees them, IPv4 mapped) says what the engine
            /// says for the same address raw or canonical, and names the first rule that
            /// allows it.
            #[test]
            fn networks_decide_as_the_engine_raw_or_canonical(
                rules in prop::collection::vec((any::<bool>(), prop::sample::select(NETS), 0u16..4, 0u16..4), 1..5),
                probes in prop::collection::vec((any::<bool>(), prop::sample::select(IPS), 0u16..6), 1..8),
            ) {
                let connect: Vec<String> = rules
                    .iter()
                    .map(|(tcp, net, lo, span)| {
                        let (lo, hi) = (lo * 100, lo * 100 + span * 100);
                        format!("{}:{net}:{lo}-{hi}", if *tcp { "tcp" } else { "udp" })
                    })
                    .collect();
                let scope = CompiledScope::compile(&ScopeSpec { connect: connect.clone(), ..Default::default() }).unwrap();
                let c = match super::super::scope(9, &scope) {
                    Ok(c) => c,
                    Err(CompileError::TooManyPorts { .. }) => return Ok(()),
                    Err(e) => panic!("{e}"),
                };
                for &(tcp, ip, port) in &probes {
                    let raw: IpAddr = ip.parse().unwrap();
                    let port = port * 100;
                    let (proto, p) = if tcp { (6, Proto::Tcp) } else { (17, Proto::Udp) };
                    let canon = match raw {
                        IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(raw),
                        v4 => v4,
                    };
                    let cred = Credential::Bound { state: crate::credentials::tasks::CredState::Valid, scope: &scope };
                    let rules_none = Rules::compile(&Default::default()).unwrap();
                    let by_raw = rules_none.evaluate(&Attempt::Connect { proto: p, ip: raw, port }, cred, 0);
                    let by_canon = rules_none.evaluate(&Attempt::Connect { proto: p, ip: canon, port }, cred, 0);
                    prop_assert_eq!(&by_raw, &by_canon, "{} raw and canonical", raw);
                    let engine = scope.matches_connect(p, canon, port);
                    prop_assert_eq!(by_raw.action.is_none(), engine);
                    let kernel = net_lookup(&c, 9, proto, raw, port);
                    prop_assert_eq!(kernel, net_lookup(&c, 9, proto, canon, port), "the kernel sees {} and {} alike", raw, canon);
                    prop_assert_eq!(kernel.is_some(), engine, "{:?} {} {}/{}", connect, raw, proto, port);
                }
            }
        }

        const NETS: &[&str] = &[
            "10.0.0.0/8",
            "10.1.0.0/16",
            "10.1.2.3",
            "0.0.0.0/0",
            "[::/0]",
            "[::ffff:0:0/96]",
            "[::ffff:10.0.0.0/104]",
            "[2001:db8::/32]",
            "[::1]",
        ];
        const IPS: &[&str] = &[
            "10.1.2.3",
            "10.2.0.1",
            "8.8.8.8",
            "::ffff:10.1.2.3",
            "::ffff:8.8.8.8",
            "::1",
            "2001:db8::5",
            "::ffff:0:0",
        ];
    }
}
