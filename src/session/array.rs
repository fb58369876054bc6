//! A dense row-major f32 array: the one tensor type views and explanations share.

/// A dense, row-major array of f32 with its shape.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Array {
    /// Dimensions, outermost first.
    pub shape: Vec<usize>,
    /// Values, row-major; `data.len()` is the product of `shape`.
    pub data: Vec<f32>,
}

impl Array {
    /// An array of zeros of the given shape.
    pub fn zeros(shape: &[usize]) -> Self {
        Self {
            shape: shape.to_vec(),
            data: vec![0.0; shape.iter().product()],
        }
    }

    /// Wraps `data` with `shape`; `None` when the sizes disagree.
    pub fn new(shape: Vec<usize>, data: Vec<f32>) -> Option<Self> {
        (shape.iter().product::<usize>() == data.len()).then_some(Self { shape, data })
    }

    /// Flat offset of a full index.
    pub fn offset(&self, index: &[usize]) -> usize {
        debug_assert_eq!(index.len(), self.shape.len());
        index
            .iter()
            .zip(&self.shape)
            .fold(0, |acc, (&i, &d)| acc * d + i)
    }

    /// The value at a full index.
    pub fn get(&self, index: &[usize]) -> f32 {
        self.data[self.offset(index)]
    }

    /// The contiguous innermost row at a leading index (all dims but the last).
    pub fn row(&self, leading: &[usize]) -> &[f32] {
        let last = *self.shape.last().unwrap_or(&0);
        let mut full = leading.to_vec();
        full.push(0);
        let start = self.offset(&full);
        &self.data[start..start + last]
    }

    /// Mutable access to the innermost row at a leading index.
    pub fn row_mut(&mut self, leading: &[usize]) -> &mut [f32] {
        let last = *self.shape.last().unwrap_or(&0);
        let mut full = leading.to_vec();
        full.push(0);
        let start = self.offset(&full);
        &mut self.data[start..start + last]
    }
}
