//! `cargo xtask`: machine setup, build, run and tests for Tether (`cargo xtask help` lists the
//! commands; each has `--help`).
mod bench;
mod deploy;
mod fuzz;
mod interop;
mod vm;

use std::{
    env,
    path::{Path, PathBuf},
    process::{Command, ExitCode},
    time::Instant,
};

use anyhow::{Context, bail};
use clap::{Args, Parser, Subcommand};

/// Where the BPF toolchain is pinned (the dated nightly whose libLLVM bpf-linker links
/// against); agent-user's build script reads the same file.
const PIN: &str = "agent-ebpf/rust-toolchain.toml";

#[derive(serde::Deserialize)]
struct PinFile {
    toolchain: Pin,
}

#[derive(serde::Deserialize)]
struct Pin {
    channel: String,
    #[serde(default)]
    components: Vec<String>,
}

fn pin() -> anyhow::Result<Pin> {
    let path = root().join(PIN);
    let text = std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    let f: PinFile = toml::from_str(&text).with_context(|| format!("{}: no [toolchain] channel", path.display()))?;
    Ok(f.toolchain)
}

/// The pinned nightly's name.
pub(crate) fn nightly() -> anyhow::Result<String> {
    Ok(pin()?.channel)
}
const BPF_LINKER_VERSION: &str = "0.13.0";
/// Kernel tests the VM tier leaves to the host tier, with why: what they check is done in
/// userspace the same way on every kernel, their kernel side is checked per kernel by the tests
/// the VMs do run, and each costs a minute or more under TCG (a VM run must stay well inside
/// CI's 30 minutes).
const VM_SKIP: &[(&str, &str)] = &[
    (
        "restart::an_upgrade_across_a_layout_change_replaces_the_programs_and_says_what_it_cannot_carry_over",
        "the pinning it relies on is checked per kernel by restart::a_sigkilled_daemon_keeps_enforcing_and_the_next_one_takes_over_and_reports_the_gap",
    ),
    (
        "restart::pod_guard_sets_survive_a_restart_and_those_of_pods_gone_meanwhile_are_swept",
        "pinning as above; pod guard sets in the kernel by pods::a_namespace_guardrail_holds_in_the_kernel_for_the_pods_processes_only",
    ),
    (
        "credentials::jwks_urls_are_fetched_over_https_and_a_down_or_garbage_url_only_refuses_its_tokens",
        "key fetching and token verification are userspace; a task's binding by the other credentials tests",
    ),
    (
        "credentials::bad_credentials_are_refused_the_command_never_runs_and_the_daemon_carries_on",
        "refused before anything runs, in userspace",
    ),
    (
        "soc::alerts_reach_the_webhook_and_a_sigkilled_daemon_resends_its_spool_on_restart",
        "delivery and spooling are userspace",
    ),
    (
        "redteam::an_agent_that_fills_the_disk_under_a_sink_leaves_enforcement_and_the_other_sinks_intact",
        "the sinks are userspace; the refused connect on every kernel by redteam::a_narrow_credential_holds_every_attack_back",
    ),
    (
        "soc::hostile_file_names_stay_data_in_the_file_syslog_and_webhook_sinks",
        "the sinks are userspace; names from the kernel by tracked_script_actions_appear_exactly_once_with_lineage_and_resolved_paths",
    ),
    (
        "credentials::a_selected_agent_binds_the_credential_in_its_environment",
        "the credential is read from /proc in userspace; a task's binding in the kernel by credentials::a_bound_task_is_attributed_in_every_event_and_out_of_scope_actions_raise_alerts",
    ),
    (
        "credentials::delegation_must_narrow_the_parent_task",
        "delegation is checked in userspace before anything reaches the kernel",
    ),
    (
        "credentials::an_oidc_discovered_issuers_token_binds_and_its_scope_string_holds_in_the_kernel",
        "discovery, verification and the scope carriers are userspace (and its tokens are minted by PyJWT, which the VMs do not have); a scope's hold in the kernel by containment::enforce_refuses_out_of_scope_actions_and_observe_reports_what_it_would_have_done",
    ),
    (
        "credentials::a_spiffe_bundle_is_refetched_as_its_refresh_hint_says",
        "key fetching and verification are userspace (tokens minted by jwcrypto, not in the VMs)",
    ),
    (
        "credentials::a_task_named_on_a_revocation_list_is_cut_off_in_the_kernel",
        "lists are read in userspace; the kernel side of a revocation by credentials::expiry_is_carried_by_the_kernel_and_revocation_applies_at_once",
    ),
    (
        "pods::a_credential_naming_another_workload_is_refused_in_the_pod",
        "refused in userspace before anything reaches the kernel",
    ),
    (
        "containment::mode_switches_and_reloads_apply_at_runtime_and_a_bad_file_keeps_the_rules",
        "reloads are map updates from userspace; the kernel's reading of the mode by containment::enforce_refuses_out_of_scope_actions_and_observe_reports_what_it_would_have_done",
    ),
    (
        "exec_refuses_to_run_the_command_when_the_daemon_is_unreachable",
        "no daemon runs: nothing reaches the kernel",
    ),
    (
        "pods::pod_guardrails_without_a_kubernetes_api_are_refused_at_start",
        "refused at start, in userspace",
    ),
    (
        "pods::pod_selectors_without_a_kubernetes_api_are_refused_at_start",
        "refused at start, in userspace",
    ),
];
/// Kernel tests every VM kernel runs: what differs from kernel to kernel is whether each
/// program loads and verifies, which hooks are in effect, and whether each refuses, records
/// and degrades as it says; these check exactly that. Every other VM test runs on one kernel
/// of the matrix, in turn ([`vm_plan`]): a daemon start costs ~30 s of verification per
/// kernel under TCG, and the matrix must stay inside CI's 30 minutes. All of them run on
/// the host kernel, and `--kernel K` (one kernel) or a FILTER runs them all there.
const VM_EVERY_KERNEL: &[&str] = &[
    "status_reports_probed_features_and_the_mechanism_of_each_hook",
    "a_kernel_without_path_fields_degrades_openly_to_names_as_passed",
    "containment::enforce_refuses_out_of_scope_actions_and_observe_reports_what_it_would_have_done",
    "redteam::a_narrow_credential_holds_every_attack_back",
    "redteam::observe_mode_lets_every_attack_through_and_reports_what_enforcement_would_do",
    "restart::a_sigkilled_daemon_keeps_enforcing_and_the_next_one_takes_over_and_reports_the_gap",
];

/// Debian packages the tests and tools use.
const APT_PACKAGES: &[&str] = &["bpftool", "qemu-system-x86", "busybox-static"];

#[derive(Parser)]
#[command(
    name = "cargo xtask",
    bin_name = "cargo xtask",
    about = "Machine setup, build, run and tests for Tether",
    after_help = "Every command installs what it needs first (idempotent; seconds when done)."
)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Install what is missing: the pinned nightly, bpf-linker, Debian packages, the deploy
    /// checkers and cargo-fuzz.
    Setup,
    /// Build the daemon with its BPF programs (target/debug or target/release/tether).
    Build {
        #[arg(long)]
        release: bool,
    },
    /// The deploy/ checks: manifests rendered, schema-validated and linted, the Dockerfile
    /// linted, the systemd unit verified.
    CheckDeploy,
    /// Setup, build, then `tether run ARGS` (root): observe-only on the embedded default
    /// policy, alerts on stdout, unless ARGS say otherwise.
    Run {
        /// Passed to `tether run`.
        #[arg(last = true)]
        args: Vec<String>,
    },
    /// Setup, then every test (root): lints, pure tests, the deploy checks, the kernel suite
    /// on this machine's kernel with the fuzz stage beside it, then the kernel suite in qemu on
    /// each kernel of the VM matrix.
    Test(TestArgs),
    /// Build the fuzz targets (tests/fuzz) and run each from its corpus; a crash fails and
    /// its input is copied into the corpus (commit it once fixed).
    Fuzz(fuzz::FuzzArgs),
    /// Fetch (or re-fetch the newest) matrix kernels into the VM cache.
    VmKernels {
        #[arg(long)]
        refresh: bool,
    },
    /// Measure Tether beside its peers (root): workloads tracked and untracked under no tracer,
    /// Tether, bpftrace and auditd (installed when missing), and the daemon's CPU per event
    /// under a flood; target/bench/bench.md (also on stdout) and target/bench/overhead.svg.
    /// `test` only runs `--quick` once (timings assert nothing).
    Bench(bench::BenchArgs),
    /// A workload of `bench`, timed by itself: prints the nanoseconds its loop took.
    #[command(hide = true)]
    Work(bench::work::WorkArgs),
    /// The violation of `bench`'s alert latency: prints the wall-clock time, then connects a
    /// UDP socket to the cloud metadata address.
    #[command(hide = true)]
    Violate,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli.command) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("xtask: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cmd: Cmd) -> anyhow::Result<()> {
    match cmd {
        Cmd::Setup => setup(),
        Cmd::Build { release } => {
            setup_toolchain()?;
            build(release)
        }
        Cmd::CheckDeploy => {
            setup_toolchain()?;
            build(false)?;
            deploy::check_all(&root().join("target/debug/tether"))
        }
        Cmd::Run { args } => {
            setup()?;
            build(false)?;
            require_root("tether run")?;
            let bin = root().join("target/debug/tether");
            let mut c = Command::new(bin);
            c.arg("run").args(&args);
            use std::os::unix::process::CommandExt;
            Err(c.exec()).context("starting tether")
        }
        Cmd::Test(mut args) => {
            if !args.host && !args.vm {
                (args.host, args.vm) = (true, true);
            }
            setup()?;
            test(&args)
        }
        Cmd::Fuzz(args) => {
            setup_toolchain()?;
            fuzz::setup()?;
            fuzz::run(&args)
        }
        Cmd::VmKernels { refresh } => {
            require_root("fetching kernels into the VM cache")?;
            for k in vm::kernels(&[], refresh)? {
                println!("{:<6} {}  ({})", k.name, k.package, k.vmlinuz.display());
            }
            Ok(())
        }
        Cmd::Bench(args) => bench::run(&args),
        Cmd::Work(args) => bench::work::run(&args),
        Cmd::Violate => bench::violate(),
    }
}

pub(crate) fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root")
        .to_path_buf()
}

/// Where cargo puts what it builds: CARGO_TARGET_DIR, or target/ of the workspace.
fn target_dir() -> PathBuf {
    env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .map(|d| if d.is_absolute() { d } else { root().join(d) })
        .unwrap_or_else(|| root().join("target"))
}

fn require_root(what: &str) -> anyhow::Result<()> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        bail!("{what} needs root (it loads eBPF programs); run it as root");
    }
    Ok(())
}

/// Which tiers `cargo xtask test` runs (both when neither is named).
#[derive(Debug, Default, Args)]
struct TestArgs {
    /// Pure tests, the deploy checks and the kernel suite on this kernel only.
    #[arg(long)]
    host: bool,
    /// The kernel suite in the VM matrix only.
    #[arg(long)]
    vm: bool,
    /// A kernel of the VM matrix (repeatable); every one when none is named.
    #[arg(long = "kernel", value_name = "K", requires = "vm")]
    kernels: Vec<String>,
    /// Passed to the kernel test binary (a test name filter, say); skips the fuzz stage.
    #[arg(last = true, value_name = "FILTER")]
    filter: Vec<String>,
}

fn ok(cmd: &mut Command) -> bool {
    cmd.output().map(|o| o.status.success()).unwrap_or(false)
}

pub(crate) fn stdout_of(cmd: &mut Command) -> Option<String> {
    let o = cmd.output().ok()?;
    o.status
        .success()
        .then(|| String::from_utf8_lossy(&o.stdout).trim().to_string())
}

pub(crate) fn run_cmd(cmd: &mut Command) -> anyhow::Result<()> {
    let status = cmd.status().with_context(|| format!("running {cmd:?}"))?;
    if !status.success() {
        bail!("{cmd:?} failed ({status})");
    }
    Ok(())
}

/// Installs what is missing, in order; each step checks first, so a second run is fast.
fn setup() -> anyhow::Result<()> {
    let t = Instant::now();
    setup_toolchain()?;
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
    // 4. The deploy/ checkers and the interop tests' token libraries (Python, pinned, each
    //    in a virtualenv).
    deploy::setup()?;
    interop::setup()?;
    // 5. cargo-fuzz, for the fuzz stage.
    fuzz::setup()?;
    eprintln!("setup: ready ({:.1}s)", t.elapsed().as_secs_f64());
    Ok(())
}

/// What building needs: the dated nightly and bpf-linker (a container build needs no more).
fn setup_toolchain() -> anyhow::Result<()> {
    let Pin {
        channel: nightly,
        components,
    } = pin()?;
    // 1. The dated nightly with rust-src (for -Z build-std=core on the BPF target) and
    //    clippy (the lint stage checks the BPF crate with it).
    let sysroot = stdout_of(
        Command::new("rustc")
            .arg(format!("+{nightly}"))
            .args(["--print", "sysroot"])
            .env_remove("RUSTUP_TOOLCHAIN"),
    );
    let has_src = sysroot
        .as_ref()
        .is_some_and(|s| Path::new(s).join("lib/rustlib/src/rust/library/core").exists());
    let has_clippy = ok(Command::new("cargo")
        .arg(format!("+{nightly}"))
        .args(["clippy", "--version"])
        .env_remove("RUSTUP_TOOLCHAIN"));
    if !has_src || !has_clippy {
        eprintln!("setup: installing toolchain {nightly} with {}", components.join(", "));
        run_cmd(
            Command::new("rustup")
                .args([
                    "toolchain",
                    "install",
                    &nightly,
                    "--profile",
                    "minimal",
                    "--no-self-update",
                ])
                .args(components.iter().flat_map(|c| ["--component", c.as_str()]))
                .env_remove("RUSTUP_TOOLCHAIN"),
        )?;
    }
    let sysroot = stdout_of(
        Command::new("rustc")
            .arg(format!("+{nightly}"))
            .args(["--print", "sysroot"])
            .env_remove("RUSTUP_TOOLCHAIN"),
    )
    .context("the nightly toolchain does not answer after install")?;

    // 2. clippy and rustfmt on the build toolchain (the test command checks with both).
    let lints_ok = ok(cargo().args(["clippy", "--version"])) && ok(cargo().args(["fmt", "--version"]));
    if !lints_ok {
        eprintln!("setup: installing clippy and rustfmt");
        run_cmd(Command::new("rustup").args(["component", "add", "clippy", "rustfmt"]))?;
    }

    // 3. bpf-linker, linked against that nightly's own libLLVM.
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
                .arg(format!("+{nightly}"))
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
    Ok(())
}

fn cargo() -> Command {
    let mut c = Command::new(env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    c.current_dir(root()).env("TETHER_REQUIRE_BPF", "1");
    c
}

fn build(release: bool) -> anyhow::Result<()> {
    let mut c = cargo();
    c.args(["build", "-p", "agent-user"]);
    if release {
        c.arg("--release");
    }
    run_cmd(&mut c)
}

fn test(args: &TestArgs) -> anyhow::Result<()> {
    if args.host {
        lint()?;
    }
    // One profile (dev) for everything: the BPF object is built once and shared.
    run_cmd(cargo().args(["build", "-p", "agent-user", "-p", "tether-integration", "--bins"]))?;
    if args.host {
        run_cmd(cargo().args([
            "test",
            "--workspace",
            "--exclude",
            "agent-ebpf",
            "--exclude",
            "tether-integration",
        ]))?;
        deploy::check_all(&root().join("target/debug/tether"))?;
        require_root("the kernel integration tests")?;
        let t = Instant::now();
        // The fuzz stage runs beside the kernel suite (niced: the suite mostly waits on
        // daemons and processes), each target for FUZZ_CI_SECONDS; a filter skips it.
        let fuzzing = args
            .filter
            .is_empty()
            .then(|| std::thread::spawn(|| fuzz::run_in_ci(fuzz::CI_SECONDS)));
        let suite = run_cmd(
            cargo()
                .args(["test", "-p", "tether-integration", "--", "--test-threads=1"])
                .args(&args.filter)
                .env("TETHER_BIN", root().join("target/debug/tether"))
                .env("TETHER_INTEROP_PYTHON", interop::python()),
        );
        if let Some(f) = fuzzing {
            let fuzzed = f.join().map_err(|_| anyhow::anyhow!("the fuzz stage panicked"))?;
            suite?;
            fuzzed?;
        } else {
            suite?;
        }
        eprintln!(
            "test: kernel suite passed on this machine's kernel ({}) in {:.0}s",
            stdout_of(Command::new("uname").arg("-r")).unwrap_or_default(),
            t.elapsed().as_secs_f64()
        );
        if args.filter.is_empty() {
            // The bench is not a test (timings assert nothing): this only shows it runs, on
            // the debug build the suite used (no release build in CI).
            let t = Instant::now();
            bench::run(&bench::BenchArgs::smoke(root().join("target/debug/tether")))
                .context("cargo xtask bench --quick")?;
            eprintln!(
                "test: cargo xtask bench --quick ran in {:.0}s",
                t.elapsed().as_secs_f64()
            );
        }
    }
    if args.vm {
        require_root("the VM tier (it fetches kernels into a system cache)")?;
        test_vm(args)?;
    }
    Ok(())
}

/// The habits, first: formatting, clippy with warnings as errors over the host crates and
/// over the BPF crate (for its target, with the pinned nightly), and rustdoc without warnings.
fn lint() -> anyhow::Result<()> {
    let t = Instant::now();
    run_cmd(cargo().args(["fmt", "--all", "--check"])).context("cargo fmt --check: run `cargo fmt --all`")?;
    run_cmd(cargo().args([
        "clippy",
        "--workspace",
        "--exclude",
        "agent-ebpf",
        "--all-targets",
        "--",
        "-D",
        "warnings",
    ]))?;
    let arch = std::env::consts::ARCH;
    run_cmd(
        Command::new("cargo")
            .current_dir(root())
            .arg(format!("+{}", nightly()?))
            .args(["clippy", "-p", "agent-ebpf", "--bins", "--target", "bpfel-unknown-none"])
            .args(["-Z", "build-std=core", "--target-dir"])
            .arg(root().join("target/bpf-clippy"))
            .args(["--", "-D", "warnings"])
            .env("CARGO_ENCODED_RUSTFLAGS", format!("--cfg=bpf_target_arch=\"{arch}\""))
            .env_remove("RUSTUP_TOOLCHAIN")
            .env_remove("RUSTFLAGS")
            .env_remove("CARGO"),
    )
    .context("clippy on the BPF crate")?;
    run_cmd(
        cargo()
            .args([
                "doc",
                "--workspace",
                "--exclude",
                "agent-ebpf",
                "--no-deps",
                "--document-private-items",
            ])
            .env("RUSTDOCFLAGS", "-D warnings"),
    )
    .context("cargo doc: fix the warnings above")?;
    eprintln!(
        "test: fmt, clippy (host and BPF crates) and rustdoc clean in {:.0}s",
        t.elapsed().as_secs_f64()
    );
    Ok(())
}

/// The names of the kernel tests, as the test executable lists them.
fn list_tests(kernel_tests: &Path) -> anyhow::Result<Vec<String>> {
    let out = Command::new(kernel_tests)
        .args(["--list", "--format", "terse"])
        .output()
        .with_context(|| format!("listing {}", kernel_tests.display()))?;
    if !out.status.success() {
        bail!("{} --list failed", kernel_tests.display());
    }
    Ok(String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.strip_suffix(": test"))
        .map(str::to_string)
        .collect())
}

/// Which tests each kernel in `kernels` runs: those of [`VM_EVERY_KERNEL`], and the others
/// not in [`VM_SKIP`] dealt out in turn (in name order, so a test stays on its kernel).
fn vm_plan(all: &[String], kernels: &[String]) -> anyhow::Result<Vec<Vec<String>>> {
    for name in VM_EVERY_KERNEL.iter().chain(VM_SKIP.iter().map(|(n, _)| n)) {
        if !all.iter().any(|t| t == name) {
            bail!("xtask names a kernel test that does not exist: {name}");
        }
    }
    let mut rest: Vec<&String> = all
        .iter()
        .filter(|t| !VM_EVERY_KERNEL.contains(&t.as_str()) && !VM_SKIP.iter().any(|(n, _)| n == t))
        .collect();
    rest.sort();
    let n = kernels.len().max(1);
    Ok((0..kernels.len())
        .map(|i| {
            let mut tests: Vec<String> = VM_EVERY_KERNEL.iter().map(|t| t.to_string()).collect();
            tests.extend(rest.iter().skip(i).step_by(n).map(|t| t.to_string()));
            tests
        })
        .collect())
}

/// The kernel integration test executable, built (not run) by cargo.
fn kernel_test_binary() -> anyhow::Result<PathBuf> {
    let out = cargo()
        .args([
            "test",
            "-p",
            "tether-integration",
            "--test",
            "kernel",
            "--no-run",
            "--message-format=json",
        ])
        .stderr(std::process::Stdio::inherit())
        .output()
        .context("cargo test --no-run")?;
    if !out.status.success() {
        bail!("building the kernel test binary failed");
    }
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v["reason"] == "compiler-artifact" && v["target"]["name"] == "kernel")
        .find_map(|v| v["executable"].as_str().map(PathBuf::from))
        .context("cargo reported no executable for the kernel test")
}

fn test_vm(args: &TestArgs) -> anyhow::Result<()> {
    let t = Instant::now();
    let kernels = vm::kernels(&args.kernels, false)?;
    let work = root().join("target/vm");
    std::fs::create_dir_all(&work)?;
    let payload = vm::Payload {
        tether: root().join("target/debug/tether"),
        kernel_tests: kernel_test_binary()?,
        helpers: vec![
            root().join("target/debug/netprobe"),
            root().join("target/debug/redteam"),
        ],
        ocsf_dir: root().join("tests/data/ocsf"),
    };
    for (name, why) in VM_SKIP {
        eprintln!("vm: left to the host tier: {name} ({why})");
    }
    let names: Vec<String> = kernels.iter().map(|k| k.name.clone()).collect();
    let plan = if args.filter.is_empty() {
        let all = list_tests(&payload.kernel_tests)?;
        let plan = vm_plan(&all, &names)?;
        for (k, tests) in names.iter().zip(&plan) {
            let own: Vec<&str> = tests
                .iter()
                .map(String::as_str)
                .filter(|t| !VM_EVERY_KERNEL.contains(t))
                .collect();
            eprintln!(
                "vm: {k} runs the {} every kernel runs and {}",
                VM_EVERY_KERNEL.len(),
                if own.is_empty() {
                    "no more".to_string()
                } else {
                    own.join(", ")
                }
            );
        }
        plan.into_iter()
            .map(|tests| {
                let mut a = vec!["--exact".to_string()];
                a.extend(tests);
                a
            })
            .collect()
    } else {
        // A filter runs what it names on every kernel.
        let mut a = args.filter.clone();
        for (name, _) in VM_SKIP {
            a.extend(["--skip".to_string(), name.to_string()]);
        }
        vec![a; kernels.len()]
    };
    let mut initramfs = Vec::new();
    for (k, test_args) in names.iter().zip(&plan) {
        let out = work.join(format!("initramfs-{k}.cpio"));
        let expect = kernels
            .iter()
            .find(|x| &x.name == k)
            .map_or("TETHER_EXPECT_LSM", |x| x.expect);
        vm::build_initramfs(&payload, test_args, expect, &work.join("stage"), &out)?;
        initramfs.push(out);
    }
    eprintln!(
        "vm: {} initramfs ({} MiB each) in {:.1}s",
        initramfs.len(),
        initramfs
            .first()
            .map(|i| std::fs::metadata(i).map(|m| m.len() >> 20))
            .transpose()?
            .unwrap_or(0),
        t.elapsed().as_secs_f64()
    );
    // VMs run side by side, `jobs` at a time (TETHER_VM_JOBS, default 3 = the whole matrix):
    // most of a run is waiting (daemon starts, sleeps in the suite), so they share the 2 cores
    // well (measured: two side by side took as long as one alone).
    let jobs: usize = env::var("TETHER_VM_JOBS")
        .ok()
        .and_then(|j| j.parse().ok())
        .filter(|&j| j > 0)
        .unwrap_or(3);
    let results: Vec<(String, Option<String>)> = std::thread::scope(|scope| {
        let mut out = Vec::new();
        let runs: Vec<(&vm::Kernel, &PathBuf)> = kernels.iter().zip(&initramfs).collect();
        for chunk in runs.chunks(jobs) {
            let handles: Vec<_> = chunk
                .iter()
                .map(|&(k, initramfs)| {
                    let work = &work;
                    scope.spawn(move || {
                        let kt = Instant::now();
                        let log = work.join(format!("console-{}.log", k.name));
                        eprintln!("vm: booting {} ({}) under qemu/TCG", k.name, k.package);
                        let (verdict, failed) = match vm::boot(k, initramfs, &log) {
                            Ok(0) => ("passed".to_string(), None),
                            Ok(rc) => (
                                format!("FAILED (suite exit {rc}; console log {})", log.display()),
                                Some(k.name.clone()),
                            ),
                            Err(e) => (format!("FAILED ({e:#})"), Some(k.name.clone())),
                        };
                        (
                            format!(
                                "  {:<6} {:<60} {verdict} in {:.0}s",
                                k.name,
                                k.package,
                                kt.elapsed().as_secs_f64()
                            ),
                            failed,
                        )
                    })
                })
                .collect();
            out.extend(handles.into_iter().map(|h| h.join().expect("VM thread")));
        }
        out
    });
    let mut failed = Vec::new();
    let mut summary = Vec::new();
    for (line, f) in results {
        summary.push(line);
        failed.extend(f);
    }
    eprintln!("vm: matrix results ({:.0}s in all):", t.elapsed().as_secs_f64());
    for s in &summary {
        eprintln!("{s}");
    }
    if !failed.is_empty() {
        bail!("the kernel suite failed in the VM on: {}", failed.join(", "));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_vm_plan_runs_the_core_everywhere_and_every_other_test_once() {
        let mut all: Vec<String> = VM_EVERY_KERNEL.iter().map(|t| t.to_string()).collect();
        all.extend(VM_SKIP.iter().map(|(n, _)| n.to_string()));
        all.extend(["c", "a", "d", "b"].map(String::from));
        let kernels = ["5.10", "6.1", "6.12"].map(String::from);
        let plan = vm_plan(&all, &kernels).unwrap();
        assert_eq!(plan.len(), 3);
        for tests in &plan {
            assert!(VM_EVERY_KERNEL.iter().all(|c| tests.iter().any(|t| t == c)));
            assert!(!VM_SKIP.iter().any(|(n, _)| tests.iter().any(|t| t == n)));
        }
        let extra: Vec<Vec<&str>> = plan
            .iter()
            .map(|p| p[VM_EVERY_KERNEL.len()..].iter().map(String::as_str).collect())
            .collect();
        assert_eq!(extra, [vec!["a", "d"], vec!["b"], vec!["c"]]);
        // One kernel runs them all.
        let one = vm_plan(&all, &kernels[..1]).unwrap();
        assert_eq!(one[0].len(), VM_EVERY_KERNEL.len() + 4);
        // A name that does not exist is an error, not a test silently never run.
        assert!(vm_plan(&all[1..], &kernels).is_err());
    }
}
