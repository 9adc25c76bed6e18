//! The container's stdin/stdout/stderr: containerd's FIFOs (or files), opened by the shim at
//! create time and handed to the container process as fds 0, 1 and 2.
use anyhow::{Context, Result};
use nix::fcntl::{fcntl, FcntlArg, OFlag};
use std::fs::{File, OpenOptions};
use std::os::unix::fs::OpenOptionsExt;

pub struct Stdio {
    pub stdin: File,
    pub stdout: File,
    pub stderr: File,
}

impl Stdio {
    pub fn open(stdin: &str, stdout: &str, stderr: &str) -> Result<Stdio> {
        Ok(Stdio {
            stdin: open_end(stdin, false).context("opening stdin")?,
            stdout: open_end(stdout, true).context("opening stdout")?,
            stderr: open_end(stderr, true).context("opening stderr")?,
        })
    }
}

/// How long the write end of a FIFO waits for its reader: containerd (and ctr, and CRI) open
/// their read ends asynchronously, so one may come a moment after the request that names it.
const READER_WAIT: std::time::Duration = std::time::Duration::from_secs(10);

/// Opens one end without blocking on a FIFO whose other side is not there yet, then makes it
/// blocking again, because the module does plain blocking reads and writes. An empty path is
/// /dev/null. A `file://` URI (`ctr run --log-uri file://…`) is a log file, created if need be;
/// `binary://` is for other shims' log drivers.
fn open_end(path: &str, write: bool) -> Result<File> {
    let (path, log_file) = match path.strip_prefix("file://") {
        Some(file) => (file, write),
        None if path.is_empty() => ("/dev/null", false),
        None => (path, false),
    };
    let open = || {
        OpenOptions::new().read(!write).write(write).append(log_file).create(log_file).custom_flags(libc::O_NONBLOCK).open(path)
    };
    let deadline = std::time::Instant::now() + READER_WAIT;
    let file = loop {
        match open() {
            // A FIFO's write end cannot open before its read end (ENXIO): wait for the reader.
            Err(e) if e.raw_os_error() == Some(libc::ENXIO) && std::time::Instant::now() < deadline => {
                std::thread::sleep(std::time::Duration::from_millis(5))
            }
            result => break result.with_context(|| format!("opening {path}"))?,
        }
    };
    let flags = OFlag::from_bits_truncate(fcntl(&file, FcntlArg::F_GETFL)?);
    fcntl(&file, FcntlArg::F_SETFL(flags & !OFlag::O_NONBLOCK))?;
    Ok(file)
}
