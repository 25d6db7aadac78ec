//! Time, controllable. Everything that depends on time (timers, relay TTL,
//! enrolment codes, receipts) asks a [`Clock`], so tests can move time
//! forward without sleeping.
//!
//! `KEEPWIRE_CLOCK_FILE=PATH` makes every keepwire process add the number
//! of milliseconds written in PATH to the system time: a test writes a new
//! offset and every running server and client jumps ahead together.

use std::path::PathBuf;
use std::time::{SystemTime, UNIX_EPOCH};

#[derive(Debug, Clone, Default)]
pub struct Clock {
    offset_file: Option<PathBuf>,
}

impl Clock {
    pub fn system() -> Self {
        Self { offset_file: None }
    }

    /// The system clock, or the offset clock when `KEEPWIRE_CLOCK_FILE` is set.
    pub fn from_env() -> Self {
        Self {
            offset_file: std::env::var_os("KEEPWIRE_CLOCK_FILE").map(PathBuf::from),
        }
    }

    pub fn now_ms(&self) -> u64 {
        let sys = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0);
        let offset = self
            .offset_file
            .as_ref()
            .and_then(|p| std::fs::read_to_string(p).ok())
            .and_then(|s| s.trim().parse::<u64>().ok())
            .unwrap_or(0);
        sys + offset
    }
}
