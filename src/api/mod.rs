//! The operator's HTTP endpoints: the REST API and the metrics exposition.
pub mod http;
pub mod json;
pub mod rest;
