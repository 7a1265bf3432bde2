//! Cluster-wide revocation: lists of task ids (`jti`) and transactions (`txn`) read from a file
//! or an `https://` URL and read again every `every` seconds, so that revoking a task once (in
//! the list every node reads) reaches every node within one interval. A task the list names is
//! revoked for good (taking it off the list does not bring it back); a credential the list
//! names is refused at binding. A list that cannot be read keeps the last one read (and is
//! reported); none is assumed empty until one is read.
//!
//! The document: `{"jti": ["task-42", ...], "txn": ["97053963-...", ...]}` (other members are
//! ignored, so an issuer's own revocation document can carry more).
use std::{collections::BTreeSet, path::PathBuf, time::Duration};

use serde::Deserialize;

/// A list larger than this is refused.
pub const MAX_LIST_BYTES: usize = 4 << 20;
/// The shortest interval a rule file may ask for.
pub const MIN_EVERY: Duration = Duration::from_secs(1);
pub const DEFAULT_EVERY: Duration = Duration::from_secs(60);
/// The longest interval a rule file may ask for.
pub const MAX_EVERY: Duration = Duration::from_secs(24 * 3600);
/// How long one read of a list may take.
pub const READ_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    File(PathBuf),
    Url(String),
}

impl Source {
    pub fn parse(s: &str) -> Result<Source, ListError> {
        if s.starts_with("https://") {
            Ok(Source::Url(s.into()))
        } else if s.contains("://") {
            Err(ListError::NotHttps(s.into()))
        } else if s.starts_with('/') {
            Ok(Source::File(s.into()))
        } else {
            Err(ListError::Relative(s.into()))
        }
    }

    pub fn describe(&self) -> String {
        match self {
            Source::File(p) => p.display().to_string(),
            Source::Url(u) => u.clone(),
        }
    }
}

/// One revocation list and how often it is read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListConfig {
    pub source: Source,
    pub every: Duration,
}

/// What the lists name.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, serde::Serialize)]
pub struct Revocations {
    #[serde(default)]
    pub jti: BTreeSet<String>,
    #[serde(default)]
    pub txn: BTreeSet<String>,
}

impl Revocations {
    /// Does the list name task `id` or transaction `txn`?
    pub fn names(&self, id: &str, txn: Option<&str>) -> bool {
        self.jti.contains(id) || txn.is_some_and(|t| self.txn.contains(t))
    }

    pub fn extend(&mut self, other: &Revocations) {
        self.jti.extend(other.jti.iter().cloned());
        self.txn.extend(other.txn.iter().cloned());
    }

    pub fn len(&self) -> usize {
        self.jti.len() + self.txn.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ListError {
    #[error("revocation list {0:?}: URLs must be https://")]
    NotHttps(String),
    #[error("revocation list {0:?}: a file path must be absolute")]
    Relative(String),
    #[error("{list}: the list is {size} bytes; at most {MAX_LIST_BYTES}")]
    TooLarge { list: String, size: usize },
    #[error("{list}: not a revocation list ({why}); expected {{\"jti\": [...], \"txn\": [...]}}")]
    NotAList { list: String, why: String },
    #[error("{list}: {why}")]
    Unreadable { list: String, why: String },
}

/// Parses a list read from `source`.
pub fn parse(source: &str, bytes: &[u8]) -> Result<Revocations, ListError> {
    if bytes.len() > MAX_LIST_BYTES {
        return Err(ListError::TooLarge {
            list: source.into(),
            size: bytes.len(),
        });
    }
    let not = |why: String| ListError::NotAList {
        list: source.into(),
        why,
    };
    // An object only: serde would read `["task-1"]` as a struct's fields in order, and a
    // list meant to revoke would revoke nothing.
    match serde_json::from_slice(bytes).map_err(|e| not(e.to_string()))? {
        v @ serde_json::Value::Object(_) => serde_json::from_value(v).map_err(|e| not(e.to_string())),
        _ => Err(not("not a JSON object".into())),
    }
}

/// Reads the list once, within [`READ_TIMEOUT`].
pub async fn load(cfg: &ListConfig, client: &reqwest::Client) -> Result<Revocations, ListError> {
    match tokio::time::timeout(READ_TIMEOUT, read(cfg, client)).await {
        Ok(r) => r,
        Err(_) => Err(ListError::Unreadable {
            list: cfg.source.describe(),
            why: format!("not read within {} s", READ_TIMEOUT.as_secs()),
        }),
    }
}

async fn read(cfg: &ListConfig, client: &reqwest::Client) -> Result<Revocations, ListError> {
    let name = cfg.source.describe();
    let unreadable = |why: String| ListError::Unreadable {
        list: name.clone(),
        why,
    };
    let bytes = match &cfg.source {
        Source::File(p) => {
            use tokio::io::AsyncReadExt as _;
            // A regular file only (a FIFO would hold the read), and no more than the cap.
            let f = tokio::fs::File::open(p).await.map_err(|e| unreadable(e.to_string()))?;
            let meta = f.metadata().await.map_err(|e| unreadable(e.to_string()))?;
            if !meta.is_file() {
                return Err(unreadable("not a regular file".into()));
            }
            let mut body = Vec::new();
            f.take(MAX_LIST_BYTES as u64 + 1)
                .read_to_end(&mut body)
                .await
                .map_err(|e| unreadable(e.to_string()))?;
            body
        }
        Source::Url(u) => crate::tls::get_capped(client, u, MAX_LIST_BYTES)
            .await
            .map_err(unreadable)?,
    };
    parse(&name, &bytes)
}

/// Reads list `index` now and every `every` after, for ever, sending each outcome.
pub async fn watch(
    index: usize,
    cfg: ListConfig,
    client: reqwest::Client,
    tx: tokio::sync::mpsc::UnboundedSender<(usize, Result<Revocations, ListError>)>,
) {
    let mut every = tokio::time::interval(cfg.every);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        every.tick().await;
        if tx.send((index, load(&cfg, &client).await)).is_err() {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lists_are_read_strictly_where_it_matters() {
        let r = parse("l", br#"{"jti": ["a", "b"], "txn": ["t"], "issued_at": 5}"#).unwrap();
        assert!(r.names("a", None) && r.names("x", Some("t")) && !r.names("x", Some("u")));
        assert_eq!(r.len(), 3);
        assert!(
            parse("l", br#"{"jti": "a"}"#)
                .unwrap_err()
                .to_string()
                .contains("not a revocation list")
        );
        assert!(parse("l", b"[]").is_err());
        assert!(parse("l", br#"[["task-1"]]"#).is_err(), "never read as fields in order");
        assert_eq!(parse("l", b"{}").unwrap(), Revocations::default());
        assert!(matches!(
            parse("l", &vec![b' '; MAX_LIST_BYTES + 1]),
            Err(ListError::TooLarge { .. })
        ));
        assert!(matches!(Source::parse("http://x/l"), Err(ListError::NotHttps(_))));
        assert!(matches!(Source::parse("revoked.json"), Err(ListError::Relative(_))));
        assert_eq!(
            Source::parse("/etc/tether/revoked.json").unwrap(),
            Source::File("/etc/tether/revoked.json".into())
        );
    }
}
