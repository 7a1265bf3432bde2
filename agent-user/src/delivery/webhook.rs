//! The HTTPS webhook: batches from the spool POSTed as NDJSON (one OCSF object per line),
//! acknowledged in the spool only on a 2xx answer, retried with exponential backoff and
//! jitter otherwise. TLS is rustls: the web PKI roots, or only a given CA bundle; an optional
//! client certificate (mTLS); an optional bearer token read from a file before every request
//! (so a rotated token is picked up).
use std::{
    path::PathBuf,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use rustls_pki_types::{PrivateKeyDer, pem::PemObject};
use tokio::sync::Notify;
use tracing::{debug, warn};

use super::spool::{Batch, Spool};
use crate::metrics::Metrics;

#[derive(Debug, thiserror::Error)]
pub enum WebhookError {
    #[error("--webhook {0}: only https:// URLs are accepted")]
    NotHttps(String),
    #[error("--webhook-ca {0}")]
    Ca(crate::tls::PemError),
    #[error("--webhook-cert/--webhook-key: {0}")]
    ClientCert(#[from] ClientCertError),
    #[error("building the webhook client: {0}")]
    Tls(#[from] rustls::Error),
    #[error("building the webhook client: {0}")]
    Client(#[from] reqwest::Error),
}

/// Why the client certificate (mTLS) cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ClientCertError {
    #[error(transparent)]
    Cert(#[from] crate::tls::PemError),
    #[error("{}: {source}", path.display())]
    Key {
        path: PathBuf,
        source: rustls_pki_types::pem::Error,
    },
    /// The certificate and key do not go together.
    #[error(transparent)]
    Refused(rustls::Error),
    #[error("a client certificate needs both --webhook-cert and --webhook-key")]
    Half,
}

/// Why one POST of a batch failed (the batch stays in the spool).
#[derive(Debug, thiserror::Error)]
pub enum PostError {
    #[error("bearer token {}: {source}", path.display())]
    Token { path: PathBuf, source: std::io::Error },
    /// The request failed: the whole chain of causes (reqwest's Display hides the cause:
    /// connection refused, certificate...).
    #[error("{}", crate::tls::error_chain(.0))]
    Send(#[from] reqwest::Error),
    #[error("the receiver answered {0}")]
    Status(reqwest::StatusCode),
}

/// Webhook settings.
#[derive(Debug, Clone)]
pub struct WebhookConfig {
    pub url: String,
    pub ca: Option<PathBuf>,
    pub cert: Option<PathBuf>,
    pub key: Option<PathBuf>,
    pub token_file: Option<PathBuf>,
    /// Most lines per POST.
    pub batch: usize,
    pub timeout: Duration,
    /// Backoff bounds between failed attempts.
    pub backoff_min: Duration,
    pub backoff_max: Duration,
}

/// The client for `cfg`.
pub fn client(cfg: &WebhookConfig) -> Result<reqwest::Client, WebhookError> {
    if !cfg.url.starts_with("https://") {
        return Err(WebhookError::NotHttps(cfg.url.clone()));
    }
    let roots = crate::tls::root_store(cfg.ca.as_deref()).map_err(WebhookError::Ca)?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots);
    let config = match (&cfg.cert, &cfg.key) {
        (Some(cert), Some(key)) => {
            let certs = crate::tls::read_certs(cert).map_err(ClientCertError::Cert)?;
            let key = PrivateKeyDer::from_pem_file(key).map_err(|source| ClientCertError::Key {
                path: key.clone(),
                source,
            })?;
            builder
                .with_client_auth_cert(certs, key)
                .map_err(ClientCertError::Refused)?
        }
        (None, None) => builder.with_no_client_auth(),
        _ => return Err(ClientCertError::Half.into()),
    };
    Ok(reqwest::Client::builder()
        .use_preconfigured_tls(config)
        .timeout(cfg.timeout)
        .https_only(true)
        .redirect(reqwest::redirect::Policy::none())
        .build()?)
}

/// Delay before retry number `attempt` (1-based): doubling from `min`, capped at `max`, with
/// "full jitter" (uniform in [d/2, d]) so many daemons do not retry in step.
pub fn backoff(attempt: u32, min: Duration, max: Duration, unit: f64) -> Duration {
    let exp = min.saturating_mul(1u32 << attempt.saturating_sub(1).min(16));
    let d = exp.min(max);
    d.mul_f64(0.5 + 0.5 * unit.clamp(0.0, 1.0))
}

/// One POST of `batch`; Ok once the receiver acknowledged it (2xx).
async fn post(client: &reqwest::Client, cfg: &WebhookConfig, batch: &Batch) -> Result<(), PostError> {
    let mut body = String::with_capacity(batch.lines.iter().map(|l| l.len() + 1).sum());
    for l in &batch.lines {
        body.push_str(l);
        body.push('\n');
    }
    let mut req = client
        .post(&cfg.url)
        .header("content-type", "application/x-ndjson")
        .header("x-tether-stream", batch.stream.as_str())
        .body(body);
    if let Some(path) = &cfg.token_file {
        let token = std::fs::read_to_string(path).map_err(|source| PostError::Token {
            path: path.clone(),
            source,
        })?;
        req = req.bearer_auth(token.trim());
    }
    let resp = req.send().await?;
    let status = resp.status();
    if status.is_success() {
        Ok(())
    } else {
        Err(PostError::Status(status))
    }
}

/// Delivers the spool until the process ends: `wake` is notified when a line was spooled.
pub async fn run(
    client: reqwest::Client,
    cfg: WebhookConfig,
    spool: Arc<Mutex<Spool>>,
    wake: Arc<Notify>,
    metrics: Metrics,
) {
    let mut attempt: u32 = 0;
    loop {
        let batch = match spool.lock().map(|s| s.peek(cfg.batch)) {
            Ok(Ok(b)) => b,
            Ok(Err(e)) => {
                warn!("webhook: reading the spool: {e}");
                None
            }
            Err(_) => return, // poisoned: the daemon is going down
        };
        let Some(batch) = batch else {
            // Nothing to send: wait for a line (or re-check now and then).
            let _ = tokio::time::timeout(Duration::from_secs(1), wake.notified()).await;
            continue;
        };
        let t = Instant::now();
        match post(&client, &cfg, &batch).await {
            Ok(()) => {
                metrics.webhook_sent(batch.lines.len() as u64, t.elapsed());
                attempt = 0;
                if let Ok(mut s) = spool.lock() {
                    if let Err(e) = s.ack(&batch) {
                        warn!("webhook: acknowledging in the spool: {e}");
                    }
                    metrics.spool_depth(|st| s.depth(st), s.bytes());
                }
                debug!(lines = batch.lines.len(), "webhook: batch delivered");
            }
            Err(e) => {
                attempt = attempt.saturating_add(1);
                metrics.webhook_failed();
                let unit = (std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.subsec_nanos())
                    .unwrap_or(0) as f64)
                    / 1e9;
                let wait = backoff(attempt, cfg.backoff_min, cfg.backoff_max, unit);
                warn!(
                    attempt,
                    "webhook {}: {e}; {} line(s) kept in the spool, retrying in {wait:?}",
                    cfg.url,
                    batch.lines.len()
                );
                tokio::time::sleep(wait).await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_the_cap_with_jitter_in_the_upper_half() {
        let (min, max) = (Duration::from_millis(100), Duration::from_secs(5));
        assert_eq!(backoff(1, min, max, 1.0), min);
        assert_eq!(backoff(1, min, max, 0.0), min / 2);
        assert_eq!(backoff(3, min, max, 1.0), Duration::from_millis(400));
        assert_eq!(backoff(30, min, max, 1.0), max);
        assert!(backoff(30, min, max, 0.3) >= max / 2);
    }

    #[test]
    fn settings_errors_are_clear() {
        let cfg = |url: &str| WebhookConfig {
            url: url.into(),
            ca: None,
            cert: None,
            key: None,
            token_file: None,
            batch: 100,
            timeout: Duration::from_secs(5),
            backoff_min: Duration::from_millis(100),
            backoff_max: Duration::from_secs(5),
        };
        let e = client(&cfg("http://siem.example/ingest")).unwrap_err().to_string();
        assert!(e.contains("only https://"), "{e}");
        let mut c = cfg("https://siem.example/ingest");
        c.ca = Some("/nonexistent/ca.pem".into());
        let e = client(&c).unwrap_err().to_string();
        assert!(e.contains("--webhook-ca /nonexistent/ca.pem"), "{e}");
        let mut c = cfg("https://siem.example/ingest");
        c.cert = Some("/nonexistent/cert.pem".into());
        let e = client(&c).unwrap_err().to_string();
        assert!(e.contains("both --webhook-cert and --webhook-key"), "{e}");
    }
}
