//! Buffers that start on a cache line, for data the kernels load whole vectors of: the allocator
//! aligns a `Vec` to 16 bytes only, and a vector load across two lines costs two.

/// Plain numbers for which every bit pattern, all zeros included, is a value. Sealed: the
/// buffer's safety rests on it, so no other crate may add a type.
pub trait Number: Copy + sealed::Sealed {}

mod sealed {
    pub trait Sealed {}
}

macro_rules! numbers {
    ($($t:ty),*) => {$(
        impl sealed::Sealed for $t {}
        impl Number for $t {}
    )*};
}
numbers!(u8, i8, i32, f32);

/// One cache line.
#[derive(Debug, Clone, Copy)]
#[repr(C, align(64))]
struct Line([u8; 64]);

/// Zero-initialised `T`s that start on a cache line.
#[derive(Debug, Default)]
pub struct LineAligned<T> {
    lines: Vec<Line>,
    len: usize,
    _of: std::marker::PhantomData<T>,
}

impl<T: Number> LineAligned<T> {
    pub fn zeros(len: usize) -> Self {
        LineAligned {
            lines: vec![Line([0; 64]); (len * size_of::<T>()).div_ceil(64)],
            len,
            _of: std::marker::PhantomData,
        }
    }

    /// A copy of `values`.
    pub fn copy_of(values: &[T]) -> Self {
        let mut buffer = Self::zeros(values.len());
        buffer.as_mut_slice().copy_from_slice(values);
        buffer
    }

    pub fn as_slice(&self) -> &[T] {
        // SAFETY: the lines hold at least `len · size_of::<T>()` initialised bytes, aligned for any
        // `T` (64 ≥ its alignment), and every bit pattern is a `T` (`Number`).
        unsafe { std::slice::from_raw_parts(self.lines.as_ptr().cast(), self.len) }
    }

    pub fn as_mut_slice(&mut self) -> &mut [T] {
        // SAFETY: as in `as_slice`, borrowed exclusively.
        unsafe { std::slice::from_raw_parts_mut(self.lines.as_mut_ptr().cast(), self.len) }
    }
}
