-- Removing old runs (retention) deletes a frame tree once no frame names it
-- any more. Frames are FrameCommitted events naming their tree by hash; this
-- partial index answers "does any frame still name this tree" without
-- scanning the event log, and costs one small entry per frame.
CREATE INDEX events_frame_tree_idx
    ON events (json_extract(payload_json, '$.xmlHash'))
    WHERE type = 'FrameCommitted';
