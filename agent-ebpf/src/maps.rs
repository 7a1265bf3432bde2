//! Maps and the load-time configuration global. Names are the contract with agent-user's loader.
use agent_common::{
    COMM_LEN, Config, FileEvent, InodeKey, MAX_PENDING, MAX_TRACKED, PendingExec, PendingFile, PendingSock,
    RING_ALERT_BYTES, RING_FILE_BYTES, RING_NET_BYTES, RING_PROC_BYTES, RING_WAKE_BYTES, RING_WAKE_STEP, Tracked,
    UnixEvent, WALK_MAX_STEPS, WalkedPath,
    contain::{Grants, MAX_GUARDRAILS, MAX_RULES, NetKey, NetRule, PathKey, PathRule, TailKey, Verdict, posture},
    counter,
};
use aya_ebpf::{
    bindings::{BPF_RB_AVAIL_DATA, BPF_RB_FORCE_WAKEUP, BPF_RB_NO_WAKEUP, BPF_RB_PROD_POS},
    macros::map,
    maps::{Array, HashMap, LpmTrie, LruHashMap, PerCpuArray, RingBuf, lpm_trie::Key},
};

/// Offsets and settings written by the daemon before load (see agent_common::config).
#[unsafe(no_mangle)]
pub static CONFIG: Config = Config::zeroed();

/// [0]: the generation whose programs act (agent_common::Config::generation). Shared by the
/// generations of a restart or upgrade; the daemon hands over by writing it.
#[map]
pub static ACTIVE: Array<u64> = Array::with_max_entries(1, 0);

/// [0]: what the daemon attached around the programs (agent_common::feature bits), written
/// once the attachments are known, so a program can leave to a BPF LSM hook what that hook
/// judges better.
#[map]
pub static FEATURES: Array<u32> = Array::with_max_entries(1, 0);

/// Is `bit` (agent_common::feature) in effect?
#[inline(always)]
pub fn feature(bit: u32) -> bool {
    FEATURES.get(0).is_some_and(|f| *f & bit != 0)
}

/// tgid -> tracking info, for every process Tether watches.
#[map]
pub static TRACKED: HashMap<u32, Tracked> = HashMap::with_max_entries(MAX_TRACKED, 0);

// Agent selector maps (agent_common::select): key -> mask of the selectors that list it.
/// comm (NUL-padded) -> selectors naming it.
#[map]
pub static SELECT_COMM: HashMap<[u8; COMM_LEN], u64> = HashMap::with_max_entries(1024, 0);

/// executable inode -> selectors naming it.
#[map]
pub static SELECT_EXE: HashMap<InodeKey, u64> = HashMap::with_max_entries(1024, 0);

/// real uid -> selectors naming it.
#[map]
pub static SELECT_UID: HashMap<u32, u64> = HashMap::with_max_entries(1024, 0);

/// cgroup v2 id -> selectors naming that cgroup (matched for it and every cgroup below it).
#[map]
pub static SELECT_CGROUP: HashMap<u64, u64> = HashMap::with_max_entries(1024, 0);

/// pod cgroup v2 id -> the guard set of the pod's processes (agent_common::contain::guard_owner),
/// written by the daemon as pods come and go; read when a process becomes tracked at exec.
#[map]
pub static POD_GUARDS: HashMap<u64, u32> = HashMap::with_max_entries(1024, 0);

/// The rings of records to userspace, one per kind of record (agent_common::RING_*_BYTES):
/// a flood of one kind cannot crowd out the others. Every program judges first and emits
/// after, so a full ring loses a record (counted per hook), never a verdict.
/// exec, fork, exit, io_uring.
#[map]
pub static PROC_EVENTS: RingBuf = RingBuf::with_byte_size(RING_PROC_BYTES, 0);

/// Every socket record (IP and Unix).
#[map]
pub static NET_EVENTS: RingBuf = RingBuf::with_byte_size(RING_NET_BYTES, 0);

/// File records the kernel found no rule against.
#[map]
pub static FILE_EVENTS: RingBuf = RingBuf::with_byte_size(RING_FILE_BYTES, 0);

/// File records a rule matched or the kernel could not judge.
#[map]
pub static ALERT_EVENTS: RingBuf = RingBuf::with_byte_size(RING_ALERT_BYTES, 0);

/// The ring of a file record with verdict `v` (judged already).
#[inline(always)]
pub fn file_ring(v: u32) -> &'static RingBuf {
    use agent_common::contain::verdict;
    if v & (verdict::ACTION_MASK | verdict::UNJUDGED) != 0 {
        &ALERT_EVENTS
    } else {
        &FILE_EVENTS
    }
}

/// thread id -> a file syscall between its entry and its exit. Preallocated (~5 MiB): a map
/// that allocates at update time may deadlock when updated from a tracepoint (5.10 warns
/// "trace type BPF program uses run-time allocation" at load), and a full one fails the
/// insert, which is counted (PENDING_FULL), where an LRU would silently evict another
/// thread's call in flight.
#[map]
pub static PENDING: HashMap<u32, PendingFile> = HashMap::with_max_entries(MAX_PENDING, 0);

/// thread id -> 1: the BPF LSM bprm_check_security hook checked this thread's exec; the
/// sched_process_exec record that follows (keyed by its old_pid) says so. LRU: an exec that
/// fails after the check leaves an entry that ages out.
#[map]
pub static EXEC_CHECKED: LruHashMap<u32, u32> = LruHashMap::with_max_entries(MAX_PENDING, 0);

/// thread id -> a socket syscall between its entry and its exit (its fd). Preallocated, and a
/// full one fails closed (see agent-ebpf's sock module).
#[map]
pub static SOCK_CALLS: HashMap<u32, PendingSock> = HashMap::with_max_entries(MAX_PENDING, 0);

/// thread id -> the IP connect the BPF LSM hook just judged ([`agent_common::ConnectMark`]).
/// LRU: an evicted mark only makes a record twice.
#[map]
pub static CONNECT_MARKS: LruHashMap<u32, agent_common::ConnectMark> = LruHashMap::with_max_entries(4096, 0);

/// thread id -> an execve between its entry and its exit (a refused one is reported at exit).
#[map]
pub static EXEC_PENDING: LruHashMap<u32, PendingExec> = LruHashMap::with_max_entries(MAX_PENDING, 0);

/// thread id -> a sandboxed call that reached its entry tracepoint (its number): a call that
/// exits with EPERM and has no entry here was refused by a seccomp filter before it ran. LRU:
/// an evicted entry (more threads inside these calls at once than it holds) makes a kernel
/// EPERM read as a seccomp refusal, never the reverse.
#[map]
pub static SANDBOX_ENTERED: LruHashMap<u32, u32> = LruHashMap::with_max_entries(MAX_PENDING, 0);

/// thread id -> a tracked process's TCP connect or bind between its entry and its exit (what
/// it asked for), for the record of a Landlock refusal. LRU: an evicted entry loses that
/// record (the refusal still holds), never a verdict.
#[map]
pub static LANDLOCK_CALLS: LruHashMap<u32, agent_common::PendingNet> = LruHashMap::with_max_entries(MAX_PENDING, 0);

/// Per-CPU staging slot for a PendingFile (too large for the stack).
#[map]
pub static SCRATCH: PerCpuArray<PendingFile> = PerCpuArray::with_max_entries(1, 0);

/// Per-CPU scratch of a path walk (names met from the leaf up).
#[repr(C)]
pub struct WalkScratch {
    pub name: [u64; WALK_MAX_STEPS as usize],
    pub len: [u32; WALK_MAX_STEPS as usize],
    /// Where each name's `/` landed in the output buffer (leaf first), for the wildcard
    /// segment lookups of containment.
    pub pos: [u16; WALK_MAX_STEPS as usize],
    pub count: u32,
    pub flags: u16,
    /// The output's `start` when the copy finished (which walk `pos` belongs to).
    pub start: u16,
}

#[map]
pub static WALK_SCRATCH: PerCpuArray<WalkScratch> = PerCpuArray::with_max_entries(1, 0);

/// Containment rules compiled by the daemon (layout: agent_common::contain).
#[map]
pub static PATH_RULES: LpmTrie<PathKey, PathRule> = LpmTrie::with_max_entries(MAX_RULES, 0);

#[map]
pub static TAIL_RULES: LpmTrie<TailKey, PathRule> = LpmTrie::with_max_entries(MAX_RULES, 0);

#[map]
pub static NET_RULES: LpmTrie<NetKey, NetRule> = LpmTrie::with_max_entries(MAX_RULES, 0);

/// Action and mode per violation class (agent_common::contain::posture).
#[map]
pub static POSTURE: Array<Verdict> = Array::with_max_entries(posture::COUNT, 0);

/// Action and mode per guardrail.
#[map]
pub static GUARD_VERDICTS: Array<Verdict> = Array::with_max_entries(MAX_GUARDRAILS, 0);

/// owner -> the socket kinds and io_uring its scope grants (a task) or its guardrails forbid
/// (a guard set's owner); agent_common::contain::Grants.
#[map]
pub static GRANTS: HashMap<u32, Grants> = HashMap::with_max_entries(MAX_RULES, 0);

/// A lookup key with slack after it: byte offsets into the key are masked (the verifier's
/// way to see a bound), and a masked offset may point past the key, never past the value.
#[repr(C)]
pub struct Slack<K> {
    pub key: Key<K>,
    pub slack: [u8; 256],
}

/// Per-CPU lookup keys (too large for the BPF stack).
#[map]
pub static PATH_KEY: PerCpuArray<Slack<PathKey>> = PerCpuArray::with_max_entries(1, 0);

#[map]
pub static TAIL_KEY: PerCpuArray<Slack<TailKey>> = PerCpuArray::with_max_entries(1, 0);

/// Per-CPU staging of a Unix socket record (judged before its ring slot is reserved).
#[map]
pub static UNIX_WALK: PerCpuArray<UnixEvent> = PerCpuArray::with_max_entries(1, 0);

/// Per-CPU staging of a FileEvent made at a syscall's exit (judged, then sent with only its
/// used bytes: agent-ebpf's record module).
#[map]
pub static FILE_SCRATCH: PerCpuArray<FileEvent> = PerCpuArray::with_max_entries(1, 0);

/// Per-CPU walks of the two paths of a file syscall at its exit (judged from here, then
/// copied into the record's text).
#[map]
pub static FILE_WALK: PerCpuArray<WalkedPath> = PerCpuArray::with_max_entries(2, 0);

/// Per-CPU staging of a FileEvent made by a BPF LSM file hook (kept apart from the syscall
/// exit's).
#[map]
pub static LSM_FILE_SCRATCH: PerCpuArray<FileEvent> = PerCpuArray::with_max_entries(1, 0);

/// Per-CPU walk of the file an exec is about to run (the BPF LSM exec hook), or of the file
/// file_open judges.
#[map]
pub static EXEC_WALK: PerCpuArray<WalkedPath> = PerCpuArray::with_max_entries(1, 0);

/// Per-CPU walks of the paths a BPF LSM path hook judges (path_mknod, path_rename, ...):
/// index 0 the first path, 1 the second of a rename or link.
#[map]
pub static PATH_WALK: PerCpuArray<WalkedPath> = PerCpuArray::with_max_entries(2, 0);

/// Per-CPU slot a verdict goes through on its way out of a heavy subprogram ([`opaque`]).
#[map]
pub static VERDICT_SLOT: PerCpuArray<u32> = PerCpuArray::with_max_entries(1, 0);

/// A scan's state kept in map memory, out of the verifier's view (`contain::judge_unix_name`).
#[repr(C)]
pub struct Scan {
    pub len: u32,
    pub leaf: u32,
}

/// Per-CPU [`Scan`] slot.
#[map]
pub static SCAN: PerCpuArray<Scan> = PerCpuArray::with_max_entries(1, 0);

/// Per-CPU slot [`scalar`] passes kernel pointers through.
#[map]
pub static POINTER_SLOT: PerCpuArray<u64> = PerCpuArray::with_max_entries(1, 0);

/// The address `p` as a plain number: a BPF global function takes scalars only, and an LSM
/// hook's arguments are typed pointers to the verifier. A round trip through a map drops the
/// type (a privileged loader may store a pointer in a map); a failed lookup gives 0 (null),
/// which every reader treats as unknown.
#[inline(always)]
pub fn scalar(p: *const core::ffi::c_void) -> u64 {
    match POINTER_SLOT.get_ptr_mut(0) {
        Some(slot) => {
            // SAFETY: per-CPU slot owned by this program run.
            unsafe {
                *slot = p as u64;
                core::ptr::read_volatile(slot)
            }
        }
        None => 0,
    }
}

/// `v`, as a value the verifier cannot tell apart by path: a subprogram whose paths return
/// different constants makes the verifier go on with one state per constant, and verify all
/// that follows (a second path walk) once per state. A round trip through a map collapses
/// them into one.
#[inline(always)]
pub fn opaque(v: u32) -> u32 {
    match VERDICT_SLOT.get_ptr_mut(0) {
        Some(slot) => {
            // SAFETY: per-CPU slot owned by this program run.
            unsafe {
                *slot = v;
                core::ptr::read_volatile(slot)
            }
        }
        None => v,
    }
}

/// Loss and error counters, summed over CPUs by userspace (agent_common::counter).
#[map]
pub static COUNTERS: PerCpuArray<u64> = PerCpuArray::with_max_entries(counter::COUNT, 0);

#[inline(always)]
pub fn count(index: u32) {
    if let Some(c) = COUNTERS.get_ptr_mut(index) {
        // SAFETY: per-CPU slot, no concurrent writer on this CPU.
        unsafe { *c += 1 };
    }
}

/// Submit flags for a record of `len` bytes in `ring` (`reserved`: already counted in the
/// ring's producer position, as a reservation is; else about to be, as an output is). No
/// wakeup per record: below the watermark the reader drains on a short timer; past it, the
/// record that crosses a [`agent_common::RING_WAKE_STEP`] boundary of the producer position
/// wakes it, so a busy reader is woken once per step, not once per record (each wakeup is an
/// interrupt: a VM exit in a VM).
#[inline(always)]
pub fn wake_flags(ring: &RingBuf, len: u64, reserved: bool) -> u64 {
    if ring.query(BPF_RB_AVAIL_DATA as u64) <= RING_WAKE_BYTES {
        return BPF_RB_NO_WAKEUP as u64;
    }
    let pos = ring.query(BPF_RB_PROD_POS as u64);
    let (before, after) = if reserved {
        (pos.wrapping_sub(len), pos)
    } else {
        (pos, pos.wrapping_add(len))
    };
    if before / RING_WAKE_STEP != after / RING_WAKE_STEP {
        BPF_RB_FORCE_WAKEUP as u64
    } else {
        BPF_RB_NO_WAKEUP as u64
    }
}

/// [`wake_flags`] of a reserved `T` record.
#[inline(always)]
pub fn wake_flags_of<T>(ring: &RingBuf) -> u64 {
    wake_flags(ring, core::mem::size_of::<T>() as u64, true)
}

/// Reserves a `T` record in `ring` for hook `hook` ([`agent_common::hook`]); a full ring is
/// counted against the hook (the caller has judged already: only the record is lost).
#[inline(always)]
pub fn reserve<T: 'static>(ring: &'static RingBuf, hook: u32) -> Option<aya_ebpf::maps::ring_buf::RingBufEntry<T>> {
    let slot = ring.reserve::<T>(0);
    if slot.is_none() {
        count(counter::lost(hook));
    }
    slot
}

/// Reads a field of `CONFIG`; volatile, so the zero placeholder compiled into the object is not
/// constant-folded (the daemon writes the real values at load).
#[inline(always)]
pub fn config_value(field: &u32) -> u32 {
    // SAFETY: a valid reference to a plain integer.
    unsafe { core::ptr::read_volatile(field) }
}

/// Reads a 64-bit field of `CONFIG` (see [`config_value`]).
#[inline(always)]
pub fn config_value64(field: &u64) -> u64 {
    // SAFETY: a valid reference to a plain integer.
    unsafe { core::ptr::read_volatile(field) }
}

/// Is `feature` (a agent_common::config::degraded bit) switched off on this kernel?
#[inline(always)]
pub fn degraded(feature: u32) -> bool {
    config_value(&CONFIG.degraded) & feature != 0
}

/// The daemon's own tgid, which is never tracked nor reported.
#[inline(always)]
pub fn self_tgid() -> u32 {
    config_value(&CONFIG.self_tgid)
}

/// Do this load's programs act? Only one generation does at any moment (see [`ACTIVE`]);
/// the others return at once, as for an untracked process.
#[inline(always)]
pub fn active() -> bool {
    ACTIVE.get(0).is_some_and(|g| *g == config_value64(&CONFIG.generation))
}

/// The tracked-map entry of process `tgid`, when this generation acts; never the daemon's.
#[inline(always)]
pub fn tracked(tgid: u32) -> Option<Tracked> {
    if tgid == self_tgid() {
        return None;
    }
    // SAFETY: map lookup; the value is copied out at once.
    let t = unsafe { TRACKED.get(&tgid) }.copied()?;
    active().then_some(t)
}
