//! Opening the database: pragmas and numbered migrations.

use std::path::Path;

use rusqlite::{Connection, OpenFlags};

use super::{Durability, StoreError};
use crate::model::now_ms;

/// Migrations, applied in order. A database is at version N when the first N
/// have been applied; each is applied in its own transaction.
const MIGRATIONS: &[(&str, &str)] = &[
    ("init", include_str!("migrations/V1__init.sql")),
    ("gateway", include_str!("migrations/V2__gateway.sql")),
    (
        "webhook_deliveries",
        include_str!("migrations/V3__webhook_deliveries.sql"),
    ),
    (
        "frame_tree_index",
        include_str!("migrations/V4__frame_tree_index.sql"),
    ),
    ("http_calls", include_str!("migrations/V5__http_calls.sql")),
];

/// Opens the read-write connection and brings the schema up to date.
pub(super) fn open_writer(path: &Path, durability: Durability) -> Result<Connection, StoreError> {
    let mut conn = Connection::open(path)?;
    conn.busy_timeout(std::time::Duration::from_secs(5))?;
    // Before anything creates a table: a new database returns the pages
    // that retention frees (an existing one is converted by `gc`).
    super::retention::prefer_incremental(&conn)?;
    conn.pragma_update(None, "journal_mode", "WAL")?;
    let sync = match durability {
        Durability::Normal => "NORMAL",
        Durability::Full => "FULL",
    };
    conn.pragma_update(None, "synchronous", sync)?;
    conn.pragma_update(None, "foreign_keys", "ON")?;
    // Checkpoints (which fsync) run on their own thread, off the commit
    // path; see `checkpointer`. Once reset, the WAL file is trimmed.
    conn.pragma_update(None, "wal_autocheckpoint", 0)?;
    conn.pragma_update(None, "journal_size_limit", 64 * 1024 * 1024)?;
    migrate(&mut conn)?;
    Ok(conn)
}

/// How long a connection waits for a lock before it gives up.
pub(super) const BUSY_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// Opens the checkpointer's connection.
pub(super) fn open_checkpointer(path: &Path) -> Result<Connection, StoreError> {
    let conn = Connection::open(path)?;
    conn.busy_timeout(BUSY_TIMEOUT)?;
    Ok(conn)
}

/// Opens a read-only connection on an existing database.
pub(super) fn open_reader(path: &Path) -> Result<Connection, StoreError> {
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )?;
    conn.busy_timeout(std::time::Duration::from_secs(5))?;
    Ok(conn)
}

fn migrate(conn: &mut Connection) -> Result<(), StoreError> {
    conn.execute_batch(
        "CREATE TABLE IF NOT EXISTS schema_migrations (
            version       INTEGER PRIMARY KEY,
            name          TEXT NOT NULL,
            applied_at_ms INTEGER NOT NULL
        )",
    )?;
    let current: i64 = conn.query_row(
        "SELECT COALESCE(MAX(version), 0) FROM schema_migrations",
        [],
        |row| row.get(0),
    )?;
    if current > MIGRATIONS.len() as i64 {
        return Err(StoreError::Incompatible(format!(
            "the database schema is at version {current}, newer than this smithers-host \
             understands ({}); use a newer smithers-host or another --state-dir",
            MIGRATIONS.len()
        )));
    }
    for (index, (name, sql)) in MIGRATIONS.iter().enumerate().skip(current as usize) {
        let version = index as i64 + 1;
        let tx = conn.transaction()?;
        tx.execute_batch(sql)?;
        tx.execute(
            "INSERT INTO schema_migrations (version, name, applied_at_ms) VALUES (?1, ?2, ?3)",
            rusqlite::params![version, name, now_ms()],
        )?;
        tx.commit()?;
        tracing::info!(version, name, "applied database migration");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn migrating_twice_is_a_no_op_and_newer_schemas_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db.sqlite");
        drop(open_writer(&path, Durability::Normal).unwrap());
        let conn = open_writer(&path, Durability::Normal).unwrap();
        let applied: i64 = conn
            .query_row("SELECT COUNT(*) FROM schema_migrations", [], |r| r.get(0))
            .unwrap();
        assert_eq!(applied, MIGRATIONS.len() as i64);
        conn.execute(
            "INSERT INTO schema_migrations VALUES (999, 'future', 0)",
            [],
        )
        .unwrap();
        drop(conn);
        let err = open_writer(&path, Durability::Normal).unwrap_err();
        assert!(matches!(err, StoreError::Incompatible(_)), "{err}");
    }
}
