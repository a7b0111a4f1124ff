//! Reconcile call-contract tests against a mocked API server
//! ([`crate::fixtures::api_server`]): every request's method, path and body is
//! asserted and answered in order. One suite per part of the controllers.

mod healing;
mod lifecycle;
mod on_chain;
