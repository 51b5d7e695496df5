//! A lock that works across processes: one `AtomicU32` in memory the workers share (SPEC §8),
//! holding the pid of its holder (0 = free).
//!
//! It guards the per-source table, held for well under a microsecond at accept and close,
//! so a waiter spins briefly, then yields the CPU (`sched_yield`) rather than sleeping in
//! the kernel: no futex, no syscall at all on the uncontended path. A holder killed inside
//! the critical section (SIGKILL from an operator or the OOM killer) would block every other
//! worker forever; the pid in the word lets a waiter notice that the holder no longer exists
//! and take the lock over ([`Guard::inherited`] tells the caller to repair what the dead
//! holder may have left half-done). The supervisor, which has a loop of its own to keep
//! turning, never waits: [`try_lock_after_death`] takes the lock from a pid it has just
//! reaped at once, or gives up.

use std::hint::spin_loop;
use std::sync::atomic::{AtomicU32, Ordering};

/// Spins before the first yield (a critical section is far shorter than a time slice).
const SPINS: u32 = 100;
/// Between two checks that the holder is still alive, in yields.
const CHECK_EVERY: u32 = 1000;

/// Proof that the lock is held; released on drop.
pub struct Guard<'a> {
    word: &'a AtomicU32,
    /// The previous holder died holding the lock: the data it guards may be inconsistent.
    pub inherited: bool,
}

/// Take the lock in `word`.
pub fn lock(word: &AtomicU32) -> Guard<'_> {
    let me = my_pid();
    let mut waited = 0u32;
    loop {
        let holder = match word.compare_exchange_weak(0, me, Ordering::Acquire, Ordering::Relaxed) {
            Ok(_) => {
                return Guard {
                    word,
                    inherited: false,
                }
            }
            Err(holder) => holder,
        };
        waited = waited.wrapping_add(1);
        if waited < SPINS {
            spin_loop();
            continue;
        }
        if waited.is_multiple_of(CHECK_EVERY) && holder != 0 && holder != me && !alive(holder) {
            let taken = word.compare_exchange(holder, me, Ordering::Acquire, Ordering::Relaxed);
            if taken.is_ok() {
                return Guard {
                    word,
                    inherited: true,
                };
            }
        }
        std::thread::yield_now();
    }
}

/// Try to take the lock in `word` after process `dead` has ended (the caller reaped it, so
/// its pid names nobody we could wait for): if `dead` holds it, take it over at once, without
/// waiting to see it gone (`inherited`); if it is free, or becomes free within a few spins,
/// take it. `None` when a live process holds it: a caller with a loop of its own to run
/// (the supervisor) tries again later rather than wait on a holder that may be stopped.
pub fn try_lock_after_death(word: &AtomicU32, dead: u32) -> Option<Guard<'_>> {
    let me = my_pid();
    let take = |from| {
        word.compare_exchange(from, me, Ordering::Acquire, Ordering::Relaxed)
            .is_ok()
    };
    if dead != 0 && dead != me && take(dead) {
        return Some(Guard {
            word,
            inherited: true,
        });
    }
    for _ in 0..SPINS {
        if take(0) {
            return Some(Guard {
                word,
                inherited: false,
            });
        }
        spin_loop();
    }
    None
}

/// This process's pid, cached: getpid(2) is a real system call (glibc stopped caching it),
/// which would double the cost of an admission. A fork handler clears the cache in the
/// child, so a worker never takes the lock in its parent's name.
fn my_pid() -> u32 {
    static PID: AtomicU32 = AtomicU32::new(0);
    static REGISTER: std::sync::Once = std::sync::Once::new();
    extern "C" fn forget() {
        PID.store(0, Ordering::Relaxed);
    }
    let cached = PID.load(Ordering::Relaxed);
    if cached != 0 {
        return cached;
    }
    REGISTER.call_once(|| {
        // SAFETY: registers a child-side fork handler that only stores to an atomic, which
        // is async-signal-safe as a handler run inside fork() must be.
        let rc = unsafe { libc::pthread_atfork(None, None, Some(forget)) };
        if rc != 0 {
            log::warn!("pthread_atfork failed ({rc}): the table lock may misname its holder");
        }
    });
    let pid = std::process::id();
    PID.store(pid, Ordering::Relaxed);
    pid
}

/// Does process `pid` exist? (`kill(pid, 0)`: ESRCH means it does not; EPERM that it does.)
fn alive(pid: u32) -> bool {
    let Ok(pid) = i32::try_from(pid) else {
        return false;
    };
    !matches!(
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None),
        Err(nix::errno::Errno::ESRCH)
    )
}

impl Drop for Guard<'_> {
    fn drop(&mut self) {
        self.word.store(0, Ordering::Release);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn excludes_and_releases() {
        let word = AtomicU32::new(0);
        let g = lock(&word);
        assert_eq!(word.load(Ordering::Relaxed), std::process::id());
        assert!(!g.inherited);
        drop(g);
        assert_eq!(word.load(Ordering::Relaxed), 0);
    }

    #[test]
    fn threads_take_turns() {
        struct Shared(AtomicU32, std::cell::UnsafeCell<u64>);
        // SAFETY: the u64 is only touched while the lock in .0 is held.
        unsafe impl Sync for Shared {}
        let s = Arc::new(Shared(AtomicU32::new(0), 0.into()));
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let s = Arc::clone(&s);
                std::thread::spawn(move || {
                    for _ in 0..10_000 {
                        let _g = lock(&s.0);
                        // SAFETY: we hold the lock.
                        unsafe { *s.1.get() += 1 };
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        let _g = lock(&s.0);
        // SAFETY: we hold the lock and every other thread has ended.
        assert_eq!(unsafe { *s.1.get() }, 40_000);
    }

    #[test]
    fn a_forked_child_holds_the_lock_in_its_own_name() {
        let word = AtomicU32::new(0);
        drop(lock(&word)); // caches the parent's pid
                           // SAFETY: the child only takes the lock, compares, and _exits.
        let child = unsafe { libc::fork() };
        assert!(child >= 0);
        if child == 0 {
            let g = lock(&word);
            let ok = word.load(Ordering::Relaxed) == std::process::id();
            drop(g);
            // SAFETY: ends the child at once, without the test harness's destructors.
            unsafe { libc::_exit(i32::from(!ok)) };
        }
        let mut status = 0;
        // SAFETY: waiting for our own child with a valid status pointer.
        assert_eq!(unsafe { libc::waitpid(child, &mut status, 0) }, child);
        assert!(libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0);
    }

    #[test]
    fn a_reaped_holder_is_taken_over_at_once() {
        // Pid 1 exists (kill(1, 0) says so), as a recycled pid would: `lock` would wait on
        // it for ever; the caller that reaped the holder knows better and takes it at once.
        let word = AtomicU32::new(1);
        let g = try_lock_after_death(&word, 1).expect("taken over");
        assert!(g.inherited);
        drop(g);
        let g = try_lock_after_death(&word, 1).expect("free");
        assert!(!g.inherited, "a free lock is simply taken");
        // Held by a live process that is not the one reaped: no waiting, try again later.
        let held = AtomicU32::new(1);
        assert!(try_lock_after_death(&held, 0x7fff_fff3).is_none());
        assert_eq!(held.load(Ordering::Relaxed), 1);
    }

    #[test]
    fn a_dead_holder_is_taken_over() {
        // A pid that cannot exist (above the kernel's pid_max of 4,194,304).
        let word = AtomicU32::new(0x7fff_fff0);
        let g = lock(&word);
        assert!(g.inherited);
        assert_eq!(word.load(Ordering::Relaxed), std::process::id());
    }
}
