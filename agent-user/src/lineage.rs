//! The process table: every tracked process, keyed by (pid, start time) so a reused pid is never
//! mistaken for its predecessor. Owned by the daemon's event loop; pure: what it
//! needs from /proc comes in through [`ProcSource`], so it is tested without root.
//!
//! Start times are in clock ticks since boot, the unit of /proc/PID/stat, so a process found in
//! /proc and the same process reported by the kernel (ns since boot) get the same key.
use crate::{
    events::{Actor, Event},
    model::FastMap,
};

/// Kernel ns since boot -> clock ticks (USER_HZ), as the kernel itself converts for /proc.
pub fn ns_to_ticks(ns: u64, ticks_per_sec: u64) -> u64 {
    ns / ns_per_tick(ticks_per_sec)
}

/// Clock ticks since boot -> ns since boot (the start of that tick).
pub fn ticks_to_ns(ticks: u64, ticks_per_sec: u64) -> u64 {
    ticks * ns_per_tick(ticks_per_sec)
}

fn ns_per_tick(ticks_per_sec: u64) -> u64 {
    1_000_000_000 / ticks_per_sec.max(1)
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ProcKey {
    pub pid: u32,
    /// Start time in clock ticks since boot.
    pub start: u64,
}

/// Why the process is tracked.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reason {
    /// `tether exec` (or an API caller) registered it.
    Registered,
    /// Its exec matched an agent selector.
    Selected,
    /// Running at daemon start and matched a selector (or descends from one that did).
    Adopted,
    /// Forked from a tracked process.
    Inherited,
}

impl Reason {
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::Registered => "registered",
            Reason::Selected => "selector",
            Reason::Adopted => "adopted",
            Reason::Inherited => "inherited",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProcInfo {
    pub key: ProcKey,
    pub ppid: u32,
    pub parent: Option<ProcKey>,
    /// The agent root this process descends from (itself for a root).
    pub root: ProcKey,
    pub exe: String,
    pub argv: Vec<String>,
    pub comm: String,
    pub uid: u32,
    pub cgroup_id: u64,
    pub reason: Reason,
    /// Set when the process has exited; kept while descendants may still refer to it.
    pub exited: bool,
}

impl ProcInfo {
    pub fn cmd_line(&self) -> String {
        self.argv.join(" ")
    }
}

/// What the table can learn about a live process from /proc.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProcSnapshot {
    pub pid: u32,
    pub ppid: u32,
    pub start: u64,
    pub exe: String,
    pub argv: Vec<String>,
    pub comm: String,
    pub uid: u32,
}

pub trait ProcSource {
    fn snapshot(&self, pid: u32) -> Option<ProcSnapshot>;
}

/// A source that knows no process: the table learns only what records say (tests, fuzzing).
pub struct NoProc;

impl ProcSource for NoProc {
    fn snapshot(&self, _pid: u32) -> Option<ProcSnapshot> {
        None
    }
}

#[derive(Debug)]
pub struct ProcessTable {
    procs: FastMap<ProcKey, ProcInfo>,
    /// The current (newest) key of each pid.
    live: FastMap<u32, ProcKey>,
    ticks_per_sec: u64,
    /// Exited processes, oldest first, removed once no live process descends from them.
    exited: Vec<ProcKey>,
}

impl ProcessTable {
    pub fn new(ticks_per_sec: u64) -> Self {
        ProcessTable {
            procs: FastMap::default(),
            live: FastMap::default(),
            ticks_per_sec,
            exited: Vec::new(),
        }
    }

    pub fn len(&self) -> usize {
        self.procs.len()
    }

    pub fn is_empty(&self) -> bool {
        self.procs.is_empty()
    }

    pub fn get(&self, key: &ProcKey) -> Option<&ProcInfo> {
        self.procs.get(key)
    }

    pub fn key_of(&self, actor: &Actor) -> ProcKey {
        ProcKey {
            pid: actor.tgid,
            start: ns_to_ticks(actor.start_ns, self.ticks_per_sec),
        }
    }

    /// Inserts a process learnt outside the event stream (registration, adoption).
    pub fn insert_snapshot(&mut self, snap: &ProcSnapshot, reason: Reason, root: Option<ProcKey>) -> ProcKey {
        let key = ProcKey {
            pid: snap.pid,
            start: snap.start,
        };
        let parent = self.live.get(&snap.ppid).copied();
        let info = ProcInfo {
            key,
            ppid: snap.ppid,
            parent,
            root: root.unwrap_or(key),
            exe: snap.exe.clone(),
            argv: snap.argv.clone(),
            comm: snap.comm.clone(),
            uid: snap.uid,
            cgroup_id: 0,
            reason,
            exited: false,
        };
        self.put(info);
        key
    }

    fn put(&mut self, info: ProcInfo) {
        self.live.insert(info.key.pid, info.key);
        self.procs.insert(info.key, info);
    }

    /// Makes sure the acting process of an event is in the table, creating it from /proc (or,
    /// if it is gone, from what the event says) when the event is the first we hear of it.
    pub fn ensure(&mut self, actor: &Actor, source: &dyn ProcSource) -> ProcKey {
        let key = self.key_of(actor);
        if self.procs.contains_key(&key) {
            return key;
        }
        let snap = source.snapshot(actor.tgid).filter(|s| s.start == key.start);
        let (ppid, exe, argv) = match &snap {
            Some(s) => (s.ppid, s.exe.clone(), s.argv.clone()),
            None => (0, String::new(), Vec::new()),
        };
        let parent = self.live.get(&ppid).copied().filter(|p| self.procs.contains_key(p));
        let root = parent.and_then(|p| self.procs.get(&p)).map(|p| p.root).unwrap_or(key);
        self.put(ProcInfo {
            key,
            ppid,
            parent,
            root,
            exe,
            argv,
            comm: actor.comm.clone(),
            uid: actor.uid,
            cgroup_id: actor.cgroup_id,
            reason: if parent.is_some() {
                Reason::Inherited
            } else {
                Reason::Selected
            },
            exited: false,
        });
        key
    }

    /// Applies a lineage event (fork, exec, exit) and returns the acting process's key.
    pub fn apply(&mut self, event: &Event, source: &dyn ProcSource) -> ProcKey {
        match event {
            Event::Fork {
                parent,
                child_tgid,
                child_start_ns,
                ..
            } => {
                let pkey = self.ensure(parent, source);
                let (root, exe, argv, comm) = {
                    let p = &self.procs[&pkey];
                    (p.root, p.exe.clone(), p.argv.clone(), p.comm.clone())
                };
                let child = ProcKey {
                    pid: *child_tgid,
                    start: ns_to_ticks(*child_start_ns, self.ticks_per_sec),
                };
                // An exec of the child may have been applied first (events can arrive out of
                // order across CPUs): keep what it set, fix the parentage.
                match self.procs.get_mut(&child) {
                    Some(c) => {
                        c.parent = Some(pkey);
                        c.ppid = pkey.pid;
                        c.root = root;
                        c.reason = Reason::Inherited;
                    }
                    None => self.put(ProcInfo {
                        key: child,
                        ppid: pkey.pid,
                        parent: Some(pkey),
                        root,
                        exe,
                        argv,
                        comm,
                        uid: parent.uid,
                        cgroup_id: parent.cgroup_id,
                        reason: Reason::Inherited,
                        exited: false,
                    }),
                }
                pkey
            }
            Event::Exec {
                actor,
                ppid,
                exe,
                argv,
                newly_selected,
                ..
            } => {
                let key = self.ensure(actor, source);
                let parent_key = self.live.get(ppid).copied().filter(|p| self.procs.contains_key(p));
                let p = self.procs.get_mut(&key).expect("ensured above");
                p.exe = exe.path.clone();
                p.argv = argv.clone();
                p.comm = actor.comm.clone();
                p.uid = actor.uid;
                p.cgroup_id = actor.cgroup_id;
                p.ppid = *ppid;
                if p.parent.is_none() {
                    p.parent = parent_key;
                }
                if *newly_selected {
                    p.reason = Reason::Selected;
                    p.root = key;
                    p.parent = parent_key;
                }
                key
            }
            Event::Exit { actor, .. } => {
                let key = self.key_of(actor);
                if let Some(p) = self.procs.get_mut(&key)
                    && !p.exited
                {
                    p.exited = true;
                    self.exited.push(key);
                }
                if self.live.get(&key.pid) == Some(&key) {
                    self.live.remove(&key.pid);
                }
                self.collect();
                key
            }
            Event::Net { actor, .. }
            | Event::File { actor, .. }
            | Event::Socket { actor, .. }
            | Event::Unix { actor, .. }
            | Event::Uring { actor, .. }
            | Event::Sandbox { actor, .. } => self.ensure(actor, source),
        }
    }

    /// The chain from `key` up to its agent root (inclusive), nearest first.
    pub fn lineage(&self, key: &ProcKey) -> Vec<&ProcInfo> {
        let mut out = Vec::new();
        let mut cur = self.procs.get(key);
        while let Some(p) = cur {
            out.push(p);
            if p.key == p.root || out.len() > 256 {
                break;
            }
            cur = p.parent.and_then(|k| self.procs.get(&k));
        }
        out
    }

    /// Forgets exited processes that no live process descends from.
    fn collect(&mut self) {
        if self.exited.is_empty() {
            return;
        }
        let mut needed: std::collections::HashSet<ProcKey> = std::collections::HashSet::new();
        for p in self.procs.values().filter(|p| !p.exited) {
            let mut cur = p.parent;
            while let Some(k) = cur {
                if !needed.insert(k) {
                    break;
                }
                cur = self.procs.get(&k).and_then(|q| q.parent);
            }
        }
        let procs = &mut self.procs;
        self.exited.retain(|k| {
            if needed.contains(k) {
                true
            } else {
                procs.remove(k);
                false
            }
        });
    }

    /// The key of the live process with this pid, if it is in the table.
    pub fn live_key(&self, pid: u32) -> Option<ProcKey> {
        self.live.get(&pid).copied()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::events::{PathOrigin, ReportedPath};

    const HZ: u64 = 100;

    struct FakeProc(Vec<ProcSnapshot>);
    impl ProcSource for FakeProc {
        fn snapshot(&self, pid: u32) -> Option<ProcSnapshot> {
            self.0.iter().find(|s| s.pid == pid).cloned()
        }
    }

    fn actor(pid: u32, start_ticks: u64) -> Actor {
        Actor {
            tgid: pid,
            tid: pid,
            uid: 0,
            gid: 0,
            comm: "sh".into(),
            cgroup_id: 1,
            start_ns: start_ticks * 10_000_000,
            ktime_ns: 0,
            task: 0,
            task_expired: false,
            kernel: Default::default(),
            guard_set: 0,
            hook: 0,
        }
    }

    fn fork(parent: u32, pstart: u64, child: u32, cstart: u64) -> Event {
        Event::Fork {
            parent: actor(parent, pstart),
            child_tgid: child,
            child_start_ns: cstart * 10_000_000 + 123,
            root_tgid: 0,
        }
    }

    fn exec(pid: u32, start: u64, ppid: u32, exe: &str, selected: bool) -> Event {
        Event::Exec {
            actor: actor(pid, start),
            ppid,
            exe: ReportedPath {
                path: exe.into(),
                raw: exe.into(),
                origin: PathOrigin::KernelObject,
                truncated: false,
            },
            filename: exe.into(),
            argv: vec![exe.into(), "-x".into()],
            argv_truncated: false,
            newly_selected: selected,
            via_lsm: false,
            failed: None,
        }
    }

    fn exit(pid: u32, start: u64) -> Event {
        Event::Exit {
            actor: actor(pid, start),
            exit_code: Some(0),
        }
    }

    #[test]
    fn ns_and_ticks_agree_with_proc() {
        assert_eq!(ns_to_ticks(1_234_567_890, 100), 123);
        assert_eq!(ns_to_ticks(0, 100), 0);
        assert_eq!(ticks_to_ns(123, 100), 1_230_000_000);
        assert_eq!(ns_to_ticks(ticks_to_ns(4567, 100), 100), 4567);
    }

    #[test]
    fn double_fork_keeps_lineage_to_the_root_after_the_middle_exits() {
        let mut t = ProcessTable::new(HZ);
        let root = t.insert_snapshot(
            &ProcSnapshot {
                pid: 100,
                ppid: 1,
                start: 50,
                exe: "/bin/bash".into(),
                argv: vec!["bash".into()],
                comm: "bash".into(),
                uid: 0,
            },
            Reason::Registered,
            None,
        );
        t.apply(&fork(100, 50, 200, 60), &NoProc);
        t.apply(&fork(200, 60, 300, 61), &NoProc);
        t.apply(&exit(200, 60), &NoProc);
        t.apply(&exec(300, 61, 1, "/usr/bin/curl", false), &NoProc);
        let key = ProcKey { pid: 300, start: 61 };
        let chain: Vec<u32> = t.lineage(&key).iter().map(|p| p.key.pid).collect();
        assert_eq!(chain, vec![300, 200, 100]);
        assert_eq!(t.get(&key).unwrap().root, root);
        assert_eq!(t.get(&key).unwrap().exe, "/usr/bin/curl");
        // Once the grandchild is gone too, the exited middle process is forgotten.
        t.apply(&exit(300, 61), &NoProc);
        assert!(t.get(&ProcKey { pid: 200, start: 60 }).is_none());
        assert!(t.get(&ProcKey { pid: 300, start: 61 }).is_none());
        assert!(t.get(&root).is_some());
    }

    #[test]
    fn a_reused_pid_is_a_different_process() {
        let mut t = ProcessTable::new(HZ);
        t.apply(&exec(100, 10, 1, "/bin/old", true), &NoProc);
        t.apply(&exit(100, 10), &NoProc);
        t.apply(&exec(100, 99, 1, "/bin/new", true), &NoProc);
        assert!(t.get(&ProcKey { pid: 100, start: 10 }).is_none());
        assert_eq!(t.get(&ProcKey { pid: 100, start: 99 }).unwrap().exe, "/bin/new");
    }

    #[test]
    fn exec_before_fork_is_reconciled() {
        let mut t = ProcessTable::new(HZ);
        t.apply(&exec(100, 10, 1, "/bin/agent", true), &NoProc);
        // The child's exec is processed before the parent's fork record.
        t.apply(&exec(101, 11, 100, "/bin/tool", false), &NoProc);
        t.apply(&fork(100, 10, 101, 11), &NoProc);
        let child = t.get(&ProcKey { pid: 101, start: 11 }).unwrap();
        assert_eq!(child.parent, Some(ProcKey { pid: 100, start: 10 }));
        assert_eq!(child.exe, "/bin/tool");
        assert_eq!(child.reason, Reason::Inherited);
        assert_eq!(child.root, ProcKey { pid: 100, start: 10 });
    }

    #[test]
    fn unknown_actor_is_filled_from_proc_only_if_start_time_matches() {
        let mut t = ProcessTable::new(HZ);
        let src = FakeProc(vec![ProcSnapshot {
            pid: 7,
            ppid: 1,
            start: 5,
            exe: "/bin/x".into(),
            argv: vec!["x".into()],
            comm: "x".into(),
            uid: 0,
        }]);
        let k = t.ensure(&actor(7, 5), &src);
        assert_eq!(t.get(&k).unwrap().exe, "/bin/x");
        // Same pid, other start time: /proc describes another process, so it is not used.
        let k2 = t.ensure(&actor(7, 6), &src);
        assert_eq!(t.get(&k2).unwrap().exe, "");
    }
}
