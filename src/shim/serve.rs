//! The shim's server process: the ttrpc Task service under the name each containerd asks for.
//!
//! containerd 1.6 and 1.7 call `containerd.task.v2.Task`, 2.x calls `containerd.task.v3.Task`.
//! The two APIs have the same messages and methods, so one [`Service`] answers both names. The
//! shim crate's own server registers v3 only, which is why this process is run here.
use super::Service;
use anyhow::{Context, Result};
use containerd_shim::{
    monitor::monitor_notify_by_pid,
    protos::{create_task, ttrpc, Task as TaskApi},
    publisher::RemotePublisher,
    ExitSignal, Flags,
};
use nix::errno::Errno;
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;
use signal_hook::consts::{SIGCHLD, SIGINT, SIGPIPE, SIGTERM};
use signal_hook::iterator::Signals;
use std::collections::HashMap;
use std::os::fd::IntoRawFd;
use std::os::unix::fs::FileTypeExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::Path;
use std::sync::Arc;

/// The Task service's name in task API v3; v2's differs only in the version.
const TASK_V3: &str = "/containerd.task.v3.Task/";
const TASK_V2: &str = "/containerd.task.v2.Task/";

/// Serves containerd on `flags.socket` until the service signals its exit.
pub(super) fn serve(flags: &Flags) -> Result<()> {
    // One malloc arena, not one per thread: the shim serves a request at a time, mostly waits,
    // and each arena's dirty pages would be this container's memory cost for its whole life.
    #[cfg(target_env = "gnu")]
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 1)
    };
    // Handlers first: a child may exit as soon as there is one, and SIGPIPE from a closed log
    // pipe must not kill the shim.
    let signals = Signals::new([SIGTERM, SIGINT, SIGPIPE, SIGCHLD]).context("installing signal handlers")?;
    // Orphaned container processes are reparented to the shim, which reaps them and reports
    // their exits.
    nix::sys::prctl::set_child_subreaper(true).context("becoming a child subreaper")?;
    containerd_shim::logger::init(flags.debug, "info", &flags.namespace, &flags.id)
        .context("opening containerd's log pipe")?;

    let Some(listener) = listen(&flags.socket)? else {
        // Another server of the same pod took the socket first; `start` names it.
        return Ok(());
    };
    let ttrpc_address = std::env::var("TTRPC_ADDRESS").context("TTRPC_ADDRESS is not set")?;
    let publisher = RemotePublisher::new(&ttrpc_address).context("connecting to containerd's event service")?;
    let exit = Arc::new(ExitSignal::default());
    let service: Arc<dyn TaskApi + Send + Sync> =
        Arc::new(Service::new(&flags.namespace, &flags.address, publisher, exit.clone()));
    let mut server = ttrpc::Server::new()
        .add_listener(listener.into_raw_fd())
        .context("serving the shim socket")?
        .register_service(methods(service));
    server.start().context("starting the ttrpc server")?;

    // `start` relays this process's stdout until it closes: pointing it at stderr (containerd's
    // /dev/null) tells `start` the server is up.
    nix::unistd::dup2_stdout(std::io::stderr()).context("releasing start")?;
    std::thread::spawn(move || reap(signals));
    log::info!("serving task API v2 and v3 on {}", flags.socket);

    exit.wait();
    crate::trace::shutdown();
    server.shutdown();
    // The crate's delete removes the socket by the bundle's address file, which containerd has
    // deleted by now. Left behind, the socket would make the next shim of the same container
    // id (`ctr run --rm ... hello` twice) probe it for a second before taking it over.
    remove_socket(&flags.socket);
    Ok(())
}

/// The Task service's methods under both API versions' names.
fn methods(service: Arc<dyn TaskApi + Send + Sync>) -> HashMap<String, Box<dyn ttrpc::MethodHandler + Send + Sync>> {
    let v2: Vec<_> = create_task(service.clone())
        .into_iter()
        .map(|(path, handler)| (path.replacen(TASK_V3, TASK_V2, 1), handler))
        .collect();
    let mut methods = create_task(service);
    methods.extend(v2);
    methods
}

/// The listening socket at `address` (`unix://PATH`), or `None` when a live server holds it. A
/// socket nobody answers on is stale (its shim was killed) and is replaced.
fn listen(address: &str) -> Result<Option<UnixListener>> {
    let path = Path::new(address.trim_start_matches("unix://"));
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    match UnixListener::bind(path) {
        Ok(listener) => return Ok(Some(listener)),
        Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => {}
        Err(e) => return Err(e).with_context(|| format!("binding {}", path.display())),
    }
    if UnixStream::connect(path).is_ok() {
        return Ok(None);
    }
    remove_socket(address);
    UnixListener::bind(path).map(Some).with_context(|| format!("binding {}", path.display()))
}

fn remove_socket(address: &str) {
    let path = Path::new(address.trim_start_matches("unix://"));
    if path.symlink_metadata().is_ok_and(|m| m.file_type().is_socket()) {
        let _ = std::fs::remove_file(path);
    }
}

/// Reaps every child that exits and hands its status to the exit monitor (128 + signal for a
/// killed one, as a shell reports it). Other signals are only logged: containerd stops a shim
/// through `Shutdown`, not by signal.
fn reap(mut signals: Signals) {
    for signal in signals.forever() {
        if signal != SIGCHLD {
            log::debug!("received signal {signal}");
            continue;
        }
        loop {
            let (pid, code) = match waitpid(Pid::from_raw(-1), Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::Exited(pid, code)) => (pid, code),
                Ok(WaitStatus::Signaled(pid, signal, _)) => (pid, 128 + signal as i32),
                Ok(WaitStatus::StillAlive) | Err(Errno::ECHILD) => break,
                Ok(_) | Err(Errno::EINTR) => continue,
                Err(e) => {
                    log::warn!("waiting for children: {e}");
                    break;
                }
            };
            if let Err(e) = monitor_notify_by_pid(pid.as_raw(), code) {
                log::error!("reporting the exit of {pid}: {e}");
            }
        }
    }
}
