//! Failed sign-ins slow down guessing: once an account name has had
//! [`FREE`] wrong passwords in a row, each further try on it waits a
//! delay that doubles with every failure, up to [`MAX_DELAY`]; the right
//! password resets it. Tries within the delay are refused without
//! checking the password, so a guesser gets at most one check per delay
//! (NIST SP 800-63B §5.2.2 asks for at most 100 consecutive failures per
//! account; this allows about 10 then one a minute). The delay never
//! locks the account for good: an officer whose name is being guessed
//! still gets in once the delay passes. A pure state machine over
//! instants, kept by the office's thread.

use std::collections::HashMap;
use std::time::{Duration, Instant};

/// Wrong passwords in a row allowed without delay.
pub const FREE: u32 = 10;
/// The longest wait between tries on one name.
pub const MAX_DELAY: Duration = Duration::from_secs(60);
/// Names remembered at most: failures are forgotten oldest-first beyond
/// it, so guessing many names holds bounded memory.
const MAX_NAMES: usize = 4096;

#[derive(Debug, Default)]
pub struct Throttle {
    failures: HashMap<String, (u32, Instant)>,
}

impl Throttle {
    /// How long `name` must still wait before its password is checked.
    pub fn wait(&self, name: &str, now: Instant) -> Option<Duration> {
        let (n, last) = *self.failures.get(name)?;
        let delay = delay(n)?;
        let until = last + delay;
        (now < until).then(|| until - now)
    }

    /// A wrong password (or an unknown or disabled account) for `name`.
    pub fn failed(&mut self, name: &str, now: Instant) {
        if self.failures.len() >= MAX_NAMES && !self.failures.contains_key(name) {
            if let Some(oldest) = self
                .failures
                .iter()
                .min_by_key(|(_, (_, at))| *at)
                .map(|(k, _)| k.clone())
            {
                self.failures.remove(&oldest);
            }
        }
        let entry = self.failures.entry(name.to_string()).or_insert((0, now));
        *entry = (entry.0.saturating_add(1), now);
    }

    /// The right password for `name`.
    pub fn succeeded(&mut self, name: &str) {
        self.failures.remove(name);
    }
}

/// The wait after `n` failures in a row.
fn delay(n: u32) -> Option<Duration> {
    let over = n.checked_sub(FREE)?;
    let secs = 1u64.checked_shl(over).unwrap_or(u64::MAX);
    Some(Duration::from_secs(secs).min(MAX_DELAY))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn guessing_slows_to_one_try_a_minute_and_the_right_password_resets_it() {
        let t0 = Instant::now();
        let mut t = Throttle::default();
        for _ in 0..FREE - 1 {
            t.failed("olu", t0);
        }
        assert_eq!(t.wait("olu", t0), None, "a few typos cost nothing");
        t.failed("olu", t0);
        assert_eq!(t.wait("olu", t0), Some(Duration::from_secs(1)));
        assert_eq!(t.wait("ada", t0), None, "other accounts are not slowed");
        let mut now = t0;
        for _ in 0..20 {
            now += MAX_DELAY;
            t.failed("olu", now);
        }
        assert_eq!(
            t.wait("olu", now),
            Some(MAX_DELAY),
            "never more than a minute"
        );
        assert_eq!(
            t.wait("olu", now + MAX_DELAY),
            None,
            "and never locked for good"
        );
        t.succeeded("olu");
        assert_eq!(t.wait("olu", now), None);
    }

    #[test]
    fn guessing_many_names_holds_bounded_memory() {
        let t0 = Instant::now();
        let mut t = Throttle::default();
        for i in 0..MAX_NAMES + 100 {
            t.failed(&format!("name{i}"), t0 + Duration::from_millis(i as u64));
        }
        assert_eq!(t.failures.len(), MAX_NAMES);
        assert!(!t.failures.contains_key("name0"), "the oldest forgotten");
    }
}
