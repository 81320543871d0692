//! The environment overlay: every key `section.name` can be set by `ASTERAI_SECTION_NAME`,
//! parsed into the type its default has.

use super::{Config, ConfigError};

/// `ASTERAI_*` variables that are command-line options rather than config keys.
pub const CLI_ENV: &[&str] = &[
    "ASTERAI_CONFIG",
    "ASTERAI_TOKEN",
    "ASTERAI_FEED_URL",
    "ASTERAI_FEED_CA_FILE",
    "ASTERAI_LOG_FORMAT",
    "ASTERAI_LOG_LEVEL",
];

impl Config {
    /// Every key of the config, with its environment variable and type, derived from the defaults.
    pub fn keys() -> Vec<Key> {
        let defaults = toml::Value::try_from(Config::default()).expect("the default config serializes");
        let mut keys = Vec::new();
        collect_keys(&defaults, "", &mut keys);
        keys
    }
}

/// Variables with this prefix are agents' provider keys (`api_key = "env:ASTERAI_SECRET_…"`,
/// see [`crate::agent`]), not config keys: the overlay leaves them alone.
pub const SECRET_ENV_PREFIX: &str = "ASTERAI_SECRET_";

/// Applies the `ASTERAI_*` variables of `env` to `table`. Returns which key each variable set,
/// as `(section.name, ASTERAI_SECTION_NAME)`, so that errors can name the variable.
pub(super) fn overlay(
    table: &mut toml::Table,
    env: impl IntoIterator<Item = (String, String)>,
) -> Result<Vec<(String, String)>, ConfigError> {
    let keys = Config::keys();
    let mut from_env: Vec<(String, String)> = Vec::new();
    let mut env: Vec<(String, String)> = env.into_iter().filter(|(name, _)| name.starts_with("ASTERAI_")).collect();
    env.sort();
    for (name, value) in env {
        // Agents' provider keys (`api_key = "env:ASTERAI_SECRET_…"`), not config keys.
        if CLI_ENV.contains(&name.as_str()) || name.starts_with(SECRET_ENV_PREFIX) {
            continue;
        }
        let Some(key) = keys.iter().find(|k| k.env == name) else {
            return Err(ConfigError(format!(
                "unknown environment variable {name}; config keys are set with ASTERAI_<SECTION>_<KEY>, e.g. ASTERAI_AGI_LISTEN (see `asterai config`)"
            )));
        };
        let parsed = key
            .kind
            .parse(&value)
            .map_err(|expected| ConfigError(format!("{name} ({}): expected {expected}, got {value:?}", key.path)))?;
        insert(table, &key.path, parsed);
        from_env.push((key.path.clone(), name));
    }
    Ok(from_env)
}

/// One config key.
#[derive(Debug, Clone)]
pub struct Key {
    /// `section.name`.
    pub path: String,
    /// `ASTERAI_SECTION_NAME`.
    pub env: String,
    pub kind: Kind,
}

/// The TOML type of a key, as its default has it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    String,
    Integer,
    Float,
    Boolean,
    List,
    Table,
}

impl Kind {
    fn of(value: &toml::Value) -> Kind {
        match value {
            toml::Value::Integer(_) => Kind::Integer,
            toml::Value::Float(_) => Kind::Float,
            toml::Value::Boolean(_) => Kind::Boolean,
            toml::Value::Array(_) => Kind::List,
            toml::Value::Table(_) => Kind::Table,
            _ => Kind::String,
        }
    }

    /// Parses an environment value into this type; on failure, says what was expected.
    fn parse(self, text: &str) -> Result<toml::Value, &'static str> {
        Ok(match self {
            Kind::String => toml::Value::String(text.to_owned()),
            Kind::Integer => toml::Value::Integer(text.trim().parse().map_err(|_| "an integer")?),
            Kind::Float => toml::Value::Float(text.trim().parse().map_err(|_| "a number")?),
            Kind::Boolean => toml::Value::Boolean(match text.trim().to_ascii_lowercase().as_str() {
                "true" | "yes" | "1" | "on" => true,
                "false" | "no" | "0" | "off" => false,
                _ => return Err("true or false"),
            }),
            Kind::List => toml::Value::Array(
                text.split(',')
                    .map(str::trim)
                    .filter(|s| !s.is_empty())
                    .map(|s| toml::Value::String(s.to_owned()))
                    .collect(),
            ),
            Kind::Table => {
                let table: toml::Table =
                    format!("v = {text}").parse().map_err(|_| "an inline TOML table such as { a = \"b\" }")?;
                table.get("v").cloned().ok_or("an inline TOML table")?
            }
        })
    }
}

fn collect_keys(value: &toml::Value, prefix: &str, keys: &mut Vec<Key>) {
    let toml::Value::Table(table) = value else { return };
    for (name, value) in table {
        let path = if prefix.is_empty() { name.clone() } else { format!("{prefix}.{name}") };
        match value {
            // Sections recurse; a table-valued key (a map) is a key of its own.
            toml::Value::Table(_) if prefix.is_empty() => collect_keys(value, &path, keys),
            _ => keys.push(Key {
                env: format!("ASTERAI_{}", path.replace('.', "_").to_ascii_uppercase()),
                path,
                kind: Kind::of(value),
            }),
        }
    }
}

fn insert(table: &mut toml::Table, path: &str, value: toml::Value) {
    let mut parts = path.split('.').peekable();
    let mut current = table;
    while let Some(part) = parts.next() {
        if parts.peek().is_none() {
            current.insert(part.to_owned(), value);
            return;
        }
        let entry = current.entry(part.to_owned()).or_insert_with(|| toml::Value::Table(toml::Table::new()));
        if !entry.is_table() {
            *entry = toml::Value::Table(toml::Table::new());
        }
        let toml::Value::Table(next) = entry else { return };
        current = next;
    }
}
