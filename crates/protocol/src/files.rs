//! Files holding secrets (keys, passphrases), written one way everywhere.

use std::path::Path;

/// Write a new secret file with owner-only permissions (0600 on Unix),
/// flushed to disk before this returns; an existing file is never
/// overwritten (`create_new`), so a key is never silently replaced.
pub fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    let mut f = opts.open(path)?;
    f.write_all(bytes)?;
    f.sync_all()
}

/// Put `bytes` in place of whatever `path` held, owner-only: written
/// whole to a file beside it, then renamed over it and the directory
/// flushed, so a reader (or a crash) sees the old content or the new,
/// never an empty or half-written file. A temporary file a crash left
/// behind is replaced.
pub fn replace_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(".tmp");
    let tmp = path.with_file_name(name);
    match std::fs::remove_file(&tmp) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
        _ => {}
    }
    write_private(&tmp, bytes)?;
    std::fs::rename(&tmp, path)?;
    match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => sync_dir(dir),
        _ => sync_dir(Path::new(".")),
    }
}

/// Make a directory's entries (a file created, renamed or removed in it)
/// durable.
pub fn sync_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::File::open(dir)?.sync_all()
}

/// Fill `buf` from `r`: fewer bytes only at the end. What reads a file a
/// fixed-size piece at a time (frames, stored chunks) reads with.
pub fn read_full(r: &mut impl std::io::Read, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match r.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(filled)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_replaced_file_holds_the_new_bytes_owner_only_and_no_temporary_is_left() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("office.url");
        std::fs::write(dir.path().join("office.url.tmp"), b"left by a crash").unwrap();
        replace_private(&path, b"old").unwrap();
        replace_private(&path, b"https://127.0.0.1:7880").unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"https://127.0.0.1:7880");
        assert!(!dir.path().join("office.url.tmp").exists());
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
    }
}
