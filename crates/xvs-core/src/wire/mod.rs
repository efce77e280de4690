//! Zero-copy wire views. Being written.
