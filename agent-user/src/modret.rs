//! `fmod_ret` attachments: Tether's BPF LSM programs run as BPF_MODIFY_RETURN programs on the
//! kernel's `security_*` functions, where the kernel has BPF trampolines but BPF LSM is not in
//! `lsm=` (how Ubuntu and others ship). A `security_*` function calls each LSM's hook in turn;
//! an fmod_ret program on it runs first and, by returning an error, makes the function return
//! that error without running it: the same "refused before it happens" as a BPF LSM hook,
//! without a boot parameter.
//!
//! The bytecode is the LSM programs' own: an LSM program and an fmod_ret program on the
//! matching `security_*` function see the same arguments (the loader checks that their BTF
//! prototypes agree) followed by the return value so far, and both refuse by returning
//! -EPERM. aya 0.14 cannot load BPF_MODIFY_RETURN programs, so this module relocates the
//! object itself (aya-obj, against the maps aya created) and loads and attaches with the
//! raw `bpf(2)` commands. The links are file descriptors: they go with the process (a
//! crashed daemon leaves nothing attached) unless pinned.
use std::{
    collections::HashSet,
    ffi::CString,
    os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd},
    path::Path,
};

use aya::{
    Ebpf,
    maps::{Map, MapData},
};
use aya_obj::generated::{bpf_attach_type, bpf_attr, bpf_cmd, bpf_insn, bpf_prog_type};

#[derive(Debug, thiserror::Error)]
pub enum ModRetError {
    #[error("parsing the BPF object: {0}")]
    Parse(#[from] aya_obj::ParseError),
    #[error("relocating the BPF object: {0}")]
    Relocate(#[from] aya_obj::relocation::EbpfRelocationError),
    #[error("map {0}: its kind is not one Tether uses")]
    MapKind(String),
    #[error("duplicating the fd of map {0}: {1}")]
    Dup(String, std::io::Error),
    #[error("no program {0} in the BPF object")]
    NoProgram(String),
    #[error("loading {program} as fmod_ret on {function}: {error}{log}")]
    Load {
        program: String,
        function: String,
        error: std::io::Error,
        log: String,
    },
    #[error("attaching {program} to {function}: {error}")]
    Attach {
        program: String,
        function: String,
        error: std::io::Error,
    },
    #[error("pinning {path}: {error}")]
    Pin { path: String, error: std::io::Error },
}

/// Duplicates of the fds of every map aya created, by name: taken right after the load,
/// before the loader moves maps out (and drops some).
pub struct Maps(Vec<(String, OwnedFd)>);

impl Maps {
    pub fn of(ebpf: &Ebpf) -> Result<Maps, ModRetError> {
        let mut out = Vec::new();
        for (name, map) in ebpf.maps() {
            let data = map_data(map).ok_or_else(|| ModRetError::MapKind(name.to_string()))?;
            let fd = data
                .fd()
                .as_fd()
                .try_clone_to_owned()
                .map_err(|e| ModRetError::Dup(name.to_string(), e))?;
            out.push((name.to_string(), fd));
        }
        Ok(Maps(out))
    }
}

/// The object relocated against the maps aya created, ready to load programs from.
pub struct Object<'m> {
    obj: aya_obj::Object,
    /// The maps whose fd numbers the relocated instructions hold.
    _maps: &'m Maps,
}

/// One attached fmod_ret program: the link (detached when dropped, unless pinned), and the
/// program (for its kernel stats).
#[derive(Debug)]
pub struct Link {
    pub program: String,
    pub function: String,
    fd: OwnedFd,
    prog: OwnedFd,
}

fn map_data(map: &Map) -> Option<&MapData> {
    Some(match map {
        Map::Array(m)
        | Map::HashMap(m)
        | Map::LruHashMap(m)
        | Map::LpmTrie(m)
        | Map::PerCpuArray(m)
        | Map::PerCpuHashMap(m)
        | Map::RingBuf(m) => m,
        _ => return None,
    })
}

impl<'m> Object<'m> {
    /// Parses `object` again and relocates it against `maps`.
    pub fn new(object: &[u8], maps: &'m Maps) -> Result<Object<'m>, ModRetError> {
        let mut obj = aya_obj::Object::parse(object)?;
        let defs: Vec<(&str, i32, aya_obj::Map)> = maps
            .0
            .iter()
            .filter_map(|(name, fd)| obj.maps.get(name).cloned().map(|m| (name.as_str(), fd.as_raw_fd(), m)))
            .collect();
        let text_sections: HashSet<usize> = obj.functions.keys().map(|(section, _)| *section).collect();
        obj.relocate_maps(defs.iter().map(|(n, fd, m)| (*n, *fd, m)), &text_sections)?;
        obj.relocate_calls(&text_sections)?;
        Ok(Object { obj, _maps: maps })
    }

    fn instructions(&self, program: &str) -> Result<&[bpf_insn], ModRetError> {
        let p = self
            .obj
            .programs
            .get(program)
            .ok_or_else(|| ModRetError::NoProgram(program.into()))?;
        let f = self
            .obj
            .functions
            .get(&p.function_key())
            .ok_or_else(|| ModRetError::NoProgram(program.into()))?;
        Ok(&f.instructions)
    }

    /// Loads program `program` as BPF_MODIFY_RETURN on kernel function `function` (vmlinux
    /// BTF id `btf_id`) and attaches it.
    pub fn attach(&self, program: &str, function: &str, btf_id: u32) -> Result<Link, ModRetError> {
        let insns = self.instructions(program)?;
        let license = CString::new("GPL").expect("no NUL");
        let load = |log: Option<&mut Vec<u8>>| -> Result<OwnedFd, std::io::Error> {
            // SAFETY: bpf_attr is plain data; all-zero is its default for every command.
            let mut attr: bpf_attr = unsafe { std::mem::zeroed() };
            // SAFETY: the PROG_LOAD member of the zeroed union (all its fields are plain data).
            let u = unsafe { &mut attr.__bindgen_anon_3 };
            u.prog_type = bpf_prog_type::BPF_PROG_TYPE_TRACING as u32;
            u.expected_attach_type = bpf_attach_type::BPF_MODIFY_RETURN as u32;
            u.insns = insns.as_ptr() as u64;
            u.insn_cnt = insns.len() as u32;
            u.license = license.as_ptr() as u64;
            u.attach_btf_id = btf_id;
            for (dst, src) in u.prog_name.iter_mut().zip(program.bytes().take(15)) {
                *dst = src as std::ffi::c_char;
            }
            if let Some(buf) = log {
                u.log_level = 1;
                u.log_size = buf.len() as u32;
                u.log_buf = buf.as_mut_ptr() as u64;
            }
            sys_bpf(bpf_cmd::BPF_PROG_LOAD, &mut attr)
        };
        let prog = match load(None) {
            Ok(fd) => fd,
            Err(error) => {
                // Again with the verifier's log, for the error.
                let mut buf = vec![0u8; 1 << 20];
                let _ = load(Some(&mut buf));
                let text = String::from_utf8_lossy(&buf);
                let text = text.trim_end_matches('\0').trim();
                let tail: String = text
                    .lines()
                    .rev()
                    .take(8)
                    .collect::<Vec<_>>()
                    .into_iter()
                    .rev()
                    .collect::<Vec<_>>()
                    .join(" | ");
                return Err(ModRetError::Load {
                    program: program.into(),
                    function: function.into(),
                    error,
                    log: if tail.is_empty() {
                        String::new()
                    } else {
                        format!(" (verifier: {tail})")
                    },
                });
            }
        };
        // SAFETY: as above. The RAW_TRACEPOINT_OPEN member without a name attaches a tracing
        // program to the function it was loaded for.
        let mut attr: bpf_attr = unsafe { std::mem::zeroed() };
        attr.raw_tracepoint.prog_fd = prog.as_raw_fd() as u32;
        let fd = sys_bpf(bpf_cmd::BPF_RAW_TRACEPOINT_OPEN, &mut attr).map_err(|error| ModRetError::Attach {
            program: program.into(),
            function: function.into(),
            error,
        })?;
        Ok(Link {
            program: program.into(),
            function: function.into(),
            fd,
            prog,
        })
    }
}

/// Calls the kernel did not run program `prog` for: its recursion guard skips a program
/// already running on that CPU (`recursion_misses` of `bpf_prog_info`; None where the kernel,
/// before 5.12, does not count them).
pub fn recursion_misses(prog: std::os::fd::BorrowedFd<'_>) -> Result<Option<u64>, std::io::Error> {
    use aya_obj::generated::bpf_prog_info;
    // SAFETY: plain C structs: all zeroes is a valid value of each.
    let (mut info, mut attr): (bpf_prog_info, bpf_attr) = unsafe { (std::mem::zeroed(), std::mem::zeroed()) };
    attr.info.bpf_fd = prog.as_raw_fd() as u32;
    attr.info.info_len = std::mem::size_of::<bpf_prog_info>() as u32;
    attr.info.info = &mut info as *mut bpf_prog_info as u64;
    sys_bpf_raw(bpf_cmd::BPF_OBJ_GET_INFO_BY_FD, &mut attr)?;
    // The kernel writes the bytes it knows and says how many.
    // SAFETY: the member written above, and by the kernel.
    let known = unsafe { attr.info.info_len } as usize;
    let end = std::mem::offset_of!(bpf_prog_info, recursion_misses) + 8;
    Ok((known >= end).then_some(info.recursion_misses))
}

impl Link {
    /// The attached program.
    pub fn program_fd(&self) -> std::os::fd::BorrowedFd<'_> {
        self.prog.as_fd()
    }

    /// Pins the link at `path` (it then outlives the process, until unpinned).
    pub fn pin(&self, path: &Path) -> Result<(), ModRetError> {
        use std::os::unix::ffi::OsStrExt;
        let err = |error| ModRetError::Pin {
            path: path.display().to_string(),
            error,
        };
        let p = CString::new(path.as_os_str().as_bytes())
            .map_err(|_| err(std::io::Error::from(std::io::ErrorKind::InvalidInput)))?;
        // SAFETY: as above (the OBJ_PIN member).
        let mut attr: bpf_attr = unsafe { std::mem::zeroed() };
        attr.__bindgen_anon_4.pathname = p.as_ptr() as u64;
        attr.__bindgen_anon_4.bpf_fd = self.fd.as_raw_fd() as u32;
        sys_bpf_raw(bpf_cmd::BPF_OBJ_PIN, &mut attr).map(drop).map_err(err)
    }
}

/// bpf(2): the command's result.
fn sys_bpf_raw(cmd: bpf_cmd, attr: &mut bpf_attr) -> Result<i64, std::io::Error> {
    // SAFETY: `attr` is a valid bpf_attr of the size passed.
    let r = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            cmd as libc::c_int,
            attr as *mut bpf_attr,
            std::mem::size_of::<bpf_attr>() as libc::c_uint,
        )
    };
    if r < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(r)
}

/// bpf(2) for a command that makes an object: its new fd.
fn sys_bpf(cmd: bpf_cmd, attr: &mut bpf_attr) -> Result<OwnedFd, std::io::Error> {
    let fd = sys_bpf_raw(cmd, attr)?;
    // SAFETY: the kernel returned a new fd, owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}
