//! containerd-shim-wasmedge: a containerd runtime v2 shim that runs WebAssembly OCI images with
//! WasmEdge, one isolated process per container.
//!
//! - [`shim`]: the Task service containerd talks to, task states and events.
//! - [`launch`]: the shim's side of a container: its plan, cgroup, rootfs, stdio, and its start.
//! - [`protocol`]: the wire between the shim and the container-process binary.
//! - [`process`] (feature `engine`): inside the container: confinement, then the module.
//! - [`engine`]: WasmEdge itself: the WASI mapping, running a module, exit codes.
//! - [`build_sandbox`]: the runc spec in which untrusted code is built.
//! - [`image`]: telling wasm images apart and writing wasm OCI images.
//! - [`progress`]: progress bars of long transfers and compiles.
//! - [`sandbox`] (feature `sandbox`): the execute service, `wasmedge-sandbox`.
//! - [`trace`]: the spans of a container's start-up, logged and (feature `otlp`) exported.
//! - [`version`]: what `--version` prints.
pub mod build_sandbox;
pub mod engine;
pub mod image;
pub mod launch;
#[cfg(feature = "engine")]
pub mod process;
pub mod progress;
pub mod protocol;
#[cfg(feature = "sandbox")]
pub mod sandbox;
pub mod shim;
pub mod trace;
pub mod version;
