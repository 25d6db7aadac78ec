//! The lifecycle's events against the leaves that commit to them: every
//! event row has its leaf, equal to the one its stored fields make (so
//! an altered role, item or setting is named), and every lifecycle leaf
//! has its row.

use std::collections::BTreeMap;

use super::{Problem, ProblemKind, Report};
use crate::lifecycle::event_leaf;
use crate::tlog::Leaf;
use crate::{Archive, RecordsError};

/// `leaves`: event number → (leaf index, the leaf), from the log.
pub(super) fn check(
    archive: &Archive,
    leaves: &BTreeMap<u64, (u64, Leaf)>,
    report: &mut Report,
) -> Result<(), RecordsError> {
    let mut seen = std::collections::BTreeSet::new();
    for (i, row) in archive.lifecycle_events()?.iter().enumerate() {
        seen.insert(row.n);
        if row.n != i as u64 + 1 {
            report.problems.push(Problem::new(
                ProblemKind::Gap,
                format!(
                    "lifecycle event {} follows event {}: the events between are missing",
                    row.n, i
                ),
            ));
        }
        match leaves.get(&row.n) {
            None => report.problems.push(Problem::new(
                ProblemKind::Altered,
                format!(
                    "lifecycle event {} ({}) has no leaf in the log: it was added outside the records service",
                    row.n, row.kind
                ),
            )),
            Some((n, leaf)) => {
                if *leaf != event_leaf(row) || row.leaf != Some(*n) {
                    report.problems.push(
                        Problem::new(
                            ProblemKind::Altered,
                            format!(
                                "lifecycle event {} ({}) is not what leaf {n} commits to: it was changed",
                                row.n, row.kind
                            ),
                        )
                        .leaf(*n),
                    );
                } else if let Err(e) = row.event() {
                    report
                        .problems
                        .push(Problem::new(ProblemKind::Altered, e.to_string()).leaf(*n));
                }
            }
        }
    }
    for (event, (n, _)) in leaves {
        if !seen.contains(event) {
            report.problems.push(
                Problem::new(
                    ProblemKind::Missing,
                    format!(
                        "leaf {n} commits to lifecycle event {event}, which is not in the archive"
                    ),
                )
                .leaf(*n),
            );
        }
    }
    Ok(())
}
