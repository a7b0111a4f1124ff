//! Process-wide memory settings, applied before anything allocates much.

/// Turns transparent huge pages off for this process and its children.
///
/// The node's allocator hands out memory in large arenas. With huge pages
/// allowed, every fresh arena page the kernel maps is a 2 MiB page zeroed at
/// first touch, even when a few kilobytes of it are used before the memory
/// is returned: at saturation, zeroing pages took about a tenth of the CPU
/// of four loaded replicas. Databases on RocksDB commonly run with huge
/// pages off for the same reason. Failure (an old kernel) only costs speed.
pub fn disable_transparent_huge_pages() {
    #[cfg(target_os = "linux")]
    {
        // SAFETY: PR_SET_THP_DISABLE takes integer arguments only and
        // changes no memory of this process. The result is ignored: logging
        // is not set up yet, and a refusal changes nothing but speed.
        let _ = unsafe { libc::prctl(libc::PR_SET_THP_DISABLE, 1, 0, 0, 0) };
    }
}
