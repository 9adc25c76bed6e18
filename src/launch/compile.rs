//! The shim's side of an AOT cache miss. A confined container process cannot compile its module
//! (the compiler is not for untrusted input) nor write the cache (it does not see it), so it
//! sends the module on its compile socket ([`crate::protocol::COMPILE_FD`]) and waits. For each
//! request the shim executes the runner as `compile` with the socket as its stdin and stdout: a process of the
//! host's, outside the container, that hashes the bytes, takes the key's lock, has the compile
//! sandbox compile them, stores the entry and answers (see [`crate::process::compile`]).
//!
//! Nothing runs for a container until it asks: a cache hit costs the start one socketpair.
use super::runner::{self, Runner};
use crate::engine::EngineOptions;
use crate::protocol::COMPILE_ARG;
use anyhow::{Context, Result};
use nix::sys::socket::{recv, MsgFlags};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::process::Stdio;

/// A container process's compile socket: its end (for [`crate::protocol::COMPILE_FD`]) and the
/// shim's, served by a thread when the container may compile.
pub struct CompileSocket {
    pub theirs: OwnedFd,
    ours: UnixStream,
}

impl CompileSocket {
    pub fn new() -> Result<CompileSocket> {
        let (ours, theirs) = UnixStream::pair().context("making the compile socket")?;
        Ok(CompileSocket { theirs: theirs.into(), ours })
    }

    /// Serves the container process's requests until it closes its end (it exits). With AOT
    /// off the shim's end is closed: a request fails at once.
    pub fn serve(self, id: &str, options: &EngineOptions, runner: &Runner) -> Result<()> {
        let CompileSocket { theirs, ours } = self;
        drop(theirs);
        if options.aot_dir.is_none() {
            return Ok(());
        }
        let options = serde_json::to_string(options).context("encoding the engine options")?;
        let (id, runner) = (id.to_string(), runner.clone());
        std::thread::Builder::new()
            .name(format!("compile {id}"))
            .spawn(move || {
                while waiting(&ours) {
                    if let Err(e) = answer(&ours, &options, &runner) {
                        log::error!("{id}: the AOT compile of a cache miss failed to run: {e:#}");
                        break;
                    }
                }
            })
            .context("starting the compile socket's thread")?;
        Ok(())
    }
}

/// Blocks until a request begins (true) or the container's end is closed (false).
fn waiting(socket: &UnixStream) -> bool {
    let mut byte = [0u8];
    loop {
        match recv(socket.as_raw_fd(), &mut byte, MsgFlags::MSG_PEEK) {
            Ok(n) => return n > 0,
            Err(nix::errno::Errno::EINTR) => continue,
            Err(_) => return false,
        }
    }
}

/// Runs the compile process on the request: it reads it and answers on the socket itself.
fn answer(socket: &UnixStream, options: &str, runner: &Runner) -> Result<()> {
    let status = runner
        .command([COMPILE_ARG, options])
        .env_clear()
        .envs(runner::environment())
        .stdin(Stdio::from(OwnedFd::from(socket.try_clone()?)))
        .stdout(Stdio::from(OwnedFd::from(socket.try_clone()?)))
        .stderr(Stdio::null())
        .status()
        .with_context(|| format!("executing {} {COMPILE_ARG}", runner.program.display()))?;
    anyhow::ensure!(status.success(), "{COMPILE_ARG} ended with {status}");
    Ok(())
}
