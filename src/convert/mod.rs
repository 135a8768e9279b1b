//! Turns parsed RDB items into the commands that recreate each key on a target, and rewrites
//! live stream commands for targets older than the source.
