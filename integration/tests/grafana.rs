//! The Grafana dashboard (`contrib/grafana/jetmq.json`) against the metrics a running server
//! serves: every metric its PromQL expressions name exists in a scrape of `GET /metrics`
//! (the fleet-only counters in the endpoint's fleet rendering), with the labels they match on,
//! and every metric the endpoint serves has a panel.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::timeout;

mod common;
use common::Shell;

const DASHBOARD: &str = include_str!("../../contrib/grafana/jetmq.json");

/// Labels Prometheus itself puts on every series it scrapes.
const TARGET_LABELS: [&str; 2] = ["instance", "job"];

/// One series selector of an expression: the metric and the labels it matches on.
#[derive(Debug, PartialEq, Eq)]
struct Selector {
    metric: String,
    labels: Vec<String>,
}

/// What an expression reads: its selectors, and the labels it groups or matches by
/// (`by (...)`, `without (...)`, `on (...)`, `ignoring (...)`, `group_left (...)`).
#[derive(Debug, Default, PartialEq, Eq)]
struct Reads {
    selectors: Vec<Selector>,
    grouping: Vec<String>,
}

/// The names of PromQL's keywords that are not metric names (functions and aggregations are
/// told apart by the `(` after them).
const KEYWORDS: [&str; 6] = ["bool", "and", "or", "unless", "offset", "atan2"];
const GROUPING: [&str; 6] = [
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
];

fn is_ident_start(c: char) -> bool {
    c.is_ascii_alphabetic() || c == '_' || c == ':'
}

fn is_ident(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_' || c == ':'
}

/// Reads a PromQL expression: strings, ranges (`[5m]`, `[$__rate_interval]`), numbers and
/// Grafana variables are skipped, functions and aggregations are names followed by `(`,
/// every other name is a metric (with its `{...}` label matchers).
fn reads(expr: &str) -> Reads {
    let chars: Vec<char> = expr.chars().collect();
    let mut out = Reads::default();
    let mut i = 0;
    let skip_space = |mut i: usize| {
        while i < chars.len() && chars[i].is_whitespace() {
            i += 1;
        }
        i
    };
    let ident = |mut i: usize| {
        let start = i;
        while i < chars.len() && is_ident(chars[i]) {
            i += 1;
        }
        (chars[start..i].iter().collect::<String>(), i)
    };
    let string_end = |i: usize| {
        let quote = chars[i];
        let mut j = i + 1;
        while j < chars.len() && chars[j] != quote {
            if chars[j] == '\\' && quote != '`' {
                j += 1;
            }
            j += 1;
        }
        j + 1
    };
    // `{ name op "value", ... }` from the `{` at `i`: the label names, and where it ends.
    let matchers = |mut i: usize| {
        let mut labels = Vec::new();
        i += 1;
        loop {
            i = skip_space(i);
            if i >= chars.len() || chars[i] == '}' {
                return (labels, i + 1);
            }
            if chars[i] == ',' {
                i += 1;
                continue;
            }
            let (label, next) = ident(i);
            assert!(!label.is_empty(), "a label matcher in {expr:?} at {i}");
            labels.push(label);
            i = skip_space(next);
            while i < chars.len() && "=!~".contains(chars[i]) {
                i += 1;
            }
            i = skip_space(i);
            assert!(
                i < chars.len() && "\"'`".contains(chars[i]),
                "a quoted label value in {expr:?} at {i}"
            );
            i = string_end(i);
        }
    };
    while i < chars.len() {
        let c = chars[i];
        if "\"'`".contains(c) {
            i = string_end(i);
        } else if c == '[' {
            while i < chars.len() && chars[i] != ']' {
                i += 1;
            }
            i += 1;
        } else if c == '$' {
            // A Grafana variable outside a string or range.
            let (_, next) = ident(i + 1);
            i = next;
        } else if c.is_ascii_digit()
            || (c == '.' && chars.get(i + 1).is_some_and(char::is_ascii_digit))
        {
            while i < chars.len() && (chars[i].is_ascii_alphanumeric() || chars[i] == '.') {
                i += 1;
            }
        } else if c == '{' {
            let (labels, next) = matchers(i);
            out.selectors.push(Selector {
                metric: String::new(),
                labels,
            });
            i = next;
        } else if is_ident_start(c) {
            let (name, next) = ident(i);
            let after = skip_space(next);
            // A function or aggregation: `(` next, or an aggregation's `by`/`without` first.
            let (word_after, _) = ident(after);
            let opens = chars.get(after) == Some(&'(')
                || (!GROUPING.contains(&name.as_str())
                    && ["by", "without"].contains(&word_after.as_str()));
            if GROUPING.contains(&name.as_str()) {
                i = next;
                if opens {
                    let close = (after..chars.len())
                        .find(|&j| chars[j] == ')')
                        .unwrap_or(chars.len());
                    let list: String = chars[after + 1..close].iter().collect();
                    out.grouping.extend(
                        list.split(',')
                            .map(str::trim)
                            .filter(|l| !l.is_empty())
                            .map(str::to_owned),
                    );
                    i = close + 1;
                }
            } else if KEYWORDS.contains(&name.as_str()) || opens {
                i = next;
            } else if chars.get(after) == Some(&'{') {
                let (labels, end) = matchers(after);
                out.selectors.push(Selector {
                    metric: name,
                    labels,
                });
                i = end;
            } else {
                out.selectors.push(Selector {
                    metric: name,
                    labels: Vec::new(),
                });
                i = next;
            }
        } else {
            i += 1;
        }
    }
    out
}

#[test]
fn the_expression_reader_finds_every_metric_and_label() {
    let got = reads(
        "sum by (instance, reason) (rate(jetmq_a_total{instance=~\"$instance\",reason!=\"x,}y\"}\
         [$__rate_interval])) / on(instance) group_left jetmq_b offset 5m * 2.5e3 \
         + histogram_quantile(0.9, jetmq_c_bucket) and jetmq_d",
    );
    let metrics: Vec<&str> = got.selectors.iter().map(|s| s.metric.as_str()).collect();
    assert_eq!(
        metrics,
        ["jetmq_a_total", "jetmq_b", "jetmq_c_bucket", "jetmq_d"]
    );
    assert_eq!(got.selectors[0].labels, ["instance", "reason"]);
    assert_eq!(got.grouping, ["instance", "reason", "instance"]);
}

/// The metric families of a Prometheus text exposition: name → (type, label names).
fn families(text: &str) -> BTreeMap<String, (String, BTreeSet<String>)> {
    let mut out: BTreeMap<String, (String, BTreeSet<String>)> = BTreeMap::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').expect("# TYPE name kind");
            out.entry(name.to_owned()).or_default().0 = kind.to_owned();
        } else if !line.starts_with('#') && !line.trim().is_empty() {
            let end = line.find(['{', ' ']).expect("a sample");
            let labels = line[end..]
                .strip_prefix('{')
                .and_then(|l| l.split_once('}'))
                .map(|(l, _)| {
                    l.split(',')
                        .filter_map(|m| m.split_once('='))
                        .map(|(k, _)| k.trim().to_owned())
                        .collect::<BTreeSet<_>>()
                })
                .unwrap_or_default();
            out.entry(line[..end].to_owned())
                .or_default()
                .1
                .extend(labels);
        }
    }
    out
}

/// The family a dashboard metric name reads in `served`: the name itself, or for
/// `_bucket`, `_sum` and `_count` the histogram or summary it belongs to.
fn family<'a>(
    served: &'a BTreeMap<String, (String, BTreeSet<String>)>,
    metric: &str,
) -> Option<&'a (String, BTreeSet<String>)> {
    served.get(metric).or_else(|| {
        ["_bucket", "_sum", "_count"].iter().find_map(|suffix| {
            let base = metric.strip_suffix(suffix)?;
            served
                .get(base)
                .filter(|(kind, _)| kind == "histogram" || kind == "summary")
        })
    })
}

/// `GET /metrics` from `addr`: the body.
async fn scrape(addr: std::net::SocketAddr) -> String {
    let mut http = TcpStream::connect(addr).await.expect("connects");
    http.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .expect("request");
    let mut response = String::new();
    timeout(Duration::from_secs(10), http.read_to_string(&mut response))
        .await
        .expect("an answer in time")
        .expect("read");
    assert!(response.starts_with("HTTP/1.1 200 OK"), "{response}");
    response
        .split_once("\r\n\r\n")
        .expect("a body")
        .1
        .to_owned()
}

/// Every panel's queries, as `(panel title, expression)`.
fn queries(dashboard: &serde_json::Value) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let panels = dashboard["panels"].as_array().expect("panels");
    for panel in panels.iter().chain(
        panels
            .iter()
            .flat_map(|p| p["panels"].as_array().into_iter().flatten()),
    ) {
        if panel["type"] == "row" {
            continue;
        }
        let title = panel["title"].as_str().expect("a title").to_owned();
        let targets = panel["targets"].as_array().expect("targets");
        assert!(!targets.is_empty(), "{title}: no query");
        for target in targets {
            let expr = target["expr"].as_str().expect("a PromQL expression");
            out.push((title.clone(), expr.to_owned()));
        }
    }
    out
}

#[test]
fn the_dashboard_is_a_grafana_dashboard_on_a_prometheus_variable() {
    let dashboard: serde_json::Value = serde_json::from_str(DASHBOARD).expect("JSON");
    assert!(dashboard["title"].is_string() && dashboard["uid"].is_string());
    assert!(dashboard["schemaVersion"].is_u64());
    let variables = dashboard["templating"]["list"]
        .as_array()
        .expect("variables");
    let source = variables
        .iter()
        .find(|v| v["type"] == "datasource")
        .expect("a data source variable");
    assert_eq!(source["query"], "prometheus");
    let uid = format!("${{{}}}", source["name"].as_str().expect("its name"));
    let mut ids = BTreeSet::new();
    let panels = dashboard["panels"].as_array().expect("panels");
    for panel in panels {
        assert!(ids.insert(panel["id"].as_u64().expect("an id")), "{panel}");
        assert!(panel["gridPos"]["w"].is_u64(), "{panel}");
        if panel["type"] == "row" {
            continue;
        }
        assert_eq!(panel["datasource"]["type"], "prometheus", "{panel}");
        assert_eq!(panel["datasource"]["uid"], uid.as_str(), "{panel}");
        for target in panel["targets"].as_array().expect("targets") {
            assert_eq!(target["datasource"]["uid"], uid.as_str(), "{target}");
        }
    }
    assert!(queries(&dashboard).len() >= 20);
}

/// Starts `shell` with a metrics listener, scrapes it, and checks every metric the
/// dashboard reads against what was served.
async fn every_dashboard_metric_is_served(shell: Shell) {
    let (server, _) = common::serve(shell, "[metrics]\nlisten = \"127.0.0.1:0\"\n").await;
    let served = families(&scrape(server.metrics_addr.expect("a metrics address")).await);
    server.shutdown().await.expect("clean shutdown");

    // The endpoint's own rendering, without and with the fleet counters: the live server is
    // no fleet node, so its scrape is the first, and the counters only a fleet node serves
    // are what the second adds.
    let metrics = jetmq_core::broker::Metrics::default();
    let single = families(&jetmq::metrics::render(&metrics, false));
    let fleet = families(&jetmq::metrics::render(&metrics, true));
    assert_eq!(
        served.keys().collect::<Vec<_>>(),
        single.keys().collect::<Vec<_>>(),
        "the scrape is the endpoint's rendering"
    );
    let fleet_only: BTreeSet<&String> = fleet.keys().filter(|m| !served.contains_key(*m)).collect();
    assert!(!fleet_only.is_empty(), "the fleet counters: {fleet:?}");

    let dashboard: serde_json::Value = serde_json::from_str(DASHBOARD).expect("JSON");
    let mut used = BTreeSet::new();
    for (title, expr) in queries(&dashboard) {
        let read = reads(&expr);
        assert!(!read.selectors.is_empty(), "{title}: no metric in {expr}");
        let mut labels: BTreeSet<String> = TARGET_LABELS.iter().map(|l| (*l).to_owned()).collect();
        for selector in &read.selectors {
            let metric = &selector.metric;
            let (_, has) = family(&served, metric)
                .or_else(|| family(&fleet, metric).filter(|_| fleet_only.contains(metric)))
                .unwrap_or_else(|| {
                    panic!("{title}: {metric} (in {expr}) is not served: {served:?}")
                });
            for label in &selector.labels {
                assert!(
                    has.contains(label) || TARGET_LABELS.contains(&label.as_str()),
                    "{title}: {metric} has no label {label} (in {expr})"
                );
            }
            labels.extend(has.iter().cloned());
            used.insert(metric.clone());
        }
        for label in &read.grouping {
            assert!(
                labels.contains(label),
                "{title}: groups by {label}, which none of its metrics has (in {expr})"
            );
        }
    }
    // And the other way: a metric the endpoint serves and no panel shows is missing from
    // the dashboard.
    let unshown: Vec<&String> = fleet.keys().filter(|m| !used.contains(*m)).collect();
    assert!(
        unshown.is_empty(),
        "served but on no panel of contrib/grafana/jetmq.json: {unshown:?}"
    );
}

for_each_shell!(every_dashboard_metric_is_served);
