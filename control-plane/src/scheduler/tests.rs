//! Scheduler runs on SQLite and PostgreSQL with real training jobs on labelled HaluEval
//! decisions ([`crate::learn::tests::seed_halueval`]): the gate against the default champion,
//! a deployment through the registry with history reason `gate`, recorded failures, due-ness
//! that survives a restart, one run per period with two contenders, stale runs.

use super::gate::{GateCheckName, GateThresholds};
use super::*;
use crate::learn::tests::{seed_halueval, MINUTE, SIGNING_SEED, T0};
use crate::lease::{run_as_leader, Leases};
use crate::testutil::{all_dbs, postgres_db};

const HOUR: i64 = 60 * MINUTE;
const DAY: i64 = 24 * HOUR;

fn settings(auto_deploy: bool, gate: GateThresholds) -> Settings {
    Settings {
        config: SchedulerConfig {
            retrain: true,
            auto_deploy,
            gate,
            ..SchedulerConfig::default()
        },
        training: TrainingOptions {
            min_labels: 100,
            validation_fraction: 0.25,
            bootstrap_resamples: 200,
        },
    }
}

fn lenient() -> GateThresholds {
    GateThresholds {
        auroc_floor: 0.5,
        ece_ceiling: 0.5,
        drop_alpha: 0.05,
    }
}

fn check<'a>(gate: &'a Value, name: &str) -> &'a Value {
    gate["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["check"] == name)
        .unwrap_or_else(|| panic!("no check {name} in {gate}"))
}

async fn champion(db: &Db) -> Option<String> {
    let mut conn = db.pool.acquire().await.unwrap();
    registry::aliases(&mut conn)
        .await
        .unwrap()
        .into_iter()
        .find(|a| a.alias == CHAMPION)
        .map(|a| a.version)
}

async fn history(db: &Db) -> Vec<registry::HistoryEntry> {
    let mut conn = db.pool.acquire().await.unwrap();
    registry::history::page(&mut conn, Some(CHAMPION), None, 100)
        .await
        .unwrap()
}

/// One line per run on the test's output (`-- --nocapture`): outcome, versions, the gate.
fn show(label: &str, run: &SchedulerRun) {
    let gate = run
        .gate
        .clone()
        .and_then(|g| serde_json::from_value::<gate::GateReport>(g).ok())
        .map_or_else(
            || "no gate".to_string(),
            |r| format!("{} validation decisions: {}", r.n_validation, r.summary()),
        );
    eprintln!(
        "{label}: run {} {}: candidate {} vs champion {}: {gate}",
        run.run_id,
        run.outcome.map_or("?", RunOutcome::as_str),
        run.candidate_version.as_deref().unwrap_or("-"),
        run.champion_version.as_deref().unwrap_or("-"),
    );
}

fn counter(outcome: RunOutcome) -> u64 {
    runs_total().with_label_values(&[outcome.as_str()]).get()
}

/// The whole path on both databases. 300 labelled HaluEval decisions are logged on 2026-01-01,
/// one a minute from 00:00; no model is registered. The scheduled run of 02:30 trains on the
/// 150 decisions so far; with no champion to compare with, it passes and is deployed through
/// the registry (history: reason gate, actor scheduler, the gate's values in the comment). A
/// restart within the period finds the period done. The next day's run trains on all 300,
/// compares with that champion by the paired DeLong test on its own validation rows, passes
/// and replaces it. The day after, the same data and seed give the same artifact, the
/// champion already: passed, nothing moves.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scheduled_run_trains_gates_deploys_and_keeps_its_period() {
    for t in all_dbs("scheduler_end_to_end").await {
        let (db, l) = (&t.db, t.label);
        let n = seed_halueval(db, "acme", 300).await;
        let s = settings(true, lenient());
        let now = T0 + 150 * MINUTE;
        let deployed_before = counter(RunOutcome::Deployed);
        let run = tick(db, &SIGNING_SEED, &s, now).await.unwrap().unwrap();
        show(l, &run);
        assert_eq!(run.outcome, Some(RunOutcome::Deployed), "{l}: {run:?}");
        assert_eq!(
            (run.trigger, run.period_start_ms, run.status),
            (RunTrigger::Schedule, Some(T0), RunStatus::Finished)
        );
        let first = run.candidate_version.clone().unwrap();
        assert_eq!(run.champion_version, None);
        // The job: the window [now − 7 d, now), the 150 decisions so far.
        let job = jobs::get(db, run.job_id.unwrap()).await.unwrap().unwrap();
        assert_eq!(job.status, JobStatus::Succeeded, "{l}");
        assert_eq!(job.model_version.as_deref(), Some(first.as_str()));
        assert_eq!(
            (job.params.start_ms, job.params.end_ms),
            (now - 7 * DAY, now)
        );
        let result = job.result.unwrap();
        assert_eq!(result["n_samples"], 150);
        // The gate: three checks with values and thresholds, on the job's validation rows; the
        // candidate's AUROC and ECE are the job's own holdout figures (same rows, same artifact).
        let gate = run.gate.clone().unwrap();
        assert_eq!(gate["passed"], true);
        assert_eq!(gate["n_validation"], result["n_validation"]);
        let floor = check(&gate, "auroc_floor");
        assert_eq!(floor["threshold"], 0.5);
        let auroc = floor["value"].as_f64().unwrap();
        let job_auroc = result["metrics"]["auroc"]["value"].as_f64().unwrap();
        assert!(
            (auroc - job_auroc).abs() < 1e-12,
            "{l}: {auroc} vs {job_auroc}"
        );
        let ece = check(&gate, "ece_ceiling")["value"].as_f64().unwrap();
        let job_ece = result["metrics"]["ece"]["value"].as_f64().unwrap();
        assert!((ece - job_ece).abs() < 1e-12, "{l}: {ece} vs {job_ece}");
        let drop = check(&gate, "auroc_drop");
        assert_eq!(
            (drop["passed"].as_bool(), drop["note"].as_str()),
            (Some(true), Some("no champion to compare with"))
        );
        // Deployed through the registry: champion set, bundle published, history says why.
        assert_eq!(champion(db).await.as_deref(), Some(first.as_str()));
        let h = history(db).await;
        let last = &h[0];
        assert_eq!(
            (
                last.reason,
                last.actor.as_str(),
                last.previous_version.as_deref(),
                last.new_version.as_deref()
            ),
            (Reason::Gate, "scheduler", None, Some(first.as_str())),
            "{l}"
        );
        let comment = last.comment.clone().unwrap();
        assert!(
            comment.contains(&format!("scheduler run {}", run.run_id))
                && comment.contains(&format!("auroc = {auroc:.4}"))
                && comment.contains("rule auroc >= 0.5")
                && comment.contains("ece_ceiling pass"),
            "{l}: {comment}"
        );
        let detail = run.detail.clone().unwrap();
        assert_eq!(detail["history_id"], last.id);
        assert_eq!(detail["bundle_version"], last.bundle_version);
        let bundle = registry::current_bundle(db).await.unwrap().unwrap();
        assert_eq!(bundle.version, last.bundle_version);
        assert!(counter(RunOutcome::Deployed) > deployed_before);
        // A restart within the period: not due, nothing runs, due-ness read from the database.
        assert!(tick(db, &SIGNING_SEED, &s, now + HOUR)
            .await
            .unwrap()
            .is_none());
        let st = status(db, &s.config, None, now + HOUR).await.unwrap();
        assert_eq!(st.next_due_ms, Some(T0 + DAY), "{l}");
        assert_eq!(st.last_run.as_ref().map(|r| r.run_id), Some(run.run_id));
        assert!(st.running.is_none() && st.enabled);
        assert_eq!(store::page(&db.pool, None, 10).await.unwrap().len(), 1);
        // The next period is due; its run trains on all 300 and is compared with the champion.
        let day2 = T0 + DAY + MINUTE;
        let st = status(db, &s.config, None, day2).await.unwrap();
        assert_eq!(st.next_due_ms, Some(day2));
        let second = tick(db, &SIGNING_SEED, &s, day2).await.unwrap().unwrap();
        show(l, &second);
        assert_eq!(
            second.outcome,
            Some(RunOutcome::Deployed),
            "{l}: {second:?}"
        );
        assert_eq!(second.champion_version.as_deref(), Some(first.as_str()));
        let candidate = second.candidate_version.clone().unwrap();
        assert_ne!(candidate, first);
        let gate = second.gate.clone().unwrap();
        let drop = check(&gate, "auroc_drop");
        let p = drop["value"].as_f64().unwrap();
        let cmp = &gate["comparison"];
        assert_eq!(cmp["comparison"]["p_value"].as_f64(), Some(p));
        assert_eq!(
            cmp["second"]["auroc"].as_f64(),
            check(&gate, "auroc_floor")["value"].as_f64(),
            "the candidate is the second of the paired comparison"
        );
        assert!(
            cmp["comparison"]["difference"].as_f64().unwrap() >= 0.0 || p >= 0.05,
            "{l}: passed, so no significant drop: {cmp}"
        );
        let h = history(db).await;
        assert_eq!(
            (
                h[0].reason,
                h[0].previous_version.as_deref(),
                h[0].new_version.as_deref()
            ),
            (Reason::Gate, Some(first.as_str()), Some(candidate.as_str())),
            "{l}"
        );
        assert!(h[0].comment.as_deref().unwrap().contains("champion auroc"));
        // The third period: the same data and seed, the same artifact: the champion already.
        let again = tick(db, &SIGNING_SEED, &s, T0 + 2 * DAY)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            again.outcome,
            Some(RunOutcome::GatePassed),
            "{l}: {again:?}"
        );
        assert_eq!(again.candidate_version.as_deref(), Some(candidate.as_str()));
        let why = again.detail.unwrap()["not_deployed"].clone();
        assert!(
            why.as_str().unwrap().contains("is the champion already"),
            "{why}"
        );
        assert_eq!(
            check(again.gate.as_ref().unwrap(), "auroc_drop")["value"],
            1.0
        );
        assert_eq!(history(db).await.len(), h.len(), "{l}: nothing moved");
        let result = jobs::get(db, again.job_id.unwrap()).await.unwrap().unwrap();
        assert_eq!(result.result.unwrap()["n_samples"], n);
        // Pages, newest first.
        let page = store::page(&db.pool, None, 1).await.unwrap();
        assert_eq!(page[0].run_id, again.run_id);
        let older = store::page(&db.pool, Some(again.run_id), 10).await.unwrap();
        assert_eq!(
            older.iter().map(|r| r.run_id).collect::<Vec<_>>(),
            [second.run_id, run.run_id]
        );
        t.cleanup().await;
    }
}

/// Failures are recorded outcomes that move nothing. The default model (trained at first start
/// on the embedded HaluEval sample, which these decisions come from, so it has seen them) is
/// the champion: on the candidate's validation rows it ranks significantly better, so the
/// candidate fails the drop check, and a strict gate fails the floor and the ceiling too. With
/// a drop_alpha that tolerates the drop and auto_deploy off, the pass is recorded and nothing
/// moves. Too few labels is a dataset error with the dataset's counts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failures_are_recorded_outcomes_that_move_nothing() {
    for t in all_dbs("scheduler_failures").await {
        let (db, l) = (&t.db, t.label);
        registry::bootstrap::start(db, &SIGNING_SEED).await.unwrap();
        let default = champion(db).await.unwrap();
        seed_halueval(db, "acme", 300).await;
        let now = T0 + 6 * HOUR;
        let s = settings(true, lenient());
        let Claim::Started(id) = claim(db, &s, RunTrigger::Manual, now).await.unwrap() else {
            panic!("{l}: not claimed");
        };
        let run = execute(db, &SIGNING_SEED, &s, id, None).await.unwrap();
        show(l, &run);
        assert_eq!(run.outcome, Some(RunOutcome::GateFailed), "{l}: {run:?}");
        assert_eq!(
            (run.trigger, run.period_start_ms),
            (RunTrigger::Manual, None)
        );
        assert_eq!(run.champion_version.as_deref(), Some(default.as_str()));
        assert_eq!(
            run.detail.as_ref().unwrap()["failed_checks"],
            json!(["auroc_drop"]),
            "{l}"
        );
        let gate = run.gate.as_ref().unwrap();
        let drop = check(gate, "auroc_drop");
        assert_eq!(drop["passed"], false);
        let p = drop["value"].as_f64().unwrap();
        let difference = gate["comparison"]["comparison"]["difference"]
            .as_f64()
            .unwrap();
        assert!(p < 0.05 && difference < 0.0, "{l}: {gate}");
        assert_eq!(champion(db).await, Some(default.clone()), "{l}");
        let strict = GateThresholds {
            auroc_floor: 0.99,
            ece_ceiling: 0.0,
            drop_alpha: 0.05,
        };
        let s = settings(true, strict);
        let Claim::Started(id) = claim(db, &s, RunTrigger::Manual, now + 1).await.unwrap() else {
            panic!("{l}: not claimed");
        };
        let strict_run = execute(db, &SIGNING_SEED, &s, id, None).await.unwrap();
        assert_eq!(
            strict_run.detail.as_ref().unwrap()["failed_checks"],
            json!(["auroc_floor", "auroc_drop", "ece_ceiling"]),
            "{l}"
        );
        let floor = check(strict_run.gate.as_ref().unwrap(), "auroc_floor");
        assert_eq!(
            (floor["passed"].as_bool(), floor["threshold"].as_f64()),
            (Some(false), Some(0.99))
        );
        assert!(floor["value"].as_f64().unwrap() < 0.99);
        // Tolerating that drop (alpha below its p-value), auto_deploy off: recorded, not deployed.
        let mut tolerant = lenient();
        tolerant.drop_alpha = p / 2.0;
        let s = settings(false, tolerant);
        let Claim::Started(id) = claim(db, &s, RunTrigger::Manual, now + 2).await.unwrap() else {
            panic!("{l}: not claimed");
        };
        let passed = execute(db, &SIGNING_SEED, &s, id, None).await.unwrap();
        assert_eq!(
            passed.outcome,
            Some(RunOutcome::GatePassed),
            "{l}: {passed:?}"
        );
        assert_eq!(passed.candidate_version, run.candidate_version);
        assert_eq!(passed.detail.unwrap()["not_deployed"], "auto_deploy is off");
        assert_eq!(champion(db).await, Some(default.clone()));
        assert_eq!(history(db).await.len(), 1, "{l}: only the initial move");
        // One hour of decisions: 60 labels, fewer than the 100 needed.
        let mut s = settings(true, lenient());
        s.config.train_window = "1h".into();
        s.config.train_window_ms = HOUR;
        let Claim::Started(id) = claim(db, &s, RunTrigger::Manual, T0 + HOUR).await.unwrap() else {
            panic!("{l}: not claimed");
        };
        let few = execute(db, &SIGNING_SEED, &s, id, None).await.unwrap();
        assert_eq!(few.outcome, Some(RunOutcome::DatasetError), "{l}: {few:?}");
        let e = &few.detail.as_ref().unwrap()["error"];
        assert_eq!(
            (
                e["code"].as_str(),
                e["n_labelled"].as_u64(),
                e["min"].as_u64()
            ),
            (Some("insufficient_labels"), Some(60), Some(100)),
            "{l}: {e}"
        );
        assert!(few.candidate_version.is_none() && few.gate.is_none());
        t.cleanup().await;
    }
}

/// One run at a time: a second claim is refused while one is in progress; a run whose
/// heartbeat went stale (its process died) is finished as interrupted by the next claim.
#[tokio::test]
async fn one_run_at_a_time_and_stale_runs_are_interrupted() {
    for t in all_dbs("scheduler_one_at_a_time").await {
        let (db, l) = (&t.db, t.label);
        let s = settings(false, lenient());
        let now = T0;
        let Claim::Started(first) = claim(db, &s, RunTrigger::Manual, now).await.unwrap() else {
            panic!("{l}");
        };
        match claim(db, &s, RunTrigger::Schedule, now + 1000)
            .await
            .unwrap()
        {
            Claim::Busy(r) => assert_eq!(r.run_id, first, "{l}"),
            other => panic!("{l}: {other:?}"),
        }
        assert!(matches!(
            claim(db, &s, RunTrigger::Manual, now + 1000).await.unwrap(),
            Claim::Busy(_)
        ));
        // No heartbeat for longer than the stale limit: the next claim interrupts it.
        let later = now + jobs::STALE_MS + 1;
        let Claim::Started(second) = claim(db, &s, RunTrigger::Schedule, later).await.unwrap()
        else {
            panic!("{l}");
        };
        let r = store::get(&db.pool, first).await.unwrap().unwrap();
        assert_eq!(
            (r.status, r.outcome),
            (RunStatus::Finished, Some(RunOutcome::Interrupted)),
            "{l}"
        );
        assert_eq!(r.detail.unwrap()["code"], "interrupted");
        // A late outcome of the interrupted run changes nothing.
        let f = Finish {
            outcome: RunOutcome::Deployed,
            candidate_version: None,
            champion_version: None,
            gate: None,
            detail: json!({}),
        };
        assert!(!store::finish(&db.pool, first, &f, later).await.unwrap());
        // The scheduled run of this period runs (an empty range: a dataset error); the period
        // is done afterwards, the stale one did not count for it (it was manual).
        let done = execute(db, &SIGNING_SEED, &s, second, None).await.unwrap();
        assert_eq!(
            done.outcome,
            Some(RunOutcome::DatasetError),
            "{l}: {done:?}"
        );
        assert_eq!(done.detail.unwrap()["error"]["code"], "empty_range");
        match claim(db, &s, RunTrigger::Schedule, later + 1)
            .await
            .unwrap()
        {
            Claim::PeriodDone(r) => assert_eq!(r.run_id, second),
            other => panic!("{l}: {other:?}"),
        }
        t.cleanup().await;
    }
}

/// Two contenders on one PostgreSQL database: concurrent claims for one period admit one; two
/// replicas' leader loops (separate leases, one database) run the period once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_contenders_on_postgres_run_one_period_once() {
    let Some(t) = postgres_db("scheduler_two_contenders").await else {
        return;
    };
    let db = &t.db;
    let s = settings(false, lenient());
    let now = T0 + HOUR;
    let (a, b) = tokio::join!(
        claim(db, &s, RunTrigger::Schedule, now),
        claim(db, &s, RunTrigger::Schedule, now)
    );
    let claims = [a.unwrap(), b.unwrap()];
    let started: Vec<i64> = claims
        .iter()
        .filter_map(|c| match c {
            Claim::Started(id) => Some(*id),
            _ => None,
        })
        .collect();
    assert_eq!(started.len(), 1, "{claims:?}");
    execute(db, &SIGNING_SEED, &s, started[0], None)
        .await
        .unwrap();
    // The next period, through two leader loops (two replicas' leases on one database).
    let next = now + DAY;
    let metrics = crate::metrics::Metrics::new().unwrap();
    let replicas: Vec<_> = (0..2)
        .map(|_| {
            let leases = Leases::new(metrics.leader.clone(), Duration::from_millis(100));
            let (db2, s2) = (db.clone(), s.clone());
            let job = run_as_leader(
                db.clone(),
                &leases,
                LEASE,
                Duration::from_millis(100),
                move || {
                    let (db, s) = (db2.clone(), s2.clone());
                    async move {
                        tick(&db, &SIGNING_SEED, &s, next).await.unwrap();
                    }
                },
            )
            .unwrap();
            (leases, job)
        })
        .collect();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let held: Vec<bool> = replicas.iter().map(|(l, _)| l.snapshot()[0].held).collect();
    assert_eq!(held.iter().filter(|h| **h).count(), 1, "{held:?}");
    let holder = crate::lease::holder(db, LEASE).await.unwrap();
    assert_eq!(holder, Some(crate::lease::replica_id()));
    for (_, j) in &replicas {
        j.abort();
    }
    let runs = store::page(&db.pool, None, 10).await.unwrap();
    let periods: Vec<Option<i64>> = runs.iter().map(|r| r.period_start_ms).collect();
    assert_eq!(periods, [Some(T0 + DAY), Some(T0)], "{runs:?}");
    assert!(runs.iter().all(|r| r.status == RunStatus::Finished));
    t.cleanup().await;
}

#[test]
fn outcomes_and_triggers_round_trip_and_data_codes_are_the_dataset_errors() {
    for o in RunOutcome::ALL {
        assert_eq!(RunOutcome::parse(o.as_str()), Some(o));
        assert_eq!(serde_json::to_value(o).unwrap(), o.as_str());
    }
    for t in [RunTrigger::Schedule, RunTrigger::Manual] {
        assert_eq!(RunTrigger::parse(t.as_str()), Some(t));
    }
    let all = [
        DatasetError::BadRange {
            start_ms: 1,
            end_ms: 0,
        },
        DatasetError::EmptyRange {
            start_ms: 0,
            end_ms: 1,
        },
        DatasetError::NoRowsOfSchema {
            n_decisions: 1,
            schema: "x",
        },
        DatasetError::InsufficientLabels {
            n_labelled: 1,
            n_hallucinated: 1,
            n_faithful: 0,
            min: 100,
        },
        DatasetError::OneClassSplit {
            part: "train",
            n_hallucinated: 1,
            n_faithful: 0,
            n_train: 1,
            n_validation: 1,
        },
    ];
    for e in &all {
        assert!(e.is_about_the_data(), "{e}");
    }
    assert_eq!(DatasetError::DATA_CODES.len(), all.len());
    assert!(!DatasetError::Store("down".into()).is_about_the_data());
    assert_eq!(GateCheckName::AurocDrop.as_str(), "auroc_drop");
}

/// The routes on a live control plane with `[scheduler] retrain = true` (SQLite: the lease is
/// trivially held): the leader runs the current period at once (an empty log: a dataset
/// error); a second run while one is in progress is a 409 that starts nothing; bad paging is
/// a 400; a manual run is a 202 whose run finishes; the outcomes are counted in /metrics.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_routes_show_the_scheduler_refuse_a_second_run_and_start_one() {
    use crate::api::tests::{admin, config, read_token};
    let tmp = tempfile::tempdir().unwrap();
    let mut cfg = config(tmp.path());
    cfg.scheduler.retrain = true;
    let r = crate::server::start(&cfg).await.unwrap();
    let token = read_token(tmp.path());
    let get = |path: String| {
        let token = token.clone();
        let r = &r;
        async move {
            let a = admin(r, "GET", &path, Some(&token)).await;
            assert_eq!(a.status, 200, "{path}: {}", a.body);
            a.json()
        }
    };
    let mut st = get("/v1/hrs/scheduler".into()).await;
    for _ in 0..200 {
        if !st["last_run"].is_null() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        st = get("/v1/hrs/scheduler".into()).await;
    }
    let first = &st["last_run"];
    assert_eq!(
        (first["trigger"].as_str(), first["outcome"].as_str()),
        (Some("schedule"), Some("dataset_error")),
        "{st}"
    );
    assert_eq!(first["detail"]["error"]["code"], "empty_range");
    assert_eq!(st["enabled"], true);
    assert_eq!(st["lease"]["name"], LEASE);
    assert_eq!(st["lease"]["here"]["held"], true, "{st}");
    assert_eq!(
        st["lease"]["holder"].as_str(),
        Some(crate::lease::replica_id().as_str())
    );
    let period = cfg.scheduler.period_start(crate::now_ms());
    assert_eq!(st["next_due_ms"], period + DAY, "{st}");
    assert_eq!(st["config"]["gate"]["auroc_floor"], 0.75);
    // One in progress (claimed here, as another replica or the CLI would): 409, nothing started.
    let s = Settings {
        config: cfg.scheduler.clone(),
        training: cfg.training,
    };
    let Claim::Started(busy) = claim(&r.db, &s, RunTrigger::Manual, crate::now_ms())
        .await
        .unwrap()
    else {
        panic!("not claimed");
    };
    let a = admin(&r, "POST", "/v1/hrs/scheduler/run", Some(&token)).await;
    assert_eq!(a.status, 409, "{}", a.body);
    assert_eq!(a.json()["code"], "run_in_progress");
    assert!(a.json()["error"]
        .as_str()
        .unwrap()
        .contains(&format!("run {busy}")));
    let in_progress = get("/v1/hrs/scheduler".into()).await;
    assert_eq!(in_progress["running"]["run_id"], busy);
    execute(&r.db, &SIGNING_SEED, &s, busy, None).await.unwrap();
    // Bad paging: 400 JSON.
    for path in [
        "/v1/hrs/scheduler/runs?limit=0",
        "/v1/hrs/scheduler/runs?limit=1001",
        "/v1/hrs/scheduler/runs?limit=x",
        "/v1/hrs/scheduler/runs?cursor=not-a-cursor",
    ] {
        let a = admin(&r, "GET", path, Some(&token)).await;
        assert_eq!(a.status, 400, "{path}: {}", a.body);
        assert_eq!(a.json()["code"], "bad_request", "{path}");
    }
    // A manual run: 202, then it finishes (the empty log again).
    let a = admin(&r, "POST", "/v1/hrs/scheduler/run", Some(&token)).await;
    assert_eq!(a.status, 202, "{}", a.body);
    let id = a.json()["run_id"].as_i64().unwrap();
    let mut run = Value::Null;
    for _ in 0..200 {
        let page = get("/v1/hrs/scheduler/runs?limit=1".into()).await;
        run = page["runs"][0].clone();
        if run["run_id"] == id && run["status"] == "finished" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        (run["trigger"].as_str(), run["outcome"].as_str()),
        (Some("manual"), Some("dataset_error")),
        "{run}"
    );
    assert!(run["job_id"].as_i64().is_some());
    // Three runs, paged one at a time.
    let page = get("/v1/hrs/scheduler/runs?limit=2".into()).await;
    assert_eq!(page["runs"].as_array().unwrap().len(), 2);
    let cursor = page["next_cursor"].as_str().unwrap().to_string();
    let rest = get(format!("/v1/hrs/scheduler/runs?limit=2&cursor={cursor}")).await;
    assert_eq!(rest["runs"].as_array().unwrap().len(), 1);
    assert!(rest["next_cursor"].is_null());
    assert_eq!(rest["runs"][0]["run_id"], first["run_id"]);
    let m = admin(&r, "GET", "/metrics", Some(&token)).await;
    assert!(
        m.body
            .contains("kakeya_scheduler_runs_total{outcome=\"dataset_error\"}"),
        "{}",
        m.body
    );
    r.shutdown().await.unwrap();
}
