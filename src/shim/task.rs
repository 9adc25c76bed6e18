//! One container as the shim tracks it: its init process (run by its [`Runtime`]) and its exec
//! processes, each created, running or stopped.
use super::lock::lock;
use super::runtime::{Runc, Runtime};
use crate::launch::{cgroup, rootfs, stdio::Stdio, systemd, Launch};
use crate::trace::Trace;
use containerd_shim::protos::protobuf::well_known_types::timestamp::Timestamp;
use std::collections::HashMap;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};

#[derive(Debug, Clone, PartialEq)]
pub struct Exit {
    pub status: u32,
    pub at: Timestamp,
}

#[derive(Debug, Default)]
pub struct State {
    pub pid: Option<i32>,
    /// Kept from the spawn: the process is signalled through it, never by a pid that may have
    /// been reaped and reused.
    pub pidfd: Option<OwnedFd>,
    pub started: bool,
    pub exit: Option<Exit>,
    /// While set, an exit of this process is kept in `held` instead of being published: a
    /// TaskExit must not overtake the TaskCreate/TaskStart of its process.
    pub hold_exit: bool,
    pub held: Option<u32>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    Created,
    Running,
    Stopped,
}

impl State {
    pub fn status(&self) -> Status {
        match (self.started, &self.exit) {
            (_, Some(_)) => Status::Stopped,
            (true, None) => Status::Running,
            (false, None) => Status::Created,
        }
    }
}

/// The stdio paths containerd gave, reported back by State.
#[derive(Debug, Clone, Default)]
pub struct IoPaths {
    pub stdin: String,
    pub stdout: String,
    pub stderr: String,
    pub terminal: bool,
}

impl IoPaths {
    pub fn new(stdin: &str, stdout: &str, stderr: &str, terminal: bool) -> IoPaths {
        IoPaths { stdin: stdin.to_string(), stdout: stdout.to_string(), stderr: stderr.to_string(), terminal }
    }
}

/// One process of a task: its init or one exec.
pub struct Process {
    pub io: IoPaths,
    /// Opened at create (or exec), handed to the process at start.
    pub stdio: Mutex<Option<Stdio>>,
    state: Mutex<State>,
    exited: Condvar,
}

impl Process {
    pub fn new(io: IoPaths, stdio: Option<Stdio>) -> Process {
        Process { io, stdio: Mutex::new(stdio), state: Mutex::new(State::default()), exited: Condvar::new() }
    }

    pub fn state(&self) -> MutexGuard<'_, State> {
        lock(&self.state)
    }

    pub fn running_pid(&self) -> Option<i32> {
        let state = self.state();
        state.pid.filter(|_| state.status() == Status::Running)
    }

    /// Records the exit once; returns false when the process had already exited.
    pub fn set_exit(&self, status: u32, at: Timestamp) -> bool {
        let mut state = self.state();
        if state.exit.is_some() {
            return false;
        }
        state.exit = Some(Exit { status, at });
        self.exited.notify_all();
        true
    }

    pub fn wait(&self) -> Exit {
        let mut state = self.state();
        loop {
            if let Some(exit) = &state.exit {
                return exit.clone();
            }
            state = self.exited.wait(state).unwrap_or_else(PoisonError::into_inner);
        }
    }
}

/// A process started in a running container by `Task.Exec`.
pub struct Exec {
    pub id: String,
    pub process: Process,
    /// The OCI process, as containerd sent it (JSON).
    pub spec: Vec<u8>,
}

pub struct Task {
    pub id: String,
    pub bundle: PathBuf,
    pub launch: Launch,
    pub runtime: Box<dyn Runtime>,
    pub init: Process,
    pub execs: Mutex<HashMap<String, Arc<Exec>>>,
    /// Whether the shim mounted the rootfs (and must unmount it).
    pub mounted_rootfs: bool,
    /// Frozen by Task.Pause (the cgroup freezer), until Task.Resume.
    pub paused: std::sync::atomic::AtomicBool,
    /// Its spans, from Task.Create to Task.Delete.
    pub trace: Trace,
}

impl Task {
    pub fn new(id: &str, bundle: &Path, launch: Launch, runtime: Box<dyn Runtime>, init: Process, mounted_rootfs: bool, trace: Trace) -> Task {
        Task {
            id: id.to_string(),
            bundle: bundle.to_path_buf(),
            launch,
            runtime,
            init,
            execs: Mutex::default(),
            mounted_rootfs,
            paused: Default::default(),
            trace,
        }
    }

    pub fn exec(&self, exec_id: &str) -> Option<Arc<Exec>> {
        lock(&self.execs).get(exec_id).cloned()
    }

    /// Undoes create: the runtime's part, and the rootfs mount. Errors are logged: delete must
    /// go on.
    pub fn cleanup(&self) {
        if let Err(e) = self.runtime.cleanup(&self.launch) {
            log::warn!("{}: {e:#}", self.id);
        }
        if self.mounted_rootfs {
            if let Err(e) = rootfs::unmount(&self.launch.rootfs) {
                log::warn!("{}: {e:#}", self.id);
            }
        }
    }
}

/// Cleanup for a bundle whose shim is gone (the `delete` command): best effort, from disk.
pub fn cleanup_bundle(bundle: &Path) {
    let Ok(spec) = oci_spec::runtime::Spec::load(bundle.join("config.json")) else { return };
    let cgroups_path = spec.linux().as_ref().and_then(|l| l.cgroups_path().as_ref()).map(|p| p.to_string_lossy().into_owned());
    let id = bundle.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    // The runtime options are not at hand here: the path's own shape says whether it is systemd's.
    let runc = Runc::new(&id, bundle, cgroups_path.as_deref().is_some_and(|p| cgroup::is_systemd_form(p, false)));
    if runc.root.exists() {
        let _ = runc.delete_unsupervised();
    } else if let Some(path) = cgroups_path.as_deref().and_then(|p| cgroup::resolve(p, false).ok()) {
        match cgroups_path.as_deref().filter(|p| cgroup::is_systemd_form(p, false) && systemd::booted()) {
            Some(p) => {
                let _ = cgroup::systemd_unit(p).and_then(|unit| unit.stop()).and_then(|()| cgroup::remove_rest(&path));
            }
            None => {
                let _ = cgroup::remove(&path);
            }
        }
    }
    let _ = rootfs::unmount(&bundle.join("rootfs"));
}
