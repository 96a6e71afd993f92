//! Work that takes the terminal's camera for a while: a live enrollment at the running
//! service. While a [`FrameJob`] runs, the face path pauses (nobody is identified, decided or
//! let in) and every processed frame goes to the job with the engine's own pipeline and
//! store; what the job says goes to every sink as a [`StatusEvent`] for the terminal's screen.

use std::borrow::BorrowMut;
use std::ops::ControlFlow;

use facegate_store::Store;
use facegate_types::{ErrorChain, Frame};
use facegate_vision::{Pipeline, Tracker};

use super::Engine;
use crate::decision::{StatusEvent, rfc3339};

/// Takes frames until it returns [`ControlFlow::Break`]; it reports its result through a
/// channel of its own. Dropped unfinished when the engine stops or the stream ends.
pub type FrameJob = Box<dyn FnMut(&mut FrameTurn<'_>) -> ControlFlow<()> + Send>;

/// One frame handed to a [`FrameJob`], with the engine's pipeline and store.
pub struct FrameTurn<'a> {
    pub frame: &'a Frame,
    pub pipeline: &'a mut Pipeline,
    pub store: &'a mut Store,
    said: Vec<(&'static str, String, usize, usize)>,
}

impl std::fmt::Debug for FrameTurn<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FrameTurn")
            .field("sequence", &self.frame.sequence)
            .finish_non_exhaustive()
    }
}

impl FrameTurn<'_> {
    /// Tells the terminal's screen what is happening (`status`: `countdown`, `prompt`,
    /// `waiting`, `sample`, `done`, `failed`), with the progress `step` of `steps`. Never a
    /// subject id, never face data.
    pub fn say(
        &mut self,
        status: &'static str,
        text: impl Into<String>,
        step: usize,
        steps: usize,
    ) {
        self.said.push((status, text.into(), step, steps));
    }
}

impl<P: BorrowMut<Pipeline>> Engine<P> {
    /// Gives `frame` to the running frame job, starting a queued one first. `false` when
    /// there is none: the frame is the face path's.
    pub(super) fn frame_job_turn(&mut self, frame: &Frame) -> bool {
        if self.frame_job.is_none() {
            let Ok(job) = self.frame_rx.try_recv() else {
                return false;
            };
            tracing::info!("terminal enrollment started: decisions paused");
            self.frame_job = Some(job);
            self.forget_faces();
        }
        let Some(job) = self.frame_job.as_mut() else {
            return false;
        };
        let mut turn = FrameTurn {
            frame,
            pipeline: self.pipeline.borrow_mut(),
            store: &mut self.store,
            said: Vec::new(),
        };
        let flow = job(&mut turn);
        let said = std::mem::take(&mut turn.said);
        for (status, text, step, steps) in said {
            let now = self.clock.now();
            let event = StatusEvent {
                time: rfc3339(now),
                unix_ms: now.0,
                activity: "enrollment",
                status,
                text,
                step,
                steps,
            };
            for sink in &mut self.sinks {
                if let Err(e) = sink.status(&event) {
                    self.summary.sink_errors += 1;
                    tracing::warn!(error = %ErrorChain(&e), "event sink failed");
                }
            }
        }
        if flow.is_break() {
            tracing::info!("terminal enrollment ended: deciding again");
            self.frame_job = None;
            // Whoever stood in front of the camera is judged afresh, on the new gallery.
            self.forget_faces();
        }
        true
    }

    fn forget_faces(&mut self) {
        self.tracks.clear();
        self.tracker = Tracker::new(self.config.tracker_min_iou, self.config.tracker_max_missed);
    }
}
