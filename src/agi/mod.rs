//! FastAGI, exactly as Asterisk 22 speaks it. Protocol only: no AI, no database.
//!
//! * [`codec`]: bytes into frames (environment lines, replies, `HANGUP`), bounded line length.
//! * [`parse`]: nom parsers for environment lines and reply lines.
//! * [`command`]: one type per command with its typed reply, and the quoting rules.
//! * [`session`]: one connection; one command in flight; hang-up and dead-channel rules.
//! * [`server`]: the listener, limits, routing on `agi_network_script`, graceful shutdown.
//! * [`handler`]: what serves a route (any `async fn(AgiSession) -> HandlerResult`).
//! * [`routes`]: the built-in `health` route and the unknown-route fallback.
//!
//! ```no_run
//! # async fn example(session: asterai::agi::AgiSession) -> Result<(), asterai::agi::AgiError> {
//! use asterai::agi::command::{GetVariable, StreamFile};
//! let caller = session.send(GetVariable::new("CALLERID(num)")).await?;
//! session.send(StreamFile::new("hello-world")).await?;
//! # Ok(()) }
//! ```

pub mod codec;
pub mod command;
pub mod env;
pub mod error;
pub mod handler;
pub mod parse;
pub mod reply;
pub mod routes;
pub mod server;
pub mod session;

pub use codec::{AgiCodec, CodecError, Frame};
pub use command::Command;
pub use env::AgiEnv;
pub use error::AgiError;
pub use handler::{Handler, HandlerFuture, HandlerResult};
pub use reply::Reply;
pub use server::{AgiServer, DrainReport, Drive, PeerRule, Router, ServerConfig, Shutdown};
pub use session::AgiSession;
