//! Builds the BPF programs (agent-ebpf) for the BPF target with the pinned nightly and
//! bpf-linker, and embeds the object in the `tether` binary.
//!
//! The object is built once into `target/bpf`, shared by every profile of the outer build.
//! Without the BPF toolchain (a machine where `cargo xtask setup` has not run) the userspace
//! still builds and its pure tests run, but the binary has no programs and `tether run` says
//! so and exits; `cargo xtask` sets TETHER_REQUIRE_BPF=1 so that a missing toolchain fails the
//! build instead.
use std::{
    env,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context, bail};

/// The BPF toolchain's pin, the one place it is written (xtask reads it too).
const PIN: &str = "agent-ebpf/rust-toolchain.toml";

#[derive(serde::Deserialize)]
struct PinFile {
    toolchain: Pin,
}

#[derive(serde::Deserialize)]
struct Pin {
    channel: String,
}

/// The dated nightly of [`PIN`].
fn pinned_toolchain(ws: &Path) -> anyhow::Result<String> {
    let path = ws.join(PIN);
    let text = std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    let pin: PinFile = toml::from_str(&text).with_context(|| format!("{}: no [toolchain] channel", path.display()))?;
    Ok(pin.toolchain.channel)
}

fn main() -> anyhow::Result<()> {
    let manifest = PathBuf::from(env::var("CARGO_MANIFEST_DIR")?);
    let ws = manifest.parent().context("workspace root")?.to_path_buf();
    let out_dir = PathBuf::from(env::var("OUT_DIR")?);
    let object = out_dir.join("tether.bpf.o");
    for dir in [
        "agent-ebpf/src",
        "agent-ebpf/Cargo.toml",
        PIN,
        "agent-common/src",
        "agent-common/Cargo.toml",
    ] {
        println!("cargo:rerun-if-changed={}", ws.join(dir).display());
    }
    println!("cargo:rustc-env=TETHER_LAYOUT={}", layout_hash(&ws)?);
    for var in ["TETHER_BPF_OBJECT", "TETHER_BPF_TOOLCHAIN", "TETHER_REQUIRE_BPF"] {
        println!("cargo:rerun-if-env-changed={var}");
    }

    if let Ok(prebuilt) = env::var("TETHER_BPF_OBJECT") {
        std::fs::copy(&prebuilt, &object).with_context(|| format!("copying TETHER_BPF_OBJECT={prebuilt}"))?;
        return Ok(());
    }
    let toolchain = match env::var("TETHER_BPF_TOOLCHAIN") {
        Ok(t) => t,
        Err(_) => pinned_toolchain(&ws)?,
    };
    let required = env::var("TETHER_REQUIRE_BPF").is_ok_and(|v| v == "1");
    if let Err(missing) = toolchain_present(&toolchain) {
        if required {
            bail!("cannot build the BPF programs: {missing}. Run `cargo xtask setup`.");
        }
        println!(
            "cargo:warning=building tether WITHOUT its BPF programs ({missing}); `tether run` will refuse to start. Run `cargo xtask setup` (or build through `cargo xtask build`)."
        );
        println!("cargo:rustc-cfg=tether_no_bpf");
        return Ok(());
    }
    build_ebpf(&ws, &toolchain, &object)
}

/// The wire and map layout's identity: a hash of agent-common, where every record and map
/// value type is defined, and of agent-ebpf's map definitions (types, sizes, flags). Pinned
/// maps are shared only between builds with the same one (see the `persist` module); any
/// change there, even a comment, counts as a new layout: safe, never a wrong reading of
/// another version's maps.
fn layout_hash(ws: &Path) -> anyhow::Result<String> {
    use sha2::{Digest, Sha256};
    let common = ws.join("agent-common");
    let mut files = vec![common.join("Cargo.toml")];
    for e in std::fs::read_dir(common.join("src")).context("agent-common/src")? {
        files.push(e?.path());
    }
    files.sort();
    files.push(ws.join("agent-ebpf/src/maps.rs"));
    let mut h = Sha256::new();
    for f in &files {
        h.update(f.file_name().map(|n| n.as_encoded_bytes()).unwrap_or_default());
        h.update(std::fs::read(f).with_context(|| format!("reading {}", f.display()))?);
    }
    Ok(h.finalize().iter().take(8).map(|b| format!("{b:02x}")).collect())
}

fn toolchain_present(toolchain: &str) -> Result<(), String> {
    let ok = |cmd: &mut Command| cmd.output().map(|o| o.status.success()).unwrap_or(false);
    if !ok(Command::new("rustup")
        .args(["run", toolchain, "rustc", "--version"])
        .env_remove("RUSTUP_TOOLCHAIN"))
    {
        return Err(format!("toolchain {toolchain} is not installed"));
    }
    if !ok(Command::new("bpf-linker").arg("--version")) {
        return Err("bpf-linker is not installed or does not start".to_string());
    }
    Ok(())
}

fn build_ebpf(ws: &Path, toolchain: &str, object: &Path) -> anyhow::Result<()> {
    let arch = env::var("CARGO_CFG_TARGET_ARCH")?;
    let target_dir = ws.join("target/bpf");
    let rustflags = [
        format!("--cfg=bpf_target_arch=\"{arch}\""),
        "-Cdebuginfo=2".into(),
        "-Clink-arg=--btf".into(),
    ]
    .join("\x1f");
    let mut cmd = Command::new("rustup");
    cmd.current_dir(ws)
        .args([
            "run",
            toolchain,
            "cargo",
            "build",
            "--release",
            "-p",
            "agent-ebpf",
            "--bins",
        ])
        .args(["--target", "bpfel-unknown-none", "-Z", "build-std=core", "--target-dir"])
        .arg(&target_dir)
        .env("CARGO_ENCODED_RUSTFLAGS", rustflags);
    // Nothing of the outer (host, stable) build may leak into the inner one.
    for var in [
        "RUSTUP_TOOLCHAIN",
        "RUSTC",
        "RUSTC_WRAPPER",
        "RUSTC_WORKSPACE_WRAPPER",
        "RUSTFLAGS",
        "CARGO_TARGET_DIR",
        "CARGO_BUILD_TARGET",
        "CARGO_BUILD_RUSTFLAGS",
        "CARGO",
        "CARGO_MANIFEST_DIR",
        "CARGO_PKG_NAME",
        "CARGO_PRIMARY_PACKAGE",
    ] {
        cmd.env_remove(var);
    }
    let output = cmd.output().context("running the BPF build")?;
    if !output.status.success() {
        for line in String::from_utf8_lossy(&output.stderr).lines() {
            println!("cargo:warning={line}");
        }
        bail!("building agent-ebpf for bpfel-unknown-none failed (output above)");
    }
    let built = target_dir.join("bpfel-unknown-none/release/tether-ebpf");
    std::fs::copy(&built, object).with_context(|| format!("copying {}", built.display()))?;
    Ok(())
}
