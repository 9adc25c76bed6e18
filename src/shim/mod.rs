//! The containerd side: the runtime v2 `start`/`delete` commands and the ttrpc Task service.
mod classify;
mod options;
mod service;
mod task;

use containerd_shim::{
    publisher::RemotePublisher, Config, DeleteResponse, ExitSignal, Flags, StartOpts,
};
use std::os::unix::fs::FileTypeExt;
use std::path::Path;
use std::sync::Arc;

pub use service::Service;

/// containerd's name for this runtime (`--runtime io.containerd.wasmedge.v1`).
pub const RUNTIME_NAME: &str = "io.containerd.wasmedge.v1";

/// Kubernetes puts every container of a pod in one shim, found by this annotation.
const SANDBOX_ANNOTATION: &str = "io.kubernetes.cri.sandbox-id";

pub fn run() {
    containerd_shim::run::<Shim>(RUNTIME_NAME, None)
}

struct Shim {
    namespace: String,
    /// containerd's gRPC address.
    address: String,
    /// The ttrpc socket this shim serves on (`unix://PATH`); empty for `start` and `delete`.
    socket: String,
    exit: Arc<ExitSignal>,
}

impl containerd_shim::Shim for Shim {
    type T = Service;

    fn new(_runtime_id: &str, flags: &Flags, _config: &mut Config) -> Self {
        Shim {
            namespace: flags.namespace.clone(),
            address: flags.address.clone(),
            socket: flags.socket.clone(),
            exit: Arc::new(ExitSignal::default()),
        }
    }

    /// containerd runs `start` in the bundle directory; a pod's containers share the pod's shim.
    fn start_shim(&mut self, opts: StartOpts) -> containerd_shim::Result<String> {
        let grouping = oci_spec::runtime::Spec::load("config.json")
            .ok()
            .and_then(|s| s.annotations().as_ref()?.get(SANDBOX_ANNOTATION).cloned())
            .unwrap_or_else(|| opts.id.clone());
        // A pod's shim that already serves is named here, without spawning a server process
        // that would only find the socket taken, probe it and exit: one process less on every
        // pod container's start, and none of that process's start-up (log pipe, connection to
        // containerd) that could stall the `start` containerd waits for.
        let address = opts.socket_address(&grouping);
        if grouping != opts.id && serving(&address) {
            containerd_shim::util::write_address(&address)?;
            return Ok(address);
        }
        let (_pid, address) = containerd_shim::spawn(opts, &grouping, Vec::new())?;
        Ok(address)
    }

    /// Called when a shim died without deleting its container: undo what create did.
    fn delete_shim(&mut self) -> containerd_shim::Result<DeleteResponse> {
        let bundle = std::env::current_dir().map_err(|e| containerd_shim::Error::Other(e.to_string()))?;
        task::cleanup_bundle(&bundle);
        Ok(DeleteResponse {
            exit_status: 128 + libc::SIGKILL as u32,
            exited_at: Some(containerd_shim::util::timestamp()?).into(),
            ..Default::default()
        })
    }

    fn wait(&mut self) {
        self.exit.wait();
        crate::trace::shutdown();
        // The crate removes the socket by the address file in the bundle, which containerd has
        // deleted by now. Left behind, the socket would make the next shim of the same container
        // id (`ctr run --rm ... hello` twice) probe it for a second before taking it over.
        let path = Path::new(self.socket.trim_start_matches("unix://"));
        if path.symlink_metadata().is_ok_and(|m| m.file_type().is_socket()) {
            let _ = std::fs::remove_file(path);
        }
    }

    fn create_task_service(&self, publisher: RemotePublisher) -> Service {
        Service::new(&self.namespace, &self.address, publisher, self.exit.clone())
    }
}


/// Whether a shim listens on `address` (`unix://PATH`).
fn serving(address: &str) -> bool {
    std::os::unix::net::UnixStream::connect(address.trim_start_matches("unix://")).is_ok()
}
