//! The shared vocabulary of facegate: [`Frame`] (RGB8, stride-aware, with timestamp and sequence
//! number), [`BBox`], [`Landmarks5`], [`Embedding`] (L2-normalised, zeroised on drop, redacted
//! `Debug`, deliberately neither `Display` nor `Serialize`), the opaque ids [`SubjectId`] and
//! [`TemplateId`], and the [`Clock`] every time-dependent rule reads.
//!
//! This crate owns no I/O and depends on nothing heavy. It must never give a way to print or
//! serialise biometric content: any type that holds pixels, landmarks or embedding values redacts
//! its `Debug` output and has no `Display`.

mod clock;
mod embedding;
mod error;
mod frame;
mod geometry;
mod ids;

pub use clock::{Clock, ManualClock, SystemClock, UnixMillis, UtcTime};
pub use embedding::Embedding;
pub use error::{ErrorChain, TypesError};
pub use frame::Frame;
pub use geometry::{BBox, Landmarks5, Point};
pub use ids::{SubjectId, TemplateId};
