-- Gateway webhook deliveries already accepted, so that a replayed delivery
-- starts nothing. delivery_key is `id:<delivery id>` (timestamped scheme) or
-- `sha256:<hex of the body>` (body scheme). A row lives until expires_at_ms,
-- past which the replay window refuses the delivery anyway; claims prune
-- expired rows, so the table holds at most one window of deliveries.
CREATE TABLE gateway_webhook_deliveries (
    workflow_key   TEXT NOT NULL,
    delivery_key   TEXT NOT NULL,
    received_at_ms INTEGER NOT NULL,
    expires_at_ms  INTEGER NOT NULL,
    PRIMARY KEY (workflow_key, delivery_key)
) WITHOUT ROWID;
CREATE INDEX gateway_webhook_deliveries_expiry ON gateway_webhook_deliveries (expires_at_ms);
