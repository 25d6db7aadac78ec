//! The archive's checkpoints as the server keeps them: a chain in which
//! each is accepted only with a consistency proof from the one before
//! (C2SP: a log never signs a fork), served to devices, which pin them.

use keepwire_protocol::{ErrorCode, ProtocolError, ServerBody, RECORDS_USER};

use super::{internal, refuse, Core};
use crate::store::DeviceRow;

impl Core {
    /// Keep the records service's checkpoint and its proof from the one
    /// before. The server cannot and need not check them: devices do, with
    /// the verifier key they pinned.
    pub(super) fn publish_checkpoint(
        &mut self,
        device: &DeviceRow,
        checkpoint: String,
        verifier_key: String,
        link: keepwire_protocol::CheckpointProof,
    ) -> Result<ServerBody, ProtocolError> {
        if device.user != RECORDS_USER {
            return Err(refuse(
                ErrorCode::Unauthorized,
                "only the records service publishes checkpoints",
            ));
        }
        if checkpoint.len() > 64 * 1024
            || verifier_key.len() > 1024
            || link.consistency_path.len() > 128
        {
            return Err(refuse(
                ErrorCode::TooLarge,
                "checkpoint, key or proof too large",
            ));
        }
        if link.consistency_path.iter().any(|h| h.len() != 32) {
            return Err(refuse(
                ErrorCode::BadFrame,
                "consistency path hashes are 32 bytes",
            ));
        }
        let new = read_checkpoint(&checkpoint)?;
        let size = new.size();
        let mut link = link;
        // Each published checkpoint must extend the one before: the chain
        // devices walk is consistent by construction (they check it too).
        if let Some(last) = self.store.latest_checkpoint().map_err(internal)? {
            let last_cp = read_checkpoint(&last.checkpoint)?;
            let extends = if size == last_cp.size() {
                // The same checkpoint again, with the cosignatures its
                // witnesses gave since: it keeps its link to the one before.
                link = last.link;
                new.hash() == last_cp.hash()
            } else {
                let path: Vec<tlog_tiles::tlog::Hash> = link
                    .consistency_path
                    .iter()
                    .filter_map(|h| {
                        <[u8; 32]>::try_from(h.as_slice())
                            .ok()
                            .map(tlog_tiles::tlog::Hash)
                    })
                    .collect();
                size > last_cp.size()
                    && link.from_size == Some(last_cp.size())
                    && tlog_tiles::tlog::check_tree(
                        &path,
                        size,
                        *new.hash(),
                        last_cp.size(),
                        *last_cp.hash(),
                    )
                    .is_ok()
            };
            if !extends {
                return Err(refuse(
                    ErrorCode::BadFrame,
                    format!(
                        "this checkpoint (size {size}) does not provably extend the last published one (size {}); publish with a consistency proof from it",
                        last_cp.size()
                    ),
                ));
            }
        }
        self.store
            .add_checkpoint(size, &checkpoint, link.from_size, &link.consistency_path)
            .and_then(|()| self.store.set_meta("records.verifier_key", &verifier_key))
            .map_err(internal)?;
        Ok(ServerBody::Ok)
    }

    pub(super) fn checkpoints(&self, since_size: u64) -> Result<ServerBody, ProtocolError> {
        let verifier_key = self
            .store
            .meta("records.verifier_key")
            .map_err(internal)?
            .unwrap_or_default();
        let latest = self.store.latest_checkpoint().map_err(internal)?;
        let latest_size = latest
            .as_ref()
            .map(|c| read_checkpoint(&c.checkpoint).map(|cp| cp.size()))
            .transpose()?;
        let chain = if since_size == 0 {
            // A device that pinned nothing yet starts from the latest.
            latest.into_iter().collect()
        } else {
            self.store.checkpoints_after(since_size).map_err(internal)?
        };
        Ok(ServerBody::Checkpoints {
            verifier_key,
            chain,
            latest_size,
        })
    }
}

/// The checkpoint inside a signed note. The signature is the devices' to
/// check (against the key they pinned); the server only keeps the chain
/// consistent.
pub(super) fn read_checkpoint(
    note: &str,
) -> Result<tlog_tiles::checkpoint::Checkpoint, ProtocolError> {
    let n = signed_note::Note::from_bytes(note.as_bytes())
        .map_err(|e| refuse(ErrorCode::BadFrame, format!("not a signed note: {e}")))?;
    tlog_tiles::checkpoint::Checkpoint::from_bytes(n.text())
        .map_err(|e| refuse(ErrorCode::BadFrame, format!("not a tlog checkpoint: {e}")))
}
