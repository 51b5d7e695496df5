//! One skeleton for every loop of the daemon, the serving loop's and the supervisor's
//! (Redis ae.c: `aeMain` turning `aeProcessEvents`, with its `beforesleep` and `aftersleep`
//! hooks). A turn: wait until the nearest deadline, take the time ([`Duties::after_sleep`]),
//! handle every event, fire the due timers, then the end-of-turn work
//! ([`Duties::before_sleep`]), which is also where a loop decides that it is done.

use std::time::{Duration, Instant};

use super::reactor::{Backend, Event};
use super::wait::wait;
use crate::error::Error;

/// What a loop does in each step of a turn; [`run`] does the turning.
pub trait Duties {
    /// What the loop ends with.
    type Exit;

    /// The poller the loop waits on.
    fn backend(&mut self) -> &mut dyn Backend;

    /// How long the wait may last: until the nearest deadline (`None`: no deadline).
    fn timeout(&mut self, now: Instant) -> Option<Duration>;

    /// Right after the wait: `now` is this turn's time.
    fn after_sleep(&mut self, now: Instant);

    /// One event of the wait, in the order the backend reported them.
    fn on_event(&mut self, ev: Event);

    /// Fire every timer that is due; `Some` ends the loop at once.
    fn on_timers(&mut self) -> Result<Option<Self::Exit>, Error>;

    /// The end of the turn, before the next wait; `Some` ends the loop.
    fn before_sleep(&mut self) -> Option<Self::Exit>;
}

/// Turn `duties`' loop until one of its steps ends it. Only a failing backend (or a step's
/// own error) is an error.
pub fn run<D: Duties>(duties: &mut D, capacity: usize) -> Result<D::Exit, Error> {
    let mut events = Vec::with_capacity(capacity);
    loop {
        let timeout = duties.timeout(Instant::now());
        wait(duties.backend(), &mut events, timeout)?;
        duties.after_sleep(Instant::now());
        for ev in &events {
            duties.on_event(*ev);
        }
        if let Some(exit) = duties.on_timers()? {
            return Ok(exit);
        }
        if let Some(exit) = duties.before_sleep() {
            return Ok(exit);
        }
    }
}
