//! Runtime choice of the vector instruction set for the CPU backend's own loops. The crate is
//! built for baseline x86-64 (SSE2, 4 lanes) so that one binary runs on any x86-64 machine;
//! the memory-bound loops (BatchNorm sums, im2col, pooling) are compiled a second time for
//! AVX2 and picked at run time when the CPU has it. The matrix products dispatch on their own
//! (the `gemm` crate).

/// Whether this CPU has AVX2 and FMA (the standard library caches the answer).
#[cfg(target_arch = "x86_64")]
#[inline(always)]
pub fn has_avx2() -> bool {
    std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma")
}

/// Defines a function whose body is compiled twice, for baseline x86-64 and for AVX2 + FMA,
/// and picks the AVX2 copy at run time where the CPU has it (elsewhere: the one body). The
/// body goes into an `#[inline(always)]` function so that LLVM widens it in the AVX2 copy;
/// arguments are plain `name: type` pairs.
macro_rules! vectorized_fn {
    ($(#[$meta:meta])* $vis:vis fn $name:ident($($arg:ident: $ty:ty),* $(,)?) $(-> $ret:ty)? $body:block) => {
        $(#[$meta])*
        $vis fn $name($($arg: $ty),*) $(-> $ret)? {
            #[inline(always)]
            fn body($($arg: $ty),*) $(-> $ret)? $body
            #[cfg(target_arch = "x86_64")]
            if $crate::cpu::simd::has_avx2() {
                #[target_feature(enable = "avx2,fma")]
                fn avx2($($arg: $ty),*) $(-> $ret)? {
                    body($($arg),*)
                }
                // SAFETY: the CPU supports AVX2 and FMA (checked just above).
                return unsafe { avx2($($arg),*) };
            }
            body($($arg),*)
        }
    };
}

pub(crate) use vectorized_fn;
