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
    programs::{self, Dir, Events, Kind, LsmGroup, PROGRAMS, Program, Syscalls, Via, When, security_function},
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
    ebpf: Ebpf,
    /// ACTIVE: the generation whose programs act.
    active: Array<MapData, u64>,
    _pinned: Vec<PinnedLink>,
    /// The fmod_ret links, where they stand in for BPF LSM (detached when dropped).
    modret: Vec<modret::Link>,
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

    /// Per program (by name; an LSM program and its fmod_ret twin are one), the calls the
    /// kernel ran it for none of, since it was loaded ([`modret::recursion_misses`]); only the
    /// programs the kernel counts them for (none before 5.12).
    pub fn skipped(&self) -> BTreeMap<String, u64> {
        let mut out: BTreeMap<String, u64> = BTreeMap::new();
        let fds = self
            .ebpf
            .programs()
            .filter_map(|(name, p)| Some((name, std::os::fd::AsFd::as_fd(p.fd().ok()?))))
            .chain(self.modret.iter().map(|l| (l.program.as_str(), l.program_fd())));
        for (name, fd) in fds {
            if let Ok(Some(n)) = modret::recursion_misses(fd) {
                *out.entry(name.to_string()).or_default() += n;
            }
        }
        out
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

/// The program for `hook` on a kernel whose prototypes are `params` (parameter counts).
fn lsm_variant(hook: &'static str, params: &BTreeMap<&'static str, u32>) -> &'static str {
    programs::lsm_variant(hook, params.get(hook).copied())
}

/// The parameter count program `name` was written for, for the hooks with one program per
/// prototype ([`lsm_variant`]); None for the others (they follow the running kernel's hook).
fn variant_params(name: &str) -> Option<u32> {
    match programs::get(name).kind {
        Kind::Lsm { params, .. } => params,
        _ => None,
    }
}

/// Loads LSM program `name` for its hook.
fn load_lsm(ebpf: &mut Ebpf, name: &str, btf: &Btf) -> Result<(), LoadError> {
    let hook = programs::get(name).lsm_hook().unwrap_or(name);
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

/// Unloads (and so detaches) LSM programs loaded so far.
fn unload_lsm(ebpf: &mut Ebpf, hooks: &[&str]) {
    for hook in hooks {
        if let Err(e) = program::<Lsm>(ebpf, hook).and_then(|p| p.unload().map_err(prog_err(*hook))) {
            debug!("unloading lsm/{hook}: {e}");
        }
    }
}

/// The kernel functions whose prototypes the loader compares: each LSM hook's `bpf_lsm_*`
/// and its `security_*` function.
fn prototypes() -> Vec<String> {
    programs::lsm_groups()
        .into_iter()
        .flat_map(|(_, hooks)| hooks)
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
    let before = attached.programs.len();
    for (group_id, hooks) in programs::lsm_groups() {
        let what = group_id.as_str();
        if group_id.is_path() && !path_hooks {
            detail.push_str(&format!("{what}: not used (--no-lsm-path-hooks); "));
            continue;
        }
        if layout.degraded & group_id.needs() != 0 {
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
            let program = programs::lsm_variant(hook, Some(params));
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
                        attached.programs.truncate(before);
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
    let before = attached.programs.len();
    for (group, hooks) in programs::lsm_groups() {
        let what = group.as_str();
        if group.is_path() && !path_hooks {
            detail.push_str(&format!("{what}: not used (--no-lsm-path-hooks); "));
            continue;
        }
        if degraded & group.needs() != 0 {
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
                attached.programs.truncate(before);
                links.clear();
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
                links.clear();
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
            // Only the links of groups in effect are pinned.
            for hook in &hooks {
                links.remove(hook);
            }
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

/// What the LSM groups gave: BPF LSM, or fmod_ret in its place, or neither.
struct LsmPhase {
    bpf_lsm: Probe,
    fmod_ret: Probe,
    /// The groups in effect (`io_uring` too where the path hooks see what a ring does).
    groups: Vec<&'static str>,
    modret_links: Vec<modret::Link>,
}

/// The LSM programs of the table, group by group: BPF LSM where the kernel allows it (the
/// hooks that can refuse an action before it happens), else the same programs as fmod_ret on
/// the security_* functions where the kernel allows BPF trampolines. Pinned with --persist.
#[allow(clippy::too_many_arguments)]
fn attach_lsm_groups(
    ebpf: &mut Ebpf,
    object: &[u8],
    config: &Config,
    btf: Option<&Btf>,
    lsms: &Result<String, features::ProbeError>,
    layout: &kernel_layout::Layout,
    path_hooks: bool,
    pins: &mut Pins,
    attached: &mut Attached,
    map_fds: Result<modret::Maps, modret::ModRetError>,
) -> Result<LsmPhase, LoadError> {
    let mut lsm_links = BTreeMap::new();
    let (bpf_lsm, mut groups) = attach_lsm(
        ebpf,
        object,
        config,
        btf,
        lsms,
        layout,
        path_hooks,
        attached,
        &mut lsm_links,
    );
    if pins.dir.is_some() {
        // The links of the groups in effect (attach_lsm keeps no other).
        for (hook, id) in lsm_links {
            let p: &mut Lsm = program(ebpf, hook)?;
            let link = p.take_link(id).map_err(prog_err(hook))?;
            pins.pin(&format!("lsm_{hook}"), link.into())?;
        }
    }
    let (fmod_ret, modret_links) = match (btf, &map_fds) {
        _ if !groups.is_empty() => (Probe::no("not needed: BPF LSM is in effect"), Vec::new()),
        (Some(btf), Ok(maps)) => {
            let (probe, in_effect, links) = attach_modret(maps, object, btf, layout, path_hooks, attached);
            groups = in_effect;
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
    if groups.contains(&LsmGroup::FileNames.as_str()) && layout.uring_workers_in_process {
        // The path hooks see what a ring does only where its async workers are threads of
        // the process (5.12+); before, rings are judged as where BPF LSM is absent.
        groups.push(LsmGroup::IoUring.as_str());
    }
    Ok(LsmPhase {
        bpf_lsm,
        fmod_ret,
        groups,
        modret_links,
    })
}

/// The tracepoints program `p` is attached to on this kernel, given the LSM groups in effect
/// and what is degraded.
fn events_of(p: &Program, lsm: &dyn Fn(LsmGroup) -> bool, degraded: u32) -> Vec<String> {
    let Kind::Tracepoint { events, .. } = p.kind else {
        return Vec::new();
    };
    let (dir, set) = match events {
        Events::Own => return vec![p.name.to_string()],
        Events::Named(names) => return names.iter().map(|n| n.to_string()).collect(),
        Events::Syscalls(dir, set) => (dir, set),
    };
    let names: Vec<&str> = match set {
        // Opens go to LSM file_open where it is in effect.
        Syscalls::File => syscalls::WATCHED
            .iter()
            .filter(|sc| !(lsm(LsmGroup::FileWrite) && sc.is_open()))
            .map(|sc| sc.name)
            .collect(),
        Syscalls::Socket => {
            // Sockets the cgroup hooks do not see, where no BPF LSM hook judges them (see
            // the sock module of agent-ebpf): socket() of other families, Unix connects and
            // datagrams, listens; accepted connections everywhere.
            let mut calls: Vec<&str> = vec!["accept", "accept4"];
            if !lsm(LsmGroup::Sockets) {
                calls.extend(["socket", "listen"]);
            }
            if !lsm(LsmGroup::Unix) {
                calls.extend(["connect", "sendto", "sendmsg", "sendmmsg"]);
            }
            if degraded & need::SOCKETS != 0 {
                calls.retain(|c| *c == "socket");
            }
            // Which calls need their entry (the fd of a connect or listen is read there)
            // and exit.
            let wanted = |c: &str| match dir {
                Dir::Enter => c != "accept" && c != "accept4",
                Dir::Exit => matches!(c, "connect" | "listen" | "accept" | "accept4"),
            };
            syscalls::SOCKET_WATCHED
                .iter()
                .filter(|sc| calls.contains(&sc.name) && wanted(sc.name))
                .map(|sc| sc.name)
                .collect()
        }
        Syscalls::Sandboxed => syscalls::SANDBOXED.iter().map(|sc| sc.name).collect(),
        Syscalls::Landlocked => syscalls::LANDLOCKED.iter().map(|sc| sc.name).collect(),
    };
    names.iter().map(|n| format!("{}_{n}", dir.as_str())).collect()
}

/// One generic attach per kind of program, pinned with --persist.
struct Attach<'a> {
    ebpf: &'a mut Ebpf,
    object: &'a [u8],
    config: &'a Config,
    pins: &'a mut Pins,
    attached: &'a mut Attached,
    missing: &'a mut Vec<String>,
}

impl Attach<'_> {
    fn raw_tracepoint(&mut self, p: &Program, tp: &str) -> Result<(), LoadError> {
        let name = p.name;
        load_required(self.ebpf, self.object, self.config, name, |e| {
            let prog: &mut RawTracePoint = program(e, name)?;
            prog.load().map_err(prog_err(name))
        })?;
        let prog: &mut RawTracePoint = program(self.ebpf, name)?;
        let id = prog.attach(tp).map_err(prog_err(name))?;
        if self.pins.dir.is_some() {
            let link = prog.take_link(id).map_err(prog_err(name))?;
            self.pins.pin(name, link.into())?;
        }
        self.attached.programs.push(p.at(tp));
        Ok(())
    }

    /// Loads tracepoint program `p` and attaches it to each of `events` this kernel has (a
    /// syscall tracepoint it lacks is listed as missing). A program with no event to watch is
    /// not loaded.
    fn tracepoints(&mut self, p: &Program, category: &str, events: &[String]) -> Result<(), LoadError> {
        let Kind::Tracepoint { events: kind, .. } = p.kind else {
            return Ok(());
        };
        if events.is_empty() {
            return Ok(());
        }
        let name = p.name;
        load_required(self.ebpf, self.object, self.config, name, |e| load_tracepoint(e, name))?;
        for event in events {
            // Which syscall tracepoints exist depends on the kernel's configuration.
            if category == "syscalls" && !Path::new(TRACEFS).join("events/syscalls").join(event).exists() {
                self.missing
                    .push(format!("tracepoint/syscalls/{event}: not on this kernel"));
                continue;
            }
            let pin = match kind {
                Events::Own => name.to_string(),
                _ => format!("{name}@{event}"),
            };
            self.pins.attach_tracepoint(self.ebpf, name, category, event, &pin)?;
            if !matches!(kind, Events::Syscalls(..)) {
                self.attached.programs.push(p.at(event));
            }
        }
        if let Events::Syscalls(dir, set) = kind {
            self.attached.programs.push(format!(
                "tracepoint/{category}/{}_{} ({name})",
                dir.as_str(),
                set.shown()
            ));
        }
        Ok(())
    }

    /// Loads cgroup program `p` (`required`: with the verbose verifier log on failure) and
    /// attaches it to `cgroup`.
    fn cgroup(&mut self, p: &Program, cgroup: &File, required: bool) -> Result<(), LoadError> {
        macro_rules! attach {
            ($ty:ty) => {{
                let name = p.name;
                let load = |e: &mut Ebpf| {
                    let prog: &mut $ty = program(e, name)?;
                    prog.load().map_err(prog_err(name))
                };
                if required {
                    load_required(self.ebpf, self.object, self.config, name, load)?;
                } else {
                    load(self.ebpf)?;
                }
                let prog: &mut $ty = program(self.ebpf, name)?;
                let id = prog
                    .attach(cgroup, CgroupAttachMode::default())
                    .map_err(prog_err(name))?;
                if self.pins.dir.is_some() {
                    let link = prog.take_link(id).map_err(prog_err(name))?;
                    match FdLink::try_from(link) {
                        Ok(fd) => self.pins.pin(name, fd)?,
                        Err(_) => {
                            prog.attach(cgroup, CgroupAttachMode::default())
                                .map_err(prog_err(name))?;
                            self.pins.kept.not_pinned.push(format!(
                                "{name}: cgroup attachments are not BPF links before Linux 5.7"
                            ));
                        }
                    }
                }
            }};
        }
        match p.kind {
            Kind::CgroupSockAddr(_) => attach!(CgroupSockAddr),
            Kind::CgroupSock(_) => attach!(CgroupSock),
            _ => return Ok(()),
        }
        self.attached.programs.push(p.at(""));
        Ok(())
    }
}

/// Loads probe program `p` and unloads it again: the load is the probe.
fn probe(ebpf: &mut Ebpf, p: &Program, btf: Option<&Btf>) -> Probe {
    let name = p.name;
    match p.kind {
        Kind::FEntry(function) => match btf {
            Some(btf) => probe_load(
                ebpf,
                name,
                |e| {
                    let prog: &mut FEntry = program(e, name)?;
                    prog.load(function, btf).map_err(prog_err(name))
                },
                |e| {
                    let prog: &mut FEntry = program(e, name)?;
                    prog.unload().map_err(prog_err(name))
                },
            ),
            None => Probe::no("the kernel's BTF could not be parsed by the loader"),
        },
        Kind::Tracepoint { .. } => probe_load(
            ebpf,
            name,
            |e| load_tracepoint(e, name),
            |e| {
                let prog: &mut TracePoint = program(e, name)?;
                prog.unload().map_err(prog_err(name))
            },
        ),
        _ => Probe::no(format!("{name}: no probe of this kind")),
    }
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

    // Every program of the table, in its order (lineage first: a fork must never be missed
    // between other attachments), by its kind; the LSM groups where the first LSM program is.
    let lsms = features::active_lsms();
    let landlock_net = features::landlock_abi().is_ok_and(|abi| abi >= 4);
    let mut lsm_phase: Option<LsmPhase> = None;
    let mut lsm_hooks: Vec<&'static str> = Vec::new();
    let mut cgroup: Option<(PathBuf, File)> = None;
    let mut features_bits = 0u32;
    let mut sock_create = None;
    let mut map_fds = Some(map_fds);
    for p in PROGRAMS {
        let in_effect = |g: LsmGroup, hooks: &[&str]| hooks.contains(&g.as_str());
        let wanted = match p.when {
            When::Always => true,
            When::Without(g) => !in_effect(g, &lsm_hooks),
            When::LandlockNet => landlock_net,
            When::Probe => false,
            When::InGroup => {
                if lsm_phase.is_none() {
                    let phase = attach_lsm_groups(
                        &mut ebpf,
                        object,
                        &config,
                        btf.as_ref(),
                        &lsms,
                        &layout,
                        path_hooks,
                        &mut pins,
                        &mut attached,
                        map_fds.take().expect("once"),
                    )?;
                    lsm_hooks = phase.groups.clone();
                    lsm_phase = Some(phase);
                }
                continue;
            }
        };
        if !wanted {
            if let Kind::CgroupSock(_) = p.kind {
                sock_create = Some(Probe::no(
                    "not used: the BPF LSM socket_create hook judges every family",
                ));
            }
            continue;
        }
        let mut att = Attach {
            ebpf: &mut ebpf,
            object,
            config: &config,
            pins: &mut pins,
            attached: &mut attached,
            missing: &mut missing_tracepoints,
        };
        match p.kind {
            Kind::RawTracepoint(tp) => att.raw_tracepoint(p, tp)?,
            Kind::Tracepoint { category, .. } => {
                let lsm = |g: LsmGroup| in_effect(g, &lsm_hooks);
                let events = events_of(p, &lsm, degraded);
                att.tracepoints(p, category, &events)?;
            }
            Kind::CgroupSockAddr(_) | Kind::CgroupSock(_) => {
                if cgroup.is_none() {
                    // Network: cgroup hooks at the cgroup v2 root (they see every process;
                    // the programs judge tracked ones only).
                    let root = cgroup2_root()?;
                    let file = File::open(&root).map_err(|source| LoadError::Cgroup {
                        path: root.display().to_string(),
                        source,
                    })?;
                    cgroup = Some((root, file));
                }
                let (_, file) = cgroup.as_ref().expect("opened above");
                if !p.optional() {
                    att.cgroup(p, file, true)?;
                    continue;
                }
                // A program with a fallback: the fallback stands in when it fails.
                sock_create = Some(match att.cgroup(p, file, false) {
                    Ok(()) => {
                        features_bits |= feature::CGROUP_SOCK;
                        Probe::yes(format!("{} loaded and attached", p.name))
                    }
                    Err(e) => {
                        warn!(
                            "{} is not used ({e}): IP socket creation is judged at the socket syscall",
                            p.at("")
                        );
                        Probe::no(e.to_string())
                    }
                });
            }
            Kind::Lsm { .. } | Kind::FEntry(_) => {}
        }
    }
    let LsmPhase {
        bpf_lsm,
        fmod_ret,
        modret_links,
        ..
    } = lsm_phase.expect("the table has LSM programs");
    attached.cgroup_root = match cgroup {
        Some((root, _)) => root,
        None => cgroup2_root()?,
    };
    let sock_create = sock_create.expect("the table has a cgroup sock program");
    let mut features_map: Array<MapData, u32> =
        Array::try_from(take_map(&mut ebpf, "FEATURES")?).map_err(map_err("FEATURES"))?;
    features_map.set(0, features_bits, 0).map_err(map_err("FEATURES"))?;

    let fentry = probe(&mut ebpf, programs::get("probe_fentry"), btf.as_ref());
    let send_signal = probe(&mut ebpf, programs::get("probe_send_signal"), btf.as_ref());
    let (landlock_abi, landlock) = match features::landlock_abi() {
        Ok(v) => (Some(v), Probe::yes(format!("landlock_create_ruleset: ABI {v}"))),
        Err(e) => (None, Probe::no(e.to_string())),
    };
    let via = if fmod_ret.available { Via::FmodRet } else { Via::Lsm };
    let hooks = features::hook_mechanisms_via(&lsm_hooks, send_signal.available, features_bits, via);
    let sock_addr: Vec<&str> = PROGRAMS
        .iter()
        .filter(|p| matches!(p.kind, Kind::CgroupSockAddr(_)))
        .map(|p| p.name)
        .collect();
    let report = KernelReport {
        kernel: features::kernel_release(),
        features: Features {
            bpf_lsm,
            fmod_ret,
            fentry,
            cgroup_sock_addr: Probe::yes(format!("{} loaded and attached", sock_addr.join(", "))),
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
        ebpf,
        tracked_view: std::sync::Arc::new(std::sync::Mutex::new(tracked_view)),
        active,
        _pinned: pins.links,
        modret: modret_links,
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
        for (_, hooks) in programs::lsm_groups() {
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
        let via = |groups: &[&str], hook: &str| {
            features::hook_mechanisms_via(groups, true, 0, Via::FmodRet)
                .into_iter()
                .find(|h| h.hook == hook)
                .expect(hook)
                .mechanism
        };
        assert_eq!(
            via(&["exec"], "exec"),
            "fmod_ret/security_bprm_check, tracepoint/sched/sched_process_exec"
        );
        assert_eq!(
            via(&["unix"], "unix"),
            "fmod_ret/security_unix_stream_connect, fmod_ret/security_unix_may_send"
        );
    }

    /// The program table and the built object name the same programs, each of the kind the
    /// table says.
    #[test]
    fn the_object_has_exactly_the_programs_of_the_table() {
        use aya_obj::ProgramSection as S;
        let Some(object) = BPF_OBJECT else {
            eprintln!("built without the BPF programs: no object to compare the table with");
            return;
        };
        let obj = aya_obj::Object::parse(object).expect("the built object parses");
        let mut in_object: Vec<&str> = obj.programs.keys().map(String::as_str).collect();
        in_object.sort_unstable();
        let mut in_table: Vec<&str> = PROGRAMS.iter().map(|p| p.name).collect();
        in_table.sort_unstable();
        assert_eq!(in_object, in_table, "programs of the object / of the table");
        for p in PROGRAMS {
            let section = &obj.programs[p.name].section;
            let agrees = match p.kind {
                Kind::RawTracepoint(_) => matches!(section, S::RawTracePoint),
                Kind::Tracepoint { .. } => matches!(section, S::TracePoint),
                Kind::Lsm { .. } => matches!(section, S::Lsm { .. }),
                Kind::CgroupSockAddr(_) => matches!(section, S::CgroupSockAddr { .. }),
                Kind::CgroupSock(_) => matches!(section, S::CgroupSock { .. }),
                Kind::FEntry(_) => matches!(section, S::FEntry { .. }),
            };
            assert!(
                agrees,
                "{}: {section:?} in the object, {:?} in the table",
                p.name, p.kind
            );
        }
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
