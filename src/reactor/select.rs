//! PROVISIONAL: the real select backend lands from the `backends` branch; until then it refuses.
use super::*;
/// Not yet available.
pub struct Select;
impl Select {
    /// Not yet available.
    pub fn new() -> Select {
        Select
    }
}
impl Backend for Select {
    fn name(&self) -> &'static str {
        "select"
    }
    fn set_interest(&mut self, _: RawFd, _: Token, _: Interest, _: Interest) -> io::Result<()> {
        Err(io::ErrorKind::Unsupported.into())
    }
    fn wait(&mut self, _: &mut Vec<Event>, _: Option<Duration>) -> io::Result<()> {
        Err(io::ErrorKind::Unsupported.into())
    }
}
