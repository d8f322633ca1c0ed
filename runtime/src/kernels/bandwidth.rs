//! A memory read-bandwidth probe: the machine's roofline for token generation, measured as a sum
//! over a large array with the kernel path's widest loads, several accumulators and the kernels'
//! prefetches, on all threads, best of several passes (explicit wide loads: compiler-vectorised
//! loops reach only about 2/3 of it). The array is in huge pages where the system has them, as a
//! resident model is ([`bitnet_format::BitnetFile::into_resident`]): in 4 KiB pages the probe read
//! less than a resident model's generation does (36–38 against 40–44 GB/s on the machine of
//! BENCHMARKS.md).

use std::time::Instant;

use rayon::prelude::*;

use super::{Isa, KernelPath};

/// Sum of all bytes of `data` as u64 lanes (the value is irrelevant; it keeps the loads alive), with
/// the widest loads `path` has.
fn sum_words(path: KernelPath, data: &[u64]) -> u64 {
    match path.isa() {
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512 => {
            // SAFETY: a `KernelPath` for this instruction set exists only when the CPU has AVX-512 F.
            unsafe { sum_avx512(data) }
        }
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 | Isa::AvxVnni => {
            // SAFETY: a `KernelPath` for these instruction sets exists only when the CPU has AVX2.
            unsafe { sum_avx2(data) }
        }
        #[cfg(target_arch = "aarch64")]
        // SAFETY: NEON is part of every AArch64 CPU.
        Isa::Neon | Isa::NeonDot => unsafe { super::neon::sum_words(data) },
        _ => {
            let mut acc = [0u64; 8];
            for chunk in data.chunks_exact(8) {
                for (a, v) in acc.iter_mut().zip(chunk) {
                    *a = a.wrapping_add(*v);
                }
            }
            acc.iter().fold(0, |s, v| s.wrapping_add(*v))
        }
    }
}

/// Defines `$name`, [`sum_words`] with one x86 vector width (`$words` u64 per vector): eight
/// accumulators, so that the adds never wait on each other, and each line asked for ahead as the
/// weight kernels ask ([`super::prefetch`]; without it the probe read 1–9% less, BENCHMARKS.md).
/// `data.len()` must be a multiple of `8 · $words` for every word to count (the probe's chunks are
/// multiples of 64).
macro_rules! x86_sum {
    ($name:ident, $features:literal, $vec:ty, $words:literal, $zero:ident, $load:ident, $add:ident) => {
        #[cfg(target_arch = "x86_64")]
        #[target_feature(enable = $features)]
        unsafe fn $name(data: &[u64]) -> u64 {
            use std::arch::x86_64::*;
            // SAFETY: the bytes of `data`, borrowed as long as it is.
            let bytes = unsafe {
                std::slice::from_raw_parts(data.as_ptr().cast::<u8>(), std::mem::size_of_val(data))
            };
            let mut acc = [$zero(); 8];
            for c in 0..data.len() / (8 * $words) {
                for line in (0..64 * $words).step_by(64) {
                    super::prefetch(bytes, 64 * $words * c + line);
                }
                for (j, a) in acc.iter_mut().enumerate() {
                    // SAFETY: `(8c + j + 1) · $words <= data.len()`.
                    let v = unsafe { $load(data.as_ptr().add((8 * c + j) * $words).cast()) };
                    *a = $add(*a, v);
                }
            }
            let total = acc.iter().fold($zero(), |s, a| $add(s, *a));
            // SAFETY: a vector of `$words` u64 lanes has the size and bits of the array.
            let lanes: [u64; $words] = unsafe { std::mem::transmute::<$vec, [u64; $words]>(total) };
            lanes.iter().fold(0, |s, v| s.wrapping_add(*v))
        }
    };
}

x86_sum!(
    sum_avx512,
    "avx512f",
    __m512i,
    8,
    _mm512_setzero_si512,
    _mm512_loadu_si512,
    _mm512_add_epi64
);
x86_sum!(
    sum_avx2,
    "avx2",
    __m256i,
    4,
    _mm256_setzero_si256,
    _mm256_loadu_si256,
    _mm256_add_epi64
);

/// Best read bandwidth in bytes per second over `passes` sums of a `bytes`-sized array, split across
/// the current rayon pool's threads.
pub fn measure(path: KernelPath, bytes: usize, passes: usize) -> f64 {
    let words = bytes / 8 / 64 * 64;
    let mut owned;
    let mut map = crate::huge_pages::anonymous(words * 8);
    let data: &mut [u64] = match &mut map {
        Some(map) => {
            // SAFETY: the map is page-aligned (so aligned for u64), `words · 8` bytes long,
            // zero-filled (a valid u64 array) and borrowed mutably for the slice's life.
            unsafe { std::slice::from_raw_parts_mut(map.as_mut_ptr().cast(), words) }
        }
        None => {
            owned = vec![0u64; words];
            &mut owned
        }
    };
    data.iter_mut().zip(0..).for_each(|(w, i)| *w = i);
    let data = &*data;
    let threads = rayon::current_num_threads();
    let chunk = words.div_ceil(threads).next_multiple_of(64);
    let mut best = 0.0f64;
    let mut sink = 0u64;
    for _ in 0..passes {
        let start = Instant::now();
        sink ^= data
            .par_chunks(chunk)
            .map(|c| sum_words(path, c))
            .reduce(|| 0, |a, b| a.wrapping_add(b));
        best = best.max((words * 8) as f64 / start.elapsed().as_secs_f64());
    }
    std::hint::black_box(sink);
    best
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_path_sums_every_word() {
        // 3 · 64 words: whole chunks of every width; values that carry across bits.
        let data: Vec<u64> = (0..192u64)
            .map(|i| i.wrapping_mul(0x9e37_79b9_7f4a_7c15))
            .collect();
        let expected = data.iter().fold(0u64, |s, v| s.wrapping_add(*v));
        for path in KernelPath::available() {
            assert_eq!(sum_words(path, &data), expected, "{path:?}");
        }
        assert!(measure(KernelPath::SCALAR, 1 << 20, 2) > 0.0);
    }
}
