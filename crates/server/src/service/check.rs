//! A handshake's MLS checks, done without the core's lock.
//!
//! Validating a commit or a GroupInfo costs time in proportion to the
//! group: processing it through the followed group recomputes the tree's
//! hashes and checks its signatures (measured before this existed: an
//! 8,000-leaf GroupInfo held the core's lock ~370 ms, and every request of
//! every device waited behind it). So a handshake is checked in three
//! steps: under the lock, [`Core::prepare_check`] copies what the checks
//! read (the followed group, and a version number of its state); without
//! it, [`Check::run`] does the MLS work against that copy; under the lock
//! again, [`Core::handle_checked`] accepts the result only if the
//! conversation's group is still the one it was checked against — so two
//! commits never land in one epoch — and does the rest (the sender's
//! standing, capture, the append) like any request. The same functions
//! ([`vet_submit`], [`vet_create`]) do the checks when a request is handled
//! in one step (tests, and a core without a shell).

use keepwire_protocol::{ErrorCode, ProtocolError, Request, ServerBody};

use super::{refuse, Core, Session};
use crate::roster::{self, Accepted, Followed, MemberDevice, Registry};
use crate::store::DeviceRow;

/// What a submitted message was checked to be, its MLS checks done.
pub(super) enum Vetted {
    Application,
    /// A proposal, cached in the followed group for the commit to come.
    Proposal(Box<Followed>),
    /// A commit: the group in its new epoch (its GroupInfo checked), the
    /// devices it adds, and whether it is an external join.
    Commit {
        group: Box<Followed>,
        added: Vec<MemberDevice>,
        external: bool,
    },
}

/// Check a message submitted to a conversation whose followed group is
/// `group`: the roster rules ([`roster::check_message`]), and for a commit
/// its Welcome and its next epoch's GroupInfo.
pub(super) fn vet_submit(
    group: &Followed,
    device: &DeviceRow,
    registry: &dyn Registry,
    message: &[u8],
    welcome: Option<&[u8]>,
    next_group_info: Option<&[u8]>,
) -> Result<Vetted, ProtocolError> {
    match roster::check_message(group, message, device, registry)? {
        Accepted::Application => Ok(Vetted::Application),
        Accepted::Proposal(group) => Ok(Vetted::Proposal(group)),
        Accepted::Commit {
            mut group,
            added,
            welcome_for,
            committer,
        } => {
            let external = welcome_for.is_empty() && !added.is_empty();
            let group_info = next_group_info.ok_or_else(|| {
                refuse(
                    ErrorCode::BadFrame,
                    "a commit must carry next_group_info, the GroupInfo of the epoch it creates",
                )
            })?;
            roster::check_group_info(&mut group, committer, group_info)?;
            if !welcome_for.is_empty() {
                let w = welcome.ok_or_else(|| {
                    refuse(
                        ErrorCode::BadFrame,
                        "a commit that adds members must carry their Welcome",
                    )
                })?;
                roster::check_welcome(&welcome_for, w)?;
            }
            Ok(Vetted::Commit {
                group,
                added,
                external,
            })
        }
    }
}

/// A new conversation, checked: its creator alone at epoch 0, and the
/// first commit's group with the members it adds.
pub(super) struct VettedCreate {
    pub group: Box<Followed>,
    pub creator: Vec<MemberDevice>,
    pub next: Box<Followed>,
    pub added: Vec<MemberDevice>,
}

/// Check a conversation's creation: the epoch-0 GroupInfo holds the
/// creating device alone, the first commit adds members by key packages
/// this server handed out, and its Welcome and GroupInfo fit.
pub(super) fn vet_create(
    device: &DeviceRow,
    registry: &dyn Registry,
    conv: &str,
    group_info: &[u8],
    commit: &[u8],
    welcome: &[u8],
    next_group_info: &[u8],
) -> Result<VettedCreate, ProtocolError> {
    let group = roster::observe(group_info, conv)?;
    let creator = roster::members(&group);
    if creator.len() != 1
        || creator[0].device_id != device.device_id
        || creator[0].user != device.user
    {
        return Err(refuse(
            ErrorCode::NotMember,
            "the epoch-0 group must contain exactly the creating device",
        ));
    }
    let (mut next, welcome_for, committer) =
        match roster::check_first_commit(&group, commit, registry)? {
            Accepted::Commit {
                group,
                welcome_for,
                committer,
                ..
            } => (group, welcome_for, committer),
            _ => {
                return Err(refuse(
                    ErrorCode::InvalidMls,
                    "the first message of a conversation must be a commit",
                ))
            }
        };
    roster::check_welcome(&welcome_for, welcome)?;
    roster::check_group_info(&mut next, committer, next_group_info)?;
    Ok(VettedCreate {
        group: Box::new(group),
        creator,
        next,
        added: roster::devices(&welcome_for),
    })
}

/// A handshake's checks, ready to run without the core's lock.
pub struct Check {
    device: DeviceRow,
    what: CheckWhat,
}

enum CheckWhat {
    Submit {
        conv: String,
        /// The conversation's handshake count when the group was copied.
        version: u64,
        group: Box<Followed>,
        message: Vec<u8>,
        welcome: Option<Vec<u8>>,
        next_group_info: Option<Vec<u8>>,
    },
    Create {
        conv: String,
        group_info: Vec<u8>,
        commit: Vec<u8>,
        welcome: Vec<u8>,
        next_group_info: Vec<u8>,
    },
}

/// The outcome of a [`Check`], for [`Core::handle_checked`].
pub struct Checked {
    pub(super) conv: String,
    pub(super) outcome: Outcome,
}

pub(super) enum Outcome {
    Submit {
        version: u64,
        vetted: Result<Vetted, ProtocolError>,
    },
    Create(Result<VettedCreate, ProtocolError>),
}

impl Check {
    /// Run the MLS checks; `registry` is a connection of its own to the
    /// server's store (the core's is behind its lock).
    pub fn run(self, registry: &dyn Registry) -> Checked {
        let device = &self.device;
        match self.what {
            CheckWhat::Submit {
                conv,
                version,
                group,
                message,
                welcome,
                next_group_info,
            } => Checked {
                conv,
                outcome: Outcome::Submit {
                    version,
                    vetted: vet_submit(
                        &group,
                        device,
                        registry,
                        &message,
                        welcome.as_deref(),
                        next_group_info.as_deref(),
                    ),
                },
            },
            CheckWhat::Create {
                conv,
                group_info,
                commit,
                welcome,
                next_group_info,
            } => Checked {
                outcome: Outcome::Create(vet_create(
                    device,
                    registry,
                    &conv,
                    &group_info,
                    &commit,
                    &welcome,
                    &next_group_info,
                )),
                conv,
            },
        }
    }
}

impl Core {
    /// Whether `req` is a handshake worth checking without the lock, and
    /// if so a copy of what the checks read. None for everything else
    /// (and for a request that will be refused anyway: unauthenticated, an
    /// unknown conversation), which [`Core::handle`] takes as it is.
    pub fn prepare_check(&self, session: &Session, req: &Request) -> Option<Check> {
        let device = session.device.clone()?;
        let what = match req {
            Request::Submit {
                conv,
                message,
                welcome,
                next_group_info,
            } if roster::is_handshake(message) => {
                let c = self.convs.get(conv)?;
                CheckWhat::Submit {
                    conv: conv.clone(),
                    version: c.version,
                    group: Box::new(c.group.clone()),
                    message: message.clone(),
                    welcome: welcome.clone(),
                    next_group_info: next_group_info.clone(),
                }
            }
            Request::CreateConversation {
                conv,
                group_info,
                commit,
                welcome,
                next_group_info,
            } => CheckWhat::Create {
                conv: conv.clone(),
                group_info: group_info.clone(),
                commit: commit.clone(),
                welcome: welcome.clone(),
                next_group_info: next_group_info.clone(),
            },
            _ => return None,
        };
        Some(Check { device, what })
    }

    /// Handle `req` (the request `checked` was prepared from) with its
    /// checks already done.
    pub fn handle_checked(
        &mut self,
        session: &mut Session,
        req: Request,
        checked: Checked,
        now_ms: u64,
    ) -> Result<ServerBody, ProtocolError> {
        self.checked = Some(checked);
        let r = self.handle(session, req, now_ms);
        self.checked = None;
        r
    }

    /// The checks done without the lock for a submit to `conv`, if they
    /// were, and still hold: the conversation's group has not changed
    /// since (another commit or proposal would have made them stale).
    pub(super) fn take_vetted_submit(
        &mut self,
        conv: &str,
    ) -> Option<Result<Vetted, ProtocolError>> {
        let checked = self.checked.take()?;
        let Outcome::Submit { version, vetted } = checked.outcome else {
            return None;
        };
        if checked.conv != conv {
            return None;
        }
        let now = self.convs.get(conv).map(|c| c.version);
        Some(if now == Some(version) {
            vetted
        } else {
            Err(refuse(
                ErrorCode::StaleEpoch,
                "another commit or proposal reached this conversation while this one was being checked; sync and retry",
            ))
        })
    }

    /// The checks done without the lock for creating `conv`, if they were.
    pub(super) fn take_vetted_create(
        &mut self,
        conv: &str,
    ) -> Option<Result<VettedCreate, ProtocolError>> {
        let checked = self.checked.take()?;
        match checked.outcome {
            Outcome::Create(vetted) if checked.conv == conv => Some(vetted),
            _ => None,
        }
    }
}
