//! Integration tests: each module runs the real binary (or the library) on loopback.
