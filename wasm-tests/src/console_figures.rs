//! What the operator console must show for the buyer KPIs, computed independently of its
//! JavaScript: the figure texts of `GET /v1/kpis` and of the `kakeya_kpi_*` gauges of
//! `/metrics`, keyed like the page's `data-kpi` attributes
//! (`control-plane/src/console/assets/kpi.js`), formatted as the page formats them
//! (`Number.prototype.toFixed`, which rounds exact ties up, unlike Rust's `{:.N}`).
//! `e2e_console` compares the page with both.

use serde_json::Value;
use std::collections::BTreeMap;

/// `x.toFixed(digits)` for |x| < 1e21.
pub fn to_fixed(x: f64, digits: usize) -> String {
    // The exact decimal expansion, far enough that a tie at `digits` is exact and a near-tie
    // is decided (a double is never within 1e-40 of a tie it is not on, at these magnitudes).
    let exact = format!("{:.*}", digits + 40, x.abs());
    let (int, frac) = exact.split_once('.').unwrap_or((&exact, ""));
    let mut d: Vec<u8> = int.bytes().chain(frac.bytes().take(digits)).collect();
    if frac.as_bytes().get(digits).is_some_and(|&b| b >= b'5') {
        let mut i = d.len();
        loop {
            if i == 0 {
                d.insert(0, b'1');
                break;
            }
            i -= 1;
            if d[i] == b'9' {
                d[i] = b'0';
            } else {
                d[i] += 1;
                break;
            }
        }
    }
    let mut s = String::from_utf8(d).unwrap_or_default();
    if digits > 0 {
        s.insert(s.len() - digits, '.');
    }
    if x < 0.0 {
        s.insert(0, '-');
    }
    s
}

/// `fmt.pct`: `12.34 %`; `–` for none.
pub fn pct(v: Option<f64>) -> String {
    v.map_or_else(|| "–".into(), |v| format!("{} %", to_fixed(100.0 * v, 2)))
}

/// The containment delta: signed percent.
pub fn signed_pct(v: Option<f64>) -> String {
    match v {
        Some(v) if v >= 0.0 => format!("+{}", pct(Some(v))),
        other => pct(other),
    }
}

/// `fmt.money(v, currency)`.
pub fn money(v: Option<f64>, currency: &str) -> String {
    v.map_or_else(
        || "–".into(),
        |v| format!("{} {currency}", to_fixed(v, 4)).trim().to_string(),
    )
}

/// `fmt.num(v, 3)`.
pub fn num3(v: Option<f64>) -> String {
    v.map_or_else(|| "–".into(), |v| to_fixed(v, 3))
}

/// `Number(v).toLocaleString('en')` for whole numbers.
pub fn int(v: f64) -> String {
    let digits = format!("{}", v.abs().round() as u64);
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    if v < 0.0 {
        out.insert(0, '-');
    }
    out
}

const SERVICES: [&str; 4] = ["compute", "storage", "network", "model_calls"];

fn entries(v: &Value) -> Vec<(String, Option<f64>)> {
    v.as_object()
        .map(|m| m.iter().map(|(k, v)| (k.clone(), v.as_f64())).collect())
        .unwrap_or_default()
}

/// The currency of a `GET /v1/kpis` answer's money figures (none without a cost roll-up).
pub fn currency(k: &Value) -> String {
    k["cost"]["currency"].as_str().unwrap_or("").to_string()
}

/// The figure texts the page shows for one `GET /v1/kpis` answer (`–` for a null rate).
pub fn from_kpis(k: &Value) -> BTreeMap<String, String> {
    let cur = currency(k);
    let mut out = BTreeMap::new();
    let mut put = |key: String, text: String| {
        out.insert(key, text);
    };
    put(
        "containment_rate".into(),
        pct(k["containment_rate"].as_f64()),
    );
    let tenants = k["cost"]["tenants"].as_array().cloned().unwrap_or_default();
    for t in &tenants {
        put(
            format!(
                "cost_per_trusted_task.{}",
                t["tenant"].as_str().unwrap_or("")
            ),
            money(t["cost_per_trusted_task"].as_f64(), &cur),
        );
    }
    for (v, a) in entries(&k["hrs_auroc"]) {
        put(format!("hrs_auroc.{v}"), num3(a));
    }
    put(
        "ensemble_agreement_rate".into(),
        pct(k["ensemble"]["agreement_rate"].as_f64()),
    );
    put("escalation_rate".into(), pct(k["escalation_rate"].as_f64()));
    if !tenants.is_empty() {
        for s in SERVICES {
            let sum: f64 = tenants
                .iter()
                .map(|t| t["cost"][s].as_f64().unwrap_or(0.0))
                .sum();
            put(format!("cost_breakdown.{s}"), money(Some(sum), &cur));
        }
    }
    put("high_risk_rate".into(), pct(k["high_risk_rate"].as_f64()));
    let mut budgets: Vec<(String, f64)> = k["budgets"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|b| {
            Some((
                b["tenant"].as_str()?.to_string(),
                b["utilisation"].as_f64()?,
            ))
        })
        .collect();
    budgets.sort_by(|a, b| b.1.total_cmp(&a.1));
    for (t, u) in budgets.into_iter().take(10) {
        put(format!("budget_utilisation.{t}"), pct(Some(u)));
    }
    for kind in ["projected", "realised"] {
        put(
            format!("savings.{kind}"),
            money(k["savings"][format!("{kind}_monthly")].as_f64(), &cur),
        );
    }
    for (kind, n) in entries(&k["ensemble"]["disagreements"]) {
        put(format!("disagreements.{kind}"), int(n.unwrap_or(0.0)));
    }
    for (arm, d) in entries(&k["containment_delta_vs_control"]) {
        put(format!("containment_delta.{arm}"), signed_pct(d));
    }
    for (v, s) in entries(&k["model_versions"]) {
        put(format!("model_version_share.{v}"), pct(s));
    }
    put(
        "decisions".into(),
        int(k["decisions"].as_f64().unwrap_or(0.0)),
    );
    out
}

/// One sample of the text exposition: name, labels, value.
pub type Sample = (String, BTreeMap<String, String>, f64);

/// The samples of a Prometheus text exposition (comments skipped).
pub fn samples(text: &str) -> Vec<Sample> {
    let mut out = Vec::new();
    for line in text.lines() {
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (head, value) = match line.rsplit_once(' ') {
            Some(p) => p,
            None => continue,
        };
        let Ok(value) = value.parse::<f64>() else {
            continue;
        };
        let (name, labels) = match head.split_once('{') {
            None => (head.to_string(), BTreeMap::new()),
            Some((name, rest)) => (name.to_string(), labels(rest.trim_end_matches('}'))),
        };
        out.push((name, labels, value));
    }
    out
}

fn labels(s: &str) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let mut rest = s;
    while let Some((k, tail)) = rest.split_once("=\"") {
        let mut v = String::new();
        let mut chars = tail.char_indices();
        let mut end = tail.len();
        while let Some((i, c)) = chars.next() {
            match c {
                '\\' => {
                    if let Some((_, n)) = chars.next() {
                        v.push(if n == 'n' { '\n' } else { n });
                    }
                }
                '"' => {
                    end = i + 1;
                    break;
                }
                c => v.push(c),
            }
        }
        out.insert(k.trim_start_matches(',').to_string(), v);
        rest = &tail[end..];
    }
    out
}

/// The figure texts of the `kakeya_kpi_*` gauges (and `kakeya_cost_budget_utilisation`) of
/// `window`, money in `currency` (the `/v1/kpis` answer's: the gauges carry none). A figure
/// without a series is absent (the page shows `–`).
pub fn from_metrics(text: &str, window: &str, currency: &str) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let mut cost: BTreeMap<String, f64> = BTreeMap::new();
    for (name, l, v) in samples(text) {
        let label = |k: &str| l.get(k).cloned().unwrap_or_default();
        let windowless = matches!(
            name.as_str(),
            "kakeya_kpi_savings_monthly" | "kakeya_cost_budget_utilisation"
        );
        if !windowless && l.get("window").map(String::as_str) != Some(window) {
            continue;
        }
        let (raw, v) = (v, Some(v));
        let (key, text) = match name.as_str() {
            "kakeya_kpi_containment_rate" => ("containment_rate".into(), pct(v)),
            "kakeya_kpi_escalation_rate" => ("escalation_rate".into(), pct(v)),
            "kakeya_kpi_high_risk_rate" => ("high_risk_rate".into(), pct(v)),
            "kakeya_kpi_ensemble_agreement_rate" => ("ensemble_agreement_rate".into(), pct(v)),
            "kakeya_kpi_decisions" => ("decisions".into(), int(raw)),
            "kakeya_kpi_hrs_auroc" => (format!("hrs_auroc.{}", label("model_version")), num3(v)),
            "kakeya_kpi_cost_per_trusted_task" => (
                format!("cost_per_trusted_task.{}", label("tenant")),
                money(v, currency),
            ),
            "kakeya_kpi_containment_delta" => {
                (format!("containment_delta.{}", label("arm")), signed_pct(v))
            }
            "kakeya_kpi_model_version_share" => (
                format!("model_version_share.{}", label("model_version")),
                pct(v),
            ),
            "kakeya_kpi_ensemble_disagreements" => {
                (format!("disagreements.{}", label("kind")), int(raw))
            }
            "kakeya_kpi_savings_monthly" => {
                (format!("savings.{}", label("kind")), money(v, currency))
            }
            "kakeya_cost_budget_utilisation" => {
                (format!("budget_utilisation.{}", label("tenant")), pct(v))
            }
            "kakeya_kpi_cost" => {
                *cost.entry(label("service")).or_default() += raw;
                continue;
            }
            _ => continue,
        };
        out.insert(key, text);
    }
    for (s, sum) in cost {
        out.insert(format!("cost_breakdown.{s}"), money(Some(sum), currency));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn to_fixed_rounds_like_javascript() {
        // Exact ties go up (JS), where Rust's {:.N} goes to even.
        assert_eq!(to_fixed(0.8125, 3), "0.813");
        assert_eq!(format!("{:.3}", 0.8125), "0.812");
        assert_eq!(to_fixed(2.5, 0), "3");
        // 1.005 is 1.00499999999999989… in binary: down, as in JS.
        assert_eq!(to_fixed(1.005, 2), "1.00");
        assert_eq!(to_fixed(99.995, 2), "100.00");
        assert_eq!(to_fixed(9.9996, 3), "10.000");
        assert_eq!(to_fixed(-0.001, 2), "-0.00");
        assert_eq!(to_fixed(0.0, 4), "0.0000");
        assert_eq!(to_fixed(50.0, 2), "50.00");
        assert_eq!(pct(Some(0.5)), "50.00 %");
        assert_eq!(signed_pct(Some(0.0)), "+0.00 %");
        assert_eq!(signed_pct(Some(-0.25)), "-25.00 %");
        assert_eq!(money(Some(0.0), ""), "0.0000");
        assert_eq!(money(None, "USD"), "–");
        assert_eq!(int(1234567.0), "1,234,567");
        assert_eq!(int(12.0), "12");
    }

    #[test]
    fn the_gauges_and_the_json_give_the_same_texts() {
        let k: Value = serde_json::json!({
            "window": "24h", "decisions": 10, "escalation_rate": 0.5, "high_risk_rate": null,
            "containment_rate": 1.0, "containment_delta_vs_control": {"canary": -0.5},
            "hrs_auroc": {"all": 0.8125}, "ensemble": {"agreement_rate": null, "disagreements": {}},
            "model_versions": {"lr-1": 1.0},
            "cost": {"currency": "USD", "tenants": [
                {"tenant": "acme", "cost": {"compute": 1.0, "storage": 0.0, "network": 0.0, "model_calls": 0.5},
                 "cost_per_trusted_task": null}]},
            "savings": {"projected_monthly": 2.0, "realised_monthly": 0.0}, "budgets": []
        });
        let metrics = "# TYPE kakeya_kpi_decisions gauge\n\
            kakeya_kpi_decisions{window=\"24h\"} 10\n\
            kakeya_kpi_decisions{window=\"1h\"} 3\n\
            kakeya_kpi_escalation_rate{window=\"24h\"} 0.5\n\
            kakeya_kpi_containment_rate{window=\"24h\"} 1\n\
            kakeya_kpi_containment_delta{arm=\"canary\",window=\"24h\"} -0.5\n\
            kakeya_kpi_hrs_auroc{model_version=\"all\",window=\"24h\"} 0.8125\n\
            kakeya_kpi_model_version_share{model_version=\"lr-1\",window=\"24h\"} 1\n\
            kakeya_kpi_cost{service=\"compute\",tenant=\"acme\",window=\"24h\"} 1\n\
            kakeya_kpi_cost{service=\"storage\",tenant=\"acme\",window=\"24h\"} 0\n\
            kakeya_kpi_cost{service=\"network\",tenant=\"acme\",window=\"24h\"} 0\n\
            kakeya_kpi_cost{service=\"model_calls\",tenant=\"acme\",window=\"24h\"} 0.5\n\
            kakeya_kpi_savings_monthly{kind=\"projected\"} 2\n\
            kakeya_kpi_savings_monthly{kind=\"realised\"} 0\n";
        let json = from_kpis(&k);
        assert_eq!(json["hrs_auroc.all"], "0.813");
        assert_eq!(json["containment_delta.canary"], "-50.00 %");
        assert_eq!(json["cost_breakdown.model_calls"], "0.5000 USD");
        assert_eq!(json["high_risk_rate"], "–");
        let defined: BTreeMap<String, String> =
            json.into_iter().filter(|(_, v)| v != "–").collect();
        assert_eq!(from_metrics(metrics, "24h", "USD"), defined);
    }
}
