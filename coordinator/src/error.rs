//! What can go wrong in the coordinator, and the one place it becomes a gRPC status.
use tonic::{Code, Status};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The request is malformed: bad CIDR, host bits, bad name, bad key.
    #[error("{0}")]
    InvalidArgument(String),
    /// A named thing (node, subnet, token, container, record) does not exist.
    #[error("{0}")]
    NotFound(String),
    /// It exists already, or conflicts with something that does (overlap, taken name, held address).
    #[error("{0}")]
    AlreadyExists(String),
    /// The state forbids it now (subnet still in use, token revoked or spent).
    #[error("{0}")]
    FailedPrecondition(String),
    /// A subnet or the node block has no free address.
    #[error("{0}")]
    Exhausted(String),
    /// No credential, or one the coordinator does not know.
    #[error("{0}")]
    Unauthenticated(String),
    /// A known caller asked for something its role does not allow.
    #[error("{0}")]
    PermissionDenied(String),
    /// The database cannot be reached now (connection refused or lost, no
    /// connection free in time): the caller should retry, here or at another coordinator.
    #[error("{0}")]
    Unavailable(String),
    /// A broken invariant (a panicked task): a bug, reported as INTERNAL.
    #[error("internal error: {0}")]
    Bug(String),
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
    #[error("database migration: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// The database is out of reach (UNAVAILABLE), rather than the request wrong.
    pub fn is_unavailable(&self) -> bool {
        match self {
            Error::Unavailable(_) => true,
            Error::Database(e) => database_unreachable(e),
            _ => false,
        }
    }
}

impl From<Error> for Status {
    fn from(e: Error) -> Self {
        let code = match &e {
            Error::InvalidArgument(_) => Code::InvalidArgument,
            Error::NotFound(_) => Code::NotFound,
            Error::AlreadyExists(_) => Code::AlreadyExists,
            Error::FailedPrecondition(_) => Code::FailedPrecondition,
            Error::Exhausted(_) => Code::ResourceExhausted,
            Error::Unauthenticated(_) => Code::Unauthenticated,
            Error::PermissionDenied(_) => Code::PermissionDenied,
            Error::Unavailable(_) => Code::Unavailable,
            Error::Database(db) if database_unreachable(db) => {
                tracing::warn!(error = %e, "the database is unavailable");
                Code::Unavailable
            }
            // A constraint the code should have checked first: still a conflict,
            // and the caller learns which rule it broke.
            Error::Database(sqlx::Error::Database(db)) if db.is_unique_violation() => Code::AlreadyExists,
            // What a write refers to went in a concurrent transaction (an
            // allocation for a node removed meanwhile, on PostgreSQL): gone,
            // not a fault of the coordinator's; the raw text names no rule.
            Error::Database(sqlx::Error::Database(db)) if db.is_foreign_key_violation() => {
                return Status::not_found(
                    "the node or subnet this refers to was removed meanwhile (a concurrent node rm or subnet rm)",
                );
            }
            Error::Database(sqlx::Error::Database(db)) if db.message().contains("overlaps") => Code::AlreadyExists,
            // PostgreSQL's exclusion constraint (overlapping subnets).
            Error::Database(sqlx::Error::Database(db)) if db.code().as_deref() == Some("23P01") => Code::AlreadyExists,
            // Room runs out: not "try again" at once (UNAVAILABLE, exit 3,
            // "cannot reach the coordinator": a review, 2026-12-06) but
            // exhausted, saying what is.
            Error::Database(db) if disk_full(db) => {
                tracing::error!(error = %e, "the database's disk is full");
                return Status::resource_exhausted(clipped(format!("the coordinator's database disk is full: {e}")));
            }
            Error::Database(_) | Error::Migrate(_) | Error::Bug(_) => {
                tracing::error!(error = %e, "internal error");
                Code::Internal
            }
        };
        Status::new(code, clipped(e.to_string()))
    }
}

/// Whether `e` says the database is out of reach (rather than that the
/// request or the code was wrong): connection refused or lost, no pooled
/// connection in time, PostgreSQL shutting down / not accepting
/// connections (SQLSTATE classes 08 and 57P), or ending a session left idle
/// inside its transaction (25P03, see `store::open::PG_IDLE_IN_TRANSACTION`:
/// the coordinator stalled; its write was rolled back and may be sent again).
pub fn database_unreachable(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::Io(_) | sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed | sqlx::Error::Tls(_) => true,
        sqlx::Error::Protocol(_) => true,
        sqlx::Error::Database(db) => {
            db.code().is_some_and(|c| c.starts_with("08") || c.starts_with("57P") || c == "53300" || c == "25P03")
        }
        _ => false,
    }
}

/// Whether `e` says the database's disk is full: SQLite's SQLITE_FULL (13),
/// PostgreSQL's disk_full (SQLSTATE 53100).
pub fn disk_full(e: &sqlx::Error) -> bool {
    matches!(e, sqlx::Error::Database(db) if matches!(db.code().as_deref(), Some("13") | Some("53100")))
}

impl From<weave_proto::cidr::CidrError> for Error {
    fn from(e: weave_proto::cidr::CidrError) -> Self {
        Error::InvalidArgument(e.to_string())
    }
}

/// A status message travels in an HTTP/2 header, and some quote what the
/// caller sent: a refused multi-megabyte field must not come back whole
/// (the client would refuse the header and never see the refusal).
const MAX_MESSAGE: usize = 1024;

fn clipped(mut message: String) -> String {
    if message.len() > MAX_MESSAGE {
        let mut end = MAX_MESSAGE;
        while !message.is_char_boundary(end) {
            end -= 1;
        }
        message.truncate(end);
        message.push('…');
    }
    message
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_messages_are_clipped_on_a_character_boundary() {
        let status = Status::from(Error::InvalidArgument(format!("'{}' is bad", "é".repeat(4000))));
        assert!(status.message().len() <= MAX_MESSAGE + '…'.len_utf8());
        assert!(status.message().ends_with('…'));
        assert_eq!(Status::from(Error::NotFound("no node 'x'".into())).message(), "no node 'x'");
    }

    /// A write whose node or subnet went meanwhile is NOT_FOUND with a
    /// sentence, not INTERNAL with the database's text (seen on PostgreSQL:
    /// allocations racing a node's removal).
    #[tokio::test]
    async fn a_foreign_key_violation_is_not_found() {
        use sqlx::{Connection, sqlite::SqliteConnectOptions};
        let mut c =
            sqlx::SqliteConnection::connect_with(&SqliteConnectOptions::new().foreign_keys(true)).await.unwrap();
        sqlx::query("CREATE TABLE n (id INTEGER PRIMARY KEY); CREATE TABLE a (n INTEGER NOT NULL REFERENCES n(id))")
            .execute(&mut c)
            .await
            .unwrap();
        let e = sqlx::query("INSERT INTO a (n) VALUES (7)").execute(&mut c).await.unwrap_err();
        let status = Status::from(Error::Database(e));
        assert_eq!(status.code(), Code::NotFound, "{status:?}");
        assert!(status.message().contains("removed meanwhile"), "{status:?}");
    }
}
