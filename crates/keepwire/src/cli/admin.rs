//! `keepwire admin …`: users, devices, conversations, keys, policy,
//! backup and restore.

use std::path::PathBuf;

use clap::Subcommand;

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
        /// The largest attachment a device may send, in MiB (default 100).
        #[arg(long, value_name = "MIB")]
        max_attachment_mb: Option<u64>,
        /// How much attachments one user's uploads may hold on the server
        /// at once, in MiB (default 10240); space returns as messages are
        /// delivered and captured.
        #[arg(long, value_name = "MIB")]
        attachment_quota_mb: Option<u64>,
        /// How long an upload no message carried is kept, in hours
        /// (default 24).
        #[arg(long, value_name = "HOURS")]
        unsent_attachment_hours: Option<u64>,
        /// Whether photos keep their EXIF data, GPS location included
        /// (evidence photos may need it). By default (false) devices send
        /// a photo's pixels only.
        #[arg(long, value_name = "BOOL")]
        keep_photo_location: Option<bool>,
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
