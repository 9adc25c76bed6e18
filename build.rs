//! Build facts for `--version`: the commit and the WasmEdge version the release carries.
use std::process::Command;

fn output(cmd: &str, args: &[&str]) -> Option<String> {
    let out = Command::new(cmd).args(args).output().ok()?;
    let text = String::from_utf8(out.stdout).ok()?.trim().to_string();
    (out.status.success() && !text.is_empty()).then_some(text)
}

fn main() {
    // A build outside a git checkout (a source tarball) says so instead of guessing.
    let commit = std::env::var("BUILD_COMMIT").ok().or_else(|| output("git", &["rev-parse", "--short=12", "HEAD"]));
    println!("cargo:rustc-env=BUILD_COMMIT={}", commit.as_deref().unwrap_or("unknown"));
    // The shim and wasmedge-image do not link WasmEdge: `make dist` tells them the version of
    // the library it bundles, as the runner reports it.
    let wasmedge = std::env::var("WASMEDGE_VERSION").unwrap_or_else(|_| "unknown (not a release build)".into());
    println!("cargo:rustc-env=BUILD_WASMEDGE_VERSION={wasmedge}");
    println!("cargo:rerun-if-env-changed=BUILD_COMMIT");
    println!("cargo:rerun-if-env-changed=WASMEDGE_VERSION");
    println!("cargo:rerun-if-changed=.git/HEAD");
    println!("cargo:rerun-if-changed=.git/refs/heads");
}
