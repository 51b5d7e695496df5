//! Opening the poller and one turn's wait: the policy above the backend seam that every loop
//! of the daemon shares (the one-process loop, each worker's and the supervisor's).

use std::io;
use std::time::Duration;

use crate::error::Error;
use crate::event::reactor::{self, Backend, BackendKind, Event};

/// Open the `--backend` poller; failing to is fatal, naming the backend. For the
/// one-process daemon, the supervisor and each worker alike.
pub(crate) fn open_backend(kind: BackendKind) -> Result<Box<dyn Backend>, Error> {
    reactor::open(kind).map_err(|source| Error::Backend {
        name: kind.resolve().name(),
        source,
    })
}

/// One turn's wait, for every loop in the daemon (this one and the supervisor's), so the
/// policy above the backend seam lives once: pending log lines are flushed first and cap the
/// sleep (stderr is retried, never waited on); an interrupted wait is an empty turn; any
/// other failure of the backend is fatal.
pub(crate) fn wait(
    backend: &mut dyn Backend,
    events: &mut Vec<Event>,
    timeout: Option<Duration>,
) -> Result<(), Error> {
    let timeout = crate::logging::flush(timeout);
    match backend.wait(events, timeout) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::Interrupted => {
            events.clear();
            Ok(())
        }
        Err(source) => Err(Error::Backend {
            name: backend.name(),
            source,
        }),
    }
}
