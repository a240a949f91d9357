//! The release path for users without Rust: `scripts/release.sh` packages a binary (here
//! the test build, so the suite needs no second, release build) into a reproducible
//! tarball with checksums, and what it packs runs.

use std::path::{Path, PathBuf};
use std::process::Command;

fn run(command: &mut Command) -> String {
    let output = command.output().expect("runs");
    assert!(
        output.status.success(),
        "{command:?} failed: {}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn release(out: &Path) -> String {
    run(Command::new("bash")
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/release.sh"))
        .args([
            "--binary",
            env!("CARGO_BIN_EXE_roomcast"),
            "--no-image",
            "--out",
        ])
        .arg(out))
}

fn section_names(binary: &Path) -> String {
    run(Command::new("objdump").arg("-h").arg(binary))
}

#[test]
fn the_release_script_packages_a_stripped_binary_with_checksums_reproducibly() {
    let out = std::env::temp_dir().join(format!("roomcast-release-{}", uuid::Uuid::new_v4()));
    let listed = release(&out);
    let version = env!("CARGO_PKG_VERSION");
    let tarball = listed
        .lines()
        .find(|line| line.ends_with(".tar.gz"))
        .map(PathBuf::from)
        .expect("the script lists the tarball");
    let name = tarball.file_name().unwrap().to_string_lossy().into_owned();
    assert!(
        name.starts_with(&format!("roomcast-{version}-")) && name.contains("linux"),
        "{name}"
    );
    run(Command::new("sha256sum")
        .args(["-c", "SHA256SUMS"])
        .current_dir(&out));

    let first = std::fs::read_to_string(out.join("SHA256SUMS")).unwrap();
    release(&out);
    assert_eq!(
        std::fs::read_to_string(out.join("SHA256SUMS")).unwrap(),
        first,
        "the same binary gives the same archive"
    );

    run(Command::new("tar")
        .arg("-xzf")
        .arg(&tarball)
        .current_dir(&out));
    let unpacked = out.join(name.trim_end_matches(".tar.gz"));
    for file in [
        "roomcast",
        "config/default.toml",
        "README.md",
        "CHANGELOG.md",
        "LICENSE-MIT",
        "LICENSE-APACHE",
        "INSTALL.txt",
        "docs/protocol.md",
        "docs/operations.md",
        "docs/migrations.md",
        "deploy/compose.yaml",
        "deploy/k8s",
    ] {
        assert!(unpacked.join(file).exists(), "{file} is in the archive");
    }
    let install = std::fs::read_to_string(unpacked.join("INSTALL.txt")).unwrap();
    assert!(
        install.contains("GLIBC_2."),
        "states the glibc it needs: {install}"
    );

    let binary = unpacked.join("roomcast");
    assert!(
        !section_names(&binary).contains(".debug_info")
            && !section_names(&binary).contains(".symtab"),
        "the packaged binary is stripped"
    );
    assert!(
        std::fs::metadata(&binary).unwrap().len()
            < std::fs::metadata(env!("CARGO_BIN_EXE_roomcast"))
                .unwrap()
                .len()
    );
    let said = run(Command::new(&binary).arg("--version"));
    assert_eq!(said.trim(), format!("roomcast {version}"));
    let checked = Command::new(&binary)
        .args(["--check-config", "--config", "config/default.toml"])
        .current_dir(&unpacked)
        .env_remove("DATABASE_URL")
        .env_remove("RUST_LOG")
        .output()
        .unwrap();
    assert!(
        checked.status.success(),
        "the packaged configuration passes the check: {}",
        String::from_utf8_lossy(&checked.stderr)
    );
    std::fs::remove_dir_all(&out).unwrap();
}
