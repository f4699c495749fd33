//! One way for async code to call the store. Every [`Store`] method is a short blocking
//! transaction (an fsync, or a round trip to PostgreSQL), so code on the async runtime must
//! move it to the blocking pool; [`AsyncStore::run`] does that in one place, and turns a call
//! that never finished (it panicked) into a [`StoreError`], instead of each caller writing
//! its own `spawn_blocking` wrapper.

use std::future::Future;
use std::sync::Arc;

use super::{Store, StoreError};

/// The async face of a shared store (`Arc<dyn Store>`).
pub trait AsyncStore {
    /// Runs `f` with the store on the blocking pool.
    fn run<T, F>(&self, f: F) -> impl Future<Output = Result<T, StoreError>> + Send + 'static
    where
        T: Send + 'static,
        F: FnOnce(&dyn Store) -> Result<T, StoreError> + Send + 'static;
}

impl AsyncStore for Arc<dyn Store> {
    fn run<T, F>(&self, f: F) -> impl Future<Output = Result<T, StoreError>> + Send + 'static
    where
        T: Send + 'static,
        F: FnOnce(&dyn Store) -> Result<T, StoreError> + Send + 'static,
    {
        let store = Arc::clone(self);
        async move {
            match tokio::task::spawn_blocking(move || f(store.as_ref())).await {
                Ok(done) => done,
                Err(e) => Err(StoreError::Interrupted(e)),
            }
        }
    }
}
