//! Removal steps and space reclaiming on a real database file.

use serde_json::json;

use super::*;
use crate::model::{EventBody, NodeKey, NodeState, now_ms};
use crate::store::{Commit, Durability, NewRun, NodeUpdate, Op, Store};

fn id(raw: &str) -> RunId {
    RunId::parse(raw).unwrap()
}

/// A run with a row in every table keyed by run, left in `status`; its
/// frames name the trees `shared` and `own-<run>`.
async fn seed(store: &Store, run: &str, status: RunStatus, events: usize) {
    let run_id = id(run);
    let key = NodeKey::new("gate", 0);
    let mut commit = Commit::new(run_id.clone())
        .op(Op::InsertRun(NewRun {
            run_id: run_id.clone(),
            workflow_name: "w".into(),
            workflow_path: "/w.wasm".into(),
            workflow_hash: "h".into(),
            input_json: "{}".into(),
            config_json: "{}".into(),
            auth_json: None,
            owner_id: "me".into(),
        }))
        .op(Op::RecordVersion { hash: "h".into() })
        .op(Op::UpsertNode(NodeUpdate {
            output_json: Some(json!({"x": "y".repeat(500)}).to_string()),
            ..NodeUpdate::new(&key, NodeState::Finished)
        }))
        .op(Op::StartAttempt {
            key: key.clone(),
            attempt: 1,
            meta_json: None,
        })
        .op(Op::RequestApproval {
            key: key.clone(),
            label: None,
            request_json: "{}".into(),
        })
        .op(Op::InsertSignal {
            name: "go".into(),
            payload_json: "{}".into(),
            correlation_id: None,
            received_by: None,
        })
        .op(Op::SetLoop {
            loop_id: "l".into(),
            iteration: 1,
            done: false,
        });
    for (frame_no, hash) in [(1, "shared".to_string()), (2, format!("own-{run}"))] {
        commit.push_op(Op::StoreTree {
            tree_hash: hash.clone(),
            tree_json: "[]".into(),
            task_index_json: "[]".into(),
        });
        commit.push_event(EventBody::FrameCommitted {
            frame_no,
            xml_hash: hash,
            trigger: json!({}),
        });
    }
    for _ in 0..events {
        commit.push_event(EventBody::RunStarted {
            workflow_name: "w".repeat(200),
            workflow_hash: "h".into(),
            resumed: true,
        });
    }
    commit.push_op(Op::SetRunStatus {
        status,
        error: None,
    });
    store.commit(commit).await.unwrap();
}

fn rule(ended_before_ms: i64) -> CollectRule {
    CollectRule {
        ended_before_ms,
        statuses: vec![RunStatus::Finished, RunStatus::Failed, RunStatus::Cancelled],
    }
}

async fn step(
    store: &Store,
    run: &str,
    rule: &CollectRule,
    max_rows: u32,
) -> Result<CollectStep, StoreError> {
    store
        .commit(Commit::new(id(run)).op(Op::CollectRun {
            rule: rule.clone(),
            max_rows,
        }))
        .await
        .map(|outcome| outcome.collected.unwrap())
}

fn open(dir: &tempfile::TempDir) -> Store {
    Store::open(&dir.path().join("db.sqlite"), Durability::Normal).unwrap()
}

#[tokio::test]
async fn a_run_goes_in_bounded_steps_with_every_row_of_it_and_only_those() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir);
    seed(&store, "old", RunStatus::Finished, 20).await;
    seed(&store, "kept", RunStatus::Failed, 2).await;
    let expected = store.read(|r| r.collect_count(&id("old"))).await.unwrap();
    assert_eq!(expected.events, 23, "{expected:?}");
    assert_eq!(expected.frames, 2);
    for count in [
        expected.runs,
        expected.nodes,
        expected.attempts,
        expected.approvals,
        expected.signals,
        expected.loops,
        expected.versions,
    ] {
        assert_eq!(count, 1, "{expected:?}");
    }
    let rule = rule(now_ms() + 1000);
    let mut total = Removed::default();
    let mut steps = 0;
    loop {
        let done = step(&store, "old", &rule, 5).await.unwrap();
        assert!(done.removed.events + done.removed.nodes <= 5);
        total += done.removed;
        steps += 1;
        if done.done {
            break;
        }
        // Between steps the run is still there, marked as being removed.
        let run = store.read(|r| r.run(&id("old"))).await.unwrap().unwrap();
        assert_eq!(run.runtime_owner_id.as_deref(), Some(COLLECTING_OWNER));
    }
    assert!(steps >= 5, "{steps} steps");
    assert_eq!(
        total,
        Removed {
            frame_trees: 1,
            ..expected
        }
    );
    assert!(store.read(|r| r.run(&id("old"))).await.unwrap().is_none());
    assert_eq!(
        store.read(|r| r.collect_count(&id("old"))).await.unwrap(),
        Removed::default()
    );
    // The other run keeps everything, including the tree it shares.
    let kept = store.read(|r| r.collect_count(&id("kept"))).await.unwrap();
    assert_eq!((kept.runs, kept.events, kept.nodes), (1, 5, 1));
    let frames = store
        .read(|r| r.frames(&id("kept"), 10, None))
        .await
        .unwrap();
    assert_eq!(
        frames.len(),
        2,
        "both trees of the kept run are still stored"
    );
    // A run created again with the removed id starts its events from 0.
    seed(&store, "old", RunStatus::Finished, 0).await;
    let events = store
        .read(|r| r.events_after(&id("old"), -1, 10))
        .await
        .unwrap();
    assert_eq!(events.first().map(|e| e.seq), Some(0));
    store.close();
}

#[tokio::test]
async fn live_parked_and_recent_runs_are_refused_and_an_interrupted_removal_is_finished() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir);
    seed(&store, "parked", RunStatus::WaitingApproval, 0).await;
    seed(&store, "live", RunStatus::Running, 0).await;
    seed(&store, "recent", RunStatus::Finished, 0).await;
    let past = rule(now_ms() - 60_000);
    for (run, rule) in [
        ("parked", rule(i64::MAX)),
        ("live", rule(i64::MAX)),
        ("recent", past.clone()),
    ] {
        let refused = step(&store, run, &rule, 100).await;
        assert!(
            matches!(refused, Err(StoreError::Conflict(_))),
            "{run}: {refused:?}"
        );
    }
    let only_failed = CollectRule {
        statuses: vec![RunStatus::Failed],
        ..rule(i64::MAX)
    };
    assert!(matches!(
        step(&store, "recent", &only_failed, 100).await,
        Err(StoreError::Conflict(_))
    ));
    let candidates = store
        .read(move |r| r.collect_candidates(&rule(i64::MAX), None, 10))
        .await
        .unwrap();
    let names: Vec<_> = candidates.iter().map(|c| c.run_id.to_string()).collect();
    assert_eq!(names, ["recent"]);
    // A removal cut short is taken by any later pass, whatever its cutoff.
    step(&store, "recent", &rule(i64::MAX), 1).await.unwrap();
    let page_rule = past.clone();
    let candidates = store
        .read(move |r| r.collect_candidates(&page_rule, None, 10))
        .await
        .unwrap();
    assert_eq!(candidates.len(), 1);
    assert!(step(&store, "recent", &past, 1000).await.unwrap().done);
    store.close();
}

#[test]
fn whether_a_frame_still_names_a_tree_is_answered_by_the_index() {
    let dir = tempfile::tempdir().unwrap();
    let conn =
        super::super::schema::open_writer(&dir.path().join("db"), Durability::Normal).unwrap();
    let plan: Vec<String> = conn
        .prepare(
            "EXPLAIN QUERY PLAN SELECT 1 FROM events WHERE type = 'FrameCommitted'
               AND json_extract(payload_json, '$.xmlHash') = ?1",
        )
        .unwrap()
        .query_map(["h"], |row| row.get::<_, String>(3))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert!(
        plan.iter().any(|p| p.contains("events_frame_tree_idx")),
        "{plan:?}"
    );
}

#[tokio::test]
async fn a_new_database_gives_freed_pages_back_and_an_old_one_is_converted_once() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir);
    assert_eq!(
        store.read(|r| r.auto_vacuum()).await.unwrap(),
        AutoVacuum::Incremental
    );
    seed(&store, "big", RunStatus::Finished, 2000).await;
    while !step(&store, "big", &rule(i64::MAX), 1000)
        .await
        .unwrap()
        .done
    {}
    let free = store.read(|r| r.free_bytes()).await.unwrap();
    assert!(free > 100_000, "{free}");
    let mut reclaimed = 0;
    loop {
        let bytes = store
            .maintain(Maintenance::Reclaim { max_pages: 16 })
            .await
            .unwrap();
        assert!(bytes <= 16 * 4096);
        if bytes == 0 {
            break;
        }
        reclaimed += bytes;
    }
    assert_eq!(reclaimed, free);
    assert_eq!(store.read(|r| r.free_bytes()).await.unwrap(), 0);
    store.close();

    // A database made before incremental auto-vacuum: a table exists first.
    let old = tempfile::tempdir().unwrap();
    let path = old.path().join("db.sqlite");
    rusqlite::Connection::open(&path)
        .unwrap()
        .execute_batch("CREATE TABLE schema_migrations (version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at_ms INTEGER NOT NULL)")
        .unwrap();
    let store = Store::open(&path, Durability::Normal).unwrap();
    assert_eq!(
        store.read(|r| r.auto_vacuum()).await.unwrap(),
        AutoVacuum::None
    );
    seed(&store, "big", RunStatus::Finished, 500).await;
    while !step(&store, "big", &rule(i64::MAX), 1000)
        .await
        .unwrap()
        .done
    {}
    assert_eq!(
        store
            .maintain(Maintenance::Reclaim { max_pages: 16 })
            .await
            .unwrap(),
        0,
        "nothing to reclaim incrementally before the conversion"
    );
    let freed = store
        .maintain(Maintenance::ConvertToIncremental)
        .await
        .unwrap();
    assert!(freed > 0);
    assert_eq!(
        store.read(|r| r.auto_vacuum()).await.unwrap(),
        AutoVacuum::Incremental
    );
    assert_eq!(store.read(|r| r.free_bytes()).await.unwrap(), 0);
    store.close();
}
