//! HTTP handlers, one file per area.

pub mod commands;
pub mod events;
pub mod health;
pub mod stream;
pub mod views;
