//! Tokens and keys made by independent libraries (PyJWT, jwcrypto: tests/interop/mint.py),
//! run with the Python that `cargo xtask setup` installs them into.
use std::{
    io::Write as _,
    path::PathBuf,
    process::{Command, Stdio},
};

use serde_json::{Map, Value, json};

/// The interpreter with PyJWT and jwcrypto: TETHER_INTEROP_PYTHON, else where `cargo xtask
/// setup` puts it.
pub fn python() -> PathBuf {
    let p = std::env::var_os("TETHER_INTEROP_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/var/cache/tether/tools/interop/bin/python"));
    assert!(
        p.exists(),
        "{} is missing: `cargo xtask setup` installs PyJWT and jwcrypto there (or set TETHER_INTEROP_PYTHON)",
        p.display()
    );
    p
}

pub struct Minted {
    /// Public JWKs by key name (each with kid = its name).
    pub keys: Map<String, Value>,
    /// The tokens, in the order asked.
    pub tokens: Vec<String>,
}

impl Minted {
    pub fn key(&self, name: &str) -> Value {
        self.keys.get(name).unwrap_or_else(|| panic!("no key {name}")).clone()
    }
}

/// Runs the minter on `request` (see tests/interop/mint.py).
pub fn mint(request: &Value) -> Minted {
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("interop/mint.py");
    let mut child = Command::new(python())
        .arg(script)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the interop Python runs");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(request.to_string().as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "mint.py failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_slice(&out.stdout).expect("mint.py writes JSON");
    Minted {
        keys: v["keys"].as_object().unwrap().clone(),
        tokens: v["tokens"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t.as_str().unwrap().to_string())
            .collect(),
    }
}

/// A JWKS document of `keys`, with `extra` top-level members.
pub fn jwks(keys: &[Value], extra: Value) -> Vec<u8> {
    let mut doc = json!({"keys": keys});
    if let Value::Object(m) = extra {
        doc.as_object_mut().unwrap().extend(m);
    }
    doc.to_string().into_bytes()
}
