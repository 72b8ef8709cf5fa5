//! Test helpers: a real anvil on a free loopback port, a fault-injecting TCP proxy, and
//! Drop guards that kill every child process, also when a test panics.
#![allow(dead_code)]

pub mod anvil;
pub mod dataserver;
pub mod proxy;

pub mod codex;
pub mod devchain;
pub mod emitter;
pub mod follow;
pub mod node;
pub mod tls;
