//! Engine-level limits. They sit under the cgroup's: the module hits them first and fails in a
//! defined way, instead of the kernel OOM-killing the whole container process.
use serde::{Deserialize, Serialize};
use std::time::Duration;

/// WebAssembly's page size.
pub const WASM_PAGE: u64 = 64 * 1024;

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Limits {
    /// Cap on the module's linear memory, in wasm pages.
    pub max_memory_pages: Option<u32>,
    /// Wall-clock time the module may run before it is stopped.
    pub time_limit: Option<Duration>,
}

impl Limits {
    /// The linear memory may use at most the container's memory limit.
    pub fn memory_pages_for(limit_bytes: i64) -> Option<u32> {
        (limit_bytes > 0).then(|| (limit_bytes as u64 / WASM_PAGE).clamp(1, 65536) as u32)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory_limit_becomes_whole_pages() {
        assert_eq!(Limits::memory_pages_for(64 * 1024 * 1024), Some(1024));
        assert_eq!(Limits::memory_pages_for(100_000), Some(1));
        assert_eq!(Limits::memory_pages_for(10), Some(1), "at least one page");
        assert_eq!(Limits::memory_pages_for(-1), None, "unlimited");
        assert_eq!(Limits::memory_pages_for(1 << 40), Some(65536), "4 GiB is wasm32's ceiling");
    }
}
