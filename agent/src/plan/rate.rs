//! A token bucket, for the agent's rate limits (the storm meters of
//! `dataplane::router::storm`, the DNS server's forward rates): pure, the
//! time is passed in.
use std::time::Instant;

/// `tokens` as of `at`.
#[derive(Debug, Clone, Copy)]
pub struct TokenBucket {
    tokens: f64,
    at: Instant,
}

impl TokenBucket {
    /// A bucket holding `room` tokens at `now`.
    pub fn full(room: f64, now: Instant) -> Self {
        TokenBucket { tokens: room, at: now }
    }

    /// Whether one more passes at `rate` a second, holding at most `room`.
    pub fn take(&mut self, rate: f64, room: f64, now: Instant) -> bool {
        let refill = now.saturating_duration_since(self.at).as_secs_f64() * rate;
        self.tokens = (self.tokens + refill).min(room);
        self.at = now;
        if self.tokens < 1.0 {
            return false;
        }
        self.tokens -= 1.0;
        true
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn it_holds_its_room_and_refills_at_its_rate() {
        let start = Instant::now();
        let mut b = TokenBucket::full(3.0, start);
        assert_eq!((0..10).filter(|_| b.take(10.0, 3.0, start)).count(), 3);
        // 250 ms at 10 a second: two more, and a quarter of a third.
        let later = start + Duration::from_millis(250);
        assert_eq!((0..5).filter(|_| b.take(10.0, 3.0, later)).count(), 2);
        // Never more than the room, however long it waited.
        let much_later = start + Duration::from_secs(60);
        assert_eq!((0..10).filter(|_| b.take(10.0, 3.0, much_later)).count(), 3);
    }
}
