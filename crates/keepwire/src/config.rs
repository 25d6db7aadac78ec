//! The optional TOML configuration file.
//!
//! Every setting the file may hold is a flag with a `KEEPWIRE_*`
//! environment variable; the file's keys are those names without the
//! prefix, in lower case (`listen`, `data_dir`, `tls_cert`, …). The file
//! fills in environment variables that are not already set, before the
//! command line is parsed, so the precedence is: flag, then environment,
//! then file, then built-in default — one mechanism, no second parser.

use std::collections::BTreeSet;
use std::path::Path;

use anyhow::{bail, Context, Result};

/// Settings that never come from a file.
const NOT_FROM_FILE: &[&str] = &["KEEPWIRE_CONFIG"];

/// The environment variable names the command line knows.
fn known(cmd: &clap::Command, out: &mut BTreeSet<String>) {
    for a in cmd.get_arguments() {
        if let Some(env) = a.get_env().and_then(|e| e.to_str()) {
            if !NOT_FROM_FILE.contains(&env) {
                out.insert(env.to_string());
            }
        }
    }
    for sub in cmd.get_subcommands() {
        known(sub, out);
    }
}

/// The config file named by `--config FILE` / `--config=FILE` or
/// `KEEPWIRE_CONFIG`, if any.
pub fn path_from_args(args: &[String]) -> Option<String> {
    args.iter()
        .position(|a| a == "--config")
        .and_then(|i| args.get(i + 1).cloned())
        .or_else(|| {
            args.iter()
                .find_map(|a| a.strip_prefix("--config=").map(String::from))
        })
        .or_else(|| std::env::var("KEEPWIRE_CONFIG").ok())
}

/// The environment assignments a config file asks for (not yet applied).
pub fn settings(path: &Path, cmd: &clap::Command) -> Result<Vec<(String, String)>> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read config file {}", path.display()))?;
    let table: toml::Table = toml::from_str(&text)
        .with_context(|| format!("config file {} is not valid TOML", path.display()))?;
    let mut names = BTreeSet::new();
    known(cmd, &mut names);
    let mut out = Vec::new();
    for (key, value) in table {
        let env = format!("KEEPWIRE_{}", key.to_uppercase().replace('-', "_"));
        if !names.contains(&env) {
            let keys: Vec<String> = names
                .iter()
                .filter_map(|n| n.strip_prefix("KEEPWIRE_"))
                .map(|n| n.to_lowercase())
                .collect();
            bail!(
                "config file {}: unknown setting `{key}` (known: {})",
                path.display(),
                keys.join(", ")
            );
        }
        let value = match value {
            toml::Value::String(s) => s,
            toml::Value::Integer(i) => i.to_string(),
            toml::Value::Boolean(b) => b.to_string(),
            other => bail!(
                "config file {}: `{key}` must be a string, integer or boolean, not {}",
                path.display(),
                other.type_str()
            ),
        };
        out.push((env, value));
    }
    Ok(out)
}

/// Apply the config file, if one is named, to the environment. Call before
/// any thread starts (it sets environment variables).
pub fn apply(cmd: &clap::Command) -> Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let Some(path) = path_from_args(&args) else {
        return Ok(());
    };
    for (env, value) in settings(Path::new(&path), cmd)? {
        if std::env::var_os(&env).is_none() {
            std::env::set_var(env, value);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cmd() -> clap::Command {
        clap::Command::new("t").subcommand(
            clap::Command::new("serve")
                .arg(
                    clap::Arg::new("listen")
                        .long("listen")
                        .env("KEEPWIRE_LISTEN"),
                )
                .arg(
                    clap::Arg::new("max")
                        .long("max-capture-backlog")
                        .env("KEEPWIRE_MAX_CAPTURE_BACKLOG"),
                ),
        )
    }

    #[test]
    fn maps_keys_to_environment_names_and_refuses_unknown_ones() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("k.toml");
        std::fs::write(&p, "listen = \"0.0.0.0:443\"\nmax_capture_backlog = 500\n").unwrap();
        let s = settings(&p, &cmd()).unwrap();
        assert!(s.contains(&("KEEPWIRE_LISTEN".into(), "0.0.0.0:443".into())));
        assert!(s.contains(&("KEEPWIRE_MAX_CAPTURE_BACKLOG".into(), "500".into())));

        std::fs::write(&p, "lisen = \"x\"\n").unwrap();
        let e = settings(&p, &cmd()).unwrap_err().to_string();
        assert!(
            e.contains("unknown setting `lisen`") && e.contains("listen"),
            "{e}"
        );

        std::fs::write(&p, "listen = [1]\n").unwrap();
        let e = settings(&p, &cmd()).unwrap_err().to_string();
        assert!(e.contains("must be a string, integer or boolean"), "{e}");
    }

    #[test]
    fn finds_the_file_in_either_flag_form() {
        let a = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(
            path_from_args(&a(&["k", "--config", "x.toml", "serve"])).as_deref(),
            Some("x.toml")
        );
        assert_eq!(
            path_from_args(&a(&["k", "serve", "--config=y.toml"])).as_deref(),
            Some("y.toml")
        );
    }
}
