//! Taurus client library.
