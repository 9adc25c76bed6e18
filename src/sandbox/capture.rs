//! A container's stdout or stderr: a FIFO the shim writes, read here up to a bound. Past the
//! bound the rest is read and dropped (so the program never blocks on a full pipe) and the
//! capture says it was truncated.
use anyhow::{Context, Result};
use std::path::{Path, PathBuf};
use tokio::io::AsyncReadExt;
use tokio::sync::oneshot;

/// What one stream gave.
#[derive(Debug, Default)]
pub struct Captured {
    pub data: Vec<u8>,
    pub truncated: bool,
}

/// A FIFO being read; [`Capture::finish`] once its writers are gone (the task deleted).
pub struct Capture {
    pub path: PathBuf,
    done: oneshot::Sender<()>,
    reader: tokio::task::JoinHandle<Captured>,
}

impl Capture {
    /// Makes the FIFO `path` and starts reading it. The read end is opened read-write: a FIFO
    /// whose writer has not come yet would otherwise read as EOF, and the shim's write end
    /// needs a reader present when it opens.
    pub fn start(path: &Path, bound: usize) -> Result<Capture> {
        nix::unistd::mkfifo(path, nix::sys::stat::Mode::from_bits_truncate(0o600))
            .with_context(|| format!("creating FIFO {}", path.display()))?;
        let mut pipe = tokio::net::unix::pipe::OpenOptions::new()
            .read_write(true)
            .open_receiver(path)
            .with_context(|| format!("opening FIFO {}", path.display()))?;
        let (done, mut finished) = oneshot::channel::<()>();
        let reader = tokio::spawn(async move {
            let mut out = Captured::default();
            let mut buf = vec![0u8; 64 << 10];
            let mut draining = false;
            loop {
                let n = if draining {
                    // The writers are gone: what is still in the pipe, read from the
                    // (non-blocking) fd itself, whatever readiness the runtime has seen.
                    match nix::unistd::read(&pipe, &mut buf) {
                        Ok(n) => n,
                        Err(_) => break,
                    }
                } else {
                    tokio::select! {
                        read = pipe.read(&mut buf) => match read { Ok(n) => n, Err(_) => break },
                        _ = &mut finished => { draining = true; continue }
                    }
                };
                if n == 0 {
                    break;
                }
                let room = bound.saturating_sub(out.data.len());
                out.data.extend_from_slice(&buf[..n.min(room)]);
                out.truncated |= n > room;
            }
            out
        });
        Ok(Capture { path: path.to_path_buf(), done, reader })
    }

    pub fn path_str(&self) -> &str {
        self.path.to_str().unwrap_or_default()
    }

    /// What was read, after the writers are gone.
    pub async fn finish(self) -> Captured {
        let _ = self.done.send(());
        self.reader.await.unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[tokio::test]
    async fn output_past_the_bound_is_dropped_and_marked() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out");
        let capture = Capture::start(&path, 10).unwrap();
        let mut writer = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
        writer.write_all(b"0123456789abcdef").unwrap();
        drop(writer);
        let got = capture.finish().await;
        assert_eq!(got.data, b"0123456789");
        assert!(got.truncated);
    }

    #[tokio::test]
    async fn output_within_the_bound_is_whole() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out");
        let capture = Capture::start(&path, 100).unwrap();
        std::fs::OpenOptions::new().write(true).open(&path).unwrap().write_all(b"hello\n").unwrap();
        let got = capture.finish().await;
        assert_eq!(got.data, b"hello\n");
        assert!(!got.truncated);
    }
}
