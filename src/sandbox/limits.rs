//! Limits of one execution: the service's defaults and ceilings, what a request asks for, and
//! the bounds on input and output.
use serde::Deserialize;
use std::time::Duration;

/// Bounds on a request's input and an execution's output.
pub const MAX_CODE: usize = 1 << 20;
pub const MAX_STDIN: usize = 10 << 20;
/// Files and env together (their contents and names).
pub const MAX_FILES: usize = 10 << 20;
pub const MAX_ARGS: usize = 1 << 20;
/// The whole body: code, stdin, files and the JSON around them.
pub const MAX_BODY: usize = MAX_CODE + MAX_STDIN + MAX_FILES + MAX_ARGS + (64 << 10);
/// Captured per stream; the rest is dropped and `truncated` set.
pub const MAX_OUTPUT: usize = 20 << 20;

/// Defaults and ceilings, from flags and the seed's variables.
#[derive(Clone, Debug)]
pub struct Policy {
    pub default_memory: u64,
    pub max_memory: u64,
    pub default_timeout: Duration,
    pub max_timeout: Duration,
}

/// What a request may ask for (`limits` in the body).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Requested {
    pub memory_mb: Option<u64>,
    pub timeout_ms: Option<u64>,
}

/// The limits an execution runs under.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    pub memory_bytes: u64,
    pub timeout: Duration,
}

/// The smallest memory limit taken: below it the runtime itself does not fit.
pub const MIN_MEMORY_MB: u64 = 16;

impl Policy {
    /// The request's limits, checked against the ceilings; the error says which and why.
    pub fn limits(&self, requested: Option<&Requested>) -> Result<Limits, String> {
        let mut limits = Limits { memory_bytes: self.default_memory, timeout: self.default_timeout };
        let Some(r) = requested else { return Ok(limits) };
        if let Some(mb) = r.memory_mb {
            let bytes = mb.checked_mul(1 << 20).ok_or("limits.memory_mb is too large")?;
            if mb < MIN_MEMORY_MB {
                return Err(format!("limits.memory_mb must be at least {MIN_MEMORY_MB}"));
            }
            if bytes > self.max_memory {
                return Err(format!("limits.memory_mb {mb} is above the ceiling of {} MiB", self.max_memory >> 20));
            }
            limits.memory_bytes = bytes;
        }
        if let Some(ms) = r.timeout_ms {
            if ms == 0 {
                return Err("limits.timeout_ms must be positive".into());
            }
            let timeout = Duration::from_millis(ms);
            if timeout > self.max_timeout {
                return Err(format!("limits.timeout_ms {ms} is above the ceiling of {} ms", self.max_timeout.as_millis()));
            }
            limits.timeout = timeout;
        }
        Ok(limits)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> Policy {
        Policy {
            default_memory: 128 << 20,
            max_memory: 512 << 20,
            default_timeout: Duration::from_secs(30),
            max_timeout: Duration::from_secs(60),
        }
    }

    #[test]
    fn defaults_apply_when_nothing_is_asked() {
        assert_eq!(policy().limits(None).unwrap(), Limits { memory_bytes: 128 << 20, timeout: Duration::from_secs(30) });
        assert_eq!(policy().limits(Some(&Requested::default())).unwrap(), policy().limits(None).unwrap());
    }

    #[test]
    fn a_request_lowers_or_raises_up_to_the_ceiling() {
        let r = Requested { memory_mb: Some(64), timeout_ms: Some(1000) };
        assert_eq!(policy().limits(Some(&r)).unwrap(), Limits { memory_bytes: 64 << 20, timeout: Duration::from_secs(1) });
        let r = Requested { memory_mb: Some(512), timeout_ms: Some(60_000) };
        assert_eq!(policy().limits(Some(&r)).unwrap(), Limits { memory_bytes: 512 << 20, timeout: Duration::from_secs(60) });
    }

    #[test]
    fn bad_limits_are_refused_with_the_reason() {
        let err = policy().limits(Some(&Requested { memory_mb: Some(513), timeout_ms: None })).unwrap_err();
        assert!(err.contains("ceiling of 512 MiB"), "{err}");
        let err = policy().limits(Some(&Requested { memory_mb: None, timeout_ms: Some(60_001) })).unwrap_err();
        assert!(err.contains("ceiling of 60000 ms"), "{err}");
        assert!(policy().limits(Some(&Requested { memory_mb: Some(1), timeout_ms: None })).is_err());
        assert!(policy().limits(Some(&Requested { memory_mb: None, timeout_ms: Some(0) })).is_err());
        assert!(policy().limits(Some(&Requested { memory_mb: Some(u64::MAX), timeout_ms: None })).is_err());
    }
}
