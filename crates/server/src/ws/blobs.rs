//! The connection's half of attachment blobs: the core decides who may
//! write or read a blob ([`crate::service::Core::blob_chunk_allowed`],
//! [`crate::service::Core::blob_fetch_allowed`]) under its lock, then the
//! bytes move here, on a store handle of the blobs' own, off the core's
//! lock and off the runtime's workers (`block_in_place`): a megabyte
//! written or read, or a whole blob hashed back when its last byte
//! arrives, must not hold up every other request.

use keepwire_protocol::attachment::BlobId;
use keepwire_protocol::{
    BlobChunk, BlobData, ErrorCode, ProtocolError, ServerFrame, MAX_BLOB_CHUNK,
};

use super::AppState;
use crate::service::{blob_body, Session};
use crate::ServerError;

/// What a blob operation answers when it fails.
fn refusal(e: ServerError) -> ProtocolError {
    match e {
        // The store refused the operation itself (a race the core's check
        // could not see, a hash that did not match): the device hears why.
        ServerError::Invalid(m) => ProtocolError::new(ErrorCode::BadFrame, m),
        other => {
            tracing::error!(error = %other, "blob storage failed");
            ProtocolError::new(
                ErrorCode::Internal,
                "the blob could not be stored or read; nothing changed",
            )
        }
    }
}

/// A binary frame from a device: a chunk of its upload. The JSON answer.
pub(super) fn chunk(state: &AppState, session: &Session, frame: &[u8]) -> String {
    let chunk = match BlobChunk::decode(frame) {
        Ok(c) => c,
        Err((id, e)) => return ServerFrame::error(id, &e).to_json(),
    };
    let id = chunk.id;
    let answer = (|| {
        let row = state.core().blob_chunk_allowed(session, &chunk)?;
        let store = state.blob_store()?;
        tokio::task::block_in_place(|| {
            let received = store
                .blob_append(&chunk.blob, chunk.offset, &chunk.bytes)
                .map_err(refusal)?;
            if received < row.size {
                return Ok(blob_body(&crate::store::BlobRow { received, ..row }));
            }
            // The last byte: the whole blob hashed back, then complete.
            let done = store.blob_finish(&chunk.blob).map_err(refusal)?;
            Ok(blob_body(&done))
        })
    })();
    match answer {
        Ok(body) => ServerFrame::response(id, body).to_json(),
        Err(e) => ServerFrame::error(Some(id), &e).to_json(),
    }
}

/// `blob_fetch`: the bytes as one binary frame, or a JSON refusal.
pub(super) fn fetch(
    state: &AppState,
    session: &Session,
    id: u64,
    blob: &BlobId,
    offset: u64,
    len: u32,
) -> Result<Vec<u8>, String> {
    let bytes = (|| {
        state.core().blob_fetch_allowed(session, blob)?;
        let store = state.blob_store()?;
        tokio::task::block_in_place(|| {
            store
                .blob_read(blob, offset, (len as usize).min(MAX_BLOB_CHUNK))
                .map_err(refusal)
        })
    })()
    .map_err(|e| ServerFrame::error(Some(id), &e).to_json())?;
    Ok(BlobData { id, bytes }.encode())
}

/// Blobs collected per pass at most: a pass runs with the relay's garbage
/// collection (twice a second), so a backlog drains in steps that never
/// hold the blobs' handle long.
const COLLECT_PER_PASS: usize = 256;

/// Delete the blobs whose message left the relay, and uploads no message
/// carried within the agency's time; how many went.
pub(crate) fn collect(state: &AppState, now_ms: u64) -> Result<usize, ServerError> {
    let Some(store) = &state.blobs else {
        return Ok(0);
    };
    let store = store.lock().unwrap_or_else(|p| p.into_inner());
    let ttl = store.attachment_policy()?.unsent_ttl_ms;
    let ids = store.blobs_to_collect(now_ms.saturating_sub(ttl), COLLECT_PER_PASS)?;
    for id in &ids {
        store.blob_delete(id)?;
    }
    Ok(ids.len())
}
