//! Where the container-process binary (`containerd-wasmedge-init`) is, and how to execute it.
//!
//! It is installed beside the shim and `wasmedge-image`. A release carries it with the glibc
//! and the libraries it was built against in `../lib`, its ELF interpreter pointing at the
//! default install prefix; so that any other prefix works too (and an unpacked tarball before
//! it is installed), it is executed through the bundled dynamic loader when there is one.
use crate::protocol::RUNNER_BIN;
use anyhow::{bail, Context, Result};
use std::ffi::OsString;
use std::path::{Path, PathBuf};

/// The dynamic loader a release bundles, relative to the binaries' directory.
const BUNDLED_LOADER: &str = "../lib/ld-linux-x86-64.so.2";

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Runner {
    /// What to execute: the runner itself, or the bundled loader.
    pub program: PathBuf,
    /// argv after argv[0], before the runner's own arguments.
    pub prefix_args: Vec<OsString>,
}

impl Runner {
    /// The runner beside this process's own binary. A missing runner is an error that names
    /// where it was looked for, instead of a failure later that hides the cause.
    pub fn beside_self() -> Result<Runner> {
        let exe = std::env::current_exe().context("locating this binary")?;
        Runner::beside(&exe)
    }

    pub fn beside(exe: &Path) -> Result<Runner> {
        let dir = exe.parent().context("this binary has no directory")?;
        let runner = dir.join(RUNNER_BIN);
        if !runner.is_file() {
            bail!("{RUNNER_BIN} not found at {} (it is installed beside {})", runner.display(), exe.display());
        }
        let loader = dir.join(BUNDLED_LOADER);
        Ok(if loader.is_file() {
            Runner { program: loader, prefix_args: vec!["--argv0".into(), RUNNER_BIN.into(), runner.into()] }
        } else {
            Runner { program: runner, prefix_args: Vec::new() }
        })
    }

    /// A command that runs the runner with `args`.
    pub fn command<I, S>(&self, args: I) -> std::process::Command
    where
        I: IntoIterator<Item = S>,
        S: AsRef<std::ffi::OsStr>,
    {
        let mut cmd = std::process::Command::new(&self.program);
        cmd.args(&self.prefix_args).args(args);
        cmd
    }
}

/// The environment of a container process, and of the zygote that forks them: `RUST_LOG` only,
/// never the shim's own (its OTLP headers may carry tokens).
pub fn environment() -> Vec<(&'static str, String)> {
    std::env::var("RUST_LOG").map(|v| ("RUST_LOG", v)).into_iter().collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_runner_is_named_with_where_it_was_looked_for() {
        let dir = tempfile::tempdir().unwrap();
        let shim = dir.path().join("containerd-shim-wasmedge-v1");
        let err = Runner::beside(&shim).unwrap_err().to_string();
        assert!(err.contains(&format!("{RUNNER_BIN} not found at {}", dir.path().join(RUNNER_BIN).display())), "{err}");
    }

    #[test]
    fn a_bundled_loader_executes_the_runner() {
        let dir = tempfile::tempdir().unwrap();
        let (bin, lib) = (dir.path().join("bin"), dir.path().join("lib"));
        std::fs::create_dir_all(&bin).unwrap();
        std::fs::write(bin.join(RUNNER_BIN), b"").unwrap();
        let plain = Runner::beside(&bin.join("shim")).unwrap();
        assert_eq!(plain.program, bin.join(RUNNER_BIN));
        std::fs::create_dir_all(&lib).unwrap();
        std::fs::write(lib.join("ld-linux-x86-64.so.2"), b"").unwrap();
        let bundled = Runner::beside(&bin.join("shim")).unwrap();
        assert_eq!(bundled.program, bin.join(BUNDLED_LOADER));
        assert_eq!(bundled.prefix_args.last().unwrap(), bin.join(RUNNER_BIN).as_os_str());
    }
}
