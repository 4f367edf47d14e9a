//! iGMS and Uplisting on the real daemon: an iGMS batch delivers one event per record, in order;
//! Uplisting's hooks, which name no event in the body, are told apart by the listener URL's query
//! and decided from stored state; bad input is refused or recorded, never delivered.

use std::time::Duration;

use serde_json::{Value, json};

use crate::support::{Daemon, DaemonOptions, Receiver};

const TOKEN: &str = "a-listener-token-of-32-characters";

/// POST `body` to `/listen/{account}?{query}`; returns (status, JSON answer).
async fn post(daemon: &Daemon, account: &str, query: &str, body: &[u8]) -> (u16, Value) {
    let response = daemon
        .http
        .post(format!("{}/listen/{account}?{query}", daemon.ingest_url))
        .header("content-type", "application/json")
        .body(body.to_vec())
        .send()
        .await
        .expect("listener request");
    let status = response.status().as_u16();
    (status, serde_json::from_str(&response.text().await.unwrap()).unwrap_or(Value::Null))
}

fn igms_item(uid: &str, checkin: &str, checkout: &str) -> Value {
    json!({
        "booking_uid": uid, "reservation_code": uid.split('_').next().unwrap(), "booking_status": "accepted",
        "platform_type": "airbnb", "listing_uid": "1_airbnb_123", "property_uid": "1482329366187",
        "guest_uid": "456_airbnb", "host_uid": "123_airbnb", "number_of_guests": 2,
        "local_checkin_dttm": checkin, "local_checkout_dttm": checkout
    })
}

#[tokio::test]
async fn an_igms_batch_delivers_one_event_per_record_in_order() {
    let receiver = Receiver::start().await;
    let daemon = Daemon::start(DaemonOptions::default()).await;
    daemon.create_account(json!({"id": "igms", "workspaceId": "ws", "pms": "igms", "verification": {"secret": TOKEN}})).await;
    daemon.subscribe("igms", &receiver.url).await;

    let batch = json!({"type": "booking_data", "data": [
        igms_item("AXFNTT_airbnb_123", "2019-01-05 08:30:00", "2019-01-12 03:00:00"),
        igms_item("BXGNUU_airbnb_123", "2019-01-14 15:00:00", "2019-01-16 11:00:00"),
        igms_item("CKLMPQ_airbnb_123", "2019-02-01 16:00:00", "2019-02-03 10:00:00"),
    ]});
    let (status, answer) = post(&daemon, "igms", &format!("token={TOKEN}"), batch.to_string().as_bytes()).await;
    assert_eq!(status, 200, "{answer}");
    let entry = daemon.inbox_outcome(answer["inboxId"].as_str().unwrap()).await;
    assert_eq!(entry["status"], "done", "{entry}");

    let mut delivered = Vec::new();
    for _ in 0..3 {
        let event = receiver.next().await.json();
        assert_eq!(event["hook"]["eventType"], "reservation.created", "{event}");
        delivered.push(event["data"]["record"].clone());
    }
    let mut ids: Vec<&str> = delivered.iter().map(|record| record["id"].as_str().unwrap()).collect();
    ids.sort_unstable();
    assert_eq!(ids, ["AXFNTT_airbnb_123", "BXGNUU_airbnb_123", "CKLMPQ_airbnb_123"]);
    let second = delivered.iter().find(|record| record["id"] == "BXGNUU_airbnb_123").unwrap();
    assert_eq!(second["arrivalDate"], "2019-01-14T00:00:00.000Z");
    assert_eq!(second["arrivalEstimatedTime"], "2019-01-14T15:00:00.000Z");
    assert_eq!(second["nights"], 2);
    receiver.expect_nothing(Duration::from_millis(300)).await;
    // The event log keeps the order of `data`.
    let (_, log) = daemon.admin("GET", "/v1/events?accountId=igms", None).await;
    let logged: Vec<&str> = log["events"].as_array().unwrap().iter().map(|event| event["recordId"].as_str().unwrap()).collect();
    assert_eq!(logged, ["AXFNTT_airbnb_123", "BXGNUU_airbnb_123", "CKLMPQ_airbnb_123"]);

    // The same booking again with moved dates: an update with the previous dates.
    let moved = json!({"type": "booking_data", "data": [igms_item("AXFNTT_airbnb_123", "2019-01-06 08:30:00", "2019-01-12 03:00:00")]});
    let (status, _) = post(&daemon, "igms", &format!("token={TOKEN}"), moved.to_string().as_bytes()).await;
    assert_eq!(status, 200);
    let event = receiver.next().await.json();
    assert_eq!(event["hook"]["eventType"], "reservation.updated", "{event}");
    assert_eq!(event["data"]["record"]["previousArrivalDate"], "2019-01-05T00:00:00.000Z");

    // Bad input: a wrong token is refused at the door; another PMS's body, a truncated body and an
    // item without its id fail the webhook (kept, with the reason); an unmapped type is skipped.
    let (status, answer) = post(&daemon, "igms", "token=wrong-token", batch.to_string().as_bytes()).await;
    assert_eq!(status, 401, "{answer}");
    assert!(answer["error"]["code"].is_string(), "{answer}");
    let (status, answer) =
        post(&daemon, "igms", &format!("token={TOKEN}"), br#"{"type": "booking_data", "data": [{"booking_uid": "AXF"#).await;
    assert_eq!((status, answer["error"]["code"].as_str()), (400, Some("invalid_json")), "a truncated body: {answer}");
    let failures: [(&[u8], &str); 2] = [
        (br#"{"action": "newReservation", "user": 1, "data": {"id": 5}}"#, "failed"),
        (br#"{"type": "booking_data", "data": [{"reservation_code": "X"}]}"#, "failed"),
    ];
    for (body, expected) in failures {
        let (status, answer) = post(&daemon, "igms", &format!("token={TOKEN}"), body).await;
        assert_eq!(status, 200, "{answer}");
        let entry = daemon.inbox_outcome(answer["inboxId"].as_str().unwrap()).await;
        assert_eq!(entry["status"], expected, "{entry}");
        assert_eq!(entry["outcome"]["errorKind"], "bad_payload", "{entry}");
    }
    let (_, answer) = post(&daemon, "igms", &format!("token={TOKEN}"), br#"{"type": "calendar_data", "data": []}"#).await;
    let entry = daemon.inbox_outcome(answer["inboxId"].as_str().unwrap()).await;
    assert_eq!(entry["status"], "skipped", "{entry}");
    receiver.expect_nothing(Duration::from_millis(300)).await;
}

fn uplisting_booking(check_in: &str, check_out: &str) -> Value {
    json!({
        "id": 2721958, "accomodation_total": 362.45, "arrival_time": "15:00:00", "booked_at": "2021-11-26T11:19:59Z",
        "channel": "airbnb_official", "check_in": check_in, "check_out": check_out, "cleaning_fee": 40.0, "currency": "USD",
        "departure_time": "11:00:00", "external_reservation_id": "ABC2DEF3YZ", "guest_email": "jon.snow@castleblack.com",
        "guest_name": "Jon Snow", "guest_phone": "+44797978889991", "number_of_guests": 3, "property_id": 2,
        "status": "confirmed", "timestamp": "2021-11-26T11:20:00Z", "total_payout": 388
    })
}

#[tokio::test]
async fn an_uplisting_booking_posted_twice_is_created_then_updated_with_previous_dates() {
    let receiver = Receiver::start().await;
    let daemon = Daemon::start(DaemonOptions::default()).await;
    daemon.create_account(json!({"id": "upl", "workspaceId": "ws", "pms": "uplisting", "verification": {"secret": TOKEN}})).await;
    daemon.subscribe("upl", &receiver.url).await;

    // A URL entered by hand (no `event=`): the daemon decides from its stored state.
    let first = uplisting_booking("2021-12-03", "2021-12-05");
    let (status, answer) = post(&daemon, "upl", &format!("token={TOKEN}"), first.to_string().as_bytes()).await;
    assert_eq!(status, 200, "{answer}");
    let created = receiver.next().await.json();
    assert_eq!(created["hook"]["eventType"], "reservation.created", "{created}");
    assert_eq!(created["data"]["record"]["id"], "2721958");
    assert_eq!(created["data"]["record"]["primaryGuest"]["name"], "Jon Snow");

    let moved = uplisting_booking("2021-12-04", "2021-12-08");
    let (status, _) = post(&daemon, "upl", &format!("token={TOKEN}"), moved.to_string().as_bytes()).await;
    assert_eq!(status, 200);
    let updated = receiver.next().await.json();
    assert_eq!(updated["hook"]["eventType"], "reservation.updated", "{updated}");
    let record = &updated["data"]["record"];
    assert_eq!(record["arrivalDate"], "2021-12-04T00:00:00.000Z");
    assert_eq!(record["previousArrivalDate"], "2021-12-03T00:00:00.000Z");
    assert_eq!(record["previousDepartureDate"], "2021-12-05T00:00:00.000Z");
    assert_eq!(record["nights"], 4);

    // The per-event URL of booking_removed (the token first, as registration appends `event=`).
    let removed = json!({"id": 2721958, "check_in": "2021-12-04", "check_out": "2021-12-08", "property_id": 2, "reason": "destroyed"});
    let (status, _) = post(&daemon, "upl", &format!("token={TOKEN}&event=booking_removed"), removed.to_string().as_bytes()).await;
    assert_eq!(status, 200);
    let deleted = receiver.next().await.json();
    assert_eq!(deleted["hook"]["eventType"], "reservation.deleted", "{deleted}");
    assert_eq!(deleted["data"]["record"]["id"], "2721958");

    // Bad input: a wrong token; iGMS's body; a truncated body; an unknown event name.
    let (status, answer) = post(&daemon, "upl", "token=nope&event=booking_created", first.to_string().as_bytes()).await;
    assert_eq!(status, 401, "{answer}");
    let igms = json!({"type": "booking_data", "data": [igms_item("AXFNTT_airbnb_123", "2019-01-05 08:30:00", "2019-01-12 03:00:00")]});
    let (status, answer) = post(&daemon, "upl", &format!("token={TOKEN}"), br#"{"id": 5, "check_in": "2021-1"#).await;
    assert_eq!((status, answer["error"]["code"].as_str()), (400, Some("invalid_json")), "a truncated body: {answer}");
    let cases: [(String, Vec<u8>, &str, &str); 2] = [
        (format!("token={TOKEN}&event=booking_created"), igms.to_string().into_bytes(), "failed", "bad_payload"),
        (format!("token={TOKEN}&event=property_updated"), first.to_string().into_bytes(), "skipped", "unsupported_event"),
    ];
    for (query, body, expected, kind) in cases {
        let (status, answer) = post(&daemon, "upl", &query, &body).await;
        assert_eq!(status, 200, "{answer}");
        let entry = daemon.inbox_outcome(answer["inboxId"].as_str().unwrap()).await;
        assert_eq!((entry["status"].as_str(), entry["outcome"]["errorKind"].as_str()), (Some(expected), Some(kind)), "{entry}");
    }
    receiver.expect_nothing(Duration::from_millis(300)).await;
}

/// Registration through Uplisting's hook API (a local server playing `POST /hooks` and
/// `DELETE /hooks/{id}`): one hook per event, each with its own listener URL, authenticated with
/// the account's `apiKey` as the whole `Authorization` value.
#[tokio::test]
async fn uplisting_registration_creates_one_hook_per_event() {
    use std::sync::{Arc, Mutex};

    use axum::Router;
    use axum::extract::{Path, State};
    use axum::http::HeaderMap;
    use axum::routing::{delete, post as post_route};

    type Calls = Arc<Mutex<Vec<String>>>;
    let calls: Calls = Arc::default();
    let router = Router::new()
        .route(
            "/hooks",
            post_route(async |State(calls): State<Calls>, headers: HeaderMap, body: String| {
                let auth = headers.get("authorization").and_then(|value| value.to_str().ok()).unwrap_or_default().to_string();
                let mut calls = calls.lock().unwrap();
                calls.push(format!("POST /hooks {auth} {body}"));
                (axum::http::StatusCode::CREATED, axum::Json(json!({"id": 100 + calls.len()})))
            }),
        )
        .route(
            "/hooks/{id}",
            delete(async |State(calls): State<Calls>, Path(id): Path<String>| {
                calls.lock().unwrap().push(format!("DELETE /hooks/{id}"));
                axum::http::StatusCode::NO_CONTENT
            }),
        )
        .with_state(calls.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let api_url = format!("http://{}", listener.local_addr().unwrap());
    let server = tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });

    let daemon = Daemon::start(DaemonOptions::default()).await;
    let account = daemon
        .create_account(json!({
            "id": "upl-reg", "workspaceId": "ws", "pms": "uplisting", "apiBaseUrl": api_url,
            "verification": {"secret": TOKEN}, "credentials": {"apiKey": "Basic a2V5"},
        }))
        .await;
    let (status, registered) = daemon.admin("POST", "/v1/accounts/upl-reg/pms-webhooks", None).await;
    assert_eq!(status, 201, "{registered}");
    assert_eq!(registered["mode"], "automatic");
    // The three calls run concurrently: which event got which id is up to the fake's order.
    let stored = registered["registration"].as_object().unwrap();
    let mut keys: Vec<&str> = stored.keys().map(String::as_str).collect();
    keys.sort_unstable();
    assert_eq!(keys, ["webhook-booking_created", "webhook-booking_removed", "webhook-booking_updated"], "{registered}");
    let mut ids: Vec<&str> = stored.values().filter_map(Value::as_str).collect();
    ids.sort_unstable();
    assert_eq!(ids, ["101", "102", "103"], "{registered}");
    let listener_url = account["listenerUrl"].as_str().unwrap();
    let made = calls.lock().unwrap().clone();
    assert_eq!(made.len(), 3, "{made:?}");
    for event in ["booking_created", "booking_updated", "booking_removed"] {
        let separator = if listener_url.contains('?') { '&' } else { '?' };
        let body = json!({"target_url": format!("{listener_url}{separator}event={event}"), "event": event});
        let found = made
            .iter()
            .filter_map(|call| call.strip_prefix("POST /hooks Basic a2V5 "))
            .any(|sent| serde_json::from_str::<Value>(sent).is_ok_and(|sent| sent == body));
        assert!(found, "{event}: {made:?}");
    }

    let (status, removed) = daemon.admin("DELETE", "/v1/accounts/upl-reg/pms-webhooks", None).await;
    assert_eq!(status, 200, "{removed}");
    let made = calls.lock().unwrap().clone();
    for id in ["101", "102", "103"] {
        assert!(made.contains(&format!("DELETE /hooks/{id}")), "{made:?}");
    }
    server.abort();

    // iGMS has no registration API: manual instructions naming the listener URL.
    daemon.create_account(json!({"id": "igms-reg", "workspaceId": "ws", "pms": "igms", "verification": {"secret": TOKEN}})).await;
    let (status, manual) = daemon.admin("POST", "/v1/accounts/igms-reg/pms-webhooks", None).await;
    assert_eq!(status, 200, "{manual}");
    assert_eq!(manual["mode"], "manual");
    assert!(manual["instructions"].as_str().unwrap().contains("support@igms.com"), "{manual}");
}
