//! Surviving restarts and upgrades (`tether run --persist`): what stays in the kernel while no
//! daemon runs, and what the next daemon adopts instead of starting blind.
//!
//! Without `--persist` nothing is pinned: every attachment belongs to the daemon's process and
//! goes with it, however it ends. With it (the DaemonSet sets it):
//!
//! ## Pins (under the pin directory, on bpffs; default `/sys/fs/bpf/tether`)
//! - `maps-<layout>/<MAP>`: the maps that carry state from one daemon to the next
//!   ([`SHARED_MAPS`]): the tracked processes with their tasks and expiry, the ring buffers
//!   (the records of the gap wait there), the loss counters, the containment rule maps (guardrails
//!   and every task's scope), the pods' guard sets, the in-flight syscall and exec slots, and
//!   `ACTIVE`.
//! - `gen-<layout>-<generation>/<link>`: the links of one daemon's programs. While they are
//!   pinned the programs stay attached and keep judging, denying and recording with no daemon.
//!
//! `<layout>` is [`LAYOUT`], a hash of agent-common (every record and map value type) and of
//! agent-ebpf's map definitions: maps are shared only between builds that read them the same
//! way.
//!
//! ## Hand-over, on every start (a restart, or an upgrade to another version)
//! 1. The new daemon loads its programs with the shared maps of its layout (creating them when
//!    there are none) and attaches them next to the previous generation's. Its programs do
//!    nothing yet: every program first compares the `ACTIVE` map with its own generation.
//! 2. It adopts the tracked map, the rule maps' owners and the state file's tasks.
//! 3. One write of its generation into `ACTIVE` hands over: from that instant its programs act
//!    and the old ones return at once. No action falls between the two.
//! 4. It unpins the other generations' links (they detach) and the map directories of other
//!    layouts (the kernel frees them with their last program).
//!
//! An upgrade that changes the layout cannot share maps: both versions judge side by side for
//! the moment of the hand-over (a refusal by either holds), the old ring buffer's records are
//! counted and reported as lost, and the new daemon re-adopts running agents from /proc by its
//! selectors and its state file's task roots.
//!
//! ## State file (`<state dir>/state.json`)
//! The tasks (each token as presented, verified again at start as of when it was first
//! verified), the next task number, the loss counters already reported. Written atomically
//! at every change. A lock file in the same directory keeps a second daemon out.
use std::{
    fs::File,
    io::Write as _,
    os::unix::fs::OpenOptionsExt as _,
    path::{Path, PathBuf},
};

use serde::{Deserialize, Serialize};

/// The build's wire and map layout (see the module docs).
pub const LAYOUT: &str = env!("TETHER_LAYOUT");

/// The layout this daemon pins under: [`LAYOUT`], or TETHER_LAYOUT_OVERRIDE (a hex string;
/// for testing an upgrade to a version with another layout on one build).
pub fn layout() -> &'static str {
    static L: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    L.get_or_init(|| {
        std::env::var("TETHER_LAYOUT_OVERRIDE")
            .ok()
            .filter(|v| !v.is_empty() && v.chars().all(|c| c.is_ascii_hexdigit()))
            .unwrap_or_else(|| LAYOUT.to_string())
    })
}
pub const DEFAULT_PIN_DIR: &str = "/sys/fs/bpf/tether";
pub const DEFAULT_STATE_DIR: &str = "/var/lib/tether";
/// The maps one daemon hands to the next (the others are rebuilt at each start: selectors,
/// per-CPU scratch).
pub const SHARED_MAPS: &[&str] = &[
    "ACTIVE",
    "TRACKED",
    "PROC_EVENTS",
    "NET_EVENTS",
    "FILE_EVENTS",
    "ALERT_EVENTS",
    "COUNTERS",
    "PENDING",
    "SOCK_CALLS",
    "EXEC_PENDING",
    "EXEC_CHECKED",
    "PATH_RULES",
    "TAIL_RULES",
    "NET_RULES",
    "GRANTS",
    "POSTURE",
    "GUARD_VERDICTS",
    "POD_GUARDS",
];

#[derive(Debug, thiserror::Error)]
pub enum PersistError {
    #[error("{path}: {source}")]
    Io { path: String, source: std::io::Error },
    #[error(
        "{0} is not on a BPF filesystem (bpffs), so nothing could be pinned there; mount one (`mount -t bpf bpf /sys/fs/bpf`) or give --pin-dir on one"
    )]
    NotBpffs(String),
    #[error("another tether daemon is running with state directory {dir} (it holds {dir}/lock)")]
    Locked { dir: String },
    #[error("state file {path} is unreadable: {reason}; move it away to start without it")]
    BadState { path: String, reason: String },
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> PersistError + '_ {
    move |source| PersistError::Io {
        path: path.display().to_string(),
        source,
    }
}

/// `tether run`'s restart options.
#[derive(Debug, Clone, clap::Args)]
pub struct PersistArgs {
    /// Keep the kernel side working while the daemon is down (restart, crash, upgrade): pin
    /// the programs' links and the state maps under --pin-dir and the tasks in --state-dir,
    /// and adopt them at the next start (tracked processes, tasks, the records of the gap).
    /// Without it every probe goes with the daemon's process. `tether unpin` removes the pins.
    #[arg(long, env = "TETHER_PERSIST")]
    pub persist: bool,
    /// Where --persist pins links and maps (on bpffs; /sys/fs/bpf is mounted when it is not).
    #[arg(long, value_name = "DIR", default_value = DEFAULT_PIN_DIR, env = "TETHER_PIN_DIR")]
    pub pin_dir: PathBuf,
    /// Where --persist keeps the state file (tasks, reported loss counters) and its lock.
    #[arg(long, value_name = "DIR", default_value = DEFAULT_STATE_DIR, env = "TETHER_STATE_DIR")]
    pub state_dir: PathBuf,
}

impl PersistArgs {
    /// The directories, when --persist is on.
    pub fn resolve(&self) -> Option<Persist> {
        self.persist.then(|| Persist {
            pin_dir: self.pin_dir.clone(),
            state_dir: self.state_dir.clone(),
        })
    }
}

/// Where the pins and the state file live.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Persist {
    pub pin_dir: PathBuf,
    pub state_dir: PathBuf,
}

/// A directory under the pin directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PinEntry {
    Maps { layout: String },
    Generation { layout: String, generation: u64 },
}

impl PinEntry {
    pub fn parse(name: &str) -> Option<PinEntry> {
        if let Some(layout) = name.strip_prefix("maps-") {
            return (!layout.is_empty() && !layout.contains('-')).then(|| PinEntry::Maps { layout: layout.into() });
        }
        let (layout, generation) = name.strip_prefix("gen-")?.split_once('-')?;
        Some(PinEntry::Generation {
            layout: layout.into(),
            generation: generation.parse().ok()?,
        })
    }
}

/// What to unpin once generation `mine` of layout `layout` acts: every other generation, and
/// the map directories of other layouts (theirs are no longer needed once their programs go).
/// Names that are not Tether's are left alone.
pub fn stale(names: &[String], layout: &str, mine: u64) -> Vec<String> {
    let mut out: Vec<String> = names
        .iter()
        .filter(|n| match PinEntry::parse(n) {
            Some(PinEntry::Generation { layout: l, generation }) => !(l == layout && generation == mine),
            Some(PinEntry::Maps { layout: l }) => l != layout,
            None => false,
        })
        .cloned()
        .collect();
    // Links before maps: a map directory goes after the programs that use it.
    out.sort_by_key(|n| n.starts_with("maps-"));
    out
}

impl Persist {
    pub fn maps_dir(&self) -> PathBuf {
        self.pin_dir.join(format!("maps-{}", layout()))
    }

    /// The name of generation `generation`'s directory under the pin directory.
    pub fn gen_name(&self, generation: u64) -> String {
        format!("gen-{}-{generation}", layout())
    }

    pub fn gen_dir(&self, generation: u64) -> PathBuf {
        self.pin_dir.join(self.gen_name(generation))
    }

    pub fn state_file(&self) -> PathBuf {
        self.state_dir.join("state.json")
    }

    /// The entries under the pin directory (none when it does not exist).
    pub fn entries(&self) -> Result<Vec<String>, PersistError> {
        match std::fs::read_dir(&self.pin_dir) {
            Ok(rd) => Ok(rd
                .filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(vec![]),
            Err(e) => Err(io(&self.pin_dir)(e)),
        }
    }

    /// Generations pinned now, of any layout.
    pub fn generations(&self) -> Result<Vec<(String, u64)>, PersistError> {
        Ok(self
            .entries()?
            .iter()
            .filter_map(|n| match PinEntry::parse(n) {
                Some(PinEntry::Generation { layout, generation }) => Some((layout, generation)),
                _ => None,
            })
            .collect())
    }

    /// Makes the pin directories (mounting bpffs at /sys/fs/bpf when nothing is mounted there)
    /// and the state directory.
    pub fn prepare(&self, generation: u64) -> Result<(), PersistError> {
        let bpffs = Path::new("/sys/fs/bpf");
        if self.pin_dir.starts_with(bpffs) && !is_bpffs(bpffs) {
            nix::mount::mount(
                Some("bpf"),
                bpffs,
                Some("bpf"),
                nix::mount::MsFlags::empty(),
                None::<&str>,
            )
            .map_err(|e| io(bpffs)(e.into()))?;
            tracing::warn!(
                "mounted bpffs at /sys/fs/bpf (nothing was mounted there): the pins live as long as this mount; in a container, mount the host's /sys/fs/bpf instead, or they go with the container"
            );
        }
        for d in [self.maps_dir(), self.gen_dir(generation)] {
            std::fs::create_dir_all(&d).map_err(io(&d))?;
        }
        if !is_bpffs(&self.pin_dir) {
            return Err(PersistError::NotBpffs(self.pin_dir.display().to_string()));
        }
        std::fs::create_dir_all(&self.state_dir).map_err(io(&self.state_dir))?;
        Ok(())
    }

    /// Unpins the directory `name` under the pin directory: its links detach, its maps go
    /// with the last program that holds them. Returns how many pins were removed.
    pub fn unpin(&self, name: &str) -> Result<usize, PersistError> {
        let dir = self.pin_dir.join(name);
        let mut n = 0;
        for e in std::fs::read_dir(&dir).map_err(io(&dir))? {
            let p = e.map_err(io(&dir))?.path();
            std::fs::remove_file(&p).map_err(io(&p))?;
            n += 1;
        }
        std::fs::remove_dir(&dir).map_err(io(&dir))?;
        Ok(n)
    }

    /// Removes everything Tether pinned (`tether unpin`: after uninstalling, or to start from
    /// nothing): every generation's links first, then the maps. Returns the directories removed.
    pub fn unpin_all(&self) -> Result<Vec<String>, PersistError> {
        let mut names: Vec<String> = self
            .entries()?
            .into_iter()
            .filter(|n| PinEntry::parse(n).is_some())
            .collect();
        names.sort_by_key(|n| n.starts_with("maps-"));
        for n in &names {
            self.unpin(n)?;
        }
        if self.pin_dir.exists() && self.entries()?.is_empty() {
            let _ = std::fs::remove_dir(&self.pin_dir);
        }
        Ok(names)
    }

    /// Takes the state directory's lock (held until the returned value is dropped, or the
    /// process ends).
    pub fn lock(&self) -> Result<StateLock, PersistError> {
        let path = self.state_dir.join("lock");
        let f = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .mode(0o600)
            .open(&path)
            .map_err(io(&path))?;
        nix::fcntl::Flock::lock(f, nix::fcntl::FlockArg::LockExclusiveNonblock)
            .map(StateLock)
            .map_err(|(_, e)| {
                if e == nix::errno::Errno::EWOULDBLOCK {
                    PersistError::Locked {
                        dir: self.state_dir.display().to_string(),
                    }
                } else {
                    io(&path)(e.into())
                }
            })
    }

    pub fn load_state(&self) -> Result<Option<SavedState>, PersistError> {
        let path = self.state_file();
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(io(&path)(e)),
        };
        serde_json::from_str(&text)
            .map(Some)
            .map_err(|e| PersistError::BadState {
                path: path.display().to_string(),
                reason: e.to_string(),
            })
    }

    /// Writes the state file atomically (a crash leaves the old one or the new one).
    pub fn save_state(&self, state: &SavedState) -> Result<(), PersistError> {
        let path = self.state_file();
        let tmp = self.state_dir.join(".state.json.tmp");
        let body = serde_json::to_vec_pretty(state).map_err(|e| io(&tmp)(e.into()))?;
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .truncate(true)
            .write(true)
            .mode(0o600)
            .open(&tmp)
            .map_err(io(&tmp))?;
        f.write_all(&body).map_err(io(&tmp))?;
        f.sync_all().map_err(io(&tmp))?;
        std::fs::rename(&tmp, &path).map_err(io(&path))?;
        Ok(())
    }
}

/// The state directory's lock.
#[derive(Debug)]
pub struct StateLock(#[allow(dead_code)] nix::fcntl::Flock<File>);

fn is_bpffs(p: &Path) -> bool {
    nix::sys::statfs::statfs(p).is_ok_and(|s| s.filesystem_type() == nix::sys::statfs::BPF_FS_MAGIC)
}

/// What a daemon leaves for the next one.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SavedState {
    /// The layout of the maps these numbers refer to.
    pub layout: String,
    /// The daemon's generation.
    pub generation: u64,
    /// The kernel loss counters as last reported (so the next daemon reports only what is new).
    pub counters: Vec<u64>,
    pub tasks: Vec<SavedTask>,
    /// Tasks whose `tether exec` applied a Landlock plan.
    #[serde(default)]
    pub landlocked: Vec<u32>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SavedTask {
    /// The number the kernel's tracked entries carry.
    pub id: u32,
    /// The compact JWS as presented.
    pub token: String,
    /// When it was verified (seconds since the epoch).
    pub verified_at: i64,
    pub root_pid: u32,
    pub parent: Option<u32>,
    pub revoked: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pin_entries_parse_and_others_are_ignored() {
        assert_eq!(
            PinEntry::parse("maps-0123abcd"),
            Some(PinEntry::Maps {
                layout: "0123abcd".into()
            })
        );
        assert_eq!(
            PinEntry::parse("gen-0123abcd-1764572400000000000"),
            Some(PinEntry::Generation {
                layout: "0123abcd".into(),
                generation: 1764572400000000000
            })
        );
        for other in ["maps-", "gen-x", "gen-ab-notanumber", "cilium", "maps-a-b"] {
            assert_eq!(PinEntry::parse(other), None, "{other}");
        }
    }

    #[test]
    fn after_a_hand_over_every_other_generation_and_foreign_layout_goes_links_first() {
        let names: Vec<String> = [
            "maps-old",
            "gen-old-5",
            "maps-new",
            "gen-new-6",
            "gen-new-7",
            "someone-else",
        ]
        .map(String::from)
        .to_vec();
        assert_eq!(stale(&names, "new", 7), vec!["gen-old-5", "gen-new-6", "maps-old"]);
        // The same layout: the maps stay.
        assert_eq!(stale(&names, "new", 6), vec!["gen-old-5", "gen-new-7", "maps-old"]);
    }

    fn in_tempdir() -> (tempfile::TempDir, Persist) {
        let dir = tempfile::tempdir().unwrap();
        let p = Persist {
            pin_dir: dir.path().join("pins"),
            state_dir: dir.path().to_path_buf(),
        };
        (dir, p)
    }

    #[test]
    fn the_state_file_round_trips_and_a_damaged_one_is_an_error_naming_it() {
        let (_dir, p) = in_tempdir();
        assert_eq!(p.load_state().unwrap(), None);
        let s = SavedState {
            layout: LAYOUT.into(),
            generation: 42,
            counters: vec![0, 3],
            tasks: vec![SavedTask {
                id: 2,
                token: "a.b.c".into(),
                verified_at: 1_700_000_000,
                root_pid: 77,
                parent: Some(1),
                revoked: false,
            }],
            landlocked: vec![2],
        };
        p.save_state(&s).unwrap();
        assert_eq!(p.load_state().unwrap(), Some(s));
        std::fs::write(p.state_file(), "{\"layout\": 1").unwrap();
        let e = p.load_state().unwrap_err().to_string();
        assert!(e.contains("state.json") && e.contains("move it away"), "{e}");
    }

    #[test]
    fn a_second_daemon_on_the_same_state_directory_is_refused() {
        let (_dir, p) = in_tempdir();
        let held = p.lock().unwrap();
        let e = p.lock().unwrap_err().to_string();
        assert!(e.contains("another tether daemon"), "{e}");
        drop(held);
        p.lock().unwrap();
    }
}
