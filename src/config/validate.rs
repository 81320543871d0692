//! What types alone cannot check: cross-field rules, allowed values, and the bounds of every
//! duration and count (nothing may be zero where zero stops the daemon, or so large that it
//! overflows a clock or exhausts memory).

use std::path::Path;

use super::Config;
use crate::agi::PeerRule;
use crate::types::Dur;

impl Config {
    /// Checks what types alone cannot.
    pub(super) fn validate(&self) -> Result<(), String> {
        self.validate_bounds()?;
        self.retention.validate()?;
        self.redaction.validate()?;
        for peer in &self.agi.allowed_peers {
            peer.parse::<PeerRule>().map_err(|e| format!("agi.allowed_peers: {e}"))?;
        }
        let url = self.database.url.expose();
        let known_scheme = ["postgres://", "postgresql://", "sqlite:", "/"].iter().any(|p| url.starts_with(p));
        if !url.is_empty() && !known_scheme {
            return Err("database.url: expected postgres://…, sqlite:///path or an absolute path".into());
        }
        if self.daemon.dead_after.0 < self.daemon.heartbeat_interval.0.saturating_mul(3) {
            return Err(format!(
                "daemon.dead_after: expected at least three heartbeats (3 × daemon.heartbeat_interval = {:?}), got {}",
                self.daemon.heartbeat_interval.0.saturating_mul(3),
                self.daemon.dead_after
            ));
        }
        let one_of = |key: &str, value: &str, allowed: &[&str]| {
            if allowed.contains(&value) {
                Ok(())
            } else {
                Err(format!("{key}: expected one of {}, got {value:?}", allowed.join(", ")))
            }
        };
        one_of("stt.provider", &self.stt.provider, &["openai", "deepgram", "scripted"])?;
        one_of("responder.provider", &self.responder.provider, &["rules", "openai"])?;
        one_of("tts.provider", &self.tts.provider, &["espeak", "openai", "elevenlabs"])?;
        let c = &self.conversation;
        if c.silence.0.is_zero() || c.silence.0.subsec_millis() != 0 {
            return Err(format!(
                "conversation.silence: expected whole seconds (Asterisk's s=), at least 1s, got {}",
                c.silence
            ));
        }
        if !(-100.0..=0.0).contains(&c.silence_threshold_dbfs) {
            return Err(format!(
                "conversation.silence_threshold_dbfs: expected -100 to 0, got {}",
                c.silence_threshold_dbfs
            ));
        }
        if !(0.0..=2.0).contains(&self.responder.temperature) {
            return Err(format!("responder.temperature: expected 0 to 2, got {}", self.responder.temperature));
        }
        if !self.responder.rules_file.is_empty() {
            crate::speech::rules::RuleSet::from_file(Path::new(&self.responder.rules_file))
                .map_err(|e| format!("responder.rules_file: {e}"))?;
        }
        check_log_filter(&self.log.level).map_err(|e| format!("log.level: {e}"))?;
        self.validate_ari()?;
        self.validate_stream()?;
        if self.agi.listen == self.http.listen && self.agi.listen.port() != 0 {
            return Err(format!("agi.listen and http.listen are both {}; they need different ports", self.agi.listen));
        }
        Ok(())
    }

    /// Every duration and count within its bounds: no setting may be zero where zero stops
    /// the daemon (a zero interval, an empty pool) or so large that it overflows a clock or
    /// exhausts memory.
    fn validate_bounds(&self) -> Result<(), String> {
        const ABOVE_ZERO: Dur = Dur::millis(1);
        let minute = |m: u64| Dur::secs(m * 60);
        let hour = |h: u64| Dur::secs(h * 3600);
        let durations = [
            ("daemon.shutdown_grace", self.daemon.shutdown_grace, Dur::secs(0), hour(1)),
            ("daemon.heartbeat_interval", self.daemon.heartbeat_interval, ABOVE_ZERO, hour(1)),
            ("daemon.dead_after", self.daemon.dead_after, ABOVE_ZERO, hour(24)),
            ("agi.handshake_timeout", self.agi.handshake_timeout, ABOVE_ZERO, minute(5)),
            ("agi.reply_grace", self.agi.reply_grace, ABOVE_ZERO, hour(1)),
            ("http.request_timeout", self.http.request_timeout, Dur::secs(1), hour(1)),
            ("database.connect_timeout", self.database.connect_timeout, ABOVE_ZERO, minute(5)),
            ("feed.ping_interval", self.feed.ping_interval, ABOVE_ZERO, hour(1)),
            ("feed.write_timeout", self.feed.write_timeout, ABOVE_ZERO, minute(10)),
            ("feed.poll_interval", self.feed.poll_interval, ABOVE_ZERO, hour(1)),
            ("feed.batch_window", self.feed.batch_window, Dur::secs(0), Dur::secs(1)),
            ("conversation.max_duration", self.conversation.max_duration, ABOVE_ZERO, hour(24)),
            ("conversation.silence", self.conversation.silence, Dur::secs(0), minute(5)),
            ("conversation.max_utterance", self.conversation.max_utterance, ABOVE_ZERO, hour(1)),
            ("conversation.turn_budget", self.conversation.turn_budget, ABOVE_ZERO, minute(10)),
            ("stt.timeout", self.stt.timeout, ABOVE_ZERO, minute(10)),
            ("responder.timeout", self.responder.timeout, ABOVE_ZERO, minute(10)),
            ("tts.timeout", self.tts.timeout, ABOVE_ZERO, minute(10)),
            ("ari.reconnect_max", self.ari.reconnect_max, ABOVE_ZERO, hour(1)),
            ("ari.timeout", self.ari.timeout, ABOVE_ZERO, minute(10)),
            ("dialer.ring_timeout", self.dialer.ring_timeout, Dur::secs(0), minute(10)),
            ("dialer.poll_interval", self.dialer.poll_interval, ABOVE_ZERO, hour(1)),
            ("dialer.claim_lease", self.dialer.claim_lease, Dur::secs(3), hour(24)),
            ("stream.endpoint_silence", self.stream.endpoint_silence, Dur::millis(100), Dur::secs(10)),
            ("stream.barge_in_min_speech", self.stream.barge_in_min_speech, Dur::millis(60), Dur::secs(5)),
            ("stream.speculative_pause", self.stream.speculative_pause, Dur::secs(0), Dur::secs(10)),
            ("stream.no_input", self.stream.no_input, Dur::secs(1), minute(5)),
            ("webhooks.timeout", self.webhooks.timeout, Dur::secs(1), minute(5)),
            ("webhooks.retry_for", self.webhooks.retry_for, hour(24), hour(24 * 30)),
            ("webhooks.poll_interval", self.webhooks.poll_interval, ABOVE_ZERO, minute(1)),
        ];
        for (key, value, min, max) in durations {
            value.within(key, min, max)?;
        }
        let counts: [(&str, u64, u64, u64); 16] = [
            ("agi.max_sessions", self.agi.max_sessions as u64, 1, 100_000),
            ("http.max_connections", self.http.max_connections as u64, 1, 1_000_000),
            ("http.max_body_bytes", self.http.max_body_bytes as u64, 1024, 1 << 30),
            ("http.max_import_bytes", self.http.max_import_bytes as u64, 1024, 1 << 30),
            ("database.max_connections", self.database.max_connections as u64, 1, 1000),
            ("feed.client_queue", self.feed.client_queue as u64, 1, 1_000_000),
            ("feed.max_message_bytes", self.feed.max_message_bytes as u64, 128, 16 << 20),
            ("conversation.max_turns", self.conversation.max_turns as u64, 1, 1000),
            ("conversation.max_silent_turns", self.conversation.max_silent_turns as u64, 0, 100),
            ("conversation.max_failed_turns", self.conversation.max_failed_turns as u64, 0, 100),
            ("stt.retries", self.stt.retries as u64, 0, 10),
            ("responder.retries", self.responder.retries as u64, 0, 10),
            ("responder.max_tokens", self.responder.max_tokens as u64, 1, 100_000),
            ("tts.retries", self.tts.retries as u64, 0, 10),
            ("tts.speed", self.tts.speed as u64, 10, 1000),
            ("webhooks.concurrency", self.webhooks.concurrency as u64, 1, 1024),
        ];
        for (key, value, min, max) in counts {
            if !(min..=max).contains(&value) {
                return Err(format!("{key}: expected {min} to {max}, got {value}"));
            }
        }
        Ok(())
    }

    /// `[stream]` and `conversation.media`.
    fn validate_stream(&self) -> Result<(), String> {
        let st = &self.stream;
        let one_of = |key: &str, value: &str, allowed: &[&str]| {
            if allowed.contains(&value) {
                Ok(())
            } else {
                Err(format!("{key}: expected one of {}, got {value:?}", allowed.join(", ")))
            }
        };
        one_of("conversation.media", &self.conversation.media, &["agi", "stream"])?;
        one_of("stream.transport", &st.transport, &["auto", "websocket", "audiosocket"])?;
        one_of("stream.format", &st.format, &["slin16", "slin", "ulaw"])?;
        if st.transport == "audiosocket" && st.format == "ulaw" {
            return Err(
                "stream.format: AudioSocket carries slin16 or slin, not ulaw (stream.transport = \"audiosocket\")"
                    .into(),
            );
        }
        if st.speculative_pause > st.endpoint_silence {
            return Err(format!(
                "stream.speculative_pause: expected at most stream.endpoint_silence ({}), got {}",
                st.endpoint_silence, st.speculative_pause
            ));
        }
        if st.audiosocket_listen.port() != 0
            && (st.audiosocket_listen == self.agi.listen || st.audiosocket_listen == self.http.listen)
        {
            return Err(format!(
                "stream.audiosocket_listen: {} is already agi.listen or http.listen; it needs its own port",
                st.audiosocket_listen
            ));
        }
        Ok(())
    }

    /// `[ari]` and `[dialer]`: what types alone cannot check.
    fn validate_ari(&self) -> Result<(), String> {
        let ari = &self.ari;
        let url = ari.url.trim();
        if !url.is_empty() {
            let host = url.strip_prefix("http://").or_else(|| url.strip_prefix("https://")).unwrap_or_default();
            if host.is_empty() || host.starts_with('/') {
                return Err(format!(
                    "ari.url: expected http://host:port such as http://127.0.0.1:8088 (or https:// with TLS), got {url:?}"
                ));
            }
            // A CA file that cannot be read stops the start, not the first call.
            ari.settings().tls().map_err(|e| e.to_string())?;
            if ari.username.trim().is_empty() {
                return Err("ari.username: expected the ARI user from Asterisk's ari.conf (ari.url is set)".into());
            }
        }
        let app_ok = !ari.app.is_empty()
            && ari.app.len() <= 80
            && ari.app.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
        if !app_ok {
            return Err(format!("ari.app: expected letters, digits, '-', '_' or '.', got {:?}", ari.app));
        }
        let d = &self.dialer;
        let placeholder = d.endpoint.contains("{number}") || d.endpoint.contains("{digits}");
        let tech = d.endpoint.split_once('/').is_some_and(|(tech, rest)| !tech.is_empty() && !rest.is_empty());
        if !placeholder || !tech {
            return Err(format!(
                "dialer.endpoint: expected Tech/resource with {{number}} or {{digits}}, such as \"PJSIP/{{number}}@trunk\", got {:?}",
                d.endpoint
            ));
        }
        let dialplan_name = |text: &str| {
            !text.is_empty()
                && text.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'+'))
        };
        if !dialplan_name(&d.context) {
            return Err(format!("dialer.context: expected a dialplan context name, got {:?}", d.context));
        }
        if !dialplan_name(&d.extension) {
            return Err(format!("dialer.extension: expected a dialplan extension, got {:?}", d.extension));
        }
        if d.caller_id.contains(['\r', '\n']) {
            return Err("dialer.caller_id: expected one line such as \"Acme <+15551230000>\"".into());
        }
        if d.ring_timeout.0.as_secs() == 0 || d.ring_timeout.0.subsec_millis() != 0 {
            return Err(format!("dialer.ring_timeout: expected whole seconds, at least 1s, got {}", d.ring_timeout));
        }
        if !d.default_country.trim().is_empty() {
            crate::phone::country(&d.default_country).map_err(|e| format!("dialer.default_country: {e}"))?;
        }
        let target = d.transfer_target.trim();
        if !target.is_empty() {
            let ok = target.split_once('/').is_some_and(|(tech, rest)| !tech.is_empty() && !rest.is_empty())
                && !target.contains([' ', ',', '\r', '\n']);
            if !ok {
                return Err(format!(
                    "dialer.transfer_target: expected Local/<exten>@<context> or Tech/resource such as \"Local/support@asterai-transfer\", got {target:?}"
                ));
            }
        }
        Ok(())
    }
}

/// Checks a log filter (`log.level`, `--log-level`): what `tracing`'s `EnvFilter` reads, except
/// that a bare word must be a level (or a module path such as `asterai::agi`): `EnvFilter` takes
/// `verbose` for a target of that name, and then logs nothing at all.
pub fn check_log_filter(filter: &str) -> Result<(), String> {
    const LEVELS: &[&str] = &["trace", "debug", "info", "warn", "error", "off"];
    let expected = "expected a level (trace, debug, info, warn, error, off) or a filter such as \
                    \"info,asterai::agi=debug\"";
    tracing_subscriber::EnvFilter::try_new(filter).map_err(|e| format!("{expected}, got {filter:?} ({e})"))?;
    for directive in filter.split(',').map(str::trim).filter(|d| !d.is_empty()) {
        let bare = !directive.contains(['=', '[', ':']);
        if bare && directive != "asterai" && !LEVELS.contains(&directive.to_ascii_lowercase().as_str()) {
            return Err(format!("{expected}, got {filter:?} ({directive:?} is not a level)"));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::check_log_filter;

    #[test]
    fn log_filters() {
        for good in ["info", "DEBUG", "warn,asterai::agi=debug", "asterai=trace", "asterai", "off", "info,sqlx=warn"] {
            assert_eq!(check_log_filter(good), Ok(()), "{good}");
        }
        for bad in ["verbose", "info,verbose", "loud=debug=x"] {
            let err = check_log_filter(bad).unwrap_err();
            assert!(err.contains(&format!("{bad:?}")) && err.contains("expected a level"), "{bad}: {err}");
        }
    }
}
