//! The Helm chart (deploy/helm/roomcast), checked by scripts/check-helm.py without helm or
//! a cluster: lint, offline render of every values set in its ci/ folder, Kubernetes API
//! schemas, the chart's promises on the rendered objects, and the rendered configuration
//! through `roomcast --check-config` of this build.

use std::process::Command;

#[test]
fn the_helm_chart_lints_renders_validates_and_configures_a_server_that_starts() {
    let python = std::env::var("PYTHON_FOR_TESTS").unwrap_or_else(|_| "python3".into());
    let output = Command::new(&python)
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/scripts/check-helm.py"
        ))
        .args(["--binary", env!("CARGO_BIN_EXE_roomcast")])
        .env_remove("DATABASE_URL")
        .output()
        .unwrap_or_else(|e| panic!("{python}: {e} (scripts/test.sh installs the tools)"));
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "the chart check failed (needs helm-python-sdk and kubernetes-validate, which \
         scripts/test.sh installs):\n{stdout}{stderr}"
    );
    assert!(
        stdout.contains("ha-values.yaml") && stdout.contains("chart OK"),
        "{stdout}"
    );
}
