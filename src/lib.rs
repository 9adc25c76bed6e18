//! containerd-shim-wasmedge: a containerd runtime v2 shim that runs WebAssembly OCI images with
//! WasmEdge, one isolated process per container.
//!
//! - [`shim`]: the Task service containerd talks to, task states and events.
//! - [`container`]: the OCI bundle, the container process, its namespaces and mounts.
//! - [`engine`]: WasmEdge itself: the WASI mapping, running a module, exit codes.
//! - [`image`]: telling wasm images apart and writing wasm OCI images.
//! - [`trace`]: the spans of a container's start-up, logged and (feature `otlp`) exported.
//! - [`version`]: what `--version` prints.
pub mod container;
pub mod engine;
pub mod image;
pub mod shim;
pub mod trace;
pub mod version;
