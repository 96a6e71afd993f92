//! The composed pipeline: detect -> landmarks -> align -> quality -> (liveness) -> (embed), with
//! per-stage wall times and the raw model inference time beside them.

use std::time::{Duration, Instant};

use facegate_types::{BBox, Embedding, Frame, Landmarks5, Point};
use serde::Serialize;

use crate::VisionError;
use crate::align::{AlignedFace, align_into, align_into_with};
use crate::centerface::{CenterFace, LandmarkedDetection};
use crate::cues::FaceSample;
use crate::detector::{Detection, FaceDetector, UltraFace};
use crate::embedder::{ArcFace, FaceEmbedder};
use crate::landmarks::{LandmarkLocator, Pfld68};
use crate::liveness::{LivenessDetector, PassiveLiveness};
use crate::manifest::{CalibrationPoint, Manifest, Precision, Role};
use crate::photo::{PhotoPass, fills_photo, may_be_a_part, part_of, touches_border, with_margin};
use crate::plausible::{
    FaceGeometryLimits, Implausible, context_canvas, enlarged, landmark_shift, whole_face,
};
use crate::preprocess::Border;
use crate::preprocess::Normalise;
use crate::quality::{QualityConfig, QualityReport, assess};
use crate::runtime::{self, ModelSession, RuntimeConfig, VerifiedModel};

/// What the pipeline loads and how it runs.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct VisionConfig {
    pub runtime: RuntimeConfig,
    /// Embed the mirrored crop too and sum the features (more accurate, twice the embed time).
    pub flip_tta: bool,
    /// Load the liveness model.
    pub liveness: bool,
    pub quality: QualityConfig,
    /// Overrides the manifest's detector score threshold.
    pub detector_threshold: Option<f32>,
    /// The embedder's precision (`[vision] precision`): the fp32 model or its int8 build. The
    /// manifest given to [`Pipeline::load`] must have been [`Manifest::select`]ed to match.
    /// (The detector stays fp32: its int8 build was measured no faster, see README.)
    pub precision: Precision,
}

/// What to compute for each face.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AnalyseOptions {
    pub embed: bool,
    pub liveness: bool,
    /// Only the `max_faces` best-scoring faces are analysed.
    pub max_faces: usize,
}

impl Default for AnalyseOptions {
    fn default() -> Self {
        Self {
            embed: true,
            liveness: false,
            max_faces: 16,
        }
    }
}

/// Everything the pipeline found out about one face. `Debug` redacts landmarks and embedding.
#[derive(Debug, Clone)]
pub struct FaceAnalysis {
    pub detection: Detection,
    pub landmarks: Landmarks5,
    pub quality: QualityReport,
    /// Probability of a live person, when asked for.
    pub liveness: Option<f32>,
    pub embedding: Option<Embedding>,
}

/// A face after stage one ([`Pipeline::prepare`]). `Debug` redacts the landmarks.
#[derive(Debug, Clone)]
pub struct PreparedFace {
    pub detection: Detection,
    pub landmarks: Landmarks5,
    pub quality: QualityReport,
    /// The liveness cue sample of this frame.
    pub sample: FaceSample,
    generation: u64,
}

/// Wall time per stage for one frame, and the part of it spent inside ONNX Runtime.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct StageTimings {
    pub detect: Duration,
    pub landmarks: Duration,
    pub align: Duration,
    pub quality: Duration,
    pub liveness: Duration,
    pub embed: Duration,
    /// Sum of raw `session.run` times of every model call in this frame.
    pub inference: Duration,
    pub faces: usize,
}

impl StageTimings {
    /// Adds `other`'s times and faces to these.
    pub fn add(&mut self, other: &StageTimings) {
        self.detect += other.detect;
        self.landmarks += other.landmarks;
        self.align += other.align;
        self.quality += other.quality;
        self.liveness += other.liveness;
        self.embed += other.embed;
        self.inference += other.inference;
        self.faces += other.faces;
    }

    pub fn total(&self) -> Duration {
        self.detect + self.landmarks + self.align + self.quality + self.liveness + self.embed
    }
}

/// The loaded, checked models and their reused buffers. Built once; per frame nothing is
/// re-checked and, after warm-up, nothing is allocated but the results.
pub struct Pipeline {
    detector: UltraFace,
    /// The second detector for photos, when the manifest has one.
    fallback: Fallback,
    fallback_found: Vec<LandmarkedDetection>,
    landmarks: Pfld68,
    embedder: ArcFace,
    liveness: Option<PassiveLiveness>,
    embed_norm: Normalise,
    quality: QualityConfig,
    calibration: Vec<CalibrationPoint>,
    detections: Vec<Detection>,
    aligned: AlignedFace,
    /// Counts alignments, so a prepared face knows whether `aligned` still holds its crop.
    generation: u64,
}

/// The photo fallback detector. Its file is hashed at start-up with the others, but its session
/// (the largest model, about a quarter of the service's model start-up, and unused by the gate
/// loop, which sees camera frames, not photos) is created at the first photo that needs it.
enum Fallback {
    Absent,
    Deferred(Box<VerifiedModel>),
    Ready(Box<CenterFace>),
}

impl Fallback {
    /// The detector, creating its session on first use; `None` when the manifest has none.
    fn get(&mut self) -> Result<Option<&mut CenterFace>, VisionError> {
        if let Fallback::Deferred(model) = self {
            let detector = CenterFace::new(ModelSession::from_verified(model)?)?;
            *self = Fallback::Ready(Box::new(detector));
        }
        Ok(match self {
            Fallback::Ready(d) => Some(d),
            Fallback::Absent | Fallback::Deferred(_) => None,
        })
    }
}

impl std::fmt::Debug for Pipeline {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pipeline")
            .field("embedder", &self.embedder.model_id())
            .field("liveness", &self.liveness.is_some())
            .finish_non_exhaustive()
    }
}

impl Pipeline {
    /// Initialises ONNX Runtime (once per process) and loads every model named by the manifest,
    /// checking each file's hash and tensor shapes (the photo fallback detector's shapes when its
    /// session is created, at the first photo that needs it; its hash now).
    pub fn load(manifest: &Manifest, config: &VisionConfig) -> Result<Self, VisionError> {
        let selected = manifest.precision(Role::Embedder);
        if selected != config.precision {
            return Err(VisionError::Setting {
                key: "vision.precision",
                reason: format!(
                    "the config asks for the {} embedder but the manifest was selected for {} \
                     (Manifest::select before Pipeline::load)",
                    config.precision.as_str(),
                    selected.as_str()
                ),
            });
        }
        let library = runtime::find_library(config.runtime.library.as_deref(), Some(manifest))?;
        runtime::init(&library, &config.runtime)?;
        let spec = |role: Role| {
            manifest.model(role).ok_or_else(|| VisionError::Manifest {
                path: manifest.path().to_path_buf(),
                reason: format!("no {} model", role.as_str()),
            })
        };
        let embed_spec = spec(Role::Embedder)?;
        let liveness_spec = if config.liveness {
            Some(spec(Role::Liveness)?)
        } else {
            None
        };
        let fallback = match manifest.model(Role::FallbackDetector) {
            Some(s) => Fallback::Deferred(Box::new(VerifiedModel::read(manifest, s)?)),
            None => Fallback::Absent,
        };
        // Sessions are created in parallel: that is most of the start-up time.
        let [Some(detector), Some(landmarks), Some(embedder), liveness] =
            ModelSession::load_parallel(
                manifest,
                [
                    Some(spec(Role::Detector)?),
                    Some(spec(Role::Landmarks)?),
                    Some(embed_spec),
                    liveness_spec,
                ],
            )?
        else {
            // load_parallel gives a session for every spec it is given.
            return Err(VisionError::Manifest {
                path: manifest.path().to_path_buf(),
                reason: "a required model did not load".into(),
            });
        };
        let mut detector = UltraFace::new(detector);
        if let Some(t) = config.detector_threshold {
            detector.set_threshold(t);
        }
        let landmarks = Pfld68::new(landmarks);
        let embed_norm = Normalise::from(&embed_spec.preprocess);
        let calibration = embed_spec.calibration_for(config.flip_tta).to_vec();
        let embedder = ArcFace::new(embedder, config.flip_tta);
        let liveness = liveness.map(PassiveLiveness::new);
        Ok(Self {
            detector,
            fallback,
            fallback_found: Vec::new(),
            landmarks,
            embedder,
            liveness,
            embed_norm,
            quality: config.quality,
            calibration,
            detections: Vec::new(),
            aligned: AlignedFace::new(),
            generation: 0,
        })
    }

    /// A measurement, not the product: with flip TTA on, keep each template's unmirrored
    /// counterpart too ([`Pipeline::take_plain_embedding`]).
    pub fn keep_plain_embeddings(&mut self, on: bool) {
        self.embedder.set_keep_plain(on);
    }

    /// The unmirrored crop's template from the last embedding, when
    /// [`Pipeline::keep_plain_embeddings`] and flip TTA are on.
    pub fn take_plain_embedding(&mut self) -> Option<Embedding> {
        self.embedder.take_plain()
    }

    /// Id of the embedding model, stored with every template.
    pub fn model_id(&self) -> &str {
        self.embedder.model_id()
    }

    /// The embedder's calibrated operating points (FMR -> cosine threshold) from the manifest.
    pub fn calibration(&self) -> &[CalibrationPoint] {
        &self.calibration
    }

    /// Dimension of the templates the embedder makes.
    pub fn embedding_dim(&self) -> usize {
        self.embedder.dim()
    }

    pub fn has_liveness(&self) -> bool {
        self.liveness.is_some()
    }

    /// The five landmarks the landmark model finds in `bbox` of `frame`.
    pub fn locate_landmarks(
        &mut self,
        frame: &Frame,
        bbox: &BBox,
    ) -> Result<Landmarks5, VisionError> {
        self.landmarks.locate(frame, bbox)
    }

    /// Whether `face` (found in `frame`) is a plausible whole face: the pure geometry of
    /// [`whole_face`], then the context check (the landmarks located again with the box's
    /// surroundings in view must stay put). `Ok(Err(why))` for a refusal; run it before a face
    /// becomes a template (one more landmark inference).
    pub fn check_whole_face(
        &mut self,
        frame: &Frame,
        face: &FaceAnalysis,
        limits: &FaceGeometryLimits,
    ) -> Result<Result<(), Implausible>, VisionError> {
        if let Err(why) = whole_face(&face.detection.bbox, &face.landmarks, limits) {
            return Ok(Err(why));
        }
        let Some((canvas, bbox, offset)) = context_canvas(frame, &face.detection.bbox) else {
            return Ok(Err(Implausible::LandmarkOutsideBox));
        };
        let wide = self
            .landmarks
            .locate(&canvas, &enlarged(&bbox, limits.context_scale))?;
        let back = Landmarks5(
            wide.points()
                .map(|p| facegate_types::Point::new(p.x + offset.x, p.y + offset.y)),
        );
        if landmark_shift(&face.landmarks, &back) > limits.max_context_shift {
            return Ok(Err(Implausible::Fragment));
        }
        Ok(Ok(()))
    }

    /// [`Pipeline::check_whole_face`] for a face of a photo found by
    /// [`Pipeline::analyse_photo`] (`face` in `photo.frame`'s coordinates). A face found only
    /// on the margin must also be confirmed by the fallback detector: a face of its own on the
    /// canvas overlapping the box (IoU at least [`CONFIRM_IOU`]) whose five native landmarks
    /// lie within [`CONFIRM_SHIFT`] eye distances of the landmark model's. Without a fallback
    /// detector such a face is refused.
    pub fn check_photo_face(
        &mut self,
        photo: &PhotoAnalysis<'_>,
        face: &FaceAnalysis,
        limits: &FaceGeometryLimits,
    ) -> Result<Result<(), Implausible>, VisionError> {
        if let Err(why) = self.check_whole_face(&photo.frame, face, limits)? {
            return Ok(Err(why));
        }
        if photo.pass == PhotoPass::Direct {
            return Ok(Ok(()));
        }
        let Some(fallback) = self.fallback.get()? else {
            return Ok(Err(Implausible::DetectorsDisagree));
        };
        fallback.detect_landmarked(&photo.frame, &mut self.fallback_found)?;
        let confirmed = self.fallback_found.iter().any(|d| {
            d.detection.bbox.iou(&face.detection.bbox) >= CONFIRM_IOU
                && landmark_shift(&face.landmarks, &d.landmarks) <= CONFIRM_SHIFT
        });
        Ok(if confirmed {
            Ok(())
        } else {
            Err(Implausible::DetectorsDisagree)
        })
    }

    /// Detection alone (the engine runs it on every frame).
    pub fn detect(&mut self, frame: &Frame) -> Result<&[Detection], VisionError> {
        self.detector.detect(frame, &mut self.detections)?;
        Ok(&self.detections)
    }

    /// Stage one for a face found by [`Pipeline::detect`]: the 68 landmarks, the five points,
    /// the aligned crop (kept for [`Pipeline::embed_prepared`]), quality, and the liveness cue
    /// sample. One landmark inference.
    pub fn prepare(
        &mut self,
        frame: &Frame,
        detection: Detection,
        t: &mut StageTimings,
    ) -> Result<PreparedFace, VisionError> {
        let start = Instant::now();
        let points = self.landmarks.locate68(frame, &detection.bbox)?;
        t.inference += self.landmarks.session().last_inference();
        let landmarks = points.five();
        let aligned_at = Instant::now();
        t.landmarks += aligned_at - start;
        align_into(frame, &landmarks, self.embed_norm, &mut self.aligned).ok_or(
            VisionError::Input {
                stage: "align",
                reason: "degenerate landmarks (eyes coincide)".into(),
            },
        )?;
        self.generation += 1;
        let quality_at = Instant::now();
        t.align += quality_at - aligned_at;
        let quality = assess(
            &detection.bbox,
            &landmarks,
            &self.aligned,
            self.embed_norm,
            &self.quality,
        );
        let sample = FaceSample::new(frame, detection.bbox, points);
        t.quality += quality_at.elapsed();
        Ok(PreparedFace {
            detection,
            landmarks,
            quality,
            sample,
            generation: self.generation,
        })
    }

    /// The embedder's input tensor for `face` (the aligned, normalised crop of
    /// [`Pipeline::prepare`]), while it is still the latest crop. Face information: it exists
    /// for `facegate eval calibration-inputs`, which pipes it to the quantiser, never to a file.
    pub fn prepared_input(&self, face: &PreparedFace) -> Option<&[f32]> {
        (face.generation == self.generation).then_some(&self.aligned.tensor[..])
    }

    /// The detector's input tensor of the last [`Pipeline::detect`] (see
    /// [`UltraFace::last_input`]).
    pub fn detector_input(&self) -> &[f32] {
        self.detector.last_input()
    }

    /// The passive liveness model's live probability for a face (`None` when the pipeline was
    /// loaded without it).
    pub fn passive_liveness(
        &mut self,
        frame: &Frame,
        face: &PreparedFace,
        t: &mut StageTimings,
    ) -> Result<Option<f32>, VisionError> {
        let Some(model) = &mut self.liveness else {
            return Ok(None);
        };
        let start = Instant::now();
        let p = model.live_probability(frame, &face.detection.bbox)?;
        t.inference += model.session().last_inference();
        t.liveness += start.elapsed();
        Ok(Some(p))
    }

    /// Stage three: the template of a prepared face. Uses the crop aligned by
    /// [`Pipeline::prepare`] when it is still the latest, else aligns it again.
    pub fn embed_prepared(
        &mut self,
        frame: &Frame,
        face: &PreparedFace,
        t: &mut StageTimings,
    ) -> Result<Embedding, VisionError> {
        let start = Instant::now();
        if face.generation != self.generation {
            align_into(frame, &face.landmarks, self.embed_norm, &mut self.aligned).ok_or(
                VisionError::Input {
                    stage: "align",
                    reason: "degenerate landmarks (eyes coincide)".into(),
                },
            )?;
            self.generation += 1;
        }
        let e = self.embedder.embed(&self.aligned)?;
        t.inference += self.embedder.last_inference();
        t.embed += start.elapsed();
        Ok(e)
    }

    /// The template of the face with `landmarks` in `frame`, aligned with `border` where the
    /// aligned crop reaches beyond the frame.
    pub fn embed_at(
        &mut self,
        frame: &Frame,
        landmarks: &Landmarks5,
        border: Border,
    ) -> Result<Embedding, VisionError> {
        align_into_with(frame, landmarks, self.embed_norm, border, &mut self.aligned).ok_or(
            VisionError::Input {
                stage: "align",
                reason: "degenerate landmarks (eyes coincide)".into(),
            },
        )?;
        self.generation += 1;
        self.embedder.embed(&self.aligned)
    }

    /// Everything for one face found by [`Pipeline::detect`]: the three stages in a row.
    pub fn analyse_face(
        &mut self,
        frame: &Frame,
        detection: Detection,
        opts: AnalyseOptions,
        t: &mut StageTimings,
    ) -> Result<FaceAnalysis, VisionError> {
        let prepared = self.prepare(frame, detection, t)?;
        let liveness = if opts.liveness {
            self.passive_liveness(frame, &prepared, t)?
        } else {
            None
        };
        let embedding = if opts.embed {
            Some(self.embed_prepared(frame, &prepared, t)?)
        } else {
            None
        };
        t.faces += 1;
        Ok(FaceAnalysis {
            detection,
            landmarks: prepared.landmarks,
            quality: prepared.quality,
            liveness,
            embedding,
        })
    }

    /// Detects and analyses up to `opts.max_faces` faces of `frame`, best detection first.
    pub fn analyse(
        &mut self,
        frame: &Frame,
        opts: AnalyseOptions,
        out: &mut Vec<FaceAnalysis>,
    ) -> Result<StageTimings, VisionError> {
        let mut t = StageTimings::default();
        self.detect_timed(frame, &mut t)?;
        self.analyse_detections(frame, opts, out, &mut t)?;
        Ok(t)
    }

    /// The detector on `frame` into `self.detections`, its time added to `t`.
    fn detect_timed(&mut self, frame: &Frame, t: &mut StageTimings) -> Result<(), VisionError> {
        let start = Instant::now();
        self.detector.detect(frame, &mut self.detections)?;
        t.detect += start.elapsed();
        t.inference += self.detector.session().last_inference();
        Ok(())
    }

    /// The rest of [`Pipeline::analyse`] for the detections of the last detector run on `frame`.
    fn analyse_detections(
        &mut self,
        frame: &Frame,
        opts: AnalyseOptions,
        out: &mut Vec<FaceAnalysis>,
        t: &mut StageTimings,
    ) -> Result<(), VisionError> {
        out.clear();
        let n = self.detections.len().min(opts.max_faces);
        for i in 0..n {
            let det = self.detections[i];
            out.push(self.analyse_face(frame, det, opts, t)?);
        }
        Ok(())
    }

    /// [`Pipeline::analyse`] in the shape of [`Pipeline::analyse_photo`]: the photo as it is,
    /// one look ([`PhotoPass::Direct`]).
    pub fn analyse_direct<'a>(
        &mut self,
        frame: &'a Frame,
        opts: AnalyseOptions,
        out: &mut Vec<FaceAnalysis>,
    ) -> Result<PhotoAnalysis<'a>, VisionError> {
        let timings = self.analyse(frame, opts, out)?;
        Ok(PhotoAnalysis {
            frame: std::borrow::Cow::Borrowed(frame),
            offset: Point::new(0.0, 0.0),
            pass: PhotoPass::Direct,
            timings,
        })
    }

    /// Whether the pipeline has a fallback detector for photos.
    pub fn has_fallback_detector(&self) -> bool {
        !matches!(self.fallback, Fallback::Absent)
    }

    /// The faces of a photo (enrollment, 1:1, evaluation), found in up to three looks: the
    /// photo as it is; when its largest face touches the edge or there is none, the photo on a
    /// grey margin ([`with_margin`]); when that finds no face clear of the edge either, the
    /// fallback detector on the margin. A face that fills the photo ([`fills_photo`]) gets the
    /// margin look even when it is clear of the edge. The faces' coordinates are in the returned frame (the
    /// photo, or the canvas with its margin), which is the one to pass to
    /// [`Pipeline::check_whole_face`]. No face at all leaves `out` empty; a face that touches
    /// the edge is returned only when no look found one that does not.
    pub fn analyse_photo<'a>(
        &mut self,
        frame: &'a Frame,
        opts: AnalyseOptions,
        out: &mut Vec<FaceAnalysis>,
    ) -> Result<PhotoAnalysis<'a>, VisionError> {
        let clear = |faces: &[FaceAnalysis], f: &Frame| {
            largest(faces)
                .is_some_and(|i| !touches_border(&faces[i].detection.bbox, f.width(), f.height()))
        };
        let fills = |faces: &[FaceAnalysis], f: &Frame| {
            largest(faces)
                .is_some_and(|i| fills_photo(&faces[i].detection.bbox, f.width(), f.height()))
        };
        let mut timings = self.analyse(frame, opts, out)?;
        let direct_pass = |timings| PhotoAnalysis {
            frame: std::borrow::Cow::Borrowed(frame),
            offset: Point::new(0.0, 0.0),
            pass: PhotoPass::Direct,
            timings,
        };
        // A face clear of the edge may still be a part of a face the photo cuts (a box on the
        // eyes and nose of an ID photo): when it is large enough to be one, the detector looks
        // at the margin too, and a face there that holds it replaces it.
        let part = if clear(out, frame) && !fills(out, frame) {
            let Some(face) = largest(out)
                .map(|i| out[i].detection.bbox)
                .filter(|b| may_be_a_part(b, frame.width(), frame.height()))
            else {
                return Ok(direct_pass(timings));
            };
            Some(face)
        } else {
            None
        };
        let (canvas, offset) = with_margin(frame, self.detector.input_aspect());
        self.detect_timed(&canvas, &mut timings)?;
        if let Some(face) = part {
            let moved = BBox::new(
                face.x1 + offset.x,
                face.y1 + offset.y,
                face.x2 + offset.x,
                face.y2 + offset.y,
            );
            let whole = self.detections.iter().any(|d| {
                !touches_border(&d.bbox, canvas.width(), canvas.height())
                    && part_of(&moved, &d.bbox)
            });
            if !whole {
                return Ok(direct_pass(timings));
            }
        }
        let direct = std::mem::take(out);
        self.analyse_detections(&canvas, opts, out, &mut timings)?;
        if clear(out, &canvas) {
            return Ok(PhotoAnalysis::on_canvas(
                canvas,
                offset,
                PhotoPass::Margin,
                timings,
            ));
        }
        if part.is_some() {
            *out = direct;
            return Ok(direct_pass(timings));
        }
        if let Some(fallback) = self.fallback.get()? {
            let start = Instant::now();
            fallback.detect_landmarked(&canvas, &mut self.fallback_found)?;
            timings.detect += start.elapsed();
            timings.inference += fallback.session().last_inference();
            let found = std::mem::take(&mut self.fallback_found);
            let mut faces = Vec::with_capacity(found.len().min(opts.max_faces));
            for d in found.iter().take(opts.max_faces) {
                // The landmark model on CenterFace's box, as for every other face: CenterFace's
                // own five points gave no better accuracy on the tight crops (94.6 % against
                // 94.9 %), and one landmark source keeps the whole-face check meaningful.
                faces.push(self.analyse_face(&canvas, d.detection, opts, &mut timings)?);
            }
            self.fallback_found = found;
            if !faces.is_empty() {
                *out = faces;
                return Ok(PhotoAnalysis::on_canvas(
                    canvas,
                    offset,
                    PhotoPass::Fallback,
                    timings,
                ));
            }
        }
        // Nothing clear of the edge anywhere: what the photo itself gave (maybe nothing).
        *out = direct;
        Ok(direct_pass(timings))
    }

    /// The template of the largest good face in a photo, found by [`Pipeline::analyse_photo`]
    /// (enrollment and 1:1 on photos), with its box and landmarks in `frame`'s coordinates
    /// (they reach beyond its edge when the photo cuts the face; [`Pipeline::check_whole_face`]
    /// on `frame` sees grey there). Errors when there is no face.
    pub fn embed_largest(&mut self, frame: &Frame) -> Result<FaceAnalysis, VisionError> {
        let mut faces = Vec::new();
        let look = AnalyseOptions {
            embed: false,
            liveness: false,
            max_faces: 16,
        };
        let photo = self.analyse_photo(frame, look, &mut faces)?;
        let i = largest(&faces).ok_or(VisionError::Input {
            stage: "detect",
            reason: "no face found".into(),
        })?;
        let embed = AnalyseOptions {
            embed: true,
            max_faces: 1,
            ..look
        };
        let mut t = StageTimings::default();
        let face = self.analyse_face(&photo.frame, faces[i].detection, embed, &mut t)?;
        Ok(photo.to_photo(face))
    }
}

/// How much the fallback detector's box must overlap a face found on a photo's margin to
/// confirm it ([`Pipeline::check_photo_face`]).
pub const CONFIRM_IOU: f32 = 0.4;

/// How far (in eye distances, [`landmark_shift`]) the fallback detector's landmarks may lie
/// from the landmark model's on a face it confirms.
pub const CONFIRM_SHIFT: f32 = 0.25;

/// The index of the face with the largest box.
fn largest(faces: &[FaceAnalysis]) -> Option<usize> {
    faces
        .iter()
        .enumerate()
        .max_by(|a, b| {
            a.1.detection
                .bbox
                .area()
                .total_cmp(&b.1.detection.bbox.area())
        })
        .map(|(i, _)| i)
}

/// The faces of a photo as [`Pipeline::analyse_photo`] found them.
#[derive(Debug)]
pub struct PhotoAnalysis<'a> {
    /// The frame the faces' coordinates refer to: the photo, or the photo on its margin.
    pub frame: std::borrow::Cow<'a, Frame>,
    /// Where the photo's (0, 0) lies in `frame`.
    pub offset: Point,
    pub pass: PhotoPass,
    /// All looks together.
    pub timings: StageTimings,
}

impl PhotoAnalysis<'_> {
    /// The faces found on `canvas`, the photo on its margin with its (0, 0) at `offset`.
    fn on_canvas(canvas: Frame, offset: Point, pass: PhotoPass, timings: StageTimings) -> Self {
        PhotoAnalysis {
            frame: std::borrow::Cow::Owned(canvas),
            offset,
            pass,
            timings,
        }
    }

    /// `face` (found in [`PhotoAnalysis::frame`]) in the photo's own coordinates.
    pub fn to_photo(&self, mut face: FaceAnalysis) -> FaceAnalysis {
        let (dx, dy) = (self.offset.x, self.offset.y);
        let b = face.detection.bbox;
        face.detection.bbox = BBox::new(b.x1 - dx, b.y1 - dy, b.x2 - dx, b.y2 - dy);
        face.landmarks = Landmarks5(
            face.landmarks
                .points()
                .map(|p| Point::new(p.x - dx, p.y - dy)),
        );
        face
    }
}
