//! The release tarball `make dist` writes (make test makes it first): what its ELF files need
//! is inside it, the shim and wasmedge-image are static and do not link WasmEdge, the runner
//! runs through the bundled loader, every binary prints its version, and the checksum matches.
//! The node matrix (test/e2e_nodes.rs) installs and runs the same tarball on other releases.

mod common;

use common::*;
use goblin::elf::Elf;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::Duration;

const RUNNER: &str = "containerd-wasmedge-init";

/// The tarball unpacked once into a temp dir (kept for the process's life).
fn unpacked() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let tarball = dist_tarball();
        let dir = tempfile::tempdir().unwrap().keep();
        let out = exec_bounded(Command::new("tar").arg("-xzf").arg(&tarball).arg("-C").arg(&dir), None, Duration::from_secs(60));
        assert_eq!(out.code, 0, "cannot unpack {}: {out:#?}", tarball.display());
        dir.join(dist_name())
    })
}

fn elf(path: &Path) -> (Vec<u8>, PathBuf) {
    (fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display())), path.to_path_buf())
}

#[test]
fn the_shim_wasmedge_image_and_the_service_are_static_and_do_not_link_wasmedge() {
    for name in ["containerd-shim-wasmedge-v1", "wasmedge-image", "wasmedge-sandbox"] {
        let (bytes, path) = elf(&unpacked().join("bin").join(name));
        let elf = Elf::parse(&bytes).unwrap();
        assert_eq!(elf.interpreter, None, "{}: has an ELF interpreter", path.display());
        assert!(elf.libraries.is_empty(), "{}: needs {:?}", path.display(), elf.libraries);
        // Not even statically: no WasmEdge symbol and none of its C API's strings.
        let names: Vec<&str> = elf.syms.iter().chain(elf.dynsyms.iter()).filter_map(|s| elf.strtab.get_at(s.st_name)).collect();
        assert!(!names.iter().any(|n| n.contains("WasmEdge_")), "{}: has WasmEdge symbols", path.display());
        assert!(!bytes.windows(14).any(|w| w == b"WasmEdge_VMRun"), "{}: holds WasmEdge's C API", path.display());
        // `.debug_gdb_scripts` is rustc's loaded pointer to gdb's pretty printers, not debug info.
        let debug = elf.section_headers.iter().filter_map(|s| elf.shdr_strtab.get_at(s.sh_name)).find(|n| n.starts_with(".debug") && *n != ".debug_gdb_scripts");
        assert_eq!(debug, None, "{}: debug info", path.display());
    }
}

#[test]
fn every_library_the_runner_loads_is_in_the_tarball() {
    let root = unpacked();
    let (bytes, _) = elf(&root.join("bin").join(RUNNER));
    let runner = Elf::parse(&bytes).unwrap();
    assert_eq!(runner.interpreter, Some("/opt/containerd-shim-wasmedge/lib/ld-linux-x86-64.so.2"));
    assert_eq!(runner.rpaths, vec!["$ORIGIN/../lib"], "RPATH (not RUNPATH: it must apply to the libraries' own needs)");
    assert!(runner.runpaths.is_empty());
    assert!(runner.libraries.iter().any(|l| l.starts_with("libwasmedge.so")), "{:?}", runner.libraries);
    // The closure: what the runner needs, and what each of those needs, all in lib/.
    let lib = root.join("lib");
    let mut wanted: Vec<String> = runner.libraries.iter().map(|s| s.to_string()).collect();
    let mut seen = std::collections::BTreeSet::new();
    while let Some(name) = wanted.pop() {
        if !seen.insert(name.clone()) {
            continue;
        }
        let (bytes, path) = elf(&lib.join(&name));
        let so = Elf::parse(&bytes).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        wanted.extend(so.libraries.iter().map(|s| s.to_string()));
    }
    assert!(seen.contains("libc.so.6") && seen.iter().any(|l| l.starts_with("libLLVM")), "{seen:?}");
    assert!(lib.join("ld-linux-x86-64.so.2").is_file());
}

#[test]
fn every_binary_prints_its_version_commit_and_wasmedge_version() {
    let root = unpacked();
    let through_loader = |args: &[&str]| {
        let mut cmd = Command::new(root.join("lib/ld-linux-x86-64.so.2"));
        cmd.arg(root.join("bin").join(RUNNER)).args(args);
        cmd
    };
    let version = env!("CARGO_PKG_VERSION");
    for (name, mut cmd) in [
        ("containerd-shim-wasmedge-v1", Command::new(root.join("bin/containerd-shim-wasmedge-v1"))),
        ("wasmedge-image", Command::new(root.join("bin/wasmedge-image"))),
        (RUNNER, through_loader(&[])),
    ] {
        let out = exec_bounded(cmd.arg("--version"), None, Duration::from_secs(30));
        assert_eq!(out.code, 0, "{name} --version: {out:#?}");
        let lines: Vec<&str> = out.stdout.lines().collect();
        assert_eq!(lines[0], format!("{name} {version}"), "{out:#?}");
        let commit = lines[1].strip_prefix("commit: ").unwrap();
        assert!(commit.len() >= 7 && commit.chars().all(|c| c.is_ascii_hexdigit()), "{out:#?}");
        assert!(lines[2].starts_with("WasmEdge: 0.17."), "{out:#?}");
    }
    // The runner's WasmEdge is the library it loaded: the one in lib/, not the build root's.
    let out = exec_bounded(through_loader(&["--version"]).env("LD_DEBUG", "libs"), None, Duration::from_secs(30));
    let line = out.stderr.lines().find(|l| l.contains("calling init:") && l.contains("libwasmedge")).unwrap_or_else(|| panic!("{out:#?}"));
    let loaded = fs::canonicalize(line.rsplit("calling init: ").next().unwrap().trim()).unwrap();
    assert_eq!(loaded, fs::canonicalize(root.join("lib/libwasmedge.so.0")).unwrap(), "{line}");
}

#[test]
fn the_checksum_file_matches_the_tarball() {
    let tarball = dist_tarball();
    let sums = tarball.with_file_name(format!("{}.sha256", tarball.file_name().unwrap().to_string_lossy()));
    let out = exec_bounded(Command::new("sha256sum").arg("-c").arg(sums.file_name().unwrap()).current_dir(tarball.parent().unwrap()), None, Duration::from_secs(60));
    assert_eq!(out.code, 0, "{out:#?}");
    assert!(out.stdout.contains(": OK"), "{out:#?}");
}

#[test]
fn a_shim_without_its_runner_fails_each_container_with_one_line_naming_where_it_looked() {
    // The tarball's shim alone on containerd's PATH, as a half-done manual install leaves it.
    let dir = tempfile::tempdir().unwrap();
    fs::copy(unpacked().join("bin/containerd-shim-wasmedge-v1"), dir.path().join("containerd-shim-wasmedge-v1")).unwrap();
    let containerd = Containerd::start_in(config_toml, &[], dir.path());
    containerd.import(hello_image());
    let id = unique_id("norunner");
    let out = containerd.run_image(&id, HELLO_IMAGE, &[], &[], None);
    assert_ne!(out.code, 0, "{out:#?}");
    let want = format!("{RUNNER} not found at {}", dir.path().join(RUNNER).display());
    let lines: Vec<&str> = out.stderr.lines().collect();
    assert!(lines.len() == 1 && lines[0].contains(&want), "want one line with {want:?}: {out:#?}");
    let _ = containerd.ctr(&["container", "rm", &id]);
}
