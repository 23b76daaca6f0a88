//! Process settings fieldlab applies to itself, and takes back for the programs it starts.
//!
//! Why it exists: fieldlab opts itself out of transparent huge pages (see
//! [`no_transparent_huge_pages`]), and Linux passes that setting on to every child, across
//! `exec`. The peers a benchmark or test starts (InfluxDB, PostgreSQL, Redis, Mosquitto, wrk)
//! must run as they would on their own, so they are started with
//! `fieldlab_testkit::peer_command`, which gives them back the system's setting.

/// Opt this process out of transparent huge pages, as Redis, MongoDB and PostgreSQL advise for
/// themselves. mimalloc asks for huge pages on its arenas (`MADV_HUGEPAGE`), and every fresh
/// 2 MiB region is then zeroed at its first touch: `clear_page_erms` under
/// `do_huge_pmd_anonymous_page` was 21-42% of the `perf` samples of gateway-sized ingest
/// (`fieldlab bench ingest --batch 500 --format line`). Per process only
/// (`PR_SET_THP_DISABLE`); the system setting is left alone.
pub fn no_transparent_huge_pages() {
    #[cfg(target_os = "linux")]
    // SAFETY: prctl(PR_SET_THP_DISABLE) takes plain integers and touches no memory of ours.
    unsafe {
        libc::prctl(libc::PR_SET_THP_DISABLE, 1, 0, 0, 0);
    }
}

// The programs fieldlab starts for its tests and benchmarks get the system's setting back:
// see `fieldlab_testkit::peer_command`.
