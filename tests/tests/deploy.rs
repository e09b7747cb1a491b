//! The deployment files that are only on paper (deploy/README.md) are still never malformed: the
//! Kubernetes manifests pass the Kubernetes API schema (`kubernetes-validate --strict`, installed
//! by `scripts/setup --tests`), and the HAProxy configuration passes `haproxy -c` with the
//! `server` lines a deployment appends. Each check is shown to refuse a broken copy, so a check
//! that passes everything would fail here.

use hamlet_tests::{root, temp_dir};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn kubernetes_validate(files: &[PathBuf]) -> Output {
    let tool = root().join(".tools/python/bin/kubernetes-validate");
    assert!(
        tool.exists(),
        "{} is missing: run scripts/setup --tests",
        tool.display()
    );
    Command::new(tool)
        .arg("--strict")
        .args(files)
        .output()
        .expect("run kubernetes-validate")
}

fn manifests() -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(root().join("deploy/kubernetes"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    files
}

#[test]
fn the_kubernetes_manifests_pass_the_api_schema() {
    let files = manifests();
    assert_eq!(files.len(), 3, "redis, metaserver and haproxy: {files:?}");
    let out = kubernetes_validate(&files);
    let said =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{said}");
    // Every resource of every file was checked (a Deployment and a Service each).
    assert_eq!(said.matches(" passed for resource ").count(), 6, "{said}");

    // A misspelt field in a copy is refused: the check can fail.
    let dir = temp_dir("deploy-k8s");
    let text = std::fs::read_to_string(&files[0]).unwrap();
    assert!(text.contains("containers:"));
    let broken = dir.join("broken.yaml");
    std::fs::write(&broken, text.replacen("containers:", "containerz:", 1)).unwrap();
    let out = kubernetes_validate(&[broken]);
    assert!(!out.status.success(), "a misspelt field passed");
}

fn haproxy_check(cfg: &Path) -> Output {
    Command::new("haproxy")
        .args(["-c", "-f"])
        .arg(cfg)
        .env("HAMLET_LB_BIND", "127.0.0.1:8765")
        .output()
        .expect("run haproxy (scripts/setup --tests installs it)")
}

#[test]
fn the_haproxy_configuration_passes_haproxy_c() {
    let dir = temp_dir("deploy-haproxy");
    let shipped = std::fs::read_to_string(root().join("deploy/haproxy/haproxy.cfg")).unwrap();
    // As deployments use it: the shipped file with a `server` line per node appended.
    let servers = "    server node1 127.0.0.2:8765 check\n    server node2 127.0.0.3:8765 check\n";
    let cfg = dir.join("haproxy.cfg");
    std::fs::write(&cfg, format!("{shipped}{servers}")).unwrap();
    let out = haproxy_check(&cfg);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let broken = dir.join("broken.cfg");
    std::fs::write(
        &broken,
        format!("{shipped}    server node1 127.0.0.2 chek\n"),
    )
    .unwrap();
    assert!(
        !haproxy_check(&broken).status.success(),
        "a malformed server line passed"
    );
}
