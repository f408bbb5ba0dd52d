//! HTTP handlers, one file per area.

pub mod alerts;
pub mod audit;
pub mod calendars;
pub mod cdevents;
pub mod cluster;
pub mod commands;
pub mod dashboard;
pub mod dora;
pub mod events;
pub mod health;
pub mod peer;
pub mod stream;
pub mod views;
pub mod webhooks;
pub mod whoami;
