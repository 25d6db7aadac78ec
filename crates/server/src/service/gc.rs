//! Relay garbage collection, planned: under the core's lock, work out
//! what may leave the relay (bounds that only grow: archived, acknowledged
//! by every member device or past the relay TTL, never withheld) and hand
//! it to the log writer, which deletes it a bounded chunk per commit (a
//! long delete under the lock stalled every request).

use super::{Core, Effect};
use crate::ServerError;

impl Core {
    /// Work out which log entries nobody needs any more — captured by the
    /// records service and acknowledged by every member device, or
    /// captured and older than the relay TTL; never anything the records
    /// service has not acknowledged (promise 1) — and hand them to the
    /// log writer as an [`Effect::Collect`], which deletes them a bounded
    /// chunk per commit: deleting thousands of entries here, under the
    /// core's lock, stalled every request for tens of milliseconds.
    pub fn collect_garbage(&mut self, now_ms: u64) -> Result<(), ServerError> {
        let now = now_ms;
        let before = now.saturating_sub(self.limits.relay_ttl_ms);
        let mut passes = Vec::new();
        for (conv, c) in &self.convs {
            let records_acked = c.gate.archived_seq();
            if records_acked == 0 {
                continue;
            }
            let mut upto = records_acked;
            for m in &c.members {
                upto = upto.min(self.store.cursor(&m.device_id, conv)?.unwrap_or(0));
            }
            passes.push(crate::store::Collectable {
                conv: conv.clone(),
                delivered_upto: upto,
                records_acked,
                expired_before_ms: before,
            });
        }
        if !passes.is_empty() {
            self.effects.push(Effect::Collect(passes));
        }
        Ok(())
    }
}
