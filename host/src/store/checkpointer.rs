//! Moving committed WAL frames into the database file, off the commit path.
//!
//! A checkpoint fsyncs; done by the writer (SQLite's default auto-checkpoint)
//! it would stall every hundredth commit for as long as the disk takes. Here
//! a thread with its own connection runs passive checkpoints, which never
//! block the writer or readers, and a final truncating one at close.
//!
//! Passive checkpoints alone never let the WAL start over while readers keep
//! coming (a reader is nearly always on an older snapshot when the writer
//! begins), so under sustained load the WAL file grew without bound: 7.6 GB
//! next to a 440 MB database after a 10-minute soak. Once the WAL holds more
//! than [`RESTART_BYTES`], a restarting checkpoint waits (briefly, bounded by
//! [`RESTART_WAIT`]) for the readers on older snapshots, so that the next
//! commit writes the WAL from its start; the WAL is then trimmed to
//! `journal_size_limit`.

use std::path::Path;
use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender, channel};
use std::thread::JoinHandle;
use std::time::Duration;

use rusqlite::Connection;

use super::{StoreError, schema};

/// How often committed frames are checkpointed.
const INTERVAL: Duration = Duration::from_millis(500);

/// WAL size past which the checkpointer makes the WAL start over.
pub(super) const RESTART_BYTES: i64 = 64 * 1024 * 1024;

/// Longest a restarting checkpoint waits for readers (new commits wait that
/// long at most); it tries again at the next interval if they did not leave.
const RESTART_WAIT: Duration = Duration::from_millis(200);

pub(super) struct Checkpointer {
    stop: Sender<()>,
    thread: JoinHandle<()>,
}

impl Checkpointer {
    pub(super) fn start(path: &Path, restart_bytes: i64) -> Result<Self, StoreError> {
        let conn = schema::open_checkpointer(path)?;
        let page_size: i64 = conn.query_row("PRAGMA page_size", [], |row| row.get(0))?;
        let restart_frames = (restart_bytes / page_size.max(512)).max(1);
        let (stop, stopped) = channel();
        let thread = std::thread::Builder::new()
            .name("smithers-store-checkpoint".into())
            .spawn(move || run(conn, stopped, restart_frames))
            .map_err(|e| StoreError::Corrupt(format!("cannot start the checkpoint thread: {e}")))?;
        Ok(Self { stop, thread })
    }

    /// Runs a final checkpoint and waits for the thread.
    pub(super) fn stop(self) {
        let _ = self.stop.send(());
        let _ = self.thread.join();
    }
}

fn run(conn: Connection, stopped: Receiver<()>, restart_frames: i64) {
    // The first pass comes at once: a host killed before its first interval
    // (again and again, in a crash loop) would otherwise leave the WAL to grow
    // across restarts.
    pass(&conn, restart_frames);
    loop {
        match stopped.recv_timeout(INTERVAL) {
            Err(RecvTimeoutError::Timeout) => pass(&conn, restart_frames),
            Ok(()) | Err(RecvTimeoutError::Disconnected) => {
                checkpoint(&conn, "TRUNCATE");
                return;
            }
        }
    }
}

/// Copies committed frames back; past `restart_frames`, makes the WAL start
/// over (waiting at most [`RESTART_WAIT`] for readers).
fn pass(conn: &Connection, restart_frames: i64) {
    let wal_frames = checkpoint(conn, "PASSIVE");
    if wal_frames.is_some_and(|frames| frames > restart_frames) {
        let _ = conn.busy_timeout(RESTART_WAIT);
        checkpoint(conn, "RESTART");
        let _ = conn.busy_timeout(schema::BUSY_TIMEOUT);
    }
}

/// Runs a checkpoint; returns the number of frames in the WAL.
fn checkpoint(conn: &Connection, mode: &str) -> Option<i64> {
    let result = conn.query_row(&format!("PRAGMA wal_checkpoint({mode})"), [], |row| {
        Ok((
            row.get::<_, i64>(0)?,
            row.get::<_, i64>(1)?,
            row.get::<_, i64>(2)?,
        ))
    });
    match result {
        Ok((_, wal_frames, _)) => Some(wal_frames),
        Err(e) => {
            tracing::warn!(error = %e, mode, "WAL checkpoint failed");
            None
        }
    }
}
