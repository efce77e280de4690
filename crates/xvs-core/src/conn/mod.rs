//! The connection table. Being written.
