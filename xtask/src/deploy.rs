//! Checks of deploy/: the Kubernetes manifests rendered by kustomize and validated against the
//! API's schemas (kubernetes-validate, strict: no unknown field), a security lint (checkov,
//! over the manifests and the Dockerfile; a check may only be skipped by an annotation that
//! says why), and the systemd unit (systemd-analyze verify). The Python tools are pinned and
//! installed once into a virtualenv under the cache directory.
use std::{
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context, bail};

use crate::{root, run_cmd, stdout_of};

const KUBERNETES_VALIDATE: &str = "kubernetes-validate==1.37.0";
const CHECKOV: &str = "checkov==3.3.30";
/// The kustomizations to render and check.
const KUSTOMIZATIONS: &[&str] = &[
    "deploy/kubernetes/base",
    "deploy/kubernetes/overlays/webhook",
    "deploy/kubernetes/overlays/uninstall",
];

fn venv() -> PathBuf {
    std::env::var_os("TETHER_TOOLS_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/var/cache/tether/tools"))
        .join("venv")
}

/// Installs the pinned tools into the virtualenv unless they are there already.
pub fn setup() -> anyhow::Result<()> {
    let venv = venv();
    let stamp = venv.join("tether-tools");
    let want = format!("{KUBERNETES_VALIDATE} {CHECKOV}\n");
    if std::fs::read_to_string(&stamp).is_ok_and(|s| s == want) {
        return Ok(());
    }
    eprintln!(
        "setup: installing {KUBERNETES_VALIDATE} and {CHECKOV} into {} (a minute)",
        venv.display()
    );
    run_cmd(Command::new("python3").args(["-m", "venv", "--clear"]).arg(&venv))?;
    run_cmd(Command::new(venv.join("bin/pip")).args([
        "install",
        "--quiet",
        "--disable-pip-version-check",
        KUBERNETES_VALIDATE,
        CHECKOV,
    ]))?;
    std::fs::write(&stamp, want).with_context(|| format!("writing {}", stamp.display()))?;
    Ok(())
}

/// What `check` asks of a tool's output besides its exit status.
#[derive(Clone, Copy)]
enum Expect {
    /// Nothing printed.
    Silence,
    /// A checkov report that ran checks and failed none (checkov exits 0 when it finds
    /// nothing to scan).
    CheckovPass,
}

/// Runs `cmd`; fails with its output when it fails or its output is not what `expect` says.
/// The security lint of `file` (checkov's `framework`), which must report no failed check.
fn checkov(bin: &Path, framework: &str, file: &Path, what: &str) -> anyhow::Result<()> {
    check(
        &format!("checkov ({framework}) {what}"),
        Command::new(bin.join("checkov"))
            .args([
                "--quiet",
                "--compact",
                "--skip-download",
                "--framework",
                framework,
                "-f",
            ])
            .arg(file),
        Expect::CheckovPass,
    )
}

fn check(what: &str, cmd: &mut Command, expect: Expect) -> anyhow::Result<()> {
    let out = cmd.output().with_context(|| format!("running {cmd:?}"))?;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let as_expected = match expect {
        Expect::Silence => text.trim().is_empty(),
        Expect::CheckovPass => text.contains("Passed checks:") && text.contains("Failed checks: 0,"),
    };
    if !out.status.success() || !as_expected {
        bail!("{what} failed ({}):\n{text}", out.status);
    }
    Ok(())
}

/// Renders every kustomization and checks it, the Dockerfile and the systemd unit.
pub fn check_all(tether_bin: &Path) -> anyhow::Result<()> {
    setup()?;
    let bin = venv().join("bin");
    let out = root().join("target/deploy");
    std::fs::create_dir_all(&out)?;
    if stdout_of(Command::new("kubectl").args(["kustomize", "--help"])).is_none() {
        bail!(
            "`kubectl kustomize` is needed to render deploy/kubernetes (kubectl with kustomize, as on these machines)"
        );
    }
    for k in KUSTOMIZATIONS {
        let rendered = out.join(format!("{}.yaml", k.rsplit('/').next().unwrap_or(k)));
        let yaml = stdout_of(Command::new("kubectl").arg("kustomize").arg(root().join(k)))
            .with_context(|| format!("kubectl kustomize {k} failed"))?;
        if yaml.contains(":latest") {
            bail!("{k}: an image uses a :latest tag");
        }
        std::fs::write(&rendered, yaml)?;
        check(
            &format!("kubernetes-validate --strict {k}"),
            Command::new(bin.join("kubernetes-validate"))
                .args(["--strict", "--quiet"])
                .arg(&rendered),
            Expect::Silence,
        )?;
        checkov(&bin, "kubernetes", &rendered, k)?;
        eprintln!("deploy: {k} renders, validates (strict) and passes the security lint");
    }
    let containerfile = root().join("deploy/container/Dockerfile");
    checkov(&bin, "dockerfile", &containerfile, "deploy/container/Dockerfile")?;
    // The unit as shipped, but for the binary's path (systemd-analyze checks it exists).
    let unit = std::fs::read_to_string(root().join("deploy/systemd/tether.service"))?;
    let unit_dir = out.join("systemd");
    std::fs::create_dir_all(&unit_dir)?;
    let verify = unit_dir.join("tether.service");
    std::fs::write(
        &verify,
        unit.replace("/usr/local/bin/tether", &tether_bin.display().to_string()),
    )?;
    check(
        "systemd-analyze verify deploy/systemd/tether.service",
        Command::new("systemd-analyze").arg("verify").arg(&verify),
        Expect::Silence,
    )?;
    eprintln!("deploy: Dockerfile passes the security lint; the systemd unit verifies");
    Ok(())
}
