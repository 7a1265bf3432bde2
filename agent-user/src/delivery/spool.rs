//! The bounded on-disk spool in front of the webhook: what is written here is delivered at
//! least once, through receiver outages and daemon restarts (a SIGKILLed daemon resends, on
//! restart, everything the receiver had not acknowledged; receivers deduplicate by
//! `metadata.uid`).
//!
//! Layout: `<dir>/<stream>/<seq>.jsonl` segments (one OCSF object per line, appended) and
//! `<dir>/<stream>/cursor` (`<seq> <byte offset>`: everything before it was acknowledged,
//! replaced atomically by rename). A segment wholly acknowledged, and not the one being
//! written, is deleted.
//!
//! Bound: the segments of both streams together stay under `max_bytes`. When a line does not
//! fit, whole segments are dropped, the oldest *audit* segment first and alerts only when no
//! audit is left; the lines dropped unacknowledged are counted and returned, so the caller
//! alerts on the loss.
use std::{
    fs::{self, File, OpenOptions},
    io::{self, BufRead, BufReader, Read, Seek, SeekFrom, Write},
    path::{Path, PathBuf},
};

use super::Stream;

#[derive(Debug, thiserror::Error)]
pub enum SpoolError {
    #[error("spool {path}: {source}")]
    Io { path: String, source: io::Error },
    #[error("spool {path}: bad cursor {text:?} (expected `<segment> <offset>`)")]
    Cursor { path: String, text: String },
    #[error("spool: a line of {len} bytes does not fit in a spool of {max} bytes")]
    TooLarge { len: usize, max: u64 },
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> SpoolError + '_ {
    move |source| SpoolError::Io {
        path: path.display().to_string(),
        source,
    }
}

/// One stream's queue.
struct Queue {
    dir: PathBuf,
    /// Segment numbers on disk, oldest first (the last is the one written to).
    segments: Vec<u64>,
    /// Bytes of each segment, in the order of `segments`.
    sizes: Vec<u64>,
    /// First unacknowledged byte: (segment, offset).
    cursor: (u64, u64),
    /// Unacknowledged lines.
    depth: u64,
    writer: Option<File>,
}

/// Lines read from one queue, and where its cursor goes once they are acknowledged.
type Peeked = Option<(Vec<String>, (u64, u64))>;

/// A batch read from the spool, to acknowledge once delivered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Batch {
    pub stream: Stream,
    pub lines: Vec<String>,
    /// Where the cursor goes once the batch is acknowledged.
    end: (u64, u64),
}

pub struct Spool {
    alerts: Queue,
    audit: Queue,
    max_bytes: u64,
    segment_bytes: u64,
}

/// What an append cost.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Dropped {
    pub audit: u64,
    pub alerts: u64,
}

impl Queue {
    fn open(dir: PathBuf) -> Result<Queue, SpoolError> {
        fs::create_dir_all(&dir).map_err(io_err(&dir))?;
        let mut segments: Vec<u64> = Vec::new();
        for entry in fs::read_dir(&dir).map_err(io_err(&dir))? {
            let entry = entry.map_err(io_err(&dir))?;
            let name = entry.file_name();
            let name = name.to_string_lossy();
            if let Some(n) = name.strip_suffix(".jsonl").and_then(|n| n.parse().ok()) {
                segments.push(n);
            }
        }
        segments.sort_unstable();
        let mut sizes = Vec::new();
        for s in &segments {
            let p = seg_path(&dir, *s);
            sizes.push(fs::metadata(&p).map_err(io_err(&p))?.len());
        }
        let cpath = dir.join("cursor");
        let cursor = match fs::read_to_string(&cpath) {
            Ok(text) => {
                let mut it = text.split_whitespace().map(str::parse::<u64>);
                match (it.next(), it.next()) {
                    (Some(Ok(s)), Some(Ok(o))) => (s, o),
                    _ => {
                        return Err(SpoolError::Cursor {
                            path: cpath.display().to_string(),
                            text,
                        });
                    }
                }
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => (segments.first().copied().unwrap_or(0), 0),
            Err(e) => return Err(io_err(&cpath)(e)),
        };
        let mut q = Queue {
            dir,
            segments,
            sizes,
            cursor,
            depth: 0,
            writer: None,
        };
        // Segments wholly before the cursor were acknowledged (a crash between the cursor
        // write and the deletion leaves them).
        while q.segments.first().is_some_and(|s| *s < q.cursor.0) {
            q.drop_oldest()?;
        }
        if q.segments.first().is_some_and(|s| *s > q.cursor.0) || q.segments.is_empty() {
            q.cursor = (q.segments.first().copied().unwrap_or(q.cursor.0), 0);
        }
        q.depth = q.count_unacked()?;
        Ok(q)
    }

    /// Lines of segment `seg` from byte `off` on.
    fn lines_from(&self, seg: u64, off: u64) -> Result<u64, SpoolError> {
        let p = seg_path(&self.dir, seg);
        let mut f = File::open(&p).map_err(io_err(&p))?;
        f.seek(SeekFrom::Start(off)).map_err(io_err(&p))?;
        let mut buf = Vec::new();
        f.read_to_end(&mut buf).map_err(io_err(&p))?;
        Ok(buf.iter().filter(|b| **b == b'\n').count() as u64)
    }

    /// Lines at or after the cursor.
    fn unacked_in(&self, seg: u64) -> Result<u64, SpoolError> {
        match seg.cmp(&self.cursor.0) {
            std::cmp::Ordering::Less => Ok(0),
            std::cmp::Ordering::Equal => self.lines_from(seg, self.cursor.1),
            std::cmp::Ordering::Greater => self.lines_from(seg, 0),
        }
    }

    fn count_unacked(&self) -> Result<u64, SpoolError> {
        self.segments.iter().map(|s| self.unacked_in(*s)).sum()
    }

    fn bytes(&self) -> u64 {
        self.sizes.iter().sum()
    }

    fn append(&mut self, line: &str, segment_bytes: u64) -> Result<(), SpoolError> {
        let need_new = match (self.segments.last(), self.sizes.last()) {
            (None, _) => true,
            (Some(_), Some(size)) => *size >= segment_bytes,
            _ => true,
        };
        if need_new || self.writer.is_none() {
            let seq = if need_new {
                self.segments.last().map(|s| s + 1).unwrap_or(self.cursor.0)
            } else {
                *self.segments.last().unwrap_or(&0)
            };
            let p = seg_path(&self.dir, seq);
            let f = OpenOptions::new()
                .create(true)
                .append(true)
                .open(&p)
                .map_err(io_err(&p))?;
            if need_new {
                self.segments.push(seq);
                self.sizes.push(0);
            }
            self.writer = Some(f);
        }
        let mut buf = Vec::with_capacity(line.len() + 1);
        buf.extend_from_slice(line.as_bytes());
        buf.push(b'\n');
        let p = seg_path(&self.dir, *self.segments.last().unwrap_or(&0));
        // One write per line: a SIGKILL never leaves half a line behind a whole one.
        self.writer
            .as_mut()
            .map(|w| w.write_all(&buf))
            .transpose()
            .map_err(io_err(&p))?;
        if let Some(s) = self.sizes.last_mut() {
            *s += buf.len() as u64;
        }
        self.depth += 1;
        Ok(())
    }

    /// Deletes the oldest segment; returns the unacknowledged lines it held.
    fn drop_oldest(&mut self) -> Result<u64, SpoolError> {
        if self.segments.is_empty() {
            return Ok(0);
        }
        let s = self.segments[0];
        let lost = self.unacked_in(s)?;
        self.segments.remove(0);
        self.sizes.remove(0);
        let p = seg_path(&self.dir, s);
        fs::remove_file(&p).map_err(io_err(&p))?;
        if self.segments.is_empty() {
            self.writer = None;
        }
        if s >= self.cursor.0 {
            let next = self.segments.first().copied().unwrap_or(s + 1);
            self.set_cursor((next, 0))?;
        }
        self.depth = self.depth.saturating_sub(lost);
        Ok(lost)
    }

    fn set_cursor(&mut self, c: (u64, u64)) -> Result<(), SpoolError> {
        let tmp = self.dir.join("cursor.tmp");
        let path = self.dir.join("cursor");
        fs::write(&tmp, format!("{} {}\n", c.0, c.1)).map_err(io_err(&tmp))?;
        fs::rename(&tmp, &path).map_err(io_err(&path))?;
        self.cursor = c;
        Ok(())
    }

    /// Up to `max` unacknowledged lines from the cursor, within one segment.
    fn peek(&self, max: usize) -> Result<Peeked, SpoolError> {
        let Some(mut i) = self.segments.iter().position(|s| *s == self.cursor.0) else {
            return Ok(None);
        };
        let mut off = self.cursor.1;
        if off >= self.sizes[i] {
            // The cursor's segment is done; the next one (if any) starts at 0.
            if i + 1 >= self.segments.len() {
                return Ok(None);
            }
            i += 1;
            off = 0;
        }
        let seg = self.segments[i];
        let p = seg_path(&self.dir, seg);
        let mut f = File::open(&p).map_err(io_err(&p))?;
        f.seek(SeekFrom::Start(off)).map_err(io_err(&p))?;
        let mut r = BufReader::new(f);
        let mut lines = Vec::new();
        let mut end = off;
        let mut line = String::new();
        while lines.len() < max {
            line.clear();
            let n = r.read_line(&mut line).map_err(io_err(&p))?;
            if n == 0 || !line.ends_with('\n') {
                break; // end, or a line still being written
            }
            end += n as u64;
            lines.push(line.trim_end_matches('\n').to_string());
        }
        Ok((!lines.is_empty()).then_some((lines, (seg, end))))
    }

    fn ack(&mut self, end: (u64, u64), acked: u64) -> Result<(), SpoolError> {
        let stale = end.0 < self.cursor.0 || (end.0 == self.cursor.0 && end.1 < self.cursor.1);
        if stale || !self.segments.contains(&end.0) {
            return Ok(()); // the segment was dropped meanwhile (counted as lost there)
        }
        self.set_cursor(end)?;
        self.depth = self.depth.saturating_sub(acked);
        // Segments before the cursor are wholly acknowledged; so is the cursor's own when
        // it is finished and no longer written to.
        while self.segments.len() > 1 && self.segments[0] < end.0 {
            self.drop_oldest()?;
        }
        if self.segments.len() > 1 && self.segments[0] == end.0 && end.1 >= self.sizes[0] {
            self.drop_oldest()?;
        }
        Ok(())
    }
}

fn seg_path(dir: &Path, seq: u64) -> PathBuf {
    dir.join(format!("{seq:020}.jsonl"))
}

impl Spool {
    /// Opens (or creates) the spool at `dir`, resuming after the last acknowledgement.
    pub fn open(dir: &Path, max_bytes: u64) -> Result<Spool, SpoolError> {
        Ok(Spool {
            alerts: Queue::open(dir.join("alerts"))?,
            audit: Queue::open(dir.join("audit"))?,
            max_bytes,
            // Small enough that dropping one segment frees little, large enough to batch.
            segment_bytes: (max_bytes / 16).clamp(4096, 8 << 20),
        })
    }

    fn queue(&mut self, stream: Stream) -> &mut Queue {
        match stream {
            Stream::Alerts => &mut self.alerts,
            Stream::Audit => &mut self.audit,
        }
    }

    /// Appends a line, first dropping old segments if it would not fit (audit first).
    pub fn append(&mut self, stream: Stream, line: &str) -> Result<Dropped, SpoolError> {
        let len = line.len() as u64 + 1;
        if len > self.max_bytes / 2 {
            return Err(SpoolError::TooLarge {
                len: line.len(),
                max: self.max_bytes,
            });
        }
        let mut dropped = Dropped::default();
        while self.alerts.bytes() + self.audit.bytes() + len > self.max_bytes {
            if !self.audit.segments.is_empty() {
                dropped.audit += self.audit.drop_oldest()?;
            } else if !self.alerts.segments.is_empty() {
                dropped.alerts += self.alerts.drop_oldest()?;
            } else {
                break;
            }
        }
        let seg = self.segment_bytes;
        self.queue(stream).append(line, seg)?;
        Ok(dropped)
    }

    /// The next batch to deliver: alerts before audit.
    pub fn peek(&self, max: usize) -> Result<Option<Batch>, SpoolError> {
        for (stream, q) in [(Stream::Alerts, &self.alerts), (Stream::Audit, &self.audit)] {
            if let Some((lines, end)) = q.peek(max)? {
                return Ok(Some(Batch { stream, lines, end }));
            }
        }
        Ok(None)
    }

    /// The receiver acknowledged `batch`.
    pub fn ack(&mut self, batch: &Batch) -> Result<(), SpoolError> {
        let n = batch.lines.len() as u64;
        self.queue(batch.stream).ack(batch.end, n)
    }

    /// Unacknowledged lines of `stream`.
    pub fn depth(&self, stream: Stream) -> u64 {
        match stream {
            Stream::Alerts => self.alerts.depth,
            Stream::Audit => self.audit.depth,
        }
    }

    /// Bytes on disk, both streams.
    pub fn bytes(&self) -> u64 {
        self.alerts.bytes() + self.audit.bytes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn drain(s: &mut Spool) -> Vec<String> {
        let mut out = Vec::new();
        while let Some(b) = s.peek(7).unwrap() {
            out.extend(b.lines.iter().cloned());
            s.ack(&b).unwrap();
        }
        out
    }

    #[test]
    fn delivers_alerts_first_and_resumes_after_the_last_ack_when_reopened() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = Spool::open(dir.path(), 1 << 20).unwrap();
        for i in 0..5 {
            s.append(Stream::Audit, &format!("{{\"audit\":{i}}}")).unwrap();
        }
        s.append(Stream::Alerts, "{\"alert\":0}").unwrap();
        let b = s.peek(3).unwrap().unwrap();
        assert_eq!(
            (b.stream, b.lines.clone()),
            (Stream::Alerts, vec!["{\"alert\":0}".to_string()])
        );
        s.ack(&b).unwrap();
        let b = s.peek(3).unwrap().unwrap();
        assert_eq!(b.lines.len(), 3);
        s.ack(&b).unwrap();
        // Read but not acknowledged: resent after a restart.
        let unacked = s.peek(3).unwrap().unwrap();
        assert_eq!(unacked.lines, ["{\"audit\":3}", "{\"audit\":4}"]);
        assert_eq!((s.depth(Stream::Audit), s.depth(Stream::Alerts)), (2, 0));
        drop(s);
        let mut s = Spool::open(dir.path(), 1 << 20).unwrap();
        assert_eq!(s.depth(Stream::Audit), 2);
        assert_eq!(drain(&mut s), ["{\"audit\":3}", "{\"audit\":4}"]);
        assert_eq!(s.depth(Stream::Audit), 0);
        s.append(Stream::Audit, "{\"audit\":5}").unwrap();
        drop(s);
        let mut s = Spool::open(dir.path(), 1 << 20).unwrap();
        assert_eq!(drain(&mut s), ["{\"audit\":5}"]);
    }

    #[test]
    fn when_full_the_oldest_audit_goes_first_and_alerts_last_and_the_loss_is_counted() {
        let dir = tempfile::tempdir().unwrap();
        // 64 KiB: 4 KiB segments.
        let mut s = Spool::open(dir.path(), 64 << 10).unwrap();
        let line = |k: &str, i: usize| format!("{{\"{k}\":{i},\"pad\":\"{}\"}}", "x".repeat(200));
        let mut lost = Dropped::default();
        for i in 0..40 {
            let d = s.append(Stream::Alerts, &line("alert", i)).unwrap();
            assert_eq!(d, Dropped::default(), "alerts fit");
        }
        for i in 0..400 {
            let d = s.append(Stream::Audit, &line("audit", i)).unwrap();
            lost.audit += d.audit;
            lost.alerts += d.alerts;
        }
        assert!(s.bytes() <= 64 << 10, "{}", s.bytes());
        assert_eq!(lost.alerts, 0, "audit went first");
        assert!(lost.audit > 0);
        let all = drain(&mut s);
        let alerts = all.iter().filter(|l| l.contains("\"alert\"")).count();
        let audits = all.iter().filter(|l| l.contains("\"audit\"")).count();
        assert_eq!(alerts, 40, "every alert kept");
        assert_eq!(audits as u64 + lost.audit, 400, "every audit line delivered or counted");
        // The newest audit lines are the ones kept.
        assert!(all.last().unwrap().contains("\"audit\":399"));
        // Only alerts left: they go when nothing else can.
        let mut lost_alerts = 0;
        for i in 0..400 {
            lost_alerts += s.append(Stream::Alerts, &line("alert", i)).unwrap().alerts;
        }
        assert!(lost_alerts > 0 && s.bytes() <= 64 << 10);
    }

    #[test]
    fn a_bad_cursor_is_a_clear_error_and_an_oversized_line_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        fs::create_dir_all(dir.path().join("audit")).unwrap();
        fs::write(dir.path().join("audit/cursor"), "garbage").unwrap();
        let err = Spool::open(dir.path(), 1 << 20).err().unwrap().to_string();
        assert!(err.contains("bad cursor") && err.contains("audit/cursor"), "{err}");
        let dir = tempfile::tempdir().unwrap();
        let mut s = Spool::open(dir.path(), 8192).unwrap();
        let err = s.append(Stream::Audit, &"x".repeat(5000)).unwrap_err().to_string();
        assert!(err.contains("does not fit"), "{err}");
    }
}
