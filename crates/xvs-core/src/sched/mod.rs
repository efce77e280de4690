//! Schedulers with the kernel's semantics. Being written.
