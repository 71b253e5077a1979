//! glibc's allocator, tuned once at start (issue #16: RSS per unreported send).
//!
//! glibc maps a block of `M_MMAP_THRESHOLD` bytes or more on its own and unmaps it when it is
//! freed. By default that threshold *moves*: each time a mapped block is freed, the threshold
//! rises to its size, so after the first pair table or permit ledger outgrows its block, every
//! later table of that size comes from the heap, and the blocks a growing table leaves behind
//! stay there as holes the process keeps paying for. Fixing the threshold at 32 KiB (which also
//! stops it moving) measured about 6.5 bytes less RSS per allowed, unreported send, 67.4 → 61.0
//! (BENCHMARKS.md, "Memory per allowed, unreported send"). It is `server.malloc_mmap_threshold`;
//! 0 keeps glibc's default, and so does a `MALLOC_MMAP_THRESHOLD_` or a `GLIBC_TUNABLES` naming
//! the threshold in the environment (the operator's own choice wins).
//!
//! Every mapped block is one of the process's memory maps, which the kernel bounds
//! (`vm.max_map_count`, 65,530 by default) for thread stacks and files too. So the number of
//! blocks glibc maps at once is capped as well ([`MAX_MAPPED_BLOCKS`]); past it, blocks come from
//! the heap, as they would with glibc's default.
//!
//! This is the binary's one `unsafe` code: `mallopt` has no safe wrapper. Other allocators
//! (and other C libraries) are left alone.

/// Most blocks glibc keeps mapped at once (`M_MMAP_MAX`): a quarter of the kernel's default
/// `vm.max_map_count`, so that 10,000s of busy orgs' tables cannot take the maps that threads
/// and files need. glibc's own default (65,536) is above the kernel's.
pub const MAX_MAPPED_BLOCKS: i32 = 16_384;

/// What setting the threshold did, for the start-up log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tuned {
    /// The threshold is now this many bytes.
    #[cfg_attr(not(all(target_os = "linux", target_env = "gnu")), allow(dead_code))]
    Fixed(usize),
    /// Left as it was: 0 was asked for.
    Default,
    /// Left as it was: the environment sets glibc's threshold (named here).
    FromEnvironment(&'static str),
    /// Not glibc on Linux: nothing to set.
    #[cfg_attr(all(target_os = "linux", target_env = "gnu"), allow(dead_code))]
    Unsupported,
    /// glibc refused the value.
    #[cfg_attr(not(all(target_os = "linux", target_env = "gnu")), allow(dead_code))]
    Refused(usize),
}

/// Which variable of `env` already sets glibc's mmap threshold, if one does.
pub fn set_by_environment(env: impl IntoIterator<Item = (String, String)>) -> Option<&'static str> {
    env.into_iter().find_map(|(k, v)| match k.as_str() {
        "MALLOC_MMAP_THRESHOLD_" => Some("MALLOC_MMAP_THRESHOLD_"),
        "GLIBC_TUNABLES" if v.contains("glibc.malloc.mmap_threshold") => Some("GLIBC_TUNABLES"),
        _ => None,
    })
}

/// Sets glibc's mmap threshold to `bytes` and caps its mapped blocks at
/// [`MAX_MAPPED_BLOCKS`] (0: leave both). The config has checked the range (`mallopt(3)`
/// documents 32 MiB as the most on 64-bit).
#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[allow(unsafe_code)]
pub fn set_mmap_threshold(bytes: usize) -> Tuned {
    if bytes == 0 {
        return Tuned::Default;
    }
    let Ok(value) = libc::c_int::try_from(bytes) else {
        return Tuned::Refused(bytes);
    };
    // SAFETY: `mallopt` takes no pointers and has no preconditions: it sets one of the
    // allocator's parameters, which glibc changes under its main arena's lock. It returns 1 on
    // success and 0 for a value it refuses.
    let ok = unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, value) == 1
            && libc::mallopt(libc::M_MMAP_MAX, MAX_MAPPED_BLOCKS) == 1
    };
    if ok {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    #[test]
    fn glibc_takes_a_threshold_and_0_leaves_it() {
        assert_eq!(set_mmap_threshold(0), Tuned::Default);
        assert_eq!(set_mmap_threshold(32_768), Tuned::Fixed(32_768));
        // Past what `mallopt`'s `int` holds: refused before glibc is asked. (glibc's own upper
        // limit differs between versions; the config keeps to the documented 32 MiB.)
        assert_eq!(set_mmap_threshold(usize::MAX), Tuned::Refused(usize::MAX));
    }

    #[test]
    fn the_operators_own_setting_is_seen() {
        let env = |k: &str, v: &str| vec![(k.to_owned(), v.to_owned())];
        assert_eq!(
            set_by_environment(env("MALLOC_MMAP_THRESHOLD_", "65536")),
            Some("MALLOC_MMAP_THRESHOLD_")
        );
        assert_eq!(
            set_by_environment(env("GLIBC_TUNABLES", "glibc.malloc.mmap_threshold=65536")),
            Some("GLIBC_TUNABLES")
        );
        assert_eq!(
            set_by_environment(env("GLIBC_TUNABLES", "glibc.malloc.arena_max=2")),
            None
        );
        assert_eq!(set_by_environment(env("PATH", "/bin")), None);
    }
}
