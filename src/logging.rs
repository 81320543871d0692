//! Log output: human-readable lines by default, one JSON object per line with `--log-format json`.
//! Lines go to stderr, which systemd hands to journald.

use std::io::Write;
use std::sync::Arc;

use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::MakeWriter;

use crate::config::LogFormat;

/// Installs the global subscriber. `level` is a tracing filter (`info`, `debug`,
/// `info,asterai::agi=debug`); `RUST_LOG` wins when set. Safe to call twice: the second call
/// does nothing.
///
/// Every line passes through [`Redactor`]: the configured `secrets` (API keys, passwords) and
/// the secret part of any API token are replaced before the line is written, whoever logged it
/// (a provider that echoes a key in an error message, a dependency's debug output).
pub fn init(format: LogFormat, level: &str, secrets: Vec<String>) {
    let filter = std::env::var("RUST_LOG")
        .ok()
        .and_then(|spec| EnvFilter::try_new(spec).ok())
        .unwrap_or_else(|| EnvFilter::try_new(level).unwrap_or_else(|_| EnvFilter::new("info")));
    let writer = Redactor::new(secrets);
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(writer);
    let _ = match format {
        LogFormat::Text => builder.with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr())).try_init(),
        LogFormat::Json => builder.json().with_current_span(true).with_span_list(false).flatten_event(true).try_init(),
    };
}

/// Replaces secrets in log lines on their way to stderr.
#[derive(Clone)]
pub struct Redactor {
    secrets: Arc<Vec<String>>,
}

impl Redactor {
    /// Secrets shorter than 6 characters are ignored: they would match ordinary words.
    pub fn new(secrets: Vec<String>) -> Redactor {
        let mut secrets: Vec<String> = secrets.into_iter().filter(|s| s.len() >= 6).collect();
        // Longest first, so a secret that contains another is replaced whole.
        secrets.sort_by_key(|s| std::cmp::Reverse(s.len()));
        secrets.dedup();
        Redactor { secrets: Arc::new(secrets) }
    }

    /// `line` with every secret replaced by `[redacted]`, and every API token
    /// (`ast_<id>_<secret>`) cut to `ast_<id>_[redacted]`.
    pub fn redact<'a>(&self, line: &'a str) -> std::borrow::Cow<'a, str> {
        let mut out = std::borrow::Cow::Borrowed(line);
        for secret in self.secrets.iter() {
            if out.contains(secret.as_str()) {
                out = std::borrow::Cow::Owned(out.replace(secret.as_str(), "[redacted]"));
            }
        }
        if out.contains(crate::auth::TOKEN_PREFIX) {
            out = std::borrow::Cow::Owned(redact_tokens(&out));
        }
        out
    }
}

fn redact_tokens(text: &str) -> String {
    let prefix = crate::auth::TOKEN_PREFIX;
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find(prefix) {
        let (before, from) = rest.split_at(at);
        out.push_str(before);
        let after = &from[prefix.len()..];
        let id_len = after.find('_').filter(|&n| n > 0 && after[..n].bytes().all(|b| b.is_ascii_hexdigit()));
        match id_len {
            Some(n) => {
                let secret_len = after[n + 1..]
                    .bytes()
                    .take_while(|b| b.is_ascii_alphanumeric() || *b == b'-' || *b == b'_')
                    .count();
                out.push_str(prefix);
                out.push_str(&after[..=n]);
                out.push_str("[redacted]");
                rest = &after[n + 1 + secret_len..];
            }
            None => {
                out.push_str(prefix);
                rest = after;
            }
        }
    }
    out.push_str(rest);
    out
}

impl Write for Redactor {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        // tracing-subscriber writes each event with one write_all of the formatted line.
        match std::str::from_utf8(buf) {
            Ok(text) => std::io::stderr().lock().write_all(self.redact(text).as_bytes())?,
            Err(_) => std::io::stderr().lock().write_all(buf)?,
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        std::io::stderr().flush()
    }
}

impl<'a> MakeWriter<'a> for Redactor {
    type Writer = Redactor;

    fn make_writer(&'a self) -> Self::Writer {
        self.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_and_tokens_are_replaced() {
        let redactor = Redactor::new(vec!["sk-live-123456".into(), "short".into(), "hunter2-password".into()]);
        let line = "key sk-live-123456 in postgres://u:hunter2-password@db/x token ast_0123456789abcdef_Zx9-q_w end";
        assert_eq!(
            redactor.redact(line),
            "key [redacted] in postgres://u:[redacted]@db/x token ast_0123456789abcdef_[redacted] end"
        );
        assert_eq!(redactor.redact("a short word; ast_ alone; ast_xyz_abc"), "a short word; ast_ alone; ast_xyz_abc");
    }
}
