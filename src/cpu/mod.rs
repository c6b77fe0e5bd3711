//! The native CPU backend behind [`crate::Device::Cpu`]: matrix products on the `gemm` crate,
//! convolutions lowered onto them, and the memory-bound ops split over threads.

pub mod conv;
pub mod elementwise;
pub mod matmul;
pub mod norm;
pub mod parallel;
pub mod pool;
pub mod reduce;
pub mod simd;

use crate::error::{Error, Result};

/// Keeps freed tensor memory in the process for reuse. glibc returns every allocation above
/// its mmap threshold (128 KiB, adjusted up to 32 MiB only on free patterns it recognises) to
/// the kernel on free; a backend that allocates each op's output afresh then spends much of a
/// VGG step in page faults and cross-core TLB shootdowns (measured with perf: about a quarter
/// of the samples in the kernel). Called when the CPU device is opened.
pub fn tune_allocator() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes allocator parameters; it is safe to call at any time.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 1 << 30);
        libc::mallopt(libc::M_TRIM_THRESHOLD, 1 << 30);
    }
}

/// Threads the CPU backend runs on (the size of rayon's global pool).
pub fn threads() -> usize {
    rayon::current_num_threads()
}

/// Stack of each thread of the pool: that of a main thread, since [`on_pool`] runs whole
/// commands on one.
const STACK_BYTES: usize = 8 << 20;

/// Starts the CPU backend's thread pool with `threads` threads (default: one a core); once per
/// process, before any CPU op runs.
pub fn start_pool(threads: Option<usize>) -> Result<()> {
    if threads == Some(0) {
        return Err(Error::Invalid("--threads must be at least 1".into()));
    }
    rayon::ThreadPoolBuilder::new()
        .num_threads(threads.unwrap_or(0))
        .stack_size(STACK_BYTES)
        .build_global()
        .map_err(|e| Error::Invalid(format!("the CPU backend's thread pool is already running ({e})")))
}

/// Runs `f` on a thread of the CPU backend's pool, so that the ops it calls fork from inside
/// the pool: the calling thread then works on one half of each split op itself, instead of
/// handing every op to the pool and sleeping until it is done.
pub fn on_pool<R: Send>(f: impl FnOnce() -> R + Send) -> R {
    rayon::scope(|_| f())
}

/// What the CPU backend runs on, for `geopath info` and benchmark reports.
#[derive(Debug, Clone)]
pub struct CpuDescription {
    /// The processor's model name.
    pub processor: String,
    /// The widest SIMD extensions the products use on it.
    pub simd: String,
    /// Threads of the backend.
    pub threads: usize,
}

/// Describes this machine's processor as the CPU backend sees it.
pub fn describe() -> CpuDescription {
    let processor = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|m| m.trim().to_string())
        })
        .unwrap_or_else(|| std::env::consts::ARCH.to_string());
    CpuDescription { processor, simd: simd_features(), threads: threads() }
}

#[cfg(target_arch = "x86_64")]
fn simd_features() -> String {
    let mut f = vec!["sse2"];
    if is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma") {
        f.push("avx2+fma");
    }
    if is_x86_feature_detected!("avx512f") {
        f.push("avx512f");
    }
    f.join(" ")
}

#[cfg(not(target_arch = "x86_64"))]
fn simd_features() -> String {
    std::env::consts::ARCH.to_string()
}
