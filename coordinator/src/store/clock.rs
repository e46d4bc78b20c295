//! The store's clock. Every time the store writes or compares (when a node
//! was last seen and whether to forget it, address and name holds, token
//! expiry, records' ages) is on the database server's clock: coordinators
//! of one PostgreSQL store on hosts whose clocks disagree otherwise judged
//! one another's timestamps by their own, and one whose clock ran minutes
//! ahead found the nodes watching another coordinator unseen, and forgot
//! them (`--forget-after`; found by a review, 2026-12-07). Each coordinator
//! measures the server's clock against its own when it connects and every
//! few seconds after, and adds the difference. SQLite's clock is this
//! host's: nothing to measure.
use std::sync::atomic::{AtomicI64, Ordering::Relaxed};

use super::{
    Store,
    db::{self, Engine},
};
use crate::error::Result;

/// The database server's clock minus this host's, in milliseconds.
static OFFSET_MS: AtomicI64 = AtomicI64::new(0);

/// Seconds added to this host's clock, for tests that play a coordinator
/// whose clock is off; 0 otherwise.
#[doc(hidden)]
pub static LOCAL_SKEW_SECS: AtomicI64 = AtomicI64::new(0);

/// A difference of the clocks worth a word in the log (seconds).
const NOTABLE_SECS: i64 = 5;

/// The longest round trip whose measurement is taken.
const MAX_ROUND_TRIP_MS: i64 = 1000;

/// Now, in seconds since the epoch, on the store's clock.
pub fn now() -> i64 {
    (local_ms() + OFFSET_MS.load(Relaxed)).div_euclid(1000)
}

fn local_ms() -> i64 {
    let ms = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis());
    i64::try_from(ms).unwrap_or(0) + LOCAL_SKEW_SECS.load(Relaxed) * 1000
}

impl Store {
    /// Measures the database server's clock against this host's (PostgreSQL;
    /// the middle of the round trip), for [`now`].
    pub async fn sync_clock(&self) -> Result<()> {
        if self.read.engine() != Engine::Postgres {
            return Ok(());
        }
        let before = local_ms();
        let server: i64 = db::query_scalar("SELECT (EXTRACT(EPOCH FROM clock_timestamp()) * 1000)::bigint")
            .fetch_one(&self.read)
            .await?;
        let after = local_ms();
        // A slow round trip (a busy pool, a stalled server) measures little: kept as it was.
        if after - before > MAX_ROUND_TRIP_MS {
            return Ok(());
        }
        let offset = server - (before + after) / 2;
        let old = OFFSET_MS.swap(offset, Relaxed);
        if (offset - old).abs() >= NOTABLE_SECS * 1000 {
            tracing::warn!(
                offset_seconds = offset / 1000,
                "this host's clock is off the database server's: the store's times (node presence, holds, tokens) \
                 follow the server's (run NTP on both)"
            );
        }
        Ok(())
    }
}
