//! The client subcommands' pieces: argument definitions, exit codes, ID prefixes and the
//! process table.

pub mod args;
pub mod exit;
pub mod ids;
pub mod logging;
pub mod table;
pub mod utf8;
pub mod words;
