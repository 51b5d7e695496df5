//! However a worker ends, it is reaped and replaced, and SIGTERM still works afterwards
//! (SPEC §8, issue 15 item 2). A real-time signal death is decoded by the same code in a
//! unit test (supervisor::life); workers ignore real-time signals since item 10, so here
//! signals that still kill stand in for them (SIGABRT, SIGTRAP: a SIGSEGV sent with kill is
//! taken once by the Rust runtime's stack-overflow handler, which then restores the default).

use nix::sys::signal::Signal;

use crate::util::client::{echo_exact, fresh_seed};
use crate::workers::pool::{is_gone, Pool, PATIENCE};

/// A worker killed by SIGABRT, then one killed by SIGTRAP: each is named in the warning,
/// replaced, and the daemon serves; SIGTERM then drains and exits 0 (no worker pid is left
/// that the supervisor would wait for or signal).
#[test]
fn a_worker_killed_by_a_fault_is_replaced_and_sigterm_still_works() {
    let Some(mut p) = Pool::start("epoll", 2, &[]) else {
        return;
    };
    for (k, sig, name) in [(1, libc::SIGABRT, "SIGABRT"), (2, libc::SIGTRAP, "SIGTRAP")] {
        let pid = p.worker_pid(k);
        let no_core = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        let mark = p.d.mark();
        // SAFETY: prlimit and kill on a worker this test started; `no_core` is valid.
        unsafe {
            // No core file from this test: the fault is sent, not real.
            libc::prlimit(pid, libc::RLIMIT_CORE, &no_core, std::ptr::null_mut());
            assert_eq!(libc::kill(pid, sig), 0);
        }
        p.d.expect_line(
            mark,
            // (`(core dumped)` may follow where core_pattern pipes to a helper.)
            &format!("worker {k} (pid {pid}) killed by {name}"),
            PATIENCE,
        );
        let new = p.wait_replaced(k, mark, PATIENCE);
        assert_ne!(new, pid);
        assert!(is_gone(pid));
    }
    for _ in 0..10 {
        echo_exact(&p.d.connect(), fresh_seed(), 5000, true).unwrap_or_else(|e| p.d.fail(&e));
    }
    if p.d.stderr().contains("waitpid") || p.d.stderr().contains("ESRCH") {
        p.d.fail("waitpid failed or a reaped pid was signalled");
    }
    let pids = p.worker_pids();
    p.d.signal(Signal::SIGTERM);
    assert_eq!(
        p.d.wait_exit(PATIENCE).code(),
        Some(0),
        "{}",
        p.d.describe()
    );
    for pid in pids {
        assert!(is_gone(pid));
    }
}
