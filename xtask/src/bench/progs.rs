//! What each of the daemon's BPF programs costs during a flood: the kernel's run-time stats
//! (`run_time_ns`, `run_cnt` of `struct bpf_prog_info`), which it keeps only while they are
//! enabled (a `BPF_ENABLE_STATS` fd held, or `kernel.bpf_stats_enabled`).
//!
//! The daemon's programs are the ones its file descriptors name (`prog_id:` in
//! /proc/PID/fdinfo: its program fds and its link fds), so no name list has to follow
//! agent-user's and another loader's programs are never counted.
use std::{
    collections::{BTreeMap, BTreeSet},
    os::fd::{AsRawFd, FromRawFd, OwnedFd},
};

/// `bpf(2)` commands and constants (include/uapi/linux/bpf.h).
const BPF_PROG_GET_FD_BY_ID: libc::c_long = 13;
const BPF_OBJ_GET_INFO_BY_FD: libc::c_long = 15;
const BPF_ENABLE_STATS: libc::c_long = 32;
const BPF_STATS_RUN_TIME: u32 = 0;
/// `struct bpf_prog_info` as of 6.x; the kernel fills what it knows and says how much.
const INFO_LEN: usize = 232;
const INFO_NAME: usize = 64;
const INFO_RUN_TIME_NS: usize = 192;
const INFO_RUN_CNT: usize = 200;
/// `recursion_misses` (5.12+): calls the kernel did not run the program for, because it was
/// already running on that CPU.
const INFO_RECURSION_MISSES: usize = 208;
const SYSCTL: &str = "/proc/sys/kernel/bpf_stats_enabled";

/// The issue-19 target for the hot file programs (see [`has_target`]).
pub const TARGET_NS: f64 = 500.0;

fn bpf<T>(cmd: libc::c_long, attr: &mut T) -> std::io::Result<libc::c_long> {
    // SAFETY: attr is a live, initialised #[repr(C)] value of the size passed; the kernel reads
    // (and for OBJ_GET_INFO_BY_FD writes) at most that many bytes of it.
    let r = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            cmd,
            attr as *mut T,
            std::mem::size_of::<T>() as libc::c_uint,
        )
    };
    if r < 0 {
        Err(std::io::Error::last_os_error())
    } else {
        Ok(r)
    }
}

/// Keeps the kernel's BPF run-time stats on while alive; what it changed is undone on drop
/// (the fd closes; or the sysctl gets its previous value back).
pub enum StatsOn {
    /// A `BPF_ENABLE_STATS` fd (5.8+): the kernel counts while any such fd is open, and
    /// closes it with this process however it ends.
    Fd { _held: OwnedFd },
    /// `kernel.bpf_stats_enabled` written to 1; its previous value.
    Sysctl(String),
}

impl StatsOn {
    /// Turns the stats on, or says why the kernel would not.
    pub fn enable() -> Result<StatsOn, String> {
        #[repr(C)]
        struct EnableStats {
            kind: u32,
        }
        let fd_err = match bpf(
            BPF_ENABLE_STATS,
            &mut EnableStats {
                kind: BPF_STATS_RUN_TIME,
            },
        ) {
            // SAFETY: the kernel returned a new fd that nothing else owns.
            Ok(fd) => {
                return Ok(StatsOn::Fd {
                    _held: unsafe { OwnedFd::from_raw_fd(fd as libc::c_int) },
                });
            }
            Err(e) => e,
        };
        let previous = std::fs::read_to_string(SYSCTL)
            .map_err(|e| format!("BPF_ENABLE_STATS: {fd_err}; reading {SYSCTL}: {e}"))?;
        std::fs::write(SYSCTL, "1").map_err(|e| format!("BPF_ENABLE_STATS: {fd_err}; writing {SYSCTL}: {e}"))?;
        Ok(StatsOn::Sysctl(previous.trim().to_string()))
    }
}

impl Drop for StatsOn {
    fn drop(&mut self) {
        if let StatsOn::Sysctl(previous) = self
            && previous != "1"
            && let Err(e) = std::fs::write(SYSCTL, previous.as_bytes())
        {
            eprintln!("bench: could not restore {SYSCTL} to {previous}: {e}");
        }
    }
}

/// One program's stats at one moment.
#[derive(Clone, Debug)]
pub struct Prog {
    pub name: String,
    pub kind: &'static str,
    pub run_time_ns: u64,
    pub run_cnt: u64,
    /// None: the kernel has no such field.
    pub recursion_misses: Option<u64>,
}

/// The programs the daemon `pid` holds, with their stats now. An error says why there are none
/// to show (no stats in this kernel's prog info, no program found).
pub fn snapshot(pid: u32) -> Result<BTreeMap<u32, Prog>, String> {
    let ids = prog_ids(pid)?;
    if ids.is_empty() {
        return Err(format!(
            "no prog_id in /proc/{pid}/fdinfo: no program of the daemon found"
        ));
    }
    let mut out = BTreeMap::new();
    for id in ids {
        match prog_info(id) {
            Ok(Some(p)) => {
                out.insert(id, p);
            }
            // Unloaded meanwhile: a link closed between the fdinfo read and now.
            Ok(None) => {}
            Err(e) => return Err(format!("program {id}: {e}")),
        }
    }
    Ok(out)
}

fn prog_ids(pid: u32) -> Result<BTreeSet<u32>, String> {
    let dir = format!("/proc/{pid}/fdinfo");
    let entries = std::fs::read_dir(&dir).map_err(|e| format!("reading {dir}: {e}"))?;
    let mut ids = BTreeSet::new();
    for e in entries.flatten() {
        // An fd closed since the listing is simply gone.
        let Ok(text) = std::fs::read_to_string(e.path()) else {
            continue;
        };
        ids.extend(fdinfo_prog_id(&text));
    }
    Ok(ids)
}

/// The `prog_id:` of one fdinfo file (a program's or a link's), if any.
fn fdinfo_prog_id(text: &str) -> Option<u32> {
    text.lines()
        .find_map(|l| l.strip_prefix("prog_id:"))
        .and_then(|v| v.trim().parse().ok())
        .filter(|&id| id != 0)
}

/// `Ok(None)`: no program with that id any more.
fn prog_info(id: u32) -> Result<Option<Prog>, String> {
    #[repr(C)]
    struct GetFdById {
        prog_id: u32,
        next_id: u32,
        open_flags: u32,
    }
    #[repr(C)]
    struct GetInfo {
        bpf_fd: u32,
        info_len: u32,
        info: u64,
    }
    let fd = match bpf(
        BPF_PROG_GET_FD_BY_ID,
        &mut GetFdById {
            prog_id: id,
            next_id: 0,
            open_flags: 0,
        },
    ) {
        // SAFETY: the kernel returned a new fd that nothing else owns.
        Ok(fd) => unsafe { OwnedFd::from_raw_fd(fd as libc::c_int) },
        Err(e) if e.raw_os_error() == Some(libc::ENOENT) => return Ok(None),
        Err(e) => return Err(format!("BPF_PROG_GET_FD_BY_ID: {e}")),
    };
    let mut buf = [0u64; INFO_LEN / 8];
    let mut attr = GetInfo {
        bpf_fd: fd.as_raw_fd() as u32,
        info_len: INFO_LEN as u32,
        info: buf.as_mut_ptr() as u64,
    };
    bpf(BPF_OBJ_GET_INFO_BY_FD, &mut attr).map_err(|e| format!("BPF_OBJ_GET_INFO_BY_FD: {e}"))?;
    let len = attr.info_len as usize;
    let bytes: Vec<u8> = buf.iter().flat_map(|w| w.to_ne_bytes()).collect();
    parse_info(&bytes[..len.min(INFO_LEN)]).map(Some)
}

fn parse_info(info: &[u8]) -> Result<Prog, String> {
    let u32_at = |o: usize| u32::from_ne_bytes(info[o..o + 4].try_into().expect("4 bytes"));
    let u64_at = |o: usize| u64::from_ne_bytes(info[o..o + 8].try_into().expect("8 bytes"));
    if info.len() < INFO_RUN_CNT + 8 {
        return Err(format!(
            "the kernel's bpf_prog_info has {} bytes, no run_time_ns/run_cnt (5.1+)",
            info.len()
        ));
    }
    let name = &info[INFO_NAME..INFO_NAME + 16];
    let name = &name[..name.iter().position(|&b| b == 0).unwrap_or(16)];
    Ok(Prog {
        name: String::from_utf8_lossy(name).into_owned(),
        kind: prog_type(u32_at(0)),
        run_time_ns: u64_at(INFO_RUN_TIME_NS),
        run_cnt: u64_at(INFO_RUN_CNT),
        recursion_misses: (info.len() >= INFO_RECURSION_MISSES + 8).then(|| u64_at(INFO_RECURSION_MISSES)),
    })
}

/// The program types Tether loads, by their `enum bpf_prog_type` value.
fn prog_type(t: u32) -> &'static str {
    match t {
        5 => "tracepoint",
        9 => "cgroup_sock",
        17 => "raw_tp",
        18 => "cgroup_sock_addr",
        26 => "tracing",
        29 => "lsm",
        _ => "other",
    }
}

/// One program's cost between two snapshots (programs of one name summed: a name loaded
/// twice, say an LSM program and its fmod_ret twin, is one row).
#[derive(Clone, Debug, PartialEq)]
pub struct Cost {
    pub name: String,
    pub kind: &'static str,
    pub calls: u64,
    pub ns: u64,
    /// Calls skipped by the kernel's recursion guard (None: not counted by this kernel).
    pub skipped: Option<u64>,
}

impl Cost {
    pub fn ns_per_call(&self) -> Option<f64> {
        (self.calls > 0).then(|| self.ns as f64 / self.calls as f64)
    }
}

/// What each program did between `before` and `after` (programs in both), by name.
pub fn delta(before: &BTreeMap<u32, Prog>, after: &BTreeMap<u32, Prog>) -> Vec<Cost> {
    let mut by_name: BTreeMap<&str, Cost> = BTreeMap::new();
    for (id, a) in after {
        let Some(b) = before.get(id) else { continue };
        let c = by_name.entry(&a.name).or_insert_with(|| Cost {
            name: a.name.clone(),
            kind: a.kind,
            calls: 0,
            ns: 0,
            skipped: Some(0),
        });
        c.calls += a.run_cnt.saturating_sub(b.run_cnt);
        c.ns += a.run_time_ns.saturating_sub(b.run_time_ns);
        c.skipped = match (c.skipped, a.recursion_misses, b.recursion_misses) {
            (Some(n), Some(a), Some(b)) => Some(n + a.saturating_sub(b)),
            _ => None,
        };
    }
    by_name.into_values().collect()
}

/// Whether issue 19's ≤ 500 ns per call applies: `sys_exit_file` and the BPF LSM file hooks
/// (LSM programs, or their fmod_ret twins, on `file_*`, `path_*` and `inode_*` hooks; kernel
/// program names are those of agent-user/src/programs.rs cut to 15 bytes).
pub fn has_target(c: &Cost) -> bool {
    c.name == "sys_exit_file"
        || (matches!(c.kind, "lsm" | "tracing") && ["file_", "path_", "inode_"].iter().any(|p| c.name.starts_with(p)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn prog(id: u32, name: &str, t: u64, n: u64) -> (u32, Prog) {
        let p = Prog {
            name: name.into(),
            kind: "lsm",
            run_time_ns: t,
            run_cnt: n,
            recursion_misses: Some(n / 2),
        };
        (id, p)
    }

    #[test]
    fn fdinfo_prog_ids_of_programs_and_links_only() {
        let prog = "pos:\t0\nflags:\t02000002\nprog_type:\t29\nprog_tag:\tab\nprog_id:\t42\nrun_time_ns:\t0\n";
        let link = "link_type:\ttracing\nlink_id:\t7\nprog_tag:\tab\nprog_id:\t43\n";
        let map = "map_type:\t2\nmap_id:\t9\n";
        assert_eq!(fdinfo_prog_id(prog), Some(42));
        assert_eq!(fdinfo_prog_id(link), Some(43));
        assert_eq!(fdinfo_prog_id(map), None);
    }

    #[test]
    fn prog_info_fields_at_their_offsets() {
        let mut info = vec![0u8; INFO_LEN];
        info[..4].copy_from_slice(&29u32.to_ne_bytes());
        info[INFO_NAME..INFO_NAME + 15].copy_from_slice(b"bprm_check_secu");
        info[INFO_RUN_TIME_NS..INFO_RUN_TIME_NS + 8].copy_from_slice(&1234u64.to_ne_bytes());
        info[INFO_RUN_CNT..INFO_RUN_CNT + 8].copy_from_slice(&5u64.to_ne_bytes());
        info[INFO_RECURSION_MISSES..INFO_RECURSION_MISSES + 8].copy_from_slice(&7u64.to_ne_bytes());
        let p = parse_info(&info).unwrap();
        assert_eq!((p.name.as_str(), p.kind), ("bprm_check_secu", "lsm"));
        assert_eq!((p.run_time_ns, p.run_cnt, p.recursion_misses), (1234, 5, Some(7)));
        // A kernel before 5.12 stops at run_cnt: no recursion count.
        assert_eq!(parse_info(&info[..INFO_RUN_CNT + 8]).unwrap().recursion_misses, None);
        assert!(parse_info(&info[..192]).is_err());
    }

    #[test]
    fn deltas_by_name_of_programs_seen_twice() {
        let before = BTreeMap::from([
            prog(1, "file_open", 100, 1),
            prog(2, "file_open", 0, 0),
            prog(3, "x", 5, 5),
        ]);
        let after = BTreeMap::from([
            prog(1, "file_open", 1100, 3),
            prog(2, "file_open", 500, 2),
            prog(3, "x", 5, 5),
            prog(4, "new", 9, 9),
        ]);
        let d = delta(&before, &after);
        assert_eq!(d.len(), 2);
        assert_eq!((d[0].name.as_str(), d[0].calls, d[0].ns), ("file_open", 4, 1500));
        // Misses: 3/2 - 1/2 = 1, and 2/2 - 0 = 1.
        assert_eq!(d[0].skipped, Some(2));
        assert_eq!(d[0].ns_per_call(), Some(375.0));
        assert_eq!((d[1].calls, d[1].ns_per_call()), (0, None));
    }

    #[test]
    fn the_target_is_for_sys_exit_file_and_the_lsm_file_hooks() {
        let c = |name: &str, kind| Cost {
            name: name.into(),
            kind,
            calls: 0,
            ns: 0,
            skipped: None,
        };
        assert!(has_target(&c("sys_exit_file", "tracepoint")));
        assert!(has_target(&c("file_open", "lsm")));
        assert!(has_target(&c("path_truncate", "tracing")));
        assert!(has_target(&c("inode_setxattr_", "lsm")));
        assert!(!has_target(&c("sys_enter_file", "tracepoint")));
        assert!(!has_target(&c("bprm_check_secu", "lsm")));
        assert!(!has_target(&c("file_open", "tracepoint")));
    }
}
