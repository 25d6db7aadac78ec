//! `keepwire witness …`: the witness service.

use std::path::PathBuf;

use clap::Subcommand;

#[derive(Subcommand)]
pub(crate) enum WitnessCommand {
    /// Make a witness: its key in DIR (owner-only); prints its verifier
    /// key, which logs, devices and auditors are given.
    Init {
        /// The witness's directory (its key, state and lock).
        #[arg(long, env = "KEEPWIRE_WITNESS_DIR", default_value = "keepwire-witness")]
        dir: PathBuf,
        /// Its name: a schema-less URL, e.g. `witness.oig.example/1`.
        #[arg(long)]
        name: String,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Print the witness's verifier key.
    Key {
        /// The witness's directory.
        #[arg(long, env = "KEEPWIRE_WITNESS_DIR", default_value = "keepwire-witness")]
        dir: PathBuf,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Serve `POST /add-checkpoint` for the logs given.
    Serve {
        /// The witness's directory.
        #[arg(long, env = "KEEPWIRE_WITNESS_DIR", default_value = "keepwire-witness")]
        dir: PathBuf,
        /// A log to follow: its checkpoint verifier key (the archive's
        /// `records/checkpoint.pub`); repeatable.
        #[arg(long, required = true)]
        log: Vec<String>,
        /// Where to listen (loopback only: put TLS in front of it).
        #[arg(
            long,
            env = "KEEPWIRE_WITNESS_LISTEN",
            default_value = "127.0.0.1:7881"
        )]
        listen: std::net::SocketAddr,
    },
}
