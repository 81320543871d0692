//! The supervisors' live feed: the hub that tails the event log, the publisher every component
//! records through, and one WebSocket connection per supervisor.
//!
//! * [`publisher`]: every component records calls through it; each write appends its event.
//! * [`hub`]: tails the event log and hands batches of events to the subscribers.
//! * [`filter`]: what a supervisor narrows its feed to.
//! * [`subscriber`]: one supervisor's connection (WebSocket, tokio-tungstenite), served: replay,
//!   live events, heartbeat, close.
//!
//! Arrows point one way: `subscriber` → `hub` → `filter`; `publisher` → `hub`.

pub mod filter;
pub mod hub;
pub mod publisher;
pub mod subscriber;

pub use filter::Filter;
pub use hub::Hub;
pub use publisher::Publisher;
