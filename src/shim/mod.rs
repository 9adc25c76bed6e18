//! The containerd side: the runtime v2 `start`/`delete` commands and the ttrpc Task service.
mod classify;
mod features;
mod host;
mod lock;
mod metrics;
mod options;
mod runtime;
mod serve;
mod service;
mod task;
mod tasks;

use containerd_shim::protos::{protobuf::well_known_types::any::Any, types::introspection::RuntimeInfo};
use containerd_shim::{publisher::RemotePublisher, Config, DeleteResponse, Flags, StartOpts};
use std::io::Write;

pub use service::Service;

/// containerd's name for this runtime (`--runtime io.containerd.wasmedge.v1`).
pub const RUNTIME_NAME: &str = "io.containerd.wasmedge.v1";

/// Kubernetes puts every container of a pod in one shim, found by this annotation.
const SANDBOX_ANNOTATION: &str = "io.kubernetes.cri.sandbox-id";

pub fn run() {
    let args: Vec<_> = std::env::args_os().skip(1).collect();
    // The server is ours (serve.rs); `start`, `delete` and `-info` are the crate's.
    if let Ok(flags) = containerd_shim::parse(&args) {
        if !flags.info && !flags.version && !matches!(flags.action.as_str(), "start" | "delete") {
            if let Err(e) = serve::serve(&flags) {
                log::error!("{e:#}");
                eprintln!("{RUNTIME_NAME}: {e:#}");
                std::process::exit(1);
            }
            return;
        }
    }
    containerd_shim::run::<Shim>(RUNTIME_NAME, None)
}

struct Shim;

impl containerd_shim::Shim for Shim {
    type T = Service;

    fn new(_runtime_id: &str, _flags: &Flags, _config: &mut Config) -> Self {
        Shim
    }

    fn runtime_info(runtime_id: &str, _options: Option<&Any>) -> containerd_shim::Result<RuntimeInfo> {
        Ok(features::runtime_info(runtime_id))
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
        let bootstrap_protocol = !opts.containerd_version.is_empty();
        let address = if grouping != opts.id && serving(&address) {
            containerd_shim::util::write_address(&address)?;
            address
        } else {
            containerd_shim::spawn(opts, &grouping, Vec::new())?.1
        };
        if !bootstrap_protocol {
            // containerd before 2.3 (no bootstrap protocol). The crate's reply would announce
            // task API v3, which 1.7 refuses and 1.6 takes whole for the address; a bare address
            // means a v2 shim to every containerd from 1.6 on, and the server answers v2 too.
            let mut out = std::io::stdout().lock();
            let _ = out.write_all(address.as_bytes()).and_then(|_| out.flush());
            std::process::exit(0);
        }
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
        unreachable!("the server is shim::serve, not the crate's")
    }

    fn create_task_service(&self, _publisher: RemotePublisher) -> Service {
        unreachable!("the server is shim::serve, not the crate's")
    }
}

/// Whether a shim listens on `address` (`unix://PATH`).
fn serving(address: &str) -> bool {
    std::os::unix::net::UnixStream::connect(address.trim_start_matches("unix://")).is_ok()
}
