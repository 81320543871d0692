//! Asterisk's REST Interface (ARI) only: no store, no conversation.
//!
//! * [`client`]: the REST calls (originate in dialplan or app mode, hangup, answer, continue,
//!   redirect, play, record, snoop, stored recordings, channel list, Asterisk info), with
//!   [`AriError`] keeping Asterisk's message whatever the body's shape.
//! * [`events`]: typed models of the events asterai reads, tagged on `type`; unknown ones are
//!   kept, never fatal.
//! * [`stream`]: the event WebSocket, reconnecting with backoff and jitter and telling its
//!   consumer when to resync.
//!
//! The dialer (`crate::dialer`) composes these with the store: it turns events into call
//! statuses.

pub mod client;
pub mod error;
pub mod events;
pub mod model;
pub mod stream;

pub use client::{AriClient, AriSettings, Auth, Destination, HangupReason, Originate, Record, Snoop};
pub use error::AriError;
pub use events::{AriEvent, Envelope};
pub use model::{Application, AsteriskInfo, Channel};
pub use stream::{StreamConfig, StreamItem};
