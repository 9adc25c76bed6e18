//! The compile cache: one directory per key (the sha256 of sources + language + toolchain
//! version + options) holding what compiling gave. Entries are written to a temporary directory
//! and renamed into place, so a reader never sees half of one; a hit touches the entry. An entry
//! unused for longer than the TTL is a miss and goes at the next store or prune, and past the
//! size bound the least recently used entries go first.

use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

use super::Compiled;
use containerd_shim_wasmedge::image::writer::LayerFile;

/// Default bound of the cache: 2 GiB.
pub const DEFAULT_MAX_BYTES: u64 = 2 << 30;
/// Default time an entry is kept after its last use: an hour.
pub const DEFAULT_TTL: Duration = Duration::from_secs(3600);

pub struct Cache {
    dir: PathBuf,
    max_bytes: u64,
    ttl: Duration,
}

/// An entry as `cache ls` shows it.
pub struct EntryInfo {
    pub key: String,
    pub bytes: u64,
    pub last_use: SystemTime,
    pub entrypoint: Vec<String>,
}

#[derive(Serialize, Deserialize)]
struct Entry {
    entrypoint: Vec<String>,
    env: Vec<String>,
    /// Each file is stored as `files/<index>`.
    files: Vec<EntryFile>,
}

#[derive(Serialize, Deserialize)]
struct EntryFile {
    path: String,
    mode: u32,
}

impl Cache {
    pub fn new(dir: &Path, max_bytes: u64, ttl: Duration) -> Cache {
        let max_bytes = if max_bytes == 0 { DEFAULT_MAX_BYTES } else { max_bytes };
        Cache { dir: dir.to_path_buf(), max_bytes, ttl }
    }

    fn expired(&self, last_use: SystemTime) -> bool {
        SystemTime::now().duration_since(last_use).is_ok_and(|age| age > self.ttl)
    }

    fn entry_dir(&self, key: &str) -> PathBuf {
        self.dir.join(key)
    }

    /// The compile stored under `key`, if any. A damaged or expired entry is a miss, and so is
    /// one with a link in it: an entry the build sandbox wrote is read this way too.
    pub fn get(&self, key: &str) -> Result<Option<Compiled>> {
        let dir = self.entry_dir(key);
        let is_dir = |d: &Path| fs::symlink_metadata(d).is_ok_and(|m| m.is_dir());
        if !is_dir(&dir) || !is_dir(&dir.join("files")) {
            return Ok(None);
        }
        let used = fs::metadata(dir.join("entry.json")).and_then(|m| m.modified());
        if used.is_ok_and(|t| self.expired(t)) {
            return Ok(None);
        }
        let Ok(meta) = read_regular(&dir.join("entry.json")) else { return Ok(None) };
        let Ok(entry) = serde_json::from_slice::<Entry>(&meta) else { return Ok(None) };
        let mut files = Vec::new();
        for (i, f) in entry.files.iter().enumerate() {
            let Ok(data) = read_regular(&dir.join("files").join(i.to_string())) else { return Ok(None) };
            files.push(LayerFile { path: f.path.clone(), data, mode: f.mode });
        }
        // Touch it: eviction keeps what is in use.
        let _ = fs::File::open(dir.join("entry.json")).and_then(|f| f.set_modified(SystemTime::now()));
        Ok(Some(Compiled { files, entrypoint: entry.entrypoint, env: entry.env }))
    }

    /// Stores `compiled` under `key` (replacing an entry), then evicts past the bound.
    pub fn put(&self, key: &str, compiled: &Compiled) -> Result<()> {
        fs::create_dir_all(&self.dir).with_context(|| format!("creating {}", self.dir.display()))?;
        let tmp = tempfile::Builder::new().prefix(".tmp-").tempdir_in(&self.dir)?;
        fs::create_dir(tmp.path().join("files"))?;
        for (i, f) in compiled.files.iter().enumerate() {
            fs::write(tmp.path().join("files").join(i.to_string()), &f.data)?;
        }
        let entry = Entry {
            entrypoint: compiled.entrypoint.clone(),
            env: compiled.env.clone(),
            files: compiled.files.iter().map(|f| EntryFile { path: f.path.clone(), mode: f.mode }).collect(),
        };
        fs::write(tmp.path().join("entry.json"), serde_json::to_vec_pretty(&entry)?)?;
        let dir = self.entry_dir(key);
        let _ = fs::remove_dir_all(&dir);
        let tmp = tmp.keep();
        if let Err(e) = fs::rename(&tmp, &dir) {
            let _ = fs::remove_dir_all(&tmp);
            // Another build stored the same key first: theirs is as good as ours.
            if !dir.join("entry.json").exists() {
                return Err(e).with_context(|| format!("storing {}", dir.display()));
            }
        }
        self.evict();
        Ok(())
    }

    /// Total size of the entries in bytes.
    #[cfg(test)]
    pub fn size(&self) -> u64 {
        self.entries().iter().map(|e| e.1).sum()
    }

    /// (last use, bytes, dir) of each entry.
    fn entries(&self) -> Vec<(SystemTime, u64, PathBuf)> {
        let Ok(dirs) = fs::read_dir(&self.dir) else { return vec![] };
        dirs.flatten()
            .filter(|e| !e.file_name().to_string_lossy().starts_with('.'))
            .filter_map(|e| {
                let used = fs::metadata(e.path().join("entry.json")).ok()?.modified().ok()?;
                Some((used, dir_size(&e.path()), e.path()))
            })
            .collect()
    }

    /// Removes the expired entries, then the least recently used ones until the cache fits its
    /// bound; `all` removes every entry. Returns how many entries and bytes went.
    pub fn evict_all(&self, all: bool) -> (usize, u64) {
        let mut entries = self.entries();
        let mut total: u64 = entries.iter().map(|e| e.1).sum();
        entries.sort();
        let (mut count, mut freed) = (0, 0);
        for (used, size, dir) in entries {
            if !all && !self.expired(used) && total <= self.max_bytes {
                continue;
            }
            if fs::remove_dir_all(&dir).is_ok() {
                total -= size;
                count += 1;
                freed += size;
            }
        }
        (count, freed)
    }

    /// [`Cache::evict_all`] of what is expired or past the bound.
    pub fn evict(&self) -> (usize, u64) {
        self.evict_all(false)
    }

    /// Every entry, most recently used first.
    pub fn list(&self) -> Vec<EntryInfo> {
        let mut list: Vec<EntryInfo> = self
            .entries()
            .into_iter()
            .map(|(last_use, bytes, dir)| {
                let entry = fs::read(dir.join("entry.json")).ok().and_then(|m| serde_json::from_slice::<Entry>(&m).ok());
                EntryInfo {
                    key: dir.file_name().unwrap_or_default().to_string_lossy().into_owned(),
                    bytes,
                    last_use,
                    entrypoint: entry.map(|e| e.entrypoint).unwrap_or_default(),
                }
            })
            .collect();
        list.sort_by_key(|e| std::cmp::Reverse(e.last_use));
        list
    }
}

fn dir_size(dir: &Path) -> u64 {
    let Ok(entries) = fs::read_dir(dir) else { return 0 };
    entries
        .flatten()
        .map(|e| match e.metadata() {
            Ok(m) if m.is_dir() => dir_size(&e.path()),
            Ok(m) => m.len(),
            Err(_) => 0,
        })
        .sum()
}

/// A regular file's bytes, not followed through a link (nor waiting on a FIFO).
fn read_regular(path: &Path) -> std::io::Result<Vec<u8>> {
    use std::io::Read;
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = fs::OpenOptions::new().read(true).custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK).open(path)?;
    if !file.metadata()?.is_file() {
        return Err(std::io::Error::other("not a regular file"));
    }
    let mut data = Vec::new();
    file.read_to_end(&mut data)?;
    Ok(data)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn compiled(n: usize) -> Compiled {
        Compiled {
            files: vec![LayerFile { path: "/app.wasm".into(), data: vec![7; n], mode: 0o755 }],
            entrypoint: vec!["/app.wasm".into()],
            env: vec!["A=1".into()],
        }
    }

    #[test]
    fn stored_entries_come_back() {
        let dir = tempfile::tempdir().unwrap();
        let cache = Cache::new(dir.path(), 0, DEFAULT_TTL);
        assert_eq!(cache.get("k").unwrap(), None);
        cache.put("k", &compiled(10)).unwrap();
        assert_eq!(cache.get("k").unwrap(), Some(compiled(10)));
        cache.put("k", &compiled(3)).unwrap();
        assert_eq!(cache.get("k").unwrap(), Some(compiled(3)));
        fs::remove_file(dir.path().join("k/files/0")).unwrap();
        assert_eq!(cache.get("k").unwrap(), None, "a damaged entry is a miss");
    }

    #[test]
    fn least_recently_used_entries_go_past_the_bound() {
        let dir = tempfile::tempdir().unwrap();
        let roomy = Cache::new(dir.path(), 1 << 30, Duration::MAX);
        for (i, key) in ["a", "b", "c"].iter().enumerate() {
            roomy.put(key, &compiled(1000)).unwrap();
            let t = SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1000 + i as u64);
            fs::File::open(dir.path().join(key).join("entry.json")).unwrap().set_modified(t).unwrap();
        }
        // a is used again: b is now the oldest.
        assert!(roomy.get("a").unwrap().is_some());
        let cache = Cache::new(dir.path(), 2500, Duration::MAX);
        assert_eq!(cache.evict().0, 1);
        assert!(cache.get("b").unwrap().is_none());
        assert!(cache.get("a").unwrap().is_some() && cache.get("c").unwrap().is_some());
        assert!(cache.size() <= 2500);
    }

    #[test]
    fn entries_unused_past_the_ttl_expire() {
        let dir = tempfile::tempdir().unwrap();
        let cache = Cache::new(dir.path(), 0, Duration::from_secs(60));
        cache.put("old", &compiled(10)).unwrap();
        cache.put("new", &compiled(10)).unwrap();
        let two_minutes_ago = SystemTime::now() - Duration::from_secs(120);
        fs::File::open(dir.path().join("old/entry.json")).unwrap().set_modified(two_minutes_ago).unwrap();
        assert_eq!(cache.get("old").unwrap(), None, "an expired entry is a miss");
        assert!(cache.get("new").unwrap().is_some());
        let keys: Vec<String> = cache.list().into_iter().map(|e| e.key).collect();
        assert_eq!(keys, ["new", "old"]);
        assert_eq!(cache.evict(), (1, 10 + fs::metadata(dir.path().join("new/entry.json")).unwrap().len()));
        assert_eq!(cache.list().len(), 1);
        assert_eq!(cache.evict_all(true).0, 1);
        assert!(cache.list().is_empty());
    }
}
