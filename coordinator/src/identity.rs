//! The coordinator's identity on disk: a self-signed certificate whose public
//! key is pinned by every token, and the admin credential file weavectl reads.
//! Made on first start, reused after; secret files are mode 0600.
use std::{
    fs,
    io::Write,
    os::unix::fs::{DirBuilderExt, OpenOptionsExt},
    path::{Path, PathBuf},
};

use base64::{Engine as _, engine::general_purpose::URL_SAFE_NO_PAD};
use rand::RngCore;
use rcgen::{CertificateParams, DnType, KeyPair, PublicKeyData};
use weave_proto::{client::SERVER_NAME, token::Pin};

#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("{path}: {reason}")]
    Invalid { path: PathBuf, reason: String },
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> IdentityError + '_ {
    move |source| IdentityError::Io { path: path.to_path_buf(), source }
}

pub struct TlsIdentity {
    pub cert_pem: String,
    pub key_pem: String,
    pub pin: Pin,
}

/// 256 random bits, base64url: the form of every secret weave hands out.
pub fn new_secret() -> String {
    let mut b = [0u8; 32];
    rand::rng().fill_bytes(&mut b);
    URL_SAFE_NO_PAD.encode(b)
}

/// 64 random bits as 16 hex digits: public ids (join tokens).
pub fn new_id() -> String {
    let mut b = [0u8; 8];
    rand::rng().fill_bytes(&mut b);
    hex::encode(b)
}

pub fn create_private_dir(dir: &Path) -> Result<(), IdentityError> {
    if fs::metadata(dir).is_ok_and(|m| !m.is_dir()) {
        return Err(IdentityError::Invalid { path: dir.to_path_buf(), reason: "a file, not a directory".into() });
    }
    fs::DirBuilder::new().recursive(true).mode(0o700).create(dir).map_err(io(dir))
}

/// Writes `contents` to `path` with mode 0600, atomically (temp file + rename).
/// Each write has a temp file of its own: two writers sharing one renamed
/// each other's (or found it gone) (found by a review, 2026-12-05).
pub fn write_secret_file(path: &Path, contents: &str) -> Result<(), IdentityError> {
    let tmp = path.with_extension(format!("tmp.{}.{:016x}", std::process::id(), rand::random::<u64>()));
    let mut f =
        fs::OpenOptions::new().write(true).create(true).truncate(true).mode(0o600).open(&tmp).map_err(io(&tmp))?;
    let written = f.write_all(contents.as_bytes()).and_then(|_| f.sync_all()).map_err(io(&tmp));
    let renamed = written.and_then(|()| fs::rename(&tmp, path).map_err(io(path)));
    if renamed.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    renamed
}

/// Loads `tls/coordinator.{crt,key}` under `dir`, creating them on first start.
/// Returns the identity and whether it was created now.
pub fn load_or_create_tls(dir: &Path) -> Result<(TlsIdentity, bool), IdentityError> {
    let tls = dir.join("tls");
    let (cert_path, key_path) = (tls.join("coordinator.crt"), tls_key_path(dir));
    if key_path.exists() {
        if let Some(warning) = weave_proto::private_dir::secret_file(&key_path) {
            tracing::warn!("{warning}");
        }
        let key_pem = fs::read_to_string(&key_path).map_err(io(&key_path))?;
        let cert_pem = fs::read_to_string(&cert_path).map_err(io(&cert_path))?;
        let key = KeyPair::from_pem(&key_pem).map_err(|e| IdentityError::Invalid {
            path: key_path.clone(),
            reason: format!("not a usable key or certificate: {e}"),
        })?;
        let pin = Pin::of_spki(&key.subject_public_key_info());
        // Said of the file (an empty or damaged certificate failed later as
        // "transport error: peer sent no certificates"; found by a review,
        // 2026-12-07).
        let invalid = |reason: &str| IdentityError::Invalid { path: cert_path.clone(), reason: reason.into() };
        match weave_proto::client::pin_of_cert_pem(&cert_pem) {
            None => return Err(invalid("no certificate that parses (restore it from a backup of the data dir)")),
            Some(p) if p != pin => {
                return Err(invalid("its public key is not coordinator.key's (restore the pair from one backup)"));
            }
            Some(_) => {}
        }
        return Ok((TlsIdentity { cert_pem, key_pem, pin }, false));
    }
    create_private_dir(&tls)?;
    let invalid = |e: rcgen::Error| IdentityError::Invalid {
        path: cert_path.clone(),
        reason: format!("not a usable key or certificate: {e}"),
    };
    let key = KeyPair::generate().map_err(invalid)?;
    let mut params = CertificateParams::new(vec![SERVER_NAME.to_string()]).map_err(invalid)?;
    params.distinguished_name.push(DnType::CommonName, "weave coordinator");
    let cert = params.self_signed(&key).map_err(invalid)?;
    let identity = TlsIdentity {
        cert_pem: cert.pem(),
        key_pem: key.serialize_pem(),
        pin: Pin::of_spki(&key.subject_public_key_info()),
    };
    write_secret_file(&key_path, &identity.key_pem)?;
    fs::write(&cert_path, &identity.cert_pem).map_err(io(&cert_path))?;
    Ok((identity, true))
}

fn tls_key_path(dir: &Path) -> PathBuf {
    dir.join("tls").join("coordinator.key")
}

/// Whether `dir` holds a TLS key ([`load_or_create_tls`] makes one if not).
pub fn tls_exists(dir: &Path) -> bool {
    tls_key_path(dir).exists()
}

/// Where `coordinator serve` writes the admin credential, and where weavectl
/// looks for it on the coordinator host.
pub fn admin_credential_path(data_dir: &Path) -> PathBuf {
    data_dir.join("admin.credential")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A certificate that is empty, damaged or another key's is refused at
    /// start, naming the file.
    #[test]
    fn a_certificate_that_does_not_parse_or_match_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let (_, created) = load_or_create_tls(dir.path()).unwrap();
        assert!(created);
        load_or_create_tls(dir.path()).unwrap();
        let cert = dir.path().join("tls/coordinator.crt");
        let good = fs::read_to_string(&cert).unwrap();
        for (bad, says) in [("", "no certificate that parses"), ("garbage", "no certificate that parses")] {
            fs::write(&cert, bad).unwrap();
            let e = load_or_create_tls(dir.path()).err().expect("refused").to_string();
            assert!(e.contains("coordinator.crt") && e.contains(says), "{e}");
        }
        // Another identity's certificate beside this key.
        let other = tempfile::tempdir().unwrap();
        load_or_create_tls(other.path()).unwrap();
        fs::copy(other.path().join("tls/coordinator.crt"), &cert).unwrap();
        let e = load_or_create_tls(dir.path()).err().expect("refused").to_string();
        assert!(e.contains("coordinator.crt") && e.contains("is not coordinator.key's"), "{e}");
        fs::write(&cert, good).unwrap();
        load_or_create_tls(dir.path()).unwrap();
    }
}
