//! keepwire: secure messaging for public agencies — disappearing for the
//! people in the conversation, never lost for the record.

mod admin_cmd;
mod backup_cmd;
mod bench;
mod chat_cmd;
mod cli;
mod config;
mod demo;
mod net;
mod records_cmd;
mod serve;
mod session;
mod tui;
mod witness_cmd;

use anyhow::{bail, Context, Result};
use clap::Parser;
use keepwire_protocol::clock::Clock;

use cli::*;

fn passphrase() -> Result<String> {
    std::env::var("KEEPWIRE_PASSPHRASE")
        .context("set KEEPWIRE_PASSPHRASE to the passphrase that protects this device's store")
}

fn main() -> std::process::ExitCode {
    // With --json, a failure is JSON too (on stdout, where the answer
    // would have been), so a script reads one format either way; the
    // message also goes to stderr for people.
    let json = std::env::args().any(|a| a == "--json");
    match run_main() {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            let message = format!("{e:#}");
            if json {
                println!("{}", serde_json::json!({ "error": message }));
            }
            eprintln!("Error: {message}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn run_main() -> Result<()> {
    // Everything keepwire writes is its owner's alone (databases, keys,
    // devices' stores).
    serve::owner::private_by_default();
    config::apply(&<Cli as clap::CommandFactory>::command())?;
    let cli = Cli::parse();
    init_logs(cli.log_format);
    // A FIPS build runs on the validated module or not at all (its power-on
    // self tests ran when AWS-LC initialised).
    #[cfg(feature = "fips")]
    aws_lc_rs::try_fips_mode().map_err(|e| {
        anyhow::anyhow!("built for FIPS 140-3, but AWS-LC is not in FIPS mode: {e}")
    })?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(run(cli))
}

/// Where an operator's tools find the server's health and metrics.
fn admin_line(started: &serve::Started) {
    if let Some(a) = started.admin_addr {
        eprintln!("health and metrics: http://{a}/healthz, /readyz, /metrics");
    }
}

/// Logs to standard error, as `format` says; colour only on a terminal
/// (escape codes in a log file were noise).
fn init_logs(format: LogFormat) {
    use std::io::IsTerminal;
    let filter = tracing_subscriber::EnvFilter::try_from_env("KEEPWIRE_LOG")
        .unwrap_or_else(|_| "warn".into());
    let logs = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => logs.with_ansi(std::io::stderr().is_terminal()).init(),
        LogFormat::Json => logs.json().with_current_span(false).init(),
    }
}

/// Completes at the first SIGTERM or SIGINT (Ctrl-C): the cue to stop in
/// order. Installed before it is awaited, so a signal that comes early
/// is not missed.
fn terminated() -> Result<impl std::future::Future<Output = ()> + Send + 'static> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    Ok(async move {
        tokio::select! {
            _ = term.recv() => tracing::info!("SIGTERM: stopping"),
            _ = int.recv() => tracing::info!("SIGINT: stopping"),
        }
    })
}

/// Who is acting, for the logs of privileged actions: `--actor`, or the
/// operating-system user.
fn actor(explicit: Option<String>) -> String {
    explicit
        .or_else(|| std::env::var("USER").ok())
        .unwrap_or_else(|| "unknown".into())
}

/// A time for people: `2026-12-03 07:30:12 UTC`.
fn when(ms: u64) -> String {
    match time::OffsetDateTime::from_unix_timestamp_nanos(ms as i128 * 1_000_000) {
        Ok(t) => format!(
            "{:04}-{:02}-{:02} {:02}:{:02}:{:02} UTC",
            t.year(),
            t.month() as u8,
            t.day(),
            t.hour(),
            t.minute(),
            t.second()
        ),
        Err(_) => format!("{ms} ms"),
    }
}

/// What a command that changes something says it did: `text` for people,
/// `value` (a JSON object) with `--json`.
fn report(json: bool, value: serde_json::Value, text: impl std::fmt::Display) -> Result<()> {
    if json {
        print_json(&value)
    } else {
        println!("{text}");
        Ok(())
    }
}

fn print_json(v: &impl serde::Serialize) -> Result<()> {
    println!("{}", serde_json::to_string_pretty(v)?);
    Ok(())
}

async fn run(cli: Cli) -> Result<()> {
    let clock = Clock::from_env();
    match cli.command {
        Command::Serve {
            server,
            records_database,
            checkpoints,
            keys,
        } => {
            let started = serve::serve_embedded(
                serve::Storage {
                    data_dir: &server.data_dir,
                    database: server.database.as_deref(),
                    records_database: records_database.as_deref(),
                    keys: keys.source(&server.data_dir)?,
                },
                server.listen,
                server.tls().as_ref(),
                server.admin()?.as_ref(),
                server.limits(),
                checkpoints.publishing()?,
                terminated()?,
            )
            .await?;
            eprintln!(
                "keepwire serving on {} (data in {})",
                started.url,
                server.data_dir.display()
            );
            admin_line(&started);
            started.handle.await??;
            eprintln!("keepwire stopped");
            Ok(())
        }
        Command::Server { server } => {
            let started = serve::start_server(
                serve::ServerAt {
                    data_dir: &server.data_dir,
                    database: server.database.as_deref(),
                },
                server.listen,
                server.tls().as_ref(),
                server.admin()?.as_ref(),
                server.limits(),
                None,
                terminated()?,
            )
            .await?;
            if let Some(code) =
                serve::records_code(&server.data_dir, server.database.as_deref(), &clock)?
            {
                eprintln!("records service enrolment code: {code}");
            }
            eprintln!("keepwire server on {}", started.url);
            admin_line(&started);
            started.handle.await??;
            eprintln!("keepwire server stopped");
            Ok(())
        }
        Command::Records {
            data_dir,
            database,
            keys,
            signin,
            command,
        } => {
            let keys = keys.source(&data_dir)?;
            records_cmd::records(command, &data_dir, database.as_deref(), keys, signin).await
        }
        Command::Admin {
            data_dir,
            database,
            command:
                AdminCommand::Backup {
                    to,
                    admin_url,
                    admin_token_file,
                    json,
                },
        } => {
            if database.is_some() {
                anyhow::bail!("on PostgreSQL, back up the server's and the archive's databases with PostgreSQL's own tools (docs/operations.md, \"Backup and restore\")");
            }
            let token = match admin_token_file {
                Some(p) => Some(
                    std::fs::read_to_string(&p)
                        .with_context(|| format!("cannot read {}", p.display()))?
                        .trim()
                        .to_string(),
                ),
                None => None,
            };
            let admin = backup_cmd::Admin {
                url: admin_url,
                token,
            };
            let m = backup_cmd::backup(&data_dir, &to, &admin, clock.now_ms()).await?;
            report(
                json,
                serde_json::to_value(&m)?,
                format!(
                    "backed up {} ({}) to {}: {} files, {} conversations, {} archive leaves; keys not included",
                    data_dir.display(),
                    if m.online { "online, its log held while copying" } else { "stopped" },
                    to.display(),
                    m.files.len(),
                    m.log_heads.len(),
                    m.archive_leaves
                ),
            )
        }
        Command::Admin {
            command: AdminCommand::Restore { from, json },
            data_dir,
            ..
        } => {
            let m = backup_cmd::restore(&from, &data_dir)?;
            report(
                json,
                serde_json::to_value(&m)?,
                format!(
                    "restored {} files into {} from the backup of {} ms; start it with the same key directory or HSM (the keys were not in the backup)",
                    m.files.len(),
                    data_dir.display(),
                    m.created_ms
                ),
            )
        }
        Command::Admin {
            data_dir,
            database,
            command,
        } => admin_cmd::admin(&data_dir, database.as_deref(), command, &clock),
        Command::Chat {
            device,
            command: None,
        } => {
            device.apply()?;
            let opened = keepwire_client::Device::open(&device.device_dir, &passphrase()?)?;
            tui::run(device.server, opened).await
        }
        Command::Chat {
            device,
            command: Some(command),
        } => chat_cmd::chat(command, device).await,
        Command::Witness { command } => witness_cmd::witness(command).await,
        Command::Bench {
            command: Some(BenchCommand::Report(args)),
            ..
        } => bench::report::run(args),
        Command::Bench {
            command: None,
            args,
        } => bench::run(args).await,
        Command::Demo {
            data_dir,
            database,
            records_database,
            timer,
            json,
        } => {
            let tmp;
            let dir = match data_dir {
                Some(d) => d,
                None => {
                    // The data directory inside the temporary one, so
                    // that its key directory (beside it) goes with it.
                    tmp = tempfile::tempdir()?;
                    tmp.path().join("data")
                }
            };
            let report = demo::run(
                &dir,
                database.as_deref(),
                records_database.as_deref(),
                timer,
            )
            .await?;
            if json {
                print_json(&report)?;
            } else {
                demo::print(&report);
            }
            if !report.ok() {
                bail!("the demo's checks failed");
            }
            Ok(())
        }
    }
}
