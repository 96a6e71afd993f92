use std::fmt;
use std::time::Duration;

use crate::TypesError;

/// One RGB8 image from a source, rows `stride` bytes apart (`stride >= 3 * width`).
///
/// `timestamp` is media time since the source started (capture time for a camera, presentation
/// time for a replayed stream); `sequence` counts frames from zero, gaps meaning dropped frames.
/// `Debug` shows the geometry only, never pixels.
#[derive(Clone)]
pub struct Frame {
    width: u32,
    height: u32,
    stride: usize,
    data: Vec<u8>,
    /// Media time since the source started.
    pub timestamp: Duration,
    /// Frame number from the source, starting at zero.
    pub sequence: u64,
}

impl Frame {
    /// Wraps an RGB8 buffer, checking that `data` holds `height` rows of `stride` bytes (the last
    /// row may be only `3 * width` long).
    pub fn new(width: u32, height: u32, stride: usize, data: Vec<u8>) -> Result<Self, TypesError> {
        let row = width as usize * 3;
        if width == 0 || height == 0 || stride < row {
            return Err(TypesError::FrameGeometry {
                width,
                height,
                stride,
            });
        }
        let needed = stride * (height as usize - 1) + row;
        if data.len() < needed {
            return Err(TypesError::FrameBuffer {
                width,
                height,
                stride,
                needed,
                actual: data.len(),
            });
        }
        Ok(Self {
            width,
            height,
            stride,
            data,
            timestamp: Duration::ZERO,
            sequence: 0,
        })
    }

    /// Wraps a tightly packed RGB8 buffer (`stride == 3 * width`).
    pub fn from_rgb8(width: u32, height: u32, data: Vec<u8>) -> Result<Self, TypesError> {
        Self::new(width, height, width as usize * 3, data)
    }

    /// Sets the timestamp and sequence number.
    #[must_use]
    pub fn with_time(mut self, timestamp: Duration, sequence: u64) -> Self {
        self.timestamp = timestamp;
        self.sequence = sequence;
        self
    }

    /// Width in pixels.
    pub fn width(&self) -> u32 {
        self.width
    }

    /// Height in pixels.
    pub fn height(&self) -> u32 {
        self.height
    }

    /// Bytes from one row start to the next.
    pub fn stride(&self) -> usize {
        self.stride
    }

    /// The whole buffer, rows `stride` bytes apart.
    pub fn data(&self) -> &[u8] {
        &self.data
    }

    /// Mutable access to the whole buffer (for sources that decode in place).
    pub fn data_mut(&mut self) -> &mut [u8] {
        &mut self.data
    }

    /// The `3 * width` bytes of row `y`.
    ///
    /// # Panics
    /// If `y >= height`.
    pub fn row(&self, y: u32) -> &[u8] {
        let start = y as usize * self.stride;
        &self.data[start..start + self.width as usize * 3]
    }

    /// Gives the buffer back (for reuse by a source).
    pub fn into_data(self) -> Vec<u8> {
        self.data
    }
}

impl fmt::Debug for Frame {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Frame")
            .field("width", &self.width)
            .field("height", &self.height)
            .field("stride", &self.stride)
            .field("sequence", &self.sequence)
            .field("timestamp", &self.timestamp)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_padded_rows_and_short_last_row() {
        let frame = Frame::new(2, 2, 8, vec![0; 8 + 6]).unwrap();
        assert_eq!(frame.row(1).len(), 6);
    }

    #[test]
    fn rejects_short_buffer_and_bad_stride() {
        assert!(matches!(
            Frame::from_rgb8(4, 4, vec![0; 47]),
            Err(TypesError::FrameBuffer {
                needed: 48,
                actual: 47,
                ..
            })
        ));
        assert!(matches!(
            Frame::new(4, 4, 11, vec![0; 64]),
            Err(TypesError::FrameGeometry { .. })
        ));
        assert!(matches!(
            Frame::from_rgb8(0, 4, vec![]),
            Err(TypesError::FrameGeometry { .. })
        ));
    }

    #[test]
    fn debug_never_shows_pixels() {
        let frame = Frame::from_rgb8(1, 1, vec![171, 205, 239]).unwrap();
        let text = format!("{frame:?}");
        assert!(!text.contains("171") && !text.contains("205"), "{text}");
    }
}
