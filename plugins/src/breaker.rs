//! The crash circuit breaker: a plugin whose instance crashes (traps, runs out of CPU or time)
//! `threshold` times within `window` is suspended for a cool-down that doubles on every
//! consecutive opening (up to an hour); nothing is delivered meanwhile and nothing is lost —
//! events wait at the cursor. The admin's enable closes it at once.

use std::{
    collections::VecDeque,
    time::{Duration, Instant},
};

const MAX_COOLDOWN: Duration = Duration::from_secs(3600);

#[derive(Debug)]
pub(crate) struct Breaker {
    threshold: usize,
    window: Duration,
    base_cooldown: Duration,
    crashes: VecDeque<Instant>,
    open_until: Option<Instant>,
    openings: u32,
}

impl Breaker {
    pub(crate) fn new(threshold: u32, window: Duration, cooldown: Duration) -> Breaker {
        Breaker {
            threshold: threshold.max(1) as usize,
            window,
            base_cooldown: cooldown,
            crashes: VecDeque::new(),
            open_until: None,
            openings: 0,
        }
    }

    /// Records a crash; whether the breaker opened because of it.
    pub(crate) fn crashed(&mut self, now: Instant) -> bool {
        self.crashes.push_back(now);
        while self.crashes.front().is_some_and(|t| now.duration_since(*t) > self.window) {
            self.crashes.pop_front();
        }
        if self.crashes.len() < self.threshold {
            return false;
        }
        self.crashes.clear();
        let cooldown = self.base_cooldown.saturating_mul(1 << self.openings.min(16)).min(MAX_COOLDOWN);
        self.openings += 1;
        self.open_until = Some(now + cooldown);
        true
    }

    /// A call succeeded: consecutive openings start over.
    pub(crate) fn succeeded(&mut self) {
        self.openings = 0;
    }

    /// Until when calls are suspended, if they are.
    pub(crate) fn open_until(&self, now: Instant) -> Option<Instant> {
        self.open_until.filter(|until| *until > now)
    }

    pub(crate) fn reset(&mut self) {
        self.crashes.clear();
        self.open_until = None;
        self.openings = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn opens_after_repeated_crashes_and_backs_off() {
        let mut breaker = Breaker::new(3, Duration::from_secs(60), Duration::from_secs(10));
        let t0 = Instant::now();
        assert!(!breaker.crashed(t0));
        assert!(!breaker.crashed(t0 + Duration::from_secs(1)));
        assert!(breaker.open_until(t0).is_none());
        assert!(breaker.crashed(t0 + Duration::from_secs(2)));
        let until = breaker.open_until(t0 + Duration::from_secs(2)).unwrap();
        assert_eq!(until, t0 + Duration::from_secs(12));
        // The next opening lasts twice as long.
        for s in [20, 21, 22] {
            breaker.crashed(t0 + Duration::from_secs(s));
        }
        assert_eq!(breaker.open_until(t0 + Duration::from_secs(22)), Some(t0 + Duration::from_secs(42)));
        breaker.reset();
        assert!(breaker.open_until(t0 + Duration::from_secs(22)).is_none());
    }

    #[test]
    fn crashes_outside_the_window_do_not_count() {
        let mut breaker = Breaker::new(2, Duration::from_secs(5), Duration::from_secs(10));
        let t0 = Instant::now();
        assert!(!breaker.crashed(t0));
        assert!(!breaker.crashed(t0 + Duration::from_secs(6)));
        assert!(breaker.crashed(t0 + Duration::from_secs(7)));
    }
}
