//! Go → wasip1/wasm with the standard Go toolchain (1.21 or newer).
//!
//! Builds run offline (`GOPROXY=off`, `GOTOOLCHAIN=local`): the standard library and vendored
//! modules only. Go's runtime reads files through the preopen at `/`, which the shim gives.

use std::fs;
use std::path::Path;
use std::process::Command;

use anyhow::{bail, Context, Result};

use super::util::{run_tool, stdout_of, which};
use super::{module_at_app_wasm, Compiled, Source, Toolchain};

/// `go version`, after checking it is 1.21 or newer (the first with wasip1).
pub fn toolchain() -> Result<Toolchain> {
    if which("go").is_none() {
        bail!("go is not on PATH: run `wasmedge-image toolchains go`");
    }
    let version = stdout_of(go_command().arg("version"))?;
    let (major, minor) = parse_version(&version).with_context(|| format!("cannot read {version:?}"))?;
    if (major, minor) < (1, 21) {
        bail!("{version}: Go 1.21 or newer is needed for wasip1 (run `wasmedge-image toolchains go`)");
    }
    Ok(Toolchain { version, base_layers: vec![] })
}

/// `go version go1.27.3 linux/amd64` → (1, 27).
fn parse_version(text: &str) -> Option<(u32, u32)> {
    let v = text.split_whitespace().find_map(|w| w.strip_prefix("go1."))?;
    let minor = v.split(|c: char| !c.is_ascii_digit()).next()?.parse().ok()?;
    Some((1, minor))
}

fn go_command() -> Command {
    let mut cmd = Command::new("go");
    cmd.env("GOTOOLCHAIN", "local").env("GOPROXY", "off").env("GOWORK", "off").env("CGO_ENABLED", "0");
    cmd
}

pub fn compile(src: &Source, args: &[String], work: &Path) -> Result<Compiled> {
    let out = work.join("app.wasm");
    let mut cmd = go_command();
    cmd.env("GOOS", "wasip1")
        .env("GOARCH", "wasm")
        .args(["build", "-trimpath", "-ldflags=-s -w", "-o"])
        .arg(&out)
        .args(args)
        .current_dir(src.dir());
    if src.is_file {
        cmd.arg(src.path.file_name().unwrap());
    } else if src.path.join("go.mod").exists() {
        cmd.arg(".");
    } else {
        // No module: the .go files of the directory as one program.
        let files: Vec<String> = src
            .files()?
            .into_iter()
            .map(|(rel, _)| rel)
            .filter(|r| r.ends_with(".go") && !r.contains('/') && !r.ends_with("_test.go"))
            .collect();
        if files.is_empty() {
            bail!("no .go files in {}", src.path.display());
        }
        cmd.args(files);
    }
    run_tool(&mut cmd, "go build")?;
    Ok(module_at_app_wasm(fs::read(&out)?))
}

#[cfg(test)]
mod tests {
    #[test]
    fn versions_parse() {
        assert_eq!(super::parse_version("go version go1.27.3 linux/amd64"), Some((1, 27)));
        assert_eq!(super::parse_version("go version go1.21rc2 linux/amd64"), Some((1, 21)));
        assert_eq!(super::parse_version("nonsense"), None);
    }
}
