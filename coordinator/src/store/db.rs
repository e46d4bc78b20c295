//! The two engines behind one small query API, so that the store's SQL is
//! written once: [`query`]/[`query_scalar`] look like sqlx's, keep their bound
//! values as [`Arg`]s, and run them on SQLite or PostgreSQL with sqlx's own
//! engine-specific types (no `sqlx::Any`: each engine decodes its own rows,
//! with its own type checks).
//!
//! The SQL the store writes is the common part of both dialects: `$n`
//! placeholders, `RETURNING`, `ON CONFLICT`, BIGINT ids and counts.
use std::marker::PhantomData;

use sqlx::{
    ColumnIndex, Decode, Postgres, Row as _, SqlSafeStr, SqlStr, Sqlite, Transaction, Type,
    pool::PoolConnection,
    postgres::{PgConnection, PgPool, PgRow},
    sqlite::{SqliteConnection, SqlitePool, SqliteRow},
};

/// Which engine a store runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Engine {
    Sqlite,
    Postgres,
}

/// A connection pool of either engine.
#[derive(Clone, Debug)]
pub enum Pool {
    Sqlite(SqlitePool),
    Postgres(PgPool),
}

/// Key of the transaction-level advisory lock every PostgreSQL write takes
/// first: writers from all coordinators queue on it as SQLite's one writer
/// queues on `BEGIN IMMEDIATE`, so each write transaction reads the state
/// every earlier one committed (READ COMMITTED) and picks its addresses from it.
pub(crate) const WRITE_LOCK: i64 = 0x7765_6176_6501; // "weave" 1

impl Pool {
    pub fn engine(&self) -> Engine {
        match self {
            Self::Sqlite(_) => Engine::Sqlite,
            Self::Postgres(_) => Engine::Postgres,
        }
    }

    pub async fn acquire(&self) -> Result<Conn, sqlx::Error> {
        Ok(match self {
            Self::Sqlite(p) => Conn::SqlitePooled(p.acquire().await?),
            Self::Postgres(p) => Conn::PgPooled(p.acquire().await?),
        })
    }

    /// A read transaction: one snapshot for all its statements.
    pub async fn begin_read(&self) -> Result<Conn, sqlx::Error> {
        Ok(match self {
            Self::Sqlite(p) => Conn::SqliteTx(p.begin().await?),
            Self::Postgres(p) => Conn::PgTx(p.begin_with("BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY").await?),
        })
    }

    /// A write transaction, holding the engine's writer lock.
    pub async fn begin_write(&self) -> Result<Conn, sqlx::Error> {
        Ok(match self {
            Self::Sqlite(p) => match p.begin_with("BEGIN IMMEDIATE").await {
                // A COMMIT that failed (a full disk: SQLite rolled the
                // transaction back itself, so sqlx's own ROLLBACK failed)
                // left sqlx counting a transaction on the one write
                // connection, and every later write was refused (found by a
                // review, 2026-12-04): that connection goes, the pool opens
                // a new one.
                Err(sqlx::Error::InvalidSavePointStatement) => {
                    tracing::warn!("the write connection is stuck in a failed transaction: opening a new one");
                    let _ = p.acquire().await?.close().await;
                    Conn::SqliteTx(p.begin_with("BEGIN IMMEDIATE").await?)
                }
                begun => Conn::SqliteTx(begun?),
            },
            Self::Postgres(p) => {
                let mut tx = p.begin().await?;
                sqlx::query("SELECT pg_advisory_xact_lock($1)").bind(WRITE_LOCK).execute(&mut *tx).await?;
                Conn::PgTx(tx)
            }
        })
    }

    pub async fn close(&self) {
        match self {
            Self::Sqlite(p) => p.close().await,
            Self::Postgres(p) => p.close().await,
        }
    }
}

/// One connection: a transaction or a plain pooled connection.
#[derive(Debug)]
pub enum Conn {
    SqliteTx(Transaction<'static, Sqlite>),
    SqlitePooled(PoolConnection<Sqlite>),
    PgTx(Transaction<'static, Postgres>),
    PgPooled(PoolConnection<Postgres>),
}

impl Conn {
    pub fn engine(&self) -> Engine {
        match self {
            Self::SqliteTx(_) | Self::SqlitePooled(_) => Engine::Sqlite,
            Self::PgTx(_) | Self::PgPooled(_) => Engine::Postgres,
        }
    }

    /// Commits a transaction (a plain connection has nothing to commit).
    pub async fn commit(self) -> Result<(), sqlx::Error> {
        match self {
            Self::SqliteTx(t) => t.commit().await,
            Self::PgTx(t) => t.commit().await,
            Self::SqlitePooled(_) | Self::PgPooled(_) => Ok(()),
        }
    }
}

/// Where a query runs.
pub enum Exec<'c> {
    Sqlite(&'c mut SqliteConnection),
    SqlitePool(&'c SqlitePool),
    Pg(&'c mut PgConnection),
    PgPool(&'c PgPool),
}

impl<'c> From<&'c mut Conn> for Exec<'c> {
    fn from(c: &'c mut Conn) -> Self {
        match c {
            Conn::SqliteTx(t) => Exec::Sqlite(t),
            Conn::SqlitePooled(p) => Exec::Sqlite(p),
            Conn::PgTx(t) => Exec::Pg(t),
            Conn::PgPooled(p) => Exec::Pg(p),
        }
    }
}

impl<'c> From<&'c Pool> for Exec<'c> {
    fn from(p: &'c Pool) -> Self {
        match p {
            Pool::Sqlite(p) => Exec::SqlitePool(p),
            Pool::Postgres(p) => Exec::PgPool(p),
        }
    }
}

/// A bound value.
#[derive(Debug, Clone)]
pub enum Arg {
    Int(Option<i64>),
    Text(Option<String>),
    Bytes(Option<Vec<u8>>),
    Bool(bool),
}

macro_rules! arg_from {
    ($($t:ty => |$v:ident| $e:expr;)*) => {
        $(impl From<$t> for Arg {
            fn from($v: $t) -> Self {
                $e
            }
        })*
    };
}

arg_from! {
    i64 => |v| Arg::Int(Some(v));
    &i64 => |v| Arg::Int(Some(*v));
    Option<i64> => |v| Arg::Int(v);
    &str => |v| Arg::Text(Some(v.to_string()));
    String => |v| Arg::Text(Some(v));
    &String => |v| Arg::Text(Some(v.clone()));
    Option<&str> => |v| Arg::Text(v.map(str::to_string));
    Option<String> => |v| Arg::Text(v);
    &[u8] => |v| Arg::Bytes(Some(v.to_vec()));
    Vec<u8> => |v| Arg::Bytes(Some(v));
    bool => |v| Arg::Bool(v);
}

/// A statement and its bound values, not yet tied to an engine.
pub struct Query {
    sql: SqlStr,
    args: Vec<Arg>,
}

pub fn query(sql: impl SqlSafeStr) -> Query {
    Query { sql: sql.into_sql_str(), args: Vec::new() }
}

macro_rules! bound {
    ($self:expr) => {{
        let mut q = sqlx::query($self.sql.clone());
        for a in &$self.args {
            q = match a {
                Arg::Int(v) => q.bind(*v),
                Arg::Text(v) => q.bind(v.clone()),
                Arg::Bytes(v) => q.bind(v.clone()),
                Arg::Bool(v) => q.bind(*v),
            };
        }
        q
    }};
}

/// Runs `$method` on whichever engine `$c` is.
macro_rules! dispatch {
    ($self:ident, $c:ident, |$r:ident| $sqlite:expr, $pg:expr, $method:ident) => {
        match $c.into() {
            Exec::Sqlite(c) => {
                let $r = bound!($self).$method(c).await?;
                $sqlite
            }
            Exec::SqlitePool(c) => {
                let $r = bound!($self).$method(c).await?;
                $sqlite
            }
            Exec::Pg(c) => {
                let $r = bound!($self).$method(c).await?;
                $pg
            }
            Exec::PgPool(c) => {
                let $r = bound!($self).$method(c).await?;
                $pg
            }
        }
    };
}

impl Query {
    pub fn bind(mut self, value: impl Into<Arg>) -> Self {
        self.args.push(value.into());
        self
    }

    /// Runs it; returns the number of rows it changed.
    pub async fn execute<'c>(self, c: impl Into<Exec<'c>>) -> Result<u64, sqlx::Error> {
        Ok(dispatch!(self, c, |r| r.rows_affected(), r.rows_affected(), execute))
    }

    pub async fn fetch_all<'c>(self, c: impl Into<Exec<'c>>) -> Result<Vec<Row>, sqlx::Error> {
        Ok(dispatch!(
            self,
            c,
            |r| r.into_iter().map(Row::Sqlite).collect(),
            r.into_iter().map(Row::Pg).collect(),
            fetch_all
        ))
    }

    pub async fn fetch_one<'c>(self, c: impl Into<Exec<'c>>) -> Result<Row, sqlx::Error> {
        Ok(dispatch!(self, c, |r| Row::Sqlite(r), Row::Pg(r), fetch_one))
    }

    pub async fn fetch_optional<'c>(self, c: impl Into<Exec<'c>>) -> Result<Option<Row>, sqlx::Error> {
        Ok(dispatch!(self, c, |r| r.map(Row::Sqlite), r.map(Row::Pg), fetch_optional))
    }
}

/// A value both engines decode.
pub trait Value: for<'r> Decode<'r, Sqlite> + Type<Sqlite> + for<'r> Decode<'r, Postgres> + Type<Postgres> {}
impl<T> Value for T where T: for<'r> Decode<'r, Sqlite> + Type<Sqlite> + for<'r> Decode<'r, Postgres> + Type<Postgres> {}

/// A statement whose rows are one value each.
pub struct Scalar<T> {
    q: Query,
    _t: PhantomData<fn() -> T>,
}

pub fn query_scalar<T: Value>(sql: impl SqlSafeStr) -> Scalar<T> {
    Scalar { q: query(sql), _t: PhantomData }
}

impl<T: Value> Scalar<T> {
    pub fn bind(mut self, value: impl Into<Arg>) -> Self {
        self.q = self.q.bind(value);
        self
    }

    pub async fn fetch_one<'c>(self, c: impl Into<Exec<'c>>) -> Result<T, sqlx::Error> {
        self.q.fetch_one(c).await?.try_get(0)
    }

    pub async fn fetch_optional<'c>(self, c: impl Into<Exec<'c>>) -> Result<Option<T>, sqlx::Error> {
        self.q.fetch_optional(c).await?.map(|r| r.try_get(0)).transpose()
    }

    pub async fn fetch_all<'c>(self, c: impl Into<Exec<'c>>) -> Result<Vec<T>, sqlx::Error> {
        self.q.fetch_all(c).await?.iter().map(|r| r.try_get(0)).collect()
    }
}

/// A result row of either engine.
pub enum Row {
    Sqlite(SqliteRow),
    Pg(PgRow),
}

impl Row {
    pub fn try_get<'r, T, I>(&'r self, index: I) -> Result<T, sqlx::Error>
    where
        I: ColumnIndex<SqliteRow> + ColumnIndex<PgRow>,
        T: Decode<'r, Sqlite> + Type<Sqlite> + Decode<'r, Postgres> + Type<Postgres>,
    {
        match self {
            Self::Sqlite(r) => r.try_get(index),
            Self::Pg(r) => r.try_get(index),
        }
    }
}
