//! File records are variable-size (agent_common::FileEvent): a record is built in per-CPU
//! scratch, each path's text appended after the fixed part (a walk's used bytes, a name's
//! used bytes, nothing for what the path does not carry), and only the used bytes are copied
//! into the ring. A flood of short paths fills the ring with short records, not with 3 KiB
//! of empty buffers each.
use core::ffi::c_void;

use agent_common::{
    FILE_TEXT_OFFSET, FileEvent, FilePath, RAW_PATH_LEN, WALK_MAIN, WalkedPath, counter, path_source, walk,
};
use aya_ebpf::{helpers::generated, maps::RingBuf};

use crate::{
    kernel::{KPtr, masked},
    maps::{count, wake_flags},
};

/// Appends the text of walk `w` (null: nothing walked) to `text` at `at`; sets `head`'s walk
/// fields; returns the end of the text. `at` stays within what the verifier can bound: every
/// piece is at most [`WALK_MAIN`] or `RAW_PATH_LEN - 1` bytes, and a record has four.
#[inline(always)]
pub fn put_walk(text: &mut [u8], at: usize, head: &mut FilePath, w: *const WalkedPath) -> usize {
    head.walked_len = 0;
    if w.is_null() {
        head.walk_flags = walk::EMPTY;
        return at;
    }
    // SAFETY: `w` points at a filled WalkedPath (per-CPU scratch).
    let (start, flags) = unsafe { ((*w).start as usize, (*w).flags) };
    head.walk_flags = flags;
    if flags & walk::EMPTY != 0 || start >= WALK_MAIN {
        return at;
    }
    // The mask shows the verifier start < WALK_MAIN, so 1 <= n <= WALK_MAIN.
    let start = masked(start, WALK_MAIN - 1);
    let n = WALK_MAIN - start;
    // SAFETY: at + n stays inside `text` (see FILE_TEXT_LEN); the source is inside the walk.
    unsafe {
        generated::bpf_probe_read_kernel(
            text.as_mut_ptr().add(at) as *mut c_void,
            n as u32,
            (*w).buf.as_ptr().add(start) as *const c_void,
        );
    }
    head.walked_len = n as u16;
    at + n
}

/// Appends `len` bytes of name `raw` to `text` at `at`; sets `head`'s name fields; returns
/// the end of the text.
#[inline(always)]
pub fn put_raw(text: &mut [u8], at: usize, head: &mut FilePath, raw: *const u8, len: u16, truncated: u8) -> usize {
    head.raw_truncated = truncated;
    let n = masked(len as usize, RAW_PATH_LEN - 1);
    head.raw_len = n as u16;
    if n == 0 {
        return at;
    }
    // SAFETY: at + n stays inside `text`; `raw` holds RAW_PATH_LEN bytes.
    unsafe {
        generated::bpf_probe_read_kernel(text.as_mut_ptr().add(at) as *mut c_void, n as u32, raw as *const c_void);
    }
    at + n
}

/// Appends the NUL-terminated kernel string at `src` (at most `RAW_PATH_LEN - 1` bytes) to
/// `text` at `at` as `head`'s name; returns the end of the text.
#[inline(always)]
pub fn put_kernel_str(text: &mut [u8], at: usize, head: &mut FilePath, src: KPtr) -> usize {
    head.raw_len = 0;
    head.raw_truncated = 0;
    // SAFETY: the helper bounds the copy to RAW_PATH_LEN bytes from `at`, inside `text`.
    let n = unsafe {
        generated::bpf_probe_read_kernel_str(
            text.as_mut_ptr().add(at) as *mut c_void,
            RAW_PATH_LEN as u32,
            src as *const c_void,
        )
    };
    if n <= 0 {
        return at;
    }
    let n = masked((n - 1) as usize, RAW_PATH_LEN - 1);
    head.raw_len = n as u16;
    head.raw_truncated = (n == RAW_PATH_LEN - 1) as u8;
    at + n
}

/// Does a path of source `source` carry the name as passed?
#[inline(always)]
pub fn carries_name(source: u8) -> bool {
    source == path_source::DIR_AND_NAME || source == path_source::NAME_ONLY
}

/// Sends record `ev`, whose text ends at `end`, to `ring`; a full ring is counted against
/// hook `hook` (the caller has judged already: only the record is lost). Returns whether it
/// was sent.
#[inline(always)]
pub fn send(ring: &RingBuf, ev: &FileEvent, end: usize, hook: u32) -> bool {
    let len = FILE_TEXT_OFFSET + end;
    let flags = wake_flags(ring, len as u64, false);
    // SAFETY: `ev` is a FileEvent in map memory and len <= size_of::<FileEvent>().
    let bytes = unsafe { core::slice::from_raw_parts(ev as *const FileEvent as *const u8, len) };
    if ring.output::<[u8]>(bytes, flags).is_err() {
        count(counter::lost(hook));
        return false;
    }
    true
}
