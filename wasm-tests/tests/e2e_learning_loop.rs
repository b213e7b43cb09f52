//! The whole learning loop through real Envoy and the real control plane, as a user runs it
//! (docs/LEARNING-LOOP.md): HaluEval answers with their evidence go through the gateway for 24
//! tenants → the gate's escalations wait in the review queue → reviewers label those (gold,
//! `POST /v1/reviews/{tenant}/{pcs_id}`) and the owner the others (silver, `POST /v1/feedback`)
//! → a training job on the window (`POST /v1/hrs/train`) succeeds → its version, registered
//! with a model card (`POST /v1/hrs/register {job_id}`), is the treatment of an A/B experiment
//! against the champion → more answers, sent and labelled by `kakeya eval --through --feedback`,
//! give per-arm statistics → stop → promotion (`POST /v1/hrs/activate`) → the gate serves the
//! new version → the alias history shows every move → answers unlike the training decisions
//! raise feature-drift alerts against the new version's training reference → labels that
//! contradict it raise a performance-drift alert, and auto-revert (`[drift] auto_revert`, on
//! here) restores the previous champion, which the gate serves, with reason `auto_revert` in the
//! alias history.
//!
//! Each step is a function of [`Loop`]; the drift steps reuse [`kakeya_wasm_tests::drift_steps`]
//! (also behind `e2e_drift`).
//!
//! Rows: the HaluEval sample embedded in `kakeya` (`control-plane/data`), in the round-robin
//! order of `kakeya eval --limit` (whole items, both answers of each): the first 240 for
//! training, the next 240 for the experiment. 240 labelled decisions are above the default
//! `[training] min_labels` (100), so the configuration is the default one.
//!
//! On SQLite and, in a fresh schema of its own, on PostgreSQL (skipped loudly when unreachable,
//! a failure in CI; see `pg`).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod pg;

use kakeya_control_plane::learn::rfc3339;
use kakeya_control_plane::ml::dataset::{self, Row};
use kakeya_core::bundle::experiment_bucket;
use kakeya_wasm_tests::drift_steps::{
    alerts_of, check, label_against, lengthened, now_rfc3339, send_rows, write_rows,
};
use kakeya_wasm_tests::fixtures::{grounded_evidence, signed_pcs_with_evidence, KEY};
use kakeya_wasm_tests::stack::{post, Answer, Stack, StackOptions};
use serde_json::{json, Value};
use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

const POLL_MS: u64 = 200;
const TENANTS: usize = 24;
/// Rows of each phase (training traffic, experiment traffic).
const PHASE_ROWS: usize = 240;
const SAMPLE: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../control-plane/data/halueval-sample.jsonl.gz"
);

fn agent() -> ureq::Agent {
    ureq::AgentBuilder::new()
        .timeout(Duration::from_secs(20))
        .build()
}

/// `status` or fail with the answer.
fn expect(a: &Answer, status: u16, what: &str) -> Value {
    assert_eq!(a.status, status, "{what}: {} {}", a.status, a.body);
    a.json()
}

/// One answer as the client saw it.
#[derive(Debug, Clone)]
struct Sent {
    tenant: String,
    pcs_id: String,
    /// The dataset's label: 1 = hallucinated.
    label: u8,
    status: u16,
    model_version: String,
    bundle_version: u64,
}

/// Submits `body` for `tenant`, retrying the transient 503s of a loaded machine.
fn submit(stack: &Stack, tenant: &str, body: &[u8]) -> Answer {
    let headers = [
        ("content-type", "application/json"),
        ("x-tenant-id", tenant),
    ];
    for _ in 0..50 {
        let a = post(&agent(), &stack.url("/v1/pcs/submit"), &headers, body).unwrap();
        if a.status != 503 {
            return a;
        }
    }
    panic!("the gateway kept answering 503");
}

fn label_name(label: u8) -> &'static str {
    if label == 1 {
        "hallucinated"
    } else {
        "faithful"
    }
}

struct Loop {
    stack: Stack,
    tenants: Vec<String>,
    /// Both phases' rows, in `kakeya eval --limit` order.
    rows: Vec<Row>,
    /// When the traffic began (the training window starts before it).
    started_ms: i64,
    champion: String,
    /// The bundle of the first start (the default model as champion).
    first_bundle: u64,
}

impl Loop {
    /// A stack on SQLite, or on the PostgreSQL `database_url`.
    fn start(database_url: Option<String>) -> Loop {
        let tenants: Vec<String> = (0..TENANTS).map(|i| format!("t{i:02}")).collect();
        let keyring: Vec<String> = tenants.iter().map(|t| format!("{t}:hmac:{KEY}")).collect();
        let mut opts = StackOptions::scoring(POLL_MS);
        opts.env.push(("MULTI_TENANT".into(), "true".into()));
        opts.env.push(("TENANTS".into(), keyring.join(",")));
        // The drift tail: a performance-drift alert moves the champion back.
        opts.env
            .push(("KAKEYA_DRIFT_AUTO_REVERT".into(), "true".into()));
        if let Some(url) = database_url {
            opts.env.push(("DATABASE_URL".into(), url));
        }
        let stack = Stack::start(opts).unwrap();
        let bundle = stack.current_bundle().unwrap();
        let champion = bundle.champion.version();
        let all = dataset::load(std::path::Path::new(SAMPLE)).unwrap().rows;
        let rows = dataset::sample_by_task(&all, 2 * PHASE_ROWS);
        assert_eq!(rows.len(), 2 * PHASE_ROWS);
        Loop {
            stack,
            tenants,
            rows,
            started_ms: kakeya_control_plane::now_ms(),
            champion,
            first_bundle: bundle.version,
        }
    }

    fn get(&self, path: &str) -> Value {
        expect(&self.stack.admin_get(path).unwrap(), 200, path)
    }

    fn post(&self, path: &str, body: Value, status: u16) -> Value {
        expect(&self.stack.admin_post(path, &body).unwrap(), status, path)
    }

    /// Waits until the gate scores with a bundle: answers before the first poll are escalated
    /// unscored (`no model bundle`), and would not be HaluEval decisions with features.
    fn gate_scores(&self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        for i in 0.. {
            let body =
                signed_pcs_with_evidence(&format!("warm-{i}"), KEY, &grounded_evidence(), None);
            let a = submit(&self.stack, &self.tenants[0], body.to_string().as_bytes());
            if !a.json()["risk"].is_null() {
                return;
            }
            assert!(Instant::now() < deadline, "never scored: {a:?}");
        }
    }

    /// Step 1: the training phase's answers with their evidence, round-robin over the tenants.
    fn traffic_with_evidence(&self) -> Vec<Sent> {
        self.gate_scores();
        let rows = &self.rows[..PHASE_ROWS];
        let sent: Vec<Sent> = std::thread::scope(|s| {
            let workers: Vec<_> = (0..4)
                .map(|w| {
                    s.spawn(move || {
                        (w..rows.len())
                            .step_by(4)
                            .map(|i| self.send(i, &rows[i]))
                            .collect::<Vec<_>>()
                    })
                })
                .collect();
            workers
                .into_iter()
                .flat_map(|h| h.join().unwrap())
                .collect()
        });
        assert_eq!(sent.len(), PHASE_ROWS);
        let escalated = sent.iter().filter(|s| s.status == 202).count();
        eprintln!("training traffic: {PHASE_ROWS} answers, {escalated} escalated");
        assert!(
            escalated > 0,
            "the default model escalates some HaluEval answers"
        );
        assert!(sent
            .iter()
            .all(|s| s.model_version == self.champion && s.bundle_version == self.first_bundle));
        sent
    }

    fn send(&self, i: usize, row: &Row) -> Sent {
        let tenant = &self.tenants[i % TENANTS];
        let (body, _) = row.signed_pcs(&format!("loop-{}", row.id), Some(KEY));
        let a = submit(&self.stack, tenant, &body);
        assert!(a.status == 200 || a.status == 202, "{}: {a:?}", row.id);
        let v = a.json();
        let risk = &v["risk"];
        assert!(risk.is_object(), "{}: not scored: {}", row.id, a.body);
        let pcs: Value = serde_json::from_slice(&body).unwrap();
        Sent {
            tenant: tenant.clone(),
            pcs_id: pcs["pcs_id"].as_str().unwrap().into(),
            label: row.label,
            status: a.status,
            model_version: risk["model_version"].as_str().unwrap().into(),
            bundle_version: risk["bundle_version"].as_u64().unwrap(),
        }
    }

    /// Every open queue item, across pages.
    fn queue(&self, status: &str) -> Vec<Value> {
        let mut items = Vec::new();
        let mut cursor: Option<String> = None;
        loop {
            let mut path = format!("/v1/reviews?status={status}&limit=100");
            if let Some(c) = &cursor {
                path.push_str(&format!("&cursor={c}"));
            }
            let page = self.get(&path);
            items.extend(page["items"].as_array().unwrap().iter().cloned());
            match page["next_cursor"].as_str() {
                Some(c) => cursor = Some(c.into()),
                None => return items,
            }
        }
    }

    /// Step 2: every escalated answer waits in the review queue, as escalated; the others that
    /// are queued were drawn by the audit sample (2 % by default).
    fn escalations_are_queued(&self, sent: &[Sent]) -> BTreeSet<(String, String)> {
        let items = self.queue("open");
        let queued: BTreeMap<(String, String), String> = items
            .iter()
            .map(|i| {
                (
                    (
                        i["tenant"].as_str().unwrap().to_string(),
                        i["pcs_id"].as_str().unwrap().to_string(),
                    ),
                    i["queued_for"].as_str().unwrap().to_string(),
                )
            })
            .collect();
        let mut ours = BTreeSet::new();
        for s in sent {
            let key = (s.tenant.clone(), s.pcs_id.clone());
            match (s.status, queued.get(&key).map(String::as_str)) {
                (202, Some("escalated")) | (200, Some("audit_sample")) => {
                    ours.insert(key);
                }
                (200, None) => {}
                other => panic!("{key:?}: answered and queued as {other:?}"),
            }
        }
        let item = items
            .iter()
            .find(|i| {
                ours.contains(&(
                    i["tenant"].as_str().unwrap().into(),
                    i["pcs_id"].as_str().unwrap().into(),
                ))
            })
            .unwrap();
        assert_eq!(item["model_version"], self.champion.as_str());
        assert!(
            item["risk"].as_f64().is_some() && item["labels"] == json!([]),
            "{item}"
        );
        ours
    }

    /// Step 3: gold labels for the queued answers, silver feedback for the others.
    fn labels_through_the_api(&self, sent: &[Sent], queued: &BTreeSet<(String, String)>) {
        for s in sent {
            if queued.contains(&(s.tenant.clone(), s.pcs_id.clone())) {
                let row = self.post(
                    &format!("/v1/reviews/{}/{}", s.tenant, s.pcs_id),
                    json!({"label": label_name(s.label), "reviewer": "alice"}),
                    201,
                );
                assert_eq!(
                    (&row["source"], &row["labeller"]),
                    (&json!("gold"), &json!("alice"))
                );
            } else {
                let row = self.post(
                    "/v1/feedback",
                    json!({"tenant_id": s.tenant, "pcs_id": s.pcs_id, "label": label_name(s.label)}),
                    201,
                );
                assert_eq!(
                    (&row["source"], &row["labeller"]),
                    (&json!("silver"), &json!("owner"))
                );
            }
        }
        let open = self.queue("open");
        assert!(
            open.iter().all(|i| !queued.contains(&(
                i["tenant"].as_str().unwrap().into(),
                i["pcs_id"].as_str().unwrap().into()
            ))),
            "labelled items left the open queue"
        );
        assert!(self.queue("labelled").len() >= queued.len());
    }

    /// Polls a training job until it ends.
    fn job(&self, job_id: i64) -> Value {
        let deadline = Instant::now() + Duration::from_secs(180);
        loop {
            let job = self.get(&format!("/v1/hrs/jobs/{job_id}"));
            match job["status"].as_str().unwrap() {
                "succeeded" | "failed" => return job,
                "queued" | "running" => {}
                other => panic!("job status {other}"),
            }
            assert!(Instant::now() < deadline, "job {job_id} still {job}");
        }
    }

    /// Step 4: a training job over the window succeeds, with its metrics and intervals.
    fn training_job(&self, sent: &[Sent]) -> Value {
        let queued = self.post(
            "/v1/hrs/train",
            json!({"start_time": rfc3339(self.started_ms - 60_000),
                   "end_time": rfc3339(kakeya_control_plane::now_ms() + 60_000)}),
            202,
        );
        let job = self.job(queued["job_id"].as_i64().unwrap());
        assert_eq!(job["status"], "succeeded", "{job}");
        assert_eq!(job["progress"], 1.0);
        let r = &job["result"];
        let positives = sent.iter().filter(|s| s.label == 1).count();
        assert_eq!(r["n_samples"].as_u64(), Some(PHASE_ROWS as u64), "{r}");
        let ratio = r["positive_ratio"].as_f64().unwrap();
        assert!(
            (ratio - positives as f64 / PHASE_ROWS as f64).abs() < 1e-12,
            "{r}"
        );
        assert!(r["n_train"].as_u64().unwrap() > 0 && r["n_validation"].as_u64().unwrap() > 0);
        assert_eq!(r["dataset_hash"].as_str().unwrap().len(), 64, "{r}");
        // Every metric of issue 10's result: auroc, pr_auc, precision, recall, f1, ece, brier.
        for m in kakeya_control_plane::learn::fit::METRICS {
            let (v, lo, hi) = (
                r["metrics"][m]["value"].as_f64(),
                r["metrics"][m]["ci_low"].as_f64(),
                r["metrics"][m]["ci_high"].as_f64(),
            );
            let (v, lo, hi) = (v.unwrap(), lo.unwrap(), hi.unwrap());
            assert!(lo <= v && v <= hi, "{m}: {v} not in [{lo}, {hi}]");
        }
        eprintln!(
            "training job: {} on {} decisions, validation AUROC {:.3} [{:.3}, {:.3}]",
            r["version"],
            r["n_samples"],
            r["metrics"]["auroc"]["value"].as_f64().unwrap(),
            r["metrics"]["auroc"]["ci_low"].as_f64().unwrap(),
            r["metrics"]["auroc"]["ci_high"].as_f64().unwrap()
        );
        job
    }

    /// Step 5: the job's version is registered with a card of its dataset and metrics.
    fn registered_with_a_card(&self, job: &Value) -> String {
        let r = &job["result"];
        let reg = self.post("/v1/hrs/register", json!({"job_id": job["job_id"]}), 200);
        let version = reg["version"].as_str().unwrap().to_string();
        assert_eq!(reg["version"], r["version"]);
        assert_ne!(version, self.champion);
        assert_eq!(reg["status"], "registered");
        assert_eq!(reg["aliases"], json!([]), "registered, not promoted");
        let card = &reg["card"];
        assert_eq!(card["dataset"]["sha256"], r["dataset_hash"], "{card}");
        assert_eq!(card["evaluation"]["source"], "computed");
        assert_eq!(card["evaluation"]["n"], r["n_validation"]);
        let auroc = &card["evaluation"]["metrics"]["auroc"];
        assert_eq!(auroc, &r["metrics"]["auroc"], "{card}");
        assert!(card["limitations"]
            .as_array()
            .is_some_and(|l| !l.is_empty()));
        assert!(card["intended_use"].is_string());
        let stored = self.get(&format!("/v1/models/{version}"));
        assert_eq!(stored["card"], *card);
        version
    }

    /// Step 6: an experiment, champion against the new version, on half of the tenants.
    fn experiment(&self, treatment: &str) -> (String, u64) {
        let started = self.post(
            "/v1/hrs/ab/start",
            json!({"name": "loop", "control": self.champion, "treatment": treatment,
                   "traffic_split": 0.5, "duration": "1h"}),
            201,
        );
        let id = started["experiment_id"].as_str().unwrap().to_string();
        let first = started["bundle_version"].as_u64().unwrap();
        let arms: BTreeSet<bool> = self
            .tenants
            .iter()
            .map(|t| experiment_bucket(&id, t) < 5_000)
            .collect();
        assert_eq!(arms.len(), 2, "24 tenants at 0.5 land on both arms");
        (id, first)
    }

    /// Step 7: the experiment phase's answers, sent and labelled as a user does it:
    /// `kakeya eval --through … --feedback` (owner feedback for every row).
    fn experiment_traffic_by_the_cli(&self, treatment: &str, first_bundle: u64) -> Value {
        // Both arms answer from the experiment's bundles before the rows go: once one answer
        // comes from them, every later one does (the gate reads the shared bundle per request).
        let deadline = Instant::now() + Duration::from_secs(20);
        for i in 0.. {
            let body =
                signed_pcs_with_evidence(&format!("ab-warm-{i}"), KEY, &grounded_evidence(), None);
            let a = submit(&self.stack, &self.tenants[0], body.to_string().as_bytes());
            if a.json()["risk"]["bundle_version"].as_u64() >= Some(first_bundle) {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "the experiment's bundle never arrived: {a:?}"
            );
        }
        let report = self.stack.data_path().join("ab-traffic.json");
        let (skip, limit) = (PHASE_ROWS.to_string(), PHASE_ROWS.to_string());
        let out = self
            .stack
            .kakeya(&[
                "eval",
                "--dataset",
                SAMPLE,
                "--model",
                "champion",
                "--through",
                &self.stack.url(""),
                "--key",
                KEY,
                "--tenant",
                &self.tenants.join(","),
                "--skip",
                &skip,
                "--limit",
                &limit,
                "--allow-other-models",
                "--feedback",
                "--report",
                report.to_str().unwrap(),
            ])
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "kakeya eval: {}\n{stdout}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            stdout.contains("owner feedback (silver): 240 labels recorded"),
            "{stdout}"
        );
        let r: Value = serde_json::from_slice(&std::fs::read(&report).unwrap()).unwrap();
        let f = &r["feedback"];
        let positives = self.rows[PHASE_ROWS..]
            .iter()
            .filter(|r| r.label == 1)
            .count();
        assert_eq!(
            (
                f["created"].as_u64(),
                f["existing"].as_u64(),
                f["hallucinated"].as_u64()
            ),
            (Some(PHASE_ROWS as u64), Some(0), Some(positives as u64)),
            "{f}"
        );
        assert_eq!(f["tenants"].as_u64(), Some(TENANTS as u64));
        let models = &r["served"]["model_versions"];
        assert!(
            models[self.champion.as_str()].as_u64() > Some(0),
            "{models}"
        );
        assert!(models[treatment].as_u64() > Some(0), "{models}");
        assert_eq!(r["served"]["n"].as_u64(), Some(PHASE_ROWS as u64));
        r
    }

    /// Step 8: per-arm statistics from the decision log and the labels.
    fn experiment_statistics(&self, id: &str, treatment: &str, served: &Value) -> Value {
        let page = self.get(&format!("/v1/hrs/ab/{id}"));
        let models = &served["served"]["model_versions"];
        for (key, arm, model) in [
            ("control", "champion", self.champion.as_str()),
            ("treatment", "challenger", treatment),
        ] {
            let s = &page[key];
            assert_eq!(
                (s["arm"].as_str(), s["model_version"].as_str()),
                (Some(arm), Some(model)),
                "{s}"
            );
            // The experiment's answers: the CLI's rows plus the warm-up answers of its bundles.
            let rows = models[model].as_u64().unwrap();
            let requests = s["requests"].as_u64().unwrap();
            assert!(requests >= rows, "{key}: {requests} < {rows}");
            assert!(s["labelled"].as_u64().unwrap() >= rows, "{key}: {s}");
            let rate = s["escalation_rate"].as_f64().unwrap();
            let (lo, hi) = (
                s["escalation_ci95"]["low"].as_f64().unwrap(),
                s["escalation_ci95"]["high"].as_f64().unwrap(),
            );
            assert!(lo <= rate && rate <= hi, "{key}: Wilson {lo} {rate} {hi}");
            let both = s["hallucinated"].as_u64() >= Some(10) && s["faithful"].as_u64() >= Some(10);
            assert_eq!(s["auroc"].is_object(), both, "{key}: {s}");
            if both {
                let a = &s["auroc"];
                let v = a["auroc"].as_f64().unwrap();
                assert!(
                    a["ci95"]["low"].as_f64().unwrap() <= v
                        && v <= a["ci95"]["high"].as_f64().unwrap(),
                    "{a}"
                );
            }
        }
        let verdict = page["verdict"].as_str().unwrap();
        assert!(
            [
                "treatment_better",
                "control_better",
                "no_difference",
                "insufficient_data"
            ]
            .contains(&verdict),
            "{page}"
        );
        eprintln!(
            "experiment {id}: control {} requests AUROC {}, treatment {} requests AUROC {}; verdict {verdict} ({})",
            page["control"]["requests"],
            page["control"]["auroc"]["auroc"],
            page["treatment"]["requests"],
            page["treatment"]["auroc"]["auroc"],
            page["verdict_reason"]
        );
        page
    }

    /// Step 9: the experiment stops; everyone is back on the champion.
    fn stop(&self, id: &str) {
        let stopped = self.post(&format!("/v1/hrs/ab/{id}/stop"), json!({}), 200);
        assert_eq!(stopped["status"], "stopped", "{stopped}");
    }

    /// Step 10: the new version becomes the champion, and the gate serves it.
    fn promoted(&self, version: &str) -> u64 {
        let a = self.post(
            "/v1/hrs/activate",
            json!({"version": version, "comment": "won the loop experiment"}),
            200,
        );
        assert_eq!(
            (a["active"].as_str(), a["previous"].as_str()),
            (Some(version), Some(self.champion.as_str()))
        );
        let bundle = a["bundle_version"].as_u64().unwrap();
        let after = self.served(version, bundle, "served");
        eprintln!("the gate serves {version} {after:?} after the promotion");
        bundle
    }

    /// Sends answers (pcs ids under `shard`) until one is scored by `version` from bundle
    /// `bundle` or newer, on the champion arm; how long that took.
    fn served(&self, version: &str, bundle: u64, shard: &str) -> Duration {
        let start = Instant::now();
        let within = Duration::from_millis(POLL_MS * 10 + 2000);
        for (n, row) in self.rows[..PHASE_ROWS].iter().enumerate() {
            let tenant = &self.tenants[n % TENANTS];
            let (body, _) = row.signed_pcs(&format!("{shard}-{}", row.id), Some(KEY));
            let r = submit(&self.stack, tenant, &body).json();
            // An answer of an older bundle may still come from another arm or champion: only
            // the given bundle (or a newer one) counts.
            if r["risk"]["model_version"] == version
                && r["risk"]["bundle_version"].as_u64() >= Some(bundle)
            {
                assert_eq!(r["risk"]["arm"], "champion");
                return start.elapsed();
            }
            assert!(
                start.elapsed() < within,
                "{version} not served within {within:?}: {r}"
            );
        }
        panic!("{version} never served");
    }

    /// Step 11: the alias history, newest first: promotion, the experiment's end and start,
    /// the first start's champion.
    fn alias_history(&self, version: &str) {
        let page = self.get("/v1/aliases/history");
        let moves: Vec<Value> = page["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| {
                let keys = [
                    "alias",
                    "previous_version",
                    "new_version",
                    "reason",
                    "actor",
                ];
                Value::Array(keys.iter().map(|k| e[*k].clone()).collect())
            })
            .collect();
        let (c, v) = (self.champion.as_str(), version);
        let want = vec![
            json!(["champion", c, v, "manual", "admin-api"]),
            json!(["challenger", v, null, "manual", "admin-api"]),
            json!(["challenger", null, v, "manual", "admin-api"]),
            json!(["champion", null, c, "initial", "kakeya-serve"]),
        ];
        assert_eq!(moves, want, "{page}");
    }
    /// Step 12: answers unlike the training decisions (much longer) raise feature-drift alerts
    /// against the new champion's training reference (stored with the version by its training
    /// job); feature drift alone moves nothing. Returns when the shifted traffic began.
    fn injected_drift(&self, version: &str) -> i64 {
        let since = now_rfc3339();
        let since_ms = kakeya_control_plane::now_ms();
        let rows = lengthened(&self.rows[..PHASE_ROWS]);
        let file = write_rows(&rows, &self.stack.data_path().join("lengthened.jsonl")).unwrap();
        let sent = send_rows(&self.stack, &file, &self.tenants.join(","), version).unwrap();
        assert_eq!(sent["served"]["n"], PHASE_ROWS as u64, "{}", sent["served"]);
        let r = check(&self.stack, &since).unwrap();
        let m = &r["models"][0];
        assert_eq!(m["model_version"], version, "{r}");
        assert_eq!(m["features"]["status"], "drift", "{}", m["features"]);
        let feature = alerts_of(&r, "feature_drift");
        let drifted: BTreeSet<&str> = feature
            .iter()
            .filter_map(|a| a["feature"].as_str())
            .collect();
        assert!(drifted.contains("resp_tokens_log"), "{drifted:?}");
        assert!(alerts_of(&r, "performance_drift").is_empty(), "{r}");
        assert_eq!(
            self.stack.current_bundle().unwrap().champion.version(),
            version
        );
        eprintln!(
            "injected drift: {} feature alerts on {} features",
            feature.len(),
            drifted.len()
        );
        since_ms
    }

    /// Step 13: labels that contradict the champion on the shifted answers (the owner's
    /// feedback) → a performance-drift alert → auto-revert to the previous champion, recorded
    /// in the alias history and served by the gate.
    fn auto_revert(&self, version: &str, since_ms: i64) {
        let labelled: usize = self
            .tenants
            .iter()
            .map(|t| label_against(&self.stack, t, version, since_ms).unwrap())
            .sum();
        assert_eq!(labelled, PHASE_ROWS);
        let r = check(&self.stack, &rfc3339(since_ms)).unwrap();
        let perf = alerts_of(&r, "performance_drift");
        assert_eq!(perf.len(), 1, "{}", r["models"][0]["performance"]);
        assert_eq!(perf[0]["action"], "reverted", "{}", perf[0]);
        assert_eq!(
            self.stack.current_bundle().unwrap().champion.version(),
            self.champion
        );
        let page = self.get("/v1/aliases/history?alias=champion");
        let last = &page["items"][0];
        assert_eq!(
            (
                last["reason"].as_str(),
                last["previous_version"].as_str(),
                last["new_version"].as_str()
            ),
            (
                Some("auto_revert"),
                Some(version),
                Some(self.champion.as_str())
            ),
            "{page}"
        );
        let bundle = last["bundle_version"].as_u64().unwrap();
        let after = self.served(&self.champion, bundle, "reverted");
        eprintln!(
            "auto-revert: {} back as champion, served {after:?} after (bundle {bundle}), rolling AUROC {} vs card {}",
            self.champion,
            r["models"][0]["performance"]["auroc"]["auroc"],
            r["models"][0]["performance"]["reference_auroc"]
        );
    }
}

/// The steps in order.
fn learning_loop(database_url: Option<String>) {
    let l = Loop::start(database_url);
    let sent = l.traffic_with_evidence();
    let queued = l.escalations_are_queued(&sent);
    l.labels_through_the_api(&sent, &queued);
    let job = l.training_job(&sent);
    let version = l.registered_with_a_card(&job);
    let (id, first_bundle) = l.experiment(&version);
    let served = l.experiment_traffic_by_the_cli(&version, first_bundle);
    l.experiment_statistics(&id, &version, &served);
    l.stop(&id);
    l.promoted(&version);
    l.alias_history(&version);
    let since_ms = l.injected_drift(&version);
    l.auto_revert(&version, since_ms);
}

#[test]
fn the_learning_loop_from_traffic_to_a_promoted_model_served_by_the_gate() {
    learning_loop(None);
}

#[test]
fn the_learning_loop_on_postgresql() {
    let Some(schema) = pg::Schema::create("e2e_learning_loop") else {
        return;
    };
    learning_loop(Some(schema.database_url()));
}
