//! C and C++ → wasm32-wasi with Debian's clang, lld, wasi-libc, compiler-rt and libc++ for WASI.
//!
//! All sources are compiled and linked by one clang call, run in the source directory so the
//! diagnostics name files as the user knows them. The target is spelled `wasm32-wasi`: Debian's
//! compiler-rt for wasm lives under that name. C++ is built without exceptions (Debian's libc++
//! for WASI has none), threads or `<filesystem>`.

use std::fs;
use std::path::Path;
use std::process::Command;

use anyhow::{bail, Result};

use super::util::{run_tool, stdout_of, which};
use super::{ext_of, module_at_app_wasm, Compiled, Lang, Source, Toolchain};

pub const TARGET: &str = "--target=wasm32-wasi";
const C_EXTS: &[&str] = &["c"];
const CPP_EXTS: &[&str] = &["cc", "cpp", "cxx", "c++", "C"];

fn compiler(lang: Lang) -> &'static str {
    if lang == Lang::Cpp {
        "clang++"
    } else {
        "clang"
    }
}

/// The compiler's version plus the WASI sysroot it links with, after checking they are there.
pub fn toolchain(lang: Lang) -> Result<Toolchain> {
    let cc = compiler(lang);
    let hint = "run `wasmedge-image toolchains c` (clang, lld, wasi-libc, libclang-rt-dev-wasm32, libc++-dev-wasm32)";
    if which(cc).is_none() {
        bail!("{cc} is not on PATH: {hint}");
    }
    if which("wasm-ld").is_none() {
        bail!("wasm-ld (lld) is not on PATH: {hint}");
    }
    let mut needed = vec!["libc.a".to_string()];
    if lang == Lang::Cpp {
        needed.extend(["libc++.a".to_string(), "libc++abi.a".to_string()]);
    }
    let mut version = stdout_of(Command::new(cc).arg("--version"))?;
    for lib in needed {
        let found = stdout_of(Command::new(cc).args([TARGET, &format!("-print-file-name={lib}")]))?;
        let Ok(meta) = fs::metadata(&found) else { bail!("{lib} for WASI is missing: {hint}") };
        version.push_str(&format!("\n{found} {}", meta.len()));
    }
    let rt = stdout_of(Command::new(cc).args([TARGET, "-print-libgcc-file-name"]))?;
    if !Path::new(&rt).exists() {
        bail!("compiler-rt for wasm32 ({rt}) is missing: {hint}");
    }
    Ok(Toolchain { version, base_layers: vec![] })
}

pub fn compile(lang: Lang, src: &Source, args: &[String], work: &Path) -> Result<Compiled> {
    let out = work.join("app.wasm");
    let dir = src.dir();
    let files: Vec<String> = src
        .files()?
        .into_iter()
        .map(|(rel, _)| rel)
        .filter(|rel| C_EXTS.contains(&ext_of(rel)) || (lang == Lang::Cpp && CPP_EXTS.contains(&ext_of(rel))))
        .collect();
    if files.is_empty() {
        bail!("no {lang} sources in {}", src.path.display());
    }
    let mut cmd = Command::new(compiler(lang));
    cmd.args([TARGET, "-O2", "-Wl,--strip-debug"]).current_dir(dir);
    if lang == Lang::Cpp {
        cmd.arg("-fno-exceptions");
    }
    cmd.arg("-I.");
    if dir.join("include").is_dir() {
        cmd.arg("-Iinclude");
    }
    cmd.arg("-o").arg(&out).args(args);
    // clang++ would compile .c files as C++: say which are C.
    let (c, cpp): (Vec<_>, Vec<_>) = files.iter().partition(|f| C_EXTS.contains(&ext_of(f)));
    if lang == Lang::Cpp && !c.is_empty() {
        cmd.args(["-x", "c"]).args(&c).args(["-x", "none"]);
    } else {
        cmd.args(&c);
    }
    cmd.args(&cpp);
    run_tool(&mut cmd, compiler(lang))?;
    Ok(module_at_app_wasm(fs::read(&out)?))
}
