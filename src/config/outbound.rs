//! Outbound calls: `[ari]` (where asterai places and follows calls) and `[dialer]`.

use serde::{Deserialize, Serialize};

use super::ConfigError;
use crate::types::{Dur, Secret};

/// Asterisk's REST Interface: where asterai places calls and follows their channels.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AriConfig {
    /// `http://127.0.0.1:8088` (Asterisk's http.conf). Empty: ARI is off; asterai answers calls
    /// over FastAGI but does not place or transfer any.
    pub url: String,
    /// An ARI user from Asterisk's ari.conf.
    pub username: String,
    pub password: Secret,
    /// The Stasis application asterai registers. One WebSocket per name and Asterisk: each
    /// daemon on one Asterisk needs its own.
    pub app: String,
    /// The longest wait between reconnection attempts of the event stream.
    pub reconnect_max: Dur,
    /// Time allowed for one REST request.
    pub timeout: Dur,
    /// For an `https://` URL: a PEM file of the certificate authorities (or the self-signed
    /// certificate) Asterisk's certificate must chain to, for REST and both WebSockets. Empty:
    /// the public web roots.
    pub ca_file: String,
}

impl Default for AriConfig {
    fn default() -> Self {
        AriConfig {
            url: String::new(),
            username: String::new(),
            password: Secret::default(),
            app: "asterai".into(),
            reconnect_max: Dur::secs(30),
            timeout: Dur::secs(10),
            ca_file: String::new(),
        }
    }
}

impl AriConfig {
    /// Whether ARI is configured (`ari.url` set).
    pub fn enabled(&self) -> bool {
        !self.url.trim().is_empty()
    }

    /// The REST client's settings.
    pub fn settings(&self) -> crate::ari::AriSettings {
        crate::ari::AriSettings {
            url: self.url.trim().to_owned(),
            username: self.username.clone(),
            password: self.password.clone(),
            auth: crate::ari::Auth::Header,
            timeout: self.timeout.0,
            ca_file: Some(self.ca_file.trim()).filter(|f| !f.is_empty()).map(std::path::PathBuf::from),
        }
    }
}

/// Outbound calls: how a number becomes an Asterisk endpoint, and where an answered call goes.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DialerConfig {
    /// The endpoint dialed; `{number}` is the E.164 number (`+15551230000`), `{digits}` the same
    /// without `+`.
    pub endpoint: String,
    /// Where an answered call continues in the dialplan (it runs the `ai` route there).
    pub context: String,
    pub extension: String,
    /// `Name <number>` shown to the called party; empty leaves it to the trunk.
    pub caller_id: String,
    /// How long the far end may ring before the call is `no_answer` (whole seconds).
    pub ring_timeout: Dur,
    /// Where a caller who asks for a person goes: `Local/<exten>@<context>` continues the
    /// channel in the dialplan there; another `Tech/resource` redirects it. Empty: no transfer.
    pub transfer_target: String,
    /// Dial the contacts of running campaigns from this daemon (with ARI configured).
    pub campaigns: bool,
    /// How often running campaigns are looked at for contacts to call.
    pub poll_interval: Dur,
    /// How long a claim on a contact holds without renewal: a daemon that dies leaves its
    /// contacts to the others after this.
    pub claim_lease: Dur,
    /// ISO 3166-1 alpha-2 country (`US`) whose national numbers asterai reads, everywhere a
    /// number comes in (calls, imports, do-not-call, caller IDs). Empty: numbers must be
    /// international (`+…` or `00…`).
    pub default_country: String,
    /// A TOML file of each organization's calling rules, caps per number, holidays and
    /// abandonment policy (see `asterai::dialer::compliance`); empty: the shipped rules and the
    /// defaults.
    pub compliance: String,
}

impl DialerConfig {
    /// The country of `default_country`, if set.
    pub fn default_country(&self) -> Result<Option<crate::phone::Country>, ConfigError> {
        let iso = self.default_country.trim();
        if iso.is_empty() {
            return Ok(None);
        }
        crate::phone::country(iso).map(Some).map_err(|e| ConfigError(format!("dialer.default_country: {e}")))
    }
}

impl Default for DialerConfig {
    fn default() -> Self {
        DialerConfig {
            endpoint: "PJSIP/{number}@trunk".into(),
            context: "asterai-outbound".into(),
            extension: "s".into(),
            caller_id: String::new(),
            ring_timeout: Dur::secs(30),
            transfer_target: String::new(),
            campaigns: true,
            poll_interval: Dur::secs(1),
            claim_lease: Dur::secs(120),
            default_country: String::new(),
            compliance: String::new(),
        }
    }
}
