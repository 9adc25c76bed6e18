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
    // The shim and wasmedge-image do not link WasmEdge: they report the version of the library
    // they were built beside (the one `make dist` bundles).
    let wasmedge = std::env::var("WASMEDGE_VERSION").ok().or_else(|| output("pkg-config", &["--modversion", "wasmedge"]));
    println!("cargo:rustc-env=BUILD_WASMEDGE_VERSION={}", wasmedge.as_deref().unwrap_or("unknown"));
    println!("cargo:rerun-if-env-changed=BUILD_COMMIT");
    println!("cargo:rerun-if-env-changed=WASMEDGE_VERSION");
    println!("cargo:rerun-if-changed=.git/HEAD");
    println!("cargo:rerun-if-changed=.git/refs/heads");
}
