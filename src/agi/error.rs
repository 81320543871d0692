//! [`AgiError`]: everything that can go wrong with one FastAGI session.

use std::time::Duration;

use super::codec::CodecError;
use super::reply::Reply;

/// An error of the FastAGI layer. Each variant says what was expected and what came instead.
#[derive(Debug, thiserror::Error)]
pub enum AgiError {
    /// An argument cannot be sent safely (CR, LF, NUL, too many words). Nothing was sent.
    #[error("refused to send: {reason}")]
    InvalidArgument { reason: String },

    /// Asterisk would split this line into two commands. Nothing was sent.
    #[error("command line of {len} bytes is longer than Asterisk's {limit}; refused to send")]
    CommandTooLong { len: usize, limit: usize },

    /// The channel has hung up and Asterisk refuses this command on a dead channel; it was not
    /// sent.
    #[error("{command}: the channel has hung up, and Asterisk refuses this command on a dead channel (not sent)")]
    ChannelDead { command: String },

    /// `511`: Asterisk refused the command because the channel is dead.
    #[error("{command}: 511 command not permitted on a dead channel")]
    NotPermitted { command: String },

    /// `510`: Asterisk does not know the command.
    #[error("{command}: 510 invalid or unknown command")]
    UnknownCommand { command: String },

    /// `520`: Asterisk rejected the arguments; `usage` is its usage text.
    #[error("{command}: 520 invalid command syntax")]
    Usage { command: String, usage: String },

    /// A `200` reply that reports failure (`result=-1` and similar).
    #[error("{command} failed: {reply}")]
    CommandFailed { command: String, reply: String },

    /// A `200` reply this command cannot have.
    #[error("{command}: unexpected reply {reply:?}")]
    UnexpectedReply { command: String, reply: String },

    /// Asterisk did not answer in time. The session is closed, because a late reply would be taken
    /// for the answer to the next command.
    #[error("{command}: no reply within {after:?}; session closed")]
    Timeout { command: String, after: Duration },

    /// The session is over: Asterisk closed the connection, or it was closed for a reason.
    #[error("session closed: {reason}")]
    Closed { reason: String },

    /// Asterisk sent something that is not the FastAGI protocol.
    #[error("protocol error: {0}")]
    Protocol(#[from] CodecError),

    #[error("socket error: {0}")]
    Io(#[from] std::io::Error),
}

impl AgiError {
    pub(crate) fn unexpected(command: &str, reply: &Reply) -> Self {
        AgiError::UnexpectedReply { command: command.to_owned(), reply: reply.to_string() }
    }

    /// True when the channel is gone: refused as dead, answered 511, or the connection closed.
    pub fn is_hangup(&self) -> bool {
        matches!(self, AgiError::ChannelDead { .. } | AgiError::NotPermitted { .. } | AgiError::Closed { .. })
    }
}
