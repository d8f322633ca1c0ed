//! Anonymous memory asked for transparent huge pages (2 MiB): weights and the bandwidth probe's
//! array read through 4 KiB pages cost a TLB miss every 4 KiB (BENCHMARKS.md, "weights in huge
//! pages").

/// A zero-filled anonymous map of `len` bytes, advised `MADV_HUGEPAGE` on Linux before any page
/// is touched, so that the pages are allocated huge where the system has them (without them the
/// map works the same in 4 KiB pages). `None` when `len` is 0 or the map fails.
pub(crate) fn anonymous(len: usize) -> Option<memmap2::MmapMut> {
    if len == 0 {
        return None;
    }
    let map = memmap2::MmapMut::map_anon(len).ok()?;
    #[cfg(target_os = "linux")]
    {
        // Only a request: failure leaves the map in 4 KiB pages.
        let _ = map.advise(memmap2::Advice::HugePage);
    }
    Some(map)
}
