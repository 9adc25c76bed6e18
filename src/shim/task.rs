//! One container as the shim tracks it: created, running, stopped.
use crate::container::{cgroup, rootfs, stdio::Stdio, Launch};
use containerd_shim::protos::protobuf::well_known_types::timestamp::Timestamp;
use std::path::{Path, PathBuf};
use std::sync::{Condvar, Mutex, MutexGuard};

#[derive(Debug, Clone, PartialEq)]
pub struct Exit {
    pub status: u32,
    pub at: Timestamp,
}

#[derive(Debug, Default)]
pub struct State {
    pub pid: Option<i32>,
    pub exit: Option<Exit>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    Created,
    Running,
    Stopped,
}

impl State {
    pub fn status(&self) -> Status {
        match (self.pid, &self.exit) {
            (_, Some(_)) => Status::Stopped,
            (Some(_), None) => Status::Running,
            (None, None) => Status::Created,
        }
    }
}

/// The stdio paths containerd gave, reported back by State.
#[derive(Debug, Clone, Default)]
pub struct IoPaths {
    pub stdin: String,
    pub stdout: String,
    pub stderr: String,
}

pub struct Task {
    pub id: String,
    pub bundle: PathBuf,
    pub launch: Launch,
    pub io: IoPaths,
    /// Opened at create, handed to the process at start.
    pub stdio: Mutex<Option<Stdio>>,
    /// Whether the shim mounted the rootfs (and must unmount it).
    pub mounted_rootfs: bool,
    state: Mutex<State>,
    exited: Condvar,
}

impl Task {
    pub fn new(id: &str, bundle: &Path, launch: Launch, io: IoPaths, stdio: Stdio, mounted_rootfs: bool) -> Task {
        Task {
            id: id.to_string(),
            bundle: bundle.to_path_buf(),
            launch,
            io,
            stdio: Mutex::new(Some(stdio)),
            mounted_rootfs,
            state: Mutex::new(State::default()),
            exited: Condvar::new(),
        }
    }

    pub fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap()
    }

    pub fn running_pid(&self) -> Option<i32> {
        let state = self.state();
        state.pid.filter(|_| state.status() == Status::Running)
    }

    /// Records the exit once; returns false when the task had already exited.
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
            state = self.exited.wait(state).unwrap();
        }
    }

    /// Undoes create: the cgroup and the rootfs mount. Errors are logged: delete must go on.
    pub fn cleanup(&self) {
        if let Some(path) = &self.launch.cgroup {
            if let Err(e) = cgroup::remove(path) {
                log::warn!("{}: {e:#}", self.id);
            }
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
    if let Some(path) = spec.linux().as_ref().and_then(|l| l.cgroups_path().as_ref()) {
        let _ = cgroup::remove(&path.to_string_lossy());
    }
    let _ = rootfs::unmount(&bundle.join("rootfs"));
}
