//! [`Published`]: a value one thread (the raft loop) replaces and many
//! readers load, each keeping what it loaded as long as it likes.

use std::sync::{Arc, RwLock};

/// A value one thread replaces and others read: the last stored `Arc`.
pub struct Published<T>(Arc<RwLock<Arc<T>>>);

impl<T> Clone for Published<T> {
    fn clone(&self) -> Self {
        Published(self.0.clone())
    }
}

impl<T> Published<T> {
    /// Publishes `value` as the first one.
    pub fn new(value: T) -> Self {
        Published(Arc::new(RwLock::new(Arc::new(value))))
    }

    /// The last value stored.
    pub fn load(&self) -> Arc<T> {
        self.0.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Replaces the published value.
    pub fn store(&self, value: T) {
        let old = {
            let mut cur = self.0.write().unwrap_or_else(|e| e.into_inner());
            std::mem::replace(&mut *cur, Arc::new(value))
        };
        // Freed outside the lock: readers never wait for a drop.
        drop(old);
    }
}
