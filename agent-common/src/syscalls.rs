//! The file syscalls the programs watch, with their numbers on each supported architecture.
//!
//! Each entry says which tracepoints to attach (`sys_enter_NAME` / `sys_exit_NAME`) and how the
//! entry program reads the arguments. The numbers come from the kernel's syscall tables
//! (arch/x86/entry/syscalls/syscall_64.tbl, include/uapi/asm-generic/unistd.h).

/// How a syscall's arguments map onto a file operation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Shape {
    /// open(path, flags, mode)
    Open,
    /// openat(dfd, path, flags, mode)
    OpenAt,
    /// openat2(dfd, path, struct open_how *how, size)
    OpenAt2,
    /// open_by_handle_at(mount_fd, struct file_handle *handle, flags): no name at all; the
    /// file is known at the exit, by the fd returned
    OpenByHandle,
    /// creat(path, mode)
    Creat,
    /// truncate(path, length)
    Truncate,
    /// ftruncate(fd, length)
    FTruncate,
    /// rename(old, new)
    Rename,
    /// renameat(odfd, old, ndfd, new)
    RenameAt,
    /// renameat2(odfd, old, ndfd, new, flags)
    RenameAt2,
    /// unlink(path)
    Unlink,
    /// unlinkat(dfd, path, flags): rmdir with AT_REMOVEDIR
    UnlinkAt,
    /// rmdir(path)
    Rmdir,
    /// mkdir(path, mode)
    Mkdir,
    /// mkdirat(dfd, path, mode)
    MkdirAt,
    /// link(old, new)
    Link,
    /// linkat(odfd, old, ndfd, new, flags)
    LinkAt,
    /// symlink(target, linkpath)
    Symlink,
    /// symlinkat(target, ndfd, linkpath)
    SymlinkAt,
    /// chmod(path, mode)
    Chmod,
    /// fchmod(fd, mode)
    FChmod,
    /// fchmodat(dfd, path, mode)
    FChmodAt,
    /// fchmodat2(dfd, path, mode, flags)
    FChmodAt2,
    /// chown(path, uid, gid) and lchown(path, uid, gid)
    Chown,
    /// fchown(fd, uid, gid)
    FChown,
    /// fchownat(dfd, path, uid, gid, flags)
    FChownAt,
    /// mknod(path, mode, dev)
    Mknod,
    /// mknodat(dfd, path, mode, dev)
    MknodAt,
    /// setxattr(path, name, value, size, flags) and lsetxattr
    SetXattr,
    /// fsetxattr(fd, name, value, size, flags)
    FSetXattr,
    /// setxattrat(dfd, path, at_flags, name, args, size)
    SetXattrAt,
    /// removexattr(path, name) and lremovexattr
    RemoveXattr,
    /// fremovexattr(fd, name)
    FRemoveXattr,
    /// removexattrat(dfd, path, at_flags, name)
    RemoveXattrAt,
    /// utimensat(dfd, path, times, flags): path NULL means the file of dfd
    UtimensAt,
    /// utimes(path, times) and utime(path, times)
    Utimes,
    /// futimesat(dfd, path, times)
    FutimesAt,
}

/// One watched syscall.
#[derive(Clone, Copy, Debug)]
pub struct Syscall {
    pub name: &'static str,
    pub nr: u32,
    pub shape: Shape,
}

/// AT_SYMLINK_NOFOLLOW, in the flags of the *at calls.
pub const AT_SYMLINK_NOFOLLOW: u64 = 0x100;
/// AT_SYMLINK_FOLLOW, in linkat's flags: link the file a final symlink of the old name leads to.
pub const AT_SYMLINK_FOLLOW: u64 = 0x400;

impl Syscall {
    /// An open with (possible) write intent: where BPF LSM is in effect its file_open hook
    /// reports these instead of the syscall tracepoints.
    pub const fn is_open(&self) -> bool {
        matches!(
            self.shape,
            Shape::Open | Shape::OpenAt | Shape::OpenAt2 | Shape::OpenByHandle | Shape::Creat
        )
    }

    /// Does the call act on the file a final symlink of its name leads to (rather than on
    /// the link itself), given its flags as recorded?
    pub fn follows_final(&self, flags: u64) -> bool {
        match self.shape {
            Shape::Truncate | Shape::Chmod | Shape::Utimes | Shape::FChmodAt | Shape::FutimesAt => true,
            Shape::Chown => !matches!(self.name.as_bytes(), b"lchown"),
            Shape::SetXattr | Shape::RemoveXattr => !self.name.as_bytes().starts_with(b"l"),
            Shape::FChmodAt2 | Shape::FChownAt | Shape::UtimensAt | Shape::SetXattrAt | Shape::RemoveXattrAt => {
                flags & AT_SYMLINK_NOFOLLOW == 0
            }
            Shape::LinkAt => flags & AT_SYMLINK_FOLLOW != 0,
            _ => false,
        }
    }
}

const fn sc(name: &'static str, nr: u32, shape: Shape) -> Syscall {
    Syscall { name, nr, shape }
}

#[cfg(not(any(target_arch = "aarch64", bpf_target_arch = "aarch64")))]
pub const WATCHED: &[Syscall] = &[
    sc("open", 2, Shape::Open),
    sc("openat", 257, Shape::OpenAt),
    sc("openat2", 437, Shape::OpenAt2),
    sc("open_by_handle_at", 304, Shape::OpenByHandle),
    sc("creat", 85, Shape::Creat),
    sc("truncate", 76, Shape::Truncate),
    sc("ftruncate", 77, Shape::FTruncate),
    sc("rename", 82, Shape::Rename),
    sc("renameat", 264, Shape::RenameAt),
    sc("renameat2", 316, Shape::RenameAt2),
    sc("unlink", 87, Shape::Unlink),
    sc("unlinkat", 263, Shape::UnlinkAt),
    sc("rmdir", 84, Shape::Rmdir),
    sc("mkdir", 83, Shape::Mkdir),
    sc("mkdirat", 258, Shape::MkdirAt),
    sc("link", 86, Shape::Link),
    sc("linkat", 265, Shape::LinkAt),
    sc("symlink", 88, Shape::Symlink),
    sc("symlinkat", 266, Shape::SymlinkAt),
    sc("chmod", 90, Shape::Chmod),
    sc("fchmod", 91, Shape::FChmod),
    sc("fchmodat", 268, Shape::FChmodAt),
    sc("fchmodat2", 452, Shape::FChmodAt2),
    sc("chown", 92, Shape::Chown),
    sc("lchown", 94, Shape::Chown),
    sc("fchown", 93, Shape::FChown),
    sc("fchownat", 260, Shape::FChownAt),
    sc("mknod", 133, Shape::Mknod),
    sc("mknodat", 259, Shape::MknodAt),
    sc("setxattr", 188, Shape::SetXattr),
    sc("lsetxattr", 189, Shape::SetXattr),
    sc("fsetxattr", 190, Shape::FSetXattr),
    sc("setxattrat", 463, Shape::SetXattrAt),
    sc("removexattr", 197, Shape::RemoveXattr),
    sc("lremovexattr", 198, Shape::RemoveXattr),
    sc("fremovexattr", 199, Shape::FRemoveXattr),
    sc("removexattrat", 466, Shape::RemoveXattrAt),
    sc("utimensat", 280, Shape::UtimensAt),
    sc("utimes", 235, Shape::Utimes),
    sc("utime", 132, Shape::Utimes),
    sc("futimesat", 261, Shape::FutimesAt),
];

#[cfg(any(target_arch = "aarch64", bpf_target_arch = "aarch64"))]
pub const WATCHED: &[Syscall] = &[
    sc("openat", 56, Shape::OpenAt),
    sc("openat2", 437, Shape::OpenAt2),
    sc("open_by_handle_at", 265, Shape::OpenByHandle),
    sc("truncate", 45, Shape::Truncate),
    sc("ftruncate", 46, Shape::FTruncate),
    sc("renameat", 38, Shape::RenameAt),
    sc("renameat2", 276, Shape::RenameAt2),
    sc("unlinkat", 35, Shape::UnlinkAt),
    sc("mkdirat", 34, Shape::MkdirAt),
    sc("linkat", 37, Shape::LinkAt),
    sc("symlinkat", 36, Shape::SymlinkAt),
    sc("fchmod", 52, Shape::FChmod),
    sc("fchmodat", 53, Shape::FChmodAt),
    sc("fchmodat2", 452, Shape::FChmodAt2),
    sc("fchown", 55, Shape::FChown),
    sc("fchownat", 54, Shape::FChownAt),
    sc("mknodat", 33, Shape::MknodAt),
    sc("setxattr", 5, Shape::SetXattr),
    sc("lsetxattr", 6, Shape::SetXattr),
    sc("fsetxattr", 7, Shape::FSetXattr),
    sc("setxattrat", 463, Shape::SetXattrAt),
    sc("removexattr", 14, Shape::RemoveXattr),
    sc("lremovexattr", 15, Shape::RemoveXattr),
    sc("fremovexattr", 16, Shape::FRemoveXattr),
    sc("removexattrat", 466, Shape::RemoveXattrAt),
    sc("utimensat", 88, Shape::UtimensAt),
];

/// The watched syscall with this number.
pub fn by_nr(nr: u32) -> Option<&'static Syscall> {
    let mut i = 0;
    while i < WATCHED.len() {
        if WATCHED[i].nr == nr {
            return Some(&WATCHED[i]);
        }
        i += 1;
    }
    None
}

/// How a socket syscall's arguments are read (the socket tracepoints; see agent-ebpf's
/// `sock` module for what each is watched for).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SockShape {
    /// socket(family, type, protocol)
    Socket,
    /// connect(fd, addr, addrlen)
    Connect,
    /// sendto(fd, buf, len, flags, addr, addrlen)
    SendTo,
    /// sendmsg(fd, msg, flags)
    SendMsg,
    /// sendmmsg(fd, msgvec, vlen, flags)
    SendMmsg,
    /// listen(fd, backlog)
    Listen,
    /// accept(fd, addr, addrlen) and accept4(fd, addr, addrlen, flags)
    Accept,
}

/// One watched socket syscall.
#[derive(Clone, Copy, Debug)]
pub struct SockSyscall {
    pub name: &'static str,
    pub nr: u32,
    pub shape: SockShape,
}

const fn ss(name: &'static str, nr: u32, shape: SockShape) -> SockSyscall {
    SockSyscall { name, nr, shape }
}

#[cfg(not(any(target_arch = "aarch64", bpf_target_arch = "aarch64")))]
pub const SOCKET_WATCHED: &[SockSyscall] = &[
    ss("socket", 41, SockShape::Socket),
    ss("connect", 42, SockShape::Connect),
    ss("accept", 43, SockShape::Accept),
    ss("sendto", 44, SockShape::SendTo),
    ss("sendmsg", 46, SockShape::SendMsg),
    ss("listen", 50, SockShape::Listen),
    ss("accept4", 288, SockShape::Accept),
    ss("sendmmsg", 307, SockShape::SendMmsg),
];

#[cfg(any(target_arch = "aarch64", bpf_target_arch = "aarch64"))]
pub const SOCKET_WATCHED: &[SockSyscall] = &[
    ss("socket", 198, SockShape::Socket),
    ss("listen", 201, SockShape::Listen),
    ss("accept", 202, SockShape::Accept),
    ss("connect", 203, SockShape::Connect),
    ss("sendto", 206, SockShape::SendTo),
    ss("sendmsg", 211, SockShape::SendMsg),
    ss("accept4", 242, SockShape::Accept),
    ss("sendmmsg", 269, SockShape::SendMmsg),
];

/// The watched socket syscall with this number.
pub fn sock_by_nr(nr: u32) -> Option<&'static SockSyscall> {
    let mut i = 0;
    while i < SOCKET_WATCHED.len() {
        if SOCKET_WATCHED[i].nr == nr {
            return Some(&SOCKET_WATCHED[i]);
        }
        i += 1;
    }
    None
}

/// A call `tether exec`'s seccomp filter may refuse: the daemon attaches the sandbox probes to
/// its `sys_enter_NAME` / `sys_exit_NAME` tracepoints, so each refusal is recorded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Sandboxed {
    pub name: &'static str,
    pub nr: u32,
}

const fn sb(name: &'static str, nr: u32) -> Sandboxed {
    Sandboxed { name, nr }
}

#[cfg(not(any(target_arch = "aarch64", bpf_target_arch = "aarch64")))]
pub const SANDBOXED: &[Sandboxed] = &[
    sb("socket", 41),
    sb("ptrace", 101),
    sb("chown", 92),
    sb("fchown", 93),
    sb("lchown", 94),
    sb("mknod", 133),
    sb("init_module", 175),
    sb("delete_module", 176),
    sb("setxattr", 188),
    sb("lsetxattr", 189),
    sb("fsetxattr", 190),
    sb("removexattr", 197),
    sb("lremovexattr", 198),
    sb("fremovexattr", 199),
    sb("kexec_load", 246),
    sb("mknodat", 259),
    sb("fchownat", 260),
    sb("open_by_handle_at", 304),
    sb("process_vm_readv", 310),
    sb("process_vm_writev", 311),
    sb("finit_module", 313),
    sb("kexec_file_load", 320),
    sb("bpf", 321),
    sb("io_uring_setup", 425),
    sb("io_uring_enter", 426),
    sb("io_uring_register", 427),
    sb("pidfd_getfd", 438),
    sb("setxattrat", 463),
    sb("removexattrat", 466),
];

#[cfg(any(target_arch = "aarch64", bpf_target_arch = "aarch64"))]
pub const SANDBOXED: &[Sandboxed] = &[
    sb("setxattr", 5),
    sb("lsetxattr", 6),
    sb("fsetxattr", 7),
    sb("removexattr", 14),
    sb("lremovexattr", 15),
    sb("fremovexattr", 16),
    sb("mknodat", 33),
    sb("fchownat", 54),
    sb("fchown", 55),
    sb("kexec_load", 104),
    sb("init_module", 105),
    sb("delete_module", 106),
    sb("ptrace", 117),
    sb("socket", 198),
    sb("open_by_handle_at", 265),
    sb("process_vm_readv", 270),
    sb("process_vm_writev", 271),
    sb("finit_module", 273),
    sb("bpf", 280),
    sb("kexec_file_load", 294),
    sb("io_uring_setup", 425),
    sb("io_uring_enter", 426),
    sb("io_uring_register", 427),
    sb("pidfd_getfd", 438),
    sb("setxattrat", 463),
    sb("removexattrat", 466),
];

/// connect and bind: the calls whose TCP refusals by the Landlock layer of `tether exec`'s
/// sandbox the Landlock probes record (agent-ebpf landlock).
pub const LANDLOCKED: &[Sandboxed] = &[sb("connect", NR_CONNECT), sb("bind", NR_BIND)];

#[cfg(not(any(target_arch = "aarch64", bpf_target_arch = "aarch64")))]
pub const NR_CONNECT: u32 = 42;
#[cfg(not(any(target_arch = "aarch64", bpf_target_arch = "aarch64")))]
pub const NR_BIND: u32 = 49;
#[cfg(any(target_arch = "aarch64", bpf_target_arch = "aarch64"))]
pub const NR_CONNECT: u32 = 203;
#[cfg(any(target_arch = "aarch64", bpf_target_arch = "aarch64"))]
pub const NR_BIND: u32 = 200;

/// The sandboxed call with this number.
pub fn sandboxed_by_nr(nr: u32) -> Option<&'static Sandboxed> {
    SANDBOXED.iter().find(|s| s.nr == nr)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn named(name: &str) -> &'static Syscall {
        WATCHED.iter().find(|s| s.name == name).expect(name)
    }

    #[test]
    fn the_calls_that_follow_a_final_symlink_are_told_apart_by_name_and_flags() {
        assert!(named("chmod").follows_final(0));
        assert!(named("truncate").follows_final(0));
        assert!(named("setxattr").follows_final(0));
        assert!(!named("lsetxattr").follows_final(0));
        assert!(named("fchownat").follows_final(0));
        assert!(!named("fchownat").follows_final(AT_SYMLINK_NOFOLLOW));
        assert!(!named("linkat").follows_final(0));
        assert!(named("linkat").follows_final(AT_SYMLINK_FOLLOW));
        assert!(!named("renameat2").follows_final(0));
    }

    #[test]
    fn numbers_are_unique_and_opens_include_open_by_handle_at() {
        for (i, a) in WATCHED.iter().enumerate() {
            assert!(WATCHED[i + 1..].iter().all(|b| b.nr != a.nr), "{} twice", a.nr);
            assert_eq!(by_nr(a.nr).map(|s| s.name), Some(a.name));
        }
        assert!(named("open_by_handle_at").is_open());
    }
}
