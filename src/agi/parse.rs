//! nom parsers for the two kinds of line Asterisk sends over FastAGI.
//!
//! * Environment lines, `agi_<name>: <value>`, sent once at the start of a session. The value is
//!   kept byte for byte: Asterisk sends `agi_accountcode: ` with nothing after the separator and
//!   values may end in a space.
//! * Reply lines, `<code> …`. A `200` reply is `200 result=<r>[ (<data>)][ key=value…]`, and
//!   `result` stays a string: `GET DATA` answers `200 result= (timeout)` (empty), digits can carry
//!   leading zeros, `*` or `#`. `510`, `511` and single-line `520` carry only text. The multi-line
//!   `520-…` usage block is assembled by the codec, which uses [`reply_line`] for its first and
//!   last lines.
//!
//! Parsers here see one line without its `\n`; framing is the codec's job.

use nom::{
    IResult, Parser,
    bytes::complete::{tag, take_while, take_while_m_n, take_while1},
    combinator::{all_consuming, map_res, opt, rest},
    sequence::preceded,
};

/// A reply line, split into its parts. See [`crate::agi::Reply`] for the assembled reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplyLine<'a> {
    /// The three-digit status code (`100`, `200`, `510`, `511`, `520`).
    pub code: u16,
    /// `-` right after the code: the first line of a multi-line reply (`520-…`).
    pub continued: bool,
    /// Everything after `result=` up to the next space, when the line has `result=`.
    pub result: Option<&'a str>,
    /// The text inside the parentheses that follow `result`, e.g. `timeout` or a variable value.
    pub data: Option<&'a str>,
    /// `key=value` words after the data, e.g. `endpos=11234`.
    pub attrs: Vec<(&'a str, &'a str)>,
    /// Free text: the whole text of a `510`/`511`/`520` line, or words after `result` that are
    /// not `key=value` pairs (`100 result=0 Trying...`, `200 result=0 Gosub complete`).
    pub text: &'a str,
}

/// Parses `agi_<name>: <value>` into `(name, value)`; the name keeps its `agi_` prefix.
///
/// Asterisk writes `"%s: %s\n"`, so the separator is exactly `": "`. A bare `agi_x:` with no
/// space is accepted with an empty value, which is what a value-less line means.
pub fn env_line(line: &str) -> IResult<&str, (&str, &str)> {
    let name = take_while1(|c: char| c.is_ascii_alphanumeric() || c == '_');
    let (input, (key, _)) = (preceded(tag("agi_"), name), tag(":")).parse(line)?;
    let key = &line[..4 + key.len()];
    let (input, value) = all_consuming(opt(preceded(tag(" "), rest))).parse(input)?;
    Ok((input, (key, value.unwrap_or(""))))
}

fn code(input: &str) -> IResult<&str, u16> {
    map_res(take_while_m_n(3, 3, |c: char| c.is_ascii_digit()), str::parse).parse(input)
}

/// Parses one reply line. Fails on anything that is not `<3 digits>` followed by a space, a `-`
/// or the end of the line.
pub fn reply_line(line: &str) -> IResult<&str, ReplyLine<'_>> {
    let (input, code) = code(line)?;
    let (input, sep) = opt(nom::character::complete::one_of(" -")).parse(input)?;
    if sep.is_none() && !input.is_empty() {
        return Err(nom::Err::Error(nom::error::Error::new(input, nom::error::ErrorKind::Char)));
    }
    let continued = sep == Some('-');
    let mut reply = ReplyLine { code, continued, result: None, data: None, attrs: Vec::new(), text: "" };
    if continued {
        reply.text = input;
        return Ok(("", reply));
    }
    let Ok((after, result)) =
        preceded(tag::<_, _, nom::error::Error<&str>>("result="), take_while(|c: char| c != ' ')).parse(input)
    else {
        reply.text = input;
        return Ok(("", reply));
    };
    reply.result = Some(result);
    let mut tail = after;
    // Data runs from ` (` to the last `)` on the line. Asterisk prints values verbatim, so a
    // variable may itself hold `)`; attributes never do, which makes the last `)` the right one.
    if let Some(inner) = tail.strip_prefix(" (")
        && let Some(close) = inner.rfind(')')
    {
        reply.data = Some(&inner[..close]);
        tail = &inner[close + 1..];
    }
    let words = tail.trim_start_matches(' ');
    if words.is_empty() {
        return Ok(("", reply));
    }
    match attributes(words) {
        Some(attrs) => reply.attrs = attrs,
        None => reply.text = words,
    }
    Ok(("", reply))
}

/// Splits `a=1 b=2` into pairs; `None` when any word is not `key=value`.
fn attributes(words: &str) -> Option<Vec<(&str, &str)>> {
    words
        .split(' ')
        .map(|word| {
            let (key, value) = word.split_once('=')?;
            let valid_key = !key.is_empty() && key.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
            valid_key.then_some((key, value))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reply(line: &str) -> ReplyLine<'_> {
        reply_line(line).expect("parses").1
    }

    #[test]
    fn env_lines_keep_values_verbatim() {
        assert_eq!(env_line("agi_network: yes").unwrap().1, ("agi_network", "yes"));
        assert_eq!(env_line("agi_accountcode: ").unwrap().1, ("agi_accountcode", ""));
        assert_eq!(env_line("agi_callerid: Bob ").unwrap().1, ("agi_callerid", "Bob "));
        assert_eq!(
            env_line("agi_network_script: ai?org=acme&call_id=1795222058.0").unwrap().1,
            ("agi_network_script", "ai?org=acme&call_id=1795222058.0")
        );
        assert_eq!(env_line("agi_arg_1: arg1").unwrap().1, ("agi_arg_1", "arg1"));
        assert_eq!(env_line("agi_x:").unwrap().1, ("agi_x", ""));
        assert!(env_line("200 result=0").is_err());
        assert!(env_line("agi_: x").is_err());
        assert!(env_line("agi_x:y").is_err());
    }

    #[test]
    fn replies_from_the_captures() {
        let r = reply("200 result=0");
        assert_eq!((r.code, r.result, r.data, r.attrs.len(), r.text), (200, Some("0"), None, 0, ""));

        let r = reply("200 result=1 (1795222058.0)");
        assert_eq!((r.result, r.data), (Some("1"), Some("1795222058.0")));

        let r = reply("200 result=1 (\"\" <>)");
        assert_eq!(r.data, Some("\"\" <>"));

        let r = reply("200 result=1 ()");
        assert_eq!(r.data, Some(""));

        let r = reply("200 result= (timeout)");
        assert_eq!((r.result, r.data), (Some(""), Some("timeout")));

        let r = reply("200 result=5180 (timeout) endpos=18732");
        assert_eq!((r.result, r.data, r.attrs.clone()), (Some("5180"), Some("timeout"), vec![("endpos", "18732")]));

        let r = reply("200 result=0 endpos=11234");
        assert_eq!((r.data, r.attrs.clone()), (None, vec![("endpos", "11234")]));

        let r = reply("200 result=0 endpos=-1");
        assert_eq!(r.attrs, vec![("endpos", "-1")]);

        let r = reply("100 result=0 Trying...");
        assert_eq!((r.code, r.result, r.text), (100, Some("0"), "Trying..."));

        let r = reply("200 result=0 Gosub complete");
        assert_eq!(r.text, "Gosub complete");

        let r = reply("510 Invalid or unknown command");
        assert_eq!((r.code, r.result, r.text), (510, None, "Invalid or unknown command"));

        let r = reply("511 Command Not Permitted on a dead channel or intercept routine");
        assert_eq!((r.code, r.result), (511, None));

        let r = reply("520-Invalid command syntax.  Proper usage follows:");
        assert!(r.continued);
        assert_eq!(r.code, 520);
    }

    #[test]
    fn a_value_holding_parentheses_is_kept_whole() {
        let r = reply("200 result=1 (a) endpos=5)");
        assert_eq!(r.data, Some("a) endpos=5"));
        assert!(r.attrs.is_empty());
    }

    #[test]
    fn garbage_is_not_a_reply() {
        for line in ["", "HANGUP", "20 result=0", "2000 result=0", "abc", "200result=0"] {
            assert!(reply_line(line).is_err(), "{line:?} should not parse");
        }
    }
}
