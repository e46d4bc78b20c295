//! Join tokens: created by an admin, spent by `agent join`.
use super::db::{self, Row};
use weave_proto::v1;

use super::{Store, now};
use crate::error::{Error, Result};

pub struct NewToken {
    pub id: String,
    pub secret_hash: String,
    pub ttl_seconds: Option<u64>,
    pub uses: Option<u32>,
    pub description: String,
    /// Seconds unseen after which a node that joined with it is forgotten; 0: never.
    pub forget_after: u64,
}

const TOKEN_COLUMNS: &str = "id, created_at, expires_at, uses_left, revoked_at, uses, description, forget_after";

fn token(r: &Row) -> Result<v1::Token> {
    let uses_left: Option<i64> = r.try_get("uses_left")?;
    Ok(v1::Token {
        id: r.try_get("id")?,
        created_at: r.try_get("created_at")?,
        expires_at: r.try_get::<Option<i64>, _>("expires_at")?.unwrap_or(0),
        uses_left: uses_left.unwrap_or(0) as u32,
        unlimited: uses_left.is_none(),
        revoked: r.try_get::<Option<i64>, _>("revoked_at")?.is_some(),
        uses: r.try_get::<i64, _>("uses")? as u32,
        description: r.try_get("description")?,
        joined_nodes: Vec::new(),
        forget_after_seconds: r.try_get::<i64, _>("forget_after")? as u64,
    })
}

impl Store {
    pub async fn create_token(&self, t: NewToken) -> Result<v1::Token> {
        let created = now();
        let expires = t.ttl_seconds.map(|s| created.saturating_add(s.min(i64::MAX as u64) as i64));
        let mut tx = self.begin().await?;
        let row = db::query(sqlx::AssertSqlSafe(format!(
            "INSERT INTO join_tokens (id, secret_hash, description, created_at, expires_at, uses_left, forget_after) \
             VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING {TOKEN_COLUMNS}"
        )))
        .bind(&t.id)
        .bind(&t.secret_hash)
        .bind(&t.description)
        .bind(created)
        .bind(expires)
        .bind(t.uses.map(i64::from))
        .bind(t.forget_after.min(i64::MAX as u64) as i64)
        .fetch_one(tx.c())
        .await?;
        let out = token(&row)?;
        self.commit(tx).await?;
        Ok(out)
    }

    pub async fn list_tokens(&self) -> Result<Vec<v1::Token>> {
        let rows =
            db::query(sqlx::AssertSqlSafe(format!("SELECT {TOKEN_COLUMNS} FROM join_tokens ORDER BY created_at, id")))
                .fetch_all(&self.read)
                .await?;
        let mut tokens: Vec<v1::Token> = rows.iter().map(token).collect::<Result<_>>()?;
        let joined = db::query("SELECT name, joined_via FROM nodes WHERE joined_via IS NOT NULL ORDER BY name")
            .fetch_all(&self.read)
            .await?;
        // By id: a linear search per node was tokens × nodes.
        let index: std::collections::HashMap<String, usize> =
            tokens.iter().enumerate().map(|(i, t)| (t.id.clone(), i)).collect();
        for r in &joined {
            let via: String = r.try_get("joined_via")?;
            if let Some(&i) = index.get(&via) {
                tokens[i].joined_nodes.push(r.try_get("name")?);
            }
        }
        Ok(tokens)
    }

    /// Revoking twice is not an error: the token stays revoked.
    pub async fn revoke_token(&self, id: &str) -> Result<v1::Token> {
        let id = id.trim().to_ascii_lowercase();
        // Not echoed: a whole token pasted here carries its secret.
        if !weave_proto::token::is_token_id(&id) {
            return Err(Error::InvalidArgument(
                "that is not a token id: 16 hex digits, as `weavectl token ls` shows them".into(),
            ));
        }
        let mut tx = self.begin().await?;
        let row = db::query(sqlx::AssertSqlSafe(format!(
            "UPDATE join_tokens SET revoked_at = COALESCE(revoked_at, $2) WHERE id = $1 RETURNING {TOKEN_COLUMNS}"
        )))
        .bind(&id)
        .bind(now())
        .fetch_optional(tx.c())
        .await?
        .ok_or_else(|| Error::NotFound(format!("no join token with id '{id}' (see `weavectl token ls`)")))?;
        let mut out = token(&row)?;
        for r in
            db::query("SELECT name FROM nodes WHERE joined_via = $1 ORDER BY name").bind(&id).fetch_all(tx.c()).await?
        {
            out.joined_nodes.push(r.try_get("name")?);
        }
        self.commit(tx).await?;
        Ok(out)
    }
}
