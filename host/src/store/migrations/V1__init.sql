-- Runs: one row per run. owner_id/heartbeat_at_ms form the lease that lets a
-- future multi-host backend hand runs over; single-host SQLite uses them for
-- crash recovery.
CREATE TABLE runs (
    run_id                 TEXT PRIMARY KEY,
    workflow_name          TEXT NOT NULL,
    workflow_path          TEXT NOT NULL,
    workflow_hash          TEXT NOT NULL,
    status                 TEXT NOT NULL,
    input_json             TEXT NOT NULL,
    config_json            TEXT NOT NULL,
    auth_json              TEXT,
    created_at_ms          INTEGER NOT NULL,
    started_at_ms          INTEGER,
    finished_at_ms         INTEGER,
    heartbeat_at_ms        INTEGER,
    owner_id               TEXT,
    error_json             TEXT,
    cancel_requested_at_ms INTEGER,
    next_signal_seq        INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX runs_status_heartbeat_idx ON runs (status, heartbeat_at_ms);
CREATE INDEX runs_created_idx ON runs (created_at_ms);

-- Every component version a run has executed with.
CREATE TABLE run_versions (
    run_id           TEXT NOT NULL,
    hash             TEXT NOT NULL,
    first_used_at_ms INTEGER NOT NULL,
    PRIMARY KEY (run_id, hash)
) WITHOUT ROWID;

-- The event log: seq is gap-free per run, assigned inside the writing
-- transaction (the single writer keeps each run's next seq in memory). A rowid table, because events are appended: SQLite then adds
-- leaf pages at the right edge instead of rebalancing siblings, which keeps
-- the pages written per commit (and so commit latency) low.
CREATE TABLE events (
    event_id     INTEGER PRIMARY KEY,
    run_id       TEXT NOT NULL,
    seq          INTEGER NOT NULL,
    timestamp_ms INTEGER NOT NULL,
    type         TEXT NOT NULL,
    payload_json TEXT NOT NULL
);
CREATE UNIQUE INDEX events_run_seq_idx ON events (run_id, seq);

-- Node state and committed output per (node, loop iteration). Rowid tables
-- with a unique index on the natural key (as for events): rows are appended,
-- and only the small index entries land mid-tree.
CREATE TABLE nodes (
    node_pk       INTEGER PRIMARY KEY,
    run_id        TEXT NOT NULL,
    node_id       TEXT NOT NULL,
    iteration     INTEGER NOT NULL DEFAULT 0,
    state         TEXT NOT NULL,
    last_attempt  INTEGER,
    updated_at_ms INTEGER NOT NULL,
    label         TEXT,
    output_json   TEXT,
    error_json    TEXT,
    retry_at_ms   INTEGER
);
CREATE UNIQUE INDEX nodes_key_idx ON nodes (run_id, node_id, iteration);

CREATE TABLE attempts (
    attempt_pk     INTEGER PRIMARY KEY,
    run_id         TEXT NOT NULL,
    node_id        TEXT NOT NULL,
    iteration      INTEGER NOT NULL DEFAULT 0,
    attempt        INTEGER NOT NULL,
    state          TEXT NOT NULL,
    started_at_ms  INTEGER NOT NULL,
    finished_at_ms INTEGER,
    error_json     TEXT,
    meta_json      TEXT
);
CREATE UNIQUE INDEX attempts_key_idx ON attempts (run_id, node_id, iteration, attempt);

-- A frame is its FrameCommitted event (frame number, tree hash, trigger);
-- trees are stored once per distinct content, so a static workflow stores its
-- tree once however many frames it commits.
CREATE TABLE frame_trees (
    tree_hash       TEXT PRIMARY KEY,
    tree_json       TEXT NOT NULL,
    task_index_json TEXT NOT NULL
) WITHOUT ROWID;

CREATE TABLE approvals (
    run_id          TEXT NOT NULL,
    node_id         TEXT NOT NULL,
    iteration       INTEGER NOT NULL DEFAULT 0,
    status          TEXT NOT NULL,
    label           TEXT,
    requested_at_ms INTEGER NOT NULL,
    decided_at_ms   INTEGER,
    note            TEXT,
    decided_by      TEXT,
    request_json    TEXT NOT NULL,
    PRIMARY KEY (run_id, node_id, iteration)
) WITHOUT ROWID;
CREATE INDEX approvals_status_idx ON approvals (status, requested_at_ms);

CREATE TABLE signals (
    run_id             TEXT NOT NULL,
    seq                INTEGER NOT NULL,
    signal_name        TEXT NOT NULL,
    correlation_id     TEXT,
    payload_json       TEXT NOT NULL,
    received_at_ms     INTEGER NOT NULL,
    received_by        TEXT,
    consumed_node_id   TEXT,
    consumed_iteration INTEGER,
    PRIMARY KEY (run_id, seq)
) WITHOUT ROWID;

CREATE TABLE loops (
    run_id        TEXT NOT NULL,
    loop_id       TEXT NOT NULL,
    iteration     INTEGER NOT NULL,
    done          INTEGER NOT NULL DEFAULT 0,
    updated_at_ms INTEGER NOT NULL,
    PRIMARY KEY (run_id, loop_id)
) WITHOUT ROWID;
