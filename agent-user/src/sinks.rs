//! Where audit lines go: stdout and/or an append-only file. One JSON object per line.
use std::{
    fs::{File, OpenOptions},
    io::{self, BufWriter, Write},
    path::Path,
};

#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    #[error("cannot open audit log {path}: {source}")]
    Open { path: String, source: io::Error },
    #[error("writing the audit stream to {sink}: {source}")]
    Write { sink: &'static str, source: io::Error },
}

pub struct Sinks {
    stdout: Option<BufWriter<io::Stdout>>,
    file: Option<BufWriter<File>>,
    pub written: u64,
}

impl Sinks {
    pub fn new(stdout: bool, audit_log: Option<&Path>) -> Result<Self, SinkError> {
        let file = match audit_log {
            Some(p) => Some(BufWriter::new(
                OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(p)
                    .map_err(|source| SinkError::Open {
                        path: p.display().to_string(),
                        source,
                    })?,
            )),
            None => None,
        };
        Ok(Sinks {
            stdout: stdout.then(|| BufWriter::new(io::stdout())),
            file,
            written: 0,
        })
    }

    /// Writes one line (the caller's JSON never contains a raw newline).
    pub fn line(&mut self, line: &str) -> Result<(), SinkError> {
        if let Some(out) = &mut self.stdout {
            writeln!(out, "{line}").map_err(|source| SinkError::Write { sink: "stdout", source })?;
        }
        if let Some(f) = &mut self.file {
            writeln!(f, "{line}").map_err(|source| SinkError::Write {
                sink: "audit log",
                source,
            })?;
        }
        self.written += 1;
        Ok(())
    }

    pub fn flush(&mut self) -> Result<(), SinkError> {
        if let Some(out) = &mut self.stdout {
            out.flush()
                .map_err(|source| SinkError::Write { sink: "stdout", source })?;
        }
        if let Some(f) = &mut self.file {
            f.flush().map_err(|source| SinkError::Write {
                sink: "audit log",
                source,
            })?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_sink_appends_lines() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.jsonl");
        std::fs::write(&path, "{\"old\":1}\n").unwrap();
        let mut s = Sinks::new(false, Some(&path)).unwrap();
        s.line("{\"a\":1}").unwrap();
        s.line("{\"b\":2}").unwrap();
        s.flush().unwrap();
        assert_eq!(
            std::fs::read_to_string(&path).unwrap(),
            "{\"old\":1}\n{\"a\":1}\n{\"b\":2}\n"
        );
        assert_eq!(s.written, 2);
    }

    #[test]
    fn unopenable_log_is_a_clear_error() {
        let err = Sinks::new(false, Some(Path::new("/nonexistent/dir/a.log")))
            .err()
            .expect("fails");
        assert!(err.to_string().contains("/nonexistent/dir/a.log"), "{err}");
    }
}
