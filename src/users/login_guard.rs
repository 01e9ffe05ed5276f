//! Slows down password guessing: failed password checks are counted per account and per client
//! address; past `[limits] failed_logins_per_minute` (a burst of that many, then one every
//! 60/n seconds) further attempts for that account or from that address are answered with
//! 429 `M_LIMIT_EXCEEDED` before the password is looked at, so a right guess does not help.

use std::{
    collections::HashMap,
    num::NonZeroU32,
    sync::Mutex,
    time::{Duration, Instant},
};

use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter, clock::Clock};

use crate::error::{Error, Result};

/// Entries kept in the blocked map before expired ones are swept out.
const SWEEP_AT: usize = 10_000;

pub struct LoginGuard {
    /// None: limiting is switched off.
    failures: Option<DefaultKeyedRateLimiter<String>>,
    /// Keys that used up their failures, and until when they wait.
    blocked: Mutex<HashMap<String, Instant>>,
}

impl LoginGuard {
    pub fn new(failed_per_minute: u32) -> Self {
        LoginGuard {
            failures: NonZeroU32::new(failed_per_minute)
                .map(|n| RateLimiter::keyed(Quota::per_minute(n))),
            blocked: Mutex::new(HashMap::new()),
        }
    }

    /// The keys one attempt counts against.
    pub fn keys(user_id: &str, address: Option<&str>) -> Vec<String> {
        let mut keys = vec![format!("user {user_id}")];
        if let Some(a) = address {
            keys.push(format!("address {a}"));
        }
        keys
    }

    /// Refuses the attempt while any of its keys waits.
    pub fn check(&self, keys: &[String]) -> Result<()> {
        if self.failures.is_none() {
            return Ok(());
        }
        let now = Instant::now();
        let blocked = self.blocked.lock().unwrap_or_else(|e| e.into_inner());
        let wait = keys
            .iter()
            .filter_map(|k| blocked.get(k))
            .filter(|until| **until > now)
            .map(|until| *until - now)
            .max();
        match wait {
            Some(w) => Err(Error::limit_exceeded(w.as_millis().max(1) as u64)),
            None => Ok(()),
        }
    }

    /// Counts a failed attempt; keys that have no failures left start waiting.
    pub fn failed(&self, keys: &[String]) {
        let Some(limiter) = &self.failures else {
            return;
        };
        let clock = governor::clock::DefaultClock::default();
        let mut blocked = self.blocked.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        for k in keys {
            if let Err(not_until) = limiter.check_key(k) {
                let wait: Duration = not_until.wait_time_from(clock.now());
                blocked.insert(k.clone(), now + wait);
            }
        }
        if blocked.len() > SWEEP_AT {
            blocked.retain(|_, until| *until > now);
            limiter.retain_recent();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_after_the_allowed_failures_and_only_the_keys_involved() {
        let g = LoginGuard::new(3);
        let keys = LoginGuard::keys("@a:x", Some("10.0.0.1"));
        for _ in 0..3 {
            assert!(g.check(&keys).is_ok());
            g.failed(&keys);
        }
        assert!(g.check(&keys).is_ok(), "three failures are allowed");
        g.failed(&keys);
        let err = g.check(&keys).expect_err("the fourth failure blocks");
        assert_eq!(err.errcode(), "M_LIMIT_EXCEEDED");
        // Another account from another address is not affected; the same account from
        // elsewhere is.
        assert!(g.check(&LoginGuard::keys("@b:x", Some("10.0.0.2"))).is_ok());
        assert!(
            g.check(&LoginGuard::keys("@a:x", Some("10.0.0.2")))
                .is_err()
        );
        assert!(
            g.check(&LoginGuard::keys("@b:x", Some("10.0.0.1")))
                .is_err()
        );
    }

    #[test]
    fn zero_switches_it_off() {
        let g = LoginGuard::new(0);
        let keys = LoginGuard::keys("@a:x", None);
        for _ in 0..100 {
            g.failed(&keys);
        }
        assert!(g.check(&keys).is_ok());
    }
}
