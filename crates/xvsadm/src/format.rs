//! ipvsadm output formats.
