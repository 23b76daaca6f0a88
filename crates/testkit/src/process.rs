//! Starting peer programs (servers and load generators fieldlab is compared with or tested
//! against) as they would run on their own, and reading what a test client printed.
//!
//! Why it exists: fieldlab opts itself out of transparent huge pages
//! (`fieldlab_core::process::no_transparent_huge_pages`), and Linux passes that setting on to
//! every child across `exec`; a peer started with [`peer_command`] gets the system's setting
//! back, so a comparison measures the peer as its users run it.

use std::ffi::OsStr;
use std::process::Command;

/// A `Command` for a peer program (a server or load generator fieldlab is compared with or
/// tested against): it runs with the system's huge-page setting, not fieldlab's own.
pub fn peer_command(program: impl AsRef<OsStr>) -> Command {
    #[allow(unused_mut)]
    let mut c = Command::new(program);
    #[cfg(target_os = "linux")]
    {
        use std::os::unix::process::CommandExt;
        // SAFETY: between fork and exec this only calls prctl, which is async-signal-safe
        // and allocates nothing.
        unsafe {
            c.pre_exec(|| {
                libc::prctl(libc::PR_SET_THP_DISABLE, 0, 0, 0, 0);
                Ok(())
            });
        }
    }
    c
}

/// What a test client (a script that speaks to fieldlab as a user's program would, e.g. the
/// python-asyncua OPC UA client) printed on stdout, as JSON. A failed run, or output that is
/// not JSON, panics with what the client printed.
pub fn client_json(out: &std::process::Output) -> serde_json::Value {
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "client failed\nstdout: {stdout}\nstderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_str(stdout.trim()).unwrap_or_else(|e| panic!("{e}: {stdout}"))
}

#[cfg(test)]
mod tests {
    #[test]
    #[cfg(target_os = "linux")]
    fn peers_get_the_system_huge_page_setting_back() {
        // Run in a child process of the test binary's own: the setting is per process.
        fieldlab_core::process::no_transparent_huge_pages();
        let flag = |mut c: std::process::Command| {
            let out = c
                .args(["-c", "grep THP_enabled /proc/self/status"])
                .output()
                .unwrap();
            String::from_utf8_lossy(&out.stdout).trim().to_string()
        };
        let plain = flag(std::process::Command::new("sh"));
        let peer = flag(super::peer_command("sh"));
        // Kernels before 6.x have no THP_enabled line; then there is nothing to compare.
        if !plain.is_empty() {
            assert_eq!(plain, "THP_enabled:\t0", "the setting is inherited");
            assert_eq!(peer, "THP_enabled:\t1", "a peer gets it back");
        }
        // SAFETY: as in no_transparent_huge_pages.
        unsafe {
            libc::prctl(libc::PR_SET_THP_DISABLE, 0, 0, 0, 0);
        }
    }
}
