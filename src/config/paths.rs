//! Where the daemon keeps its files: the data directory and what lives in it.

use std::path::{Path, PathBuf};

use super::{Config, ConfigError};

impl Config {
    /// The data directory, resolved as described on [`DaemonConfig::data_dir`](super::DaemonConfig::data_dir).
    pub fn data_dir(&self) -> PathBuf {
        if !self.daemon.data_dir.is_empty() {
            return PathBuf::from(&self.daemon.data_dir);
        }
        if let Some(dir) = std::env::var_os("STATE_DIRECTORY").filter(|d| !d.is_empty()) {
            // systemd may pass several, separated by ':'; the first is ours.
            let first = dir.to_string_lossy().split(':').next().unwrap_or_default().to_owned();
            return PathBuf::from(first);
        }
        if is_root() {
            return PathBuf::from("/var/lib/asterai");
        }
        if let Some(state) = std::env::var_os("XDG_STATE_HOME").filter(|d| !d.is_empty()) {
            return PathBuf::from(state).join("asterai");
        }
        let home = std::env::var_os("HOME").map(PathBuf::from).unwrap_or_else(|| PathBuf::from("."));
        home.join(".local/state/asterai")
    }

    /// The synthesized-speech directory: `media.dir`, or `<data_dir>/media`.
    pub fn media_dir(&self) -> PathBuf {
        if self.media.dir.is_empty() { self.data_dir().join("media") } else { PathBuf::from(&self.media.dir) }
    }

    /// The recordings directory: `media.recordings_dir`, or `<data_dir>/recordings`.
    pub fn recordings_dir(&self) -> PathBuf {
        if self.media.recordings_dir.is_empty() {
            self.data_dir().join("recordings")
        } else {
            PathBuf::from(&self.media.recordings_dir)
        }
    }

    /// The whole-call recordings directory: `media.call_recordings_dir`, or
    /// `<recordings_dir>/calls`.
    pub fn call_recordings_dir(&self) -> PathBuf {
        if self.media.call_recordings_dir.is_empty() {
            self.recordings_dir().join("calls")
        } else {
            PathBuf::from(&self.media.call_recordings_dir)
        }
    }

    /// Where the database is: `database.url`, or the SQLite file in the data directory.
    pub fn database_url(&self) -> String {
        match self.database.url.expose() {
            "" => format!("sqlite://{}", self.data_dir().join("asterai.db").display()),
            url => url.to_owned(),
        }
    }

    /// Where the database is, for the start-up log: the SQLite file's path, or the PostgreSQL
    /// URL without its password and query (which may carry one).
    pub fn database_location(&self) -> String {
        let url = self.database_url();
        if let Some(path) = url.strip_prefix("sqlite://").or_else(|| url.strip_prefix("sqlite:")) {
            return path.to_owned();
        }
        if url.starts_with('/') {
            return url;
        }
        let url = url.split('?').next().unwrap_or_default();
        let Some((scheme, rest)) = url.split_once("://") else { return url.to_owned() };
        let (authority, path) = rest.split_once('/').map_or((rest, ""), |(a, p)| (a, p));
        let authority = match authority.rsplit_once('@') {
            Some((user, host)) => format!("{}@{host}", user.split(':').next().unwrap_or_default()),
            None => authority.to_owned(),
        };
        if path.is_empty() { format!("{scheme}://{authority}") } else { format!("{scheme}://{authority}/{path}") }
    }

    /// Creates the data directory (and its parents) when the SQLite database lives in it: the
    /// one directory asterai makes on its own. A `database.url` elsewhere must point into a
    /// directory that exists ([`crate::store::Store::connect`] refuses a missing one), so a
    /// mistyped path is an error, not a new empty database.
    pub fn prepare_data_dir(&self) -> Result<(), ConfigError> {
        let url = self.database_url();
        let Some(path) = url
            .strip_prefix("sqlite://")
            .or_else(|| url.strip_prefix("sqlite:"))
            .or_else(|| url.strip_prefix('/').map(|_| url.as_str()))
        else {
            return Ok(());
        };
        let data_dir = self.data_dir();
        if Path::new(path).parent() == Some(data_dir.as_path()) {
            std::fs::create_dir_all(&data_dir).map_err(|e| {
                ConfigError(format!("cannot create the data directory {} (daemon.data_dir): {e}", data_dir.display()))
            })?;
        }
        Ok(())
    }
}

fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            let line = status.lines().find(|l| l.starts_with("Uid:"))?;
            line.split_whitespace().nth(2).map(|euid| euid == "0")
        })
        .unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use crate::config::Config;

    #[test]
    fn the_database_location_hides_the_password() {
        let at = |url: &str| Config::from_toml(&format!("[database]\nurl = {url:?}\n")).unwrap().database_location();
        assert_eq!(
            at("postgres://asterai:s3cret@db.example:5432/asterai?sslmode=require&password=x"),
            "postgres://asterai@db.example:5432/asterai"
        );
        assert_eq!(at("postgresql://db/asterai"), "postgresql://db/asterai");
        assert_eq!(at("sqlite:///var/lib/x/a.db"), "/var/lib/x/a.db");
        assert_eq!(at("/srv/a.db"), "/srv/a.db");
        let default = Config::from_toml("[daemon]\ndata_dir = \"/tmp/asterai-data\"\n").unwrap();
        assert_eq!(default.database_location(), "/tmp/asterai-data/asterai.db");
    }
}
