//! PROVISIONAL: the real poll backend lands from the `backends` branch; until then it refuses.
use super::*;
/// Not yet available.
pub struct Poll;
impl Poll {
    /// Not yet available.
    pub fn new() -> Poll {
        Poll
    }
}
impl Backend for Poll {
    fn name(&self) -> &'static str {
        "poll"
    }
    fn set_interest(&mut self, _: RawFd, _: Token, _: Interest, _: Interest) -> io::Result<()> {
        Err(io::ErrorKind::Unsupported.into())
    }
    fn wait(&mut self, _: &mut Vec<Event>, _: Option<Duration>) -> io::Result<()> {
        Err(io::ErrorKind::Unsupported.into())
    }
}
