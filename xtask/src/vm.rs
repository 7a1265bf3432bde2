//! The VM tier: the kernel integration suite inside qemu (TCG software emulation; KVM is never
//! used, it does not work on these machines) on each kernel of a matrix of Debian kernels.
//!
//! Kernels come from Debian's archive through a private apt configuration under the cache
//! directory (the machine's own apt configuration is untouched), are unpacked with dpkg-deb and
//! kept in the cache between runs. Userspace in the VM is an initramfs of busybox, bash, our
//! binaries and their shared libraries; its /init mounts what the daemon needs, runs the suite
//! and prints a result line the host reads from the serial console.
use std::{
    collections::BTreeSet,
    fs,
    io::{BufRead, BufReader, Write},
    path::{Path, PathBuf},
    process::{Command, Stdio},
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use anyhow::{Context, bail};

/// One kernel of the matrix: the newest Debian package whose name starts with `prefix` and ends
/// with `-amd64-unsigned` (the generic flavour; not cloud, not rt), booted with `lsm`.
pub struct KernelSpec {
    pub name: &'static str,
    /// The kernel's cache entry (entries booted differently share one).
    kernel: &'static str,
    prefix: &'static str,
    what: &'static str,
    /// `lsm=` of the command line.
    lsm: &'static str,
    /// What the suite must find on this entry (an environment variable set in the guest).
    expect: &'static str,
    /// Run by `cargo xtask test --vm` without `--kernel` (the others on request).
    default: bool,
}

/// With `bpf`: BPF LSM in effect (Debian does not list `bpf` in its default `lsm=` on every
/// release).
const LSM_WITH_BPF: &str = "lockdown,capability,landlock,bpf";
/// Without `bpf`, as Ubuntu and others ship: the LSM programs run as fmod_ret programs.
const LSM_WITHOUT_BPF: &str = "lockdown,capability,landlock";

pub const MATRIX: &[KernelSpec] = &[
    KernelSpec {
        name: "5.10",
        kernel: "5.10",
        prefix: "linux-image-5.10.0-",
        what: "Debian 11 bullseye",
        lsm: LSM_WITH_BPF,
        expect: "TETHER_EXPECT_LSM",
        default: true,
    },
    // 6.1 in the default run boots without `bpf` in lsm=: its share of the suite shows the
    // verdicts before the effect come from fmod_ret there (5.10 and 6.12 show BPF LSM's).
    KernelSpec {
        name: "6.1-fmodret",
        kernel: "6.1",
        prefix: "linux-image-6.1.0-",
        what: "Debian 12 bookworm",
        lsm: LSM_WITHOUT_BPF,
        expect: "TETHER_EXPECT_FMOD_RET",
        default: true,
    },
    KernelSpec {
        name: "6.1",
        kernel: "6.1",
        prefix: "linux-image-6.1.0-",
        what: "Debian 12 bookworm",
        lsm: LSM_WITH_BPF,
        expect: "TETHER_EXPECT_LSM",
        default: false,
    },
    KernelSpec {
        name: "6.12",
        kernel: "6.12",
        prefix: "linux-image-6.12.",
        what: "Debian 12 bookworm-backports/security",
        lsm: LSM_WITH_BPF,
        expect: "TETHER_EXPECT_LSM",
        default: true,
    },
];

/// Suites of the private apt configuration.
const APT_SOURCES: &str = "\
deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://deb.debian.org/debian bullseye main
deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://deb.debian.org/debian-security bullseye-security main
deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://deb.debian.org/debian bookworm main
deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://deb.debian.org/debian-security bookworm-security main
deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://deb.debian.org/debian bookworm-backports main
";

/// Kernel command line (with `lsm=` of the entry): serial console, no reboot on panic;
/// `mitigations=off`: under TCG the CPU mitigations (KPTI's page-table switch on every syscall
/// flushes the emulator's software TLB) cost many times what they cost on hardware, and
/// nothing Tether does depends on them (its loader is privileged: the verifier's Spectre
/// checks are for unprivileged loaders).
fn cmdline(lsm: &str) -> String {
    format!("console=ttyS0 quiet lsm={lsm} panic=-1 oops=panic mitigations=off")
}

/// The line /init prints with the suite's exit status.
const RESULT_MARK: &str = "TETHER_VM_RESULT=";

/// Per-kernel limit for boot + suite under TCG: with the three kernels sharing two cores a
/// test takes 1-3 minutes (every daemon start verifies every program, ~30 s alone and more
/// side by side), a kernel's share of the suite 15-20 minutes; a stuck guest kernel panics
/// long before (softlockup_panic in /init).
const VM_TIMEOUT: Duration = Duration::from_secs(1500);

pub fn cache_dir() -> PathBuf {
    std::env::var_os("TETHER_VM_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/var/cache/tether/vm"))
}

/// A kernel ready to boot.
pub struct Kernel {
    pub name: String,
    pub package: String,
    pub vmlinuz: PathBuf,
    /// The kernel command line.
    pub cmdline: String,
    /// The environment variable the suite checks for what this entry must show.
    pub expect: &'static str,
}

fn apt_options(cache: &Path) -> Vec<String> {
    let apt = cache.join("apt");
    vec![
        format!("-oDir::Etc::SourceList={}", apt.join("sources.list").display()),
        format!("-oDir::Etc::SourceParts={}", apt.join("sources.list.d").display()),
        format!("-oDir::State::Lists={}", apt.join("lists").display()),
        format!("-oDir::Cache={}", apt.join("cache").display()),
        "-oDebug::NoLocking=1".into(),
        "-oAPT::Sandbox::User=root".into(),
    ]
}

fn apt_update(cache: &Path) -> anyhow::Result<()> {
    let apt = cache.join("apt");
    for d in ["sources.list.d", "lists/partial", "cache/archives/partial"] {
        fs::create_dir_all(apt.join(d))?;
    }
    fs::write(apt.join("sources.list"), APT_SOURCES)?;
    eprintln!("vm: apt-get update (private configuration in {})", apt.display());
    crate::run_cmd(Command::new("apt-get").args(apt_options(cache)).args(["-qq", "update"]))
}

/// Numeric-aware ordering of package names (6.1.0-9 < 6.1.0-56).
fn natural_key(s: &str) -> Vec<(u64, String)> {
    let mut out = Vec::new();
    let mut digits = String::new();
    let mut text = String::new();
    for c in s.chars() {
        if c.is_ascii_digit() {
            if !text.is_empty() {
                out.push((0, std::mem::take(&mut text)));
            }
            digits.push(c);
        } else {
            if !digits.is_empty() {
                out.push((digits.parse().unwrap_or(u64::MAX), String::new()));
                digits.clear();
            }
            text.push(c);
        }
    }
    if !digits.is_empty() {
        out.push((digits.parse().unwrap_or(u64::MAX), String::new()));
    }
    if !text.is_empty() {
        out.push((0, text));
    }
    out
}

/// The newest generic kernel package of a series among `names`.
pub fn pick_package<'a>(spec_prefix: &str, names: impl IntoIterator<Item = &'a str>) -> Option<String> {
    names
        .into_iter()
        .filter(|n| {
            n.starts_with(spec_prefix)
                && n.ends_with("-amd64-unsigned")
                && !n.contains("-cloud-")
                && !n.contains("-rt-")
                && n[spec_prefix.len()..]
                    .chars()
                    .next()
                    .is_some_and(|c| c.is_ascii_digit())
        })
        .max_by_key(|n| natural_key(n))
        .map(str::to_string)
}

/// The kernels of the matrix (those named in `only`, or all), from the cache or fetched.
pub fn kernels(only: &[String], refresh: bool) -> anyhow::Result<Vec<Kernel>> {
    let cache = cache_dir();
    let specs: Vec<&KernelSpec> = MATRIX
        .iter()
        .filter(|s| {
            if only.is_empty() {
                s.default
            } else {
                only.iter().any(|o| o == s.name)
            }
        })
        .collect();
    if let Some(bad) = only.iter().find(|o| !MATRIX.iter().any(|s| s.name == o.as_str())) {
        let names: Vec<&str> = MATRIX.iter().map(|s| s.name).collect();
        bail!("unknown kernel {bad:?}; the matrix has {}", names.join(", "));
    }
    let mut updated = false;
    let mut out = Vec::new();
    for spec in specs {
        let dir = cache.join("kernels").join(spec.kernel);
        let vmlinuz = dir.join("vmlinuz");
        let package_file = dir.join("package");
        if !refresh && vmlinuz.exists() && package_file.exists() {
            out.push(Kernel {
                name: spec.name.into(),
                package: fs::read_to_string(&package_file)?.trim().to_string(),
                vmlinuz,
                cmdline: cmdline(spec.lsm),
                expect: spec.expect,
            });
            continue;
        }
        if !updated {
            apt_update(&cache)?;
            updated = true;
        }
        let names = crate::stdout_of(
            Command::new("apt-cache")
                .args(apt_options(&cache))
                .args(["pkgnames", spec.prefix]),
        )
        .with_context(|| format!("apt-cache pkgnames {}", spec.prefix))?;
        let package = pick_package(spec.prefix, names.lines())
            .with_context(|| format!("no {}*-amd64-unsigned package in {}", spec.prefix, spec.what))?;
        eprintln!("vm: fetching {package}");
        let dl = cache.join("download");
        let _ = fs::remove_dir_all(&dl);
        fs::create_dir_all(&dl)?;
        crate::run_cmd(
            Command::new("apt-get")
                .args(apt_options(&cache))
                .args(["-qq", "download", &package])
                .current_dir(&dl),
        )?;
        let deb = fs::read_dir(&dl)?
            .filter_map(|e| e.ok())
            .map(|e| e.path())
            .find(|p| p.extension().is_some_and(|x| x == "deb"))
            .with_context(|| format!("apt-get download {package} left no .deb"))?;
        let unpack = dl.join("unpack");
        fs::create_dir_all(&unpack)?;
        let status = Command::new("sh")
            .arg("-c")
            .arg("dpkg-deb --fsys-tarfile \"$1\" | tar -x -C \"$2\" --wildcards './boot/vmlinuz-*' './boot/config-*'")
            .args(["sh", &deb.display().to_string(), &unpack.display().to_string()])
            .status()?;
        if !status.success() {
            bail!("unpacking {} failed ({status})", deb.display());
        }
        let boot = unpack.join("boot");
        let find = |prefix: &str| -> anyhow::Result<PathBuf> {
            fs::read_dir(&boot)?
                .filter_map(|e| e.ok())
                .map(|e| e.path())
                .find(|p| p.file_name().is_some_and(|n| n.to_string_lossy().starts_with(prefix)))
                .with_context(|| format!("{} has no /boot/{prefix}*", deb.display()))
        };
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir)?;
        fs::copy(find("vmlinuz-")?, &vmlinuz)?;
        fs::copy(find("config-")?, dir.join("config"))?;
        let deb_name = deb.file_name().unwrap_or_default().to_string_lossy().into_owned();
        fs::write(&package_file, format!("{deb_name}\n"))?;
        let _ = fs::remove_dir_all(&dl);
        out.push(Kernel {
            name: spec.name.into(),
            package: deb_name,
            cmdline: cmdline(spec.lsm),
            expect: spec.expect,
            vmlinuz,
        });
    }
    Ok(out)
}

/// What goes into the initramfs.
pub struct Payload {
    /// The `tether` daemon.
    pub tether: PathBuf,
    /// The kernel integration test binary (tests/tests/kernel.rs).
    pub kernel_tests: PathBuf,
    /// Helper binaries the tests run (netprobe, redteam).
    pub helpers: Vec<PathBuf>,
    /// The OCSF schemas the tests validate against.
    pub ocsf_dir: PathBuf,
}

enum Entry {
    Dir,
    File { src: PathBuf, mode: u32 },
    Data { data: Vec<u8>, mode: u32 },
    Symlink(String),
}

/// Shared libraries (and the loader) a dynamically linked binary needs, from ldd.
fn shared_libs(bin: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let out = Command::new("ldd").arg(bin).output()?;
    let text = String::from_utf8_lossy(&out.stdout);
    if text.contains("not a dynamic executable") {
        return Ok(Vec::new());
    }
    if !out.status.success() {
        bail!("ldd {} failed: {}", bin.display(), String::from_utf8_lossy(&out.stderr));
    }
    let mut libs = Vec::new();
    for line in text.lines() {
        if line.contains("not found") {
            bail!(
                "{}: shared library missing on this machine: {}",
                bin.display(),
                line.trim()
            );
        }
        if let Some(p) = line.split_whitespace().find(|w| w.starts_with('/')) {
            libs.push(PathBuf::from(p));
        }
    }
    Ok(libs)
}

/// A copy of `src` without debug information (debug builds are mostly DWARF; the initramfs
/// is held in the VM's memory).
fn stripped(src: &Path, work: &Path) -> anyhow::Result<PathBuf> {
    let dst = work.join(src.file_name().context("binary name")?);
    crate::run_cmd(Command::new("objcopy").arg("--strip-debug").arg(src).arg(&dst))?;
    Ok(dst)
}

fn init_script(test_args: &[String], expect: &str) -> String {
    let args: Vec<String> = test_args
        .iter()
        .map(|a| format!("'{}'", a.replace('\'', "'\\''")))
        .collect();
    format!(
        r#"#!/bin/busybox sh
# Tether VM-tier /init: mount what the daemon needs, run the kernel suite, report, power off.
/bin/busybox --install -s /bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mount -t tmpfs tmpfs /tmp
mount -t tmpfs tmpfs /run
mount -t securityfs securityfs /sys/kernel/security
mkdir -p /sys/fs/cgroup && mount -t cgroup2 cgroup2 /sys/fs/cgroup
ip link set lo up
# A CPU stuck in the kernel ends the run at once with every CPU's backtrace on the console
# (warning level and up; the boot itself stays quiet) instead of running into VM_TIMEOUT.
# The threshold is the largest the kernel takes (a lockup after 120 s instead of 20 s): three
# guests' six vCPU threads share two host cores and TCG has no steal time, so a vCPU the host
# left unscheduled while another waited on it (text patching of a tracepoint's static key
# waits for every CPU) once read as a 20 s lockup of healthy tasks in syscall entry.
echo 60 > /proc/sys/kernel/watchdog_thresh
echo 1 > /proc/sys/kernel/softlockup_panic
echo 1 > /proc/sys/kernel/softlockup_all_cpu_backtrace
echo 5 > /proc/sys/kernel/printk
echo "vm: kernel $(uname -r), LSMs $(cat /sys/kernel/security/lsm), $(nproc) CPUs"
export PATH=/bin TETHER_BIN=/tether/tether TETHER_NETPROBE=/tether/netprobe TETHER_REDTEAM=/tether/redteam TETHER_OCSF_DIR=/tether/ocsf
export {expect}=1 RUST_BACKTRACE=1 TETHER_TEST_READY_SECS=240
cd /tmp
/tether/kernel-tests --test-threads=1 {args}
echo "{RESULT_MARK}$?"
poweroff -f
"#,
        args = args.join(" ")
    )
}

/// Builds the initramfs (uncompressed newc cpio) at `out`.
pub fn build_initramfs(
    payload: &Payload,
    test_args: &[String],
    expect: &str,
    work: &Path,
    out: &Path,
) -> anyhow::Result<()> {
    fs::create_dir_all(work)?;
    let mut entries: std::collections::BTreeMap<String, Entry> = Default::default();
    let add_dirs = |entries: &mut std::collections::BTreeMap<String, Entry>, path: &str| {
        let mut p = Path::new(path).parent();
        while let Some(d) = p {
            let s = d.to_string_lossy().trim_start_matches('/').to_string();
            if s.is_empty() {
                break;
            }
            entries.entry(s).or_insert(Entry::Dir);
            p = d.parent();
        }
    };
    for d in ["proc", "sys", "dev", "tmp", "run", "etc", "root", "tether/ocsf"] {
        add_dirs(&mut entries, &format!("/{d}/x"));
    }
    // busybox and bash, and every shared library our dynamically linked binaries need.
    let busybox = Path::new("/bin/busybox");
    let bash = fs::canonicalize("/bin/bash").context("bash")?;
    let mut needs_libs: Vec<PathBuf> = vec![bash.clone()];
    entries.insert(
        "bin/busybox".into(),
        Entry::File {
            src: busybox.into(),
            mode: 0o755,
        },
    );
    entries.insert("bin/bash".into(), Entry::File { src: bash, mode: 0o755 });
    entries.insert("usr/bin".into(), Entry::Symlink("/bin".into()));
    entries.insert("sbin".into(), Entry::Symlink("/bin".into()));
    entries.insert("usr/sbin".into(), Entry::Symlink("/bin".into()));
    entries.insert("usr".into(), Entry::Dir);
    let mut ours = vec![
        (payload.tether.clone(), "tether/tether".to_string()),
        (payload.kernel_tests.clone(), "tether/kernel-tests".to_string()),
    ];
    for h in &payload.helpers {
        let name = h.file_name().context("helper name")?.to_string_lossy().into_owned();
        ours.push((h.clone(), format!("tether/{name}")));
    }
    for (src, dst) in ours {
        needs_libs.push(src.clone());
        entries.insert(
            dst,
            Entry::File {
                src: stripped(&src, work)?,
                mode: 0o755,
            },
        );
    }
    let mut libs = BTreeSet::new();
    for b in &needs_libs {
        libs.extend(shared_libs(b)?);
    }
    for lib in libs {
        let dst = lib.to_string_lossy().trim_start_matches('/').to_string();
        add_dirs(&mut entries, &lib.to_string_lossy());
        entries.insert(
            dst,
            Entry::File {
                src: fs::canonicalize(&lib)?,
                mode: 0o755,
            },
        );
    }
    for e in
        fs::read_dir(&payload.ocsf_dir).with_context(|| format!("OCSF schemas at {}", payload.ocsf_dir.display()))?
    {
        let p = e?.path();
        if p.is_file() {
            let name = p.file_name().unwrap_or_default().to_string_lossy().into_owned();
            entries.insert(format!("tether/ocsf/{name}"), Entry::File { src: p, mode: 0o644 });
        }
    }
    entries.insert(
        "init".into(),
        Entry::Data {
            data: init_script(test_args, expect).into_bytes(),
            mode: 0o755,
        },
    );

    // Every parent directory of every entry (the archive must create them first; the map's
    // order puts a directory before what is in it).
    let parents: Vec<String> = entries
        .keys()
        .flat_map(|name| {
            Path::new(name)
                .ancestors()
                .skip(1)
                .map(|a| a.to_string_lossy().into_owned())
                .filter(|a| !a.is_empty())
                .collect::<Vec<_>>()
        })
        .collect();
    for p in parents {
        entries.entry(p).or_insert(Entry::Dir);
    }

    let mut w = std::io::BufWriter::new(fs::File::create(out).with_context(|| format!("creating {}", out.display()))?);
    for (ino, (name, entry)) in entries.into_iter().enumerate() {
        let b = cpio::newc::Builder::new(&name).ino(ino as u32 + 1).uid(0).gid(0);
        let (b, data) = match entry {
            Entry::Dir => (b.mode(0o040755).nlink(2), Vec::new()),
            Entry::File { src, mode } => (
                b.mode(0o100000 | mode).nlink(1),
                fs::read(&src).with_context(|| format!("reading {}", src.display()))?,
            ),
            Entry::Data { data, mode } => (b.mode(0o100000 | mode).nlink(1), data),
            Entry::Symlink(target) => (b.mode(0o120777).nlink(1), target.into_bytes()),
        };
        let mut fw = b.write(&mut w, u32::try_from(data.len()).context("file over 4 GiB")?);
        fw.write_all(&data)?;
        fw.finish()?;
    }
    cpio::newc::trailer(&mut w)?;
    w.flush()?;
    Ok(())
}

/// Boots `kernel` with `initramfs`, streams its console to `log` (and, prefixed, to stderr)
/// and returns the suite's exit status as /init reported it.
///
/// A guest that panics before the suite starts (seen under TCG with three guests on two
/// cores, 6.12 most: a fault in the timer or sched_clock code a few seconds into boot, no test
/// has run) is booted again, up to [`BOOTS`] times in all, saying so; a panic once tests run
/// is a result like any other.
pub fn boot(kernel: &Kernel, initramfs: &Path, log: &Path) -> anyhow::Result<i32> {
    let mut earlier = Vec::new();
    loop {
        match boot_once(kernel, initramfs, log)? {
            Boot::Result(rc) => return Ok(rc),
            Boot::PanickedBeforeSuite if earlier.len() + 1 < BOOTS => {
                let kept = log.with_extension(format!("boot{}.log", earlier.len() + 1));
                fs::rename(log, &kept)?;
                eprintln!(
                    "vm: kernel {} panicked while booting, before any test ran (console log: {}); booting it again",
                    kernel.name,
                    kept.display()
                );
                earlier.push(kept.display().to_string());
            }
            Boot::PanickedBeforeSuite => {
                earlier.push(log.display().to_string());
                bail!(
                    "kernel {}: panicked while booting {BOOTS} times, before any test ran; console logs: {}",
                    kernel.name,
                    earlier.join(", ")
                )
            }
        }
    }
}

/// Boots per kernel when the guest panics before the suite starts.
const BOOTS: usize = 3;

enum Boot {
    Result(i32),
    PanickedBeforeSuite,
}

fn boot_once(kernel: &Kernel, initramfs: &Path, log: &Path) -> anyhow::Result<Boot> {
    let mut child = Command::new("qemu-system-x86_64")
        .args(["-accel", "tcg,thread=multi", "-smp", "2", "-m", "2048"])
        .args(["-nographic", "-no-reboot", "-nodefaults", "-serial", "stdio"])
        .arg("-kernel")
        .arg(&kernel.vmlinuz)
        .arg("-initrd")
        .arg(initramfs)
        .args(["-append", &kernel.cmdline])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context("starting qemu-system-x86_64 (cargo xtask setup installs it)")?;
    let pid = child.id();
    // One clock for the limit and the console lines' seconds since boot.
    let booted = Instant::now();
    let done = Arc::new(AtomicBool::new(false));
    let timed_out = Arc::new(AtomicBool::new(false));
    {
        let (done, timed_out) = (done.clone(), timed_out.clone());
        std::thread::spawn(move || {
            while !done.load(Ordering::Relaxed) {
                if booted.elapsed() > VM_TIMEOUT {
                    timed_out.store(true, Ordering::Relaxed);
                    // SAFETY: kill has no memory preconditions.
                    unsafe { kill(pid as i32, 9) };
                    return;
                }
                std::thread::sleep(Duration::from_millis(200));
            }
        });
    }
    let mut logf = fs::File::create(log)?;
    let mut result = None;
    let (mut suite_started, mut panicked) = (false, false);
    let stdout = child.stdout.take().context("qemu stdout")?;
    for line in BufReader::new(stdout).split(b'\n') {
        let line = line?;
        let text = String::from_utf8_lossy(&line);
        let text = text.trim_end_matches('\r');
        // Seconds since qemu started on every line: which test took how long, where a run stalled.
        let at = booted.elapsed().as_secs();
        writeln!(logf, "[+{at}s] {text}")?;
        // Firmware noise and terminal escapes are kept in the log only.
        if !text.contains('\x1b') && !text.trim().is_empty() {
            eprintln!("[vm {} +{at}s] {text}", kernel.name);
        }
        if let Some(rc) = text.trim().strip_prefix(RESULT_MARK) {
            result = rc.trim().parse::<i32>().ok();
        }
        suite_started |= text.starts_with("running ") && text.ends_with(" tests");
        panicked |= text.contains("Kernel panic - not syncing");
    }
    let status = child.wait()?;
    done.store(true, Ordering::Relaxed);
    let mut err = String::new();
    if let Some(mut e) = child.stderr.take() {
        use std::io::Read;
        let _ = e.read_to_string(&mut err);
    }
    if timed_out.load(Ordering::Relaxed) {
        bail!(
            "kernel {}: no result after {:?}; console log: {}",
            kernel.name,
            VM_TIMEOUT,
            log.display()
        );
    }
    match result {
        Some(rc) => Ok(Boot::Result(rc)),
        None if panicked && !suite_started => Ok(Boot::PanickedBeforeSuite),
        None => bail!(
            "kernel {}: the VM ended ({status}) without a result line; console log: {}{}",
            kernel.name,
            log.display(),
            if err.trim().is_empty() {
                String::new()
            } else {
                format!("; qemu: {}", err.trim())
            }
        ),
    }
}

unsafe extern "C" {
    fn kill(pid: i32, sig: i32) -> i32;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn picks_the_newest_generic_kernel_of_a_series() {
        let names = [
            "linux-image-6.1.0-9-amd64-unsigned",
            "linux-image-6.1.0-56-amd64-unsigned",
            "linux-image-6.1.0-57-cloud-amd64-unsigned",
            "linux-image-6.1.0-58-rt-amd64-unsigned",
            "linux-image-6.1.0-56-amd64",
            "linux-image-6.12.95+deb12-amd64-unsigned",
            "linux-image-6.12.117+deb12-amd64-unsigned",
            "linux-image-6.12.9+deb12-amd64-unsigned",
        ];
        assert_eq!(
            pick_package("linux-image-6.1.0-", names).as_deref(),
            Some("linux-image-6.1.0-56-amd64-unsigned")
        );
        assert_eq!(
            pick_package("linux-image-6.12.", names).as_deref(),
            Some("linux-image-6.12.117+deb12-amd64-unsigned")
        );
        assert_eq!(pick_package("linux-image-5.10.0-", names), None);
    }

    #[test]
    fn init_quotes_test_arguments() {
        let s = init_script(&["a b".into(), "it's".into()], "TETHER_EXPECT_LSM");
        assert!(s.contains("'a b' 'it'\\''s'"), "{s}");
        assert!(s.contains(RESULT_MARK));
    }
}
