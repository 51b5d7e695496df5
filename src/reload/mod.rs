//! SIGHUP: reload in place (SPEC §13). The old image asks the new binary whether it can take
//! over (`check`), writes every owner's state into a memfd (`state`), and executes the binary
//! again with the same pid and descriptors (`exec`); the new image adopts them.
//! docs/state-format.md describes the bytes and the order of a reload.

pub mod state;
