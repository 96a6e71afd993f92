//! Observers of the running loop: called by the engine between frames with a read-only view
//! of its counters and store, so a component such as [`crate::MetricsFile`] can watch the
//! service without the loop knowing what it does. An observer must return quickly (it runs on
//! the gate loop) and decides itself how often to do anything.

use facegate_store::Store;

use crate::engine::RunSummary;

/// What an observer sees: the run's counters so far (the capture counters included) and the
/// store, read-only.
#[derive(Debug)]
pub struct Observation<'a> {
    pub summary: &'a RunSummary,
    pub store: &'a Store,
    /// The run is over (the last call; write what must be written at exit).
    pub finished: bool,
}

/// Watches the loop. Called after every loop turn (each frame, or every 20 ms without one)
/// and once more with `finished` at the end of [`crate::Engine::run`].
pub trait Observer: Send + std::fmt::Debug {
    fn observe(&mut self, view: &Observation<'_>);
}
