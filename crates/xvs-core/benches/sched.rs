//! Scheduling cost per new connection (being written).
fn main() {}
