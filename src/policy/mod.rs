//! Who is served, and how refusals are told: the access lists and per-source limits, and
//! the refusal log that keeps a flood of refusals to one line a second per reason.

pub mod access;
pub(crate) mod refusal;
