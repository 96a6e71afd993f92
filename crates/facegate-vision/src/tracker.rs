//! Multi-face tracking by box overlap: gives each face a stable id across frames so the engine
//! embeds a person once per appearance, not once per frame.

use facegate_types::BBox;
use serde::Serialize;

use crate::Detection;

/// Opaque, per-process track id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(transparent)]
pub struct TrackId(pub u64);

/// One tracked face.
#[derive(Debug, Clone, PartialEq)]
pub struct Track {
    pub id: TrackId,
    pub bbox: BBox,
    pub score: f32,
    /// Consecutive frames this track has been matched in.
    pub hits: u32,
    /// Frames since the track was last matched (0 = matched in the latest frame).
    pub missed: u32,
}

/// Greedy IoU tracker.
#[derive(Debug)]
pub struct Tracker {
    tracks: Vec<Track>,
    next_id: u64,
    min_iou: f32,
    max_missed: u32,
    pairs: Vec<(f32, usize, usize)>,
}

impl Tracker {
    /// Tracks match detections overlapping them by at least `min_iou`; a track unmatched for
    /// more than `max_missed` frames ends.
    pub fn new(min_iou: f32, max_missed: u32) -> Self {
        Self {
            tracks: Vec::new(),
            next_id: 1,
            min_iou,
            max_missed,
            pairs: Vec::new(),
        }
    }

    /// Feeds one frame's detections; returns, for each detection in order, its track id.
    pub fn update(&mut self, detections: &[Detection]) -> Vec<TrackId> {
        self.pairs.clear();
        for (ti, t) in self.tracks.iter().enumerate() {
            for (di, d) in detections.iter().enumerate() {
                let iou = t.bbox.iou(&d.bbox);
                if iou >= self.min_iou {
                    self.pairs.push((iou, ti, di));
                }
            }
        }
        self.pairs.sort_unstable_by(|a, b| b.0.total_cmp(&a.0));
        let mut track_used = vec![false; self.tracks.len()];
        let mut assigned: Vec<Option<TrackId>> = vec![None; detections.len()];
        for &(_, ti, di) in &self.pairs {
            if track_used[ti] || assigned[di].is_some() {
                continue;
            }
            track_used[ti] = true;
            let t = &mut self.tracks[ti];
            t.bbox = detections[di].bbox;
            t.score = detections[di].score;
            t.hits += 1;
            t.missed = 0;
            assigned[di] = Some(t.id);
        }
        for (t, used) in self.tracks.iter_mut().zip(&track_used) {
            if !used {
                t.missed += 1;
                t.hits = 0;
            }
        }
        let max_missed = self.max_missed;
        self.tracks.retain(|t| t.missed <= max_missed);
        let mut ids = Vec::with_capacity(detections.len());
        for (d, a) in detections.iter().zip(assigned) {
            let id = a.unwrap_or_else(|| {
                let id = TrackId(self.next_id);
                self.next_id += 1;
                self.tracks.push(Track {
                    id,
                    bbox: d.bbox,
                    score: d.score,
                    hits: 1,
                    missed: 0,
                });
                id
            });
            ids.push(id);
        }
        ids
    }

    /// Live tracks.
    pub fn tracks(&self) -> &[Track] {
        &self.tracks
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(x: f32) -> Detection {
        Detection {
            bbox: BBox::new(x, 0.0, x + 50.0, 50.0),
            score: 0.9,
        }
    }

    #[test]
    fn moving_faces_keep_their_ids_and_new_faces_get_new_ones() {
        let mut t = Tracker::new(0.3, 2);
        let a = t.update(&[d(0.0), d(200.0)]);
        let b = t.update(&[d(205.0), d(5.0)]);
        assert_eq!((a[0], a[1]), (b[1], b[0]));
        let c = t.update(&[d(400.0)]);
        assert!(c[0] != a[0] && c[0] != a[1]);
        assert_eq!(t.tracks().iter().find(|tr| tr.id == a[0]).unwrap().hits, 0);
    }

    #[test]
    fn tracks_end_after_max_missed_frames() {
        let mut t = Tracker::new(0.3, 1);
        let a = t.update(&[d(0.0)]);
        t.update(&[]);
        assert_eq!(t.tracks().len(), 1);
        t.update(&[]);
        assert!(t.tracks().is_empty());
        let b = t.update(&[d(0.0)]);
        assert_ne!(a[0], b[0]);
    }
}
