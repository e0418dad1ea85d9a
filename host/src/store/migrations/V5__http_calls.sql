-- The replay journal: each outbound HTTP call a task attempt completed, in
-- the order the guest made it (seq, from 0), with the response it got (after
-- the host replaced any secret's value by its placeholder). An attempt that
-- re-executes after a crash or a resume is answered from here instead of
-- calling out again; any other new attempt of the node starts a fresh journal.
CREATE TABLE http_calls (
    call_pk        INTEGER PRIMARY KEY,
    run_id         TEXT NOT NULL,
    node_id        TEXT NOT NULL,
    iteration      INTEGER NOT NULL,
    seq            INTEGER NOT NULL,
    attempt        INTEGER NOT NULL,
    request_digest TEXT NOT NULL,
    status         INTEGER NOT NULL,
    headers_json   TEXT NOT NULL,
    body           BLOB NOT NULL,
    recorded_at_ms INTEGER NOT NULL
);
CREATE UNIQUE INDEX http_calls_key_idx ON http_calls (run_id, node_id, iteration, seq);
