//! PEM certificates and root stores for Tether's HTTPS clients (JWKS URLs, the webhook).
use std::path::Path;

use rustls_pki_types::{CertificateDer, pem::PemObject};

/// A PEM file or CA bundle that cannot be used; it names the file.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PemError {
    /// The file cannot be read, or a certificate in it cannot be parsed or added (`why`).
    #[error("{path}: {why}")]
    File { path: String, why: String },
    #[error("{0} has no certificates")]
    NoCertificates(String),
}

/// The certificates of a PEM file; errors name the file.
pub fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, PemError> {
    let file = |why: String| PemError::File {
        path: path.display().to_string(),
        why,
    };
    let pem = std::fs::read(path).map_err(|e| file(e.to_string()))?;
    let certs: Vec<_> = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<_, _>>()
        .map_err(|e| file(e.to_string()))?;
    if certs.is_empty() {
        return Err(PemError::NoCertificates(path.display().to_string()));
    }
    Ok(certs)
}

/// The roots to trust: only the certificates of `ca_bundle` when one is given, else the web
/// PKI roots. Errors name the bundle.
pub fn root_store(ca_bundle: Option<&Path>) -> Result<rustls::RootCertStore, PemError> {
    let mut roots = rustls::RootCertStore::empty();
    match ca_bundle {
        Some(path) => {
            for c in read_certs(path)? {
                roots.add(c).map_err(|e| PemError::File {
                    path: path.display().to_string(),
                    why: e.to_string(),
                })?;
            }
        }
        None => roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned()),
    }
    Ok(roots)
}

/// An error with its sources: reqwest and rustls keep the telling part (a refused certificate,
/// a reset connection) in them.
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut src = e.source();
    while let Some(x) = src {
        s.push_str(": ");
        s.push_str(&x.to_string());
        src = x.source();
    }
    s
}

/// GETs `url` over `client`, reading at most `max` bytes of the body; the body, or why not
/// (the connection, a status other than 2xx, or a body over `max`).
pub async fn get_capped(client: &reqwest::Client, url: &str, max: usize) -> Result<Vec<u8>, String> {
    let mut resp = client.get(url).send().await.map_err(|e| error_chain(&e))?;
    if !resp.status().is_success() {
        return Err(format!("HTTP {}", resp.status()));
    }
    let mut body = Vec::new();
    while let Some(chunk) = resp.chunk().await.map_err(|e| error_chain(&e))? {
        body.extend_from_slice(&chunk);
        if body.len() > max {
            return Err(format!("more than {max} bytes"));
        }
    }
    Ok(body)
}
