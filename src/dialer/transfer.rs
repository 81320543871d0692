//! Transfer to a person through ARI: the conversation's [`Transferer`] when `ari.url` and
//! `dialer.transfer_target` are set.
//!
//! * `Local/<exten>@<context>`: the channel continues in the dialplan at `<context>`,
//!   `<exten>`, priority 1 (`POST /channels/{id}/continue`), where a queue or a `Dial()` waits.
//! * Any other `Tech/resource` (`PJSIP/100`): a technology-level redirect
//!   (`POST /channels/{id}/redirect`).
//!
//! Asterisk moves a channel only while it is in the Stasis application, and a conversation's
//! channel is running `AGI()` in the dialplan: Asterisk answers 409 "Channel not in Stasis
//! application". The channel is then handed over to the dialplan instead: the transfer
//! succeeds, the conversation ends with outcome `transferred` without hanging up, and the
//! dialplan continues after `AGI()`, where the shipped contexts send
//! `ASTERAI_OUTCOME = transferred` to `[asterai-transfer]`. Any other refusal (the channel is
//! gone, ARI unreachable) is returned as the error, and the conversation says
//! `conversation.transfer_unavailable` and carries on: a failed transfer never drops the call.

use futures_util::future::BoxFuture;

use crate::ari::{AriClient, AriError};
use crate::conversation::{TransferRequest, Transferer};

/// Where a transfer goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TransferTarget {
    /// Continue in the dialplan.
    Dialplan { context: String, extension: String },
    /// Redirect to an endpoint of the channel's technology.
    Endpoint(String),
}

impl TransferTarget {
    /// Reads `dialer.transfer_target`; `None` when it is empty.
    pub fn parse(target: &str) -> Option<TransferTarget> {
        let target = target.trim();
        if target.is_empty() {
            return None;
        }
        if let Some(rest) = target.strip_prefix("Local/")
            && let Some((extension, context)) = rest.split_once('@')
        {
            // Local channel options (`/n`) do not apply to a continue.
            let context = context.split('/').next().unwrap_or(context);
            if !extension.is_empty() && !context.is_empty() {
                return Some(TransferTarget::Dialplan { context: context.to_owned(), extension: extension.to_owned() });
            }
        }
        Some(TransferTarget::Endpoint(target.to_owned()))
    }
}

/// Moves a call's channel to the transfer target: the agent's target the model named, else
/// `dialer.transfer_target`.
pub struct AriTransferer {
    client: AriClient,
    target: Option<TransferTarget>,
}

impl AriTransferer {
    pub fn new(client: AriClient, target: TransferTarget) -> AriTransferer {
        AriTransferer { client, target: Some(target) }
    }

    /// A transferer for agents' named targets only, when `dialer.transfer_target` is empty.
    pub fn named_only(client: AriClient) -> AriTransferer {
        AriTransferer { client, target: None }
    }

    /// Moves the channel whose ARI id is `channel_id` to `target`.
    pub async fn transfer_channel(&self, channel_id: &str, target: &TransferTarget) -> Result<(), AriError> {
        match target {
            TransferTarget::Dialplan { context, extension } => {
                self.client.continue_in_dialplan(channel_id, context, extension, 1).await
            }
            TransferTarget::Endpoint(endpoint) => self.client.redirect(channel_id, endpoint).await,
        }
    }
}

impl Transferer for AriTransferer {
    fn transfer<'a>(&'a self, call: &'a TransferRequest) -> BoxFuture<'a, Result<(), String>> {
        Box::pin(async move {
            // ARI names a channel by its unique id: the dialer's call id for calls it placed,
            // `agi_uniqueid` for the others.
            let id = if call.uniqueid.is_empty() { call.call_id.as_str() } else { call.uniqueid.as_str() };
            let named = call.destination.as_deref().and_then(TransferTarget::parse);
            let Some(target) = named.as_ref().or(self.target.as_ref()) else {
                return Err("no transfer target is configured (dialer.transfer_target)".to_owned());
            };
            match self.transfer_channel(id, target).await {
                Ok(()) => {
                    tracing::info!(call_id = %call.call_id, ?target, "call transferred");
                    Ok(())
                }
                Err(AriError::Conflict(message)) if message.contains("not in Stasis") && named.is_some() => {
                    // The dialplan's hand-over goes to its own transfer context, not to the
                    // agent's target: refused rather than sent somewhere the model did not name.
                    Err(format!(
                        "transfer to {target:?}: the channel runs AGI() in the dialplan (not in Stasis), which cannot be sent to a named target"
                    ))
                }
                Err(AriError::Conflict(message)) if message.contains("not in Stasis") => {
                    // In the dialplan (AGI): the dialplan moves it once AGI() returns, if the
                    // channel is still there.
                    match self.client.channel(id).await {
                        Ok(_) => {
                            tracing::info!(call_id = %call.call_id, "the channel is in the dialplan, not in Stasis: handing the transfer to the dialplan (ASTERAI_OUTCOME=transferred)");
                            Ok(())
                        }
                        Err(e) => Err(format!("transfer to {target:?} failed: {e}")),
                    }
                }
                Err(e) => Err(format!("transfer to {target:?} failed: {e}")),
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets() {
        assert_eq!(TransferTarget::parse(""), None);
        assert_eq!(
            TransferTarget::parse("Local/support@asterai-transfer"),
            Some(TransferTarget::Dialplan { context: "asterai-transfer".into(), extension: "support".into() })
        );
        assert_eq!(
            TransferTarget::parse("Local/100@queues/n"),
            Some(TransferTarget::Dialplan { context: "queues".into(), extension: "100".into() })
        );
        assert_eq!(TransferTarget::parse("PJSIP/100"), Some(TransferTarget::Endpoint("PJSIP/100".into())));
    }
}
