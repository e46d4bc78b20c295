//! Ids never given twice (`id_floors`), and the TLS pin the cluster is
//! served under (`cluster.pin`).
use super::{Result, Store, Tx, db};

impl Tx {
    /// The id of a new row of `table` (subnets, allocations, dns_records):
    /// past every id it has given, removed rows' included (SQLite gave the
    /// newest removed row's id to the next one), recorded in `id_floors`.
    pub(super) async fn next_id(&mut self, table: &'static str) -> Result<i64> {
        // One statement (it runs for every allocation): the floor moves
        // past itself and past the table's highest id.
        let id: i64 = db::query_scalar(sqlx::AssertSqlSafe(format!(
            "INSERT INTO id_floors (tbl, last) VALUES ($1, (SELECT COALESCE(MAX(id), 0) + 1 FROM {table})) \
             ON CONFLICT (tbl) DO UPDATE SET last = CASE WHEN id_floors.last + 1 > excluded.last \
             THEN id_floors.last + 1 ELSE excluded.last END RETURNING last"
        )))
        .bind(table)
        .fetch_one(self.c())
        .await?;
        Ok(id)
    }
}

impl Store {
    /// The pin recorded for the cluster, if any.
    pub async fn recorded_pin(&self) -> Result<Option<String>> {
        Ok(db::query_scalar("SELECT pin FROM cluster WHERE id = 1").fetch_optional(&self.read).await?.flatten())
    }

    /// The pin the cluster is served under: recorded as `pin` when none is
    /// (a new cluster, or one made before pins were kept) or when the one
    /// recorded is still `replace` (`--new-identity`: the pin it read when
    /// it started, so two such starts at once do not both win). Returns the
    /// recorded one.
    pub async fn cluster_pin(&self, pin: &str, replace: Option<&str>) -> Result<String> {
        let mut tx = self.begin().await?;
        db::query("UPDATE cluster SET pin = $1 WHERE id = 1 AND (pin IS NULL OR pin = $2)")
            .bind(pin)
            .bind(replace.map(str::to_string))
            .execute(tx.c())
            .await?;
        let recorded: Option<String> =
            db::query_scalar("SELECT pin FROM cluster WHERE id = 1").fetch_one(tx.c()).await?;
        self.commit(tx).await?;
        Ok(recorded.unwrap_or_default())
    }
}
