//! The supervisors' live feed: the hub that tails the event log, the publisher every component
//! records through, and one WebSocket connection per supervisor.

pub mod client;
pub mod hub;
pub mod publisher;
pub mod ws;

pub use hub::Hub;
pub use publisher::Publisher;
