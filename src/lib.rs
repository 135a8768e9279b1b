//! shardsync: one-way, continuous Redis replication (full sync, then the command stream) from a
//! standalone Redis or Redis Cluster into another.
//!
//! The crate is a library with a thin CLI (`src/main.rs`). Pure protocol and format code lives in
//! [`resp`], [`rdb`] and [`convert`]; the actors that hold state live in [`source`], [`target`]
//! and [`supervisor`].

pub mod cmd;
pub mod convert;
pub mod rdb;
pub mod resp;
pub mod server_info;
