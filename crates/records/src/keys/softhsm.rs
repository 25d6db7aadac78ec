//! A SoftHSM2 token in a directory of its own, for the tests and the
//! benchmark of the PKCS#11 provider: a real PKCS#11 module (Debian's
//! `softhsm2`; `.ci/run` installs it), not a mock.
//!
//! SoftHSM reads its configuration (`SOFTHSM2_CONF`) once per process,
//! when the module is initialised: a process that uses this sets the
//! variable for itself ([`Token::env`]) before any PKCS#11 call, or runs
//! the binary with it.

use std::path::{Path, PathBuf};

use super::Pkcs11Config;
use crate::RecordsError;

/// Where Debian and others put the module; `KEEPWIRE_SOFTHSM_MODULE`
/// names another.
pub fn module() -> Result<PathBuf, RecordsError> {
    if let Ok(p) = std::env::var("KEEPWIRE_SOFTHSM_MODULE") {
        return Ok(PathBuf::from(p));
    }
    [
        "/usr/lib/softhsm/libsofthsm2.so",
        "/usr/lib/x86_64-linux-gnu/softhsm/libsofthsm2.so",
        "/usr/lib/aarch64-linux-gnu/softhsm/libsofthsm2.so",
        "/usr/local/lib/softhsm/libsofthsm2.so",
    ]
    .iter()
    .map(PathBuf::from)
    .find(|p| p.exists())
    .ok_or_else(|| {
        RecordsError::Keys(
            "SoftHSM2 is not installed (Debian: apt-get install softhsm2; bash .ci/run does it)"
                .into(),
        )
    })
}

/// A SoftHSM2 configuration with its own token directory, and the tokens
/// made in it.
pub struct Token {
    conf: PathBuf,
    module: PathBuf,
}

impl Token {
    /// A configuration in `dir` (its tokens in `dir/tokens`).
    pub fn setup(dir: &Path) -> Result<Self, RecordsError> {
        let tokens = dir.join("tokens");
        std::fs::create_dir_all(&tokens)?;
        let conf = dir.join("softhsm2.conf");
        std::fs::write(
            &conf,
            format!(
                "directories.tokendir = {}\nobjectstore.backend = file\nlog.level = ERROR\n",
                tokens.display()
            ),
        )?;
        Ok(Self {
            conf,
            module: module()?,
        })
    }

    /// The environment a process needs to see these tokens.
    pub fn env(&self) -> (&'static str, &Path) {
        ("SOFTHSM2_CONF", &self.conf)
    }

    /// Initialise a token labelled `label` with user PIN `pin`.
    pub fn init(&self, label: &str, pin: &str) -> Result<Pkcs11Config, RecordsError> {
        let out = std::process::Command::new("softhsm2-util")
            .env("SOFTHSM2_CONF", &self.conf)
            .args(["--init-token", "--free", "--label", label])
            .args(["--pin", pin, "--so-pin", "keepwire-so"])
            .output()
            .map_err(|e| RecordsError::Keys(format!("cannot run softhsm2-util: {e}")))?;
        if !out.status.success() {
            return Err(RecordsError::Keys(format!(
                "softhsm2-util --init-token: {}",
                String::from_utf8_lossy(&out.stderr)
            )));
        }
        Ok(Pkcs11Config {
            module: self.module.clone(),
            token: label.to_string(),
            pin: pin.to_string(),
        })
    }
}
