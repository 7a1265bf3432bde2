//! The fuzz stage: cargo-fuzz builds tests/fuzz (libFuzzer, sanitizer coverage, debug
//! assertions on) with the dated nightly, and each target runs for a bounded time from its
//! corpus in tests/fuzz/corpus. New inputs go to target/fuzz/work (the repository's corpus
//! stays as committed); a crash, timeout or out-of-memory input fails the stage and is copied
//! into the target's corpus as `finding-*`, where plain `cargo test` runs it from then on
//! (agent-user/tests/fuzz_corpus.rs).
use std::{
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::Instant,
};

use anyhow::{Context, bail};

use crate::{nightly, root, run_cmd, stdout_of};

const CARGO_FUZZ_VERSION: &str = "0.13.1";
/// Seconds per target in `cargo xtask test` (8 targets, beside the kernel suite).
pub const CI_SECONDS: u64 = 30;
/// Seconds per target in `cargo xtask fuzz` without --seconds.
const DEFAULT_SECONDS: u64 = 30;
/// Longer than the largest ring-buffer record (a file record: ~3.3 KiB).
const MAX_LEN: &str = "8192";

/// Installs cargo-fuzz when missing (idempotent).
pub fn setup() -> anyhow::Result<()> {
    let have =
        stdout_of(Command::new("cargo").args(["fuzz", "--version"])).is_some_and(|v| v.contains(CARGO_FUZZ_VERSION));
    if !have {
        eprintln!("setup: installing cargo-fuzz {CARGO_FUZZ_VERSION} (about a minute)");
        run_cmd(
            Command::new("cargo")
                .args(["install", "--locked", &format!("cargo-fuzz@{CARGO_FUZZ_VERSION}")])
                .env_remove("RUSTUP_TOOLCHAIN")
                .env_remove("CARGO_TARGET_DIR"),
        )?;
    }
    Ok(())
}

#[derive(Debug, clap::Args)]
pub struct FuzzArgs {
    /// Seconds per target.
    #[arg(long, default_value_t = DEFAULT_SECONDS, value_parser = clap::value_parser!(u64).range(1..))]
    seconds: u64,
    /// Targets to run (tests/fuzz/fuzz_targets); every one when none is named.
    #[arg(value_name = "TARGET")]
    targets: Vec<String>,
}

impl FuzzArgs {
    /// The targets to run: those named (each checked to exist), or every one.
    fn targets(&self) -> anyhow::Result<Vec<String>> {
        let known = targets()?;
        if let Some(t) = self.targets.iter().find(|t| !known.contains(t)) {
            bail!(
                "cargo xtask fuzz: {t:?} is not a target (targets: {})",
                known.join(", ")
            );
        }
        Ok(if self.targets.is_empty() {
            known
        } else {
            self.targets.clone()
        })
    }
}

fn fuzz_dir() -> PathBuf {
    root().join("tests/fuzz")
}

fn out_dir() -> PathBuf {
    root().join("target/fuzz")
}

/// The targets, from tests/fuzz/fuzz_targets.
fn targets() -> anyhow::Result<Vec<String>> {
    let dir = fuzz_dir().join("fuzz_targets");
    let mut t: Vec<String> = std::fs::read_dir(&dir)
        .with_context(|| dir.display().to_string())?
        .filter_map(|e| e.ok())
        .filter_map(|e| e.file_name().to_str()?.strip_suffix(".rs").map(str::to_string))
        .collect();
    t.sort();
    Ok(t)
}

/// `program`, at the lowest priority when `nice` (beside the kernel suite).
fn command(program: impl AsRef<std::ffi::OsStr>, nice: bool) -> Command {
    if nice {
        let mut c = Command::new("nice");
        c.args(["-n", "19"]).arg(program);
        c
    } else {
        Command::new(program)
    }
}

/// Builds every target; returns the directory of the binaries. `log`: where cargo's output
/// goes (None: the terminal). `nice`: at the lowest priority (beside the kernel suite).
fn build(log: Option<&Path>, nice: bool) -> anyhow::Result<PathBuf> {
    let out = out_dir();
    std::fs::create_dir_all(&out)?;
    // The fuzzed code never loads programs: an empty object spares the BPF build.
    let no_programs = out.join("no-programs.o");
    std::fs::write(&no_programs, b"")?;
    let mut c = command("cargo", nice);
    c.current_dir(root())
        .arg(format!("+{}", nightly()?))
        .args(["fuzz", "build", "--fuzz-dir"])
        .arg(fuzz_dir())
        .args(["--sanitizer", "none", "--debug-assertions", "--target-dir"])
        .arg(&out)
        .env("TETHER_BPF_OBJECT", &no_programs)
        .env_remove("RUSTUP_TOOLCHAIN")
        .env_remove("CARGO");
    if let Some(log) = log {
        let f = std::fs::File::create(log)?;
        c.stdout(f.try_clone()?).stderr(f);
    }
    let status = c.status().context("running cargo fuzz build")?;
    if !status.success() {
        bail!(
            "building the fuzz targets failed ({status}){}",
            log.map(|l| format!("; see {}", l.display())).unwrap_or_default()
        );
    }
    Ok(out.join("x86_64-unknown-linux-gnu/release"))
}

/// What one run of one target did.
struct Outcome {
    runs: u64,
    corpus: u64,
}

/// Runs `target` for `seconds`; a finding fails (its inputs copied into the corpus).
fn run_one(bin: &Path, target: &str, seconds: u64, log: &Path, nice: bool) -> anyhow::Result<Outcome> {
    let work = out_dir().join("work").join(target);
    let artifacts = out_dir().join("artifacts").join(target);
    let corpus = fuzz_dir().join("corpus").join(target);
    for d in [&work, &artifacts] {
        std::fs::create_dir_all(d)?;
    }
    let mut c = command(bin.join(target), nice);
    let f = std::fs::File::create(log)?;
    c.arg(format!("-max_total_time={seconds}"))
        .arg(format!("-max_len={MAX_LEN}"))
        .args(["-timeout=20", "-rss_limit_mb=2048", "-print_final_stats=1"])
        .arg(format!("-artifact_prefix={}/", artifacts.display()))
        .arg(&work)
        .arg(&corpus)
        .stdin(Stdio::null())
        .stdout(f.try_clone()?)
        .stderr(f);
    let status = c.status().with_context(|| format!("running fuzz target {target}"))?;
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let stat = |name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(&format!("stat::{name}:")))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0)
    };
    if !status.success() {
        let mut kept = Vec::new();
        for e in std::fs::read_dir(&artifacts)?.filter_map(|e| e.ok()) {
            let name = e.file_name().to_string_lossy().into_owned();
            let to = corpus.join(format!("finding-{name}"));
            std::fs::copy(e.path(), &to)?;
            kept.push(to.display().to_string());
        }
        let tail: Vec<&str> = text.lines().rev().take(40).collect();
        bail!(
            "fuzz target {target} failed ({status}); input(s) kept in the corpus as {} (fix, then commit them); log {}:\n{}",
            if kept.is_empty() {
                "(none written)".to_string()
            } else {
                kept.join(", ")
            },
            log.display(),
            tail.into_iter().rev().collect::<Vec<_>>().join("\n")
        );
    }
    Ok(Outcome {
        runs: stat("number_of_executed_units"),
        corpus: std::fs::read_dir(&work).map(|d| d.count() as u64).unwrap_or(0),
    })
}

/// `cargo xtask fuzz`: build, then each target in turn, output on the terminal.
pub fn run(args: &FuzzArgs) -> anyhow::Result<()> {
    let targets = args.targets()?;
    let bin = build(None, false)?;
    for t in &targets {
        let log = out_dir().join(format!("{t}.log"));
        let o = run_one(&bin, t, args.seconds, &log, false)?;
        eprintln!(
            "fuzz: {t}: {} inputs in {}s, no finding ({} new inputs kept in target/fuzz/work/{t})",
            o.runs, args.seconds, o.corpus
        );
    }
    Ok(())
}

/// The fuzz stage of `cargo xtask test`: quiet, niced, each target for `seconds`.
pub fn run_in_ci(seconds: u64) -> anyhow::Result<()> {
    let t = Instant::now();
    let bin = build(Some(&out_dir().join("build.log")), true)?;
    eprintln!("fuzz: targets built in {:.0}s", t.elapsed().as_secs_f64());
    let mut summary = Vec::new();
    for target in targets()? {
        let log = out_dir().join(format!("{target}.log"));
        let o = run_one(&bin, &target, seconds, &log, true)?;
        summary.push(format!("{target} {}", o.runs));
    }
    eprintln!(
        "test: fuzz stage passed in {:.0}s ({seconds}s a target; inputs run: {})",
        t.elapsed().as_secs_f64(),
        summary.join(", ")
    );
    Ok(())
}
