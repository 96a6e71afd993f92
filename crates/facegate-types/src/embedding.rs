use std::fmt;

use zeroize::{Zeroize, ZeroizeOnDrop};

use crate::TypesError;

/// A face template: an L2-normalised feature vector.
///
/// The values are face information (Art. 19 of the Measures): `Debug` shows only the dimension,
/// the memory is zeroised on drop, and the type implements neither `Display` nor `Serialize`.
/// The store seals [`Embedding::as_slice`] before anything reaches a disk.
#[derive(Clone, PartialEq, Zeroize, ZeroizeOnDrop)]
pub struct Embedding(Box<[f32]>);

impl Embedding {
    /// Normalises `values` to unit length. Refuses empty, non-finite or zero vectors.
    pub fn from_raw(mut values: Vec<f32>) -> Result<Self, TypesError> {
        let dim = values.len();
        if dim == 0 {
            return Err(TypesError::Embedding {
                dim,
                reason: "empty",
            });
        }
        if values.iter().any(|v| !v.is_finite()) {
            values.zeroize();
            return Err(TypesError::Embedding {
                dim,
                reason: "not finite",
            });
        }
        let norm = values.iter().map(|v| v * v).sum::<f32>().sqrt();
        if norm < 1e-12 {
            values.zeroize();
            return Err(TypesError::Embedding {
                dim,
                reason: "zero norm",
            });
        }
        let inv = 1.0 / norm;
        for v in &mut values {
            *v *= inv;
        }
        Ok(Self(values.into_boxed_slice()))
    }

    /// The unit-length values.
    pub fn as_slice(&self) -> &[f32] {
        &self.0
    }

    /// Number of components.
    pub fn dim(&self) -> usize {
        self.0.len()
    }

    /// Cosine similarity in `[-1, 1]` (a dot product, both sides being unit length).
    ///
    /// # Panics
    /// If the dimensions differ: comparing templates of different models is a logic error.
    pub fn cosine(&self, other: &Embedding) -> f32 {
        assert_eq!(self.dim(), other.dim(), "embedding dimensions differ");
        self.0.iter().zip(other.0.iter()).map(|(a, b)| a * b).sum()
    }

    /// The mean of several embeddings of one person, renormalised (used to fuse an enrollment).
    pub fn mean(items: &[Embedding]) -> Result<Self, TypesError> {
        let Some(first) = items.first() else {
            return Err(TypesError::Embedding {
                dim: 0,
                reason: "no embeddings to average",
            });
        };
        let dim = first.dim();
        let mut acc = vec![0.0f32; dim];
        for e in items {
            if e.dim() != dim {
                acc.zeroize();
                return Err(TypesError::Embedding {
                    dim: e.dim(),
                    reason: "dimensions differ",
                });
            }
            for (a, v) in acc.iter_mut().zip(e.as_slice()) {
                *a += v;
            }
        }
        Self::from_raw(acc)
    }
}

impl fmt::Debug for Embedding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Embedding(dim={}, <redacted>)", self.0.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalises_and_compares() {
        let a = Embedding::from_raw(vec![3.0, 4.0]).unwrap();
        assert!((a.as_slice()[0] - 0.6).abs() < 1e-6);
        let b = Embedding::from_raw(vec![4.0, -3.0]).unwrap();
        assert!(a.cosine(&b).abs() < 1e-6);
        assert!((a.cosine(&a) - 1.0).abs() < 1e-6);
    }

    #[test]
    fn refuses_degenerate_vectors() {
        assert!(Embedding::from_raw(vec![]).is_err());
        assert!(Embedding::from_raw(vec![0.0, 0.0]).is_err());
        assert!(Embedding::from_raw(vec![f32::NAN, 1.0]).is_err());
    }

    #[test]
    fn debug_is_redacted() {
        let a = Embedding::from_raw(vec![0.123_456, 0.5]).unwrap();
        let text = format!("{a:?}");
        assert_eq!(text, "Embedding(dim=2, <redacted>)");
    }

    #[test]
    fn mean_of_two_is_between_them() {
        let a = Embedding::from_raw(vec![1.0, 0.0]).unwrap();
        let b = Embedding::from_raw(vec![0.0, 1.0]).unwrap();
        let m = Embedding::mean(&[a.clone(), b]).unwrap();
        assert!((m.cosine(&a) - std::f32::consts::FRAC_1_SQRT_2).abs() < 1e-6);
    }
}
