//! Whole-call recordings in the store (SQLite and PostgreSQL): their life, their scoping by
//! organization, and what retention and the compliance report read.

mod support;

use asterai::store::{
    Direction, NewCall, NewRecording, RecordingEnd, RecordingStatus, RecordingVia, Store, StoreError,
};

async fn org(store: &Store, slug: &str) -> i64 {
    store.create_org(slug, &format!("{slug} Inc.")).await.unwrap().id
}

fn new_call(org_id: i64, campaign_id: Option<i64>) -> NewCall {
    NewCall {
        id: None,
        org_id,
        direction: Direction::Outbound,
        from: "+15550001111".into(),
        to: "+13055550100".into(),
        channel: None,
        campaign_id,
        contact_id: None,
    }
}

fn recording<'a>(org_id: i64, call_id: &'a str, name: &'a str) -> NewRecording<'a> {
    NewRecording {
        org_id,
        call_id,
        via: RecordingVia::MixMonitor,
        name,
        path: "/var/lib/asterai/recordings/x.wav",
        format: "wav",
        region: Some("FL"),
        consent_required: true,
        consent_announced: true,
        status: RecordingStatus::Recording,
        reason: None,
    }
}

backend_tests! {
    async fn a_recording_starts_then_becomes_available_once(db) {
        let store = &db.store;
        let acme = org(store, "acme").await;
        let (call, _) = store.create_call(&new_call(acme, None)).await.unwrap();
        let name = format!("{}-1.wav", call.id);
        let started = store.start_recording(&recording(acme, &call.id, &name)).await.unwrap();
        assert_eq!(started.status, RecordingStatus::Recording);
        assert_eq!(started.call_id, call.id);
        assert_eq!(started.region.as_deref(), Some("FL"));
        assert!(started.consent_required && started.consent_announced);
        assert!(started.ended_at.is_none());

        let end = RecordingEnd { status: RecordingStatus::Available, reason: None, size_bytes: Some(32044), duration_ms: Some(2000) };
        assert!(store.finish_recording(acme, &name, &end).await.unwrap());
        let failed = RecordingEnd { status: RecordingStatus::Failed, reason: Some("late"), size_bytes: None, duration_ms: None };
        assert!(!store.finish_recording(acme, &name, &failed).await.unwrap(), "a second end changes nothing");

        let listed = store.call_recordings(acme, &call.id).await.unwrap();
        assert_eq!(listed.len(), 1);
        let got = &listed[0];
        assert_eq!(got.status, RecordingStatus::Available);
        assert_eq!((got.size_bytes, got.duration_ms), (Some(32044), Some(2000)));
        assert!(got.ended_at.is_some_and(|end| end >= got.started_at));
        assert_eq!(got.name, name);

        // The name is unique: a second recording cannot reuse it.
        assert!(matches!(store.start_recording(&recording(acme, &call.id, &name)).await, Err(StoreError::Conflict(_))));
        // Starting only as recording or refused; ending only as available or failed.
        let mut wrong = recording(acme, &call.id, "other.wav");
        wrong.status = RecordingStatus::Available;
        assert!(matches!(store.start_recording(&wrong).await, Err(StoreError::Invalid(_))));
    }

    async fn a_refused_recording_and_a_failed_one_keep_their_reasons(db) {
        let store = &db.store;
        let acme = org(store, "acme").await;
        let (call, _) = store.create_call(&new_call(acme, None)).await.unwrap();
        let mut refused = recording(acme, &call.id, "r1.wav");
        refused.consent_announced = false;
        refused.status = RecordingStatus::Refused;
        refused.reason = Some("FL requires every party's consent and the agent has no consent announcement");
        let row = store.start_recording(&refused).await.unwrap();
        assert_eq!(row.status, RecordingStatus::Refused);
        assert!(row.ended_at.is_some());
        assert!(row.status_reason.as_deref().unwrap().contains("consent"));
        // A refused recording never ends again.
        let end = RecordingEnd { status: RecordingStatus::Available, reason: None, size_bytes: Some(1), duration_ms: Some(1) };
        assert!(!store.finish_recording(acme, &row.name, &end).await.unwrap());

        let second = store.start_recording(&recording(acme, &call.id, "r2.wav")).await.unwrap();
        assert_eq!(store.fail_unfinished_recordings(acme, &call.id, "the call ended before MixMonitor stopped").await.unwrap(), 1);
        let got = store.recording(acme, second.id).await.unwrap().unwrap();
        assert_eq!(got.status, RecordingStatus::Failed);
        assert_eq!(got.status_reason.as_deref(), Some("the call ended before MixMonitor stopped"));
        assert_eq!(store.fail_unfinished_recordings(acme, &call.id, "again").await.unwrap(), 0);
    }

    async fn recordings_are_scoped_to_their_organization(db) {
        let store = &db.store;
        let acme = org(store, "acme").await;
        let globex = org(store, "globex").await;
        let (call, _) = store.create_call(&new_call(acme, None)).await.unwrap();
        // Another organization cannot record on, list, read, end or purge acme's call.
        assert!(matches!(store.start_recording(&recording(globex, &call.id, "g.wav")).await, Err(StoreError::NotFound(_))));
        let row = store.start_recording(&recording(acme, &call.id, "a.wav")).await.unwrap();
        assert!(store.call_recordings(globex, &call.id).await.unwrap().is_empty());
        assert!(store.recording(globex, row.id).await.unwrap().is_none());
        let end = RecordingEnd { status: RecordingStatus::Available, reason: None, size_bytes: Some(1), duration_ms: Some(1) };
        assert!(matches!(store.finish_recording(globex, &row.name, &end).await, Err(StoreError::NotFound(_))));
        assert!(matches!(store.mark_recording_purged(globex, row.id, asterai::store::now()).await, Err(StoreError::NotFound(_))));
        assert_eq!(store.fail_unfinished_recordings(globex, &call.id, "x").await.unwrap(), 0);
        assert!(store.recordings_before(globex, asterai::store::now() + chrono::Duration::days(1), 10).await.unwrap().is_empty());
        assert_eq!(store.recording(acme, row.id).await.unwrap().unwrap().status, RecordingStatus::Recording);
    }

    async fn retention_reads_old_recordings_and_marks_them_purged(db) {
        let store = &db.store;
        let acme = org(store, "acme").await;
        let campaign = store.create_campaign(acme, "spring", &serde_json::json!({})).await.unwrap();
        let (call, _) = store.create_call(&new_call(acme, Some(campaign.id))).await.unwrap();
        let (other, _) = store.create_call(&new_call(acme, None)).await.unwrap();
        let a = store.start_recording(&recording(acme, &call.id, "a.wav")).await.unwrap();
        let b = store.start_recording(&recording(acme, &other.id, "b.wav")).await.unwrap();
        let before = store.recordings_before(acme, a.started_at, 10).await.unwrap();
        assert!(before.is_empty(), "nothing started before the first");
        let later = asterai::store::now() + chrono::Duration::seconds(1);
        let ids: Vec<i64> = store.recordings_before(acme, later, 10).await.unwrap().iter().map(|r| r.id).collect();
        assert_eq!(ids, [a.id, b.id]);
        let campaign_ids: Vec<i64> = store.campaign_recordings(acme, campaign.id).await.unwrap().iter().map(|r| r.id).collect();
        assert_eq!(campaign_ids, [a.id]);

        let at = asterai::store::now();
        assert!(store.mark_recording_purged(acme, a.id, at).await.unwrap());
        assert!(!store.mark_recording_purged(acme, a.id, at).await.unwrap(), "purging twice changes nothing");
        let purged = store.recording(acme, a.id).await.unwrap().unwrap();
        assert_eq!((purged.status, purged.purged_at), (RecordingStatus::Purged, Some(at)));
        let ids: Vec<i64> = store.recordings_before(acme, later, 10).await.unwrap().iter().map(|r| r.id).collect();
        assert_eq!(ids, [b.id], "a purged recording is not purged again");
    }
}
