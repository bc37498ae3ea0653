//! The shipped examples (`deploy/examples/`) run against real planes: the Python client and
//! the example authentication module.

mod auth_module;
pub(crate) mod python;
