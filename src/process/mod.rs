//! The two process shapes: `server`, the serving loop (the one process, or one worker of
//! `--workers`), and `supervisor`, which binds, forks the workers and keeps them running.
//! Both turn on the loop core in `event/`, each with its own end-of-turn duties.

pub(crate) mod server;
pub mod supervisor;
