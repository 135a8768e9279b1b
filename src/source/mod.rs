//! The source side: the replica handshake, the RDB transfer and the command stream of one source
//! master, driven by the [`ShardLink`] actor.

pub mod convert_run;
pub mod failure;
pub mod handshake;
pub mod link;
pub mod rdb_load;
pub mod stream;

pub use link::ShardLink;
