//! Asterisk's REST Interface (ARI) only: no store, no conversation.
//!
//! * [`client`]: the REST calls (originate in dialplan or app mode, hangup, answer, continue,
//!   redirect, play, record, snoop, stored recordings, channel list, Asterisk info, bridges,
//!   channel variables, modules), with
//!   [`AriError`] keeping Asterisk's message whatever the body's shape.
//! * [`events`]: typed models of the events asterai reads, tagged on `type`; unknown ones are
//!   kept, never fatal.
//! * [`media`]: external media channels (`POST /channels/externalMedia`, validated so nothing
//!   that crashes Asterisk is sent), which media transports the connected Asterisk has
//!   ([`detect_media`]), and the route of a StasisStart's arguments ([`StasisRoute`]).
//! * [`stream`]: the event WebSocket, reconnecting with backoff and jitter and telling its
//!   consumer when to resync.
//!
//! The dialer (`crate::dialer`) composes these with the store: it turns events into call
//! statuses.

pub mod client;
pub mod error;
pub mod events;
pub mod media;
pub mod model;
pub mod stream;

pub use client::{AriClient, AriSettings, Auth, Destination, HangupReason, Originate, Record, Snoop};
pub use error::AriError;
pub use events::{AriEvent, Envelope};
pub use media::{ExternalMedia, MEDIA_CHANNEL_TAG, MediaSupport, StasisCalls, StasisRoute, detect_media};
pub use model::{Application, AsteriskInfo, Bridge, Channel, Module};
pub use stream::{StreamConfig, StreamItem};
