//! Locks that survive a panic.
use std::sync::{Mutex, MutexGuard, PoisonError};

/// Locks `mutex` even when a panic poisoned it: the shim's state stays consistent between
/// statements, and a poisoned lock would otherwise wedge the reaper and every later RPC.
pub fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}
