//! One owner per data directory and per database.
//!
//! Two servers on one data directory both ran, and a message receipted
//! through the second reached no device and no archive while `verify`
//! passed (issue 12). So each running component claims what it keeps: an
//! exclusive `flock` on a lock file in its directory (the server's data
//! directory, the records service's records directory), and on
//! PostgreSQL a session advisory lock on its schema
//! ([`keepwire_schema::pg::Owner`]), since two data directories may name
//! one database. A second instance refuses to start, naming the first.
//! The kernel (or PostgreSQL) lets go when the holder dies, however it
//! dies, so a crash never leaves a stale claim behind.
//!
//! The same module keeps the data private: the process creates
//! everything owner-only (`umask 077`, [`private_by_default`]) and
//! tightens what an earlier release left readable ([`tighten`]).

use std::io::{Read, Seek, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use anyhow::{bail, Context, Result};

/// A claim on a directory (and on its PostgreSQL database, if it has
/// one); released when dropped, or when the process ends.
pub struct Claim {
    _file: std::fs::File,
    _pg: Option<keepwire_schema::pg::Owner>,
}

/// Who holds a claim, for the message the next one gets:
/// `keepwire serve, pid 4242 on host-1, since 2026-12-03 13:00:00 UTC`.
pub fn holder(what: &str) -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_else(|_| "this host".into());
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0);
    format!(
        "{what}, pid {} on {host}, since {}",
        std::process::id(),
        crate::when(now)
    )
}

/// Claim `dir` (made, owner-only, if need be) through its lock file
/// `lock_name`, and the PostgreSQL database at `database` if given, for
/// `what` (e.g. "keepwire serve"). Refused, naming the holder, if another
/// process has either; `doing` says what could not be done.
pub fn claim(
    dir: &Path,
    lock_name: &str,
    database: Option<(&str, &str)>,
    what: &str,
    doing: &str,
) -> Result<Claim> {
    let file = claim_dir(dir, lock_name, what, doing)?;
    let pg = match database {
        Some((url, kind)) => Some(
            keepwire_schema::pg::Owner::claim(url, kind, &holder(what))
                .with_context(|| doing.to_string())?,
        ),
        None => None,
    };
    Ok(Claim {
        _file: file,
        _pg: pg,
    })
}

/// The directory half of [`claim`]: an exclusive lock on `dir/lock_name`,
/// which then says who holds it.
pub fn claim_dir(dir: &Path, lock_name: &str, what: &str, doing: &str) -> Result<std::fs::File> {
    make_private_dir(dir)?;
    let path = dir.join(lock_name);
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .read(true)
        .write(true)
        .open(&path)
        .with_context(|| format!("{doing}: cannot open {}", path.display()))?;
    match f.try_lock() {
        Ok(()) => {
            // Best effort: the lock is what counts, the text only names it.
            let _ = f.set_len(0);
            let _ = f.rewind();
            let _ = writeln!(f, "{}", holder(what));
            Ok(f)
        }
        Err(std::fs::TryLockError::WouldBlock) => {
            let mut who = String::new();
            let _ = f.read_to_string(&mut who);
            let who = who.trim();
            bail!(
                "{doing}: {} is in use by another keepwire process ({}); stop it first, \
                 or give this one a directory of its own",
                dir.display(),
                if who.is_empty() {
                    "it did not say who it is"
                } else {
                    who
                }
            )
        }
        Err(std::fs::TryLockError::Error(e)) => {
            Err(e).with_context(|| format!("{doing}: cannot lock {}", path.display()))
        }
    }
}

/// From here on, everything this process creates is readable by its
/// owner only: databases, their journals, keys, lock files, devices'
/// stores (an unprivileged user read an enrolment code out of a 0644
/// `server.db` and enrolled a device with it).
pub fn private_by_default() {
    // SAFETY: umask only sets the process's file-creation mask; it cannot
    // fail and touches no memory.
    unsafe {
        libc::umask(0o077);
    }
}

/// Make `dir` (and its parents) if need be, owner-only.
pub fn make_private_dir(dir: &Path) -> Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .with_context(|| format!("cannot create {}", dir.display()))
}

/// Take group and world access away from `dir` and the files directly in
/// it, as an earlier release left them (0755 and 0644); says what it
/// changed.
pub fn tighten(dir: &Path) -> Result<()> {
    let mut changed = Vec::new();
    let mut fix = |path: &Path, mode: u32| -> Result<()> {
        let meta = std::fs::symlink_metadata(path)?;
        if meta.file_type().is_symlink() {
            return Ok(());
        }
        let was = meta.permissions().mode() & 0o777;
        if was & 0o077 != 0 {
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(was & mode))
                .with_context(|| format!("cannot restrict {}", path.display()))?;
            changed.push(format!("{} ({:o})", path.display(), was));
        }
        Ok(())
    };
    fix(dir, 0o700)?;
    for entry in std::fs::read_dir(dir).with_context(|| format!("cannot read {}", dir.display()))? {
        let entry = entry?;
        let path = entry.path();
        if entry.file_type()?.is_dir() {
            fix(&path, 0o700)?;
        } else {
            fix(&path, 0o600)?;
        }
    }
    if !changed.is_empty() {
        tracing::warn!(
            paths = %changed.join(", "),
            "made readable by their owner only (they were open to the group or everyone)"
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_claim_on_a_directory_is_refused_naming_the_first() {
        let dir = tempfile::tempdir().unwrap();
        let first = claim_dir(dir.path(), "x.lock", "keepwire serve", "cannot start").unwrap();
        let err = claim_dir(dir.path(), "x.lock", "keepwire serve", "cannot start")
            .err()
            .unwrap()
            .to_string();
        assert!(err.starts_with("cannot start: "), "{err}");
        assert!(
            err.contains(&format!("keepwire serve, pid {}", std::process::id())),
            "names the holder: {err}"
        );
        drop(first);
        claim_dir(dir.path(), "x.lock", "keepwire serve", "cannot start")
            .expect("free again once the first lets go");
    }

    #[test]
    fn what_an_earlier_release_left_open_is_made_owner_only() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().join("data");
        std::fs::create_dir(&d).unwrap();
        std::fs::set_permissions(&d, std::fs::Permissions::from_mode(0o755)).unwrap();
        let f = d.join("server.db");
        std::fs::write(&f, b"x").unwrap();
        std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o644)).unwrap();
        tighten(&d).unwrap();
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!((mode(&d), mode(&f)), (0o700, 0o600));
    }
}
