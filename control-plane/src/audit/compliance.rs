//! SOC 2 and ISO 27001 reports from stored data.
//!
//! Every figure is the result of a named query of [`QUERIES`] over the period (its SQL text is
//! listed in the report) or, for the audit log, carries the seq range it counts and the signed
//! checkpoint covering it, re-verified when the report is made. A control's status comes from
//! a stated rule over its figures; with no data in the period it is `no_evidence`, never a
//! pass. Nothing here is a literal figure.

use super::store::{self, Checkpoint};
use crate::store::Db;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use sqlx::Row;
use std::collections::BTreeMap;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
#[schema(as = ComplianceFramework)]
pub enum Framework {
    Soc2,
    Iso27001,
}

impl Framework {
    pub fn parse(s: &str) -> Option<Framework> {
        match s {
            "soc2" => Some(Framework::Soc2),
            "iso27001" => Some(Framework::Iso27001),
            _ => None,
        }
    }
    pub fn title(self) -> &'static str {
        match self {
            Framework::Soc2 => "SOC 2 (Trust Services Criteria)",
            Framework::Iso27001 => "ISO/IEC 27001 (Annex A)",
        }
    }
}

/// A named query: `$1` is the period's start, `$2` its end (ms since the epoch, half-open).
/// Each returns one row of integer columns, except `labelled_risk` (rows for the AUROC) and
/// `audit_kind_counts` (one row per kind).
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
#[schema(as = ComplianceQuery)]
pub struct Query {
    pub id: &'static str,
    pub sql: &'static str,
}

pub const QUERIES: &[Query] = &[
    Query {
        id: "decisions",
        sql: "SELECT COUNT(*) AS total, \
              COALESCE(SUM(CASE WHEN accepted = 1 AND escalated = 0 THEN 1 ELSE 0 END), 0) AS accepted, \
              COALESCE(SUM(CASE WHEN escalated = 1 THEN 1 ELSE 0 END), 0) AS escalated, \
              COALESCE(SUM(CASE WHEN accepted = 0 AND escalated = 0 THEN 1 ELSE 0 END), 0) AS rejected, \
              COALESCE(SUM(CASE WHEN votes IS NOT NULL THEN 1 ELSE 0 END), 0) AS with_votes \
              FROM decision_log WHERE created_at_ms >= $1 AND created_at_ms < $2",
    },
    Query {
        id: "hallucinated_labelled",
        sql: "SELECT COUNT(*) AS total, \
              COALESCE(SUM(CASE WHEN d.accepted = 1 AND d.escalated = 0 THEN 1 ELSE 0 END), 0) AS passed \
              FROM decision_log d WHERE d.created_at_ms >= $1 AND d.created_at_ms < $2 \
              AND EXISTS (SELECT 1 FROM labels l WHERE l.tenant = d.tenant AND l.pcs_id = d.pcs_id \
              AND l.label = 'hallucinated')",
    },
    Query {
        id: "labels",
        sql: "SELECT COUNT(*) AS total FROM labels WHERE created_at_ms >= $1 AND created_at_ms < $2",
    },
    Query {
        id: "labelled_risk",
        sql: "SELECT d.risk AS risk, MAX(CASE WHEN l.label = 'hallucinated' THEN 1 ELSE 0 END) AS bad \
              FROM decision_log d JOIN labels l ON l.tenant = d.tenant AND l.pcs_id = d.pcs_id \
              WHERE d.created_at_ms >= $1 AND d.created_at_ms < $2 AND d.risk IS NOT NULL \
              GROUP BY d.id, d.risk",
    },
    Query {
        id: "disagreements",
        sql: "SELECT COUNT(*) AS total FROM ensemble_disagreements \
              WHERE created_at_ms >= $1 AND created_at_ms < $2",
    },
    Query {
        id: "drift",
        sql: "SELECT (SELECT COUNT(*) FROM drift_checks WHERE created_at_ms >= $1 AND created_at_ms < $2) AS checks, \
              (SELECT COUNT(*) FROM drift_alerts WHERE created_at_ms >= $1 AND created_at_ms < $2) AS alerts, \
              (SELECT COUNT(*) FROM drift_alerts WHERE created_at_ms >= $1 AND created_at_ms < $2 \
               AND severity = 'critical' AND action IS NULL) AS critical_without_action, \
              (SELECT COUNT(*) FROM drift_reverts WHERE created_at_ms >= $1 AND created_at_ms < $2 \
               AND outcome = 'reverted') AS reverts",
    },
    Query {
        id: "changes",
        sql: "SELECT (SELECT COUNT(*) FROM alias_history WHERE created_at_ms >= $1 AND created_at_ms < $2) AS alias_moves, \
              (SELECT COUNT(*) FROM canary_events WHERE at_ms >= $1 AND at_ms < $2 AND kind = 'started') AS canaries_started, \
              (SELECT COUNT(*) FROM canary_events WHERE at_ms >= $1 AND at_ms < $2 AND kind = 'promoted') AS canaries_promoted, \
              (SELECT COUNT(*) FROM canary_events WHERE at_ms >= $1 AND at_ms < $2 AND kind = 'rolled_back') AS canaries_rolled_back, \
              (SELECT COUNT(*) FROM policy_simulations WHERE created_at_ms >= $1 AND created_at_ms < $2) AS simulations",
    },
    Query {
        id: "models",
        sql: "SELECT COUNT(*) AS registered, \
              COALESCE(SUM(CASE WHEN signature IS NOT NULL AND signature <> '' THEN 1 ELSE 0 END), 0) AS signed \
              FROM models WHERE created_at_ms >= $1 AND created_at_ms < $2",
    },
    Query {
        id: "cost",
        sql: "SELECT (SELECT COUNT(*) FROM cost_reconciliations WHERE created_at_ms >= $1 AND created_at_ms < $2) AS reconciliations, \
              (SELECT COUNT(*) FROM cost_reconciliations WHERE created_at_ms >= $1 AND created_at_ms < $2 \
               AND status = 'alert') AS reconciliation_alerts, \
              (SELECT COUNT(*) FROM cost_import_jobs WHERE created_at_ms >= $1 AND created_at_ms < $2 \
               AND status = 'succeeded') AS imports_succeeded, \
              (SELECT COUNT(*) FROM cost_import_jobs WHERE created_at_ms >= $1 AND created_at_ms < $2 \
               AND status = 'failed') AS imports_failed",
    },
    Query {
        id: "audit_range",
        sql: "SELECT COUNT(*) AS entries, COALESCE(MIN(seq), 0) AS seq_from, COALESCE(MAX(seq), 0) AS seq_to \
              FROM audit_entries WHERE ts_ms >= $1 AND ts_ms < $2",
    },
    Query {
        id: "audit_kind_counts",
        sql: "SELECT kind, COUNT(*) AS n FROM audit_entries WHERE ts_ms >= $1 AND ts_ms < $2 GROUP BY kind",
    },
];

fn sql(id: &str) -> &'static str {
    QUERIES.iter().find(|q| q.id == id).map_or("", |q| q.sql)
}

/// Where a figure comes from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[schema(as = ComplianceSource)]
pub struct Source {
    /// A query id of the report's `queries`.
    pub query: String,
    /// The column of its row (or the computation over its rows).
    pub column: String,
    /// For figures counted in the audit log: the range and its checkpoint.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub audit: Option<AuditRef>,
}

/// An audit-log seq range and the signed checkpoint that covers it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[schema(as = ComplianceAuditRef)]
pub struct AuditRef {
    pub seq_from: i64,
    pub seq_to: i64,
    /// The chain from seq 1 through the covering checkpoint re-verified when the report was
    /// made (hashes, links and signatures).
    pub verified: bool,
    /// The first checkpoint ending at or after `seq_to`; `None` while the range is unsealed.
    pub checkpoint: Option<Checkpoint>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[schema(as = ComplianceEvidence)]
pub struct Evidence {
    pub name: String,
    pub description: String,
    /// A number, or null when it is undefined over the period (e.g. a rate of nothing).
    #[schema(value_type = Option<f64>)]
    pub value: Value,
    pub source: Source,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
#[schema(as = ComplianceStatus)]
pub enum Status {
    Pass,
    Fail,
    /// Nothing in the period to judge the control by.
    NoEvidence,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[schema(as = ComplianceControl)]
pub struct Control {
    pub id: String,
    pub title: String,
    /// What the control claims about the product.
    pub claim: String,
    /// How the status follows from the evidence.
    pub rule: String,
    pub status: Status,
    pub evidence: Vec<Evidence>,
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
#[schema(as = ComplianceReport)]
pub struct Report {
    pub framework: Framework,
    pub title: String,
    /// RFC 3339, inclusive.
    pub from: String,
    /// RFC 3339, exclusive.
    pub to: String,
    pub generated_at: String,
    /// `kakeya-control-plane <version>`.
    pub generator: String,
    pub controls: Vec<Control>,
    /// The audit log over the period: entries per kind.
    pub audit: Vec<Evidence>,
    /// Every query the figures name.
    pub queries: Vec<Query>,
}

type Row1 = BTreeMap<String, i64>;

async fn one_row(db: &Db, id: &str, from: i64, to: i64) -> Result<Row1, sqlx::Error> {
    let r = sqlx::query(sql(id))
        .bind(from)
        .bind(to)
        .persistent(false)
        .fetch_one(&db.pool)
        .await?;
    let mut out = Row1::new();
    for (i, c) in sqlx::Row::columns(&r).iter().enumerate() {
        out.insert(sqlx::Column::name(c).to_string(), r.try_get::<i64, _>(i)?);
    }
    Ok(out)
}

struct Figures {
    rows: BTreeMap<&'static str, Row1>,
    auroc: Option<f64>,
    auroc_n: i64,
    kinds: BTreeMap<String, i64>,
    audit: AuditRef,
}

impl Figures {
    fn get(&self, q: &str, col: &str) -> i64 {
        self.rows
            .get(q)
            .and_then(|r| r.get(col))
            .copied()
            .unwrap_or(0)
    }

    fn ev(&self, q: &str, col: &str, description: &str) -> Evidence {
        Evidence {
            name: format!("{q}.{col}"),
            description: description.into(),
            value: json!(self.get(q, col)),
            source: Source {
                query: q.into(),
                column: col.into(),
                audit: None,
            },
        }
    }

    fn audited(&self, kind: &str, description: &str) -> Evidence {
        Evidence {
            name: format!("audit.{kind}"),
            description: description.into(),
            value: json!(self.kinds.get(kind).copied().unwrap_or(0)),
            source: Source {
                query: "audit_kind_counts".into(),
                column: format!("n where kind = '{kind}'"),
                audit: Some(self.audit.clone()),
            },
        }
    }
}

fn ratio_of(f: &Figures, q: &str, num: &str, den: &str) -> Option<f64> {
    let d = f.get(q, den);
    (d > 0).then(|| f.get(q, num) as f64 / d as f64)
}

/// The containment SLO (share of hallucinated decisions not passed through).
pub const CONTAINMENT_TARGET: f64 = 0.98;
/// The online AUROC target of the served model.
pub const AUROC_TARGET: f64 = 0.82;
/// The ensemble agreement target.
pub const AGREEMENT_TARGET: f64 = 0.85;

fn control(
    id: &str,
    title: &str,
    claim: &str,
    rule: &str,
    status: Status,
    evidence: Vec<Evidence>,
) -> Control {
    Control {
        id: id.into(),
        title: title.into(),
        claim: claim.into(),
        rule: rule.into(),
        status,
        evidence,
    }
}

fn judge(has_data: bool, pass: bool) -> Status {
    match (has_data, pass) {
        (false, _) => Status::NoEvidence,
        (true, true) => Status::Pass,
        (true, false) => Status::Fail,
    }
}

fn monitoring(f: &Figures, id: &str) -> Control {
    let checks = f.get("drift", "checks");
    control(
        id,
        "Model monitoring and incident response",
        "The served risk model is checked for drift on a cadence, and every critical drift alert is acted on (auto-revert or a recorded action).",
        "no_evidence without a drift check in the period; pass iff no critical alert is without an action",
        judge(checks > 0, f.get("drift", "critical_without_action") == 0),
        vec![
            f.ev("drift", "checks", "drift checks run"),
            f.ev("drift", "alerts", "drift alerts raised"),
            f.ev("drift", "critical_without_action", "critical alerts with no action recorded"),
            f.ev("drift", "reverts", "champions reverted by the drift monitor"),
        ],
    )
}

fn change_management(f: &Figures, id: &str) -> Control {
    let moves = f.get("changes", "alias_moves");
    let audited = f.kinds.get("alias_moved").copied().unwrap_or(0);
    control(
        id,
        "Change management of models and policies",
        "Every change of the served model goes through the registry's aliases (canaries with gates, simulations before policy changes) and is recorded in the audit log.",
        "no_evidence without an alias move in the period; pass iff the audit log holds one alias_moved entry per alias move and the covering chain verifies",
        judge(moves > 0, audited == moves && f.audit.verified),
        vec![
            f.ev("changes", "alias_moves", "model alias moves (alias_history)"),
            f.audited("alias_moved", "alias moves recorded in the audit log"),
            f.ev("changes", "canaries_started", "canary deployments started"),
            f.ev("changes", "canaries_promoted", "canaries promoted"),
            f.ev("changes", "canaries_rolled_back", "canaries rolled back"),
            f.ev("changes", "simulations", "policy simulations run"),
            f.audited("policy_applied", "ensemble policies applied, from the audit log"),
        ],
    )
}

fn cost_integrity(f: &Figures, id: &str, title: &str) -> Control {
    let n = f.get("cost", "reconciliations");
    control(
        id,
        title,
        "Internal cost attribution is reconciled against the provider's billing export, and drift beyond the target raises an alert.",
        "no_evidence without a reconciliation in the period; pass iff none of them is in alert",
        judge(n > 0, f.get("cost", "reconciliation_alerts") == 0),
        vec![
            f.ev("cost", "reconciliations", "reconciliation reports"),
            f.ev("cost", "reconciliation_alerts", "reconciliations outside the target"),
            f.ev("cost", "imports_succeeded", "billing imports that succeeded"),
            f.ev("cost", "imports_failed", "billing imports that failed"),
            f.audited("reconciliation", "reconciliations recorded in the audit log"),
            f.audited("budget_action", "budget action changes recorded in the audit log"),
        ],
    )
}

fn containment(f: &Figures, id: &str) -> Control {
    let rate = ratio_of(f, "hallucinated_labelled", "passed", "total").map(|p| 1.0 - p);
    let mut ev = vec![
        f.ev("decisions", "total", "decisions logged"),
        f.ev("decisions", "accepted", "accepted"),
        f.ev("decisions", "escalated", "escalated to review"),
        f.ev("decisions", "rejected", "rejected"),
        f.ev("labels", "total", "labels recorded"),
        f.ev(
            "hallucinated_labelled",
            "total",
            "decisions labelled hallucinated",
        ),
        f.ev(
            "hallucinated_labelled",
            "passed",
            "of which accepted without escalation",
        ),
        f.audited(
            "decision_batch",
            "ingest batches recorded in the audit log (each with the Merkle root of its rows)",
        ),
    ];
    ev.push(Evidence {
        name: "containment_rate".into(),
        description: format!("1 − passed / labelled hallucinated (target ≥ {CONTAINMENT_TARGET})"),
        value: rate.map_or(Value::Null, |r| json!(r)),
        source: Source {
            query: "hallucinated_labelled".into(),
            column: "1 - passed / total".into(),
            audit: None,
        },
    });
    control(
        id,
        "Processing integrity: hallucinations are contained",
        "Answers labelled hallucinated were escalated or rejected by the gate, not passed through.",
        "no_evidence without a decision labelled hallucinated in the period; pass iff the containment rate is at least 0.98",
        judge(rate.is_some(), rate.is_some_and(|r| r >= CONTAINMENT_TARGET)),
        ev,
    )
}

fn model_quality(f: &Figures, id: &str) -> Control {
    control(
        id,
        "Risk model quality, online",
        "The served hallucination-risk scores rank labelled hallucinations above faithful answers (online AUROC from the period's labels).",
        "no_evidence without both classes among the labelled decisions; pass iff AUROC ≥ 0.82",
        judge(f.auroc.is_some(), f.auroc.is_some_and(|a| a >= AUROC_TARGET)),
        vec![
            Evidence {
                name: "labelled_risk.rows".into(),
                description: "labelled decisions with a served risk".into(),
                value: json!(f.auroc_n),
                source: Source {
                    query: "labelled_risk".into(),
                    column: "count of rows".into(),
                    audit: None,
                },
            },
            Evidence {
                name: "online_auroc".into(),
                description: "AUROC of risk against bad (Mann–Whitney, ties ½)".into(),
                value: f.auroc.map_or(Value::Null, |a| json!(a)),
                source: Source {
                    query: "labelled_risk".into(),
                    column: "ml::metrics::auroc(risk, bad)".into(),
                    audit: None,
                },
            },
        ],
    )
}

fn ensemble(f: &Figures, id: &str) -> Control {
    let total = f.get("decisions", "with_votes");
    let agreement =
        (total > 0).then(|| 1.0 - f.get("disagreements", "total") as f64 / total as f64);
    control(
        id,
        "Risk mitigation: ensemble checks agree",
        "Decisions scored by the ensemble mostly agree; each disagreement is recorded (decision log and audit log).",
        "no_evidence without a decision with votes; pass iff the agreement rate is at least 0.85",
        judge(agreement.is_some(), agreement.is_some_and(|a| a >= AGREEMENT_TARGET)),
        vec![
            f.ev("decisions", "with_votes", "decisions with ensemble votes"),
            f.ev("disagreements", "total", "decisions whose votes disagreed"),
            Evidence {
                name: "agreement_rate".into(),
                description: format!("1 − disagreements / decisions with votes (target ≥ {AGREEMENT_TARGET})"),
                value: agreement.map_or(Value::Null, |a| json!(a)),
                source: Source {
                    query: "disagreements".into(),
                    column: "1 - disagreements.total / decisions.with_votes".into(),
                    audit: None,
                },
            },
            f.audited("ensemble_disagreements", "disagreement batches recorded in the audit log"),
        ],
    )
}

fn secure_development(f: &Figures, id: &str) -> Control {
    let n = f.get("models", "registered");
    control(
        id,
        "Secure development: signed artifacts",
        "Every model registered is signed with the control plane's Ed25519 key and reaches traffic only through aliases.",
        "no_evidence without a model registered in the period; pass iff every one is signed",
        judge(n > 0, f.get("models", "signed") == n),
        vec![
            f.ev("models", "registered", "models registered"),
            f.ev("models", "signed", "of which signed"),
            f.ev("changes", "alias_moves", "model alias moves"),
            f.audited("alias_moved", "alias moves recorded in the audit log"),
        ],
    )
}

/// The report for `framework` over `[from_ms, to_ms)`, checkpoints verified with `trusted_key`.
pub async fn report(
    db: &Db,
    framework: Framework,
    from_ms: i64,
    to_ms: i64,
    trusted_key: &str,
    now_ms: i64,
) -> Result<Report, sqlx::Error> {
    let mut rows = BTreeMap::new();
    for id in [
        "decisions",
        "hallucinated_labelled",
        "labels",
        "disagreements",
        "drift",
        "changes",
        "models",
        "cost",
        "audit_range",
    ] {
        rows.insert(id, one_row(db, id, from_ms, to_ms).await?);
    }
    let labelled = sqlx::query(sql("labelled_risk"))
        .bind(from_ms)
        .bind(to_ms)
        .persistent(false)
        .fetch_all(&db.pool)
        .await?;
    let (mut scores, mut labels) = (Vec::new(), Vec::new());
    for r in &labelled {
        scores.push(r.try_get::<f64, _>("risk")?);
        labels.push(u8::from(r.try_get::<i64, _>("bad")? == 1));
    }
    let kinds = sqlx::query(sql("audit_kind_counts"))
        .bind(from_ms)
        .bind(to_ms)
        .persistent(false)
        .fetch_all(&db.pool)
        .await?
        .iter()
        .map(|r| Ok((r.try_get::<String, _>("kind")?, r.try_get::<i64, _>("n")?)))
        .collect::<Result<BTreeMap<_, _>, sqlx::Error>>()?;
    let range = &rows["audit_range"];
    let (seq_from, seq_to) = (range["seq_from"], range["seq_to"]);
    let checkpoint = store::covering_checkpoint(db, seq_to.max(1)).await?;
    // Re-verify from seq 1 through the covering checkpoint (or the range's end when unsealed).
    let verified = match (&checkpoint, seq_to) {
        (_, 0) => true,
        (Some(c), _) => {
            let v = super::verify::verify(db, None, Some(c.seq_to), trusted_key).await?;
            v.ok && v.last_verified_checkpoint.as_ref() == Some(c)
        }
        (None, _) => false,
    };
    let f = Figures {
        auroc: crate::ml::metrics::auroc(&scores, &labels),
        auroc_n: scores.len() as i64,
        rows,
        kinds,
        audit: AuditRef {
            seq_from,
            seq_to,
            verified,
            checkpoint,
        },
    };
    let controls = match framework {
        Framework::Soc2 => vec![
            monitoring(&f, "CC7.4"),
            change_management(&f, "CC8.2"),
            cost_integrity(&f, "C1.3", "Cost integrity: attribution reconciled"),
            containment(&f, "PI1.4"),
            ensemble(&f, "CC9.1"),
        ],
        Framework::Iso27001 => vec![
            model_quality(&f, "A.12.6.1"),
            secure_development(&f, "A.14.2.1"),
            cost_integrity(
                &f,
                "A.15.3.1",
                "Supplier service delivery: billing reconciled",
            ),
        ],
    };
    let mut audit = vec![f.ev("audit_range", "entries", "audit-log entries in the period")];
    audit[0].source.audit = Some(f.audit.clone());
    for k in super::Event::KINDS {
        audit.push(f.audited(k, &format!("{k} entries")));
    }
    Ok(Report {
        framework,
        title: framework.title().into(),
        from: crate::learn::rfc3339(from_ms),
        to: crate::learn::rfc3339(to_ms),
        generated_at: crate::learn::rfc3339(now_ms),
        generator: format!("kakeya-control-plane {}", env!("CARGO_PKG_VERSION")),
        controls,
        audit,
        queries: QUERIES.to_vec(),
    })
}

/// HTML-escapes text for element content and quoted attributes (five characters; a crate for
/// this would be one more dependency for one function).
fn esc(s: &str) -> String {
    let mut o = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => o.push_str("&amp;"),
            '<' => o.push_str("&lt;"),
            '>' => o.push_str("&gt;"),
            '"' => o.push_str("&quot;"),
            '\'' => o.push_str("&#39;"),
            c => o.push(c),
        }
    }
    o
}

fn value_text(v: &Value) -> String {
    match v {
        Value::Null => "—".into(),
        Value::Number(n) => match n.as_i64() {
            Some(i) => i.to_string(),
            None => format!("{:.4}", n.as_f64().unwrap_or(f64::NAN)),
        },
        other => other.to_string(),
    }
}

fn source_text(s: &Source) -> String {
    let mut t = format!("{} · {}", s.query, s.column);
    if let Some(a) = &s.audit {
        t.push_str(&format!(
            " · audit seq {}..={} · {}",
            a.seq_from,
            a.seq_to,
            match &a.checkpoint {
                Some(c) if a.verified => format!(
                    "checkpoint {}..={} verified (key {})",
                    c.seq_from, c.seq_to, c.key_id
                ),
                Some(c) => format!("checkpoint {}..={} NOT verified", c.seq_from, c.seq_to),
                None => "not sealed yet".into(),
            }
        ));
    }
    t
}

fn evidence_rows(h: &mut String, ev: &[Evidence]) {
    h.push_str("<table><tr><th>figure</th><th>value</th><th>source</th></tr>\n");
    for e in ev {
        h.push_str(&format!(
            "<tr><td>{}</td><td class=\"num\">{}</td><td><code>{}</code></td></tr>\n",
            esc(&e.description),
            esc(&value_text(&e.value)),
            esc(&source_text(&e.source))
        ));
    }
    h.push_str("</table>\n");
}

/// The report as a self-contained HTML page (inline CSS, no script, every text escaped).
pub fn html(r: &Report) -> String {
    let mut h = String::new();
    h.push_str("<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">");
    h.push_str(&format!(
        "<title>{} compliance report</title>",
        esc(&r.title)
    ));
    h.push_str("<style>body{font-family:sans-serif;margin:2em;max-width:70em}table{border-collapse:collapse;width:100%;margin:.5em 0 1.5em}td,th{border:1px solid #ccc;padding:.3em .5em;text-align:left;vertical-align:top}td.num{text-align:right;font-variant-numeric:tabular-nums}.pass{color:#176f2c}.fail{color:#b00020}.no_evidence{color:#8a6d00}code{font-size:.85em}</style></head><body>\n");
    h.push_str(&format!(
        "<h1>{}</h1>\n<p>Period {} to {} (exclusive) · generated {} by {}</p>\n",
        esc(&r.title),
        esc(&r.from),
        esc(&r.to),
        esc(&r.generated_at),
        esc(&r.generator)
    ));
    h.push_str("<table><tr><th>control</th><th>status</th></tr>\n");
    for c in &r.controls {
        let s = serde_json::to_value(c.status).unwrap_or_default();
        let s = s.as_str().unwrap_or_default();
        h.push_str(&format!(
            "<tr><td>{} {}</td><td class=\"{s}\">{s}</td></tr>\n",
            esc(&c.id),
            esc(&c.title)
        ));
    }
    h.push_str("</table>\n");
    for c in &r.controls {
        let s = serde_json::to_value(c.status).unwrap_or_default();
        let s = s.as_str().unwrap_or_default();
        h.push_str(&format!(
            "<h2>{} {} <span class=\"{s}\">{s}</span></h2>\n<p>{}</p>\n<p><em>Rule:</em> {}</p>\n",
            esc(&c.id),
            esc(&c.title),
            esc(&c.claim),
            esc(&c.rule)
        ));
        evidence_rows(&mut h, &c.evidence);
    }
    h.push_str("<h2>Audit log</h2>\n");
    evidence_rows(&mut h, &r.audit);
    h.push_str("<h2>Queries</h2>\n<table><tr><th>id</th><th>SQL ($1 = period start, $2 = end, ms)</th></tr>\n");
    for q in &r.queries {
        h.push_str(&format!(
            "<tr><td>{}</td><td><code>{}</code></td></tr>\n",
            esc(q.id),
            esc(q.sql)
        ));
    }
    h.push_str("</table>\n</body></html>\n");
    h
}
