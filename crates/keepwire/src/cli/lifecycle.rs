//! `keepwire records schedule|directory|na1005 …`: the records lifecycle
//! from the command line. Every change goes to the running records
//! office as the records officer (`--as`), is logged and covered by a
//! checkpoint; reading needs any account.

use std::path::PathBuf;

use clap::Subcommand;

#[derive(Subcommand)]
pub(crate) enum ScheduleCommand {
    /// The items in force (GRS and the agency's) and the settings; with
    /// a record id, that record's item, cutoff, dates and their history.
    Show {
        /// A record whose schedule to show.
        id: Option<i64>,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Every message record with its item and the day it falls due.
    List {
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Change the agency's settings (each flag given replaces its value;
    /// the others stay).
    Set {
        /// The cutoff of items that name none: calendar-year,
        /// fiscal-year, end-of-tenure, end-of-administration or none.
        #[arg(long)]
        cutoff: Option<String>,
        /// Years after cutoff permanent records go to NARA (15, 20, 25 or
        /// 30, as the NA-1005 says).
        #[arg(long)]
        transfer_years: Option<u32>,
        /// Days transitory records are kept (GRS 5.2 item 010's business
        /// rule).
        #[arg(long)]
        transitory_days: Option<u32>,
        /// The category of people the role directory does not list:
        /// staff, support or capstone:N.
        #[arg(long)]
        unlisted: Option<String>,
        /// A day an administration ends, YYYY-MM-DD (repeatable; replaces
        /// the list).
        #[arg(long = "administration-end")]
        administration_ends: Vec<String>,
        /// Whether a disposition batch needs another account's approval
        /// (true by default; a forced batch always does).
        #[arg(long)]
        second_approver: Option<bool>,
        /// Days from an incident's opening to its report to NARA.
        #[arg(long)]
        incident_report_days: Option<u32>,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Load the agency's schedule file (TOML: `[[item]]` with code,
    /// authority, title, retention and an optional cutoff), replacing the
    /// agency items loaded before.
    Load {
        /// The schedule file.
        file: PathBuf,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Keep a conversation's records under an item from a day on:
    /// --transitory (GRS 5.2 item 010), --item CODE (an agency item), or
    /// --clear (their participants' item again).
    Assign {
        /// The conversation (its id).
        conv: String,
        /// An item's code (a temporary GRS item or the agency's).
        #[arg(long, conflicts_with_all = ["transitory", "clear"])]
        item: Option<String>,
        /// Mark the conversation transitory (GRS 5.2 item 010).
        #[arg(long, conflicts_with = "clear")]
        transitory: bool,
        /// Back to the participants' item.
        #[arg(long)]
        clear: bool,
        /// The first day it applies to, YYYY-MM-DD (default: today).
        #[arg(long)]
        from: Option<String>,
        /// Why (kept in the log).
        #[arg(long)]
        reason: String,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand)]
pub(crate) enum DirectoryCommand {
    /// The role directory: every role, or those held on a day.
    List {
        /// Only the roles held on this day, YYYY-MM-DD.
        #[arg(long)]
        on: Option<String>,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// A person starts in a position (their records from --from on take
    /// its category).
    Start {
        /// The keepwire user name.
        user: String,
        /// The position's identifier.
        #[arg(long)]
        position: String,
        /// The position's title.
        #[arg(long)]
        title: String,
        /// The office the position belongs to.
        #[arg(long)]
        office: String,
        /// capstone:N (GRS 6.1 item 010 category 1–10), staff, support or
        /// guest.
        #[arg(long)]
        category: String,
        /// The first day in the position, YYYY-MM-DD.
        #[arg(long)]
        from: String,
        /// The last day, if known, YYYY-MM-DD.
        #[arg(long)]
        until: Option<String>,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// A person's role ends: their records after --on take their other
    /// roles' category (or the unlisted one).
    End {
        /// The keepwire user name.
        user: String,
        /// The position they leave.
        #[arg(long)]
        position: String,
        /// Their last day in it, YYYY-MM-DD.
        #[arg(long)]
        on: String,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand)]
pub(crate) enum Na1005Command {
    /// The NA-1005 as of a day: what the agency declared, the items in
    /// use, the Capstone positions and counts, the renewal date.
    Show {
        /// The day, YYYY-MM-DD (default: today).
        #[arg(long)]
        on: Option<String>,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Record what the agency declares (each flag given replaces its
    /// value). An approval is NAME@YYYY-MM-DD.
    Set {
        /// Whether messages other than email are included (true/false).
        #[arg(long)]
        other_messages: Option<bool>,
        /// The cutoff instructions, as the form states them.
        #[arg(long)]
        cutoff_instructions: Option<String>,
        /// The transfer instructions, as the form states them.
        #[arg(long)]
        transfer_instructions: Option<String>,
        /// The agency records officer's approval, NAME@YYYY-MM-DD.
        #[arg(long)]
        records_officer: Option<String>,
        /// The Senior Agency Official for Records Management's approval.
        #[arg(long)]
        senior_official: Option<String>,
        /// NARA's approval (the renewal is due four years after it).
        #[arg(long)]
        nara: Option<String>,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand)]
pub(crate) enum DispositionCommand {
    /// The records eligible for disposition today: temporary, retention
    /// over, no hold, content still held.
    Eligible {
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Propose a batch: the records named, or every eligible record. A
    /// record that is not eligible is refused unless --force.
    Propose {
        /// The records (default: every eligible record).
        ids: Vec<i64>,
        /// Destroy records that are not eligible (unexpired, held,
        /// permanent): unlawful; needs --reason and a second approver,
        /// and opens an incident.
        #[arg(long, requires = "reason")]
        force: bool,
        /// Why (for a forced batch).
        #[arg(long)]
        reason: Option<String>,
        /// A note kept with the batch.
        #[arg(long, default_value = "")]
        note: String,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Approve a batch another account proposed (records officer or legal).
    Approve {
        /// The batch.
        batch: u64,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Cancel a batch that has not run.
    Cancel {
        /// The batch.
        batch: u64,
        /// Why.
        #[arg(long)]
        reason: String,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Run an approved batch: each record re-checked, then destroyed
    /// (crypto-shredded, with a tombstone); prints the certificate.
    Execute {
        /// The batch.
        batch: u64,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// The batches: proposed, approved, executed, cancelled.
    List {
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// An executed batch's certificate, with its leaf, the inclusion
    /// proof and the signed checkpoint that covers it.
    Certificate {
        /// The batch.
        batch: u64,
        /// Write it to this file (never over an existing one) instead of
        /// printing it.
        #[arg(long)]
        out: Option<PathBuf>,
        /// With --out, print where it went as JSON (without --out the
        /// certificate is JSON already).
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand)]
pub(crate) enum HoldCommand {
    /// Place a hold: what it covers is every record matching all the
    /// criteria given (--custodian, --conversation, --from, --until), or
    /// --everything.
    Place {
        /// legal, foia or audit.
        #[arg(long)]
        kind: String,
        /// The hold's name.
        #[arg(long)]
        name: String,
        /// The matter (case, request, audit).
        #[arg(long)]
        matter: String,
        /// The authority (court order, request number, counsel's memo).
        #[arg(long)]
        authority: String,
        /// A custodian: records with this user among the participants
        /// (repeatable).
        #[arg(long = "custodian")]
        custodians: Vec<String>,
        /// A conversation (repeatable).
        #[arg(long = "conversation")]
        conversations: Vec<String>,
        /// Records sent on or after this day, YYYY-MM-DD.
        #[arg(long)]
        from: Option<String>,
        /// Records sent on or before this day, YYYY-MM-DD.
        #[arg(long)]
        until: Option<String>,
        /// Every record in the archive.
        #[arg(long)]
        everything: bool,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Release a hold.
    Release {
        /// The hold (its number).
        hold: u64,
        /// Why.
        #[arg(long)]
        reason: String,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// The holds, in force and released.
    List {
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand)]
pub(crate) enum IncidentCommand {
    /// The incident register.
    List {
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// The 36 CFR 1230.14 report: its five elements, filled from the
    /// archive and the officer's account (Markdown, or --json).
    Report {
        /// The incident (its number).
        incident: u64,
        /// Write it to this file (never over an existing one).
        #[arg(long)]
        out: Option<PathBuf>,
        /// Print JSON instead of Markdown.
        #[arg(long)]
        json: bool,
    },
    /// Record what happened since: a note, a new status, NARA's case id.
    Update {
        /// The incident (its number).
        incident: u64,
        /// open, reported-to-nara or closed.
        #[arg(long)]
        status: Option<String>,
        /// NARA's case id.
        #[arg(long)]
        nara_case: Option<String>,
        /// What was done or learnt.
        #[arg(long)]
        note: String,
        /// The report's element 3: the exact circumstances, as only a
        /// person can tell them (replaces the account given before).
        #[arg(long)]
        circumstances: Option<String>,
        /// The report's element 4: the safeguards established to prevent
        /// further loss.
        #[arg(long)]
        safeguards: Option<String>,
        /// The report's element 5: what was done to salvage, retrieve or
        /// reconstruct the records.
        #[arg(long)]
        salvage: Option<String>,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand)]
pub(crate) enum ReportCommand {
    /// The integrity report: the records service verifies the archive
    /// (with the archive key and the checkpoint key), opens an incident
    /// for records missing or altered and for entries it could not
    /// capture, and logs the report, which a signed checkpoint covers.
    Integrity {
        /// Write the report with its leaf, inclusion proof and checkpoint
        /// to this file (never over an existing one).
        #[arg(long)]
        out: Option<PathBuf>,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
}
