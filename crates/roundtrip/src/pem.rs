//! Reading the PEM files a user names (certificates, keys, trusted roots): only regular
//! files, and only up to a bound, so that `/dev/zero` or a named pipe named by mistake is
//! an error, not a process that fills its memory or waits forever for a writer.
//!
//! Each error is what is wrong with the file, for the caller to put after its name:
//! "`sslrootcert=ca.pem` {error}".

use std::io::Read;
use std::path::Path;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

/// The largest PEM file read: a bundle of every public root is about 250 KiB.
pub(crate) const MAX_PEM_BYTES: u64 = 4 << 20;

/// The bytes of the file at `path`.
pub(crate) fn read(path: &Path) -> Result<Vec<u8>, String> {
    let metadata = std::fs::metadata(path).map_err(|e| format!("cannot be read ({e})"))?;
    if !metadata.is_file() {
        return Err("is not a regular file: name a PEM file".to_owned());
    }
    if metadata.len() > MAX_PEM_BYTES {
        return Err(format!(
            "is {} bytes, more than a PEM file of certificates or a key holds (at most \
             {MAX_PEM_BYTES})",
            metadata.len()
        ));
    }
    let mut bytes = Vec::new();
    std::fs::File::open(path)
        .and_then(|file| file.take(MAX_PEM_BYTES + 1).read_to_end(&mut bytes))
        .map_err(|e| format!("cannot be read ({e})"))?;
    if bytes.len() as u64 > MAX_PEM_BYTES {
        return Err(format!("grew past {MAX_PEM_BYTES} bytes as it was read"));
    }
    Ok(bytes)
}

/// The certificates of the PEM file at `path`, at least one.
pub(crate) fn certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let bytes = read(path)?;
    let chain = CertificateDer::pem_slice_iter(&bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("cannot be read as PEM certificates: {e}"))?;
    if chain.is_empty() {
        return Err("holds no PEM certificate".to_owned());
    }
    Ok(chain)
}

/// The private key in the PEM file at `path` (PKCS#8, PKCS#1 or SEC1).
pub(crate) fn private_key(path: &Path) -> Result<PrivateKeyDer<'static>, String> {
    let bytes = read(path)?;
    PrivateKeyDer::from_pem_slice(&bytes)
        .map_err(|e| format!("holds no usable PEM private key: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_small_regular_files_are_read() {
        let dir = tempfile::tempdir().expect("tempdir");
        let err = read(dir.path()).expect_err("a directory");
        assert!(err.contains("is not a regular file"), "{err}");
        let err = certificates(Path::new("/dev/zero")).expect_err("a device");
        assert!(err.contains("is not a regular file"), "{err}");
        let err = private_key(&dir.path().join("missing.pem")).expect_err("missing");
        assert!(err.contains("cannot be read"), "{err}");
        let big = dir.path().join("big.pem");
        std::fs::File::create(&big)
            .and_then(|f| f.set_len(MAX_PEM_BYTES + 1))
            .expect("a sparse file");
        let err = read(&big).expect_err("too big");
        assert!(err.contains("more than a PEM file"), "{err}");
        let pem = dir.path().join("ca.pem");
        std::fs::write(&pem, "no certificate here\n").expect("write");
        assert_eq!(read(&pem).expect("a small file").len(), 20);
        let err = certificates(&pem).expect_err("no certificate");
        assert!(err.contains("holds no PEM certificate"), "{err}");
        let err = private_key(&pem).expect_err("no key");
        assert!(err.contains("holds no usable PEM private key"), "{err}");
    }

    #[cfg(unix)]
    #[test]
    fn a_named_pipe_is_refused_without_waiting_for_a_writer() {
        let dir = tempfile::tempdir().expect("tempdir");
        let fifo = dir.path().join("fifo.pem");
        let made = std::process::Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .expect("mkfifo");
        assert!(made.success());
        let err = read(&fifo).expect_err("a pipe");
        assert!(err.contains("is not a regular file"), "{err}");
    }
}
