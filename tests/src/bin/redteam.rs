//! Test helper: what a prompt-injected agent tries, one attack per subcommand, each a few
//! plain syscalls (no shell tool in between, so every kernel tier runs the same attack).
//! Exits 0 when the attack's own call succeeded, non-zero with the error otherwise; whether
//! it *took effect* is for the test to check, on the target.
//!
//!   redteam unix-connect PATH|@NAME MSG    stream connect, then write MSG
//!   redteam unix-send PATH|@NAME MSG       one datagram to a named socket
//!   redteam socket raw|packet|icmp|vsock    create a socket of that kind
//!   redteam listen IP:PORT SECS            bind, listen, stay SECS seconds
//!   redteam listen-any SECS                listen on a port the kernel picks (no bind);
//!                                          prints the port
//!   redteam uring-write PATH TEXT          create PATH and write TEXT through io_uring
//!   redteam mknod PATH c|b MAJOR MINOR     make a device node
//!   redteam write PATH TEXT                open an existing PATH for writing (no truncate)
//!                                          and write TEXT
//!   redteam setxattr PATH NAME VALUE       set an extended attribute (follows symlinks)
//!   redteam fchmod PATH MODE               open PATH read-only, then fchmod it (octal MODE)
//!   redteam chmod PATH MODE                chmod(2) (follows symlinks)
//!   redteam link SRC DST                   a hard link DST to SRC
//!   redteam utimes PATH                    set PATH's times to the epoch (follows symlinks)
//!   redteam tcp IP:PORT MSG plain|fastopen  a TCP connection sending MSG: connect then write,
//!                                          or TCP Fast Open (sendto with MSG_FASTOPEN, no
//!                                          connect call)
//!
//!   redteam http SOCKET METHOD PATH \[BODY\] one raw HTTP/1.1 request over a Unix socket (as an
//!                                          agent would talk to Tether's API without its CLI);
//!                                          prints the answer, exits 0 on a 2xx
//!   redteam http-handoff SOCKET METHOD PATH BODY
//!                                          connect, then fork: the process that connected
//!                                          exits, its child sends the request (the peer pid
//!                                          the daemon sees is gone)
//!
//!   redteam signal PID SIG                 kill(2) PID with signal number SIG
//!   redteam hold SOCKET N SECS             open N connections to SOCKET, keep them idle SECS s
//!   redteam ptrace PID                     PTRACE_ATTACH to PID (detaches if it worked)
//!   redteam vm-read PID                    process_vm_readv one byte of PID's stack page
//!   redteam untrack-self                   through bpf(2): find the map named TRACKED and
//!                                          delete this process's entry; prints what it did
//!   redteam untrack-then-tcp IP:PORT MSG MS  untrack-self, wait MS ms, then a TCP connect
//!                                          sending MSG
//!   redteam register-untrack-then-tcp SOCKET IP:PORT MSG MS
//!                                          register itself over the agent socket (tracked,
//!                                          outside any sandbox), then untrack-then-tcp
//!
//!   redteam bench N DIR                    N rounds of each call a tracked agent's hooks watch,
//!                                          ns per call, for what an untracked process pays
//!
//! After the attack the helper stays REDTEAM_LINGER_MS milliseconds (default 0), as an agent
//! carries on after a step: a kill that comes after the fact finds it.
//!   redteam open-flood DIR SECS            creating opens of DIR/flood for SECS seconds, as fast
//!                                          as it can (a flood of records); prints how many
//!   redteam pending-flood FIFO N PATH TEXT N threads block opening FIFO for writing, then
//!                                          write TEXT to PATH
use std::{
    ffi::CString,
    io::Write,
    net::{SocketAddr, TcpListener},
    os::fd::AsRawFd,
    path::Path,
    time::Duration,
};

use anyhow::{Context, bail};

fn main() -> anyhow::Result<()> {
    let r = attack();
    let linger = std::env::var("REDTEAM_LINGER_MS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    std::thread::sleep(Duration::from_millis(linger));
    r
}

fn attack() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let a: Vec<&str> = args.iter().map(String::as_str).collect();
    match a.as_slice() {
        ["unix-connect", target, msg] => unix_connect(target, msg),
        ["unix-send", target, msg] => unix_send(target, msg),
        ["socket", kind] => socket(kind),
        ["listen", addr, secs] => {
            let l = TcpListener::bind(addr.parse::<SocketAddr>()?)?;
            println!("{}", l.local_addr()?.port());
            std::io::stdout().flush()?;
            std::thread::sleep(Duration::from_secs(secs.parse()?));
            Ok(())
        }
        ["listen-any", secs] => listen_any(secs.parse()?),
        ["http", socket, method, path] => http(socket, method, path, ""),
        ["http", socket, method, path, body] => http(socket, method, path, body),
        ["http-handoff", socket, method, path, body] => http_handoff(socket, method, path, body),
        ["signal", pid, sig] => {
            // SAFETY: plain syscall.
            if unsafe { libc::kill(pid.parse()?, sig.parse()?) } != 0 {
                bail!("kill: {}", std::io::Error::last_os_error());
            }
            Ok(())
        }
        ["ptrace", pid] => {
            let pid: libc::pid_t = pid.parse()?;
            // SAFETY: plain syscalls.
            if unsafe { libc::ptrace(libc::PTRACE_ATTACH, pid, 0, 0) } != 0 {
                bail!("ptrace attach: {}", std::io::Error::last_os_error());
            }
            unsafe { libc::ptrace(libc::PTRACE_DETACH, pid, 0, 0) };
            Ok(())
        }
        ["vm-read", pid] => vm_read(pid.parse()?),
        ["chown", path, uid, gid] => {
            let p = std::ffi::CString::new(*path)?;
            // SAFETY: a valid C string.
            if unsafe { libc::chown(p.as_ptr(), uid.parse()?, gid.parse()?) } != 0 {
                bail!("chown: {}", std::io::Error::last_os_error());
            }
            println!("chown {path}: done");
            Ok(())
        }
        ["hold", socket, n, secs] => {
            // Connections opened and kept idle, as a process that wants the daemon to run out
            // of them (or out of descriptors) would.
            let mut held = Vec::new();
            for _ in 0..n.parse::<usize>()? {
                match std::os::unix::net::UnixStream::connect(socket) {
                    Ok(c) => held.push(c),
                    Err(e) => {
                        println!("connect {}: {e}", held.len());
                        break;
                    }
                }
            }
            println!("held {}", held.len());
            std::io::stdout().flush()?;
            std::thread::sleep(Duration::from_secs(secs.parse()?));
            Ok(())
        }
        ["untrack-self"] => untrack_self(),
        ["register-untrack-then-tcp", socket, addr, msg, wait_ms] => {
            http(socket, "POST", "/v1/register", "")?;
            if let Err(e) = untrack_self() {
                println!("untrack: {e:#}");
            }
            std::thread::sleep(Duration::from_millis(wait_ms.parse()?));
            tcp(addr.parse()?, msg, "plain")
        }
        ["untrack-then-tcp", addr, msg, wait_ms] => {
            if let Err(e) = untrack_self() {
                println!("untrack: {e:#}");
            }
            std::thread::sleep(Duration::from_millis(wait_ms.parse()?));
            tcp(addr.parse()?, msg, "plain")
        }
        ["uring-write", path, text] => uring_write(path, text),
        ["mknod", path, kind, major, minor] => mknod(path, kind, major.parse()?, minor.parse()?),
        ["write", path, text] => {
            let mut f = std::fs::OpenOptions::new().write(true).open(path)?;
            f.write_all(text.as_bytes())?;
            Ok(())
        }
        ["setxattr", path, name, value] => {
            let (p, n) = (cstr(path)?, CString::new(*name)?);
            // SAFETY: valid C strings and buffer.
            let r = unsafe { libc::setxattr(p.as_ptr(), n.as_ptr(), value.as_ptr().cast(), value.len(), 0) };
            check(r, "setxattr")
        }
        ["fchmod", path, mode] => {
            let f = std::fs::File::open(path)?;
            // SAFETY: a valid fd.
            let r = unsafe { libc::fchmod(f.as_raw_fd(), u32::from_str_radix(mode, 8)?) };
            check(r, "fchmod")
        }
        ["chmod", path, mode] => {
            let p = cstr(path)?;
            // SAFETY: a valid C string.
            let r = unsafe { libc::chmod(p.as_ptr(), u32::from_str_radix(mode, 8)?) };
            check(r, "chmod")
        }
        ["link", src, dst] => Ok(std::fs::hard_link(src, dst)?),
        ["tcp", addr, msg, how] => tcp(addr.parse()?, msg, how),
        ["utimes", path] => {
            let p = cstr(path)?;
            let zero = [libc::timespec { tv_sec: 0, tv_nsec: 0 }; 2];
            // SAFETY: a valid C string and times array.
            let r = unsafe { libc::utimensat(libc::AT_FDCWD, p.as_ptr(), zero.as_ptr(), 0) };
            check(r, "utimensat")
        }
        ["noop", ..] => Ok(()),
        ["fill", path] => {
            // Writes until the filesystem is full (or 64 MiB), as an agent filling the disk
            // under Tether's sinks would.
            let mut f = std::fs::File::create(path)?;
            let chunk = vec![0u8; 64 << 10];
            let mut n = 0usize;
            let end = loop {
                if n >= 64 << 20 {
                    break "64 MiB written".to_string();
                }
                match f.write(&chunk) {
                    Ok(0) => break "wrote nothing".to_string(),
                    Ok(k) => n += k,
                    Err(e) => break e.to_string(),
                }
            };
            println!("fill {path}: {n} bytes ({end})");
            Ok(())
        }
        ["open-flood", dir, secs] => {
            let p = Path::new(dir).join("flood");
            let until = std::time::Instant::now() + Duration::from_secs_f64(secs.parse()?);
            let mut n = 0u64;
            while std::time::Instant::now() < until {
                for _ in 0..256 {
                    drop(std::fs::File::create(&p)?);
                }
                n += 256;
            }
            println!("{n} opens");
            Ok(())
        }
        ["pending-flood", fifo, n, path, text] => pending_flood(fifo, n.parse()?, path, text),
        ["bench", n, dir] => bench(n.parse()?, Path::new(dir)),
        _ => bail!("usage: see the module documentation of tests/src/bin/redteam.rs"),
    }
}

fn cstr(s: &str) -> anyhow::Result<CString> {
    Ok(CString::new(s)?)
}

fn check(r: libc::c_int, what: &str) -> anyhow::Result<()> {
    if r < 0 {
        bail!("{what}: {}", std::io::Error::last_os_error());
    }
    Ok(())
}

/// A sockaddr_un for a path, or for an abstract name (`@name`).
fn sun(target: &str) -> anyhow::Result<(libc::sockaddr_un, libc::socklen_t)> {
    // SAFETY: a plain C struct, all zeroes is valid.
    let mut a: libc::sockaddr_un = unsafe { std::mem::zeroed() };
    a.sun_family = libc::AF_UNIX as libc::sa_family_t;
    let (bytes, skip): (&[u8], usize) = match target.strip_prefix('@') {
        Some(name) => (name.as_bytes(), 1),
        None => (target.as_bytes(), 0),
    };
    if bytes.len() + skip >= a.sun_path.len() {
        bail!("{target}: too long for sun_path");
    }
    for (i, b) in bytes.iter().enumerate() {
        a.sun_path[i + skip] = *b as libc::c_char;
    }
    let len = std::mem::size_of::<libc::sa_family_t>() + skip + bytes.len() + usize::from(skip == 0);
    Ok((a, len as libc::socklen_t))
}

fn unix_socket(kind: libc::c_int) -> anyhow::Result<std::os::fd::OwnedFd> {
    // SAFETY: plain syscall.
    let fd = unsafe { libc::socket(libc::AF_UNIX, kind | libc::SOCK_CLOEXEC, 0) };
    check(fd, "socket")?;
    // SAFETY: a new fd we own.
    Ok(unsafe { std::os::fd::FromRawFd::from_raw_fd(fd) })
}

fn unix_connect(target: &str, msg: &str) -> anyhow::Result<()> {
    let (a, len) = sun(target)?;
    let fd = unix_socket(libc::SOCK_STREAM)?;
    // SAFETY: a valid sockaddr_un of `len` bytes.
    let r = unsafe { libc::connect(fd.as_raw_fd(), (&a as *const libc::sockaddr_un).cast(), len) };
    check(r, "connect")?;
    // SAFETY: a valid buffer.
    let n = unsafe { libc::write(fd.as_raw_fd(), msg.as_ptr().cast(), msg.len()) };
    check(n as libc::c_int, "write")
}

fn unix_send(target: &str, msg: &str) -> anyhow::Result<()> {
    let (a, len) = sun(target)?;
    let fd = unix_socket(libc::SOCK_DGRAM)?;
    // SAFETY: a valid buffer and sockaddr_un.
    let n = unsafe {
        libc::sendto(
            fd.as_raw_fd(),
            msg.as_ptr().cast(),
            msg.len(),
            0,
            (&a as *const libc::sockaddr_un).cast(),
            len,
        )
    };
    check(n as libc::c_int, "sendto")
}

fn socket(kind: &str) -> anyhow::Result<()> {
    let (family, ty, proto) = match kind {
        "raw" => (libc::AF_INET, libc::SOCK_RAW, libc::IPPROTO_ICMP),
        "packet" => (
            libc::AF_PACKET,
            libc::SOCK_RAW,
            (libc::ETH_P_ALL as u16).to_be() as libc::c_int,
        ),
        "icmp" => (libc::AF_INET, libc::SOCK_DGRAM, libc::IPPROTO_ICMP),
        "vsock" => (libc::AF_VSOCK, libc::SOCK_STREAM, 0),
        other => bail!("unknown socket kind {other}"),
    };
    // SAFETY: plain syscall.
    let fd = unsafe { libc::socket(family, ty, proto) };
    check(fd, "socket")?;
    println!("socket {kind}: fd {fd}");
    Ok(())
}

fn tcp(addr: std::net::SocketAddrV4, msg: &str, how: &str) -> anyhow::Result<()> {
    let mut sa: libc::sockaddr_in = unsafe { std::mem::zeroed() };
    sa.sin_family = libc::AF_INET as libc::sa_family_t;
    sa.sin_port = addr.port().to_be();
    sa.sin_addr.s_addr = u32::from_ne_bytes(addr.ip().octets());
    let len = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
    // SAFETY: plain syscalls on an fd we own; `sa` and `msg` outlive them.
    unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_STREAM, 0);
        check(fd, "socket")?;
        let sa = (&sa as *const libc::sockaddr_in).cast();
        match how {
            "plain" => {
                check(libc::connect(fd, sa, len), "connect")?;
                let n = libc::write(fd, msg.as_ptr().cast(), msg.len());
                check(n as libc::c_int, "write")?;
            }
            "fastopen" => {
                let n = libc::sendto(fd, msg.as_ptr().cast(), msg.len(), libc::MSG_FASTOPEN, sa, len);
                check(n as libc::c_int, "sendto MSG_FASTOPEN")?;
            }
            other => bail!("plain or fastopen, not {other}"),
        }
        println!("tcp {how}: sent");
    }
    Ok(())
}

fn listen_any(secs: u64) -> anyhow::Result<()> {
    // SAFETY: plain syscalls on an fd we own.
    unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_STREAM, 0);
        check(fd, "socket")?;
        check(libc::listen(fd, 8), "listen")?;
        let mut a: libc::sockaddr_in = std::mem::zeroed();
        let mut len = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
        check(
            libc::getsockname(fd, (&mut a as *mut libc::sockaddr_in).cast(), &mut len),
            "getsockname",
        )?;
        println!("{}", u16::from_be(a.sin_port));
    }
    std::io::stdout().flush()?;
    std::thread::sleep(Duration::from_secs(secs));
    Ok(())
}

fn uring_write(path: &str, text: &str) -> anyhow::Result<()> {
    use io_uring::{IoUring, opcode, types};
    let mut ring = IoUring::new(4).context("io_uring_setup")?;
    let p = cstr(path)?;
    let open = opcode::OpenAt::new(types::Fd(libc::AT_FDCWD), p.as_ptr())
        .flags(libc::O_CREAT | libc::O_WRONLY | libc::O_CLOEXEC)
        .mode(0o644)
        .build();
    // SAFETY: the path outlives the submission, which completes before it is dropped.
    unsafe { ring.submission().push(&open).context("queue openat")? };
    ring.submit_and_wait(1).context("io_uring_enter")?;
    let fd = ring.completion().next().context("no completion")?.result();
    if fd < 0 {
        bail!("io_uring openat: {}", std::io::Error::from_raw_os_error(-fd));
    }
    let write = opcode::Write::new(types::Fd(fd), text.as_ptr(), text.len() as u32).build();
    // SAFETY: the buffer outlives the submission.
    unsafe { ring.submission().push(&write).context("queue write")? };
    ring.submit_and_wait(1).context("io_uring_enter")?;
    let n = ring.completion().next().context("no completion")?.result();
    if n < 0 {
        bail!("io_uring write: {}", std::io::Error::from_raw_os_error(-n));
    }
    Ok(())
}

fn mknod(path: &str, kind: &str, major: u32, minor: u32) -> anyhow::Result<()> {
    let fmt = match kind {
        "c" => libc::S_IFCHR,
        "b" => libc::S_IFBLK,
        other => bail!("device kind c or b, not {other}"),
    };
    let p = cstr(path)?;
    // SAFETY: a valid C string.
    let r = unsafe { libc::mknod(p.as_ptr(), fmt | 0o666, libc::makedev(major, minor)) };
    check(r, "mknod")
}

/// One timed operation of the bench.
type Op<'a> = Box<dyn FnMut() + 'a>;

/// ns per call of each watched call (median of 5 runs of `n`).
fn bench(n: u32, dir: &Path) -> anyhow::Result<()> {
    use std::os::unix::net::{UnixDatagram, UnixListener, UnixStream};
    let sock = dir.join("bench.sock");
    let dgram = dir.join("bench.dgram");
    let _ = std::fs::remove_file(&sock);
    let _ = std::fs::remove_file(&dgram);
    let listener = UnixListener::bind(&sock)?;
    std::thread::spawn(move || {
        for c in listener.incoming() {
            drop(c);
        }
    });
    let receiver = UnixDatagram::bind(&dgram)?;
    receiver.set_nonblocking(true)?;
    let sender = UnixDatagram::unbound()?;
    let file = dir.join("bench.file");
    std::fs::write(&file, "x")?;
    let (f, x) = (cstr(&file.display().to_string())?, CString::new("user.bench")?);
    let mut ops: Vec<(&str, Op)> = vec![
        // SAFETY (all): plain syscalls on valid arguments.
        (
            "getppid",
            Box::new(|| unsafe {
                libc::getppid();
            }),
        ),
        (
            "socket+close (udp)",
            Box::new(|| unsafe {
                libc::close(libc::socket(libc::AF_INET, libc::SOCK_DGRAM, 0));
            }),
        ),
        (
            "bind port 0+close",
            Box::new(|| {
                drop(std::net::UdpSocket::bind("127.0.0.1:0"));
            }),
        ),
        (
            "unix connect+close",
            Box::new(|| {
                drop(UnixStream::connect(&sock));
            }),
        ),
        (
            "unix sendto",
            Box::new(|| {
                let _ = sender.send_to(b"x", &dgram);
                let mut b = [0u8; 4];
                let _ = receiver.recv(&mut b);
            }),
        ),
        (
            "open(O_WRONLY)+close",
            Box::new(|| {
                drop(std::fs::OpenOptions::new().write(true).open(&file));
            }),
        ),
        (
            "utimensat",
            Box::new(|| unsafe {
                libc::utimensat(libc::AT_FDCWD, f.as_ptr(), std::ptr::null(), 0);
            }),
        ),
        (
            "setxattr",
            Box::new(|| unsafe {
                libc::setxattr(f.as_ptr(), x.as_ptr(), b"1".as_ptr().cast(), 1, 0);
            }),
        ),
        (
            "listen (port the kernel picks)+close",
            Box::new(|| unsafe {
                let s = libc::socket(libc::AF_INET, libc::SOCK_STREAM, 0);
                libc::listen(s, 1);
                libc::close(s);
            }),
        ),
    ];
    for (name, op) in ops.iter_mut() {
        let mut runs: Vec<f64> = (0..5)
            .map(|_| {
                let t = std::time::Instant::now();
                for _ in 0..n {
                    op();
                }
                t.elapsed().as_nanos() as f64 / n as f64
            })
            .collect();
        runs.sort_by(f64::total_cmp);
        println!("{name}\t{:.0}", runs[2]);
    }
    Ok(())
}

fn pending_flood(fifo: &str, n: usize, path: &str, text: &str) -> anyhow::Result<()> {
    let fifo = cstr(fifo)?;
    for _ in 0..n {
        let f = fifo.clone();
        std::thread::Builder::new()
            .stack_size(64 << 10)
            // SAFETY: a valid C string; the open blocks until a reader comes (never).
            .spawn(move || unsafe { libc::open(f.as_ptr(), libc::O_WRONLY) })
            .context("spawning a thread")?;
    }
    // Every thread is in its open by now (they block at once).
    std::thread::sleep(Duration::from_millis(500));
    let mut f = std::fs::OpenOptions::new().write(true).open(path)?;
    f.write_all(text.as_bytes())?;
    Ok(())
}

/// One HTTP/1.1 request over the Unix socket `socket`; prints the answer.
fn http(socket: &str, method: &str, path: &str, body: &str) -> anyhow::Result<()> {
    let c = std::os::unix::net::UnixStream::connect(socket)?;
    http_on(c, method, path, body)
}

/// [`http`], sent by a child after the process that connected has exited.
fn http_handoff(socket: &str, method: &str, path: &str, body: &str) -> anyhow::Result<()> {
    let c = std::os::unix::net::UnixStream::connect(socket)?;
    // SAFETY: fork in a single-threaded helper; the child only sleeps and does plain I/O.
    match unsafe { libc::fork() } {
        -1 => anyhow::bail!("fork: {}", std::io::Error::last_os_error()),
        0 => {
            std::thread::sleep(Duration::from_millis(500));
            let r = http_on(c, method, path, body);
            std::process::exit(if r.is_ok() { 0 } else { 1 });
        }
        _ => std::process::exit(0),
    }
}

fn http_on(mut c: std::os::unix::net::UnixStream, method: &str, path: &str, body: &str) -> anyhow::Result<()> {
    use std::io::Read;
    write!(
        c,
        "{method} {path} HTTP/1.1\r\nHost: tether\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )?;
    let mut answer = String::new();
    c.read_to_string(&mut answer)?;
    println!("{answer}");
    let ok = answer
        .split_whitespace()
        .nth(1)
        .is_some_and(|code| code.starts_with('2'));
    anyhow::ensure!(ok, "not a 2xx answer");
    Ok(())
}

/// process_vm_readv of one byte at the start of PID's stack (from /proc/PID/maps... which a
/// refused reader cannot open either: then the address of our own stack, which the call
/// still has to refuse before looking).
fn vm_read(pid: libc::pid_t) -> anyhow::Result<()> {
    let mut byte = 0u8;
    let local = libc::iovec {
        iov_base: (&mut byte as *mut u8).cast(),
        iov_len: 1,
    };
    let remote = libc::iovec {
        iov_base: (&local as *const libc::iovec).cast_mut().cast(),
        iov_len: 1,
    };
    // SAFETY: valid iovecs for one byte each.
    let n = unsafe { libc::process_vm_readv(pid, &local, 1, &remote, 1, 0) };
    if n < 0 {
        bail!("process_vm_readv: {}", std::io::Error::last_os_error());
    }
    Ok(())
}

/// bpf(2) with an attribute block of `attr`'s bytes.
fn bpf(cmd: libc::c_long, attr: &mut [u64; 16]) -> std::io::Result<i64> {
    // SAFETY: attr is 128 bytes, more than every command used here reads.
    let r = unsafe { libc::syscall(libc::SYS_bpf, cmd, attr.as_mut_ptr(), std::mem::size_of_val(attr)) };
    if r < 0 {
        Err(std::io::Error::last_os_error())
    } else {
        Ok(r)
    }
}

/// What a root agent with bpf(2) would do: walk the kernel's maps by id, open the one named
/// TRACKED, delete its own entry.
fn untrack_self() -> anyhow::Result<()> {
    const MAP_DELETE_ELEM: libc::c_long = 3;
    const MAP_GET_NEXT_ID: libc::c_long = 12;
    const MAP_GET_FD_BY_ID: libc::c_long = 14;
    const OBJ_GET_INFO_BY_FD: libc::c_long = 15;
    let mut id = 0u32;
    let mut deleted = 0;
    loop {
        let mut a = [0u64; 16];
        a[0] = id as u64;
        bpf(MAP_GET_NEXT_ID, &mut a).context("bpf(BPF_MAP_GET_NEXT_ID)")?;
        id = (a[0] >> 32) as u32;
        let mut a = [0u64; 16];
        a[0] = id as u64;
        let Ok(fd) = bpf(MAP_GET_FD_BY_ID, &mut a) else {
            continue;
        };
        // struct bpf_map_info: type, id, key_size, value_size, max_entries, map_flags, name[16].
        let mut info = [0u8; 80];
        let mut a = [0u64; 16];
        a[0] = fd as u64 | ((info.len() as u64) << 32);
        a[1] = info.as_mut_ptr() as u64;
        if bpf(OBJ_GET_INFO_BY_FD, &mut a).is_ok() {
            let name = &info[24..40];
            let end = name.iter().position(|&b| b == 0).unwrap_or(16);
            if &name[..end] == b"TRACKED" {
                let key = std::process::id();
                let mut a = [0u64; 16];
                a[0] = fd as u64;
                a[1] = &key as *const u32 as u64;
                match bpf(MAP_DELETE_ELEM, &mut a) {
                    Ok(_) => {
                        deleted += 1;
                        println!("deleted pid {key} from TRACKED map {id}");
                    }
                    Err(e) => println!("TRACKED map {id}: delete: {e}"),
                }
            }
        }
        // SAFETY: our fd.
        unsafe { libc::close(fd as i32) };
        let _ = std::io::stdout().flush();
        if deleted > 0 {
            return Ok(());
        }
    }
}
