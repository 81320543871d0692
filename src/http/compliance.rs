//! Compliance over the REST API: a campaign's figures (`GET /v1/campaigns/{id}/stats`, scope
//! `monitor`), its compliance report (`GET /v1/campaigns/{id}/compliance`, scope `monitor`, JSON
//! or CSV), and the audit log (`GET /v1/audit`, scope `admin`). Scoped to the token's
//! organization: another organization's campaign is "not found".

use axum::Json;
use axum::extract::{Path, State};

use super::extract::{Authorized, Monitor};
use super::{ApiError, AppState};
use crate::store::compliance::AbandonStats;

/// `GET /v1/campaigns/{id}/stats`. Compliance keeps its figures under `abandon`, so other
/// figures of the campaign can sit beside them.
#[derive(Debug, serde::Serialize)]
pub struct CampaignStats {
    pub campaign: i64,
    /// The abandon rate over the rolling 30 days, its threshold and whether it slowed the campaign.
    pub abandon: AbandonStats,
}

/// `GET /v1/campaigns/{id}/stats`.
pub async fn campaign_stats(
    State(state): State<AppState>,
    Path(id): Path<i64>,
    principal: Authorized<Monitor>,
) -> Result<Json<CampaignStats>, ApiError> {
    let campaign = state
        .store()
        .campaign(principal.org_id, id)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("no campaign {id}")))?;
    let compliance = state.compliance();
    let policy = compliance.for_org(&principal.org_slug);
    let abandon = state.store().abandon_stats(&campaign, &policy.abandon, crate::store::now()).await?;
    Ok(Json(CampaignStats { campaign: campaign.id, abandon }))
}
