//! Who is calling: credentials are looked up by their SHA-256 hash.
use super::db;
use subtle::ConstantTimeEq;

use super::{Store, Tx};
use crate::error::Result;

/// The authenticated caller of an RPC.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Caller {
    /// weavectl and automation: may change everything.
    Admin,
    /// An agent: may read the map and change its own endpoints, allocations and records.
    Node { id: u64, name: String },
}

/// Makes `secret_hash` the one valid admin credential in `tx`: every other
/// valid one revoked at `now`, and it recorded if it was not.
async fn make_sole(tx: &mut Tx, secret_hash: &str, now: i64) -> Result<()> {
    db::query("UPDATE admin_credentials SET revoked_at = $2 WHERE secret_hash <> $1 AND revoked_at IS NULL")
        .bind(secret_hash)
        .bind(now)
        .execute(tx.c())
        .await?;
    db::query(
        "INSERT INTO admin_credentials (secret_hash, created_at) VALUES ($1, $2) ON CONFLICT (secret_hash) DO NOTHING",
    )
    .bind(secret_hash)
    .bind(now)
    .execute(tx.c())
    .await?;
    Ok(())
}

/// An admin credential's revocation time, if it was revoked (a rotation, a
/// start after the credential file was deleted).
const REVOKED_ADMIN: &str =
    "SELECT revoked_at FROM admin_credentials WHERE secret_hash = $1 AND revoked_at IS NOT NULL";

impl Store {
    /// Makes `secret_hash` the one admin credential: every other one stops
    /// working in the same transaction, and stays known as revoked (rotation,
    /// and a start after the credential file was deleted). A credential
    /// revoked before is not made valid again: `Ok(false)`, nothing changed
    /// (a coordinator started with a stale credential file, the rotation
    /// having gone through another coordinator of a shared database).
    pub async fn replace_admin_credential(&self, secret_hash: &str) -> Result<bool> {
        let mut tx = self.begin().await?;
        let revoked: Option<i64> = db::query_scalar(REVOKED_ADMIN).bind(secret_hash).fetch_optional(tx.c()).await?;
        if revoked.is_some() {
            return Ok(false);
        }
        make_sole(&mut tx, secret_hash, super::now()).await?;
        self.commit(tx).await?;
        Ok(true)
    }

    /// Rotation: `to_hash` becomes the one admin credential only if
    /// `from_hash` (the caller's) is still valid, checked in the write
    /// transaction; `Ok(false)`, nothing changed, if another rotation took it
    /// first. Two coordinators of one database each rotating with the same
    /// credential both answered with a new one, and one of the two was
    /// already revoked (found by a review, 2026-12-05).
    pub async fn rotate_admin_credential(&self, from_hash: &str, to_hash: &str) -> Result<bool> {
        let mut tx = self.begin().await?;
        let now = super::now();
        let taken =
            db::query("UPDATE admin_credentials SET revoked_at = $2 WHERE secret_hash = $1 AND revoked_at IS NULL")
                .bind(from_hash)
                .bind(now)
                .execute(tx.c())
                .await?;
        if taken != 1 {
            return Ok(false);
        }
        make_sole(&mut tx, to_hash, now).await?;
        self.commit(tx).await?;
        Ok(true)
    }

    /// The caller holding the credential whose hash is `secret_hash`, if any.
    pub async fn caller(&self, secret_hash: &str) -> Result<Option<Caller>> {
        let admin: Option<String> =
            db::query_scalar("SELECT secret_hash FROM admin_credentials WHERE secret_hash = $1 AND revoked_at IS NULL")
                .bind(secret_hash)
                .fetch_optional(&self.read)
                .await?;
        // The lookup is by hash; comparing again in constant time costs nothing.
        if admin.is_some_and(|h| bool::from(h.as_bytes().ct_eq(secret_hash.as_bytes()))) {
            return Ok(Some(Caller::Admin));
        }
        let node = db::query("SELECT id, name FROM nodes WHERE credential_hash = $1")
            .bind(secret_hash)
            .fetch_optional(&self.read)
            .await?;
        node.map(|r| Ok(Caller::Node { id: r.try_get::<i64, _>("id")? as u64, name: r.try_get("name")? })).transpose()
    }

    /// The hashes of the credentials valid now: each node's and the admin's.
    pub async fn valid_credential_hashes(&self) -> Result<Vec<String>> {
        Ok(db::query_scalar(
            "SELECT credential_hash FROM nodes UNION ALL \
             SELECT secret_hash FROM admin_credentials WHERE revoked_at IS NULL",
        )
        .fetch_all(&self.read)
        .await?)
    }

    /// Whether `secret_hash` is an admin credential a rotation replaced.
    pub async fn rotated_admin(&self, secret_hash: &str) -> Result<bool> {
        let revoked: Option<i64> = db::query_scalar(REVOKED_ADMIN).bind(secret_hash).fetch_optional(&self.read).await?;
        Ok(revoked.is_some())
    }

    /// The name of the node that held `secret_hash` when it was removed, and
    /// whether the coordinator forgot it (`--forget-after`) rather than an
    /// admin removed it.
    pub async fn removed_node(&self, secret_hash: &str) -> Result<Option<(String, bool)>> {
        let row = db::query("SELECT name, forgotten FROM removed_nodes WHERE credential_hash = $1")
            .bind(secret_hash)
            .fetch_optional(&self.read)
            .await?;
        Ok(row.map(|r| Ok::<_, sqlx::Error>((r.try_get("name")?, r.try_get("forgotten")?))).transpose()?)
    }
}
