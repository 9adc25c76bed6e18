//! Small helpers of the build helper: progress lines, hashing, walking sources, running tools.

use std::fs;
use std::io::Write;
use std::os::fd::AsFd;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use anyhow::{bail, Context, Result};
use sha2::{Digest, Sha256};

use super::IGNORED_DIRS;

/// A progress line on stderr: `wasmedge-image: MSG`.
pub fn progress(msg: &str) {
    let mut err = std::io::stderr().lock();
    let _ = writeln!(err, "wasmedge-image: {msg}");
}

/// sha256 over length-prefixed fields, so `("ab", "c")` and `("a", "bc")` differ.
pub struct Hasher(Sha256);

impl Hasher {
    pub fn new(domain: &str) -> Hasher {
        let mut h = Hasher(Sha256::new());
        h.field(domain);
        h
    }

    pub fn bytes(&mut self, data: &[u8]) {
        self.0.update((data.len() as u64).to_le_bytes());
        self.0.update(data);
    }

    pub fn field(&mut self, s: &str) {
        self.bytes(s.as_bytes());
    }

    pub fn hex(self) -> String {
        format!("{:x}", self.0.finalize())
    }
}

/// Bounds of what a walk takes in: a source is code and its data, not a disk image.
pub struct Limits {
    pub file_bytes: u64,
    pub total_bytes: u64,
}

/// The bounds of sources: 64 MiB a file, 256 MiB in all.
pub const SOURCE_LIMITS: Limits = Limits { file_bytes: 64 << 20, total_bytes: 256 << 20 };

/// Every regular file under `dir` as (relative path with `/`, full path), sorted, skipping
/// [`IGNORED_DIRS`], within [`SOURCE_LIMITS`]. See [`walk_bounded`].
pub fn walk(dir: &Path) -> Result<Vec<(String, PathBuf)>> {
    walk_bounded(dir, &SOURCE_LIMITS)
}

/// Every regular file under `dir`, sorted, skipping [`IGNORED_DIRS`]. Sources stay sources: a
/// symbolic link is taken only when it resolves inside `dir` (a file; links to directories are
/// skipped, they would only repeat the tree); one that leaves `dir` or leads nowhere, a fifo,
/// a socket or a device is an error naming it, and so is a file or a total past `limits`.
pub fn walk_bounded(dir: &Path, limits: &Limits) -> Result<Vec<(String, PathBuf)>> {
    let root = fs::canonicalize(dir).with_context(|| format!("reading {}", dir.display()))?;
    let mut walk = Walk { root, limits, total: 0, out: Vec::new() };
    walk.dir(dir, "")?;
    walk.out.sort();
    Ok(walk.out)
}

struct Walk<'a> {
    root: PathBuf,
    limits: &'a Limits,
    total: u64,
    out: Vec<(String, PathBuf)>,
}

impl Walk<'_> {
    fn dir(&mut self, dir: &Path, prefix: &str) -> Result<()> {
        for entry in fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))? {
            let entry = entry?;
            let name = entry.file_name().to_string_lossy().into_owned();
            let path = entry.path();
            let rel = if prefix.is_empty() { name.clone() } else { format!("{prefix}/{name}") };
            let kind = entry.file_type().with_context(|| format!("reading {}", path.display()))?;
            if kind.is_dir() {
                if !IGNORED_DIRS.contains(&name.as_str()) {
                    self.dir(&path, &rel)?;
                }
            } else if kind.is_symlink() {
                let target = fs::read_link(&path).unwrap_or_default();
                let resolved = fs::canonicalize(&path).ok().filter(|t| t.starts_with(&self.root));
                let Some(resolved) = resolved else {
                    bail!(
                        "{}: a symbolic link to {}, which is not inside the source directory; sources must stay inside it",
                        path.display(),
                        target.display()
                    );
                };
                if resolved.is_file() {
                    self.file(rel, path)?;
                }
            } else if kind.is_file() {
                self.file(rel, path)?;
            } else {
                bail!("{}: a {} is not a source file", path.display(), special_kind(&kind));
            }
        }
        Ok(())
    }

    fn file(&mut self, rel: String, path: PathBuf) -> Result<()> {
        let size = fs::metadata(&path).with_context(|| format!("reading {}", path.display()))?.len();
        let mib = |b: u64| b >> 20;
        if size > self.limits.file_bytes {
            bail!("{}: {} MiB, over the bound of {} MiB a source file", path.display(), mib(size), mib(self.limits.file_bytes));
        }
        self.total += size;
        if self.total > self.limits.total_bytes {
            bail!(
                "{}: the sources pass the bound of {} MiB in all (at {})",
                self.root.display(),
                mib(self.limits.total_bytes),
                path.display()
            );
        }
        self.out.push((rel, path));
        Ok(())
    }
}

fn special_kind(kind: &fs::FileType) -> &'static str {
    use std::os::unix::fs::FileTypeExt;
    if kind.is_fifo() {
        "fifo"
    } else if kind.is_socket() {
        "socket"
    } else if kind.is_block_device() || kind.is_char_device() {
        "device"
    } else {
        "special file"
    }
}

pub fn mode(path: &Path) -> Result<u32> {
    Ok(fs::metadata(path).with_context(|| format!("reading {}", path.display()))?.permissions().mode())
}

/// Our stderr, to give a child as its stdout: a tool's chatter must not mix into our stdout,
/// which `run` keeps for the module's output.
pub fn stderr_as_stdio() -> Stdio {
    match std::io::stderr().as_fd().try_clone_to_owned() {
        Ok(fd) => Stdio::from(fd),
        Err(_) => Stdio::inherit(),
    }
}

/// Runs a compiler: its diagnostics reach our stderr unchanged (its stdout too, moved to
/// stderr); a non-zero exit is an error naming the tool.
pub fn run_tool(cmd: &mut Command, what: &str) -> Result<()> {
    let status = cmd
        .stdin(Stdio::null())
        .stdout(stderr_as_stdio())
        .stderr(Stdio::inherit())
        .status()
        .with_context(|| format!("cannot run {:?} ({what})", cmd.get_program()))?;
    if !status.success() {
        bail!("{what} failed ({status})");
    }
    Ok(())
}

/// Runs a command for its stdout (e.g. a `--version`); stderr is kept for the error.
pub fn output(cmd: &mut Command) -> Result<Output> {
    cmd.stdin(Stdio::null())
        .output()
        .with_context(|| format!("cannot run {:?}", cmd.get_program()))
}

/// The trimmed stdout of a command that must succeed.
pub fn stdout_of(cmd: &mut Command) -> Result<String> {
    let out = output(cmd)?;
    if !out.status.success() {
        bail!(
            "{:?} failed ({}): {}",
            cmd.get_program(),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// Is `program` on PATH (or a path that exists)?
pub fn which(program: &str) -> Option<PathBuf> {
    if program.contains('/') {
        return Path::new(program).exists().then(|| PathBuf::from(program));
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path).map(|d| d.join(program)).find(|p| {
        fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
    })
}

/// An exclusive lock on `path` (created if need be) until the guard is dropped: first-use
/// preparation of a toolchain runs once even when several builds start together.
pub struct Lock(#[allow(dead_code)] nix::fcntl::Flock<fs::File>);

pub fn lock(path: &Path) -> Result<Lock> {
    if let Some(dir) = path.parent() {
        fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let file = fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path)
        .with_context(|| format!("opening {}", path.display()))?;
    let lock = nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockExclusive)
        .map_err(|(_, e)| e)
        .with_context(|| format!("locking {}", path.display()))?;
    Ok(Lock(lock))
}

/// Writes `data` to `path` through a temporary file and a rename, so readers never see half.
pub fn write_atomic(path: &Path, data: &[u8]) -> Result<()> {
    let dir = path.parent().context("no parent directory")?;
    fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let mut tmp = tempfile::NamedTempFile::new_in(dir)?;
    tmp.write_all(data)?;
    tmp.as_file().sync_all()?;
    tmp.persist(path).with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}

