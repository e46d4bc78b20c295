//! `coordinator migrate --from sqlite://… --to postgres://…`: copies a
//! cluster's whole truth from its SQLite file into an empty PostgreSQL
//! database, so that its agents go on with the credentials, keys and
//! addresses they hold (no re-join) and watchers resume from their revision.
//!
//! The source is read in one `BEGIN IMMEDIATE` transaction: one consistent
//! state, and a coordinator still writing to the file is refused (it holds
//! SQLite's write lock) instead of being copied half-way. The old coordinator
//! must be stopped first: a write it made after the copy would be lost.
//! The target is written in one transaction holding the writers' advisory
//! lock; it must be empty (migrated here if it has no schema yet), and the
//! copy is checked table by table before it commits.
use std::time::Duration;

use sqlx::sqlite::SqliteConnectOptions;

use super::{
    Location,
    db::{self, Arg, Pool, Row},
    open,
};
use crate::error::{Error, Result};

#[derive(Clone, Copy)]
enum Kind {
    Int,
    OptInt,
    Text,
    OptText,
    Bytes,
    Bool,
}
use Kind::*;

/// Every table of the schema, parents before children, with its columns
/// (PostgreSQL's generated `subnets.block` is computed, not copied).
const TABLES: &[(&str, &[(&str, Kind)])] = &[
    (
        "cluster",
        &[
            ("id", Int),
            ("range_cidr", Text),
            ("node_range", Text),
            ("node_first", Text),
            ("node_last", Text),
            ("dns_domain", Text),
            ("revision", Int),
            ("created_at", Int),
            ("segment_mtu", Int),
            ("pin", OptText),
        ],
    ),
    ("admin_credentials", &[("id", Int), ("secret_hash", Text), ("created_at", Int), ("revoked_at", OptInt)]),
    (
        "join_tokens",
        &[
            ("id", Text),
            ("secret_hash", Text),
            ("description", Text),
            ("created_at", Int),
            ("expires_at", OptInt),
            ("uses_left", OptInt),
            ("uses", Int),
            ("revoked_at", OptInt),
            ("forget_after", Int),
        ],
    ),
    (
        "nodes",
        &[
            ("id", Int),
            ("name", Text),
            ("public_key", Bytes),
            ("endpoints", Text),
            ("address", Text),
            ("credential_hash", Text),
            ("joined_via", OptText),
            ("joined_at", Int),
            ("updated_at", Int),
            ("observed", Text),
            ("forget_after", Int),
        ],
    ),
    (
        "subnets",
        &[
            ("id", Int),
            ("cidr", Text),
            ("name", OptText),
            ("first_key", Text),
            ("last_key", Text),
            ("is_default", Bool),
            ("vni", Int),
            ("created_at", Int),
            ("added_by", OptInt),
            ("by_member", Bool),
            ("origin_node", OptInt),
            ("egress", Bool),
        ],
    ),
    (
        "allocations",
        &[
            ("id", Int),
            ("subnet_id", Int),
            ("node_id", Int),
            ("container", Text),
            ("address", Text),
            ("created_at", Int),
        ],
    ),
    ("dns_records", &[("id", Int), ("name", Text), ("address", Text), ("allocation_id", OptInt), ("created_at", Int)]),
    ("map_events", &[("revision", Int), ("change", Bytes), ("created_at", Int)]),
    (
        "removed_nodes",
        &[("credential_hash", Text), ("node_id", Int), ("name", Text), ("removed_at", Int), ("forgotten", Bool)],
    ),
    ("dns_holds", &[("name", Text), ("node_id", Int), ("released_at", Int), ("held_until", Int)]),
    (
        "address_holds",
        &[
            ("address", Text),
            ("subnet_id", Int),
            ("node_id", Int),
            ("container", Text),
            ("released_at", Int),
            ("held_until", Int),
        ],
    ),
    ("histories", &[("id", Int), ("history", Int), ("since", Int), ("started_at", Int)]),
    ("id_floors", &[("tbl", Text), ("last", Int)]),
    ("dns_shared_names", &[("name", Text), ("shared_at", Int)]),
    ("node_presence", &[("node_id", Int), ("watching", Bool), ("seen_at", Int)]),
];

/// Tables whose `id` is a PostgreSQL identity column: its sequence must
/// continue after the copied ids, or the next insert would collide.
const IDENTITY_TABLES: &[&str] = &["admin_credentials", "nodes", "subnets", "allocations", "dns_records", "histories"];

/// `coordinator migrate` flags (their docs are `--help`: `<path>` is text).
#[allow(rustdoc::invalid_html_tags, rustdoc::broken_intra_doc_links)]
#[derive(Debug, Clone, clap::Args)]
pub struct MigrateArgs {
    /// The source: sqlite://<path> (its coordinator stopped).
    #[arg(long)]
    pub from: String,
    /// The target: postgres://[user[:password]@]host[:port]/database, empty.
    #[arg(long)]
    pub to: String,
}

impl MigrateArgs {
    /// Runs the migration; one line on stdout or stderr. Exit 2 for a
    /// malformed flag, 1 for any other refusal or failure.
    pub async fn run(&self) -> std::process::ExitCode {
        use std::process::ExitCode;
        let parse = |flag: &str, s: &str| s.parse::<Location>().map_err(|e| format!("--{flag}: {e}"));
        let (from, to) = match (parse("from", &self.from), parse("to", &self.to)) {
            (Ok(f), Ok(t)) => (f, t),
            (Err(e), _) | (_, Err(e)) => {
                eprintln!("coordinator: {e}");
                return ExitCode::from(2);
            }
        };
        match migrate(&from, &to).await {
            Ok(copied) => {
                let rows: Vec<String> = copied.tables.iter().map(|(t, n)| format!("{t} {n}")).collect();
                println!("migrated {from} to {to} at revision {}: {}", copied.revision, rows.join(", "));
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("coordinator: {e}");
                ExitCode::FAILURE
            }
        }
    }
}

/// What was copied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Copied {
    pub revision: i64,
    /// (table, rows) in copy order.
    pub tables: Vec<(&'static str, i64)>,
}

fn value(row: &Row, col: &str, kind: Kind) -> Result<Arg, sqlx::Error> {
    Ok(match kind {
        Int => Arg::Int(Some(row.try_get::<i64, _>(col)?)),
        OptInt => Arg::Int(row.try_get::<Option<i64>, _>(col)?),
        Text => Arg::Text(Some(row.try_get::<String, _>(col)?)),
        OptText => Arg::Text(row.try_get::<Option<String>, _>(col)?),
        Bytes => Arg::Bytes(Some(row.try_get::<Vec<u8>, _>(col)?)),
        Bool => Arg::Bool(row.try_get::<bool, _>(col)?),
    })
}

/// Copies the cluster in SQLite file `from` into the PostgreSQL database `to`.
pub async fn migrate(from: &Location, to: &Location) -> Result<Copied> {
    let Location::Sqlite(path) = from else {
        return Err(Error::InvalidArgument(format!("--from {from}: the source must be sqlite://<path>")));
    };
    if !matches!(to, Location::Postgres(_)) {
        return Err(Error::InvalidArgument(format!("--to {to}: the target must be postgres://…")));
    }
    if !path.is_file() {
        return Err(Error::InvalidArgument(format!("--from {from}: no such file")));
    }
    // An idle coordinator holds no SQLite lock, but its data dir's (the
    // default store is in it): what it wrote after the copy was lost (found
    // by a review, 2026-12-06). Held through the copy: none starts meanwhile.
    let _serving = serving_lock(from, path)?;
    let options = SqliteConnectOptions::new()
        .filename(path)
        .create_if_missing(false)
        .foreign_keys(true)
        .busy_timeout(Duration::from_millis(500));
    let source = sqlx::sqlite::SqlitePoolOptions::new()
        .max_connections(1)
        .connect_with(options)
        .await
        .map_err(|e| Error::InvalidArgument(format!("--from {from}: cannot open it: {e}")))?;
    let source = Pool::Sqlite(source);
    let result = copy(&source, from, to).await;
    source.close().await;
    result
}

/// `coordinator.lock` beside the file at `path`, if there is one, taken
/// (a coordinator serving that data dir holds it); refused if taken, and
/// if it is there but cannot be opened (another user's, mode 0600): whether
/// a coordinator holds it cannot be known then.
fn serving_lock(from: &Location, path: &std::path::Path) -> Result<Option<nix::fcntl::Flock<std::fs::File>>> {
    let lock = path.with_file_name("coordinator.lock");
    let file = match std::fs::File::open(&lock) {
        Ok(file) => file,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => {
            return Err(Error::FailedPrecondition(format!(
                "--from {from}: cannot open {} to see whether a coordinator serves it ({e}); \
                 run migrate as the user the coordinator runs as",
                lock.display()
            )));
        }
    };
    match nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockExclusiveNonblock) {
        Ok(held) => Ok(Some(held)),
        Err((_, nix::errno::Errno::EWOULDBLOCK)) => Err(Error::FailedPrecondition(format!(
            "--from {from}: a coordinator serves it (it holds {}); is its coordinator still running? stop it first",
            lock.display()
        ))),
        Err((_, e)) => Err(Error::FailedPrecondition(format!("--from {from}: {}: {e}", lock.display()))),
    }
}

async fn copy(source: &Pool, from: &Location, to: &Location) -> Result<Copied> {
    // The write lock: a coordinator in the middle of a write keeps it, and
    // while the copy holds it no one else can change the file.
    let mut src = source.begin_write().await.map_err(|e| {
        Error::FailedPrecondition(format!(
            "--from {from}: cannot lock it ({e}); is its coordinator still running? stop it first"
        ))
    })?;
    let latest = sqlx::migrate!("../migrations/sqlite").iter().map(|m| m.version).max().unwrap_or(0);
    let applied: Option<i64> = db::query_scalar("SELECT MAX(version) FROM _sqlx_migrations WHERE success")
        .fetch_one(&mut src)
        .await
        .map_err(|_| Error::FailedPrecondition(format!("--from {from}: not a weave coordinator database")))?;
    if applied.is_some_and(|a| a > latest) {
        return Err(Error::FailedPrecondition(format!(
            "--from {from}: its schema is at version {} but this coordinator's is at {latest}: it was migrated \
             by a newer weave; migrate it with that version's `coordinator migrate`",
            applied.unwrap_or(0)
        )));
    }
    if applied != Some(latest) {
        return Err(Error::FailedPrecondition(format!(
            "--from {from}: its schema is at version {} but this coordinator's is at {latest}; \
             start this version's `coordinator serve` on it once, stop it, then migrate",
            applied.unwrap_or(0)
        )));
    }
    let revision: Option<i64> =
        db::query_scalar("SELECT revision FROM cluster WHERE id = 1").fetch_optional(&mut src).await?;
    let Some(revision) = revision else {
        return Err(Error::FailedPrecondition(format!("--from {from}: holds no cluster (never started)")));
    };

    let (target, _) = open::pools(to).await?;
    let mut dst = target.begin_write().await?;
    for (table, _) in TABLES {
        let n: i64 =
            db::query_scalar(sqlx::AssertSqlSafe(format!("SELECT COUNT(*) FROM {table}"))).fetch_one(&mut dst).await?;
        if n > 0 {
            return Err(Error::FailedPrecondition(format!(
                "--to {to}: not empty ({table} holds {n} row(s)); migrate only into an empty database"
            )));
        }
    }
    let mut tables = Vec::new();
    for (table, cols) in TABLES {
        let names = cols.iter().map(|(c, _)| *c).collect::<Vec<_>>().join(", ");
        let marks = (1..=cols.len()).map(|i| format!("${i}")).collect::<Vec<_>>().join(", ");
        let rows = db::query(sqlx::AssertSqlSafe(format!("SELECT {names} FROM {table} ORDER BY 1")))
            .fetch_all(&mut src)
            .await?;
        let insert = format!("INSERT INTO {table} ({names}) VALUES ({marks})");
        for row in &rows {
            let mut q = db::query(sqlx::AssertSqlSafe(insert.clone()));
            for (col, kind) in *cols {
                q = q.bind(value(row, col, *kind)?);
            }
            q.execute(&mut dst).await?;
        }
        let copied: i64 =
            db::query_scalar(sqlx::AssertSqlSafe(format!("SELECT COUNT(*) FROM {table}"))).fetch_one(&mut dst).await?;
        if copied != rows.len() as i64 {
            return Err(Error::Bug(format!("{table}: {} row(s) read, {copied} in the target", rows.len())));
        }
        tables.push((*table, copied));
    }
    for table in IDENTITY_TABLES {
        db::query(sqlx::AssertSqlSafe(format!(
            "SELECT setval(pg_get_serial_sequence('{table}', 'id'), COALESCE(MAX(id), 0) + 1, false) FROM {table}"
        )))
        .execute(&mut dst)
        .await?;
    }
    let copied_revision: i64 =
        db::query_scalar("SELECT revision FROM cluster WHERE id = 1").fetch_one(&mut dst).await?;
    if copied_revision != revision {
        return Err(Error::Bug(format!("revision {revision} read, {copied_revision} written")));
    }
    // Coordinators already running on the target re-read on a notification.
    db::query("SELECT pg_notify($1, $2)")
        .bind(super::follow::CHANNEL)
        .bind(revision.to_string())
        .execute(&mut dst)
        .await?;
    dst.commit().await?;
    // The source is only read: roll back (drop) its transaction.
    drop(src);
    target.close().await;
    Ok(Copied { revision, tables })
}
