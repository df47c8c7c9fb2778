//! The operators' monitoring files (issue 11): `conf/prometheus/alerts.yml`,
//! `conf/alertmanager.yml` and `conf/grafana/cosygate.json`.
//!
//! - `promtool check rules` and `promtool test rules tests/monitoring/alerts_test.yml` (the
//!   alerts' unit tests), `amtool check-config`: a missing tool is a failure that says which
//!   Debian package has it (scripts/test.sh installs `prometheus` and
//!   `prometheus-alertmanager`), never a skip.
//! - The dashboard is importable (its datasource variable, panels, unique ids) and every query
//!   in it parses as PromQL (`promtool check rules` on a rules file made of them).
//! - Every metric named by an alert or a dashboard query is one the gateway really exports: the
//!   real gateway, with its admin listener, serves some traffic (hits, misses, refusals, a 429,
//!   two backends cutting the same request, a retry refused by a spent budget, a degraded
//!   answer, an unreachable Redis, a restart command that fails), and its `GET /metrics` must
//!   show each name (labelled series exist only once something counted them).

mod common;

use common::gateway::{free_port, pool_yaml, Gateway};
use common::sim::Sim;
use serde_json::{json, Value};
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

const ALERTS: &str = "conf/prometheus/alerts.yml";
const ALERT_TESTS: &str = "tests/monitoring/alerts_test.yml";
const ALERTMANAGER: &str = "conf/alertmanager.yml";
const DASHBOARD: &str = "conf/grafana/cosygate.json";

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn read(path: &str) -> String {
    std::fs::read_to_string(repo().join(path)).unwrap_or_else(|e| panic!("read {path}: {e}"))
}

/// Runs `tool args...` in the repository's root and panics, with its output, unless it
/// succeeds. A tool that is not installed is a failure naming its Debian package.
#[track_caller]
fn run_tool(tool: &str, package: &str, args: &[&str]) -> String {
    let out = match Command::new(tool).args(args).current_dir(repo()).output() {
        Ok(out) => out,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => panic!(
            "`{tool}` is not installed; it comes with the Debian package `{package}` \
             (scripts/test.sh installs it: apt-get install {package})"
        ),
        Err(e) => panic!("cannot run {tool}: {e}"),
    };
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success(),
        "`{tool} {}` failed ({}):\n{text}",
        args.join(" "),
        out.status
    );
    text
}

// ---------------------------------------------------------------------------------------------
// The files, checked by the Prometheus tools

#[test]
fn alert_rules_pass_promtool_check() {
    let out = run_tool("promtool", "prometheus", &["check", "rules", ALERTS]);
    assert!(out.contains("SUCCESS"), "{out}");
}

#[test]
fn alert_rules_unit_tests_pass() {
    let out = run_tool("promtool", "prometheus", &["test", "rules", ALERT_TESTS]);
    assert!(out.contains("SUCCESS"), "{out}");
}

/// Every alert of alerts.yml has, in alerts_test.yml, a case where it fires and one where it
/// does not.
#[test]
fn every_alert_is_unit_tested_firing_and_not_firing() {
    let tests: serde_yaml::Value = serde_yaml::from_str(&read(ALERT_TESTS)).expect("alerts_test.yml is YAML");
    let mut cases: BTreeMap<String, (bool, bool)> = BTreeMap::new();
    for test in tests["tests"].as_sequence().expect("tests") {
        for case in test["alert_rule_test"].as_sequence().into_iter().flatten() {
            let name = case["alertname"].as_str().expect("alertname");
            let fires = case["exp_alerts"].as_sequence().is_some_and(|a| !a.is_empty());
            let entry = cases.entry(name.to_string()).or_default();
            if fires {
                entry.0 = true;
            } else {
                entry.1 = true;
            }
        }
    }
    let rules: serde_yaml::Value = serde_yaml::from_str(&read(ALERTS)).expect("alerts.yml is YAML");
    for group in rules["groups"].as_sequence().expect("groups") {
        for rule in group["rules"].as_sequence().expect("rules") {
            let name = rule["alert"].as_str().expect("an alert");
            assert_eq!(
                cases.get(name),
                Some(&(true, true)),
                "{name}: {ALERT_TESTS} needs a case where it fires and one where it does not"
            );
        }
    }
}

#[test]
fn alertmanager_config_passes_amtool() {
    let out = run_tool(
        "amtool",
        "prometheus-alertmanager",
        &["check-config", ALERTMANAGER],
    );
    assert!(out.contains("SUCCESS"), "{out}");
}

/// Every alert has a severity the Alertmanager example routes, a summary and a description.
#[test]
fn every_alert_has_a_routed_severity_a_summary_and_a_description() {
    let rules: serde_yaml::Value = serde_yaml::from_str(&read(ALERTS)).expect("alerts.yml is YAML");
    let alertmanager = read(ALERTMANAGER);
    let mut names = Vec::new();
    for group in rules["groups"].as_sequence().expect("groups") {
        for rule in group["rules"].as_sequence().expect("rules") {
            let name = rule["alert"].as_str().expect("every rule is an alert");
            let severity = rule["labels"]["severity"]
                .as_str()
                .unwrap_or_else(|| panic!("{name}: labels.severity"));
            assert!(
                alertmanager.contains(&format!("severity=\"{severity}\"")),
                "{name}: severity {severity} has no route in {ALERTMANAGER}"
            );
            for key in ["summary", "description"] {
                let text = rule["annotations"][key].as_str().unwrap_or_default();
                assert!(
                    text.len() > 20,
                    "{name}: annotations.{key} says too little: {text:?}"
                );
            }
            names.push(name.to_string());
        }
    }
    assert!(names.len() >= 10, "the alerts: {names:?}");
}

// ---------------------------------------------------------------------------------------------
// The dashboard

fn dashboard() -> Value {
    serde_json::from_str(&read(DASHBOARD)).expect("the dashboard is JSON")
}

/// Every panel that is not a row, nested ones included.
fn panels(dash: &Value) -> Vec<&Value> {
    let mut out = Vec::new();
    for p in dash["panels"].as_array().expect("panels") {
        if p["type"] == "row" {
            out.extend(p["panels"].as_array().into_iter().flatten());
        } else {
            out.push(p);
        }
    }
    out
}

/// The PromQL of every target of every panel, with the panel's title.
fn dashboard_queries(dash: &Value) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for p in panels(dash) {
        let title = p["title"].as_str().expect("a panel title");
        for t in p["targets"].as_array().expect("targets") {
            let expr = t["expr"]
                .as_str()
                .unwrap_or_else(|| panic!("{title}: a target without expr"));
            out.push((title.to_string(), expr.to_string()));
        }
    }
    out
}

/// The metric a `label_values(METRIC, label)` variable query reads.
fn label_values_metric(query: &str) -> Option<String> {
    let inner = query.trim().strip_prefix("label_values(")?;
    let metric = inner.split([',', '{', ')']).next()?.trim();
    Some(metric.to_string())
}

#[test]
fn dashboard_is_importable() {
    let dash = dashboard();
    let schema = dash["schemaVersion"].as_u64().expect("schemaVersion");
    assert!(
        (36..=41).contains(&schema),
        "schemaVersion {schema}: Grafana 10's is 38"
    );
    assert!(dash["title"].as_str().is_some_and(|t| !t.is_empty()), "a title");
    assert!(dash["uid"].as_str().is_some_and(|u| !u.is_empty()), "a uid");
    assert!(dash["id"].is_null(), "no id: Grafana gives one on import");

    let vars = dash["templating"]["list"].as_array().expect("template variables");
    let var = |name: &str| {
        vars.iter()
            .find(|v| v["name"] == name)
            .unwrap_or_else(|| panic!("no template variable {name}"))
    };
    assert_eq!(var("datasource")["type"], "datasource");
    assert_eq!(var("datasource")["query"], "prometheus");
    let pool = var("pool");
    assert_eq!(pool["datasource"]["uid"], "${datasource}");
    let query = pool["query"]["query"].as_str().or(pool["query"].as_str());
    assert!(
        query.and_then(label_values_metric).is_some(),
        "the pool variable reads label_values(...): {query:?}"
    );

    let mut ids = BTreeSet::new();
    for p in dash["panels"].as_array().expect("panels") {
        let id = p["id"].as_u64().expect("a panel id");
        assert!(ids.insert(id), "panel id {id} twice");
        let grid = &p["gridPos"];
        let (x, w) = (grid["x"].as_u64().expect("x"), grid["w"].as_u64().expect("w"));
        assert!(x + w <= 24 && grid["h"].as_u64().is_some_and(|h| h > 0), "{grid}");
    }
    let all = panels(&dash);
    assert!(all.len() >= 15, "{} panels", all.len());
    for p in all {
        let title = p["title"].as_str().expect("title");
        assert_eq!(
            p["datasource"]["uid"], "${datasource}",
            "{title}: the datasource variable"
        );
        let targets = p["targets"].as_array().expect("targets");
        assert!(!targets.is_empty(), "{title}: no query");
        let refs: BTreeSet<_> = targets.iter().map(|t| t["refId"].to_string()).collect();
        assert_eq!(refs.len(), targets.len(), "{title}: refIds are unique");
    }
    // The panels the operators asked for.
    let text = read(DASHBOARD);
    for needle in [
        "cosygate_requests_total",
        "histogram_quantile(0.99, sum by (route, le) (rate(cosygate_request_duration_milliseconds_bucket",
        "cosygate_cache_hit_ratio",
        "cosygate_audio_seconds_total{source=\\\"cache\\\"",
        "cosygate_queue_capacity",
        "cosygate_queue_wait_milliseconds_bucket",
        "cosygate_backend_slots",
        "cosygate_circuit_state",
        "cosygate_backend_restarts_total",
        "cosygate_rejected_total",
        "cosygate_redis_errors_total",
        "cosygate_bodies_in_flight",
    ] {
        assert!(text.contains(needle), "the dashboard has no query with {needle}");
    }
}

/// Each query of the dashboard, with Grafana's variables replaced, must parse as PromQL:
/// promtool checks them as recording rules.
#[test]
fn dashboard_queries_are_valid_promql() {
    let queries = dashboard_queries(&dashboard());
    let mut rules = String::from("groups:\n  - name: dashboard\n    rules:\n");
    for (i, (_, expr)) in queries.iter().enumerate() {
        let expr = expr
            .replace("$__rate_interval", "5m")
            .replace("$__range", "1h")
            .replace("$pool", ".*");
        assert!(!expr.contains('$'), "an unknown Grafana variable in {expr}");
        rules.push_str(&format!(
            "      - record: dashboard:query_{i}\n        expr: {}\n",
            serde_json::to_string(&expr).expect("a JSON string is a YAML string")
        ));
    }
    let dir = tempfile::tempdir().expect("temp dir");
    let file = dir.path().join("dashboard_rules.yml");
    std::fs::write(&file, rules).expect("write the rules");
    let out = run_tool(
        "promtool",
        "prometheus",
        &["check", "rules", file.to_str().expect("a UTF-8 temp path")],
    );
    assert!(
        out.contains(&format!("SUCCESS: {} rules found", queries.len())),
        "{out}"
    );
}

// ---------------------------------------------------------------------------------------------
// Metric names in PromQL

/// PromQL's functions, aggregations and keywords: names that are never metrics.
const PROMQL_WORDS: &[&str] = &[
    "sum",
    "min",
    "max",
    "avg",
    "group",
    "stddev",
    "stdvar",
    "count",
    "count_values",
    "bottomk",
    "topk",
    "quantile",
    "limitk",
    "limit_ratio",
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
    "and",
    "or",
    "unless",
    "bool",
    "offset",
    "atan2",
    "inf",
    "nan",
    "start",
    "end",
];

/// Words after which a parenthesized list holds label names.
const LABEL_LIST_WORDS: &[&str] = &["by", "without", "on", "ignoring", "group_left", "group_right"];

/// The metric names a PromQL expression (or a Grafana query) reads: identifiers that are not
/// functions (followed by `(`), keywords, label names (inside `{}` or after `by` and its
/// kin), durations or Grafana variables.
fn metric_names(expr: &str) -> BTreeSet<String> {
    let b = expr.as_bytes();
    let mut names = BTreeSet::new();
    let mut i = 0;
    // Index just past the bracket matching b[open].
    let skip_group = |open: usize, close: u8| -> usize {
        let mut j = open + 1;
        let mut quote = None;
        while j < b.len() {
            match (quote, b[j]) {
                (Some(_), b'\\') => j += 1,
                (Some(q), c) if c == q => quote = None,
                (None, b'"' | b'\'' | b'`') => quote = Some(b[j]),
                (None, c) if c == close => return j + 1,
                _ => {}
            }
            j += 1;
        }
        b.len()
    };
    let is_start = |c: u8| c.is_ascii_alphabetic() || c == b'_' || c == b':';
    let is_part = |c: u8| c.is_ascii_alphanumeric() || c == b'_' || c == b':';
    while i < b.len() {
        let c = b[i];
        if c == b'{' {
            i = skip_group(i, b'}');
        } else if c == b'[' {
            i = skip_group(i, b']');
        } else if matches!(c, b'"' | b'\'' | b'`') {
            i = skip_group(i, c);
        } else if c == b'$' {
            i += 1;
            if b.get(i) == Some(&b'{') {
                i = skip_group(i, b'}');
            } else {
                while i < b.len() && is_part(b[i]) {
                    i += 1;
                }
            }
        } else if c.is_ascii_digit() || c == b'.' {
            while i < b.len() && (b[i].is_ascii_alphanumeric() || b[i] == b'.' || b[i] == b'_') {
                i += 1;
            }
        } else if is_start(c) {
            let start = i;
            while i < b.len() && is_part(b[i]) {
                i += 1;
            }
            let word = &expr[start..i];
            let mut next = i;
            while next < b.len() && b[next].is_ascii_whitespace() {
                next += 1;
            }
            let call = b.get(next) == Some(&b'(');
            let lower = word.to_ascii_lowercase();
            if LABEL_LIST_WORDS.contains(&lower.as_str()) {
                if call {
                    i = skip_group(next, b')');
                }
            } else if !call && !PROMQL_WORDS.contains(&lower.as_str()) {
                names.insert(word.to_string());
            }
        } else {
            i += 1;
        }
    }
    names
}

#[test]
fn metric_names_skip_functions_keywords_labels_and_durations() {
    let names = metric_names(
        "histogram_quantile(0.95, sum by (pool, le) (rate(a_bucket{pool=~\"$pool\", x=\"{b}\"}[$__rate_interval])))\n  > 2 * max without (outcome) (b offset 1d) and on (instance) c > bool 1e3 unless sum(d) by (le)",
    );
    let expect: BTreeSet<String> = ["a_bucket", "b", "c", "d"].map(String::from).into();
    assert_eq!(names, expect);
    assert_eq!(
        metric_names("cosygate_queue_depth / (cosygate_queue_capacity > 0) > 0.8"),
        ["cosygate_queue_capacity", "cosygate_queue_depth"]
            .map(String::from)
            .into()
    );
}

/// Every expression of alerts.yml and of the dashboard (its queries and its variables'
/// `label_values`), with where it comes from.
fn all_expressions() -> Vec<(String, String)> {
    let rules: serde_yaml::Value = serde_yaml::from_str(&read(ALERTS)).expect("alerts.yml is YAML");
    let mut out = Vec::new();
    for group in rules["groups"].as_sequence().expect("groups") {
        for rule in group["rules"].as_sequence().expect("rules") {
            let name = rule["alert"]
                .as_str()
                .or(rule["record"].as_str())
                .expect("a rule name");
            let expr = rule["expr"].as_str().expect("an expr");
            out.push((format!("{ALERTS}: {name}"), expr.to_string()));
        }
    }
    let dash = dashboard();
    for (title, expr) in dashboard_queries(&dash) {
        out.push((format!("{DASHBOARD}: {title}"), expr));
    }
    for var in dash["templating"]["list"].as_array().expect("variables") {
        let query = var["query"]["query"].as_str().or(var["query"].as_str());
        if let Some(metric) = query.and_then(label_values_metric) {
            out.push((format!("{DASHBOARD}: variable {}", var["name"]), metric));
        }
    }
    out
}

/// The names a Prometheus text exposition shows: each family's `# TYPE` (with its type) and
/// each sample's name.
fn exported(text: &str) -> (BTreeMap<String, String>, BTreeSet<String>) {
    let mut types = BTreeMap::new();
    let mut samples = BTreeSet::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let mut parts = rest.split_whitespace();
            if let (Some(name), Some(kind)) = (parts.next(), parts.next()) {
                types.insert(name.to_string(), kind.to_string());
            }
        } else if !line.starts_with('#') && !line.trim().is_empty() {
            let end = line.find(['{', ' ']).unwrap_or(line.len());
            samples.insert(line[..end].to_string());
        }
    }
    (types, samples)
}

/// Whether `name` is exported: a family, a sample, or a histogram's (or summary's) series.
fn is_exported(name: &str, types: &BTreeMap<String, String>, samples: &BTreeSet<String>) -> bool {
    if types.contains_key(name) || samples.contains(name) {
        return true;
    }
    ["_bucket", "_sum", "_count"].iter().any(|suffix| {
        name.strip_suffix(suffix).is_some_and(|base| {
            types
                .get(base)
                .is_some_and(|t| t == "histogram" || (t == "summary" && *suffix != "_bucket"))
        })
    })
}

// ---------------------------------------------------------------------------------------------
// The live gateway

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .expect("client")
}

async fn generate(gw: &Gateway, text: &str) -> u16 {
    generate_seeded(gw, text, 0).await
}

async fn generate_seeded(gw: &Gateway, text: &str, seed: u64) -> u16 {
    let body = json!({"text": text, "mode": "sft", "spk_id": "中文女", "seed": seed});
    client()
        .post(gw.url("/generate"))
        .json(&body)
        .send()
        .await
        .expect("the gateway answers")
        .status()
        .as_u16()
}

async fn scrape(admin: &str) -> String {
    let resp = client()
        .get(format!("http://{admin}/metrics"))
        .send()
        .await
        .expect("the admin listener answers GET /metrics");
    assert_eq!(resp.status(), 200, "GET /metrics");
    resp.text().await.expect("the metrics text")
}

#[tokio::test]
async fn every_metric_in_the_alerts_and_the_dashboard_is_exported() {
    let exprs = all_expressions();
    let mut wanted: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (origin, expr) in &exprs {
        let names = metric_names(expr);
        assert!(!names.is_empty(), "{origin}: no metric found in {expr}");
        for name in names {
            wanted.entry(name).or_default().push(origin.clone());
        }
    }
    assert!(wanted.contains_key("cosygate_request_duration_milliseconds_bucket"));
    assert!(wanted.contains_key("cosygate_pool_backends_healthy"));

    // Two sims in the default pool, whose retry budget allows one retry an hour; a second pool
    // with a backend nobody listens on, restarted by a command that fails; a Redis nobody
    // listens on, for the rate limit and the cache (Redis errors); a small rate limit (429s).
    let fast = ["--rtf", "0.01", "--first-chunk-ms", "5"];
    let (one, two) = (Sim::start(&fast), Sim::start(&fast));
    let dead_port = free_port();
    let admin = format!("127.0.0.1:{}", free_port());
    let redis = format!("redis://127.0.0.1:{}/0", free_port());
    let pool = pool_yaml(
        "cosyvoice_fastapi",
        &[one.addr(), two.addr()],
        "      retry: { attempts: 2, budget_ratio: 0.0, budget_min: 1, budget_window: 1h }\n",
    );
    let yaml = format!(
        "  admin: {{ addr: {admin} }}\n\
         \x20 rate_limit:\n    per_ip: {{ capacity: 12, refill: 1, per: 1h }}\n    store: redis\n    redis: {{ url: \"{redis}\", timeout: 50ms }}\n\
         \x20 cache:\n    ttl: 1h\n    memory: {{ max: 16MiB }}\n    redis: {{ url: \"{redis}\", timeout: 50ms }}\n\
         \x20 default_pool: cosyvoice\n\
         {pool}\
         \x20   spare:\n\
         \x20     protocol: cosyvoice_fastapi\n\
         \x20     health: {{ interval: 200ms, timeout: 1s, unhealthy_after: 1, healthy_after: 1 }}\n\
         \x20     backends:\n\
         \x20       - addr: 127.0.0.1:{dead_port}\n\
         \x20         restart: {{ command: [\"false\"], after_failures: 1, cooldown: 200ms, timeout: 5s }}\n"
    );
    let gw = Gateway::start(&yaml);

    let http = client();
    assert_eq!(
        http.get(gw.url("/health"))
            .send()
            .await
            .expect("/health")
            .status(),
        200
    );
    assert_eq!(
        http.get(gw.url("/nowhere")).send().await.expect("404").status(),
        404
    );
    let bad = http
        .post(gw.url("/generate"))
        .header("Content-Type", "application/json")
        .body("{not json")
        .send()
        .await
        .expect("a malformed request is answered");
    assert_eq!(bad.status(), 400);
    for i in 0..4 {
        assert_eq!(
            generate(&gw, &format!("Metrics, take {i}.")).await,
            200,
            "{}",
            gw.log()
        );
    }
    assert_eq!(generate(&gw, "Metrics, take 0.").await, 200, "a cache hit");
    // Both backends cut the same request at the same byte: the request's fault, after the one
    // retry the budget allows.
    one.fault("truncate", 1).await;
    two.fault("truncate", 1).await;
    assert_eq!(generate(&gw, "Metrics, cut twice.").await, 502, "{}", gw.log());
    // Then a failure that is not retried: the budget is spent.
    one.fault("error500", 1).await;
    two.fault("error500", 1).await;
    assert_eq!(generate(&gw, "Metrics, no retry.").await, 502, "{}", gw.log());
    // The pool fails a request whose voice is cached with another seed: the degradation
    // ladder's same_voice entry answers it (cosygate_degraded_total).
    one.fault("error500", 1).await;
    two.fault("error500", 1).await;
    assert_eq!(
        generate_seeded(&gw, "Metrics, take 0.", 1).await,
        200,
        "{}",
        gw.log()
    );
    let mut limited = false;
    for _ in 0..20 {
        if generate(&gw, "Metrics, take 1.").await == 429 {
            limited = true;
            break;
        }
    }
    assert!(limited, "the per-IP limit of 12 answered 429");

    // Poll until every wanted name shows (some come from background work: health checks,
    // the supervisor's restart), or the deadline passes.
    let deadline = Instant::now() + Duration::from_secs(20);
    let missing = loop {
        let text = scrape(&admin).await;
        let (types, samples) = exported(&text);
        let missing: Vec<_> = wanted
            .iter()
            .filter(|(name, _)| !is_exported(name, &types, &samples))
            .collect();
        if missing.is_empty() || Instant::now() >= deadline {
            break missing
                .into_iter()
                .map(|(name, origins)| format!("{name} (in {})", origins.join("; ")))
                .collect::<Vec<_>>();
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert!(
        missing.is_empty(),
        "metrics named in the alerts or the dashboard that the gateway does not export:\n  {}\n--- GET /metrics ---\n{}",
        missing.join("\n  "),
        scrape(&admin).await
    );
}
