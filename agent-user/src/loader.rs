//! Loading and attaching the BPF programs.
//!
//! By default every attachment is an fd-based link owned by this process: when the daemon
//! exits, however it exits (SIGKILL included), the kernel detaches everything and nothing is
//! pinned. With `--persist` the links and the state maps are pinned so that the kernel side
//! outlives the process (see [`crate::persist`] for the layout and the hand-over).
use std::{
    collections::BTreeMap,
    fs::File,
    path::{Path, PathBuf},
};

use agent_common::{Config, Tracked, counter, feature, syscalls};
use aya::{
    Btf, Ebpf, EbpfLoader, Pod, VerifierLogLevel,
    maps::{Array, HashMap, LpmTrie, MapData, MapError, PerCpuArray, RingBuf},
    programs::{
        CgroupAttachMode, CgroupSock, CgroupSockAddr, FEntry, Lsm, ProgramError, RawTracePoint, TracePoint,
        links::{FdLink, PinnedLink},
        lsm::LsmLinkId,
    },
};
use tracing::{debug, error, info, warn};

use crate::{
    contain::{self, kernel_maps::KernelRules},
    features::{self, Features, KernelReport, Probe},
    kernel_layout::{self, need},
    modret,
    persist::{self, Persist},
    policy::{Selectors, engine::Rules},
    selectors::{self, CompiledSelectors},
};

pub const BTF_PATH: &str = "/sys/kernel/btf/vmlinux";
/// The record rings (agent_common::RING_*_BYTES): exec and lineage, sockets, allowed files,
/// files a rule matched.
pub const RINGS: [&str; 4] = ["PROC_EVENTS", "NET_EVENTS", "FILE_EVENTS", "ALERT_EVENTS"];
pub const TRACEFS: &str = "/sys/kernel/tracing";

/// The BPF object built into this binary (None when built without the BPF toolchain).
#[cfg(not(tether_no_bpf))]
pub const BPF_OBJECT: Option<&[u8]> = Some(aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/tether.bpf.o")));
#[cfg(tether_no_bpf)]
pub const BPF_OBJECT: Option<&[u8]> = None;

#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error(
        "this tether binary was built without its BPF programs (the BPF toolchain was missing at build time); build it with `cargo xtask build`"
    )]
    NoObject,
    #[error("tether must run as root (or with CAP_BPF, CAP_PERFMON, CAP_NET_ADMIN and CAP_SYS_ADMIN)")]
    NotRoot,
    #[error(transparent)]
    Layout(#[from] kernel_layout::LayoutError),
    #[error("tracefs is not mounted at {TRACEFS} and mounting it failed: {0}")]
    Tracefs(nix::Error),
    #[error("no cgroup v2 hierarchy is mounted (looked in /proc/mounts); Tether needs cgroup v2 for its network hooks")]
    NoCgroup2,
    #[error("cannot open cgroup {path}: {source}")]
    Cgroup { path: String, source: std::io::Error },
    #[error("loading the BPF object failed: {0}")]
    Load(#[from] aya::EbpfError),
    #[error("program {name}: {source}")]
    Program {
        name: String,
        source: aya::programs::ProgramError,
    },
    #[error("map {name}: {source}")]
    Map { name: String, source: aya::maps::MapError },
    #[error("program {name} was refused by this kernel: {first}\n{log}")]
    Verifier { name: String, first: String, log: String },
    #[error("this kernel has no BPF ring buffer (Linux 5.8 or later is needed): {0}")]
    NoRingBuffer(String),
    #[error("the policy has `exe` agent selectors, but this kernel lacks fields they need ({0}); use `comm` selectors")]
    ExeSelectorsUnavailable(String),
    #[error("the policy has `cgroup` agent selectors, but this kernel lacks fields they need ({0})")]
    CgroupSelectorsUnavailable(String),
    #[error(transparent)]
    Selectors(#[from] selectors::SelectorError),
    #[error("the BPF object has no {0}")]
    Missing(String),
    #[error("containment rules: {0}")]
    Rules(String),
    #[error(transparent)]
    Persist(#[from] persist::PersistError),
    #[error("pinning link {name}: {reason}")]
    Pin { name: String, reason: String },
}

/// What is attached, for the start-up report.
#[derive(Debug, Default)]
pub struct Attached {
    pub programs: Vec<String>,
    pub cgroup_root: PathBuf,
}

/// What `--persist` keeps across a restart, for the report.
#[derive(Debug, Default, Clone, serde::Serialize)]
pub struct Kept {
    /// This load's generation.
    pub generation: u64,
    /// The state maps were pinned by a previous daemon and are adopted (not new).
    pub adopted_maps: bool,
    /// Links pinned: their programs stay attached with no daemon.
    pub pinned: Vec<String>,
    /// Links that cannot be pinned on this kernel (they go with the process), with why.
    pub not_pinned: Vec<String>,
    /// Owners (task ids, guardrails) the rule maps held when adopted.
    pub rule_owners: Vec<u32>,
}

/// Pins links as they are attached (persist mode), or leaves them with the process.
struct Pins {
    dir: Option<std::path::PathBuf>,
    links: Vec<PinnedLink>,
    kept: Kept,
    /// Whether tracepoint attachments are BPF links here (kernel 5.15+); None: not tried yet.
    perf_links: Option<bool>,
}

impl Pins {
    fn pin(&mut self, name: &str, link: FdLink) -> Result<(), LoadError> {
        let Some(dir) = &self.dir else { return Ok(()) };
        let pinned = link.pin(dir.join(name)).map_err(|e| LoadError::Pin {
            name: name.into(),
            reason: e.to_string(),
        })?;
        self.links.push(pinned);
        self.kept.pinned.push(name.into());
        Ok(())
    }

    /// Attaches tracepoint program `prog` to `category`/`event`, pinned as `name` where
    /// tracepoint attachments are links (5.15+; before, they go with the process).
    fn attach_tracepoint(
        &mut self,
        ebpf: &mut Ebpf,
        prog: &str,
        category: &str,
        event: &str,
        name: &str,
    ) -> Result<(), LoadError> {
        let tp: &mut TracePoint = program(ebpf, prog)?;
        let err = || prog_err(format!("{prog} on {event}"));
        let id = tp.attach(category, event).map_err(err())?;
        if self.dir.is_none() {
            return Ok(());
        }
        if self.perf_links != Some(false) {
            let link = tp.take_link(id).map_err(err())?;
            match FdLink::try_from(link) {
                Ok(fd) => {
                    self.perf_links = Some(true);
                    return self.pin(name, fd);
                }
                Err(_) => {
                    // The conversion dropped (detached) it: attach again, owned by the process.
                    self.perf_links = Some(false);
                    tp.attach(category, event).map_err(err())?;
                }
            }
        }
        self.kept.not_pinned.push(format!(
            "{name}: tracepoint attachments are not BPF links before Linux 5.15"
        ));
        Ok(())
    }
}

/// The loaded programs and the maps the daemon uses. Dropping it detaches everything that is
/// not pinned.
pub struct Probes {
    _ebpf: Ebpf,
    /// ACTIVE: the generation whose programs act.
    active: Array<MapData, u64>,
    _pinned: Vec<PinnedLink>,
    /// The fmod_ret links, where they stand in for BPF LSM (detached when dropped).
    _modret: Vec<modret::Link>,
    pub kept: Option<Kept>,
    /// The record rings, in [`RINGS`] order.
    pub rings: Vec<RingBuf<MapData>>,
    pub tracked: HashMap<MapData, u32, Tracked>,
    /// A read-only view of the same map for the API (None: the kernel refused a second fd).
    pub tracked_view: TrackedView,
    pub counters: PerCpuArray<MapData, u64>,
    /// cgroup id -> selector mask: the rule files' cgroups, and the cgroups of the pods that
    /// pod selectors match (kept by the daemon as pods come and go).
    pub select_cgroup: HashMap<MapData, u64, u64>,
    /// pod cgroup id -> guard set (the guardrails' `pods:`), kept by the daemon as pods come
    /// and go.
    pub pod_guards: HashMap<MapData, u64, u32>,
    /// The rule files' cgroup entries, which pod updates merge with.
    pub static_cgroups: BTreeMap<u64, u64>,
    /// The containment rule maps.
    pub rules: KernelRules,
    pub attached: Attached,
    pub report: KernelReport,
}

impl Probes {
    /// Hands over to this load's programs (one map write; see [`crate::persist`]).
    pub fn activate(&mut self, generation: u64) -> Result<(), LoadError> {
        self.active.set(0, generation, 0).map_err(map_err("ACTIVE"))
    }

    /// The generation acting now.
    pub fn active_generation(&self) -> Option<u64> {
        self.active.get(&0, 0).ok()
    }

    /// Sum over CPUs of each loss/error counter, in agent_common::counter order (named by
    /// [`counter_name`]).
    pub fn counters(&self) -> [u64; counter::COUNT as usize] {
        let mut out = [0u64; counter::COUNT as usize];
        for (i, slot) in out.iter_mut().enumerate() {
            if let Ok(values) = self.counters.get(&(i as u32), 0) {
                *slot = values.iter().sum();
            }
        }
        out
    }
}

/// A second handle on the tracked map, shared with the API's tasks.
pub type TrackedView = std::sync::Arc<std::sync::Mutex<Option<HashMap<MapData, u32, Tracked>>>>;

/// The name of kernel counter `index` in status, metrics and alerts: `tracked_full`,
/// `pending_full`, `read_error`, `unjudged`, or `ringbuf_full:<hook>` for the per-hook losses.
pub fn counter_name(index: u32) -> String {
    match index.checked_sub(counter::LOST) {
        None => counter::NAMES[index as usize].to_string(),
        Some(h) => format!("ringbuf_full:{}", agent_common::hook::name(h).unwrap_or("unknown")),
    }
}

/// Mounts tracefs when it is not mounted (tracepoints need it).
fn ensure_tracefs() -> Result<(), LoadError> {
    if Path::new(TRACEFS).join("events").exists() {
        return Ok(());
    }
    nix::mount::mount(
        Some("tracefs"),
        TRACEFS,
        Some("tracefs"),
        nix::mount::MsFlags::empty(),
        None::<&str>,
    )
    .map_err(LoadError::Tracefs)?;
    info!("mounted tracefs at {TRACEFS}");
    Ok(())
}

/// The mount point of the cgroup v2 hierarchy (/sys/fs/cgroup on unified hosts,
/// /sys/fs/cgroup/unified on hybrid ones).
pub fn cgroup2_root() -> Result<PathBuf, LoadError> {
    let mounts = std::fs::read_to_string("/proc/mounts").map_err(|_| LoadError::NoCgroup2)?;
    mounts
        .lines()
        .filter_map(|l| {
            let mut f = l.split_whitespace();
            let (_, path, fstype) = (f.next()?, f.next()?, f.next()?);
            (fstype == "cgroup2").then(|| PathBuf::from(path))
        })
        .min_by_key(|p| p.as_os_str().len())
        .ok_or(LoadError::NoCgroup2)
}

/// Resolves the rule files' agent selectors on this host (see [`selectors::compile`]).
pub fn compile_selectors(list: &Selectors) -> Result<CompiledSelectors, LoadError> {
    Ok(selectors::compile(list, &cgroup2_root()?)?)
}

fn prog_err(name: impl Into<String>) -> impl FnOnce(ProgramError) -> LoadError {
    let name = name.into();
    move |source| LoadError::Program { name, source }
}

fn map_err(name: &str) -> impl Fn(MapError) -> LoadError + '_ {
    move |source| LoadError::Map {
        name: name.into(),
        source,
    }
}

fn program<'a, T>(ebpf: &'a mut Ebpf, name: &str) -> Result<&'a mut T, LoadError>
where
    &'a mut T: TryFrom<&'a mut aya::programs::Program, Error = ProgramError>,
{
    let p = ebpf
        .program_mut(name)
        .ok_or_else(|| LoadError::Missing(format!("program {name}")))?;
    p.try_into().map_err(prog_err(name))
}

fn take_map(ebpf: &mut Ebpf, name: &str) -> Result<aya::maps::Map, LoadError> {
    ebpf.take_map(name)
        .ok_or_else(|| LoadError::Missing(format!("map {name}")))
}

/// Fills a selector map: each key maps to the mask of the selectors listing it.
fn fill_selector_map<K: Pod>(ebpf: &mut Ebpf, name: &str, entries: &BTreeMap<K, u64>) -> Result<(), LoadError> {
    let map = ebpf
        .map_mut(name)
        .ok_or_else(|| LoadError::Missing(format!("map {name}")))?;
    let mut map: HashMap<_, K, u64> = HashMap::try_from(map).map_err(map_err(name))?;
    for (key, mask) in entries {
        map.insert(*key, *mask, 0).map_err(map_err(name))?;
    }
    Ok(())
}

/// The verifier's verbose log for program `name`, by loading the object again with verbose
/// logging (the default level cuts the log to where the verifier gave up, which can hide the
/// cause). Used only after a load failed.
fn verbose_log(
    object: &[u8],
    config: &Config,
    name: &str,
    load: impl Fn(&mut Ebpf) -> Result<(), LoadError>,
) -> String {
    let ebpf = EbpfLoader::new()
        .override_global("CONFIG", config, true)
        .verifier_log_level(VerifierLogLevel::VERBOSE | VerifierLogLevel::STATS)
        .load(object);
    match ebpf {
        Ok(mut ebpf) => match load(&mut ebpf) {
            Err(e) => format!("verbose verifier log of {name}:\n{e}"),
            Ok(()) => format!("{name} loaded on the second, verbose attempt"),
        },
        Err(e) => format!("reloading the object for a verbose log failed: {e}"),
    }
}

/// Loads a program every kernel we support must accept; on failure, the error carries the
/// verbose verifier log.
fn load_required(
    ebpf: &mut Ebpf,
    object: &[u8],
    config: &Config,
    name: &str,
    load: impl Fn(&mut Ebpf) -> Result<(), LoadError>,
) -> Result<(), LoadError> {
    let t = std::time::Instant::now();
    let r = load(ebpf);
    debug!(
        program = name,
        ms = t.elapsed().as_millis() as u64,
        ok = r.is_ok(),
        "program loaded"
    );
    match r {
        Ok(()) => Ok(()),
        Err(e) => {
            let log = verbose_log(object, config, name, &load);
            error!("{log}");
            Err(LoadError::Verifier {
                name: name.into(),
                first: e.to_string(),
                log,
            })
        }
    }
}

fn load_tracepoint(ebpf: &mut Ebpf, name: &str) -> Result<(), LoadError> {
    let p: &mut TracePoint = program(ebpf, name)?;
    p.load().map_err(prog_err(name))
}

fn load_sock_addr(ebpf: &mut Ebpf, name: &str) -> Result<(), LoadError> {
    let p: &mut CgroupSockAddr = program(ebpf, name)?;
    p.load().map_err(prog_err(name))
}

/// The hook LSM program `name` attaches to: its name, but for the variants of a hook whose
/// prototype changed (`path_rename4`, `inode_setxattr_old`, ...).
fn lsm_hook_of(name: &str) -> &str {
    name.strip_suffix("_old")
        .or_else(|| name.strip_suffix("4"))
        .unwrap_or(name)
}

/// The program for `hook` on a kernel whose prototypes are `params` (parameter counts).
fn lsm_variant(hook: &'static str, params: &BTreeMap<&'static str, u32>) -> &'static str {
    match (hook, params.get(hook).copied()) {
        // path_rename gained `flags` in 5.19.
        ("path_rename", Some(4)) => "path_rename4",
        // The inode hooks gained an idmap (or user namespace) first.
        ("inode_setxattr", Some(5)) => "inode_setxattr_old",
        ("inode_removexattr", Some(2)) => "inode_removexattr_old",
        ("inode_setattr", Some(2)) => "inode_setattr_old",
        // bpf gained `kernel` in 6.9.
        ("bpf", Some(3)) => "bpf_old",
        (h, _) => h,
    }
}

/// The parameter count program `name` was written for, for the hooks with one program per
/// prototype ([`lsm_variant`]); None for the others (they follow the running kernel's hook).
fn variant_params(name: &str) -> Option<u32> {
    Some(match name {
        "path_rename4" => 4,
        "path_rename" => 5,
        "inode_setxattr_old" => 5,
        "inode_setxattr" => 6,
        "inode_removexattr_old" => 2,
        "inode_removexattr" => 3,
        "inode_setattr_old" => 2,
        "inode_setattr" => 3,
        "bpf_old" => 3,
        "bpf" => 4,
        _ => return None,
    })
}

/// Loads LSM program `name` for its hook.
fn load_lsm(ebpf: &mut Ebpf, name: &str, btf: &Btf) -> Result<(), LoadError> {
    let hook = lsm_hook_of(name);
    let p: &mut Lsm = program(ebpf, name)?;
    let t = std::time::Instant::now();
    let r = p.load(hook, btf).map_err(prog_err(name));
    debug!(
        program = name,
        ms = t.elapsed().as_millis() as u64,
        ok = r.is_ok(),
        "program loaded"
    );
    r
}

/// The BPF LSM hooks Tether uses, in groups used whole or not at all: (what the group
/// observes, its hooks, the need bits of the fields they read). Every file hook judges a
/// path: without path resolution they could not say which file. path_chown is a group of its
/// own: kernels before 6.0 cannot attach BPF to a hook that takes a struct (kuid_t) by value,
/// and the other path hooks stay without it. file_truncate and the ACL hooks exist from 6.2.
const LSM_GROUPS: [(&str, &[&str], u32); 11] = [
    ("exec", &["bprm_check_security"], need::LSM_EXEC | need::PATHS),
    ("file_write", &["file_open"], need::LSM_FILE | need::PATHS),
    (
        "file_names",
        &[
            "path_mknod",
            "path_mkdir",
            "path_rmdir",
            "path_unlink",
            "path_rename",
            "path_link",
            "path_symlink",
            "path_truncate",
            "path_chmod",
        ],
        need::LSM_PATH | need::PATHS,
    ),
    ("file_owner", &["path_chown"], need::LSM_PATH | need::PATHS),
    ("file_truncate", &["file_truncate"], need::LSM_PATH | need::PATHS),
    (
        "file_attrs",
        &["inode_setxattr", "inode_removexattr", "inode_setattr"],
        need::LSM_INODE | need::PATHS,
    ),
    (
        "file_acls",
        &["inode_set_acl", "inode_remove_acl"],
        need::LSM_INODE | need::PATHS,
    ),
    ("connect", &["socket_connect"], need::LSM_CONNECT),
    // Tether itself: bpf(2), signals to the daemon, ptrace-family access.
    ("self", &["bpf", "task_kill", "ptrace_access_check"], need::CORE),
    ("sockets", &["socket_create", "socket_listen"], need::SOCKETS),
    (
        "unix",
        &["unix_stream_connect", "unix_may_send"],
        need::SOCKETS | need::PATHS,
    ),
];

/// The LSM groups that are the path hooks (`--no-lsm-path-hooks` leaves them out).
const PATH_GROUPS: [&str; 5] = ["file_names", "file_owner", "file_truncate", "file_attrs", "file_acls"];

/// Unloads (and so detaches) LSM programs loaded so far.
fn unload_lsm(ebpf: &mut Ebpf, hooks: &[&str]) {
    for hook in hooks {
        if let Err(e) = program::<Lsm>(ebpf, hook).and_then(|p| p.unload().map_err(prog_err(*hook))) {
            debug!("unloading lsm/{hook}: {e}");
        }
    }
}

/// The `security_*` function that calls LSM hook `hook` (where an fmod_ret program stands in
/// for the hook).
fn security_function(hook: &str) -> String {
    match hook {
        "bprm_check_security" => "security_bprm_check".into(),
        h => format!("security_{h}"),
    }
}

/// The kernel functions whose prototypes the loader compares: each LSM hook's `bpf_lsm_*`
/// and its `security_*` function.
fn prototypes() -> Vec<String> {
    LSM_GROUPS
        .iter()
        .flat_map(|(_, hooks, _)| hooks.iter())
        .flat_map(|h| [format!("bpf_lsm_{h}"), security_function(h)])
        .collect()
}

/// Where BPF LSM cannot run (not in `lsm=`, or its program type refused): the same programs as
/// BPF_MODIFY_RETURN on the `security_*` functions (see [`crate::modret`]), group by group as
/// for LSM. A hook whose `security_*` function has another prototype than the hook leaves its
/// group out; a kernel that refuses the program type (EPERM: no trampolines allowed) gets none.
/// Returns the probe, the groups in effect, and the links.
fn attach_modret(
    maps: &modret::Maps,
    object: &[u8],
    btf: &Btf,
    layout: &kernel_layout::Layout,
    path_hooks: bool,
    attached: &mut Attached,
) -> (Probe, Vec<&'static str>, Vec<modret::Link>) {
    let obj = match modret::Object::new(object, maps) {
        Ok(o) => o,
        Err(e) => return (Probe::no(e.to_string()), vec![], vec![]),
    };
    let mut links = Vec::new();
    let mut in_effect = Vec::new();
    let mut detail = String::new();
    for (what, hooks, needs) in LSM_GROUPS {
        if PATH_GROUPS.contains(&what) && !path_hooks {
            detail.push_str(&format!("{what}: not used (--no-lsm-path-hooks); "));
            continue;
        }
        if layout.degraded & needs != 0 {
            detail.push_str(&format!("{what}: not used (kernel lacks fields they read); "));
            continue;
        }
        let mut group = Vec::new();
        let mut failed = None;
        for hook in hooks.iter() {
            let function = security_function(hook);
            let Some(&params) = layout.func_params.get(&function) else {
                failed = Some(format!("no {function} in the kernel's BTF"));
                break;
            };
            // The program reads the arguments as the security_* function passes them: a
            // hook with one program per prototype gets the one for the function's (6.1's
            // security_inode_setattr takes the user namespace its hook does not).
            let program = lsm_variant(hook, &BTreeMap::from([(*hook, params)]));
            let expected =
                variant_params(program).or_else(|| layout.func_params.get(&format!("bpf_lsm_{hook}")).copied());
            if expected != Some(params) {
                failed = Some(format!(
                    "{function} takes {params} parameters, program {program} reads {expected:?}"
                ));
                break;
            }
            let id = match btf.id_by_type_name_kind(&function, aya_obj::btf::BtfKind::Func) {
                Ok(id) => id,
                Err(e) => {
                    failed = Some(format!("{function}: {e}"));
                    break;
                }
            };
            match obj.attach(program, &function, id) {
                Ok(link) => group.push(link),
                Err(e) => {
                    let refused = matches!(&e, modret::ModRetError::Load { error, .. }
                        if error.raw_os_error() == Some(libc::EPERM));
                    if refused {
                        // The kernel refuses tracing programs (lockdown, or no trampolines).
                        attached.programs.retain(|p| !p.starts_with("fmod_ret/"));
                        return (Probe::no(e.to_string()), vec![], vec![]);
                    }
                    warn!("fmod_ret {program} on {function} refused: {e}");
                    failed = Some(e.to_string());
                    break;
                }
            }
        }
        if let Some(why) = failed {
            detail.push_str(&format!("{what}: not used ({why}); "));
            continue;
        }
        attached
            .programs
            .extend(group.iter().map(|l| format!("fmod_ret/{}", l.function)));
        links.extend(group);
        in_effect.push(what);
    }
    if in_effect.is_empty() {
        return (Probe::no(detail.trim_end_matches("; ")), vec![], vec![]);
    }
    detail.insert_str(0, "fmod_ret programs on the security_* functions loaded and attached; ");
    (Probe::yes(detail.trim_end_matches("; ")), in_effect, links)
}

/// Probes BPF LSM by loading and attaching Tether's LSM programs (a real load is the only
/// reliable probe). A kernel that refuses the program type (EPERM) or does not run BPF LSM
/// gets none; a group the verifier rejects, or whose fields this kernel lacks, is left out
/// (openly, in the probe's detail) and the others stay. Returns the probe result and the
/// groups in effect.
#[allow(clippy::too_many_arguments)]
fn attach_lsm(
    ebpf: &mut Ebpf,
    object: &[u8],
    config: &Config,
    btf: Option<&Btf>,
    lsms: &Result<String, features::ProbeError>,
    layout: &kernel_layout::Layout,
    path_hooks: bool,
    attached: &mut Attached,
    links: &mut BTreeMap<&'static str, LsmLinkId>,
) -> (Probe, Vec<&'static str>) {
    let degraded = layout.degraded;
    let Some(btf) = btf else {
        return (Probe::no("the kernel's BTF could not be parsed by the loader"), vec![]);
    };
    let mut in_effect = Vec::new();
    let mut used: Vec<&str> = Vec::new();
    let mut detail = String::new();
    let mut active_checked = false;
    for (what, hooks, needs) in LSM_GROUPS {
        if PATH_GROUPS.contains(&what) && !path_hooks {
            detail.push_str(&format!("{what}: not used (--no-lsm-path-hooks); "));
            continue;
        }
        if degraded & needs != 0 {
            detail.push_str(&format!(
                "{what} ({}): not used (kernel lacks fields they read); ",
                hooks.join(", ")
            ));
            continue;
        }
        // Hooks whose parameters changed across kernels have one program per prototype,
        // picked from the BTF.
        let hooks: Vec<&'static str> = hooks.iter().map(|h| lsm_variant(h, &layout.hook_params)).collect();
        let mut loaded: Vec<&str> = Vec::new();
        let mut failed = None;
        for &hook in &hooks {
            match load_lsm(ebpf, hook, btf) {
                Ok(()) => loaded.push(hook),
                Err(e) => {
                    failed = Some((hook, e));
                    break;
                }
            }
        }
        if let Some((hook, e)) = failed {
            unload_lsm(ebpf, &loaded);
            let mut d = format!("loading lsm/{hook}: {e}");
            if e.to_string().contains("Operation not permitted") {
                // The kernel refuses the program type: no BPF LSM at all.
                unload_lsm(ebpf, &used);
                match lsms {
                    Ok(list) if !features::bpf_lsm_active(list) => {
                        d.push_str(&format!("; `bpf` is not in the active LSMs ({list})"))
                    }
                    Err(why) => d.push_str(&format!("; active LSMs unknown: {why}")),
                    _ => {}
                }
                attached.programs.retain(|p| !p.starts_with("lsm/"));
                return (Probe::no(d), vec![]);
            }
            // Our program failing the verifier: the full story is in the verbose log (which
            // can take minutes under emulation; TETHER_VERIFIER_LOG=short keeps the first).
            warn!("lsm/{hook} refused by the verifier: {e}");
            if std::env::var("TETHER_VERIFIER_LOG").as_deref() != Ok("short") {
                warn!("{}", verbose_log(object, config, hook, |e| load_lsm(e, hook, btf)));
            }
            detail.push_str(&format!("{what}: not used ({d}); "));
            continue;
        }
        if !active_checked {
            let why = match lsms {
                Ok(list) if features::bpf_lsm_active(list) => None,
                Ok(list) => Some(format!(
                    "lsm programs load, but `bpf` is not in the active LSMs ({list}), so they would never run; boot with lsm=...,bpf"
                )),
                Err(why) => Some(format!("lsm programs load, but the active LSMs are unknown ({why})")),
            };
            if let Some(why) = why {
                unload_lsm(ebpf, &loaded);
                return (Probe::no(why), vec![]);
            }
            active_checked = true;
        }
        let mut attach_err = None;
        for &hook in &hooks {
            match program::<Lsm>(ebpf, hook).and_then(|p| p.attach().map_err(prog_err(hook))) {
                Ok(id) => {
                    links.insert(hook, id);
                }
                Err(e) => {
                    attach_err = Some(format!("attaching lsm/{hook}: {e}"));
                    break;
                }
            }
        }
        if let Some(e) = attach_err {
            unload_lsm(ebpf, &loaded);
            detail.push_str(&format!("{what}: not used ({e}); "));
            continue;
        }
        attached.programs.extend(hooks.iter().map(|h| format!("lsm/{h}")));
        used.extend(hooks.iter().copied());
        in_effect.push(what);
    }
    if in_effect.is_empty() {
        return (Probe::no(detail.trim_end_matches("; ")), vec![]);
    }
    detail.insert_str(0, "lsm programs loaded and attached; ");
    (Probe::yes(detail.trim_end_matches("; ")), in_effect)
}

/// Loads tracepoint program `prog` and attaches it to `{dir}_{name}` of each syscall named,
/// where this kernel has that tracepoint (the others are listed in `missing`).
#[allow(clippy::too_many_arguments)]
fn attach_syscalls<'a>(
    ebpf: &mut Ebpf,
    object: &[u8],
    config: &Config,
    pins: &mut Pins,
    missing: &mut Vec<String>,
    prog: &str,
    dir: &str,
    names: impl IntoIterator<Item = &'a str>,
) -> Result<(), LoadError> {
    load_required(ebpf, object, config, prog, |e| load_tracepoint(e, prog))?;
    for name in names {
        let event = format!("{dir}_{name}");
        if !Path::new(TRACEFS).join("events/syscalls").join(&event).exists() {
            missing.push(format!("tracepoint/syscalls/{event}: not on this kernel"));
            continue;
        }
        pins.attach_tracepoint(ebpf, prog, "syscalls", &event, &format!("{prog}@{event}"))?;
    }
    Ok(())
}

/// Loads a probe-only program and unloads it again.
fn probe_load(
    ebpf: &mut Ebpf,
    name: &str,
    load: impl Fn(&mut Ebpf) -> Result<(), LoadError>,
    unload: impl Fn(&mut Ebpf) -> Result<(), LoadError>,
) -> Probe {
    match load(ebpf) {
        Ok(()) => {
            if let Err(e) = unload(ebpf) {
                debug!("unloading probe {name}: {e}");
            }
            Probe::yes(format!("{name} loaded"))
        }
        Err(e) => Probe::no(format!("{name}: {e}")),
    }
}

/// Loads and attaches everything. `selectors` become the in-kernel agent selector maps.
/// `path_hooks`: also use the BPF LSM path hooks where BPF LSM is in effect (see
/// `LSM_GROUPS`).
///
/// `persist`: pin the links and share the state maps (see [`crate::persist`]); the programs
/// act only once [`Probes::activate`] hands over to `generation`, unless there was nothing to
/// hand over from (new maps), when they act from the first attachment. Without `persist` they
/// always act from the first attachment.
pub fn load(
    selectors: &CompiledSelectors,
    rules: &Rules,
    path_hooks: bool,
    persist: Option<&Persist>,
    generation: u64,
) -> Result<Probes, LoadError> {
    let r = load_generation(selectors, rules, path_hooks, persist, generation);
    // A load that fails half way leaves none of its links pinned: the previous generation, if
    // any, stays in charge; with none, nothing of this one stays attached.
    if r.is_err()
        && let Some(p) = persist
        && p.gen_dir(generation).exists()
    {
        match p.unpin(&p.gen_name(generation)) {
            Ok(n) => info!(pins = n, "load failed: unpinned this generation's links"),
            Err(e) => error!("load failed, and unpinning this generation's links failed too: {e}"),
        }
    }
    r
}

fn load_generation(
    selectors: &CompiledSelectors,
    rules: &Rules,
    path_hooks: bool,
    persist: Option<&Persist>,
    generation: u64,
) -> Result<Probes, LoadError> {
    let object = BPF_OBJECT.ok_or(LoadError::NoObject)?;
    if !nix::unistd::geteuid().is_root() {
        return Err(LoadError::NotRoot);
    }
    ensure_tracefs()?;
    let self_tgid = std::process::id();
    let layout = kernel_layout::layout(Path::new(BTF_PATH), Path::new(TRACEFS), self_tgid, &prototypes())?;
    let (mut config, degraded) = (layout.config, layout.degraded);
    let missing = |feature: &str| {
        layout
            .degradations
            .iter()
            .filter(|d| d.feature == feature)
            .flat_map(|d| d.missing.clone())
            .collect::<Vec<_>>()
            .join(", ")
    };
    if selectors.any_exe() && degraded & need::EXE_INODE != 0 {
        return Err(LoadError::ExeSelectorsUnavailable(missing("executable selectors")));
    }
    if selectors.any_cgroup() && degraded & need::CGROUP != 0 {
        return Err(LoadError::CgroupSelectorsUnavailable(missing("cgroup selectors")));
    }
    let kernel_selectors = selectors.kernel();
    config.selectors = kernel_selectors.all;
    config.select_free = kernel_selectors.free;
    config.generation = generation;
    debug!(?config, "kernel layout");

    let mut loader = EbpfLoader::new();
    loader.override_global("CONFIG", &config, true);
    let mut adopted_maps = false;
    if let Some(p) = persist {
        p.prepare(generation)?;
        adopted_maps = p.maps_dir().join("TRACKED").exists();
        for name in persist::SHARED_MAPS {
            loader.map_pin_path(name, p.maps_dir().join(name));
        }
    }
    let mut pins = Pins {
        dir: persist.map(|p| p.gen_dir(generation)),
        links: Vec::new(),
        kept: Kept {
            generation,
            adopted_maps,
            ..Kept::default()
        },
        perf_links: None,
    };
    let mut ebpf = loader.load(object).map_err(|e| {
        if e.to_string().contains("EVENTS") {
            LoadError::NoRingBuffer(e.to_string())
        } else {
            LoadError::Load(e)
        }
    })?;
    let btf = Btf::from_sys_fs().ok();
    // The maps' fds, for the fmod_ret fallback's own relocation (before any map is moved out).
    let map_fds = modret::Maps::of(&ebpf);
    let mut attached = Attached::default();
    let mut missing_tracepoints = Vec::new();

    // Who acts: this load at once, unless it takes over maps a previous daemon left.
    let mut active: Array<MapData, u64> = Array::try_from(take_map(&mut ebpf, "ACTIVE")?).map_err(map_err("ACTIVE"))?;
    if !adopted_maps {
        active.set(0, generation, 0).map_err(map_err("ACTIVE"))?;
    }
    // Selector maps first, so an exec right after attach is already judged.
    fill_selector_map(&mut ebpf, "SELECT_COMM", &kernel_selectors.comm)?;
    fill_selector_map(&mut ebpf, "SELECT_EXE", &kernel_selectors.exe)?;
    fill_selector_map(&mut ebpf, "SELECT_UID", &kernel_selectors.uid)?;
    fill_selector_map(&mut ebpf, "SELECT_CGROUP", &kernel_selectors.cgroup)?;
    // Containment rules before any program runs: guardrails hold from the first record on.
    let mut kernel_rules = {
        let mut take = |name: &'static str| take_map(&mut ebpf, name);
        KernelRules::new(
            LpmTrie::try_from(take("PATH_RULES")?).map_err(map_err("PATH_RULES"))?,
            LpmTrie::try_from(take("TAIL_RULES")?).map_err(map_err("TAIL_RULES"))?,
            LpmTrie::try_from(take("NET_RULES")?).map_err(map_err("NET_RULES"))?,
            HashMap::try_from(take("GRANTS")?).map_err(map_err("GRANTS"))?,
            Array::try_from(take("POSTURE")?).map_err(map_err("POSTURE"))?,
            Array::try_from(take("GUARD_VERDICTS")?).map_err(map_err("GUARD_VERDICTS"))?,
        )
    };
    if adopted_maps {
        pins.kept.rule_owners = kernel_rules
            .adopt()
            .map_err(|e| LoadError::Rules(e.to_string()))?
            .into_iter()
            .collect();
    }
    // The guard sets the adopted maps hold stay until the pod watch says which are in use.
    let sets: std::collections::BTreeSet<u32> = pins
        .kept
        .rule_owners
        .iter()
        .filter_map(|o| agent_common::contain::guard_set_of_owner(*o))
        .collect();
    contain::install_rules(&mut kernel_rules, rules, &sets).map_err(|e| LoadError::Rules(e.to_string()))?;

    // Lineage first: a fork must never be missed between other attachments.
    load_required(&mut ebpf, object, &config, "sched_process_fork", |e| {
        let p: &mut RawTracePoint = program(e, "sched_process_fork")?;
        p.load().map_err(prog_err("sched_process_fork"))
    })?;
    let fork: &mut RawTracePoint = program(&mut ebpf, "sched_process_fork")?;
    let id = fork
        .attach("sched_process_fork")
        .map_err(prog_err("sched_process_fork"))?;
    if pins.dir.is_some() {
        let link = fork.take_link(id).map_err(prog_err("sched_process_fork"))?;
        pins.pin("sched_process_fork", link.into())?;
    }
    attached.programs.push("raw_tp/sched_process_fork".into());
    for name in ["sched_process_exit", "sched_process_exec"] {
        load_required(&mut ebpf, object, &config, name, |e| load_tracepoint(e, name))?;
        pins.attach_tracepoint(&mut ebpf, name, "sched", name, name)?;
        attached.programs.push(format!("tracepoint/sched/{name}"));
    }

    // BPF LSM where the kernel allows it: the hooks that can refuse an action before it happens.
    let lsms = features::active_lsms();
    let mut lsm_links = BTreeMap::new();
    let (bpf_lsm, lsm_hooks) = attach_lsm(
        &mut ebpf,
        object,
        &config,
        btf.as_ref(),
        &lsms,
        &layout,
        path_hooks,
        &mut attached,
        &mut lsm_links,
    );
    if pins.dir.is_some() {
        for (hook, id) in lsm_links {
            if attached.programs.iter().any(|p| p.strip_prefix("lsm/") == Some(hook)) {
                let p: &mut Lsm = program(&mut ebpf, hook)?;
                let link = p.take_link(id).map_err(prog_err(hook))?;
                pins.pin(&format!("lsm_{hook}"), link.into())?;
            }
        }
    }
    let mut lsm_hooks = lsm_hooks;
    // No BPF LSM: the same programs as fmod_ret on the security_* functions, where the kernel
    // allows BPF trampolines.
    let (fmod_ret, modret_links) = match (&btf, &map_fds) {
        _ if !lsm_hooks.is_empty() => (Probe::no("not needed: BPF LSM is in effect"), Vec::new()),
        (Some(btf), Ok(maps)) => {
            let (probe, groups, links) = attach_modret(maps, object, btf, &layout, path_hooks, &mut attached);
            lsm_hooks = groups;
            (probe, links)
        }
        (None, _) => (
            Probe::no("the kernel's BTF could not be parsed by the loader"),
            Vec::new(),
        ),
        (_, Err(e)) => (Probe::no(e.to_string()), Vec::new()),
    };
    drop(map_fds);
    if let Some(dir) = &pins.dir {
        for link in &modret_links {
            let name = format!("fmodret_{}", link.function);
            link.pin(&dir.join(&name)).map_err(|e| LoadError::Pin {
                name: name.clone(),
                reason: e.to_string(),
            })?;
            pins.kept.pinned.push(name);
        }
    }
    if lsm_hooks.contains(&"file_names") && layout.uring_workers_in_process {
        // The path hooks see what a ring does only where its async workers are threads of
        // the process (5.12+); before, rings are judged as where BPF LSM is absent.
        lsm_hooks.push("io_uring");
    }
    let lsm = |what: &str| lsm_hooks.contains(&what);

    // Network: cgroup hooks at the cgroup v2 root (they see every process; the programs
    // judge tracked ones only). Connects, sends with an explicit destination and binds
    // always come from here (where LSM judges connects too, the connect hooks still see TCP
    // Fast Open, which no LSM connect hook does, and record only what LSM did not); IP
    // socket creation from here where the LSM socket hooks are not in effect.
    let root = cgroup2_root()?;
    let cgroup = File::open(&root).map_err(|source| LoadError::Cgroup {
        path: root.display().to_string(),
        source,
    })?;
    let sock_progs = ["connect4", "connect6", "sendmsg4", "sendmsg6", "bind4", "bind6"];
    for &name in &sock_progs {
        load_required(&mut ebpf, object, &config, name, |e| load_sock_addr(e, name))?;
        let p: &mut CgroupSockAddr = program(&mut ebpf, name)?;
        let id = p.attach(&cgroup, CgroupAttachMode::default()).map_err(prog_err(name))?;
        if pins.dir.is_some() {
            let link = p.take_link(id).map_err(prog_err(name))?;
            match FdLink::try_from(link) {
                Ok(fd) => pins.pin(name, fd)?,
                Err(_) => {
                    p.attach(&cgroup, CgroupAttachMode::default()).map_err(prog_err(name))?;
                    pins.kept
                        .not_pinned
                        .push(format!("{name}: cgroup attachments are not BPF links before Linux 5.7"));
                }
            }
        }
        attached.programs.push(format!("cgroup_sock_addr/{name}"));
    }
    let mut features_bits = 0u32;
    let sock_create = if lsm("sockets") {
        Probe::no("not used: the BPF LSM socket_create hook judges every family")
    } else {
        match attach_sock_create(&mut ebpf, &cgroup, &mut pins) {
            Ok(()) => {
                features_bits |= feature::CGROUP_SOCK;
                attached.programs.push("cgroup_sock/sock_create".into());
                Probe::yes("sock_create loaded and attached")
            }
            Err(e) => {
                warn!("cgroup sock_create is not used ({e}): IP socket creation is judged at the socket syscall");
                Probe::no(e.to_string())
            }
        }
    };
    attached.cgroup_root = root;

    // File writes: one entry and one exit program, attached to each watched syscall (opens go
    // to LSM file_open where it is in effect).
    for (prog, dir) in [("sys_enter_file", "sys_enter"), ("sys_exit_file", "sys_exit")] {
        load_required(&mut ebpf, object, &config, prog, |e| load_tracepoint(e, prog))?;
        for sc in syscalls::WATCHED {
            if lsm("file_write") && sc.is_open() {
                continue;
            }
            let event = format!("{dir}_{}", sc.name);
            if !Path::new(TRACEFS).join("events/syscalls").join(&event).exists() {
                missing_tracepoints.push(format!("tracepoint/syscalls/{event}: not on this kernel"));
                continue;
            }
            pins.attach_tracepoint(&mut ebpf, prog, "syscalls", &event, &format!("{prog}@{event}"))?;
        }
        attached.programs.push(format!("tracepoint/syscalls/{dir}_* ({prog})"));
    }

    // Refused execs (Landlock, LSMs, permissions): sched_process_exec never sees them, the
    // execve/execveat syscall tracepoints do (they cost nothing to other syscalls).
    for (prog, events) in [
        ("sys_enter_execve", &["sys_enter_execve"][..]),
        ("sys_enter_execveat", &["sys_enter_execveat"][..]),
        ("sys_exit_execve", &["sys_exit_execve", "sys_exit_execveat"][..]),
    ] {
        load_required(&mut ebpf, object, &config, prog, |e| load_tracepoint(e, prog))?;
        for event in events {
            if !Path::new(TRACEFS).join("events/syscalls").join(event).exists() {
                missing_tracepoints.push(format!("tracepoint/syscalls/{event}: not on this kernel"));
                continue;
            }
            pins.attach_tracepoint(&mut ebpf, prog, "syscalls", event, &format!("{prog}@{event}"))?;
            attached.programs.push(format!("tracepoint/syscalls/{event}"));
        }
    }

    // Sockets the cgroup hooks do not see, where no BPF LSM hook judges them (see the sock
    // module of agent-ebpf): socket() of other families, Unix connects and datagrams, listens;
    // accepted connections everywhere.
    let mut sock_calls: Vec<&str> = vec!["accept", "accept4"];
    if !lsm("sockets") {
        sock_calls.extend(["socket", "listen"]);
    }
    if !lsm("unix") {
        sock_calls.extend(["connect", "sendto", "sendmsg", "sendmmsg"]);
    }
    if degraded & need::SOCKETS != 0 {
        sock_calls.retain(|c| *c == "socket");
    }
    // Which calls need their entry (the fd of a connect or listen is read there) and exit.
    let at_entry = |c: &str| c != "accept" && c != "accept4";
    let at_exit = |c: &str| matches!(c, "connect" | "listen" | "accept" | "accept4");
    for (prog, dir, wanted) in [
        ("sys_enter_sock", "sys_enter", &at_entry as &dyn Fn(&str) -> bool),
        ("sys_exit_sock", "sys_exit", &at_exit),
    ] {
        let calls: Vec<_> = syscalls::SOCKET_WATCHED
            .iter()
            .filter(|sc| sock_calls.contains(&sc.name) && wanted(sc.name))
            .collect();
        if calls.is_empty() {
            continue;
        }
        load_required(&mut ebpf, object, &config, prog, |e| load_tracepoint(e, prog))?;
        for sc in calls {
            let event = format!("{dir}_{}", sc.name);
            if !Path::new(TRACEFS).join("events/syscalls").join(&event).exists() {
                missing_tracepoints.push(format!("tracepoint/syscalls/{event}: not on this kernel"));
                continue;
            }
            pins.attach_tracepoint(&mut ebpf, prog, "syscalls", &event, &format!("{prog}@{event}"))?;
        }
        attached.programs.push(format!("tracepoint/syscalls/{dir}_* ({prog})"));
    }

    // Refusals of `tether exec`'s seccomp filter: a refused call reaches only its exit
    // tracepoint (see agent-ebpf's sandbox module).
    for (prog, dir) in [("sys_enter_sandboxed", "sys_enter"), ("sys_exit_sandboxed", "sys_exit")] {
        let names = syscalls::SANDBOXED.iter().map(|sc| sc.name);
        attach_syscalls(
            &mut ebpf,
            object,
            &config,
            &mut pins,
            &mut missing_tracepoints,
            prog,
            dir,
            names,
        )?;
        attached.programs.push(format!("tracepoint/syscalls/{dir}_* ({prog})"));
    }

    // Refusals of the sandbox's Landlock TCP rights (ABI 4+): refused in an LSM hook before
    // any of ours, recorded at the call's exit (see agent-ebpf's landlock module).
    if features::landlock_abi().is_ok_and(|abi| abi >= 4) {
        for (prog, dir) in [
            ("sys_enter_landlocked", "sys_enter"),
            ("sys_exit_landlocked", "sys_exit"),
        ] {
            let names = syscalls::LANDLOCKED.iter().map(|sc| sc.name);
            attach_syscalls(
                &mut ebpf,
                object,
                &config,
                &mut pins,
                &mut missing_tracepoints,
                prog,
                dir,
                names,
            )?;
            attached
                .programs
                .push(format!("tracepoint/syscalls/{dir}_connect,bind ({prog})"));
        }
    }

    // io_uring: where the BPF LSM path hooks are not in effect (or cannot attribute a ring's
    // async work: kernels before 5.12) nothing sees what a ring does, so rings must be granted.
    if !lsm("io_uring") {
        for prog in ["sys_enter_io_uring_setup", "sys_enter_io_uring_enter"] {
            load_required(&mut ebpf, object, &config, prog, |e| load_tracepoint(e, prog))?;
            if !Path::new(TRACEFS).join("events/syscalls").join(prog).exists() {
                missing_tracepoints.push(format!("tracepoint/syscalls/{prog}: not on this kernel"));
                continue;
            }
            pins.attach_tracepoint(&mut ebpf, prog, "syscalls", prog, prog)?;
            attached.programs.push(format!("tracepoint/syscalls/{prog}"));
        }
    }
    let mut features_map: Array<MapData, u32> =
        Array::try_from(take_map(&mut ebpf, "FEATURES")?).map_err(map_err("FEATURES"))?;
    features_map.set(0, features_bits, 0).map_err(map_err("FEATURES"))?;

    let fentry = match btf.as_ref() {
        Some(btf) => probe_load(
            &mut ebpf,
            "probe_fentry",
            |e| {
                let p: &mut FEntry = program(e, "probe_fentry")?;
                p.load("security_file_open", btf).map_err(prog_err("probe_fentry"))
            },
            |e| {
                let p: &mut FEntry = program(e, "probe_fentry")?;
                p.unload().map_err(prog_err("probe_fentry"))
            },
        ),
        None => Probe::no("the kernel's BTF could not be parsed by the loader"),
    };
    let send_signal = probe_load(
        &mut ebpf,
        "probe_send_signal",
        |e| load_tracepoint(e, "probe_send_signal"),
        |e| {
            let p: &mut TracePoint = program(e, "probe_send_signal")?;
            p.unload().map_err(prog_err("probe_send_signal"))
        },
    );
    let (landlock_abi, landlock) = match features::landlock_abi() {
        Ok(v) => (Some(v), Probe::yes(format!("landlock_create_ruleset: ABI {v}"))),
        Err(e) => (None, Probe::no(e.to_string())),
    };
    let mut hooks = features::hook_mechanisms(&lsm_hooks, send_signal.available, features_bits);
    if fmod_ret.available {
        for h in &mut hooks {
            h.mechanism = features::via_fmod_ret(&h.mechanism);
        }
    }
    let report = KernelReport {
        kernel: features::kernel_release(),
        features: Features {
            bpf_lsm,
            fmod_ret,
            fentry,
            cgroup_sock_addr: Probe::yes(format!("{} loaded and attached", sock_progs.join(", "))),
            cgroup_sock: sock_create,
            ring_buffer: Probe::yes("PROC_EVENTS, NET_EVENTS, FILE_EVENTS and ALERT_EVENTS ring buffers created"),
            send_signal,
            landlock_abi,
            landlock,
            active_lsms: lsms.ok(),
        },
        hooks,
        lsm_groups: lsm_hooks.iter().map(|g| g.to_string()).collect(),
        degraded: layout.degradations.clone(),
        missing_tracepoints,
    };

    let rings = RINGS
        .iter()
        .map(|name| RingBuf::try_from(take_map(&mut ebpf, name)?).map_err(map_err(name)))
        .collect::<Result<Vec<_>, _>>()?;
    let tracked_map = take_map(&mut ebpf, "TRACKED")?;
    // A second handle on the same map, for the API's connection caps (a lookup per
    // connection, without a round trip through the daemon's loop).
    let tracked_view = match &tracked_map {
        aya::maps::Map::HashMap(data) => data
            .info()
            .and_then(|i| i.fd())
            .ok()
            .and_then(|fd| std::os::fd::AsFd::as_fd(&fd).try_clone_to_owned().ok())
            .and_then(|fd| aya::maps::MapData::from_fd(fd).ok())
            .and_then(|d| HashMap::try_from(aya::maps::Map::HashMap(d)).ok()),
        _ => None,
    };
    let tracked = HashMap::try_from(tracked_map).map_err(map_err("TRACKED"))?;
    let counters = PerCpuArray::try_from(take_map(&mut ebpf, "COUNTERS")?).map_err(map_err("COUNTERS"))?;
    let select_cgroup = HashMap::try_from(take_map(&mut ebpf, "SELECT_CGROUP")?).map_err(map_err("SELECT_CGROUP"))?;
    let pod_guards = HashMap::try_from(take_map(&mut ebpf, "POD_GUARDS")?).map_err(map_err("POD_GUARDS"))?;
    Ok(Probes {
        _ebpf: ebpf,
        tracked_view: std::sync::Arc::new(std::sync::Mutex::new(tracked_view)),
        active,
        _pinned: pins.links,
        _modret: modret_links,
        kept: persist.is_some().then_some(pins.kept),
        rings,
        tracked,
        counters,
        select_cgroup,
        pod_guards,
        static_cgroups: kernel_selectors.cgroup.clone(),
        rules: kernel_rules,
        attached,
        report,
    })
}

/// Loads and attaches the cgroup sock_create program (IP socket creation), pinned with
/// --persist.
fn attach_sock_create(ebpf: &mut Ebpf, cgroup: &File, pins: &mut Pins) -> Result<(), LoadError> {
    let p: &mut CgroupSock = program(ebpf, "sock_create")?;
    p.load().map_err(prog_err("sock_create"))?;
    let id = p
        .attach(cgroup, CgroupAttachMode::default())
        .map_err(prog_err("sock_create"))?;
    if pins.dir.is_some() {
        let link = p.take_link(id).map_err(prog_err("sock_create"))?;
        match FdLink::try_from(link) {
            Ok(fd) => pins.pin("sock_create", fd)?,
            Err(_) => {
                p.attach(cgroup, CgroupAttachMode::default())
                    .map_err(prog_err("sock_create"))?;
                pins.kept
                    .not_pinned
                    .push("sock_create: cgroup attachments are not BPF links before Linux 5.7".into());
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use agent_common::InodeKey;

    use super::*;

    #[test]
    fn comm_keys_are_nul_padded_and_cut_like_the_kernel() {
        let comm_key = selectors::comm_key;
        assert_eq!(&comm_key("bash")[..5], b"bash\0");
        let k = comm_key("a-very-long-process-name");
        assert_eq!(&k[..15], b"a-very-long-pro");
        assert_eq!(k[15], 0);
    }

    /// Every LSM hook has its security_* function among the prototypes compared, and the
    /// mechanism names in reports follow them.
    #[test]
    fn each_lsm_hook_maps_to_the_security_function_that_calls_it() {
        assert_eq!(security_function("bprm_check_security"), "security_bprm_check");
        assert_eq!(security_function("file_open"), "security_file_open");
        let protos = prototypes();
        for (_, hooks, _) in LSM_GROUPS {
            for h in hooks {
                assert!(protos.contains(&format!("bpf_lsm_{h}")), "{h}");
                assert!(protos.contains(&security_function(h)), "{h}");
            }
        }
        // Each variant is the one picked for the parameter count it says it reads.
        for hook in kernel_layout::VARIANT_HOOKS {
            for n in 2..=6 {
                let program = lsm_variant(hook, &BTreeMap::from([(hook, n)]));
                if let Some(p) = variant_params(program) {
                    assert!(
                        p == n || lsm_variant(hook, &BTreeMap::from([(hook, p)])) == program,
                        "{hook}/{n}"
                    );
                }
            }
            assert!(variant_params(hook).is_some(), "{hook}");
        }
        assert_eq!(
            features::via_fmod_ret("lsm/bprm_check_security, tracepoint/sched/sched_process_exec"),
            "fmod_ret/security_bprm_check, tracepoint/sched/sched_process_exec"
        );
        assert_eq!(
            features::via_fmod_ret("lsm/unix_stream_connect, lsm/unix_may_send"),
            "fmod_ret/security_unix_stream_connect, fmod_ret/security_unix_may_send"
        );
    }

    #[test]
    fn exe_key_uses_the_kernel_dev_encoding() {
        let k = InodeKey::from_stat(libc::makedev(8, 1), 42);
        assert_eq!(k.dev, (8 << 20) | 1);
        assert_eq!(k.ino, 42);
        let k = InodeKey::from_stat(libc::makedev(259, 300), 1);
        assert_eq!(k.dev, (259 << 20) | 300);
    }
}
