//! Who is served, and how refusals are told: the access lists and per-source limits, which
//! peers' PROXY headers are trusted (and the header's parser), and the refusal log that
//! keeps a flood of refusals to one line a second per reason.

pub mod access;
pub mod proxy;
pub(crate) mod refusal;
