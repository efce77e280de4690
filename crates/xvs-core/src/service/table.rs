//! The service table (add/edit/delete/clear of services and dests). Being written.
