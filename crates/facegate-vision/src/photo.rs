//! Photos for enrollment and 1:1 (ID photos above all): the pure parts of the passes that find
//! a whole face in a picture the face fills. A face cut by the picture's edge (forehead and
//! chin of a tight crop) is a face the detector was never trained on, so the photo gets a
//! margin, and a second detector looks when the first still finds nothing (see
//! [`crate::Pipeline::analyse_photo`] and `docs/enrollment.md`).

use facegate_types::{BBox, Frame, Point};

/// The grey the margin is filled with (the same grey as the whole-face check's canvas).
pub const MARGIN_GREY: u8 = 128;

/// Fraction of each side added to each side of the photo before the second look. Measured on
/// the tight grey crops of LFW DevTest (`facegate eval lfw --tight-crop`): 0.15 gives 94.3 %,
/// 0.25 gives 94.9 %, 0.4 gives 95.7 % (1 of 1,549 without a face), 0.6 gives 95.3 %.
pub const MARGIN: f32 = 0.4;

/// A face whose box is wider or taller than this fraction of the photo fills it (an ID photo):
/// its box from the first look is often a part of the face, so the photo gets the margin look
/// too. Without this rule the tight crops of LFW DevTest gave 77.8 % instead of 94.9 % (at a
/// margin of 0.25).
pub const LARGE_FACE: f32 = 0.5;

/// A face clear of the photo's edge whose box is wider or taller than this fraction of the
/// photo may still be a part of a face the photo cuts (a box on the eyes and nose of a tight
/// crop, 0.3-0.5 of its width), so the photo is also looked at on its margin
/// ([`crate::Pipeline::analyse_photo`]). Smaller faces (a group, a distant face) are not.
pub const PART_CHECK: f32 = 0.2;

/// A box is a part of another when the other has at least this many times its area...
pub const PART_AREA: f32 = 2.0;

/// ...and holds at least this fraction of it.
pub const PART_COVER: f32 = 0.8;

/// Whether a face box of a `width x height` photo is large enough to be a part of a face the
/// photo cuts ([`PART_CHECK`]).
pub fn may_be_a_part(bbox: &BBox, width: u32, height: u32) -> bool {
    bbox.width() > PART_CHECK * width as f32 || bbox.height() > PART_CHECK * height as f32
}

/// Whether `part` is a part of `whole`: `whole` is at least [`PART_AREA`] times larger and
/// holds at least [`PART_COVER`] of `part`.
pub fn part_of(part: &BBox, whole: &BBox) -> bool {
    let iw = (part.x2.min(whole.x2) - part.x1.max(whole.x1)).max(0.0);
    let ih = (part.y2.min(whole.y2) - part.y1.max(whole.y1)).max(0.0);
    part.area() > 0.0
        && whole.area() >= PART_AREA * part.area()
        && iw * ih >= PART_COVER * part.area()
}

/// Which look found the faces of a photo.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PhotoPass {
    /// The photo as it is; its largest face is clear of the edge and does not fill the photo
    /// (or no other look found a face).
    Direct,
    /// The photo on a grey margin ([`with_margin`]), with the main detector.
    Margin,
    /// The photo on the margin, with the fallback detector.
    Fallback,
}

impl PhotoPass {
    pub fn as_str(self) -> &'static str {
        match self {
            PhotoPass::Direct => "direct",
            PhotoPass::Margin => "margin",
            PhotoPass::Fallback => "fallback",
        }
    }
}

/// Whether `bbox` reaches within a pixel of the edge of a `width x height` picture: the
/// detector clamps a box that runs off the picture, so such a face is cut.
pub fn touches_border(bbox: &BBox, width: u32, height: u32) -> bool {
    let (w, h) = (width as f32, height as f32);
    bbox.x1 <= 1.0 || bbox.y1 <= 1.0 || bbox.x2 >= w - 1.0 || bbox.y2 >= h - 1.0
}

/// Whether `bbox` fills a `width x height` photo ([`LARGE_FACE`]).
pub fn fills_photo(bbox: &BBox, width: u32, height: u32) -> bool {
    bbox.width() > LARGE_FACE * width as f32 || bbox.height() > LARGE_FACE * height as f32
}

/// The photo centred on a grey canvas: [`MARGIN`] of its width and height on each side, then
/// widened or heightened to `aspect` (width / height; the main detector's input, so it sees
/// the face undistorted). Returns the canvas and where the photo's (0, 0) lies on it.
pub fn with_margin(frame: &Frame, aspect: f32) -> (Frame, Point) {
    let (fw, fh) = (frame.width() as f32, frame.height() as f32);
    let (mut cw, mut ch) = (fw * (1.0 + 2.0 * MARGIN), fh * (1.0 + 2.0 * MARGIN));
    if aspect.is_finite() && aspect > 0.0 {
        if cw / ch < aspect {
            cw = ch * aspect;
        } else {
            ch = cw / aspect;
        }
    }
    let (cw, ch) = (cw.ceil() as u32, ch.ceil() as u32);
    let (ox, oy) = ((cw - frame.width()) / 2, (ch - frame.height()) / 2);
    let mut data = vec![MARGIN_GREY; cw as usize * ch as usize * 3];
    let row = frame.width() as usize * 3;
    for y in 0..frame.height() {
        let d0 = ((oy + y) as usize * cw as usize + ox as usize) * 3;
        data[d0..d0 + row].copy_from_slice(&frame.row(y)[..row]);
    }
    let canvas = match Frame::from_rgb8(cw, ch, data) {
        Ok(c) => c.with_time(frame.timestamp, frame.sequence),
        // The size is consistent by construction; keep the photo if it ever were not.
        Err(_) => return (frame.clone(), Point::new(0.0, 0.0)),
    };
    (canvas, Point::new(ox as f32, oy as f32))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_margin_centres_the_photo_at_the_detector_aspect() {
        let data: Vec<u8> = (0..84 * 100 * 3).map(|i| (i % 251) as u8).collect();
        let f = Frame::from_rgb8(84, 100, data).unwrap();
        let (c, o) = with_margin(&f, 4.0 / 3.0);
        // 100 * 1.8 = 180 high, 240 wide.
        assert_eq!((c.width(), c.height()), (240, 180));
        assert_eq!(o, Point::new(78.0, 40.0));
        assert_eq!(&c.row(40)[78 * 3..(78 + 84) * 3], f.row(0));
        assert_eq!(&c.row(139)[78 * 3..(78 + 84) * 3], f.row(99));
        assert!(c.row(0).iter().all(|v| *v == MARGIN_GREY));
        assert_eq!(c.row(60)[77 * 3], MARGIN_GREY);
        assert_eq!(c.row(60)[(78 + 84) * 3], MARGIN_GREY);
        // A wide photo gets taller instead: 400 * 1.8 = 720 wide, 540 high.
        let f = Frame::from_rgb8(400, 100, vec![0; 400 * 100 * 3]).unwrap();
        let (c, _) = with_margin(&f, 4.0 / 3.0);
        assert_eq!((c.width(), c.height()), (720, 540));
    }

    #[test]
    fn a_box_inside_a_much_larger_one_is_a_part_of_it() {
        let whole = BBox::new(10.0, 10.0, 90.0, 110.0);
        // The eyes and nose of the face: inside, a fifth of the area.
        assert!(part_of(&BBox::new(30.0, 40.0, 70.0, 80.0), &whole));
        // The same face found again, a little larger: not a part.
        assert!(!part_of(&BBox::new(15.0, 15.0, 85.0, 105.0), &whole));
        // A small box mostly outside: not a part.
        assert!(!part_of(&BBox::new(80.0, 40.0, 120.0, 80.0), &whole));
        assert!(!part_of(&BBox::new(30.0, 40.0, 30.0, 80.0), &whole));
        assert!(may_be_a_part(&BBox::new(30.0, 40.0, 70.0, 80.0), 84, 100));
        assert!(!may_be_a_part(&BBox::new(30.0, 40.0, 70.0, 80.0), 640, 480));
    }

    #[test]
    fn border_contact() {
        assert!(touches_border(&BBox::new(0.0, 10.0, 50.0, 60.0), 100, 100));
        assert!(touches_border(&BBox::new(10.0, 10.0, 50.0, 99.5), 100, 100));
        assert!(!touches_border(
            &BBox::new(10.0, 10.0, 90.0, 90.0),
            100,
            100
        ));
        assert!(fills_photo(&BBox::new(10.0, 10.0, 90.0, 40.0), 100, 100));
        assert!(!fills_photo(&BBox::new(10.0, 10.0, 50.0, 50.0), 100, 100));
    }
}
