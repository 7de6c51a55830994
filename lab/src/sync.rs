//! The lab's shared state behind mutexes, reached from tests' tasks and the lab's own.

use std::sync::{Mutex, MutexGuard};

/// Locks one of the lab's process lists; a panic while holding it (none is possible in
/// this module) would only poison it, and the list itself stays usable.
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}
