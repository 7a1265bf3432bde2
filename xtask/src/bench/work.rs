//! The bench's workloads (`xtask work KIND`): each is this executable re-executed, under a
//! tracer's marking (`tether exec`, a cgroup, a login uid) or none, so the bench can run the same
//! process tracked and untracked. Each times only its own loop (the marking and the process's
//! start are outside it) and prints the nanoseconds on stdout.
use std::{
    io::Write as _,
    net::{SocketAddr, TcpListener, TcpStream},
    os::fd::AsRawFd,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::Instant,
};

use anyhow::{Context, bail};
use clap::{Args, ValueEnum};

/// Files the write loops cycle through (each open creates or truncates one of them).
pub const FILES: u64 = 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, ValueEnum)]
pub enum Kind {
    /// N × open(O_WRONLY|O_CREAT|O_TRUNC), write one byte, close.
    OpenWrite,
    /// N × TCP connect to a loopback listener (--port), close with RST (no TIME_WAIT).
    Connect,
    /// N × fork and exec /bin/true, wait.
    Exec,
    /// N iterations of open+write; every 5th also a connect, every 100th also an exec.
    Mix,
    /// N × getppid(2): a syscall no tracer here watches (what every syscall pays once a syscall
    /// tracepoint is on).
    Null,
    /// The agent-like workload: unpack --corpus into DIR with tar, commit it with git,
    /// byte-compile it with python (no network). N is ignored.
    Real,
    /// N × open(O_WRONLY|O_CREAT) of one of FILES existing files and close: the cheapest call
    /// with write intent, so the highest rate of file events one process can offer (the
    /// flood; not one of the compared workloads).
    Open,
}

impl Kind {
    pub const ALL: [Kind; 6] = [
        Kind::OpenWrite,
        Kind::Connect,
        Kind::Exec,
        Kind::Mix,
        Kind::Null,
        Kind::Real,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Kind::OpenWrite => "open+write",
            Kind::Connect => "connect",
            Kind::Exec => "exec",
            Kind::Mix => "mix",
            Kind::Null => "null syscall",
            Kind::Real => "tar+git+python",
            Kind::Open => "open",
        }
    }
}

#[derive(Debug, Args)]
pub struct WorkArgs {
    #[arg(value_enum)]
    kind: Kind,
    /// Where the workload writes (a fresh directory).
    #[arg(long)]
    dir: PathBuf,
    /// Iterations.
    #[arg(long, default_value_t = 1)]
    n: u64,
    /// The loopback port of the listener (connect, mix).
    #[arg(long)]
    port: Option<u16>,
    /// The tarball to unpack (real).
    #[arg(long)]
    corpus: Option<PathBuf>,
    /// The python interpreter (real).
    #[arg(long, default_value = "python3")]
    python: PathBuf,
    /// Move this process into this cgroup v2 directory first (how bpftrace's script tells a
    /// tracked process).
    #[arg(long)]
    cgroup: Option<PathBuf>,
    /// HOME for the real workload's git and python (so no user configuration is read).
    #[arg(long)]
    home: Option<PathBuf>,
    /// Set this process's login uid first (how auditd's rules tell a tracked process; it is
    /// inherited by children).
    #[arg(long)]
    loginuid: Option<u32>,
}

/// `xtask work`: mark this process as asked, run the loop, print its nanoseconds.
pub fn run(a: &WorkArgs) -> anyhow::Result<()> {
    if let Some(cg) = &a.cgroup {
        let procs = cg.join("cgroup.procs");
        std::fs::write(&procs, std::process::id().to_string())
            .with_context(|| format!("joining {}", procs.display()))?;
    }
    if let Some(uid) = a.loginuid {
        std::fs::write("/proc/self/loginuid", uid.to_string()).context("setting the login uid")?;
    }
    let port = || a.port.context("--port is required for this workload");
    if a.kind == Kind::Open {
        // The files it opens exist before the clock starts.
        for p in names(&a.dir) {
            std::fs::File::create(&p).with_context(|| format!("creating {}", p.display()))?;
        }
    }
    let t = Instant::now();
    match a.kind {
        Kind::OpenWrite => open_write(&a.dir, a.n)?,
        Kind::Open => open_only(&a.dir, a.n)?,
        Kind::Connect => {
            let p = port()?;
            for _ in 0..a.n {
                connect(p)?;
            }
        }
        Kind::Exec => {
            for _ in 0..a.n {
                exec_true()?;
            }
        }
        Kind::Mix => {
            let p = port()?;
            let names = names(&a.dir);
            for i in 0..a.n {
                write_one(&names[(i % FILES) as usize])?;
                if i % 5 == 0 {
                    connect(p)?;
                }
                if i % 100 == 0 {
                    exec_true()?;
                }
            }
        }
        Kind::Null => {
            for _ in 0..a.n {
                // SAFETY: getppid has no preconditions.
                std::hint::black_box(unsafe { libc::getppid() });
            }
        }
        Kind::Real => real(
            &a.dir,
            a.corpus.as_deref().context("--corpus is required")?,
            &a.python,
            a.home.as_deref().unwrap_or(&a.dir),
        )?,
    }
    println!("{}", t.elapsed().as_nanos());
    Ok(())
}

fn names(dir: &Path) -> Vec<PathBuf> {
    (0..FILES).map(|i| dir.join(format!("f{i}"))).collect()
}

/// N write-opens in `dir`.
pub fn open_write(dir: &Path, n: u64) -> anyhow::Result<()> {
    let names = names(dir);
    for i in 0..n {
        write_one(&names[(i % FILES) as usize])?;
    }
    Ok(())
}

/// N opens with write intent of the (existing) files in `dir`, no truncation, no write.
fn open_only(dir: &Path, n: u64) -> anyhow::Result<()> {
    let names = names(dir);
    let mut open = std::fs::OpenOptions::new();
    open.write(true).create(true);
    for i in 0..n {
        let p = &names[(i % FILES) as usize];
        open.open(p).with_context(|| format!("opening {}", p.display()))?;
    }
    Ok(())
}

fn write_one(path: &Path) -> anyhow::Result<()> {
    // File::create is open(O_WRONLY|O_CREAT|O_TRUNC|O_CLOEXEC); the drop closes it.
    let mut f = std::fs::File::create(path).with_context(|| format!("creating {}", path.display()))?;
    f.write_all(b"x")?;
    Ok(())
}

fn connect(port: u16) -> anyhow::Result<()> {
    let s = TcpStream::connect(SocketAddr::from(([127, 0, 0, 1], port))).context("connect to the bench listener")?;
    // Close with RST: thousands of connects per run must not use up the ephemeral ports.
    let linger = libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    // SAFETY: a valid socket and a linger struct of the size given.
    unsafe {
        libc::setsockopt(
            s.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            &linger as *const libc::linger as *const libc::c_void,
            size_of::<libc::linger>() as libc::socklen_t,
        )
    };
    Ok(())
}

fn exec_true() -> anyhow::Result<()> {
    let st = Command::new("/bin/true")
        .stdin(Stdio::null())
        .status()
        .context("running /bin/true")?;
    if !st.success() {
        bail!("/bin/true: {st}");
    }
    Ok(())
}

fn real(dir: &Path, corpus: &Path, python: &Path, home: &Path) -> anyhow::Result<()> {
    let run = |c: &mut Command| -> anyhow::Result<()> {
        let out = c
            .current_dir(dir)
            .env("HOME", home)
            .env_remove("XDG_CONFIG_HOME")
            .env("GIT_CONFIG_NOSYSTEM", "1")
            .stdin(Stdio::null())
            .output()?;
        if !out.status.success() {
            bail!("{c:?}: {}: {}", out.status, String::from_utf8_lossy(&out.stderr));
        }
        Ok(())
    };
    run(Command::new("tar").arg("-xf").arg(corpus))?;
    run(Command::new("git").args(["init", "-q", "."]))?;
    run(Command::new("git").args(["add", "-A"]))?;
    run(Command::new("git").args([
        "-c",
        "user.name=bench",
        "-c",
        "user.email=bench@localhost",
        "-c",
        "commit.gpgsign=false",
        "commit",
        "-q",
        "-m",
        "corpus",
    ]))?;
    run(Command::new(python).args(["-m", "compileall", "-q", "-j", "1", "."]))?;
    Ok(())
}

/// A loopback TCP listener that accepts and drops every connection, on its own thread, for as
/// long as the bench runs.
pub fn listener() -> anyhow::Result<u16> {
    let l = TcpListener::bind("127.0.0.1:0").context("binding the bench listener")?;
    let port = l.local_addr()?.port();
    // A deeper accept queue than std's: a full one drops SYNs, and each costs a second.
    // SAFETY: listen(2) again on a listening socket only changes its backlog.
    if unsafe { libc::listen(l.as_raw_fd(), 4096) } != 0 {
        return Err(std::io::Error::last_os_error()).context("listen");
    }
    std::thread::spawn(move || {
        // Accept and drop at once: a slow accept fills the backlog and a dropped SYN costs a
        // second.
        for s in l.incoming() {
            drop(s);
        }
    });
    Ok(port)
}

/// The corpus of the real workload: copies of this machine's Python standard library (without
/// site-packages and caches: ~2,430 files a copy), in one tarball under `cache`, made once;
/// `copies` 0: only the library's top-level modules (~200 files, for `--quick`).
pub fn corpus(cache: &Path, python: &Path, copies: u32) -> anyhow::Result<(PathBuf, u64)> {
    let out = Command::new(python)
        .args(["-c", "import sysconfig; print(sysconfig.get_paths()['stdlib'])"])
        .output()
        .with_context(|| format!("running {}", python.display()))?;
    if !out.status.success() {
        bail!("{}: {}", python.display(), String::from_utf8_lossy(&out.stderr));
    }
    let stdlib = PathBuf::from(String::from_utf8(out.stdout)?.trim());
    let tar = cache.join(format!("corpus-{copies}.tar"));
    let count = cache.join(format!("corpus-{copies}.files"));
    if let (true, Ok(n)) = (tar.exists(), std::fs::read_to_string(&count)) {
        return Ok((tar, n.trim().parse()?));
    }
    std::fs::create_dir_all(cache)?;
    let staging = cache.join("corpus-staging");
    let _ = std::fs::remove_dir_all(&staging);
    std::fs::create_dir_all(&staging)?;
    if copies == 0 {
        let top = staging.join("lib0");
        std::fs::create_dir(&top)?;
        for e in std::fs::read_dir(&stdlib)? {
            let e = e?;
            if e.file_type()?.is_file() && e.path().extension().is_some_and(|x| x == "py") {
                std::fs::copy(e.path(), top.join(e.file_name()))?;
            }
        }
    }
    for i in 0..copies {
        let st = Command::new("cp")
            .arg("-r")
            .arg(&stdlib)
            .arg(staging.join(format!("lib{i}")))
            .status()?;
        if !st.success() {
            bail!("copying {} failed", stdlib.display());
        }
    }
    // Python 2 test data and deliberately broken files: out, so the workload's compileall
    // succeeds (it exits 1 on any file it cannot compile).
    let out = Command::new(python)
        .args(["-m", "compileall", "-q", "."])
        .current_dir(&staging)
        .stderr(Stdio::null())
        .output()?;
    for bad in String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.strip_prefix("*** Error compiling '")?.strip_suffix("'..."))
    {
        std::fs::remove_file(staging.join(bad)).with_context(|| format!("removing {bad} from the corpus"))?;
    }
    for junk in ["site-packages", "__pycache__"] {
        let st = Command::new("find")
            .arg(&staging)
            .args(["-depth", "-name", junk, "-exec", "rm", "-rf", "{}", ";"])
            .status()?;
        if !st.success() {
            bail!("cleaning the corpus failed");
        }
    }
    let files = walk_count(&staging)?;
    let st = Command::new("tar")
        .arg("-cf")
        .arg(&tar)
        .arg("-C")
        .arg(&staging)
        .arg(".")
        .status()?;
    if !st.success() {
        bail!("tar of the corpus failed");
    }
    std::fs::remove_dir_all(&staging)?;
    std::fs::write(&count, files.to_string())?;
    Ok((tar, files))
}

fn walk_count(dir: &Path) -> anyhow::Result<u64> {
    let mut n = 0;
    for e in std::fs::read_dir(dir)? {
        let e = e?;
        if e.file_type()?.is_dir() {
            n += walk_count(&e.path())?;
        } else {
            n += 1;
        }
    }
    Ok(n)
}

/// The real interpreter behind `python3` (pyenv's shim is a shell script).
pub fn python() -> anyhow::Result<PathBuf> {
    let out = Command::new("python3")
        .args(["-c", "import sys; print(sys.executable)"])
        .output()
        .context("running python3")?;
    if !out.status.success() {
        bail!("python3: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(PathBuf::from(String::from_utf8(out.stdout)?.trim()))
}
