//! The Python libraries the interoperability tests mint tokens with (tests/interop/mint.py):
//! PyJWT and jwcrypto, pinned, in a virtualenv of their own under the tools cache.
use std::{path::PathBuf, process::Command};

use anyhow::Context;

use crate::run_cmd;

const PACKAGES: &[&str] = &["PyJWT[crypto]==2.10.1", "jwcrypto==1.5.6", "cryptography==44.0.3"];

fn venv() -> PathBuf {
    std::env::var_os("TETHER_TOOLS_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/var/cache/tether/tools"))
        .join("interop")
}

/// The interpreter the tests run (TETHER_INTEROP_PYTHON for them).
pub fn python() -> PathBuf {
    venv().join("bin/python")
}

/// Installs the pinned libraries unless they are there already.
pub fn setup() -> anyhow::Result<()> {
    let venv = venv();
    let stamp = venv.join("tether-interop");
    let want = format!("{}\n", PACKAGES.join(" "));
    if std::fs::read_to_string(&stamp).is_ok_and(|s| s == want) {
        return Ok(());
    }
    eprintln!("setup: installing {} into {}", PACKAGES.join(", "), venv.display());
    run_cmd(Command::new("python3").args(["-m", "venv", "--clear"]).arg(&venv))?;
    run_cmd(
        Command::new(venv.join("bin/pip"))
            .args(["install", "--quiet", "--disable-pip-version-check"])
            .args(PACKAGES),
    )?;
    std::fs::write(&stamp, want).with_context(|| format!("writing {}", stamp.display()))?;
    Ok(())
}
