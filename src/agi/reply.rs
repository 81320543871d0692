//! [`Reply`]: one answer from Asterisk, with `result` kept as a string.

use std::fmt;

use super::parse::ReplyLine;

/// The first line of a multi-line usage error, exactly as Asterisk sends it.
pub const USAGE_HEADER: &str = "Invalid command syntax.  Proper usage follows:";
/// The last line of a multi-line usage error, after its `520 ` code.
pub const USAGE_FOOTER: &str = "End of proper usage.";

/// A reply to one AGI command.
///
/// `200 result=5180 (timeout) endpos=18732` becomes `code: 200`, `result: Some("5180")`,
/// `data: Some("timeout")`, `attrs: [("endpos", "18732")]`. `510`, `511` and `520` carry their
/// text in `text`; for a multi-line `520` that is the usage text between the header and footer.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Reply {
    pub code: u16,
    pub result: Option<String>,
    pub data: Option<String>,
    pub attrs: Vec<(String, String)>,
    pub text: String,
    /// True for a `520-…` block, which [`fmt::Display`] writes back on several lines.
    pub multiline: bool,
}

impl Reply {
    pub(crate) fn from_line(line: &ReplyLine<'_>) -> Self {
        Reply {
            code: line.code,
            result: line.result.map(str::to_owned),
            data: line.data.map(str::to_owned),
            attrs: line.attrs.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect(),
            text: line.text.to_owned(),
            multiline: false,
        }
    }

    pub(crate) fn usage(text: String) -> Self {
        Reply { code: 520, text, multiline: true, ..Reply::default() }
    }

    /// A `200 result=<result>` reply, for tests and fakes.
    pub fn ok(result: impl Into<String>) -> Self {
        Reply { code: 200, result: Some(result.into()), ..Reply::default() }
    }

    /// `result` as a number, when it is one.
    pub fn result_int(&self) -> Option<i64> {
        self.result.as_deref()?.parse().ok()
    }

    /// The value of a `key=value` attribute such as `endpos`.
    pub fn attr(&self, key: &str) -> Option<&str> {
        self.attrs.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
    }

    /// `endpos=<n>` as a number: the sample offset where playback or recording stopped.
    pub fn endpos(&self) -> Option<i64> {
        self.attr("endpos")?.parse().ok()
    }
}

impl fmt::Display for Reply {
    /// The reply in wire form, without the final `\n`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.multiline {
            return write!(f, "{}-{USAGE_HEADER}\n{}\n{} {USAGE_FOOTER}", self.code, self.text, self.code);
        }
        write!(f, "{}", self.code)?;
        if let Some(result) = &self.result {
            write!(f, " result={result}")?;
        }
        if let Some(data) = &self.data {
            write!(f, " ({data})")?;
        }
        for (key, value) in &self.attrs {
            write!(f, " {key}={value}")?;
        }
        if !self.text.is_empty() {
            write!(f, " {}", self.text)?;
        }
        Ok(())
    }
}
