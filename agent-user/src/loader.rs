//! Loading and attaching the BPF programs.
//!
//! Every attachment is an fd-based link owned by this process: when the daemon exits, however
//! it exits (SIGKILL included), the kernel detaches everything. Nothing is pinned.
use std::{
    collections::BTreeSet,
    fs::File,
    os::unix::fs::MetadataExt,
    path::{Path, PathBuf},
};

use agent_common::{COMM_LEN, Config, InodeKey, Tracked, counter, syscalls};
use aya::{
    Ebpf, EbpfLoader, Pod,
    maps::{HashMap, MapData, MapError, PerCpuArray, RingBuf},
    programs::{CgroupAttachMode, CgroupSockAddr, ProgramError, RawTracePoint, TracePoint},
};
use tracing::{debug, info, warn};

use crate::{kernel_layout, policy::Selectors};

pub const BTF_PATH: &str = "/sys/kernel/btf/vmlinux";
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
    #[error("the BPF object has no {0}")]
    Missing(String),
    #[error("agent selector exe {path}: {source}")]
    Selector { path: String, source: std::io::Error },
}

/// What is attached, for the start-up report.
#[derive(Debug, Default)]
pub struct Attached {
    pub programs: Vec<String>,
    /// Hooks this kernel does not have, with the reason (coverage lost, reported).
    pub missing: Vec<String>,
    pub cgroup_root: PathBuf,
}

/// The loaded programs and the maps the daemon uses. Dropping it detaches everything.
pub struct Probes {
    _ebpf: Ebpf,
    pub events: RingBuf<MapData>,
    pub tracked: HashMap<MapData, u32, Tracked>,
    pub counters: PerCpuArray<MapData, u64>,
    pub attached: Attached,
}

impl Probes {
    /// Sum over CPUs of each loss/error counter, in agent_common::counter order.
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

/// Comm selector key: the name, NUL-padded to TASK_COMM_LEN.
pub fn comm_key(comm: &str) -> [u8; COMM_LEN] {
    let mut k = [0u8; COMM_LEN];
    let b = comm.as_bytes();
    let n = b.len().min(COMM_LEN - 1);
    k[..n].copy_from_slice(&b[..n]);
    k
}

/// Executable selector key: the inode the path names (symlinks followed).
pub fn exe_key(path: &str) -> Result<InodeKey, LoadError> {
    let m = std::fs::metadata(path).map_err(|source| LoadError::Selector {
        path: path.into(),
        source,
    })?;
    Ok(InodeKey::from_stat(m.dev(), m.ino()))
}

/// Agent selectors as the kernel matches them.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct CompiledSelectors {
    pub comm: BTreeSet<String>,
    /// The inodes the `exe` paths name (resolved once, at load).
    pub exe: BTreeSet<InodeKey>,
}

/// Resolves the selectors' executable paths to inodes; a path that does not exist is an error.
pub fn compile_selectors(selectors: &Selectors) -> Result<CompiledSelectors, LoadError> {
    let mut exe = BTreeSet::new();
    for path in &selectors.exe {
        let key = exe_key(path)?;
        debug!(path = %path, ?key, "exe selector");
        exe.insert(key);
    }
    Ok(CompiledSelectors {
        comm: selectors.comm.clone(),
        exe,
    })
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

/// Fills a selector map: each key maps to its index.
fn fill_selector_map<K: Pod>(ebpf: &mut Ebpf, name: &str, keys: impl IntoIterator<Item = K>) -> Result<(), LoadError> {
    let map = ebpf
        .map_mut(name)
        .ok_or_else(|| LoadError::Missing(format!("map {name}")))?;
    let mut map: HashMap<_, K, u32> = HashMap::try_from(map).map_err(map_err(name))?;
    for (i, key) in keys.into_iter().enumerate() {
        map.insert(key, i as u32, 0).map_err(map_err(name))?;
    }
    Ok(())
}

/// Loads and attaches everything. `selectors` become the in-kernel agent selector maps.
pub fn load(selectors: &CompiledSelectors) -> Result<Probes, LoadError> {
    let object = BPF_OBJECT.ok_or(LoadError::NoObject)?;
    if !nix::unistd::geteuid().is_root() {
        return Err(LoadError::NotRoot);
    }
    ensure_tracefs()?;
    let self_tgid = std::process::id();
    let mut config: Config = kernel_layout::config(Path::new(BTF_PATH), Path::new(TRACEFS), self_tgid)?;
    config.select_comm = u32::from(!selectors.comm.is_empty());
    config.select_exe = u32::from(!selectors.exe.is_empty());
    debug!(?config, "kernel layout");

    let mut ebpf = EbpfLoader::new()
        .override_global("CONFIG", &config, true)
        .load(object)?;
    let mut attached = Attached::default();

    // Selector maps first, so an exec right after attach is already judged.
    fill_selector_map(&mut ebpf, "SELECT_COMM", selectors.comm.iter().map(|c| comm_key(c)))?;
    fill_selector_map(&mut ebpf, "SELECT_EXE", selectors.exe.iter().copied())?;

    // Lineage first: a fork must never be missed between other attachments.
    let fork: &mut RawTracePoint = program(&mut ebpf, "sched_process_fork")?;
    fork.load().map_err(prog_err("sched_process_fork"))?;
    fork.attach("sched_process_fork")
        .map_err(prog_err("sched_process_fork"))?;
    attached.programs.push("raw_tp/sched_process_fork".into());
    for name in ["sched_process_exit", "sched_process_exec"] {
        let tp: &mut TracePoint = program(&mut ebpf, name)?;
        tp.load().map_err(prog_err(name))?;
        tp.attach("sched", name).map_err(prog_err(name))?;
        attached.programs.push(format!("tracepoint/sched/{name}"));
    }

    // Network: cgroup sock_addr hooks at the cgroup v2 root (they see every process; the
    // programs report tracked ones only and always allow).
    let root = cgroup2_root()?;
    let cgroup = File::open(&root).map_err(|source| LoadError::Cgroup {
        path: root.display().to_string(),
        source,
    })?;
    for name in ["connect4", "connect6", "sendmsg4", "sendmsg6"] {
        let p: &mut CgroupSockAddr = program(&mut ebpf, name)?;
        p.load().map_err(prog_err(name))?;
        p.attach(&cgroup, CgroupAttachMode::default()).map_err(prog_err(name))?;
        attached.programs.push(format!("cgroup_sock_addr/{name}"));
    }
    attached.cgroup_root = root;

    // File writes: one entry and one exit program, attached to each watched syscall.
    for (prog, dir) in [("sys_enter_file", "sys_enter"), ("sys_exit_file", "sys_exit")] {
        let tp: &mut TracePoint = program(&mut ebpf, prog)?;
        tp.load().map_err(prog_err(prog))?;
        for sc in syscalls::WATCHED {
            let event = format!("{dir}_{}", sc.name);
            if !Path::new(TRACEFS).join("events/syscalls").join(&event).exists() {
                attached
                    .missing
                    .push(format!("tracepoint/syscalls/{event}: not on this kernel"));
                continue;
            }
            tp.attach("syscalls", &event)
                .map_err(prog_err(format!("{prog} on {event}")))?;
        }
        attached.programs.push(format!("tracepoint/syscalls/{dir}_* ({prog})"));
    }
    for m in &attached.missing {
        warn!("coverage: {m}");
    }

    let events = RingBuf::try_from(take_map(&mut ebpf, "EVENTS")?).map_err(map_err("EVENTS"))?;
    let tracked = HashMap::try_from(take_map(&mut ebpf, "TRACKED")?).map_err(map_err("TRACKED"))?;
    let counters = PerCpuArray::try_from(take_map(&mut ebpf, "COUNTERS")?).map_err(map_err("COUNTERS"))?;
    Ok(Probes {
        _ebpf: ebpf,
        events,
        tracked,
        counters,
        attached,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn comm_keys_are_nul_padded_and_cut_like_the_kernel() {
        assert_eq!(&comm_key("bash")[..5], b"bash\0");
        let k = comm_key("a-very-long-process-name");
        assert_eq!(&k[..15], b"a-very-long-pro");
        assert_eq!(k[15], 0);
    }

    #[test]
    fn exe_key_uses_the_kernel_dev_encoding() {
        let k = InodeKey::from_stat(libc::makedev(8, 1), 42);
        assert_eq!(k.dev, (8 << 20) | 1);
        assert_eq!(k.ino, 42);
        let k = InodeKey::from_stat(libc::makedev(259, 300), 1);
        assert_eq!(k.dev, (259 << 20) | 300);
    }

    #[test]
    fn a_missing_selector_file_is_an_error() {
        let err = exe_key("/nonexistent/agent").unwrap_err();
        assert!(err.to_string().contains("/nonexistent/agent"), "{err}");
    }
}
