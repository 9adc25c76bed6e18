//! OCI images: telling wasm images apart and writing them.
pub mod detect;
pub mod writer;
