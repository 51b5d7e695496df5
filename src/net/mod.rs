//! The network edge below the services: addresses in one canonical form.

pub mod addr;
