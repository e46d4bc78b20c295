//! A bound on the "authentication failed" lines in total: each source's
//! budget bounds its own, but an outsider with many addresses (IPv6 /64s
//! are cheap) wrote lines as fast as it had sources (left open by the
//! review of 2026-12-06). Past `PER_SECOND` lines in a second, the rest of
//! that second's failures are counted and said in one line.
use std::time::Duration;

/// Lines a second, in total, before failures are only counted.
pub(super) const PER_SECOND: u32 = 20;

#[derive(Default)]
pub(super) struct LogBudget {
    /// The second (since the coordinator's epoch) being counted.
    second: u64,
    logged: u32,
    unlogged: u64,
}

impl LogBudget {
    /// Whether a failure at `now` gets its line, and (the second, counted
    /// from the same start as `now`; how many) failures of an earlier second
    /// that went unlogged, to be said once, now.
    pub(super) fn admit(&mut self, now: Duration) -> (bool, Option<(u64, u64)>) {
        let second = now.as_secs();
        let mut unlogged = None;
        if second != self.second {
            unlogged = Some((self.second, std::mem::take(&mut self.unlogged))).filter(|(_, n)| *n > 0);
            (self.second, self.logged) = (second, 0);
        }
        if self.logged < PER_SECOND {
            self.logged += 1;
            return (true, unlogged);
        }
        self.unlogged += 1;
        (false, unlogged)
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::{LogBudget, PER_SECOND};

    #[test]
    fn past_the_budget_failures_are_counted_and_said_once_the_second_after() {
        let mut b = LogBudget::default();
        let at = |ms| Duration::from_millis(ms);
        for i in 0..PER_SECOND {
            assert_eq!(b.admit(at(u64::from(i))), (true, None));
        }
        for i in 0..500 {
            assert_eq!(b.admit(at(100 + i)), (false, None));
        }
        // Later: its first line, and the 500 unlogged of second 0 said.
        assert_eq!(b.admit(at(7_200)), (true, Some((0, 500))));
        assert_eq!(b.admit(at(7_300)), (true, None));
        // A quiet stretch: nothing left to say.
        assert_eq!(b.admit(at(9_000)), (true, None));
    }
}
