//! `keepwire records …`: the records service, the archive, its accounts
//! and keys, and how checkpoints are published.

use std::path::PathBuf;

use clap::Subcommand;

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
    /// A malware scanner run on every captured file (e.g. `clamdscan
    /// --no-summary`): the file's path is appended; exit 0 is clean, 1 a
    /// finding, anything else a failed scan. Its verdict is kept in the
    /// record's leaf and shown wherever the file is offered.
    #[arg(long, env = "KEEPWIRE_SCAN_COMMAND")]
    pub(crate) scan_command: Option<String>,
    #[command(flatten)]
    pub(crate) office: OfficeArgs,
}

/// Where the records office listens.
#[derive(clap::Args, Clone, Debug)]
pub(crate) struct OfficeArgs {
    /// Where the records office listens for the privileged `records`
    /// commands, or `off`. Any address but loopback needs
    /// --records-tls-cert and --records-tls-key.
    #[arg(
        long,
        env = "KEEPWIRE_RECORDS_LISTEN",
        default_value = "127.0.0.1:7880"
    )]
    pub(crate) records_listen: String,
    /// The records office's TLS certificate chain (PEM).
    #[arg(long, env = "KEEPWIRE_RECORDS_TLS_CERT", requires = "records_tls_key")]
    pub(crate) records_tls_cert: Option<PathBuf>,
    /// The records office's TLS private key (PEM).
    #[arg(long, env = "KEEPWIRE_RECORDS_TLS_KEY", requires = "records_tls_cert")]
    pub(crate) records_tls_key: Option<PathBuf>,
}

impl OfficeArgs {
    /// Where the office listens, if anywhere.
    pub(crate) fn listen(&self) -> anyhow::Result<Option<crate::serve::office::Listen>> {
        let addr = match self.records_listen.as_str() {
            "off" => return Ok(None),
            a => a.parse().map_err(|_| {
                anyhow::anyhow!("--records-listen {a}: an address such as 127.0.0.1:7880, or `off`")
            })?,
        };
        let tls = match (&self.records_tls_cert, &self.records_tls_key) {
            (Some(cert), Some(key)) => Some(crate::serve::TlsFiles {
                cert: cert.clone(),
                key: key.clone(),
            }),
            _ => None,
        };
        crate::serve::office::Listen::new(addr, tls).map(Some)
    }
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
            office: self.office.listen()?,
            scan: self.scan_command.clone(),
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
    /// Run only the records office on an archive, without capture: for
    /// acting on records while the records service is stopped or retired
    /// (the privileged `records` commands come here as they would to the
    /// records service; it cannot run beside it).
    Office {
        #[command(flatten)]
        office: OfficeArgs,
    },
    /// List captured records (metadata only, read from the archive).
    List {
        /// Include commits and proposals, not only messages.
        #[arg(long)]
        all: bool,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Show one record, decrypted (a privileged action: the running
    /// records service logs it, and signs a checkpoint covering that,
    /// before it is shown).
    Show {
        /// The record's id (from `records list`).
        id: i64,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Write a file of a record to a new file, checked against the
    /// record's reference (every segment, both hashes). Releasing the
    /// file's key is a view: the records service logs it and signs a
    /// checkpoint covering that first.
    Attachment {
        /// The record's id (from `records list`).
        id: i64,
        /// Which of its files (as `records show` numbers them).
        #[arg(long, default_value_t = 0)]
        file: u32,
        /// Where to write it; it must not exist yet.
        #[arg(long)]
        out: std::path::PathBuf,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Print the latest signed checkpoint of the archive's transparency log
    /// (C2SP tlog-checkpoint, Ed25519 signed note): the running records
    /// service signs a new one first if the log has grown since.
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
    /// Propose destroying one record: a disposition batch of one, which
    /// another account approves (`records disposition approve`) before it
    /// runs. A record that is not eligible needs --force and a reason.
    Destroy {
        /// The record whose content to destroy.
        id: i64,
        /// Destroy it although it is not eligible: unlawful; opens an
        /// incident once executed.
        #[arg(long, requires = "reason")]
        force: bool,
        /// Why (for --force).
        #[arg(long)]
        reason: Option<String>,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Disposition: eligible records, batches proposed, approved by a
    /// second account, executed, and their certificates.
    Disposition {
        #[command(subcommand)]
        command: super::DispositionCommand,
    },
    /// Legal, FOIA and audit holds: nothing they cover is disposed of.
    Hold {
        #[command(subcommand)]
        command: super::HoldCommand,
    },
    /// The incident register: records lost, altered or destroyed
    /// unlawfully, and their reports to NARA.
    Incident {
        #[command(subcommand)]
        command: super::IncidentCommand,
    },
    /// Reports: the integrity report.
    Report {
        #[command(subcommand)]
        command: super::ReportCommand,
    },
    /// Rotate the archive key: every record's data key is re-wrapped under
    /// a new key (content is not re-encrypted); logged, by an admin. Stop
    /// the records service first: it holds the key it wraps with.
    RotateKey {
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
    /// Records schedules: the items in force, the agency's settings and
    /// schedule file, conversations' items, each record's item and dates.
    Schedule {
        #[command(subcommand)]
        command: super::ScheduleCommand,
    },
    /// The role directory: who holds which position, in which office and
    /// GRS 6.1 category, from when to when.
    Directory {
        #[command(subcommand)]
        command: super::DirectoryCommand,
    },
    /// The agency's NA-1005 (GRS 6.1 verification form): declared and
    /// computed data, and when it must be renewed.
    Na1005 {
        #[command(subcommand)]
        command: super::Na1005Command,
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
/// in with its password; every privileged command needs one, and its role
/// must allow the action. The commands that act go to the running records
/// service's office.
#[derive(clap::Args, Clone, Debug, Default)]
pub(crate) struct SignIn {
    /// The running records office (default: the URL the records service
    /// wrote into the records directory, `office.url`).
    #[arg(long, global = true, env = "KEEPWIRE_RECORDS_URL")]
    pub(crate) records_url: Option<String>,
    /// The account to act as.
    #[arg(long = "as", global = true, env = "KEEPWIRE_RECORDS_USER")]
    pub(crate) as_user: Option<String>,
    /// Also trust this CA certificate (PEM) for the records office's TLS.
    #[arg(long, global = true, env = "KEEPWIRE_RECORDS_CA_CERT")]
    pub(crate) records_ca_cert: Option<PathBuf>,
    /// A file holding its password (or set KEEPWIRE_RECORDS_PASSWORD, or
    /// type it when asked).
    #[arg(long, global = true, env = "KEEPWIRE_RECORDS_PASSWORD_FILE")]
    pub(crate) password_file: Option<PathBuf>,
}

#[derive(Subcommand)]
pub(crate) enum AccountCommand {
    /// Create an account. The first account of an archive is an admin,
    /// made on the records service's machine with the setup token it
    /// wrote (records/setup.token); after that an admin makes each (--as).
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
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
}
