//! OCI images: telling wasm images apart and writing them.
pub mod content;
pub mod detect;
pub mod writer;
