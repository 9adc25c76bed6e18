//! The AOT cache: each module is compiled once to native code by WasmEdge's AOT compiler and
//! loaded from the cache on every later start. Entries are keyed by everything that makes
//! compiled code valid (module digest, WasmEdge version, CPU, compile options), written
//! atomically under a unique temporary name, and evicted oldest first past a size bound.
//!
//! An entry is universal wasm: the module with its native code in a custom section, which
//! WasmEdge loads from memory. So the container process reads its entry while it still sees the
//! host, and loads it only once it is confined, with no path to the cache left. Compiling is
//! [`compile`], which runs in the compile sandbox (`process::compile`), never in a container.
use super::depth;
use anyhow::{anyhow, Context, Result};
use nix::fcntl::{Flock, FlockArg};
use sha2::{Digest, Sha256};
use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
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
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Hit,
    Compiled,
}

impl AotCache {
    fn entry(&self, key: &str) -> PathBuf {
        self.dir.join(entry_name(key))
    }

    /// The compiled module stored under `key`, if any. Reading it touches it, so eviction keeps
    /// what is in use.
    pub fn lookup(&self, key: &str) -> Option<Vec<u8>> {
        let path = self.entry(key);
        let mut file = File::open(&path).ok()?;
        let _ = file.set_modified(SystemTime::now());
        let mut bytes = Vec::new();
        std::io::Read::read_to_end(&mut file, &mut bytes).ok()?;
        Some(bytes)
    }

    /// Holds the compile of `key` to one process at a time: the others wait, then find it
    /// stored. Released when the file is dropped.
    pub fn lock(&self, key: &str) -> Result<Flock<File>> {
        std::fs::create_dir_all(&self.dir).with_context(|| format!("creating {}", self.dir.display()))?;
        let path = self.dir.join(format!(".{key}.lock"));
        let file = File::options().create(true).truncate(false).write(true).open(&path).with_context(|| format!("opening {}", path.display()))?;
        Flock::lock(file, FlockArg::LockExclusive).map_err(|(_, e)| e).with_context(|| format!("locking {}", path.display()))
    }

    /// Stores `compiled` under `key`: written to a temporary file of a unique name, then renamed,
    /// so a reader never sees half an entry.
    pub fn store(&self, key: &str, compiled: &[u8]) -> Result<()> {
        let mut tmp = tempfile::Builder::new().prefix(".tmp-").tempfile_in(&self.dir).with_context(|| format!("creating a file in {}", self.dir.display()))?;
        tmp.write_all(compiled).context("writing the compiled module")?;
        // Readable by a container process of any user, which reads its entry once confined.
        std::fs::set_permissions(tmp.path(), std::os::unix::fs::PermissionsExt::from_mode(0o644))?;
        let path = self.entry(key);
        tmp.persist(&path).map_err(|e| e.error).with_context(|| format!("storing {}", path.display()))?;
        self.evict();
        Ok(())
    }

    /// Removes the least recently used entries until the cache fits its bound.
    fn evict(&self) {
        let Ok(entries) = std::fs::read_dir(&self.dir) else { return };
        let mut files: Vec<(SystemTime, u64, PathBuf)> = entries
            .flatten()
            .filter(|e| !e.file_name().to_string_lossy().starts_with('.'))
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

/// The file name of the entry of `key` in the cache directory.
pub fn entry_name(key: &str) -> String {
    format!("{key}.wasm")
}

/// Compiles `module` (its call depth bounded first) to universal wasm, using `scratch` for
/// WasmEdge's output file. This parses the module: it runs in the compile sandbox only.
pub fn compile(module: &[u8], scratch: &Path) -> Result<Vec<u8>> {
    let compiler = wasmedge_sdk::Compiler::new(Some(&compiler_config()?)).map_err(|e| anyhow!("{e}"))?;
    let out = compiler
        .compile_from_bytes(depth::bound(module)?, "module", scratch)
        .map_err(|e| anyhow!("{e}"))
        .context("AOT compile")?;
    std::fs::read(&out).with_context(|| format!("reading {}", out.display()))
}

fn compiler_config() -> Result<Config> {
    // Universal wasm loads from memory (see the module's doc); time limits are enforced outside
    // the engine, so the code needs no interruption checks and runs at full speed.
    let options = CompilerConfigOptions::new()
        .out_format(CompilerOutputFormat::Wasm)
        .optimization_level(CompilerOptimizationLevel::O2);
    ConfigBuilder::default().with_compiler_config(options).build().map_err(|e| anyhow!("{e}"))
}

/// Compiled code is only valid for this module, this WasmEdge, this CPU, these options and this
/// rewrite (call-depth bound, memory-refusal flag).
/// `cpu` is [`cpu_identity`], read while /proc is there.
pub fn cache_key(module: &[u8], cpu: &str) -> String {
    let mut h = Sha256::new();
    h.update(module);
    h.update(wasmedge_sdk::utils::CoreVersion::version_string());
    h.update(cpu);
    h.update(b"universal O2");
    h.update(format!("call depth {}, memory refusals flagged", depth::MAX_DEPTH));
    h.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

/// The CPU model and feature flags, which native code is compiled for.
pub fn cpu_identity() -> String {
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
        assert_ne!(cache_key(b"\0asm\x01\0\0\0", "cpu"), cache_key(b"\0asm\x01\0\0\0\0", "cpu"));
        assert_eq!(cache_key(b"abc", "cpu"), cache_key(b"abc", "cpu"));
        assert_ne!(cache_key(b"abc", "cpu"), cache_key(b"abc", "another cpu"));
    }

    #[test]
    fn a_stored_entry_is_found_and_readable_by_any_user() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let cache = AotCache { dir: dir.path().join("aot"), max_bytes: 1 << 20 };
        assert!(cache.lookup("k").is_none());
        let _lock = cache.lock("k").unwrap();
        cache.store("k", b"\0asm compiled").unwrap();
        assert_eq!(cache.lookup("k").as_deref(), Some(&b"\0asm compiled"[..]));
        let mode = std::fs::metadata(dir.path().join("aot/k.wasm")).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o644);
    }

    #[test]
    fn eviction_keeps_the_newest_within_the_bound() {
        let dir = tempfile::tempdir().unwrap();
        for (i, name) in ["old.wasm", "mid.wasm", "new.wasm"].iter().enumerate() {
            let path = dir.path().join(name);
            std::fs::write(&path, vec![0u8; 100]).unwrap();
            let at = SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1000 + i as u64);
            std::fs::File::options().write(true).open(&path).unwrap().set_modified(at).unwrap();
        }
        AotCache { dir: dir.path().into(), max_bytes: 200 }.evict();
        let mut left: Vec<String> =
            std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
        left.sort();
        assert_eq!(left, vec!["mid.wasm", "new.wasm"]);
    }
}
