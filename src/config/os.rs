//! What the daemon sets up in the operating system at start: the open-file limit, and private
//! permissions for everything it writes (the data dir holds the admin token, account secrets,
//! subscription secrets and PMS credentials).

use std::io;
use std::path::Path;

/// Raise the soft `RLIMIT_NOFILE` to the hard limit: every connection, delivery and store file
/// takes a descriptor, and the usual soft limit (1024) is far below the usual hard limit.
/// Returns the soft limit now in force.
#[cfg(unix)]
pub fn raise_open_files_limit() -> io::Result<u64> {
    let mut limit = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit writes one rlimit struct through a valid pointer.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        return Err(io::Error::last_os_error());
    }
    if limit.rlim_cur < limit.rlim_max {
        let before = limit.rlim_cur;
        let raised = libc::rlimit { rlim_cur: limit.rlim_max, rlim_max: limit.rlim_max };
        // SAFETY: setrlimit reads one rlimit struct through a valid pointer.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } == 0 {
            tracing::info!(before, after = raised.rlim_cur, "raised the open-file limit to the hard limit");
            limit = raised;
        } else {
            // Some systems refuse an unlimited hard limit as the soft one; keep what there is.
            let error = io::Error::last_os_error();
            tracing::warn!(%error, soft = before, hard = limit.rlim_max, "could not raise the open-file limit");
        }
    }
    Ok(rlim_to_u64(limit.rlim_cur))
}

/// `rlim_t` is `u64` on 64-bit Linux but narrower on some 32-bit targets.
#[cfg(unix)]
#[allow(clippy::useless_conversion)]
fn rlim_to_u64(value: libc::rlim_t) -> u64 {
    u64::try_from(value).unwrap_or(u64::MAX)
}

/// Not on this platform: the limit is unknown.
#[cfg(not(unix))]
pub fn raise_open_files_limit() -> io::Result<u64> {
    Err(io::Error::new(io::ErrorKind::Unsupported, "open-file limits are not known on this platform"))
}

/// Make every file and folder the process creates from now on readable by its user only (umask
/// 077: files 0600, folders 0700): the store's files, uploaded plugins, the compiled-plugin cache.
#[cfg(unix)]
pub fn private_umask() {
    // SAFETY: umask only swaps the process's file-mode creation mask.
    unsafe {
        libc::umask(0o077);
    }
}

/// Nothing to do on this platform.
#[cfg(not(unix))]
pub fn private_umask() {}

/// Create `dir` (and its parents) if missing, and make it 0700: also when it already existed with
/// wider permissions, which is logged. Files inside it are then out of other users' reach
/// whatever their own modes (an older version wrote them 0644).
pub fn private_dir(dir: &Path) -> io::Result<()> {
    std::fs::create_dir_all(dir)?;
    restrict(dir)
}

#[cfg(unix)]
fn restrict(dir: &Path) -> io::Result<()> {
    use std::os::unix::fs::PermissionsExt as _;
    let mode = std::fs::metadata(dir)?.permissions().mode() & 0o777;
    if mode != 0o700 {
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))?;
        tracing::warn!(dir = %dir.display(), from = %format!("{mode:o}"), "tightened the data dir's permissions to 700 (it holds secrets)");
    }
    Ok(())
}

#[cfg(not(unix))]
fn restrict(_dir: &Path) -> io::Result<()> {
    Ok(())
}

#[cfg(all(test, unix))]
mod tests {
    use std::os::unix::fs::PermissionsExt as _;

    use super::*;

    fn mode(path: &Path) -> u32 {
        std::fs::metadata(path).unwrap().permissions().mode() & 0o777
    }

    #[test]
    fn private_dir_creates_and_tightens() {
        let root = tempfile::tempdir().unwrap();
        let fresh = root.path().join("a/data");
        private_dir(&fresh).unwrap();
        assert_eq!(mode(&fresh), 0o700);
        let wide = root.path().join("wide");
        std::fs::create_dir(&wide).unwrap();
        std::fs::set_permissions(&wide, std::fs::Permissions::from_mode(0o755)).unwrap();
        private_dir(&wide).unwrap();
        assert_eq!(mode(&wide), 0o700);
    }

    #[test]
    fn the_open_file_limit_is_the_hard_limit_after_raising() {
        let soft = raise_open_files_limit().unwrap();
        let mut limit = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
        // SAFETY: as above.
        assert_eq!(unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) }, 0);
        assert_eq!(rlim_to_u64(limit.rlim_cur), soft);
        assert!(soft >= 1);
    }
}
