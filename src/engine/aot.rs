//! The AOT cache: each module is compiled once to native code by WasmEdge's AOT compiler and
//! loaded from the cache on every later start. Entries are keyed by everything that makes
//! compiled code valid (module digest, WasmEdge version, CPU, compile options), written
//! atomically (concurrent starts of one module are fine), and evicted oldest first past a size
//! bound.
use super::{depth, DEFAULT_AOT_DIR, DEFAULT_AOT_MAX_BYTES, PRECOMPILE_ARG};
use anyhow::{anyhow, Context, Result};
use sha2::{Digest, Sha256};
use std::path::PathBuf;
use std::time::SystemTime;
use wasmedge_sdk::{
    config::{CompilerConfigOptions, Config, ConfigBuilder},
    CompilerOutputFormat, CompilerOptimizationLevel,
};

pub struct AotCache {
    pub dir: PathBuf,
    pub max_bytes: u64,
}

/// How a module was made ready to run; reported to the shim's log.
#[derive(Debug, PartialEq, Eq)]
pub enum Outcome {
    Hit,
    Compiled,
}

impl AotCache {
    /// Returns the path of the compiled module, compiling it (with its call depth bounded) on a
    /// miss: a hit costs no re-encoding of the module.
    pub fn get(&self, module: &[u8]) -> Result<(PathBuf, Outcome)> {
        let path = self.dir.join(format!("{}.so", cache_key(module)));
        if path.exists() {
            // Touch it, so eviction keeps what is in use.
            let _ = std::fs::File::open(&path).and_then(|f| f.set_modified(SystemTime::now()));
            return Ok((path, Outcome::Hit));
        }
        std::fs::create_dir_all(&self.dir).with_context(|| format!("creating {}", self.dir.display()))?;
        let tmp_name = format!(".tmp-{}-{}", std::process::id(), path.file_stem().unwrap().to_string_lossy());
        let compiler = wasmedge_sdk::Compiler::new(Some(&compiler_config()?)).map_err(|e| anyhow!("{e}"))?;
        let tmp = compiler
            .compile_from_bytes(depth::bound(module)?, &tmp_name, &self.dir)
            .map_err(|e| anyhow!("{e}"))
            .context("AOT compile")?;
        std::fs::rename(&tmp, &path).with_context(|| format!("storing {}", path.display()))?;
        self.evict();
        Ok((path, Outcome::Compiled))
    }

    /// Removes the least recently used entries until the cache fits its bound.
    fn evict(&self) {
        let Ok(entries) = std::fs::read_dir(&self.dir) else { return };
        let mut files: Vec<(SystemTime, u64, PathBuf)> = entries
            .flatten()
            .filter_map(|e| {
                let meta = e.metadata().ok()?;
                Some((meta.modified().ok()?, meta.len(), e.path()))
            })
            .collect();
        let mut total: u64 = files.iter().map(|f| f.1).sum();
        files.sort();
        for (_, len, path) in files {
            if total <= self.max_bytes {
                break;
            }
            if std::fs::remove_file(&path).is_ok() {
                total -= len;
            }
        }
    }
}

/// `precompile`'s main: compiles each module into the cache (the shim's default one, or
/// `--aot-dir`), one line per module; exits 1 if any fails.
pub fn precompile_main(args: &[String]) -> ! {
    let (dir, modules) = match args {
        [flag, dir, rest @ ..] if flag == "--aot-dir" => (PathBuf::from(dir), rest),
        rest => (PathBuf::from(DEFAULT_AOT_DIR), rest),
    };
    if modules.is_empty() {
        eprintln!("usage: {PRECOMPILE_ARG} [--aot-dir DIR] MODULE...");
        std::process::exit(2);
    }
    let cache = AotCache { dir, max_bytes: DEFAULT_AOT_MAX_BYTES };
    super::vm::quiet_wasmedge_log();
    let mut failed = false;
    for module in modules {
        let start = std::time::Instant::now();
        let compiled = std::fs::read(module).with_context(|| format!("reading {module}")).and_then(|bytes| cache.get(&bytes));
        match compiled {
            Ok((path, outcome)) => println!("{module}: {outcome:?} in {:.0?}: {}", start.elapsed(), path.display()),
            Err(e) => {
                eprintln!("{module}: {e:#}");
                failed = true;
            }
        }
    }
    std::process::exit(i32::from(failed))
}

fn compiler_config() -> Result<Config> {
    // Native shared objects load fastest; time limits are enforced outside the engine, so the
    // code needs no interruption checks and runs at full speed.
    let options = CompilerConfigOptions::new()
        .out_format(CompilerOutputFormat::Native)
        .optimization_level(CompilerOptimizationLevel::O2);
    ConfigBuilder::default().with_compiler_config(options).build().map_err(|e| anyhow!("{e}"))
}

/// Compiled code is only valid for this module, this WasmEdge, this CPU, these options and this
/// call-depth bound.
fn cache_key(module: &[u8]) -> String {
    let mut h = Sha256::new();
    h.update(module);
    h.update(wasmedge_sdk::utils::CoreVersion::version_string());
    h.update(cpu_identity());
    h.update(b"native O2");
    h.update(format!("call depth {}", depth::MAX_DEPTH));
    h.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

/// The CPU model and feature flags, which native code is compiled for.
fn cpu_identity() -> String {
    let info = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    info.lines()
        .filter(|l| l.starts_with("model name") || l.starts_with("flags"))
        .take(2)
        .collect::<Vec<_>>()
        .join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_depends_on_the_module() {
        assert_ne!(cache_key(b"\0asm\x01\0\0\0"), cache_key(b"\0asm\x01\0\0\0\0"));
        assert_eq!(cache_key(b"abc"), cache_key(b"abc"));
    }

    #[test]
    fn eviction_keeps_the_newest_within_the_bound() {
        let dir = tempfile::tempdir().unwrap();
        for (i, name) in ["old.so", "mid.so", "new.so"].iter().enumerate() {
            let path = dir.path().join(name);
            std::fs::write(&path, vec![0u8; 100]).unwrap();
            let at = SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1000 + i as u64);
            std::fs::File::options().write(true).open(&path).unwrap().set_modified(at).unwrap();
        }
        AotCache { dir: dir.path().into(), max_bytes: 200 }.evict();
        let mut left: Vec<String> =
            std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
        left.sort();
        assert_eq!(left, vec!["mid.so", "new.so"]);
    }
}
