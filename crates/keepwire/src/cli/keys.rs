//! Where the records service's keys are ([`keepwire_records::keys`]): the
//! flags shared by `serve` and `records`, and the provider they name,
//! opened when first needed (a `records list` asks no HSM for a PIN).

use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use anyhow::{bail, Context, Result};
use keepwire_records::keys::{FileKeys, KeyProvider, Pkcs11Config, Pkcs11Keys};

#[derive(clap::Args, Clone, Debug, Default)]
pub(crate) struct KeyArgs {
    /// The key directory (checkpoint and root keys): owner-only, and not
    /// inside the data directory — give it a volume of its own. Default:
    /// beside the data directory, `<data-dir>.keys`.
    #[arg(
        long,
        global = true,
        env = "KEEPWIRE_KEY_DIR",
        conflicts_with = "pkcs11_module"
    )]
    pub(crate) key_dir: Option<PathBuf>,
    /// Keep the keys in an HSM instead: its PKCS#11 module, e.g.
    /// /usr/lib/softhsm/libsofthsm2.so.
    #[arg(
        long,
        global = true,
        env = "KEEPWIRE_PKCS11_MODULE",
        requires = "pkcs11_token"
    )]
    pub(crate) pkcs11_module: Option<PathBuf>,
    /// The HSM token's label.
    #[arg(long, global = true, env = "KEEPWIRE_PKCS11_TOKEN")]
    pub(crate) pkcs11_token: Option<String>,
    /// A file holding the token's user PIN (or set KEEPWIRE_PKCS11_PIN).
    #[arg(long, global = true, env = "KEEPWIRE_PKCS11_PIN_FILE")]
    pub(crate) pkcs11_pin_file: Option<PathBuf>,
}

/// The key provider a command uses, opened once, on first use.
#[derive(Clone)]
pub struct KeySource {
    kind: Kind,
    opened: Arc<OnceLock<Arc<dyn KeyProvider>>>,
}

#[derive(Clone)]
enum Kind {
    Dir(PathBuf),
    Pkcs11(Pkcs11Config),
}

impl std::fmt::Debug for KeySource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.describe())
    }
}

/// The default key directory: beside the data directory, never in it.
pub fn default_key_dir(data_dir: &Path) -> Result<PathBuf> {
    let abs = std::path::absolute(data_dir)
        .with_context(|| format!("cannot resolve {}", data_dir.display()))?;
    let name = abs.file_name().with_context(|| {
        format!(
            "{} has no name to put the key directory beside: give --key-dir",
            data_dir.display()
        )
    })?;
    let mut keys = name.to_os_string();
    keys.push(".keys");
    Ok(abs.with_file_name(keys))
}

/// `path` as the file system resolves it: its longest existing ancestor
/// canonicalized (symbolic links and `..` followed), the rest appended.
fn real(path: &Path) -> PathBuf {
    let abs = std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf());
    let mut rest = Vec::new();
    let mut at = abs.as_path();
    loop {
        if let Ok(c) = at.canonicalize() {
            return rest.iter().rev().fold(c, |p, part| p.join(part));
        }
        match (at.parent(), at.file_name()) {
            (Some(parent), Some(name)) => {
                rest.push(name.to_os_string());
                at = parent;
            }
            _ => return abs,
        }
    }
}

impl KeyArgs {
    /// The provider these flags name, for a deployment in `data_dir`.
    pub fn source(&self, data_dir: &Path) -> Result<KeySource> {
        let kind = match (&self.pkcs11_module, &self.key_dir) {
            (Some(module), _) => {
                let token = self
                    .pkcs11_token
                    .clone()
                    .context("--pkcs11-module needs --pkcs11-token (the token's label)")?;
                let pin = match (&self.pkcs11_pin_file, std::env::var("KEEPWIRE_PKCS11_PIN")) {
                    (Some(file), _) => std::fs::read_to_string(file)
                        .with_context(|| format!("cannot read the PIN file {}", file.display()))?
                        .trim()
                        .to_string(),
                    (None, Ok(pin)) => pin,
                    (None, Err(_)) => {
                        bail!("the HSM needs its PIN: --pkcs11-pin-file, or KEEPWIRE_PKCS11_PIN")
                    }
                };
                Kind::Pkcs11(Pkcs11Config {
                    module: module.clone(),
                    token,
                    pin,
                })
            }
            (None, Some(dir)) => Kind::Dir(dir.clone()),
            (None, None) => Kind::Dir(default_key_dir(data_dir)?),
        };
        let source = KeySource {
            kind,
            opened: Arc::default(),
        };
        source.check_apart(data_dir, "the data directory")?;
        Ok(source)
    }
}

impl KeySource {
    /// The default: the key directory beside `data_dir`.
    pub fn default_for(data_dir: &Path) -> Result<Self> {
        KeyArgs::default().source(data_dir)
    }

    /// Refuse a key directory inside `dir` (the data or the records
    /// directory): keys are kept apart from the data they protect, so a
    /// copy of one never gives the other. Compared as the file system
    /// resolves them (`..` and symbolic links followed).
    pub fn check_apart(&self, dir: &Path, what: &str) -> Result<()> {
        if let Kind::Dir(keys) = &self.kind {
            if real(keys).starts_with(real(dir)) {
                bail!(
                    "the key directory {} is inside {what} {}: keys must be kept apart from the \
                     data they protect (a copy of one must not give the other)",
                    keys.display(),
                    dir.display()
                );
            }
        }
        Ok(())
    }

    /// Whether there are keys to open (without making any): a key
    /// directory that exists, or a token.
    pub fn present(&self) -> bool {
        match &self.kind {
            Kind::Dir(d) => d.is_dir(),
            Kind::Pkcs11(_) => true,
        }
    }

    pub fn describe(&self) -> String {
        match &self.kind {
            Kind::Dir(d) => format!("key directory {}", d.display()),
            Kind::Pkcs11(c) => format!("PKCS#11 token `{}` ({})", c.token, c.module.display()),
        }
    }

    /// The provider, opened (or made, for a key directory) on first call.
    pub fn provider(&self) -> Result<Arc<dyn KeyProvider>> {
        if let Some(p) = self.opened.get() {
            return Ok(p.clone());
        }
        let p: Arc<dyn KeyProvider> = match &self.kind {
            Kind::Dir(d) => Arc::new(FileKeys::open(d)?),
            Kind::Pkcs11(c) => Arc::new(Pkcs11Keys::open(c)?),
        };
        Ok(self.opened.get_or_init(|| p).clone())
    }
}
