//! The cache directory (`FIO_TLS_ACME_DIR`): created 0700, every file
//! written 0600 through a temporary file renamed over the target, so a
//! reader (a worker's file watch) sees the old file or the new one, never
//! a half-written one.
//!
//! Layout: `account.key` (the ACME account's P-256 key, PEM),
//! `certs/<name>.key` and `certs/<name>.crt` (a name's P-256 key and the
//! chain the CA issued, PEM), `challenges/<name>.pem` (challenge key and
//! certificate while the name's authorization is pending), `lock` (flock
//! held by the one process that talks to the CA).

use std::fs::{self, DirBuilder, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// Creates `dir` and its `certs/` and `challenges/` (mode 0700) if
/// missing. An existing directory keeps its mode.
pub fn prepare(dir: &Path) -> Result<(), String> {
    for d in [dir.to_path_buf(), dir.join("certs"), dir.join("challenges")] {
        if !d.is_dir() {
            DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(&d)
                .map_err(|e| format!("cannot create directory \"{}\": {e}", d.display()))?;
            // recursive creation applies the umask; say 0700 explicitly
            let _ = fs::set_permissions(&d, fs::Permissions::from_mode(0o700));
        }
    }
    Ok(())
}

pub fn account_key(dir: &Path) -> PathBuf {
    dir.join("account.key")
}

/// The key and certificate files of `name` (watched by every process).
pub fn cert_files(dir: &Path, name: &str) -> (PathBuf, PathBuf) {
    (dir.join("certs").join(format!("{name}.key")), dir.join("certs").join(format!("{name}.crt")))
}

pub fn challenge_file(dir: &Path, name: &str) -> PathBuf {
    dir.join("challenges").join(format!("{name}.pem"))
}

pub fn lock_file(dir: &Path) -> PathBuf {
    dir.join("lock")
}

/// Writes `bytes` to `path` (mode 0600) through `<path>.tmp.<pid>` and a
/// rename.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(format!(".tmp.{}", std::process::id()));
    let tmp = PathBuf::from(tmp);
    let result = (|| {
        let mut f = OpenOptions::new().write(true).create(true).truncate(true).mode(0o600).open(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        fs::rename(&tmp, path)
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    #[test]
    fn directories_are_0700_and_files_0600() {
        let tmp = crate::tls::testutil::TempDir::new("acme_cache");
        let dir = tmp.0.join("a/b");
        prepare(&dir).unwrap();
        for d in [&dir, &dir.join("certs"), &dir.join("challenges")] {
            assert_eq!(fs::metadata(d).unwrap().mode() & 0o777, 0o700, "{}", d.display());
        }
        let f = account_key(&dir);
        write_atomic(&f, b"one").unwrap();
        write_atomic(&f, b"two").unwrap();
        assert_eq!(fs::read(&f).unwrap(), b"two");
        assert_eq!(fs::metadata(&f).unwrap().mode() & 0o777, 0o600);
        // no temporary file left behind
        assert_eq!(fs::read_dir(&dir).unwrap().count(), 3);
    }
}
