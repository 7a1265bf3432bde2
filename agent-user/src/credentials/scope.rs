//! A task credential's `scope`: parsed and compiled once, when the credential is bound, so a
//! bad pattern is refused then (never at the first action); then checked per action by pure
//! functions.
//!
//! ```json
//! {"exec":    ["/usr/bin/git", "/usr/bin/python3*", "/opt/tools/**"],
//!  "connect": ["tcp:127.0.0.1:8080", "tcp:10.0.0.0/8:443", "tcp:[::1]:9000-9100", "udp:0.0.0.0/0:53",
//!              "tcp:api.example.com:443"],
//!  "write":   ["/srv/task-42/", "/tmp/task-42-*"]}
//! ```
//! `exec` and `write`: absolute path patterns; `*` matches within one path segment, `**` across
//! segments, `?` one character, and a trailing `/` means the whole subtree. A device node is
//! written as the device it names: `/dev/char/MAJOR:MINOR` or `/dev/block/MAJOR:MINOR`.
//! `connect`: `PROTO:HOST:PORTS` with PROTO `tcp` or `udp`, HOST an IP address, a CIDR network
//! (IPv6 in brackets) or a host name (resolved when the credential is bound, and again on a
//! timer), PORTS a port or `LOW-HIGH`; or a Unix socket, `unix:/PATH` (a path pattern: the
//! socket file the kernel resolves the name to) or `unix:@NAME` (an abstract name, `*` and `?`
//! allowed). `listen`: `PROTO:HOST:PORTS` as in `connect`, HOST the local address bound
//! (`0.0.0.0/0` also covers the wildcard address, `127.0.0.1` does not; port 0 is a port the
//! kernel picks). `sockets`: the socket kinds the task may create, of `raw`, `packet`, `icmp`,
//! `vsock`. `io_uring`: `true` lets the task use io_uring where no BPF LSM hook judges what a
//! ring does.
use std::net::IpAddr;

use globset::{GlobBuilder, GlobMatcher};
use ipnet::IpNet;
use serde::{Deserialize, Serialize};

/// Limits that keep a hostile credential from costing the daemon much.
pub const MAX_ENTRIES: usize = 256;
pub const MAX_PATTERN_LEN: usize = 1024;

/// The scope as written in the credential.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScopeSpec {
    #[serde(default)]
    pub exec: Vec<String>,
    #[serde(default)]
    pub connect: Vec<String>,
    #[serde(default)]
    pub write: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub listen: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub sockets: Vec<String>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub io_uring: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ScopeError {
    #[error("scope.{class}[{index}] {pattern:?}: {reason}")]
    Pattern {
        class: &'static str,
        index: usize,
        pattern: String,
        reason: String,
    },
    #[error("scope.{class} has {count} entries; at most {MAX_ENTRIES} are allowed")]
    TooMany { class: &'static str, count: usize },
}

/// One `exec`/`write` pattern.
#[derive(Debug, Clone)]
pub enum PathPattern {
    /// A trailing `/`: this directory and everything under it.
    Subtree(String),
    /// A path with `*`, `**` or `?` (or none: an exact path).
    Glob { text: String, matcher: GlobMatcher },
}

impl PathPattern {
    pub fn text(&self) -> &str {
        match self {
            PathPattern::Subtree(t) | PathPattern::Glob { text: t, .. } => t,
        }
    }

    pub fn matches(&self, path: &str) -> bool {
        match self {
            PathPattern::Subtree(dir) => path.starts_with(dir.as_str()) || path == dir.trim_end_matches('/'),
            PathPattern::Glob { matcher, .. } => matcher.is_match(path),
        }
    }

    fn is_literal(&self) -> bool {
        matches!(self, PathPattern::Glob { text, .. } if !text.contains(['*', '?', '[', '{']))
    }

    /// Is every path this pattern matches also matched by `parent`? Conservative: `false` when
    /// it cannot tell (a delegation is then refused, never wrongly allowed).
    pub fn within(&self, parent: &PathPattern) -> bool {
        if self.text() == parent.text() {
            return true;
        }
        match parent {
            PathPattern::Subtree(dir) => self.text().starts_with(dir.as_str()),
            PathPattern::Glob { text, matcher } => {
                if self.is_literal() {
                    return matcher.is_match(self.text());
                }
                // "/a/b/**" covers any pattern under "/a/b/".
                text.strip_suffix("**")
                    .filter(|prefix| prefix.ends_with('/') && !prefix.contains(['*', '?', '[', '{']))
                    .is_some_and(|prefix| self.text().starts_with(prefix))
            }
        }
    }
}

/// The path patterns of several owners (the guardrails of a rule set), compiled into one
/// matcher: a path is split into its parts once and tested against every glob at once, instead
/// of once per pattern. Gives the same answers as [`PathPattern::matches`] on each pattern.
#[derive(Debug, Clone)]
pub struct PathIndex {
    /// `Subtree` patterns: the directory (with its `/`) and its owner.
    subtrees: Vec<(String, usize)>,
    /// The `Glob` patterns, all at once; None: the set could not be built (too large a
    /// regex), and `globs` are matched one by one.
    set: Option<globset::GlobSet>,
    /// Each glob's matcher and owner, in the set's order.
    globs: Vec<(GlobMatcher, usize)>,
}

impl PathIndex {
    /// The patterns of each owner, the owner's index first.
    pub fn new<'a>(lists: impl IntoIterator<Item = (usize, &'a [PathPattern])>) -> PathIndex {
        let mut subtrees = Vec::new();
        let mut globs = Vec::new();
        for (owner, patterns) in lists {
            for p in patterns {
                match p {
                    PathPattern::Subtree(dir) => subtrees.push((dir.clone(), owner)),
                    PathPattern::Glob { matcher, .. } => globs.push((matcher.clone(), owner)),
                }
            }
        }
        let mut b = globset::GlobSetBuilder::new();
        for (m, _) in &globs {
            b.add(m.glob().clone());
        }
        PathIndex {
            subtrees,
            set: b.build().ok(),
            globs,
        }
    }

    /// The owners with a pattern that matches `path`, ascending and each once, into `out`
    /// (cleared first).
    pub fn owners(&self, path: &str, out: &mut Vec<usize>) {
        out.clear();
        for (dir, owner) in &self.subtrees {
            if path.starts_with(dir.as_str()) || path == dir.trim_end_matches('/') {
                out.push(*owner);
            }
        }
        match &self.set {
            Some(set) if !self.globs.is_empty() => {
                let mut hits = Vec::new();
                set.matches_into(path, &mut hits);
                out.extend(hits.into_iter().map(|i| self.globs[i].1));
            }
            Some(_) => {}
            None => out.extend(self.globs.iter().filter(|(m, _)| m.is_match(path)).map(|(_, o)| *o)),
        }
        out.sort_unstable();
        out.dedup();
    }
}

/// A `unix:` entry of `connect`: a socket file's path pattern, or `@` and an abstract name
/// pattern (matched like a path: `*` stays before the next `/`).
fn unix_pattern(index: usize, entry: &str, text: &str) -> Result<PathPattern, ScopeError> {
    let err = |reason: &str| ScopeError::Pattern {
        class: "connect",
        index,
        pattern: entry.chars().take(MAX_PATTERN_LEN).collect(),
        reason: reason.into(),
    };
    if let Some(name) = text.strip_prefix('@') {
        if name.is_empty() {
            return Err(err("an abstract name after @ is empty"));
        }
        if name.len() > agent_common::UNIX_NAME_LEN - 1 {
            return Err(err("an abstract name is at most 107 bytes"));
        }
        if text.contains('\0') {
            return Err(err("contains NUL"));
        }
        let glob = GlobBuilder::new(text)
            .literal_separator(true)
            .backslash_escape(true)
            .build()
            .map_err(|e| err(&e.kind().to_string()))?;
        return Ok(PathPattern::Glob {
            text: text.to_string(),
            matcher: glob.compile_matcher(),
        });
    }
    path_pattern("connect", index, text).map_err(|e| match e {
        ScopeError::Pattern { reason, .. } => err(&reason),
        other => other,
    })
}

/// A `sockets` entry: a kind a task must be granted.
fn socket_kind(index: usize, text: &str) -> Result<Grant, ScopeError> {
    Grant::parse(text).ok_or_else(|| ScopeError::Pattern {
        class: "sockets",
        index,
        pattern: text.chars().take(MAX_PATTERN_LEN).collect(),
        reason: "not a socket kind (raw, packet, icmp or vsock)".into(),
    })
}

/// What a task must be granted beyond paths and addresses: socket kinds, and io_uring.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Grant {
    Raw,
    Packet,
    Icmp,
    Vsock,
    IoUring,
}

impl Grant {
    pub const SOCKETS: [Grant; 4] = [Grant::Raw, Grant::Packet, Grant::Icmp, Grant::Vsock];

    pub fn parse(text: &str) -> Option<Grant> {
        Grant::SOCKETS.into_iter().find(|g| g.as_str() == text)
    }

    /// The kernel's id (agent_common::sock_kind).
    pub fn kind(self) -> u8 {
        use agent_common::sock_kind;
        match self {
            Grant::Raw => sock_kind::RAW,
            Grant::Packet => sock_kind::PACKET,
            Grant::Icmp => sock_kind::ICMP,
            Grant::Vsock => sock_kind::VSOCK,
            Grant::IoUring => sock_kind::IO_URING,
        }
    }

    pub fn from_kind(kind: u8) -> Option<Grant> {
        [Grant::Raw, Grant::Packet, Grant::Icmp, Grant::Vsock, Grant::IoUring]
            .into_iter()
            .find(|g| g.kind() == kind)
    }

    pub fn as_str(self) -> &'static str {
        agent_common::sock_kind::NAMES[self.kind() as usize]
    }

    /// The scope clause that grants it.
    pub fn clause(self) -> &'static str {
        match self {
            Grant::IoUring => "io_uring",
            _ => "sockets",
        }
    }
}

fn path_pattern(class: &'static str, index: usize, text: &str) -> Result<PathPattern, ScopeError> {
    let err = |reason: &str| ScopeError::Pattern {
        class,
        index,
        pattern: text.chars().take(MAX_PATTERN_LEN).collect(),
        reason: reason.into(),
    };
    if text.len() > MAX_PATTERN_LEN {
        return Err(err("longer than 1024 bytes"));
    }
    if !text.starts_with('/') {
        return Err(err("not an absolute path"));
    }
    if text.contains('\0') {
        return Err(err("contains NUL"));
    }
    if text.split('/').any(|c| c == "." || c == "..") {
        return Err(err("contains . or .. components"));
    }
    if text.ends_with('/') {
        if text.contains(['*', '?', '[', '{']) {
            return Err(err("a subtree (trailing /) cannot also contain wildcards"));
        }
        return Ok(PathPattern::Subtree(text.to_string()));
    }
    let glob = GlobBuilder::new(text)
        .literal_separator(true)
        .backslash_escape(true)
        .build()
        .map_err(|e| err(&e.kind().to_string()))?;
    Ok(PathPattern::Glob {
        text: text.to_string(),
        matcher: glob.compile_matcher(),
    })
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Proto {
    Tcp,
    Udp,
}

impl Proto {
    pub fn as_str(self) -> &'static str {
        match self {
            Proto::Tcp => "tcp",
            Proto::Udp => "udp",
        }
    }
}

/// The host part of a `connect` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Host {
    Net(IpNet),
    /// A host name, lower-cased; its addresses live in [`CompiledScope::resolved`].
    Name(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnectRule {
    pub text: String,
    pub proto: Proto,
    pub host: Host,
    pub ports: (u16, u16),
}

impl ConnectRule {
    fn within(&self, parent: &ConnectRule) -> bool {
        let host = match (&self.host, &parent.host) {
            (Host::Net(c), Host::Net(p)) => p.contains(c),
            (Host::Name(c), Host::Name(p)) => c == p,
            _ => false,
        };
        host && self.proto == parent.proto && parent.ports.0 <= self.ports.0 && self.ports.1 <= parent.ports.1
    }
}

fn connect_rule(class: &'static str, index: usize, text: &str) -> Result<ConnectRule, ScopeError> {
    let err = |reason: &str| ScopeError::Pattern {
        class,
        index,
        pattern: text.chars().take(MAX_PATTERN_LEN).collect(),
        reason: reason.into(),
    };
    if text.len() > MAX_PATTERN_LEN {
        return Err(err("longer than 1024 bytes"));
    }
    let (proto, rest) = text.split_once(':').ok_or_else(|| err("expected PROTO:HOST:PORTS"))?;
    let proto = match proto {
        "tcp" => Proto::Tcp,
        "udp" => Proto::Udp,
        other => return Err(err(&format!("unknown protocol {other:?} (tcp or udp)"))),
    };
    let (host, ports) = rest.rsplit_once(':').ok_or_else(|| err("expected PROTO:HOST:PORTS"))?;
    let ports = match ports.split_once('-') {
        _ if ports == "*" => (Ok(0), Ok(u16::MAX)),
        Some((lo, hi)) => (lo.parse::<u16>(), hi.parse::<u16>()),
        None => (ports.parse::<u16>(), ports.parse::<u16>()),
    };
    let ports = match ports {
        (Ok(lo), Ok(hi)) if lo <= hi => (lo, hi),
        (Ok(_), Ok(_)) => return Err(err("port range LOW-HIGH has LOW > HIGH")),
        _ => return Err(err("ports must be a number 0-65535, LOW-HIGH or *")),
    };
    let bare = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')).unwrap_or(host);
    let host = if let Ok(ip) = bare.parse::<IpAddr>() {
        Host::Net(unmapped(IpNet::from(ip)))
    } else if let Ok(net) = bare.parse::<IpNet>() {
        if net.trunc() != net {
            return Err(err(&format!(
                "{net} has host bits set (the network is {})",
                net.trunc()
            )));
        }
        Host::Net(unmapped(net))
    } else if is_host_name(bare) {
        Host::Name(bare.to_ascii_lowercase())
    } else {
        return Err(err(&format!(
            "{bare:?} is not an IP address, a CIDR network or a host name"
        )));
    };
    Ok(ConnectRule {
        text: text.to_string(),
        proto,
        host,
        ports,
    })
}

/// A network inside the IPv4-mapped range (`::ffff:a.b.c.d/n`, n >= 96) is the IPv4 network
/// it maps: the engine matches an action's address in its IPv4 form, and the kernel's key of
/// an IPv4 address is its mapped form, so only the IPv4 network means the same to both (the
/// `networks_decide_as_the_engine_raw_or_canonical` property found the mapped form allowed by
/// the kernel and refused by the engine).
fn unmapped(net: IpNet) -> IpNet {
    if let IpNet::V6(n) = net
        && n.prefix_len() >= 96
        && let Some(v4) = n.network().to_ipv4_mapped()
        && let Ok(v4net) = ipnet::Ipv4Net::new(v4, n.prefix_len() - 96)
    {
        return IpNet::V4(v4net);
    }
    net
}

fn is_host_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 253
        && s.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        })
        && s.chars().any(|c| c.is_ascii_alphabetic())
}

/// Terminals and the null-like devices every shell writes to: never a write of data, so never
/// out of scope (documented with the credential format). Their usual names, for Landlock
/// (which judges names) and for kernels where a device node cannot be told by its device.
pub const PSEUDO_DEVICES: &[&str] = &["/dev/null", "/dev/zero", "/dev/full", "/dev/tty", "/dev/ptmx"];

/// The same devices as the kernel judges them, by device (`/dev/char/MAJOR:MINOR`): null,
/// zero, full, random, urandom (1:3, 1:5, 1:7, 1:8, 1:9), tty, console, ptmx (5:0, 5:1, 5:2).
pub const PSEUDO_DEVICE_IDS: &[&str] = &[
    "/dev/char/1:3",
    "/dev/char/1:5",
    "/dev/char/1:7",
    "/dev/char/1:8",
    "/dev/char/1:9",
    "/dev/char/5:0",
    "/dev/char/5:1",
    "/dev/char/5:2",
];

/// Majors of the Unix98 terminals (/dev/pts/N): 136 to 143.
pub const PTS_MAJORS: std::ops::RangeInclusive<u32> = 136..=143;

/// Is a write of `path` to a pseudo device (never out of scope)? `object`: the write changes
/// the file itself (an open for write), not a name in its directory.
pub fn is_pseudo_device(path: &str, object: bool) -> bool {
    if PSEUDO_DEVICE_IDS.contains(&path) {
        return true;
    }
    if let Some((major, minor)) = path.strip_prefix("/dev/char/").and_then(|d| d.split_once(':'))
        && major.parse::<u32>().is_ok_and(|m| PTS_MAJORS.contains(&m))
        && !minor.is_empty()
        && minor.chars().all(|c| c.is_ascii_digit())
    {
        return true;
    }
    object
        && (PSEUDO_DEVICES.contains(&path)
            || path
                .strip_prefix("/dev/pts/")
                .is_some_and(|n| !n.is_empty() && n.chars().all(|c| c.is_ascii_digit())))
}

/// The scope, compiled.
#[derive(Debug, Clone)]
pub struct CompiledScope {
    pub spec: ScopeSpec,
    pub exec: Vec<PathPattern>,
    pub write: Vec<PathPattern>,
    pub connect: Vec<ConnectRule>,
    /// The `unix:` entries of `connect`: socket file paths and `@` abstract names.
    pub unix: Vec<PathPattern>,
    pub listen: Vec<ConnectRule>,
    /// `sockets` and `io_uring`.
    pub grants: Vec<Grant>,
    /// Addresses of the host names in `connect` and `listen`, from the last resolution.
    pub resolved: Vec<(String, Vec<IpAddr>)>,
}

/// Which scope clause an action fell outside of.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Violation {
    /// `exec`, `write`, `connect`, `listen`, `sockets` or `io_uring`.
    pub clause: &'static str,
    /// What was attempted, e.g. `/usr/bin/curl` or `tcp:10.1.2.3:22`.
    pub attempted: String,
    /// The clause's entries (for the alert).
    pub allowed: Vec<String>,
}

impl CompiledScope {
    pub fn compile(spec: &ScopeSpec) -> Result<CompiledScope, ScopeError> {
        for (class, list) in [
            ("exec", &spec.exec),
            ("connect", &spec.connect),
            ("write", &spec.write),
            ("listen", &spec.listen),
            ("sockets", &spec.sockets),
        ] {
            if list.len() > MAX_ENTRIES {
                return Err(ScopeError::TooMany {
                    class,
                    count: list.len(),
                });
            }
        }
        let exec = spec
            .exec
            .iter()
            .enumerate()
            .map(|(i, p)| path_pattern("exec", i, p))
            .collect::<Result<_, _>>()?;
        let write = spec
            .write
            .iter()
            .enumerate()
            .map(|(i, p)| path_pattern("write", i, p))
            .collect::<Result<_, _>>()?;
        let mut connect = Vec::new();
        let mut unix = Vec::new();
        for (i, p) in spec.connect.iter().enumerate() {
            match p.strip_prefix("unix:") {
                Some(name) => unix.push(unix_pattern(i, p, name)?),
                None => connect.push(connect_rule("connect", i, p)?),
            }
        }
        let listen = spec
            .listen
            .iter()
            .enumerate()
            .map(|(i, p)| connect_rule("listen", i, p))
            .collect::<Result<_, _>>()?;
        let mut grants: Vec<Grant> = spec
            .sockets
            .iter()
            .enumerate()
            .map(|(i, k)| socket_kind(i, k))
            .collect::<Result<_, _>>()?;
        if spec.io_uring {
            grants.push(Grant::IoUring);
        }
        grants.sort();
        grants.dedup();
        Ok(CompiledScope {
            spec: spec.clone(),
            exec,
            write,
            connect,
            unix,
            listen,
            grants,
            resolved: Vec::new(),
        })
    }

    /// The host names of `connect` and `listen` entries (to resolve).
    pub fn host_names(&self) -> Vec<String> {
        let mut names: Vec<String> = self
            .connect
            .iter()
            .chain(&self.listen)
            .filter_map(|r| match &r.host {
                Host::Name(n) => Some(n.clone()),
                Host::Net(_) => None,
            })
            .collect();
        names.sort();
        names.dedup();
        names
    }

    /// Does an `exec` entry match `path`?
    pub fn matches_exec(&self, path: &str) -> bool {
        self.exec.iter().any(|p| p.matches(path))
    }

    /// Does a `write` entry match `path`?
    pub fn matches_write(&self, path: &str) -> bool {
        self.write.iter().any(|p| p.matches(path))
    }

    /// Does a `connect` entry match this destination?
    pub fn matches_connect(&self, proto: Proto, ip: IpAddr, port: u16) -> bool {
        self.net_match(&self.connect, proto, ip, port)
    }

    /// Does a `listen` entry match this local address and port?
    pub fn matches_listen(&self, proto: Proto, ip: IpAddr, port: u16) -> bool {
        self.net_match(&self.listen, proto, ip, port)
    }

    /// Does a `unix:` entry match this socket (its file's path, or `@name`)?
    pub fn matches_unix(&self, name: &str) -> bool {
        self.unix.iter().any(|p| p.matches(name))
    }

    pub fn grants(&self, g: Grant) -> bool {
        self.grants.contains(&g)
    }

    fn net_match(&self, rules: &[ConnectRule], proto: Proto, ip: IpAddr, port: u16) -> bool {
        rules.iter().any(|r| {
            r.proto == proto
                && r.ports.0 <= port
                && port <= r.ports.1
                && match &r.host {
                    Host::Net(net) => net.contains(&ip),
                    Host::Name(name) => self.resolved.iter().any(|(n, ips)| n == name && ips.contains(&ip)),
                }
        })
    }

    pub fn check_exec(&self, path: &str) -> Result<(), Violation> {
        if self.matches_exec(path) {
            return Ok(());
        }
        Err(Violation {
            clause: "exec",
            attempted: path.to_string(),
            allowed: self.spec.exec.clone(),
        })
    }

    /// `object`: the write changes the file itself (see [`is_pseudo_device`]).
    pub fn check_write(&self, path: &str, object: bool) -> Result<(), Violation> {
        if is_pseudo_device(path, object) || self.matches_write(path) {
            return Ok(());
        }
        Err(Violation {
            clause: "write",
            attempted: path.to_string(),
            allowed: self.spec.write.clone(),
        })
    }

    pub fn check_connect(&self, proto: Proto, ip: IpAddr, port: u16) -> Result<(), Violation> {
        if self.matches_connect(proto, ip, port) {
            return Ok(());
        }
        Err(Violation {
            clause: "connect",
            attempted: endpoint(proto, ip, port),
            allowed: self.spec.connect.clone(),
        })
    }

    pub fn check_listen(&self, proto: Proto, ip: IpAddr, port: u16) -> Result<(), Violation> {
        if self.matches_listen(proto, ip, port) {
            return Ok(());
        }
        Err(Violation {
            clause: "listen",
            attempted: endpoint(proto, ip, port),
            allowed: self.spec.listen.clone(),
        })
    }

    pub fn check_unix(&self, name: &str) -> Result<(), Violation> {
        if self.matches_unix(name) {
            return Ok(());
        }
        Err(Violation {
            clause: "connect",
            attempted: format!("unix:{name}"),
            allowed: self.spec.connect.clone(),
        })
    }

    pub fn check_grant(&self, g: Grant) -> Result<(), Violation> {
        if self.grants(g) {
            return Ok(());
        }
        Err(Violation {
            clause: g.clause(),
            attempted: g.as_str().to_string(),
            allowed: match g {
                Grant::IoUring => vec![self.spec.io_uring.to_string()],
                _ => self.spec.sockets.clone(),
            },
        })
    }

    /// Is this scope a subset of `parent` (for delegation)? Returns the first entry that is
    /// not covered.
    pub fn within(&self, parent: &CompiledScope) -> Result<(), Wider> {
        let entry = |clause, entry: String| Err(Wider::Entry { clause, entry });
        for c in &self.exec {
            if !parent.exec.iter().any(|p| c.within(p)) {
                return entry("exec", c.text().to_string());
            }
        }
        for c in &self.write {
            if !parent.write.iter().any(|p| c.within(p)) {
                return entry("write", c.text().to_string());
            }
        }
        for c in &self.connect {
            if !parent.connect.iter().any(|p| c.within(p)) {
                return entry("connect", c.text.clone());
            }
        }
        for c in &self.unix {
            if !parent.unix.iter().any(|p| c.within(p)) {
                return entry("connect", format!("unix:{}", c.text()));
            }
        }
        for c in &self.listen {
            if !parent.listen.iter().any(|p| c.within(p)) {
                return entry("listen", c.text.clone());
            }
        }
        for g in &self.grants {
            if !parent.grants(*g) {
                return Err(Wider::Grant {
                    clause: g.clause(),
                    grant: g.as_str(),
                });
            }
        }
        Ok(())
    }
}

/// What makes a delegated scope wider than its parent's: the first entry not covered.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Wider {
    #[error("scope.{clause} {entry:?} is not within the parent's {clause} scope")]
    Entry { clause: &'static str, entry: String },
    #[error("scope.{clause} {grant:?} is not granted to the parent")]
    Grant { clause: &'static str, grant: &'static str },
}

/// `proto:ip:port`, an IPv6 address in brackets.
fn endpoint(proto: Proto, ip: IpAddr, port: u16) -> String {
    let shown = match ip {
        IpAddr::V6(v6) => format!("[{v6}]"),
        IpAddr::V4(v4) => v4.to_string(),
    };
    format!("{}:{shown}:{port}", proto.as_str())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scope(exec: &[&str], connect: &[&str], write: &[&str]) -> CompiledScope {
        let v = |l: &[&str]| l.iter().map(|s| s.to_string()).collect();
        CompiledScope::compile(&ScopeSpec {
            exec: v(exec),
            connect: v(connect),
            write: v(write),
            ..Default::default()
        })
        .expect("valid scope")
    }

    #[test]
    fn the_documented_example_compiles_and_matches() {
        let s = scope(
            &["/usr/bin/git", "/usr/bin/python3*", "/opt/tools/**"],
            &[
                "tcp:127.0.0.1:8080",
                "tcp:10.0.0.0/8:443",
                "tcp:[::1]:9000-9100",
                "udp:0.0.0.0/0:53",
                "tcp:api.example.com:443",
            ],
            &["/srv/task-42/", "/tmp/task-42-*"],
        );
        assert!(s.check_exec("/usr/bin/git").is_ok());
        assert!(s.check_exec("/usr/bin/python3.11").is_ok());
        assert!(
            s.check_exec("/usr/bin/python3/../../sbin/x").is_err(),
            "* stays in one segment"
        );
        assert!(s.check_exec("/opt/tools/a/b/c").is_ok());
        let v = s.check_exec("/usr/bin/curl").unwrap_err();
        assert_eq!((v.clause, v.attempted.as_str()), ("exec", "/usr/bin/curl"));
        assert!(s.check_write("/srv/task-42/out/x.txt", true).is_ok());
        assert!(s.check_write("/srv/task-42", true).is_ok());
        assert!(s.check_write("/srv/task-420/x", true).is_err());
        assert!(s.check_write("/tmp/task-42-scratch", true).is_ok());
        assert!(s.check_write("/tmp/task-42-a/b", true).is_err());
        assert!(s.check_write("/dev/null", true).is_ok() && s.check_write("/dev/pts/3", true).is_ok());
        assert!(s.check_write("/dev/sda", true).is_err() && s.check_write("/dev/pts/../sda", true).is_err());
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        assert!(s.check_connect(Proto::Tcp, ip("127.0.0.1"), 8080).is_ok());
        assert!(s.check_connect(Proto::Udp, ip("127.0.0.1"), 8080).is_err());
        assert!(s.check_connect(Proto::Tcp, ip("10.9.8.7"), 443).is_ok());
        assert!(s.check_connect(Proto::Tcp, ip("11.0.0.1"), 443).is_err());
        assert!(s.check_connect(Proto::Tcp, ip("::1"), 9050).is_ok());
        assert!(s.check_connect(Proto::Tcp, ip("::1"), 9101).is_err());
        assert!(s.check_connect(Proto::Udp, ip("8.8.8.8"), 53).is_ok());
        let any = scope(&[], &["tcp:10.0.0.0/8:*"], &[]);
        assert!(
            any.check_connect(Proto::Tcp, ip("10.1.1.1"), 1).is_ok()
                && any.check_connect(Proto::Tcp, ip("10.1.1.1"), 65535).is_ok()
        );
        assert!(
            s.check_connect(Proto::Udp, ip("2001:db8::1"), 53).is_err(),
            "0.0.0.0/0 is IPv4 only"
        );
        let v = s.check_connect(Proto::Tcp, ip("::2"), 22).unwrap_err();
        assert_eq!(v.attempted, "tcp:[::2]:22");
        assert_eq!(s.host_names(), ["api.example.com"]);
    }

    #[test]
    fn host_names_match_their_resolved_addresses_only() {
        let mut s = scope(&[], &["tcp:API.example.com:443"], &[]);
        let ip: IpAddr = "192.0.2.7".parse().unwrap();
        assert!(s.check_connect(Proto::Tcp, ip, 443).is_err(), "not resolved yet");
        s.resolved = vec![("api.example.com".into(), vec![ip])];
        assert!(s.check_connect(Proto::Tcp, ip, 443).is_ok());
        assert!(s.check_connect(Proto::Tcp, ip, 80).is_err());
    }

    #[test]
    fn bad_patterns_are_refused_with_the_entry_named() {
        let bad = |spec: ScopeSpec| CompiledScope::compile(&spec).unwrap_err().to_string();
        let e = bad(ScopeSpec {
            exec: vec!["usr/bin/git".into()],
            ..Default::default()
        });
        assert!(e.contains("scope.exec[0]") && e.contains("absolute"), "{e}");
        let e = bad(ScopeSpec {
            write: vec!["/a/../b".into()],
            ..Default::default()
        });
        assert!(e.contains(".."), "{e}");
        let e = bad(ScopeSpec {
            exec: vec!["/a/[b".into()],
            ..Default::default()
        });
        assert!(e.contains("scope.exec[0]"), "{e}");
        for (p, why) in [
            ("tcp:1.2.3.4", "PROTO:HOST:PORTS"),
            ("icmp:1.2.3.4:1", "unknown protocol"),
            ("tcp:1.2.3.4:70000", "ports"),
            ("tcp:1.2.3.4:90-80", "LOW > HIGH"),
            ("tcp:10.0.0.1/8:443", "host bits"),
            ("tcp:bad_host!:443", "not an IP address"),
        ] {
            let e = bad(ScopeSpec {
                connect: vec![p.into()],
                ..Default::default()
            });
            assert!(e.contains(why), "{p}: {e}");
        }
        let e = bad(ScopeSpec {
            exec: vec!["/x".into(); MAX_ENTRIES + 1],
            ..Default::default()
        });
        assert!(e.contains("at most"), "{e}");
    }

    #[test]
    fn delegation_subsets() {
        let parent = scope(
            &["/usr/bin/git", "/opt/tools/**", "/usr/bin/python3*"],
            &["tcp:10.0.0.0/8:443-8443", "tcp:api.example.com:443"],
            &["/srv/task-42/"],
        );
        let ok = scope(
            &["/usr/bin/git", "/opt/tools/x/**", "/usr/bin/python3.11"],
            &["tcp:10.1.0.0/16:443", "tcp:api.example.com:443"],
            &["/srv/task-42/sub/", "/srv/task-42/a.txt"],
        );
        assert_eq!(ok.within(&parent), Ok(()));
        for (child, what) in [
            (scope(&["/usr/bin/curl"], &[], &[]), "exec"),
            (scope(&["/usr/bin/*"], &[], &[]), "exec"),
            (scope(&[], &["tcp:0.0.0.0/0:443"], &[]), "connect"),
            (scope(&[], &["tcp:10.0.0.1:22"], &[]), "connect"),
            (scope(&[], &["udp:10.0.0.1:443"], &[]), "connect"),
            (scope(&[], &["tcp:evil.example.com:443"], &[]), "connect"),
            (scope(&[], &[], &["/srv/"]), "write"),
        ] {
            let e = child.within(&parent).unwrap_err().to_string();
            assert!(e.contains(&format!("scope.{what}")), "{e}");
        }
    }

    #[test]
    fn unix_listen_and_grant_clauses() {
        let s = CompiledScope::compile(&ScopeSpec {
            connect: vec![
                "unix:/run/app/*.sock".into(),
                "unix:@app-*".into(),
                "tcp:127.0.0.1:80".into(),
            ],
            listen: vec!["tcp:127.0.0.1:8080".into(), "udp:0.0.0.0/0:5353".into()],
            sockets: vec!["icmp".into()],
            io_uring: true,
            ..Default::default()
        })
        .expect("valid");
        assert!(s.check_unix("/run/app/api.sock").is_ok());
        assert!(s.check_unix("/run/app/sub/api.sock").is_err(), "* stays in one segment");
        assert!(s.check_unix("@app-1").is_ok());
        let v = s.check_unix("/run/docker.sock").unwrap_err();
        assert_eq!((v.clause, v.attempted.as_str()), ("connect", "unix:/run/docker.sock"));
        assert_eq!(s.connect.len(), 1, "unix entries are not IP rules");
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        assert!(s.check_listen(Proto::Tcp, ip("127.0.0.1"), 8080).is_ok());
        assert!(
            s.check_listen(Proto::Tcp, ip("0.0.0.0"), 8080).is_err(),
            "the wildcard address is not 127.0.0.1"
        );
        assert!(s.check_listen(Proto::Udp, ip("0.0.0.0"), 5353).is_ok());
        let v = s.check_listen(Proto::Tcp, ip("127.0.0.1"), 9).unwrap_err();
        assert_eq!((v.clause, v.attempted.as_str()), ("listen", "tcp:127.0.0.1:9"));
        assert!(s.check_grant(Grant::Icmp).is_ok() && s.check_grant(Grant::IoUring).is_ok());
        let v = s.check_grant(Grant::Raw).unwrap_err();
        assert_eq!((v.clause, v.attempted.as_str()), ("sockets", "raw"));
        for (bad, why) in [
            (vec!["unix:relative".to_string()], "absolute"),
            (vec!["unix:@".to_string()], "empty"),
        ] {
            let e = CompiledScope::compile(&ScopeSpec {
                connect: bad,
                ..Default::default()
            })
            .unwrap_err()
            .to_string();
            assert!(e.contains("scope.connect[0]") && e.contains(why), "{e}");
        }
        let e = CompiledScope::compile(&ScopeSpec {
            sockets: vec!["netlink".into()],
            ..Default::default()
        })
        .unwrap_err()
        .to_string();
        assert!(e.contains("scope.sockets[0]") && e.contains("not a socket kind"), "{e}");
    }

    #[test]
    fn pseudo_devices_are_exempt_by_device_and_by_name_only_for_the_file_itself() {
        for d in ["/dev/char/1:3", "/dev/char/5:0", "/dev/char/136:4", "/dev/char/143:0"] {
            assert!(is_pseudo_device(d, true) && is_pseudo_device(d, false), "{d}");
        }
        for d in ["/dev/char/1:1", "/dev/block/8:0", "/dev/char/144:0", "/dev/char/136:"] {
            assert!(!is_pseudo_device(d, true), "{d}");
        }
        assert!(is_pseudo_device("/dev/null", true) && is_pseudo_device("/dev/pts/3", true));
        assert!(
            !is_pseudo_device("/dev/null", false),
            "unlinking /dev/null is no write to it"
        );
    }

    /// Path matching against a compiled scope agrees with a plain reference matcher of the
    /// documented pattern language, for random patterns and paths.
    mod reference {
        use proptest::prelude::*;

        use super::*;

        /// One segment: `*` any run of characters, `?` one character, others themselves.
        fn segment(p: &[char], s: &[char]) -> bool {
            match p {
                [] => s.is_empty(),
                ['*', rest @ ..] => (0..=s.len()).any(|i| segment(rest, &s[i..])),
                ['?', rest @ ..] => !s.is_empty() && segment(rest, &s[1..]),
                [c, rest @ ..] => s.first() == Some(c) && segment(rest, &s[1..]),
            }
        }

        /// Components: `**` in the middle is any number of components, a trailing `**` one
        /// or more (what is under the directory), any other a segment pattern.
        fn components(p: &[&str], s: &[&str]) -> bool {
            match p {
                [] => s.is_empty(),
                ["**"] => !s.is_empty(),
                ["**", rest @ ..] => (0..=s.len()).any(|i| components(rest, &s[i..])),
                [c, rest @ ..] => {
                    !s.is_empty()
                        && segment(&c.chars().collect::<Vec<_>>(), &s[0].chars().collect::<Vec<_>>())
                        && components(rest, &s[1..])
                }
            }
        }

        fn reference(pattern: &str, path: &str) -> bool {
            if pattern.ends_with('/') {
                return path == pattern.trim_end_matches('/') || path.starts_with(pattern);
            }
            let p: Vec<&str> = pattern.split('/').collect();
            let s: Vec<&str> = path.split('/').collect();
            components(&p, &s)
        }

        fn pattern() -> impl Strategy<Value = String> {
            let comp = prop::sample::select(&["a", "b", "ab", "*", "a*", "*b", "?", "a?b", "**", "x.y"][..]);
            (prop::collection::vec(comp, 1..5), any::<bool>()).prop_map(|(c, subtree)| {
                let mut p = format!("/{}", c.join("/"));
                if subtree && !p.contains(['*', '?']) {
                    p.push('/');
                }
                p
            })
        }

        fn path() -> impl Strategy<Value = String> {
            prop::collection::vec(
                prop::sample::select(&["a", "b", "ab", "abb", "x.y", "a*", ""][..]),
                1..6,
            )
            .prop_map(|c| format!("/{}", c.join("/")))
        }

        proptest! {
            #![proptest_config(ProptestConfig { cases: 4000, failure_persistence: None, ..ProptestConfig::default() })]

            #[test]
            fn compiled_patterns_match_as_the_reference(pattern in pattern(), paths in prop::collection::vec(path(), 1..10)) {
                let c = CompiledScope::compile(&ScopeSpec { write: vec![pattern.clone()], ..Default::default() }).unwrap();
                for p in &paths {
                    prop_assert_eq!(c.matches_write(p), reference(&pattern, p), "{} against {}", pattern, p);
                }
            }
        }
    }
}
