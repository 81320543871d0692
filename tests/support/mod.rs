//! Test support: fakes of Asterisk built from the shared captures, helpers to run the daemon
//! in-process on ephemeral ports, and a real Asterisk with the real daemon beside it
//! ([`asterisk`], [`live`]).
#![allow(dead_code)]

pub mod agi;
pub mod asterisk;
pub mod browser;
pub mod daemon;
pub mod db;
pub mod fake_ari;
pub mod fake_asterisk;
pub mod fake_media;
pub mod fake_pbx;
pub mod http;
pub mod live;
pub mod logs;
pub mod mocks;
pub mod proxy;
pub mod seed;
pub mod tls;
pub mod transcript;

/// Process-wide set-up every test needs: one TLS provider for reqwest and sqlx.
pub fn init() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}
