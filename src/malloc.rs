//! glibc's allocator, tuned once at start (issue #16: RSS per unreported send).
//!
//! glibc maps a block of `M_MMAP_THRESHOLD` bytes or more on its own and unmaps it when it is
//! freed. By default that threshold *moves*: each time a mapped block is freed, the threshold
//! rises to its size, so after the first pair table or permit ledger outgrows its block, every
//! later table of that size comes from the heap, and the blocks a growing table leaves behind
//! stay there as holes the process keeps paying for. Fixing the threshold at 32 KiB (which also
//! stops it moving) measured about 6.5 bytes less RSS per allowed, unreported send, 67.4 → 61.0
//! (BENCHMARKS.md, "Memory per allowed, unreported send"). It is `server.malloc_mmap_threshold`; 0 keeps glibc's default.
//!
//! This is the binary's one `unsafe` call: `mallopt` has no safe wrapper. Other allocators
//! (and other C libraries) are left alone.

/// What setting the threshold did, for the start-up log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tuned {
    /// The threshold is now this many bytes.
    Fixed(usize),
    /// Left as it was: 0 was asked for.
    Default,
    /// Not glibc on Linux: nothing to set.
    #[cfg_attr(all(target_os = "linux", target_env = "gnu"), allow(dead_code))]
    Unsupported,
    /// glibc refused the value.
    Refused(usize),
}

/// Sets glibc's mmap threshold to `bytes` (0: leave it). The config has checked the range
/// (`mallopt(3)` documents 32 MiB as the most on 64-bit).
#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[allow(unsafe_code)]
pub fn set_mmap_threshold(bytes: usize) -> Tuned {
    if bytes == 0 {
        return Tuned::Default;
    }
    let Ok(value) = libc::c_int::try_from(bytes) else {
        return Tuned::Refused(bytes);
    };
    // SAFETY: `mallopt` only sets one of the allocator's parameters, under the allocator's own
    // lock; it takes no pointers and is safe to call at any time from any thread.
    let ok = unsafe { libc::mallopt(libc::M_MMAP_THRESHOLD, value) };
    if ok == 1 {
        Tuned::Fixed(bytes)
    } else {
        Tuned::Refused(bytes)
    }
}

/// Sets glibc's mmap threshold to `bytes` (0: leave it): not glibc, nothing to set.
#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
pub fn set_mmap_threshold(bytes: usize) -> Tuned {
    if bytes == 0 {
        Tuned::Default
    } else {
        Tuned::Unsupported
    }
}

#[cfg(all(test, target_os = "linux", target_env = "gnu"))]
mod tests {
    use super::*;

    #[test]
    fn glibc_takes_a_threshold_and_0_leaves_it() {
        assert_eq!(set_mmap_threshold(0), Tuned::Default);
        assert_eq!(set_mmap_threshold(32_768), Tuned::Fixed(32_768));
        // Past what `mallopt`'s `int` holds: refused before glibc is asked. (glibc's own upper
        // limit differs between versions; the config keeps to the documented 32 MiB.)
        assert_eq!(set_mmap_threshold(usize::MAX), Tuned::Refused(usize::MAX));
    }
}
