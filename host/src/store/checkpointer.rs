//! Moving committed WAL frames into the database file, off the commit path.
//!
//! A checkpoint fsyncs; done by the writer (SQLite's default auto-checkpoint)
//! it would stall every hundredth commit for as long as the disk takes. Here
//! a thread with its own connection runs passive checkpoints, which never
//! block the writer or readers, and a final truncating one at close.

use std::path::Path;
use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender, channel};
use std::thread::JoinHandle;
use std::time::Duration;

use rusqlite::Connection;

use super::{StoreError, schema};

/// How often committed frames are checkpointed.
const INTERVAL: Duration = Duration::from_millis(500);

pub(super) struct Checkpointer {
    stop: Sender<()>,
    thread: JoinHandle<()>,
}

impl Checkpointer {
    pub(super) fn start(path: &Path) -> Result<Self, StoreError> {
        let conn = schema::open_checkpointer(path)?;
        let (stop, stopped) = channel();
        let thread = std::thread::Builder::new()
            .name("smithers-store-checkpoint".into())
            .spawn(move || run(conn, stopped))
            .map_err(|e| StoreError::Corrupt(format!("cannot start the checkpoint thread: {e}")))?;
        Ok(Self { stop, thread })
    }

    /// Runs a final checkpoint and waits for the thread.
    pub(super) fn stop(self) {
        let _ = self.stop.send(());
        let _ = self.thread.join();
    }
}

fn run(conn: Connection, stopped: Receiver<()>) {
    loop {
        match stopped.recv_timeout(INTERVAL) {
            Err(RecvTimeoutError::Timeout) => checkpoint(&conn, "PASSIVE"),
            Ok(()) | Err(RecvTimeoutError::Disconnected) => {
                checkpoint(&conn, "TRUNCATE");
                return;
            }
        }
    }
}

fn checkpoint(conn: &Connection, mode: &str) {
    let result = conn.query_row(&format!("PRAGMA wal_checkpoint({mode})"), [], |row| {
        Ok((
            row.get::<_, i64>(0)?,
            row.get::<_, i64>(1)?,
            row.get::<_, i64>(2)?,
        ))
    });
    if let Err(e) = result {
        tracing::warn!(error = %e, mode, "WAL checkpoint failed");
    }
}
