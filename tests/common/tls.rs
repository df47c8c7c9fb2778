//! Test certificates, made at test time by `scripts/make-cert.sh` (openssl). A missing openssl
//! fails the test with the package to install; nothing is skipped.

use std::path::{Path, PathBuf};
use std::process::Command;

/// A self-signed pair (CN localhost, SAN localhost and 127.0.0.1) in `dir`: (cert.pem, key.pem).
pub fn make_pair(dir: &Path) -> (PathBuf, PathBuf) {
    let out = Command::new("scripts/make-cert.sh")
        .arg(dir)
        .output()
        .expect("run scripts/make-cert.sh");
    assert!(
        out.status.success(),
        "scripts/make-cert.sh failed (it needs openssl: apt-get install openssl, or run scripts/test.sh): {}",
        String::from_utf8_lossy(&out.stderr)
    );
    (dir.join("cert.pem"), dir.join("key.pem"))
}
