//! Source specifications as users write them (command line, config file).

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use crate::CaptureError;
use crate::camera::CameraDevice;
use crate::still::has_image_extension;

/// Which frame source to open, parsed from a string:
///
/// | string | source |
/// |---|---|
/// | `camera`, `camera:0` | camera by index (`/dev/video0`) |
/// | `/dev/video2`, `camera:/dev/v4l/by-id/...` | camera by device path |
/// | an existing directory, `folder:DIR` | the folder's images in name order |
/// | `*.y4m`, `y4m:PATH` | a YUV4MPEG2 stream |
/// | `*.jpg`, `*.jpeg`, `*.png`, `*.bmp`, `*.ppm`, `*.pgm`, `image:PATH` | one still image |
///
/// Parsing looks at the file system only to recognise directories; whether a file can be read
/// is found out by [`open`](crate::open).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum SourceSpec {
    Camera(CameraDevice),
    Folder(PathBuf),
    Y4m(PathBuf),
    Image(PathBuf),
}

/// Builds a spec from a path (one of the path variants).
type MakeSpec = fn(PathBuf) -> SourceSpec;

impl SourceSpec {
    /// Parses a source string (see the type's documentation).
    pub fn parse(spec: &str) -> Result<Self, CaptureError> {
        let invalid = |reason: &str| CaptureError::InvalidSpec {
            spec: spec.to_owned(),
            reason: reason.to_owned(),
        };
        if spec.is_empty() {
            return Err(invalid("empty source"));
        }
        if spec == "camera" {
            return Ok(Self::Camera(CameraDevice::Index(0)));
        }
        if let Some(rest) = spec.strip_prefix("camera:") {
            if rest.starts_with('/') {
                return Ok(Self::Camera(CameraDevice::Path(rest.into())));
            }
            return rest
                .parse::<u32>()
                .map(|i| Self::Camera(CameraDevice::Index(i)))
                .map_err(|_| invalid("expected camera:<index> or camera:<device path>"));
        }
        let explicit: [(&str, MakeSpec); 3] = [
            ("folder:", Self::Folder),
            ("y4m:", Self::Y4m),
            ("image:", Self::Image),
        ];
        for (prefix, make) in explicit {
            if let Some(rest) = spec.strip_prefix(prefix) {
                if rest.is_empty() {
                    return Err(invalid("missing path after the prefix"));
                }
                return Ok(make(PathBuf::from(rest)));
            }
        }
        let path = Path::new(spec);
        if spec.starts_with("/dev/") {
            return Ok(Self::Camera(CameraDevice::Path(path.to_path_buf())));
        }
        if path.is_dir() {
            return Ok(Self::Folder(path.to_path_buf()));
        }
        let is_y4m = path
            .extension()
            .and_then(|e| e.to_str())
            .is_some_and(|e| e.eq_ignore_ascii_case("y4m"));
        if is_y4m {
            return Ok(Self::Y4m(path.to_path_buf()));
        }
        if has_image_extension(path) {
            return Ok(Self::Image(path.to_path_buf()));
        }
        if path.exists() {
            Err(invalid(
                "unknown file type (expected .y4m, .jpg, .jpeg, .png, .bmp, .ppm or .pgm; or use \
                 a y4m:/image: prefix)",
            ))
        } else {
            Err(invalid(
                "no such directory, and not a camera, .y4m or image file name",
            ))
        }
    }
}

impl FromStr for SourceSpec {
    type Err = CaptureError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

impl fmt::Display for SourceSpec {
    /// A string that parses back to the same spec.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Camera(CameraDevice::Index(i)) => write!(f, "camera:{i}"),
            Self::Camera(CameraDevice::Path(p)) => write!(f, "camera:{}", p.display()),
            Self::Folder(p) => write!(f, "folder:{}", p.display()),
            Self::Y4m(p) => write!(f, "y4m:{}", p.display()),
            Self::Image(p) => write!(f, "image:{}", p.display()),
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn display_round_trips() {
        for spec in [
            SourceSpec::Camera(CameraDevice::Index(2)),
            SourceSpec::Camera(CameraDevice::Path("/dev/video1".into())),
            SourceSpec::Folder("some dir".into()),
            SourceSpec::Y4m("a.y4m".into()),
            SourceSpec::Image("b.png".into()),
        ] {
            assert_eq!(SourceSpec::parse(&spec.to_string()).unwrap(), spec);
        }
    }
}
