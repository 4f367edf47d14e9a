//! What the daemon sets up in the operating system at start: the open-file limit.

use std::io;

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

#[cfg(all(test, unix))]
mod tests {
    use super::*;

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
