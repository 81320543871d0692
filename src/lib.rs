//! asterai lets an Asterisk PBX hold AI phone calls.
pub mod agi;
pub mod ari;
pub mod auth;
pub mod cli;
pub mod config;
pub mod conversation;
pub mod demo;
pub mod dialer;
pub mod feed;
pub mod http;
pub mod logging;
pub mod phone;
pub mod speech;
pub mod store;
pub mod supervise;
pub mod systemd;
pub mod telemetry;
