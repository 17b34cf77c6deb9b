//! placeholder
pub mod script;
