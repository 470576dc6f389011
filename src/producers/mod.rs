//! Load generation and verification (see the `producers` binary).
