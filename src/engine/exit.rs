//! Exit codes of a container process. A module's own `proc_exit` code passes through; the shim's
//! own outcomes use codes a module rarely picks, in the shell's tradition (documented in README).

/// How a container's stderr line begins when the module asked for memory past its cap (the
/// exit code stays the module's own); the execute service answers `out_of_memory` on it.
pub const OUT_OF_MEMORY_NOTICE: &str = "wasmedge: out of memory: ";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExitCode(pub i32);

impl ExitCode {
    /// The container could not be set up (mounts, namespaces, a malformed plan).
    pub const SETUP_ERROR: ExitCode = ExitCode(125);
    /// The module could not be loaded, validated or instantiated.
    pub const LOAD_ERROR: ExitCode = ExitCode(126);
    /// The entrypoint file does not exist or cannot be read.
    pub const NOT_FOUND: ExitCode = ExitCode(127);
    /// The module ran past its time limit (as `timeout(1)` exits).
    pub const TIME_LIMIT: ExitCode = ExitCode(124);
    /// The module trapped (unreachable, out-of-bounds access, stack overflow...).
    pub const TRAP: ExitCode = ExitCode(134);

    /// WASI exit codes are u32; a process exit status keeps the low 8 bits, as POSIX does.
    pub fn from_wasi(code: u32) -> ExitCode {
        ExitCode((code & 0xff) as i32)
    }

    /// The status containerd reports for a process killed by `signal`.
    pub fn from_signal(signal: i32) -> ExitCode {
        ExitCode(128 + signal)
    }
}

/// Ends the process at once. Exit handlers would run WasmEdge's and LLVM's static destructors,
/// which take milliseconds and do nothing a dying process needs; the module wrote through its fds
/// unbuffered, and Rust's stderr is unbuffered too.
pub fn exit_now(code: ExitCode) -> ! {
    use std::io::Write;
    let _ = std::io::stdout().flush();
    unsafe { libc::_exit(code.0) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wasi_codes_keep_low_byte() {
        assert_eq!(ExitCode::from_wasi(42), ExitCode(42));
        assert_eq!(ExitCode::from_wasi(256 + 3), ExitCode(3));
    }

    #[test]
    fn signals_map_like_a_shell() {
        assert_eq!(ExitCode::from_signal(15), ExitCode(143));
        assert_eq!(ExitCode::from_signal(9), ExitCode(137));
    }
}
