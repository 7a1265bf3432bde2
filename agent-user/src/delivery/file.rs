//! A file sink with size-based rotation: lines are appended to PATH; a line that would take
//! it past the limit first moves PATH to PATH.1 (PATH.1 to PATH.2, ...), keeping `keep`
//! rotated files and deleting older ones. A line is never split across files.
use std::{
    fs::{self, File, OpenOptions},
    io::{self, BufWriter, Write},
    os::unix::fs::OpenOptionsExt,
    path::{Path, PathBuf},
};

#[derive(Debug, thiserror::Error)]
pub enum FileError {
    #[error("file sink {path}: {source}")]
    Io { path: String, source: io::Error },
}

pub struct RotatingFile {
    path: PathBuf,
    max_bytes: u64,
    keep: usize,
    size: u64,
    out: BufWriter<File>,
}

fn open(path: &Path) -> Result<(BufWriter<File>, u64), FileError> {
    let err = |source| FileError::Io {
        path: path.display().to_string(),
        source,
    };
    // Created owner-only: audit lines name every command, path and peer of the agents. An
    // existing file keeps the mode its operator gave it.
    let f = OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(path)
        .map_err(err)?;
    let size = f.metadata().map_err(err)?.len();
    Ok((BufWriter::with_capacity(super::SINK_BUFFER, f), size))
}

fn rotated(path: &Path, n: usize) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(format!(".{n}"));
    PathBuf::from(s)
}

impl RotatingFile {
    pub fn open(path: &Path, max_bytes: u64, keep: usize) -> Result<RotatingFile, FileError> {
        let (out, size) = open(path)?;
        Ok(RotatingFile {
            path: path.to_path_buf(),
            max_bytes,
            keep,
            size,
            out,
        })
    }

    fn io(&self) -> impl FnOnce(io::Error) -> FileError + '_ {
        move |source| FileError::Io {
            path: self.path.display().to_string(),
            source,
        }
    }

    fn rotate(&mut self) -> Result<(), FileError> {
        self.out.flush().map_err(self.io())?;
        if self.keep == 0 {
            fs::remove_file(&self.path).map_err(self.io())?;
        } else {
            let oldest = rotated(&self.path, self.keep);
            match fs::remove_file(&oldest) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(self.io()(e)),
            }
            for n in (1..self.keep).rev() {
                let from = rotated(&self.path, n);
                if from.exists() {
                    fs::rename(&from, rotated(&self.path, n + 1)).map_err(self.io())?;
                }
            }
            fs::rename(&self.path, rotated(&self.path, 1)).map_err(self.io())?;
        }
        let (out, size) = open(&self.path)?;
        self.out = out;
        self.size = size;
        Ok(())
    }

    /// Would a line of `len` bytes go to a new file?
    pub fn would_rotate(&self, len: usize) -> bool {
        self.size > 0 && self.size + len as u64 + 1 > self.max_bytes
    }

    /// Appends a line; true when it went to a new file (PATH was rotated first).
    pub fn line(&mut self, line: &str) -> Result<bool, FileError> {
        let rotate = self.would_rotate(line.len());
        if rotate {
            self.rotate()?;
        }
        let out = &mut self.out;
        out.write_all(line.as_bytes())
            .and_then(|()| out.write_all(b"\n"))
            .map_err(self.io())?;
        self.size += line.len() as u64 + 1;
        Ok(rotate)
    }

    pub fn flush(&mut self) -> Result<(), FileError> {
        self.out.flush().map_err(self.io())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn files_are_created_owner_only_and_rotated_files_too() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.jsonl");
        let mut f = RotatingFile::open(&path, 10, 2).unwrap();
        f.line("first line").unwrap();
        assert!(f.line("second line").unwrap(), "the second line rotated the file");
        f.flush().unwrap();
        for p in [path.clone(), rotated(&path, 1)] {
            let mode = fs::metadata(&p).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o600, "{}: {mode:o}", p.display());
        }
    }

    #[test]
    fn rotates_by_size_keeps_n_files_and_never_splits_a_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("alerts.jsonl");
        let mut f = RotatingFile::open(&path, 100, 2).unwrap();
        let lines: Vec<String> = (0..20)
            .map(|i| format!("{{\"n\":{i:02},\"pad\":\"xxxxxxxxxx\"}}"))
            .collect();
        for l in &lines {
            f.line(l).unwrap();
        }
        f.flush().unwrap();
        let read = |p: &Path| fs::read_to_string(p).unwrap();
        let (cur, one, two) = (read(&path), read(&rotated(&path, 1)), read(&rotated(&path, 2)));
        assert!(!rotated(&path, 3).exists(), "only 2 rotated files are kept");
        for text in [&cur, &one, &two] {
            assert!(text.len() <= 100, "{text}");
            for l in text.lines() {
                assert!(lines.contains(&l.to_string()), "whole lines only: {l}");
            }
        }
        // Newest in PATH, then .1, then .2, in order.
        let all: Vec<&str> = two.lines().chain(one.lines()).chain(cur.lines()).collect();
        assert_eq!(
            all,
            lines[lines.len() - all.len()..]
                .iter()
                .map(String::as_str)
                .collect::<Vec<_>>()
        );
        // Reopened, it continues the current file.
        drop(f);
        let mut f = RotatingFile::open(&path, 100, 2).unwrap();
        f.line("{}").unwrap();
        f.flush().unwrap();
        assert!(read(&path).ends_with("{}\n"));
    }

    #[test]
    fn an_unwritable_path_is_a_clear_error() {
        let err = RotatingFile::open(Path::new("/nonexistent/dir/a.jsonl"), 100, 1)
            .err()
            .unwrap()
            .to_string();
        assert!(err.contains("/nonexistent/dir/a.jsonl"), "{err}");
    }
}
