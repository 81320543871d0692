//! [`AgiEnv`]: the `agi_*` variables Asterisk sends at the start of a session.

use std::borrow::Cow;
use std::fmt;

use percent_encoding::percent_decode_str;

/// The environment block, kept as one string of `name\tvalue\n` entries. A daemon holds one per
/// live call, so it is no bigger than the text itself; lookups scan the couple of dozen entries.
#[derive(Clone, Default)]
pub struct AgiEnv {
    text: String,
}

impl AgiEnv {
    /// Adds one variable, as the codec delivered it. Names never hold a tab or newline; values
    /// never hold a newline, and a tab in a value is kept.
    pub fn push(&mut self, key: &str, value: &str) {
        self.text.push_str(key);
        self.text.push('\t');
        self.text.push_str(value);
        self.text.push('\n');
    }

    /// Releases spare capacity once the block is complete.
    pub fn shrink(&mut self) {
        self.text.shrink_to_fit();
    }

    /// Number of variables.
    pub fn len(&self) -> usize {
        self.text.bytes().filter(|b| *b == b'\n').count()
    }

    pub fn is_empty(&self) -> bool {
        self.text.is_empty()
    }

    /// All variables in the order Asterisk sent them, names with their `agi_` prefix.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.text.split_terminator('\n').map(|line| line.split_once('\t').unwrap_or((line, "")))
    }

    /// The value of `agi_<name>`; pass the name with or without the prefix.
    pub fn get(&self, name: &str) -> Option<&str> {
        let name = name.strip_prefix("agi_").unwrap_or(name);
        self.iter().find(|(key, _)| key.strip_prefix("agi_") == Some(name)).map(|(_, value)| value)
    }

    fn field(&self, name: &str) -> &str {
        self.get(name).unwrap_or("")
    }

    /// `agi_uniqueid`: the channel's unique id, e.g. `1795222058.0`.
    pub fn uniqueid(&self) -> &str {
        self.field("uniqueid")
    }

    /// `agi_channel`: the channel name, e.g. `PJSIP/trunk-00000001`.
    pub fn channel(&self) -> &str {
        self.field("channel")
    }

    /// `agi_callerid`: the caller's number, or `unknown`.
    pub fn callerid(&self) -> &str {
        self.field("callerid")
    }

    /// `agi_calleridname`.
    pub fn calleridname(&self) -> &str {
        self.field("calleridname")
    }

    /// `agi_dnid`: the number dialled, or `unknown`.
    pub fn dnid(&self) -> &str {
        self.field("dnid")
    }

    /// `agi_extension`.
    pub fn extension(&self) -> &str {
        self.field("extension")
    }

    /// `agi_context`.
    pub fn context(&self) -> &str {
        self.field("context")
    }

    /// `agi_language`.
    pub fn language(&self) -> &str {
        self.field("language")
    }

    /// `agi_version`: the Asterisk version.
    pub fn version(&self) -> &str {
        self.field("version")
    }

    /// `agi_network_script`: the path and query after `host:port/`. Asterisk leaves it out when
    /// the URL has no path.
    pub fn network_script(&self) -> &str {
        self.field("network_script")
    }

    /// The route: the path of `agi_network_script` before `?`, without leading `/`.
    pub fn route(&self) -> &str {
        split_script(self.network_script()).0
    }

    /// The query string of `agi_network_script`, after `?`.
    pub fn query(&self) -> &str {
        split_script(self.network_script()).1
    }

    /// Query parameters, percent-decoded (`+` stays `+`, as Asterisk passes it through).
    pub fn params(&self) -> impl Iterator<Item = (Cow<'_, str>, Cow<'_, str>)> {
        query_params(self.query())
    }

    /// The first query parameter called `name`.
    pub fn param(&self, name: &str) -> Option<Cow<'_, str>> {
        self.params().find(|(key, _)| key == name).map(|(_, value)| value)
    }

    /// `agi_arg_1`, `agi_arg_2`, … in order.
    pub fn args(&self) -> Vec<&str> {
        let mut args: Vec<(usize, &str)> =
            self.iter().filter_map(|(key, value)| Some((key.strip_prefix("agi_arg_")?.parse().ok()?, value))).collect();
        args.sort_by_key(|(n, _)| *n);
        args.into_iter().map(|(_, value)| value).collect()
    }
}

/// Splits a route script (`ai?org=acme&campaign=7`) into its route (`ai`, without leading `/`)
/// and its query. The FastAGI route and the Stasis argument are read by this one function.
pub fn split_script(script: &str) -> (&str, &str) {
    let (path, query) = script.split_once('?').unwrap_or((script, ""));
    (path.trim_start_matches('/'), query)
}

/// The parameters of a query string, percent-decoded (`+` stays `+`, as Asterisk passes it
/// through), in order.
pub fn query_params(query: &str) -> impl Iterator<Item = (Cow<'_, str>, Cow<'_, str>)> {
    query.split('&').filter(|pair| !pair.is_empty()).map(|pair| {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        (percent_decode_str(key).decode_utf8_lossy(), percent_decode_str(value).decode_utf8_lossy())
    })
}

impl fmt::Debug for AgiEnv {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map().entries(self.iter()).finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> AgiEnv {
        let mut env = AgiEnv::default();
        for (k, v) in pairs {
            env.push(k, v);
        }
        env
    }

    #[test]
    fn route_and_params() {
        let e = env(&[
            ("agi_network_script", "ai?org=acme&call_id=1795222058.0&name=J%C3%BCrgen%20K"),
            ("agi_uniqueid", "1.2"),
        ]);
        assert_eq!(e.route(), "ai");
        assert_eq!(e.param("org").as_deref(), Some("acme"));
        assert_eq!(e.param("call_id").as_deref(), Some("1795222058.0"));
        assert_eq!(e.param("name").as_deref(), Some("Jürgen K"));
        assert_eq!(e.param("missing"), None);
        assert_eq!(e.uniqueid(), "1.2");
        assert_eq!(env(&[("agi_network_script", "/health")]).route(), "health");
        assert_eq!(env(&[]).route(), "");
    }

    #[test]
    fn args_in_order() {
        let e = env(&[("agi_arg_2", "b"), ("agi_arg_1", "a"), ("agi_arg_10", "j")]);
        assert_eq!(e.args(), ["a", "b", "j"]);
    }
}
