//! Wanted versus registered: every socket the loop watches computes the interest it wants
//! from its own state, and the poller is told only when that differs from what it holds.
//! Connections, UDP sockets, listeners and metrics exchanges all bring their registration up
//! to date through [`sync`].

use std::io;

use super::reactor::Interest;

/// Bring `registered` (what the poller holds) to `want`: `apply(old, new)` tells the poller,
/// only when the two differ, and `registered` follows only if it succeeded.
pub fn sync(
    registered: &mut Interest,
    want: Interest,
    apply: impl FnOnce(Interest, Interest) -> io::Result<()>,
) -> io::Result<()> {
    if want == *registered {
        return Ok(());
    }
    apply(*registered, want)?;
    *registered = want;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_poller_hears_only_of_changes_that_took() {
        let mut registered = Interest::READ;
        let mut calls = 0;
        sync(&mut registered, Interest::READ, |_, _| {
            calls += 1;
            Ok(())
        })
        .unwrap();
        assert_eq!(calls, 0, "no change, no call");
        let err = sync(&mut registered, Interest::NONE, |_, _| {
            Err(io::Error::other("refused"))
        });
        assert!(err.is_err());
        assert_eq!(
            registered,
            Interest::READ,
            "a failed change is not recorded"
        );
        sync(&mut registered, Interest::NONE, |old, new| {
            assert_eq!((old, new), (Interest::READ, Interest::NONE));
            Ok(())
        })
        .unwrap();
        assert_eq!(registered, Interest::NONE);
    }
}
