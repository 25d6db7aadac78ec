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

#[derive(Subcommand)]
pub(crate) enum AdminCommand {
    /// Manage users.
    User {
        #[command(subcommand)]
        command: UserCommand,
    },
    /// Manage devices.
    Device {
        #[command(subcommand)]
        command: DeviceCommand,
    },
    /// Conversations suspended after a capture failure.
    Conversation {
        #[command(subcommand)]
        command: ConversationCommand,
    },
    /// Replace the server's receipt-signing key (the old one stays listed at
    /// /v1/receipt-keys); takes effect at the server's next start.
    RotateReceiptKey {
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Relay and capture status: users, devices, conversations, entries
    /// still on the relay, and how far the records service lags.
    Status {
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Back up the server's store, the records member's store and the
    /// archive, cut at one point, with a manifest of hashes (keys are not
    /// included). Online, the running server's log is held still through
    /// its admin listener while they are copied.
    Backup {
        /// A new (or empty) directory for the backup.
        #[arg(long)]
        to: PathBuf,
        /// The running server's admin listener (`serve --admin-listen`).
        #[arg(
            long,
            env = "KEEPWIRE_ADMIN_URL",
            default_value = "http://127.0.0.1:7879"
        )]
        admin_url: String,
        /// The admin listener's bearer token, if it requires one.
        #[arg(long, env = "KEEPWIRE_ADMIN_TOKEN_FILE")]
        admin_token_file: Option<PathBuf>,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Restore a backup into --data-dir, which must hold no deployment;
    /// every file is checked against the backup's manifest first.
    Restore {
        /// The backup's directory.
        #[arg(long)]
        from: PathBuf,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Set messaging policy.
    Policy {
        /// Longest disappearing timer any conversation may use, in seconds.
        #[arg(long)]
        max_timer_secs: Option<u64>,
        /// Whether guests may be added to conversations.
        #[arg(long)]
        guests_allowed: Option<bool>,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand)]
pub(crate) enum UserCommand {
    /// Create a user and print a one-time enrolment code (valid 24 h).
    Add {
        /// The user name (what people type to add them).
        name: String,
        /// The name people see ("Alice Ng").
        #[arg(long)]
        display: String,
        /// Capstone category: which records schedule applies to what the user sends.
        #[arg(long, value_parser = ["capstone", "staff", "support", "guest"])]
        category: String,
        /// Print JSON (the user, the code, how long it is valid) instead of the code alone.
        #[arg(long)]
        json: bool,
    },
    /// A new enrolment code for an existing user (e.g. a second device).
    Code {
        /// The user to make a new enrolment code for.
        name: String,
        /// Print JSON (the user, the code, how long it is valid) instead of the code alone.
        #[arg(long)]
        json: bool,
    },
    /// List users and whether they acknowledged the records notice.
    List {
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand)]
pub(crate) enum DeviceCommand {
    /// List devices.
    List {
        /// Only this user's devices.
        #[arg(long)]
        user: Option<String>,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Revoke a device: its connections are refused from its next request
    /// on, and the records service removes it from every conversation.
    Revoke {
        /// The device to revoke (it is removed from every conversation).
        device_id: String,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Let a device blocked after a capture failure connect and send again
    /// (logged with who and why; revoke it instead if it is compromised).
    Unblock {
        /// The blocked device to let send again.
        device_id: String,
        /// Why, for the audit log.
        #[arg(long)]
        reason: String,
        /// Who decides (default: the operating-system user).
        #[arg(long, env = "KEEPWIRE_ACTOR")]
        actor: Option<String>,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand)]
pub(crate) enum ConversationCommand {
    /// List suspended conversations, what was withheld in them and why.
    Suspended {
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Accept messages into a suspended conversation again, after dealing
    /// with the device that sent what was withheld (logged with who and
    /// why). Refused when a commit was withheld: that conversation cannot
    /// be repaired, and its members start a new one.
    Resume {
        /// The suspended conversation.
        conv: String,
        /// Why, for the audit log.
        #[arg(long)]
        reason: String,
        /// Who decides (default: the operating-system user).
        #[arg(long, env = "KEEPWIRE_ACTOR")]
        actor: Option<String>,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
}

/// The device a `chat` command acts as. Defined once, on `chat`, and
/// accepted before or after the subcommand (`chat --device-dir D read` and
/// `chat read --device-dir D` are the same).
#[derive(clap::Args, Clone)]
pub(crate) struct DeviceArgs {
    /// The delivery server's URL.
    #[arg(
        long,
        global = true,
        env = "KEEPWIRE_SERVER",
        default_value = "http://127.0.0.1:7878"
    )]
    pub(crate) server: String,
    /// This device's directory (its keys, state and messages).
    #[arg(
        long,
        global = true,
        env = "KEEPWIRE_DEVICE_DIR",
        default_value = "keepwire-device"
    )]
    pub(crate) device_dir: PathBuf,
    /// Also trust this CA certificate (PEM) for the server's TLS.
    #[arg(long, global = true, env = "KEEPWIRE_CA_CERT")]
    pub(crate) ca_cert: Option<PathBuf>,
    /// A witness whose cosignature the archive's checkpoints need before
    /// this device trusts one: its verifier key (repeatable).
    #[arg(
        long = "witness",
        global = true,
        env = "KEEPWIRE_WITNESSES",
        value_delimiter = ','
    )]
    pub(crate) witnesses: Vec<String>,
    /// How many of those witnesses must have cosigned (default: all).
    #[arg(long, global = true, env = "KEEPWIRE_WITNESS_QUORUM")]
    pub(crate) witness_quorum: Option<usize>,
    /// Print JSON instead of text.
    #[arg(long, global = true)]
    pub(crate) json: bool,
}

impl DeviceArgs {
    /// What holds for the whole run: the extra CA, the witness quorum.
    pub(crate) fn apply(&self) -> anyhow::Result<()> {
        crate::net::trust_ca(self.ca_cert.clone());
        crate::session::require_witnesses(witness_quorum(&self.witnesses, self.witness_quorum)?);
        Ok(())
    }
}

/// A quorum of witnesses from their verifier keys (`KEY`, or `KEY@URL` as
/// the records service is given them) and how many must have cosigned
/// (all, by default); none without witnesses.
pub(crate) fn witness_quorum(
    witnesses: &[String],
    need: Option<usize>,
) -> anyhow::Result<Option<keepwire_client::cosignature::Quorum>> {
    if witnesses.is_empty() {
        if need.is_some() {
            anyhow::bail!("--witness-quorum needs the witnesses' keys (--witness)");
        }
        return Ok(None);
    }
    let keys: Vec<String> = witnesses
        .iter()
        .map(|w| {
            let end = ["@http://", "@https://"]
                .iter()
                .filter_map(|p| w.find(p))
                .min()
                .unwrap_or(w.len());
            w[..end].to_string()
        })
        .collect();
    Ok(Some(keepwire_client::cosignature::Quorum::new(
        &keys, need,
    )?))
}

#[derive(Subcommand)]
pub(crate) enum ChatCommand {
    /// Enrol this device with a one-time code.
    Enroll {
        /// The one-time enrolment code an administrator gave you.
        #[arg(long)]
        code: String,
    },
    /// Show the records notice; `--accept` acknowledges it.
    Notice {
        /// Acknowledge the notice (needed before sending).
        #[arg(long)]
        accept: bool,
    },
    /// List conversations.
    Conversations,
    /// Create a conversation with these users (the records member is added).
    Create {
        /// The users to start the conversation with.
        users: Vec<String>,
    },
    /// Add users to a conversation.
    Add {
        /// The conversation (its id, or a unique prefix of it).
        conv: String,
        /// The users to add.
        users: Vec<String>,
    },
    /// Remove users from a conversation.
    Remove {
        /// The conversation (its id, or a unique prefix of it).
        conv: String,
        /// The users to remove.
        users: Vec<String>,
    },
    /// The archive checkpoint this device has witnessed: every newer one
    /// must extend it (checked on each connection; a rewrite is an error).
    Checkpoint,
    /// Leave a conversation (the records member commits the removal).
    Leave {
        /// The conversation (its id, or a unique prefix of it).
        conv: String,
    },
    /// Send a message.
    Send {
        /// The conversation (its id, or a unique prefix of it).
        conv: String,
        /// The message.
        text: String,
        /// Disappear this many seconds after sending.
        #[arg(long)]
        timer: Option<u64>,
        /// Disappear as soon as read.
        #[arg(long)]
        burn_on_read: bool,
        /// Also wait (up to this many seconds) until the records service
        /// has archived it, which is when the others receive it.
        #[arg(long, value_name = "SECS")]
        wait_captured: Option<u64>,
    },
    /// Fetch and show messages (each with its remaining time).
    Read {
        /// Only this conversation (its id, or a unique prefix of it).
        conv: Option<String>,
        /// Keep running and show messages as they arrive (one JSON object
        /// per line with --json); expired messages are deleted meanwhile.
        #[arg(long)]
        follow: bool,
    },
    /// Show or set a conversation's disappearing timer (seconds after
    /// sending; 0 turns it off). Setting it tells every member.
    Timer {
        /// The conversation (its id, or a unique prefix of it).
        conv: String,
        /// The new timer in seconds (0 turns it off); without it, show the timer.
        secs: Option<u64>,
    },
}

/// How the records service publishes its log's checkpoints.
#[derive(clap::Args, Clone, Debug)]
pub(crate) struct CheckpointArgs {
    /// Seconds between signed checkpoints of the archive's log.
    #[arg(long, env = "KEEPWIRE_CHECKPOINT_SECS", default_value_t = 60)]
    pub(crate) checkpoint_secs: u64,
    /// A witness each checkpoint is sent to for its cosignature: its
    /// verifier key (`keepwire witness init` prints it), `@`, its URL
    /// (repeatable; comma-separated in the variable).
    #[arg(long = "witness", env = "KEEPWIRE_WITNESSES", value_delimiter = ',')]
    pub(crate) witnesses: Vec<String>,
}

impl CheckpointArgs {
    pub(crate) fn publishing(&self) -> anyhow::Result<crate::serve::witnessing::Publishing> {
        Ok(crate::serve::witnessing::Publishing {
            every: std::time::Duration::from_secs(self.checkpoint_secs.max(1)),
            witnesses: self
                .witnesses
                .iter()
                .map(|w| w.parse())
                .collect::<Result<_, _>>()?,
        })
    }
}

#[derive(Subcommand)]
pub(crate) enum RecordsCommand {
    /// Run only the records service, connecting to a server.
    Serve {
        /// The delivery server's URL.
        #[arg(long, env = "KEEPWIRE_SERVER", default_value = "http://127.0.0.1:7878")]
        server: String,
        /// The records service's directory (its device and archive; its
        /// keys are in --key-dir, by default beside --data-dir); by default
        /// `records/` in --data-dir.
        #[arg(long, env = "KEEPWIRE_RECORDS_DIR")]
        records_dir: Option<PathBuf>,
        /// Enrolment code for the records device (first start only).
        #[arg(long)]
        code: Option<String>,
        /// Also trust this CA certificate (PEM) for the server's TLS.
        #[arg(long, env = "KEEPWIRE_CA_CERT")]
        ca_cert: Option<PathBuf>,
        #[command(flatten)]
        checkpoints: CheckpointArgs,
    },
    /// List captured records.
    List {
        /// Include commits and proposals, not only messages.
        #[arg(long)]
        all: bool,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Show one record, decrypted (a privileged action: it is logged).
    Show {
        /// The record's id (from `records list`).
        id: i64,
        /// Who is looking (default: $USER), for the log of privileged actions.
        #[arg(long, env = "KEEPWIRE_ACTOR")]
        actor: Option<String>,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Print the latest signed checkpoint of the archive's transparency log
    /// (C2SP tlog-checkpoint, Ed25519 signed note), signing a new one first
    /// if the log has grown since.
    Checkpoint {
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// A record's RFC 9162 inclusion proof against the current checkpoint (JSON).
    Proof {
        /// The record whose inclusion to prove.
        record_id: i64,
        /// Accepted for scripts' sake: the output is JSON either way.
        #[arg(long)]
        json: bool,
    },
    /// An RFC 9162 consistency proof between two tree sizes (JSON).
    Consistency {
        /// The size of the earlier tree.
        old_size: u64,
        /// The size of the later tree.
        new_size: u64,
        /// Accepted for scripts' sake: the output is JSON either way.
        #[arg(long)]
        json: bool,
    },
    /// Destroy a record's content (crypto-shredding its data key) under a
    /// named authority; its metadata, leaf and a tombstone stay verifiable.
    /// (Holds and approvals arrive with the disposition workflow.)
    Destroy {
        /// The record whose content to destroy.
        id: i64,
        /// The disposition authority, e.g. "GRS 5.2 item 020" or a court order.
        #[arg(long)]
        authority: String,
        /// Who is doing it (default: the operating-system user).
        #[arg(long, env = "KEEPWIRE_ACTOR")]
        actor: Option<String>,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Rotate the archive key: every record's data key is re-wrapped under
    /// a new key (content is not re-encrypted); logged. Stop the records
    /// service first.
    RotateKey {
        /// Who is doing it (default: the operating-system user).
        #[arg(long, env = "KEEPWIRE_ACTOR")]
        actor: Option<String>,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Accounts of the people who act on the archive (admins, records
    /// officers, legal, auditors); every change logged.
    Account {
        #[command(subcommand)]
        command: AccountCommand,
    },
    /// The archive's keys: where they are, and the archive key's escrow.
    Key {
        #[command(subcommand)]
        command: KeyCommand,
    },
    /// Recompute the log from storage and check the whole archive against
    /// it; exits non-zero, naming each problem, if anything is wrong.
    Verify {
        /// The checkpoint key's public half (default: the archive's checkpoint.pub).
        #[arg(long)]
        verifier_key: Option<String>,
        /// A checkpoint kept outside the archive (repeatable): the log must extend it.
        #[arg(long)]
        checkpoint: Vec<PathBuf>,
        /// The server's receipt keys, as saved from GET /v1/receipt-keys.
        #[arg(long)]
        server_keys: Option<PathBuf>,
        /// The server's PostgreSQL store, whose published checkpoint chain the
        /// archive must extend (default: the data directory's server.db,
        /// when there is one).
        #[arg(long, env = "KEEPWIRE_DATABASE")]
        server_database: Option<String>,
        /// A witness whose cosignatures count: its verifier key, or
        /// `KEY@URL` as the records service is given it (repeatable).
        #[arg(long, env = "KEEPWIRE_WITNESSES", value_delimiter = ',')]
        witness: Vec<String>,
        /// How many of the witnesses must have cosigned a checkpoint this
        /// log extends (default: all of them).
        #[arg(long)]
        witness_quorum: Option<usize>,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
}

/// Who is acting: an account of the archive (`records account`), signed
/// in with its password. Once an archive has accounts, every privileged
/// command needs one, and its role must allow the action.
#[derive(clap::Args, Clone, Debug, Default)]
pub(crate) struct SignIn {
    /// The account to act as.
    #[arg(long = "as", global = true, env = "KEEPWIRE_RECORDS_USER")]
    pub(crate) as_user: Option<String>,
    /// A file holding its password (or set KEEPWIRE_RECORDS_PASSWORD).
    #[arg(long, global = true, env = "KEEPWIRE_RECORDS_PASSWORD_FILE")]
    pub(crate) password_file: Option<PathBuf>,
}

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

#[derive(Subcommand)]
pub(crate) enum AccountCommand {
    /// Create an account. The first account of an archive is an admin,
    /// made without signing in; after that an admin makes each (--as).
    /// Its password comes from --new-password-file or
    /// KEEPWIRE_RECORDS_NEW_PASSWORD (at least 12 characters).
    Add {
        /// The account's name (letters, digits, `.`, `-`, `_`, `@`).
        name: String,
        /// admin, records-officer, legal or auditor.
        #[arg(long)]
        role: String,
        /// A file holding the new account's password.
        #[arg(long)]
        new_password_file: Option<PathBuf>,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// List the accounts (an admin's).
    List {
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Disable an account: it signs in no more (the log still names it).
    Disable {
        /// The account to disable.
        name: String,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Enable a disabled account again.
    Enable {
        /// The account to enable.
        name: String,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand)]
pub(crate) enum KeyCommand {
    /// Where the keys are: the key provider, the archive key's id and the
    /// checkpoint key's verifier key.
    Status {
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Split the archive key into escrow shares, one file each, any
    /// --threshold of which recover it (logged). Losing the archive key
    /// loses every record: do this when the archive is made and after
    /// every rotation.
    Escrow {
        /// How many shares recover the key (at least 2).
        #[arg(long)]
        threshold: u8,
        /// How many shares to make.
        #[arg(long)]
        shares: u8,
        /// The directory to write the share files to (owner-only).
        #[arg(long)]
        out: PathBuf,
        /// Who is doing it (default: the operating-system user).
        #[arg(long, env = "KEEPWIRE_ACTOR")]
        actor: Option<String>,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Restore the archive key from escrow shares onto the current key
    /// provider, after the old one was lost (logged). Stop the records
    /// service first.
    Restore {
        /// The share files (at least the threshold's number).
        #[arg(required = true)]
        shares: Vec<PathBuf>,
        /// Who is doing it (default: the operating-system user).
        #[arg(long, env = "KEEPWIRE_ACTOR")]
        actor: Option<String>,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
}

mod keys;
mod server;
pub(crate) use keys::KeyArgs;
pub use keys::KeySource;
pub(crate) use server::ServerArgs;

#[cfg(test)]
mod tests;
