//! ipvsadm sort order.
