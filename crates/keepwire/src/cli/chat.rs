//! `keepwire chat …`: one device's commands, and what holds for a run
//! (its server, directory, CA and witnesses).

use std::path::PathBuf;

use clap::Subcommand;

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
            keepwire_records::witness::quorum::split_witness(w)
                .0
                .to_string()
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
    /// Send a message, with files if given.
    Send {
        /// The conversation (its id, or a unique prefix of it).
        conv: String,
        /// The message (may be left out when files are sent).
        text: Option<String>,
        /// A file to send with it (repeat for several, at most 16): sealed
        /// on this device, uploaded, archived with the message.
        #[arg(long = "file", value_name = "PATH")]
        files: Vec<std::path::PathBuf>,
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
    /// Write a file of a message this device holds to a new file (a
    /// burn-on-read message's files cannot be saved).
    Save {
        /// The conversation (its id, or a unique prefix of it).
        conv: String,
        /// The message's number (as `read` shows it, `#N`).
        seq: u64,
        /// Which of its files (as `read` numbers them).
        #[arg(long, default_value_t = 0)]
        file: u32,
        /// Where to write it; it must not exist yet.
        #[arg(long)]
        out: std::path::PathBuf,
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
