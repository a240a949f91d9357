//! Coverage of the monitoring assets: every alert rule has a promtool unit test in
//! which it fires and one in which it stays quiet (the tests themselves run in
//! `operations::the_deploy_monitoring_assets_are_valid_and_use_real_metrics`), and the
//! dashboard names no data source by uid, so it imports into any Grafana. The
//! Kubernetes Deployment leaves its replica count to the autoscaler.

use std::collections::BTreeSet;
use yaml_rust2::{Yaml, YamlLoader};

fn repo_file(path: &str) -> String {
    let full = format!("{}/{path}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read_to_string(&full).unwrap_or_else(|e| panic!("{full}: {e}"))
}

fn yaml(path: &str) -> Yaml {
    YamlLoader::load_from_str(&repo_file(path))
        .unwrap()
        .remove(0)
}

#[test]
fn every_alert_has_a_unit_test_that_fires_it_and_one_that_does_not() {
    let rules = yaml("deploy/prometheus/alerts.yml");
    let alerts: BTreeSet<String> = rules["groups"]
        .as_vec()
        .unwrap()
        .iter()
        .flat_map(|group| group["rules"].as_vec().unwrap())
        .filter_map(|rule| rule["alert"].as_str().map(str::to_owned))
        .collect();
    assert!(alerts.len() >= 17, "{alerts:?}");

    let tests = yaml("deploy/prometheus/alerts.test.yml");
    let (mut fired, mut quiet) = (BTreeSet::new(), BTreeSet::new());
    for test in tests["tests"].as_vec().unwrap() {
        for case in test["alert_rule_test"].as_vec().unwrap() {
            let name = case["alertname"].as_str().unwrap().to_owned();
            match case["exp_alerts"].as_vec() {
                Some(expected) if !expected.is_empty() => fired.insert(name),
                _ => quiet.insert(name),
            };
        }
    }
    let never_fired: Vec<_> = alerts.difference(&fired).collect();
    let never_quiet: Vec<_> = alerts.difference(&quiet).collect();
    assert!(never_fired.is_empty(), "no test fires {never_fired:?}");
    assert!(
        never_quiet.is_empty(),
        "no test keeps {never_quiet:?} quiet"
    );
    let unknown: Vec<_> = fired
        .union(&quiet)
        .filter(|a| !alerts.contains(*a))
        .collect();
    assert!(
        unknown.is_empty(),
        "tests of alerts that do not exist: {unknown:?}"
    );
}

#[test]
fn the_dashboard_picks_its_data_source_through_a_variable() {
    let dashboard: serde_json::Value =
        serde_json::from_str(&repo_file("deploy/grafana/dashboards/roomcast.json")).unwrap();
    let variables = dashboard["templating"]["list"].as_array().unwrap();
    assert!(
        variables.iter().any(|v| v["name"] == "datasource"
            && v["type"] == "datasource"
            && v["query"] == "prometheus"),
        "no datasource variable"
    );
    // Every Prometheus reference, in panels, targets and variables, goes through it.
    fn visit(value: &serde_json::Value, path: &str, bad: &mut Vec<String>) {
        match value {
            serde_json::Value::Object(map) => {
                if let Some(source) = map.get("datasource")
                    && source["type"] == "prometheus"
                    && source["uid"] != "${datasource}"
                {
                    bad.push(format!("{path}: {source}"));
                }
                for (key, inner) in map {
                    visit(inner, &format!("{path}.{key}"), bad);
                }
            }
            serde_json::Value::Array(items) => {
                for (i, inner) in items.iter().enumerate() {
                    visit(inner, &format!("{path}[{i}]"), bad);
                }
            }
            _ => {}
        }
    }
    let mut bad = Vec::new();
    visit(&dashboard, "", &mut bad);
    assert!(bad.is_empty(), "pinned data sources: {bad:?}");
}

#[test]
fn the_deployment_leaves_its_replica_count_to_the_autoscaler() {
    let hpa = yaml("deploy/k8s/hpa.yaml");
    let deployment = yaml("deploy/k8s/deployment.yaml");
    assert_eq!(
        hpa["spec"]["scaleTargetRef"]["kind"].as_str(),
        Some("Deployment")
    );
    assert_eq!(
        hpa["spec"]["scaleTargetRef"]["name"],
        deployment["metadata"]["name"]
    );
    assert!(hpa["spec"]["minReplicas"].as_i64().unwrap() >= 2);
    assert!(
        deployment["spec"]["replicas"].is_badvalue(),
        "deployment.yaml sets replicas beside the HPA: {:?}",
        deployment["spec"]["replicas"]
    );
}
