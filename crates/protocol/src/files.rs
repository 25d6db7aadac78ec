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
