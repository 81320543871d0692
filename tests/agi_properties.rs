//! Property tests of the FastAGI layer: replies round-trip through the codec, quoting survives
//! Asterisk's parser, and no byte sequence makes the codec panic.

use asterai::agi::command::{CommandLine, quote, split_args};
use asterai::agi::{AgiCodec, Frame, Reply};
use bytes::BytesMut;
use proptest::prelude::*;
use tokio_util::codec::Decoder;

/// Text Asterisk may print inside a reply line: anything but LF, including spaces, quotes,
/// parentheses and non-ASCII.
fn line_text() -> impl Strategy<Value = String> {
    prop::collection::vec(
        prop_oneof![
            Just(' '),
            Just('('),
            Just(')'),
            Just('"'),
            Just('='),
            Just('\\'),
            Just('é'),
            Just('\t'),
            prop::char::range('!', '~'),
        ],
        0..40,
    )
    .prop_map(|chars| chars.into_iter().collect())
}

fn result_token() -> impl Strategy<Value = String> {
    prop_oneof![Just(String::new()), "-?[0-9]{1,6}", "[0-9*#]{1,8}", "[a-z]{1,5}"]
}

fn attrs() -> impl Strategy<Value = Vec<(String, String)>> {
    prop::collection::vec(("[a-z_]{1,8}", "-?[0-9a-z]{0,8}"), 0..3)
}

/// Free text after `result`: starts with a word without `=` or `(`, as Asterisk's do.
fn trailing_text() -> impl Strategy<Value = String> {
    ("[A-Za-z.]{1,10}", prop::option::of(line_text())).prop_map(|(word, rest)| match rest {
        Some(rest) => format!("{word} {}", rest.replace('\n', "")),
        None => word,
    })
}

fn success_reply() -> impl Strategy<Value = Reply> {
    (
        prop_oneof![Just(200u16), Just(100u16)],
        result_token(),
        prop::option::of(line_text()),
        prop_oneof![attrs().prop_map(Ok), trailing_text().prop_map(Err)],
    )
        .prop_map(|(code, result, data, tail)| {
            // Asterisk writes free text only straight after `result` (`Gosub complete`,
            // `Trying...`); data in parentheses is followed by attributes or nothing.
            let (data, attrs, text) = match tail {
                Ok(attrs) => (data, attrs, String::new()),
                Err(text) => (None, Vec::new(), text),
            };
            Reply { code, result: Some(result), data, attrs, text, multiline: false }
        })
}

fn error_reply() -> impl Strategy<Value = Reply> {
    (prop_oneof![Just(510u16), Just(511u16), Just(520u16)], "[A-Za-z][A-Za-z .]{0,60}").prop_map(|(code, text)| Reply {
        code,
        text,
        ..Reply::default()
    })
}

fn usage_reply() -> impl Strategy<Value = Reply> {
    prop::collection::vec(
        line_text().prop_filter("not a terminator", |l| !l.starts_with("520 ") && l != "HANGUP"),
        1..6,
    )
    .prop_map(|lines| Reply { code: 520, text: lines.join("\n"), multiline: true, ..Reply::default() })
}

fn frame() -> impl Strategy<Value = Frame> {
    prop_oneof![
        4 => success_reply().prop_map(Frame::Reply),
        1 => error_reply().prop_map(Frame::Reply),
        1 => usage_reply().prop_map(Frame::Reply),
        1 => Just(Frame::Hangup),
    ]
}

fn wire(frame: &Frame) -> String {
    match frame {
        Frame::Reply(reply) => format!("{reply}\n"),
        Frame::Hangup => "HANGUP\n".to_owned(),
        other => panic!("not a reply-phase frame: {other:?}"),
    }
}

proptest! {
    #[test]
    fn replies_round_trip_through_the_codec(frames in prop::collection::vec(frame(), 1..12), split in any::<prop::sample::Index>()) {
        let bytes: String = frames.iter().map(wire).collect();
        // Deliver the bytes in two parts, cut anywhere, as TCP may.
        let cut = split.index(bytes.len() + 1);
        let mut codec = AgiCodec::for_replies(8192);
        let mut buf = BytesMut::new();
        let mut decoded = Vec::new();
        for part in [&bytes.as_bytes()[..cut], &bytes.as_bytes()[cut..]] {
            buf.extend_from_slice(part);
            while let Some(frame) = codec.decode(&mut buf).unwrap() {
                decoded.push(frame);
            }
        }
        prop_assert_eq!(decoded, frames);
    }

    #[test]
    fn quoting_survives_asterisks_parser(args in prop::collection::vec(any::<String>().prop_map(|s| s.replace(['\r', '\n', '\0'], "")), 0..8)) {
        let mut line = CommandLine::new("SET VARIABLE");
        for arg in &args {
            line = line.arg(arg).unwrap();
        }
        let mut expected = vec!["SET".to_owned(), "VARIABLE".to_owned()];
        expected.extend(args.iter().cloned());
        prop_assert_eq!(split_args(line.as_str()), expected);
    }

    #[test]
    fn one_quoted_argument_stays_one_argument(text in "\\PC*") {
        let text = text.replace(['\r', '\n', '\0'], "");
        let quoted = quote(&text).unwrap();
        prop_assert_eq!(split_args(&quoted), vec![text]);
    }

    #[test]
    fn cr_or_lf_anywhere_is_refused(before in "\\PC{0,10}", after in "\\PC{0,10}", bad in prop_oneof![Just('\r'), Just('\n')]) {
        let text = format!("{before}{bad}{after}");
        prop_assert!(quote(&text).is_err());
    }

    #[test]
    fn the_codec_never_panics(chunks in prop::collection::vec(prop::collection::vec(any::<u8>(), 0..300), 0..8), replies_phase in any::<bool>(), max_line in 1usize..64) {
        let mut codec = if replies_phase { AgiCodec::for_replies(max_line) } else { AgiCodec::new(max_line) };
        let mut buf = BytesMut::new();
        for chunk in &chunks {
            buf.extend_from_slice(chunk);
            // Keep decoding through errors, as a tolerant caller would.
            for _ in 0..1000 {
                match codec.decode(&mut buf) {
                    Ok(Some(_)) | Err(_) => continue,
                    Ok(None) => break,
                }
            }
        }
        let _ = codec.decode_eof(&mut buf);
    }

    #[test]
    fn the_codec_never_panics_on_near_protocol_input(lines in prop::collection::vec(prop_oneof![
        Just("HANGUP".to_owned()),
        Just("520-Invalid command syntax.  Proper usage follows:".to_owned()),
        Just("520 End of proper usage.".to_owned()),
        Just(String::new()),
        "agi_[a-z]{0,5}: ?[ -~]{0,10}",
        "[0-9]{3}[ -]?(result=[-0-9]*)? ?(\\([ -~]*\\))? ?[ -~]{0,10}",
    ], 0..20)) {
        let bytes: String = lines.iter().map(|l| format!("{l}\n")).collect();
        for mut codec in [AgiCodec::new(8192), AgiCodec::for_replies(8192)] {
            let mut buf = BytesMut::from(bytes.as_bytes());
            for _ in 0..100 {
                match codec.decode(&mut buf) {
                    Ok(Some(_)) | Err(_) => continue,
                    Ok(None) => break,
                }
            }
        }
    }
}
