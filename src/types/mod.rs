//! Small domain types shared by several modules, owned by none of them: [`Dur`] (a duration as
//! people write it, bounded) and [`Secret`] (a value that never reaches a log). The config reads
//! them, and `ari` and `dialer` use them directly, so they live here rather than in `config`.
//! [`Redactor`] masks card numbers and configured patterns in what callers said, for `feed`
//! and `conversation` (configured by `config`).

mod duration;
pub mod redact;
mod secret;

pub use duration::Dur;
pub use redact::Redactor;
pub use secret::Secret;
