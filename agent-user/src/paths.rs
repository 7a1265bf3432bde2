//! Resolution of paths whose name part came from the caller (agent_common::path_source
//! DIR_AND_NAME): the directory is the kernel's, but `..` and symlinked directories inside the
//! name still need resolving. The final component is kept as named (unlink, rename, mkdir and
//! friends act on the link, not its target).
use std::path::{Component, Path, PathBuf};

use crate::events::{PathOrigin, ReportedPath};

/// Lexically removes `..` (used only when the directory no longer exists to be resolved).
pub fn lexical(path: &str) -> String {
    let mut out: Vec<&str> = Vec::new();
    for part in path.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                out.pop();
            }
            p => out.push(p),
        }
    }
    format!("/{}", out.join("/"))
}

/// Resolves a DIR_AND_NAME path whose call follows a final symlink (chmod, setxattr, utimes,
/// truncate...) to the file it acts on: the whole path against the filesystem. Falls back to
/// [`resolve`] when it does not resolve (the call failed, or the file is gone).
pub fn resolve_following(p: &mut ReportedPath) -> bool {
    if p.origin != PathOrigin::KernelDirAndName {
        return true;
    }
    match std::fs::canonicalize(&p.path) {
        Ok(real) => {
            p.path = real.display().to_string();
            true
        }
        Err(_) => resolve(p),
    }
}

/// Resolves the directory part of a DIR_AND_NAME path against the filesystem. Returns whether
/// the filesystem could be asked (false: the directory is gone, the result is lexical).
pub fn resolve(p: &mut ReportedPath) -> bool {
    if p.origin != PathOrigin::KernelDirAndName {
        return true;
    }
    let path = Path::new(&p.path);
    let (Some(parent), Some(name)) = (path.parent(), path.file_name()) else {
        return true;
    };
    if path
        .components()
        .next_back()
        .is_some_and(|c| matches!(c, Component::ParentDir))
    {
        // "dir/.." names a directory: resolve all of it.
        if let Ok(real) = std::fs::canonicalize(path) {
            p.path = real.display().to_string();
            return true;
        }
        p.path = lexical(&p.path);
        return false;
    }
    match std::fs::canonicalize(parent) {
        Ok(real) => {
            let full: PathBuf = real.join(name);
            p.path = full.display().to_string();
            true
        }
        Err(_) => {
            p.path = lexical(&p.path);
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir_and_name(path: &str) -> ReportedPath {
        ReportedPath {
            path: path.into(),
            raw: path.into(),
            origin: PathOrigin::KernelDirAndName,
            truncated: false,
        }
    }

    #[test]
    fn lexical_dot_dot() {
        assert_eq!(lexical("/a/b/../c"), "/a/c");
        assert_eq!(lexical("/../../x"), "/x");
        assert_eq!(lexical("/"), "/");
    }

    #[test]
    fn symlinked_parent_is_resolved_but_final_link_is_not() {
        let t = tempfile::tempdir().unwrap();
        let real = t.path().join("real");
        std::fs::create_dir(&real).unwrap();
        std::os::unix::fs::symlink(&real, t.path().join("via")).unwrap();
        std::os::unix::fs::symlink("elsewhere", real.join("lnk")).unwrap();
        let base = std::fs::canonicalize(t.path()).unwrap();
        let mut p = dir_and_name(&format!("{}/via/lnk", base.display()));
        assert!(resolve(&mut p));
        assert_eq!(p.path, format!("{}/real/lnk", base.display()));
        let mut p = dir_and_name(&format!("{}/via/../real/x", base.display()));
        assert!(resolve(&mut p));
        assert_eq!(
            p.path,
            format!("{}/real/x", base.display()),
            "`..` after a symlink is physical"
        );
        let mut p = dir_and_name(&format!("{}/gone/../x", base.display()));
        assert!(!resolve(&mut p));
        assert_eq!(p.path, format!("{}/x", base.display()));
    }
}
