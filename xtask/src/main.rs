//! `cargo xtask`: machine setup, build, run and tests for Tether.
//!
//!   cargo xtask setup            install what is missing (idempotent; seconds when done)
//!   cargo xtask build            setup + build the daemon with its BPF programs
//!   cargo xtask run [-- ARGS]    setup + build + `tether run ARGS` (root)
//!   cargo xtask test             setup + every test: pure tests and the kernel tests (root)
use std::{
    env,
    path::{Path, PathBuf},
    process::{Command, ExitCode},
    time::Instant,
};

use anyhow::{Context, bail};

/// The dated nightly whose LLVM bpf-linker links against. Never "nightly": bpf-linker is
/// rpath-linked to this toolchain's libLLVM file, which a moving nightly would remove.
const NIGHTLY: &str = "nightly-2026-05-20";
const BPF_LINKER_VERSION: &str = "0.13.0";
/// Debian packages the tests and tools use.
const APT_PACKAGES: &[&str] = &["bpftool"];

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("xtask: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run() -> anyhow::Result<()> {
    let args: Vec<String> = env::args().skip(1).collect();
    let (cmd, rest) = args
        .split_first()
        .map(|(c, r)| (c.as_str(), r))
        .unwrap_or(("help", &[]));
    let rest: Vec<String> = rest.iter().skip_while(|a| *a == "--").cloned().collect();
    match cmd {
        "setup" => setup(),
        "build" => {
            setup()?;
            build()
        }
        "run" => {
            setup()?;
            build()?;
            require_root("tether run")?;
            let bin = root().join("target/debug/tether");
            let mut c = Command::new(bin);
            c.arg("run").args(&rest);
            use std::os::unix::process::CommandExt;
            Err(c.exec()).context("starting tether")
        }
        "test" => {
            setup()?;
            test()
        }
        _ => {
            println!("usage: cargo xtask <setup|build|run [-- ARGS]|test>");
            Ok(())
        }
    }
}

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root")
        .to_path_buf()
}

fn require_root(what: &str) -> anyhow::Result<()> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc_geteuid() } != 0 {
        bail!("{what} needs root (it loads eBPF programs); run it as root");
    }
    Ok(())
}

unsafe extern "C" {
    #[link_name = "geteuid"]
    fn libc_geteuid() -> u32;
}

fn ok(cmd: &mut Command) -> bool {
    cmd.output().map(|o| o.status.success()).unwrap_or(false)
}

fn stdout_of(cmd: &mut Command) -> Option<String> {
    let o = cmd.output().ok()?;
    o.status
        .success()
        .then(|| String::from_utf8_lossy(&o.stdout).trim().to_string())
}

fn run_cmd(cmd: &mut Command) -> anyhow::Result<()> {
    let status = cmd.status().with_context(|| format!("running {cmd:?}"))?;
    if !status.success() {
        bail!("{cmd:?} failed ({status})");
    }
    Ok(())
}

/// Installs what is missing, in order; each step checks first, so a second run is fast.
fn setup() -> anyhow::Result<()> {
    let t = Instant::now();
    // 1. The dated nightly with rust-src (for -Z build-std=core on the BPF target).
    let sysroot = stdout_of(
        Command::new("rustc")
            .arg(format!("+{NIGHTLY}"))
            .args(["--print", "sysroot"])
            .env_remove("RUSTUP_TOOLCHAIN"),
    );
    let has_src = sysroot
        .as_ref()
        .is_some_and(|s| Path::new(s).join("lib/rustlib/src/rust/library/core").exists());
    if !has_src {
        eprintln!("setup: installing toolchain {NIGHTLY} with rust-src");
        run_cmd(
            Command::new("rustup")
                .args([
                    "toolchain",
                    "install",
                    NIGHTLY,
                    "--profile",
                    "minimal",
                    "--component",
                    "rust-src",
                    "--no-self-update",
                ])
                .env_remove("RUSTUP_TOOLCHAIN"),
        )?;
    }
    let sysroot = stdout_of(
        Command::new("rustc")
            .arg(format!("+{NIGHTLY}"))
            .args(["--print", "sysroot"])
            .env_remove("RUSTUP_TOOLCHAIN"),
    )
    .context("the nightly toolchain does not answer after install")?;

    // 2. bpf-linker, linked against that nightly's own libLLVM.
    let linker_ok =
        stdout_of(Command::new("bpf-linker").arg("--version")).is_some_and(|v| v.contains(BPF_LINKER_VERSION));
    if !linker_ok {
        let lib = Path::new(&sysroot).join("lib");
        let llvm_so = std::fs::read_dir(&lib)?
            .filter_map(|e| e.ok())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .find(|n| n.starts_with("libLLVM.so."))
            .with_context(|| format!("no libLLVM.so.* in {}", lib.display()))?;
        let vv = stdout_of(
            Command::new("rustc")
                .arg(format!("+{NIGHTLY}"))
                .arg("-vV")
                .env_remove("RUSTUP_TOOLCHAIN"),
        )
        .unwrap_or_default();
        let major = vv
            .lines()
            .find_map(|l| l.strip_prefix("LLVM version: "))
            .and_then(|v| v.split('.').next())
            .context("LLVM version of the nightly")?
            .to_string();
        eprintln!("setup: installing bpf-linker {BPF_LINKER_VERSION} against {llvm_so} (LLVM {major}); about a minute");
        let rustflags = format!(
            "-L {} -C link-arg=-l:{llvm_so} -C link-arg=-Wl,-rpath,{}",
            lib.display(),
            lib.display()
        );
        run_cmd(
            Command::new("cargo")
                .args([
                    "install",
                    &format!("bpf-linker@{BPF_LINKER_VERSION}"),
                    "--no-default-features",
                ])
                .args(["--features", &format!("llvm-{major},no-llvm-linking")])
                .env("RUSTFLAGS", rustflags)
                .env_remove("RUSTUP_TOOLCHAIN")
                .env_remove("CARGO_TARGET_DIR"),
        )?;
    }

    // 3. Debian packages (only when missing, and only as root).
    let missing: Vec<&str> = APT_PACKAGES
        .iter()
        .copied()
        .filter(|p| !ok(Command::new("dpkg").args(["-s", p])))
        .collect();
    if !missing.is_empty() {
        require_root("installing Debian packages")?;
        eprintln!("setup: apt-get install {}", missing.join(" "));
        run_cmd(Command::new("apt-get").arg("update").arg("-qq"))?;
        run_cmd(
            Command::new("apt-get")
                .args(["install", "-y", "-qq"])
                .args(&missing)
                .env("DEBIAN_FRONTEND", "noninteractive"),
        )?;
    }
    eprintln!("setup: ready ({:.1}s)", t.elapsed().as_secs_f64());
    Ok(())
}

fn cargo() -> Command {
    let mut c = Command::new(env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    c.current_dir(root()).env("TETHER_REQUIRE_BPF", "1");
    c
}

fn build() -> anyhow::Result<()> {
    run_cmd(cargo().args(["build", "-p", "agent-user"]))
}

fn test() -> anyhow::Result<()> {
    // One profile (dev) for everything: the BPF object is built once and shared.
    run_cmd(cargo().args(["build", "-p", "agent-user", "-p", "tether-integration", "--bins"]))?;
    run_cmd(cargo().args([
        "test",
        "--workspace",
        "--exclude",
        "agent-ebpf",
        "--exclude",
        "tether-integration",
    ]))?;
    require_root("the kernel integration tests")?;
    run_cmd(
        cargo()
            .args(["test", "-p", "tether-integration", "--", "--test-threads=1"])
            .env("TETHER_BIN", root().join("target/debug/tether")),
    )
}
