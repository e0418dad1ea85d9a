-- Gateway cron schedules. A schedule from the gateway config has the id
-- `gateway:<workflow key>`; schedules created over RPC have any id.
-- next_run_at_ms is the claim token: firing a tick is one UPDATE that moves it
-- forward only if it still holds the value the scheduler read, so a tick is
-- claimed at most once, across restarts and racing schedulers alike.
CREATE TABLE gateway_crons (
    cron_id        TEXT PRIMARY KEY,
    workflow_key   TEXT NOT NULL,
    pattern        TEXT NOT NULL,
    enabled        INTEGER NOT NULL DEFAULT 1,
    created_at_ms  INTEGER NOT NULL,
    last_run_at_ms INTEGER,
    next_run_at_ms INTEGER,
    error_json     TEXT
) WITHOUT ROWID;
