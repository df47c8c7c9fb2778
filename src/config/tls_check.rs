//! The TLS half of `cosygate -t` (and of startup): every `listen[].tls` must name a PEM
//! certificate chain and a PEM private key that belong together. Pingora loads them only when
//! the listener is built, after the configuration check, and panics there on a bad file; here
//! they are read the way Pingora's rustls listener reads them and handed to the same rustls
//! builder (`with_single_cert`, which compares the key's public key with the certificate's), so a
//! pair that passes here is one Pingora accepts.

use rustls::crypto::ring::default_provider;
use rustls::pki_types::pem::{self, PemObject};
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::version::{TLS12, TLS13};
use rustls::ServerConfig;
use std::path::Path;

const FIX_PAIR: &str = "make a new pair with scripts/make-cert.sh, or point cert and key at the files your certificate authority issued";

/// Checks the certificate chain at `cert` and the private key at `key`; the error is one
/// sentence naming the file and what to do, without the listener (the caller adds it).
pub fn check_pair(cert: &Path, key: &Path) -> Result<(), String> {
    let chain = read_chain(cert)?;
    let private_key = read_key(key)?;
    let builder = ServerConfig::builder_with_provider(default_provider().into())
        .with_protocol_versions(&[&TLS12, &TLS13])
        .map_err(|e| format!("rustls refuses TLS 1.2 and 1.3 with the ring provider: {e}"))?
        .with_no_client_auth();
    builder.with_single_cert(chain, private_key).map_err(|e| {
        let (c, k) = (cert.display(), key.display());
        match e {
            rustls::Error::InconsistentKeys(rustls::InconsistentKeys::KeyMismatch) => {
                format!("the key {k} does not match the certificate {c}; {FIX_PAIR}")
            }
            rustls::Error::InvalidCertificate(_) | rustls::Error::InconsistentKeys(_) => {
                format!("the certificate {c} cannot be used with the key {k} ({e}); {FIX_PAIR}")
            }
            other => format!("rustls refuses the certificate {c} with the key {k}: {other}; {FIX_PAIR}"),
        }
    })?;
    Ok(())
}

fn read_file(path: &Path, what: &str) -> Result<Vec<u8>, String> {
    std::fs::read(path).map_err(|e| {
        format!(
            "cannot read the TLS {what} {}: {e}; check the path (relative paths are relative to the directory cosygate starts in) and that the cosygate user may read it",
            path.display()
        )
    })
}

fn read_chain(path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let bytes = read_file(path, "certificate")?;
    let chain = CertificateDer::pem_slice_iter(&bytes)
        .collect::<Result<Vec<_>, pem::Error>>()
        .map_err(|e| {
            format!(
                "the certificate file {} is not valid PEM ({e}); {FIX_PAIR}",
                path.display()
            )
        })?;
    if chain.is_empty() {
        return Err(format!(
            "the certificate file {} holds no PEM certificate (-----BEGIN CERTIFICATE-----); {FIX_PAIR}",
            path.display()
        ));
    }
    Ok(chain)
}

fn read_key(path: &Path) -> Result<PrivateKeyDer<'static>, String> {
    let bytes = read_file(path, "key")?;
    PrivateKeyDer::from_pem_slice(&bytes).map_err(|e| match e {
        pem::Error::NoItemsFound => format!(
            "the key file {} holds no PEM private key (-----BEGIN PRIVATE KEY-----, RSA PRIVATE KEY or EC PRIVATE KEY); {FIX_PAIR}",
            path.display()
        ),
        e => format!(
            "the key file {} is not a valid PEM private key ({e}); {FIX_PAIR}",
            path.display()
        ),
    })
}
