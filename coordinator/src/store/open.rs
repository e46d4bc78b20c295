//! `--store`: where the truth lives (a SQLite file, the default, or a
//! PostgreSQL database), and opening it: pools, a first connection whose
//! failure says what went wrong, and the engine's migrations.
use std::{fmt, path::PathBuf, str::FromStr, time::Duration};

use sqlx::{
    ConnectOptions as _, Connection as _,
    postgres::{PgConnectOptions, PgConnection, PgPoolOptions, PgSslMode},
    sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous},
};

use super::{db::Pool, redact::redact};
use crate::error::{Error, Result};

/// How long a coordinator waits for a PostgreSQL connection, at start and
/// for each RPC: past it the RPC answers UNAVAILABLE instead of hanging.
pub(crate) const PG_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Connections one coordinator keeps to PostgreSQL for reads: credential
/// lookups (every RPC makes up to three before its caller is known, so
/// anyone who can reach the port can keep these busy), lists, snapshots.
const PG_READ_CONNECTIONS: u32 = 16;

/// Connections one coordinator keeps to PostgreSQL for writing, apart from
/// the read pool so that a flood of reads cannot starve them: the open
/// batch's transaction (which holds the cluster-wide write lock) and one
/// more for whatever runs under the writer lock beside it (catching up with
/// the event log, reloading the map). Nothing holding the writer lock waits
/// on the read pool. With the follower's LISTEN connection, a coordinator
/// opens at most PG_READ_CONNECTIONS + PG_WRITE_CONNECTIONS + 1 sessions.
const PG_WRITE_CONNECTIONS: u32 = 2;

/// How long PostgreSQL lets one of a coordinator's sessions sit idle inside
/// a transaction before it ends that session. A write batch holds the
/// cluster-wide write lock (an advisory lock) for its whole transaction and
/// runs its statements back to back; a session idle that long belongs to a
/// coordinator that froze, or whose host vanished without closing its
/// connections, and every other coordinator's writes would otherwise wait
/// for it until TCP keepalive noticed (hours by default). Ending it rolls
/// the batch back (its writes were not acknowledged) and frees the lock.
pub(crate) const PG_IDLE_IN_TRANSACTION: Duration = Duration::from_secs(10);

/// A parsed `--store`.
#[derive(Clone, PartialEq, Eq)]
pub enum Location {
    Sqlite(PathBuf),
    /// The URL as given (shown only with its password hidden, see Display).
    Postgres(String),
}

#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct LocationError(String);

impl FromStr for Location {
    type Err = LocationError;

    fn from_str(s: &str) -> Result<Self, LocationError> {
        let s = s.trim();
        if let Some(path) = s.strip_prefix("sqlite://") {
            if path.is_empty() {
                return Err(LocationError(
                    "'sqlite://' needs a file path, e.g. sqlite:///var/lib/weave/coordinator.db".into(),
                ));
            }
            return Ok(Self::Sqlite(PathBuf::from(path)));
        }
        if s.starts_with("postgres://") || s.starts_with("postgresql://") {
            let (url, dropped) = super::redact::without_unknown_parameters(s);
            if !dropped.is_empty() {
                tracing::warn!(
                    parameters = ?dropped,
                    "--store: connect parameters sqlx does not know are left out (known: sslmode, sslrootcert, \
                     sslcert, sslkey, host, hostaddr, port, dbname, user, password, application_name, options, \
                     statement-cache-capacity)"
                );
            }
            let s = url.as_str();
            PgConnectOptions::from_str(s)
                .map_err(|e| LocationError(format!("'{}' is not a valid PostgreSQL URL: {e}", redact(s))))?;
            return Ok(Self::Postgres(s.to_string()));
        }
        Err(LocationError(format!(
            "'{}' is neither sqlite://<path> nor postgres://[user[:password]@]host[:port]/database",
            redact(s)
        )))
    }
}

impl Location {
    /// The addresses at which this coordinator reaches its database over the
    /// network (none for SQLite or a Unix socket), resolved now: a subnet
    /// holding one would route the coordinator's host's traffic to it into
    /// the overlay, and cut the coordinator off its store.
    pub fn network_addresses(&self) -> Vec<std::net::IpAddr> {
        let Self::Postgres(url) = self else { return Vec::new() };
        let Ok(options) = PgConnectOptions::from_str(url) else { return Vec::new() };
        let host = options.get_host().trim_matches(['[', ']']);
        if options.get_socket().is_some() || host.starts_with('/') {
            return Vec::new();
        }
        let mut ips: Vec<std::net::IpAddr> = match std::net::ToSocketAddrs::to_socket_addrs(&(host, options.get_port()))
        {
            Ok(addrs) => addrs.map(|a| a.ip().to_canonical()).collect(),
            Err(e) => {
                tracing::warn!("the database host {host} does not resolve now ({e}): subnets over it are not refused");
                Vec::new()
            }
        };
        ips.sort();
        ips.dedup();
        ips
    }
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Sqlite(p) => write!(f, "sqlite://{}", p.display()),
            Self::Postgres(url) => f.write_str(&redact(url)),
        }
    }
}

impl fmt::Debug for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// A warning when the database is reached over the network without a
/// verified TLS connection (`sslmode` other than `verify-ca`/`verify-full`):
/// anyone on that path could read what the coordinator stores (node keys,
/// hashed secrets) or pose as the database. A Unix socket or loopback is not
/// "the network".
fn unverified(options: &PgConnectOptions) -> Option<String> {
    let host = options.get_host();
    let local = options.get_socket().is_some()
        || host.starts_with('/')
        || host == "localhost"
        || host.trim_matches(['[', ']']).parse::<std::net::IpAddr>().is_ok_and(|a| a.is_loopback());
    let verified = matches!(options.get_ssl_mode(), PgSslMode::VerifyCa | PgSslMode::VerifyFull);
    (!local && !verified).then(|| {
        format!(
            "the database at {host} is reached without verified TLS (sslmode={}): anyone on the path can read or \
             change what the coordinator stores; add ?sslmode=verify-full&sslrootcert=<the CA's PEM file> to --store",
            match options.get_ssl_mode() {
                PgSslMode::Disable => "disable",
                PgSslMode::Allow => "allow",
                PgSslMode::Prefer => "prefer",
                PgSslMode::Require => "require",
                PgSslMode::VerifyCa => "verify-ca",
                PgSslMode::VerifyFull => "verify-full",
            }
        )
    })
}

/// The database file (and its write-ahead log and shared memory, which
/// SQLite creates with the file's mode) readable by its owner only: made
/// 0600 before SQLite makes it, or set so. It holds the hashes of every
/// credential and token; a data dir left 0755 (made by hand, or by a
/// package) showed them to every local user (found by a review, 2026-12-05).
fn owner_only(path: &std::path::Path) -> Result<()> {
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    // An empty file is a new database to SQLite.
    if let Err(e) = std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(path)
        && e.kind() != std::io::ErrorKind::AlreadyExists
    {
        return Err(Error::InvalidArgument(format!("cannot create {}: {e}", path.display())));
    }
    for suffix in ["", "-wal", "-shm"] {
        let mut p = path.as_os_str().to_owned();
        p.push(suffix);
        let p = std::path::Path::new(&p);
        // Through the file itself, never a link's target (O_NOFOLLOW).
        let made_private = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(nix::libc::O_NOFOLLOW)
            .open(p)
            .and_then(|f| f.set_permissions(std::fs::Permissions::from_mode(0o600)));
        match made_private {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                tracing::warn!(path = %p.display(), error = %e, "cannot make the database readable by its owner only")
            }
            _ => {}
        }
    }
    Ok(())
}

/// The write and read pools for `location`, migrated.
/// The options of one kind of PostgreSQL session (`write`, `read`,
/// `listen`): `application_name` `weave-coordinator <kind>`, so that
/// `pg_stat_activity` tells them apart, unless `--store` set one.
pub(super) fn pg_session(options: &PgConnectOptions, kind: &str) -> PgConnectOptions {
    match options.get_application_name() {
        Some(name) if !name.starts_with("weave-coordinator ") => options.clone(),
        _ => options.clone().application_name(&format!("weave-coordinator {kind}")),
    }
}

/// sqlx's refusal of a database that a newer weave migrated (a migration
/// this binary does not have), said as what it means: during a rolling
/// upgrade on one PostgreSQL database, a coordinator not upgraded yet that
/// restarts after the first upgraded one started stops here. It said only
/// "migration 15 was previously applied but is missing in the resolved
/// migrations" (found by a review, 2026-12-05).
fn newer_schema(e: sqlx::migrate::MigrateError, known: &sqlx::migrate::Migrator) -> Error {
    match e {
        sqlx::migrate::MigrateError::VersionMissing(version) => Error::FailedPrecondition(format!(
            "the database was migrated by a newer weave (it has schema migration {version}; this coordinator knows \
             up to {}): run this coordinator's newer version (going back needs the database from before the \
             upgrade)",
            known.iter().map(|m| m.version).max().unwrap_or(0)
        )),
        e => e.into(),
    }
}

pub(super) async fn pools(location: &Location) -> Result<(Pool, Pool)> {
    match location {
        Location::Sqlite(path) => {
            owner_only(path)?;
            let options = SqliteConnectOptions::new()
                .filename(path)
                .create_if_missing(true)
                .journal_mode(SqliteJournalMode::Wal)
                // FULL: an acknowledged allocation survives power loss, not only a crash.
                .synchronous(SqliteSynchronous::Full)
                .foreign_keys(true)
                .busy_timeout(Duration::from_secs(10));
            let write = SqlitePoolOptions::new().max_connections(1).connect_with(options.clone()).await?;
            let schema = sqlx::migrate!("../migrations/sqlite");
            schema.run(&write).await.map_err(|e| newer_schema(e, &schema))?;
            let read = SqlitePoolOptions::new().max_connections(8).connect_with(options).await?;
            Ok((Pool::Sqlite(write), Pool::Sqlite(read)))
        }
        Location::Postgres(url) => {
            let shown = redact(url);
            let options = PgConnectOptions::from_str(url)
                .map_err(|e| Error::InvalidArgument(format!("'{shown}' is not a valid PostgreSQL URL: {e}")))?
                .log_statements(tracing::log::LevelFilter::Debug)
                .options([("idle_in_transaction_session_timeout", format!("{}s", PG_IDLE_IN_TRANSACTION.as_secs()))]);
            if let Some(warning) = unverified(&options) {
                tracing::warn!("{warning}");
            }
            // One connection first: its error (refused, unknown host, wrong
            // password, no such database) is the one worth reporting; a
            // pool would only say that it timed out.
            let first = tokio::time::timeout(PG_CONNECT_TIMEOUT, PgConnection::connect_with(&options))
                .await
                .map_err(|_| {
                    Error::Unavailable(format!(
                        "cannot connect to the database {shown}: no answer within {} s",
                        PG_CONNECT_TIMEOUT.as_secs()
                    ))
                })?
                .map_err(|e| {
                    // The server's own sentence: sqlx's adds "error returned from
                    // database" and the line of PostgreSQL's source it came from
                    // ("at line 334"), which read as a line of the user's.
                    let why = e.as_database_error().map_or_else(|| e.to_string(), |d| d.message().to_string());
                    Error::Unavailable(format!("cannot connect to the database {shown}: {why}"))
                })?;
            let _ = first.close().await;
            // Both pools' sessions get the same options (the idle-in-transaction
            // timeout above), each its own application_name.
            let write = PgPoolOptions::new()
                .max_connections(PG_WRITE_CONNECTIONS)
                .acquire_timeout(PG_CONNECT_TIMEOUT)
                .connect_lazy_with(pg_session(&options, "write"));
            let schema = sqlx::migrate!("../migrations/postgres");
            schema.run(&write).await.map_err(|e| newer_schema(e, &schema))?;
            let read = PgPoolOptions::new()
                .max_connections(PG_READ_CONNECTIONS)
                .acquire_timeout(PG_CONNECT_TIMEOUT)
                .connect_lazy_with(pg_session(&options, "read"));
            Ok((Pool::Postgres(write), Pool::Postgres(read)))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_verified_tls_connection_over_the_network_goes_unwarned() {
        let warned = |url: &str| unverified(&PgConnectOptions::from_str(url).unwrap());
        for quiet in [
            "postgres://weave@localhost/weave",
            "postgres://weave@127.0.0.1/weave",
            "postgres://weave@[::1]/weave",
            "postgres://weave@db.example/weave?host=/run/postgresql",
            "postgres://weave:pw@db.example/weave?sslmode=verify-full&sslrootcert=/etc/weave/pg-ca.pem",
            "postgres://weave:pw@192.0.2.5/weave?sslmode=verify-ca&sslrootcert=/etc/weave/pg-ca.pem",
        ] {
            assert_eq!(warned(quiet), None, "{quiet}");
        }
        for (loud, mode) in [
            ("postgres://weave:pw@db.example/weave", "prefer"),
            ("postgres://weave:pw@192.0.2.5/weave?sslmode=require", "require"),
            ("postgres://weave:pw@192.0.2.5/weave?sslmode=disable", "disable"),
        ] {
            let w = warned(loud).unwrap_or_else(|| panic!("{loud} is not warned about"));
            assert!(w.contains(&format!("sslmode={mode}")) && w.contains("verify-full"), "{w}");
            assert!(!w.contains("pw@"), "the password is shown: {w}");
        }
    }

    #[test]
    fn locations_parse_and_hide_passwords() {
        assert_eq!("sqlite:///var/lib/x.db".parse::<Location>().unwrap(), Location::Sqlite("/var/lib/x.db".into()));
        let pg: Location = "postgres://weave:s3cret@db.example:5432/weave".parse().unwrap();
        assert_eq!(pg.to_string(), "postgres://weave:***@db.example:5432/weave");
        assert!(format!("{pg:?}").contains("***") && !format!("{pg:?}").contains("s3cret"));
        for bad in ["", "sqlite://", "mysql://x/y", "/var/lib/weave/coordinator.db", "postgres://u:p@h:notaport/d"] {
            let e = bad.parse::<Location>().unwrap_err().to_string();
            assert!(!e.contains("p@h") || !e.contains(":p@"), "{e}");
        }
        assert_eq!(redact("postgres://u@h/d"), "postgres://u@h/d");
        assert_eq!(redact("postgres://u:p@h/d"), "postgres://u:***@h/d");
        assert_eq!(redact("postgres://u:p@h/d?sslmode=disable"), "postgres://u:***@h/d?sslmode=disable");
        for bad in [
            "postgres:/weave:wrongpw@h:5433/w1",
            "postgres://weave:se/cretpw@h:5433/w1",
            "postgres://weave:se?cretpw@h/w1",
        ] {
            let e = bad.parse::<Location>().unwrap_err().to_string();
            assert!(!e.contains("wrongpw") && !e.contains("cretpw"), "{e}");
        }
    }

    /// Databases created before the migrations moved to migrations/sqlite/
    /// recorded these versions and SHA-384 checksums (sqlx refuses to open
    /// a database whose applied migrations changed): they must never change.
    #[test]
    fn sqlite_migrations_keep_what_existing_databases_recorded_and_postgres_has_the_same_versions() {
        let sqlite: Vec<(i64, String)> =
            sqlx::migrate!("../migrations/sqlite").iter().map(|m| (m.version, hex::encode(&m.checksum))).collect();
        assert_eq!(
            sqlite,
            [
                (
                    1,
                    "7c51fca5d4c528798879354e9a273d301e7ffa2fc8fc09209a66fc017f6bafb7a1c5626cf36594c36bb1f1fa5de86a9b"
                        .to_string()
                ),
                (
                    2,
                    "99f345eadf929a78992b4ed8403631949ed05fd71a2b5f9e5972cd934a48458f30b5832064174a5173b68c78eaeba5db"
                        .to_string()
                ),
                (
                    3,
                    "55dbfdc86b66fd381b1e0a7fa17790ecac2b9f296d0d0cacaf46562442384af8c4e01685544aac0d6d64499845ed23f0"
                        .to_string()
                ),
                (
                    4,
                    "a304b0ee00eb8aa00b4b10bb7b1cd290084b1170872a21736abb0abbcbd55346a1fc912e35245b958c8536eba00893ab"
                        .to_string()
                ),
                (
                    5,
                    "93abb98feee10a0cceeccfa56d0c114961f5ebac9336176bc15427ea171cd60991d4a734877d387c1937e5abb32fd48f"
                        .to_string()
                ),
                (
                    6,
                    "9b69adf38892c442fc2e97af09289f6e7edb76ca0de7641dad767c867d8d0a1b07eced5e3cdd9ce9a5b4bfe56768922d"
                        .to_string()
                ),
                (
                    7,
                    "b94e21f08fc456ff3a2bad4028661892388bc7ea89f1772daac7b32c7b8aa3e9a8b67a0bfaf6f126b6a6bfc07e6aa729"
                        .to_string()
                ),
                (
                    8,
                    "95ed0284b32124ecd4980cd4488ec58c9081aaebd5dba7ec14e94e8f40b6ba9d58928fcb3d9e5278ac01e257f5716bce"
                        .to_string()
                ),
                (
                    9,
                    "5023ae07970f0c3c43f1e0ed2fffe220ddc1b31c156963fcaa743a7761fc868544a20baf406343eb24e4354484f3e223"
                        .to_string()
                ),
                (
                    10,
                    "31e002e19b3dec19485d92e78335dcb58295a7ee450b486dd48d9315a465b41133f93bfae46abae74ef9bc00c50f1fba"
                        .to_string()
                ),
                (
                    11,
                    "c32c06868dc7eeba630a22ef12cc2fc708344989f782d79e80c17e983e304459dab01edc5eb24f5f5387d4cc30461bac"
                        .to_string()
                ),
                (
                    12,
                    "af59954739a4a01188b531b474207a1f768d72ebc7c5ce2ecc7688bdc9ca8e9444c31e413cabdff7225f4156b8dba0f0"
                        .to_string()
                ),
                (
                    13,
                    "106fdf92fa9046c5253e8cd559ae3a65b64f4f82db4c85ee291c9e05891c7ff4064a772ad441835a707d5b6b94441b66"
                        .to_string()
                ),
                (
                    14,
                    "1265231d8545e6ab80688b4e65fb1149d10162396c996d9acdf4174d4aab72f737f0bdff029b39f60c155d38788a11b5"
                        .to_string()
                ),
                (
                    15,
                    "e0dc06485cfed761b6ba3c74041f951a27bda2d709b4c992a1ca504ab5dde65452b759bbdca86e6e53eb0dc878563f5c"
                        .to_string()
                ),
                (
                    16,
                    "3fae4a8dfdec864aded4c5e3ca359881d01730221ab8431899d4ad035d7b8be7ea42be6428e20939f7a927c722e39b89"
                        .to_string()
                ),
                (
                    17,
                    "8adb751b38846b38aa75f54d3d5f8997016428e30a60a92a7ac3c963ae869ec5a49863c7cd29525ccf68591958423cc2"
                        .to_string()
                ),
            ]
        );
        let pg: Vec<(i64, String)> =
            sqlx::migrate!("../migrations/postgres").iter().map(|m| (m.version, m.description.to_string())).collect();
        let lite: Vec<(i64, String)> =
            sqlx::migrate!("../migrations/sqlite").iter().map(|m| (m.version, m.description.to_string())).collect();
        assert_eq!(pg, lite, "one migration per version in each engine");
    }

    /// A container's DNS records are found by their allocation, not by
    /// reading the whole table under the writer: releases, node removals,
    /// the per-node DNS quota and the cascade of every allocation delete.
    #[tokio::test]
    async fn records_are_found_by_their_allocation_without_a_scan() {
        use sqlx::sqlite::SqlitePoolOptions;
        let pool = SqlitePoolOptions::new().max_connections(1).connect("sqlite::memory:").await.unwrap();
        sqlx::migrate!("../migrations/sqlite").run(&pool).await.unwrap();
        for q in [
            "SELECT COUNT(*) FROM dns_records d JOIN allocations a ON a.id = d.allocation_id WHERE a.node_id = 1",
            "SELECT d.id FROM dns_records d JOIN allocations a ON a.id = d.allocation_id WHERE a.node_id = 1 ORDER BY d.id",
            "SELECT id FROM dns_records WHERE allocation_id = 1",
        ] {
            let plan: Vec<(i64, i64, i64, String)> =
                sqlx::query_as(sqlx::AssertSqlSafe(format!("EXPLAIN QUERY PLAN {q}"))).fetch_all(&pool).await.unwrap();
            let steps: Vec<&str> = plan.iter().map(|p| p.3.as_str()).collect();
            assert!(
                !steps.iter().any(|s| s.starts_with("SCAN d") || s.starts_with("SCAN dns_records")),
                "{q}: {steps:?}"
            );
            assert!(steps.iter().any(|s| s.contains("dns_records_by_allocation")), "{q}: {steps:?}");
        }
    }
}
