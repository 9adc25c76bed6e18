//! What `--version` prints on every binary: the release, the commit it was built from, and the
//! WasmEdge it runs modules with.

/// The release and commit: what tells one build from another (the zygote's hello carries it).
pub const BUILD: &str = concat!(env!("CARGO_PKG_VERSION"), " ", env!("BUILD_COMMIT"));

/// The lines of `NAME --version`; `wasmedge` is the linked library's own version where the
/// binary links it, else the one it was built beside.
pub fn text(name: &str, wasmedge: Option<&str>) -> String {
    format!(
        "{name} {}\ncommit: {}\nWasmEdge: {}\n",
        env!("CARGO_PKG_VERSION"),
        env!("BUILD_COMMIT"),
        wasmedge.unwrap_or(env!("BUILD_WASMEDGE_VERSION"))
    )
}

/// Whether the arguments ask for the version: `--version`, or `-v`/`-version` as containerd's
/// Go-style flags spell it.
pub fn asked() -> bool {
    matches!(std::env::args().nth(1).as_deref(), Some("--version" | "-version" | "-v"))
}
