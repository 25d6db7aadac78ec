//! The command line: every subcommand and flag (each flag with a
//! `KEEPWIRE_*` variable), as clap types. What each command does is in
//! one module per command group (`admin_cmd`, `chat_cmd`,
//! `records_cmd`, `serve`, `demo`, `bench`).

use std::path::PathBuf;

use clap::{Parser, Subcommand};

use crate::bench;

/// `keepwire --version`: the version, and which cryptographic module it
/// runs on.
#[cfg(feature = "fips")]
const VERSION: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (crypto: AWS-LC FIPS 140-3 module, aws-lc-fips-sys; MLS, TLS, receipts and checkpoints)"
);
#[cfg(not(feature = "fips"))]
const VERSION: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (crypto: AWS-LC, not a FIPS build; `--features fips` for its FIPS 140-3 module)"
);

#[derive(Parser)]
#[command(
    name = "keepwire",
    version = VERSION,
    about = "End-to-end encrypted agency messaging with a complete records archive"
)]
pub(crate) struct Cli {
    /// TOML file with settings: keys are the `KEEPWIRE_*` variable names
    /// without the prefix, in lower case (e.g. `listen = "0.0.0.0:443"`).
    /// Flags and environment variables take precedence over it.
    #[arg(long, global = true, env = "KEEPWIRE_CONFIG")]
    pub(crate) config: Option<PathBuf>,
    /// How log lines are written (to standard error): `text` for people
    /// (coloured only on a terminal), `json` (one object per line) for a
    /// log collector. What is logged is set by `KEEPWIRE_LOG` (e.g.
    /// `info`, `keepwire_server=debug`; default `warn`).
    #[arg(long, global = true, env = "KEEPWIRE_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub(crate) log_format: LogFormat,
    #[command(subcommand)]
    pub(crate) command: Command,
}

#[derive(Clone, Copy, Debug, clap::ValueEnum)]
pub(crate) enum LogFormat {
    Text,
    Json,
}

#[derive(Subcommand)]
pub(crate) enum BenchCommand {
    /// Medians of several runs (keepwire's and the peers' JSON lines): a
    /// markdown table and a throughput-against-latency plot.
    Report(bench::report::ReportArgs),
}

#[derive(Subcommand)]
pub(crate) enum Command {
    /// Run the delivery server and the records service together.
    Serve {
        #[command(flatten)]
        server: ServerArgs,
        /// Keep the archive in this PostgreSQL database (a database of its
        /// own, not the server's) instead of `records/archive.db`.
        #[arg(long, env = "KEEPWIRE_RECORDS_DATABASE")]
        records_database: Option<String>,
        #[command(flatten)]
        checkpoints: CheckpointArgs,
        #[command(flatten)]
        keys: KeyArgs,
    },
    /// Run only the delivery server (the records service then runs apart:
    /// `keepwire records serve`).
    Server {
        #[command(flatten)]
        server: ServerArgs,
    },
    /// Administration: users, devices, policy (on the server's data directory).
    Admin {
        /// The server's data directory; before or after the subcommand.
        #[arg(
            long,
            global = true,
            env = "KEEPWIRE_DATA_DIR",
            default_value = "keepwire-data"
        )]
        data_dir: PathBuf,
        /// The server's PostgreSQL database, if its store is there (as
        /// `serve --database`); before or after the subcommand.
        #[arg(long, global = true, env = "KEEPWIRE_DATABASE")]
        database: Option<String>,
        #[command(subcommand)]
        command: AdminCommand,
    },
    /// The chat client: without a subcommand, the interactive terminal
    /// client (conversations, history with each message's remaining time,
    /// compose, the records notice); with one, a scriptable action.
    Chat {
        #[command(flatten)]
        device: DeviceArgs,
        #[command(subcommand)]
        command: Option<ChatCommand>,
    },
    /// The records service and the archive.
    Records {
        /// The deployment's data directory (the archive is in its
        /// `records/`); before or after the subcommand.
        #[arg(
            long,
            global = true,
            env = "KEEPWIRE_DATA_DIR",
            default_value = "keepwire-data"
        )]
        data_dir: PathBuf,
        /// Keep the archive in this PostgreSQL database (a database of its
        /// own, not the server's) instead of `records/archive.db`; the
        /// records directory still holds the records device and the keys.
        #[arg(long, global = true, env = "KEEPWIRE_RECORDS_DATABASE")]
        database: Option<String>,
        #[command(flatten)]
        keys: KeyArgs,
        #[command(flatten)]
        signin: SignIn,
        #[command(subcommand)]
        command: RecordsCommand,
    },
    /// A witness that cosigns the archive's checkpoints (C2SP
    /// tlog-witness), for an independent party to run.
    Witness {
        #[command(subcommand)]
        command: WitnessCommand,
    },
    /// Load generator: measure the server, the records service and the
    /// clients under load (`bench report` turns results into tables and a plot).
    #[command(args_conflicts_with_subcommands = true)]
    Bench {
        #[command(subcommand)]
        command: Option<BenchCommand>,
        #[command(flatten)]
        args: bench::BenchArgs,
    },
    /// Run the whole path end to end in a temporary directory and check it.
    Demo {
        /// Keep everything in this directory for inspection.
        #[arg(long)]
        data_dir: Option<PathBuf>,
        /// Run the server's store in this (empty) PostgreSQL database
        /// instead of SQLite.
        #[arg(long, env = "KEEPWIRE_DATABASE")]
        database: Option<String>,
        /// Keep the archive in this (empty) PostgreSQL database, another
        /// than the server's, instead of SQLite.
        #[arg(long, env = "KEEPWIRE_RECORDS_DATABASE")]
        records_database: Option<String>,
        /// Disappearing timer used in the demo, in seconds.
        #[arg(long, default_value_t = 2)]
        timer: u64,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
}

mod admin;
mod chat;
mod keys;
mod lifecycle;
mod records;
mod server;
mod witness;
pub(crate) use admin::*;
pub(crate) use chat::*;
pub(crate) use keys::KeyArgs;
pub use keys::KeySource;
pub(crate) use lifecycle::*;
pub(crate) use records::*;
pub(crate) use server::ServerArgs;
pub(crate) use witness::*;

#[cfg(test)]
mod tests;
