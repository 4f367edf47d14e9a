//! The admin API as an operator uses it: accounts and webhooks, auth, validation.

use serde_json::{Value, json};

use crate::support::{Daemon, DaemonOptions};

#[track_caller]
fn assert_error(answer: &(u16, Value), status: u16, code: &str) {
    assert_eq!(answer.0, status, "{}", answer.1);
    assert_eq!(answer.1["error"]["code"], code, "{}", answer.1);
}

#[tokio::test]
async fn accounts_and_webhooks_lifecycle() {
    let daemon = Daemon::start(DaemonOptions::default()).await;

    let account = daemon
        .create_account(json!({"workspaceId": "ws-9", "pms": "hostaway", "name": "Beach houses", "credentials": {"clientId": "1", "clientSecret": "s3cr3t"}}))
        .await;
    let account_id = account["id"].as_str().unwrap();
    assert_eq!(account["listenerUrl"], format!("{}/listen/{account_id}", daemon.ingest_url));
    assert_eq!(account["credentials"], json!(["clientId", "clientSecret"]), "names only");
    assert!(!account.to_string().contains("s3cr3t"));

    let (status, listed) = daemon.admin("GET", "/v1/accounts", None).await;
    assert_eq!(status, 200);
    assert_eq!(listed["accounts"].as_array().unwrap().len(), 1);
    let (status, patched) = daemon.admin("PATCH", &format!("/v1/accounts/{account_id}"), Some(json!({"name": "Lake houses"}))).await;
    assert_eq!((status, patched["name"].as_str()), (200, Some("Lake houses")));

    let (status, webhook) = daemon
        .admin(
            "POST",
            &format!("/v1/accounts/{account_id}/webhooks"),
            Some(json!({"name": "CRM", "url": "http://127.0.0.1:9/hook", "enabled": true, "eventTypes": ["reservation.created"]})),
        )
        .await;
    assert_eq!(status, 201, "{webhook}");
    let keys: Vec<&str> = webhook.as_object().unwrap().keys().map(String::as_str).collect();
    for key in ["id", "name", "url", "enabled", "eventTypes", "secret", "createdAt"] {
        assert!(keys.contains(&key), "{key} missing from {webhook}");
    }
    assert!(webhook["secret"].as_str().unwrap().starts_with("whsec_"));
    let webhook_path = format!("/v1/accounts/{account_id}/webhooks/{}", webhook["id"].as_str().unwrap());
    let (status, shown) = daemon.admin("GET", &webhook_path, None).await;
    assert_eq!(status, 200);
    assert!(shown.get("secret").is_none(), "the secret is shown only at creation: {shown}");
    let (status, patched) = daemon
        .admin("PATCH", &webhook_path, Some(json!({"enabled": false, "eventTypes": ["reservation.updated", "conversation.updated"]})))
        .await;
    assert_eq!(status, 200);
    assert_eq!(
        (patched["enabled"].clone(), patched["eventTypes"].clone()),
        (json!(false), json!(["reservation.updated", "conversation.updated"]))
    );
    let (status, listed) = daemon.admin("GET", &format!("/v1/accounts/{account_id}/webhooks"), None).await;
    assert_eq!((status, listed["webhooks"].as_array().unwrap().len()), (200, 1));
    assert_eq!(daemon.admin("DELETE", &webhook_path, None).await.0, 204);
    assert_error(&daemon.admin("GET", &webhook_path, None).await, 404, "webhook_not_found");

    assert_eq!(daemon.admin("DELETE", &format!("/v1/accounts/{account_id}"), None).await.0, 204);
    assert_error(&daemon.admin("GET", &format!("/v1/accounts/{account_id}"), None).await, 404, "account_not_found");
}

#[tokio::test]
async fn validation_and_auth_errors() {
    let daemon = Daemon::start(DaemonOptions::default()).await;

    let response = daemon.http.get(format!("{}/v1/accounts", daemon.admin_url)).send().await.unwrap();
    assert_eq!(response.status().as_u16(), 401);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"]["code"], "unauthorized");
    let health = daemon.http.get(format!("{}/healthz", daemon.admin_url)).send().await.unwrap();
    assert_eq!(health.status().as_u16(), 200, "healthz needs no token");

    assert_error(
        &daemon.admin("POST", "/v1/accounts", Some(json!({"workspaceId": "ws", "pms": "nosuchpms"}))).await,
        422,
        "unknown_plugin",
    );
    assert_error(&daemon.admin("POST", "/v1/accounts", Some(json!({"pms": "hostaway"}))).await, 422, "invalid_field");
    assert_error(
        &daemon.admin("POST", "/v1/accounts", Some(json!({"workspaceId": "ws", "pms": "hostaway", "id": "bad id!"}))).await,
        422,
        "invalid_field",
    );
    assert_error(
        &daemon.admin("POST", "/v1/accounts", Some(json!({"workspaceId": "ws", "pms": "hostaway", "verification": {"secret": "x"}}))).await,
        422,
        "invalid_field",
    );
    let raw = daemon
        .http
        .post(format!("{}/v1/accounts", daemon.admin_url))
        .bearer_auth(&daemon.token)
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(raw.status().as_u16(), 400);
    assert_eq!(raw.json::<Value>().await.unwrap()["error"]["code"], "invalid_json");

    daemon.create_account(json!({"id": "acc-1", "workspaceId": "ws", "pms": "hostaway"})).await;
    assert_error(
        &daemon.admin("POST", "/v1/accounts", Some(json!({"id": "acc-1", "workspaceId": "ws", "pms": "hostaway"}))).await,
        409,
        "conflict",
    );
    let webhooks = "/v1/accounts/acc-1/webhooks";
    assert_error(
        &daemon
            .admin("POST", webhooks, Some(json!({"name": "x", "url": "http://127.0.0.1:9/", "eventTypes": ["reservation.exploded"]})))
            .await,
        422,
        "unknown_event_type",
    );
    assert_error(
        &daemon
            .admin("POST", webhooks, Some(json!({"name": "x", "url": "ftp://example.com/", "eventTypes": ["reservation.created"]})))
            .await,
        422,
        "invalid_url",
    );
    assert_error(
        &daemon.admin("POST", webhooks, Some(json!({"name": "x", "url": "http://127.0.0.1:9/", "eventTypes": []}))).await,
        422,
        "invalid_field",
    );
    assert_error(
        &daemon
            .admin(
                "POST",
                "/v1/accounts/nope/webhooks",
                Some(json!({"name": "x", "url": "http://127.0.0.1:9/", "eventTypes": ["reservation.created"]})),
            )
            .await,
        404,
        "account_not_found",
    );
    assert_error(&daemon.admin("GET", "/v1/events?limit=0", None).await, 400, "invalid_limit");
    assert_error(&daemon.admin("GET", "/v1/events/nope", None).await, 404, "event_not_found");
}

#[tokio::test]
async fn private_destinations_are_refused_unless_allowed() {
    let daemon = Daemon::start(DaemonOptions::default().env("STAYHOOK_ALLOW_PRIVATE_DESTINATIONS", "false")).await;
    daemon.create_account(json!({"id": "acc", "workspaceId": "ws", "pms": "hostaway"})).await;
    for url in [
        "http://127.0.0.1:8080/hook",
        "http://10.0.0.5/hook",
        "http://localhost/hook",
        "http://[::1]/hook",
        "http://169.254.169.254/latest",
    ] {
        let answer = daemon
            .admin("POST", "/v1/accounts/acc/webhooks", Some(json!({"name": "x", "url": url, "eventTypes": ["reservation.created"]})))
            .await;
        assert_error(&answer, 422, "invalid_url");
    }
    let (status, _) = daemon
        .admin(
            "POST",
            "/v1/accounts/acc/webhooks",
            Some(json!({"name": "x", "url": "https://hooks.example.com/stayhook", "eventTypes": ["reservation.created"]})),
        )
        .await;
    assert_eq!(status, 201);
}

#[tokio::test]
async fn plugins_are_listed_with_their_source() {
    let daemon = Daemon::start(DaemonOptions::default().with_chaos()).await;
    let (status, listed) = daemon.admin("GET", "/v1/plugins", None).await;
    assert_eq!(status, 200);
    let plugins = listed["plugins"].as_array().unwrap();
    let hostaway = plugins.iter().find(|plugin| plugin["name"] == "hostaway").expect("hostaway is built in");
    assert_eq!(hostaway["source"], "built-in");
    assert_eq!(hostaway["verification"], "basic-auth");
    let chaos = plugins.iter().find(|plugin| plugin["name"] == "chaos").expect("chaos loaded from the plugin dir");
    assert_eq!(chaos["source"], "file", "{chaos}");
    assert!(chaos["path"].as_str().unwrap().ends_with("chaos.wasm"), "{chaos}");
    assert_eq!(chaos["sha256"].as_str().unwrap().len(), 64, "{chaos}");
    let metrics =
        daemon.http.get(format!("{}/metrics", daemon.admin_url)).bearer_auth(&daemon.token).send().await.unwrap().text().await.unwrap();
    assert!(metrics.contains("stayhook_webhooks_accepted_total"), "{metrics}");
}

/// The OpenAPI document is served, names every route the router has (found in the source), and
/// every path it names is routed (answers something other than the router's own 404/405).
#[tokio::test]
async fn the_openapi_document_matches_the_routes() {
    let daemon = Daemon::start(DaemonOptions::default()).await;
    let (status, document) = daemon.admin("GET", "/openapi.json", None).await;
    assert_eq!(status, 200);
    let documented: std::collections::BTreeSet<(String, String)> = document["paths"]
        .as_object()
        .unwrap()
        .iter()
        .flat_map(|(path, methods)| methods.as_object().unwrap().keys().map(move |method| (method.to_uppercase(), path.clone())))
        .collect();

    let source: String = [
        "mod.rs",
        "accounts.rs",
        "webhooks.rs",
        "events.rs",
        "registration.rs",
        "plugins.rs",
        "insight.rs",
        "session.rs",
        "sync.rs",
        "export.rs",
    ]
    .iter()
    .map(|file| std::fs::read_to_string(crate::support::repo_root().join("src/api").join(file)).unwrap())
    .collect();
    let mut routed = std::collections::BTreeSet::new();
    for chunk in source.split(".route(").skip(1) {
        let path = chunk.split('"').nth(1).unwrap().to_string();
        let path = path
            .replace("{account_id}", "{accountId}")
            .replace("{webhook_id}", "{webhookId}")
            .replace("{event_id}", "{eventId}")
            .replace("{inbox_id}", "{inboxId}")
            .replace("{delivery_id}", "{deliveryId}")
            .replace("{record_id}", "{recordId}");
        routed.insert(path);
    }
    let documented_paths: std::collections::BTreeSet<String> = documented.iter().map(|(_, path)| path.clone()).collect();
    assert_eq!(routed.difference(&documented_paths).collect::<Vec<_>>(), Vec::<&String>::new(), "routes missing from docs/openapi.json");

    for (method, path) in &documented {
        let concrete = path
            .replace("{accountId}", "no-such-account")
            .replace("{webhookId}", "w")
            .replace("{eventId}", "e")
            .replace("{inboxId}", "1")
            .replace("{recordId}", "r")
            .replace("{name}", "no-such-plugin");
        let response = daemon
            .http
            .request(reqwest::Method::from_bytes(method.as_bytes()).unwrap(), format!("{}{concrete}", daemon.admin_url))
            .bearer_auth(&daemon.token)
            .header("content-type", "application/json")
            .body("{}")
            .send()
            .await
            .unwrap();
        let status = response.status().as_u16();
        let body: Value = response.json().await.unwrap_or(Value::Null);
        assert_ne!(status, 405, "{method} {path} is documented but not routed");
        assert_ne!(body["error"]["code"], "not_found", "{method} {path} is documented but not routed");
        let operation = &document["paths"][path][method.to_lowercase()];
        assert!(operation["responses"].get(status.to_string()).is_some(), "{method} {path} answered {status}, not documented: {body}");
    }
}

/// Every operation documents the errors it can answer, each as the `{"error": {"code",
/// "message"}}` shape, and the statuses the API gives for a missing token, an unknown id, a
/// `limit` out of range and a body of the wrong shape are among them.
#[tokio::test]
async fn every_route_documents_its_error_responses() {
    let daemon = Daemon::start(DaemonOptions::default()).await;
    let (_, document) = daemon.admin("GET", "/openapi.json", None).await;
    let resolve = |node: &Value| -> Value {
        match node["$ref"].as_str() {
            Some(reference) => {
                let pointer = reference.strip_prefix('#').unwrap();
                document.pointer(pointer).unwrap_or_else(|| panic!("dangling {reference}")).clone()
            }
            None => node.clone(),
        }
    };
    let mut n_checked = 0;
    for (path, methods) in document["paths"].as_object().unwrap() {
        for (method, operation) in methods.as_object().unwrap() {
            let what = format!("{} {path}", method.to_uppercase());
            let responses = operation["responses"].as_object().unwrap();
            let documents = |status: u16| responses.contains_key(&status.to_string());
            for (status, response) in responses.iter().filter(|(status, _)| !status.starts_with('2')) {
                let schema = &resolve(response)["content"]["application/json"]["schema"];
                assert_eq!(schema["$ref"], "#/components/schemas/Error", "{what} {status} is not the error shape");
            }
            let parameters: Vec<Value> =
                operation["parameters"].as_array().map(|list| list.iter().map(&resolve).collect()).unwrap_or_default();
            let has_limit = parameters.iter().any(|parameter| parameter["name"] == "limit");
            if has_limit {
                assert!(documents(400), "{what} takes a limit but documents no 400");
                let limit = &parameters.iter().find(|parameter| parameter["name"] == "limit").unwrap()["schema"];
                assert!(limit["minimum"] == 1 && limit["maximum"].is_u64() && limit["default"].is_u64(), "{what}: {limit}");
            }
            // PUT creates what its path names, so it cannot miss it.
            if method != "put" && parameters.iter().any(|parameter| parameter["in"] == "path") {
                assert!(documents(404), "{what} names something in its path but documents no 404");
            }
            if operation["requestBody"]["content"]["application/json"].is_object() {
                assert!(documents(400) && documents(422), "{what} takes JSON but documents no 400 or 422");
            }
            let concrete = path
                .replace("{accountId}", "no-such-account")
                .replace("{webhookId}", "00000000-0000-4000-8000-000000000000")
                .replace("{eventId}", "e")
                .replace("{inboxId}", "1")
                .replace("{recordId}", "r")
                .replace("{name}", "no-such-plugin");
            let url = format!("{}{concrete}", daemon.admin_url);
            let http_method = reqwest::Method::from_bytes(method.to_uppercase().as_bytes()).unwrap();
            let open = operation.get("security").is_some_and(|security| security == &json!([]));
            if !open {
                assert!(documents(401), "{what} needs the token but documents no 401");
                let answer = daemon.http.request(http_method.clone(), &url).send().await.unwrap();
                assert_eq!(answer.status().as_u16(), 401, "{what} without a token");
            }
            if method == "get" {
                let answer = daemon.http.get(&url).bearer_auth(&daemon.token).send().await.unwrap();
                let status = answer.status().as_u16();
                let body: Value = answer.json().await.unwrap_or(Value::Null);
                if status == 200 && body.get("next").is_some() {
                    // A list: its paging is documented, and the documented maximum is the API's.
                    let has_after = parameters.iter().any(|parameter| parameter["name"] == "after");
                    assert!(has_limit && has_after, "{what} pages but does not document limit and after");
                    let limit = &parameters.iter().find(|parameter| parameter["name"] == "limit").unwrap()["schema"];
                    let max = limit["maximum"].as_u64().unwrap();
                    let (status, _) = daemon.admin("GET", &format!("{concrete}?limit={max}"), None).await;
                    assert_eq!(status, 200, "{what}?limit={max} (the documented maximum)");
                    let answer = daemon.admin("GET", &format!("{concrete}?limit={}", max + 1), None).await;
                    assert_error(&answer, 400, "invalid_limit");
                }
            }
            if has_limit {
                let answer =
                    daemon.http.request(http_method.clone(), format!("{url}?limit=0")).bearer_auth(&daemon.token).send().await.unwrap();
                let status = answer.status().as_u16();
                let body: Value = answer.json().await.unwrap_or(Value::Null);
                assert!(documents(status) && status >= 400, "{what}?limit=0 answered {status}: {body}");
            }
            if operation["requestBody"]["content"]["application/json"].is_object() {
                for body in ["[1, 2]", "{\"noSuchField\": 1}"] {
                    let answer = daemon
                        .http
                        .request(http_method.clone(), &url)
                        .bearer_auth(&daemon.token)
                        .header("content-type", "application/json")
                        .body(body)
                        .send()
                        .await
                        .unwrap();
                    let status = answer.status().as_u16();
                    let shown: Value = answer.json().await.unwrap_or(Value::Null);
                    assert!(documents(status) && status >= 400, "{what} with {body} answered {status}: {shown}");
                }
            }
            n_checked += 1;
        }
    }
    assert!(n_checked >= 28, "{n_checked} operations");
}

/// Verification secrets that would verify nothing are refused for every scheme, at creation and
/// by PATCH: empty or blank values, half a basic-auth pair, a bare `whsec_` or a key that does not
/// decode, and secrets shorter than 16 bytes. What is refused leaves the stored account as it was,
/// and a request forged with an empty key is still refused.
#[tokio::test]
async fn empty_blank_and_short_verification_secrets_are_refused() {
    let daemon = Daemon::start(DaemonOptions::default()).await;
    let refused = [
        ("hostaway", json!({"username": "", "password": ""}), "verification.username"),
        ("hostaway", json!({"username": "stayhook", "password": "   "}), "verification.password"),
        ("hostaway", json!({"username": "stayhook"}), "verification.password"),
        ("hostaway", json!({"password": "a long random password"}), "verification.username"),
        ("hostaway", json!({"username": "stay:hook", "password": "a long random password"}), "verification.username"),
        ("lodgify", json!({"secret": ""}), "verification.secret"),
        ("lodgify", json!({"secret": "short"}), "verification.secret"),
        ("hospitable", json!({"secret": " \t\n "}), "verification.secret"),
        ("guesty", json!({"secret": ""}), "verification.secret"),
        ("guesty", json!({"secret": "whsec_"}), "verification.secret"),
        ("guesty", json!({"secret": "whsec_!!not base64!!"}), "verification.secret"),
        ("guesty", json!({"secret": "whsec_c2hvcnQ="}), "verification.secret"),
        ("smoobu", json!({"secret": ""}), "verification.secret"),
        ("beds24", json!({"secret": "0123456789"}), "verification.secret"),
        ("hostfully", json!({"secret": "        "}), "verification.secret"),
    ];
    for (pms, verification, field) in refused {
        let body = json!({"workspaceId": "ws", "pms": pms, "verification": verification});
        let answer = daemon.admin("POST", "/v1/accounts", Some(body)).await;
        assert_error(&answer, 422, "invalid_field");
        let message = answer.1["error"]["message"].as_str().unwrap();
        assert!(message.contains(field), "{pms} {verification}: {message}");
    }
    let (_, listed) = daemon.admin("GET", "/v1/accounts", None).await;
    assert_eq!(listed["accounts"], json!([]), "nothing refused was stored");

    let accepted = [
        ("hostaway", json!({"username": "stayhook", "password": "a long random password"})),
        ("lodgify", json!({"secret": "sixteen-byte-key"})),
        ("guesty", json!({"secret": "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"})),
        ("smoobu", json!({"secret": "a-token-of-more-than-16-bytes"})),
    ];
    for (pms, verification) in accepted {
        let account = daemon.create_account(json!({"id": pms, "workspaceId": "ws", "pms": pms, "verification": verification})).await;
        assert_eq!(account["verification"]["configured"], true, "{account}");
    }

    for (id, verification) in [
        ("lodgify", json!({"secret": ""})),
        ("guesty", json!({"secret": "whsec_"})),
        ("hostaway", json!({"username": "stayhook", "password": ""})),
        ("smoobu", json!({"secret": " "})),
    ] {
        let answer = daemon.admin("PATCH", &format!("/v1/accounts/{id}"), Some(json!({"verification": verification}))).await;
        assert_error(&answer, 422, "invalid_field");
        let (_, account) = daemon.admin("GET", &format!("/v1/accounts/{id}"), None).await;
        assert_eq!(account["verification"]["configured"], true, "the refused PATCH changed nothing: {account}");
    }

    // Lodgify signs with `ms-signature: sha256=<hex HMAC>`: a signature made with an empty key is
    // a forgery anyone can make; the account still holds its real secret and refuses it.
    use hmac::{Hmac, Mac};
    let body = br#"{"action": "booking_new_any_status", "booking": {"id": 1}}"#;
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(b"").unwrap();
    mac.update(body);
    let forged = format!("sha256={}", hex::encode(mac.finalize().into_bytes()));
    let answer = daemon.post_webhook("lodgify", body, &[("ms-signature", &forged)]).await;
    assert_error(&answer, 401, "verification_failed");
}

/// With private destinations not allowed, an account's `apiBaseUrl` must be https, without user
/// info, and not an IP literal on loopback, private, link-local, unspecified or multicast
/// addresses (nor a `localhost` name): 422 `invalid_url` naming the field, at creation and by
/// PATCH. The fake PMS on loopback never hears of it.
#[tokio::test]
async fn api_base_urls_that_would_reach_private_addresses_are_refused() {
    let pms = crate::support::FakePms::start().await;
    let daemon = Daemon::start(DaemonOptions::default().env("STAYHOOK_ALLOW_PRIVATE_DESTINATIONS", "false")).await;
    let port = pms.url.rsplit(':').next().unwrap();
    let credentials = json!({"clientId": "chaos-client", "clientSecret": "chaos-secret"});
    for base in [
        pms.url.clone(),
        format!("https://127.0.0.1:{port}"),
        format!("https://localhost:{port}"),
        "http://169.254.169.254/latest".to_string(),
        "https://169.254.169.254/latest".to_string(),
        "https://[::1]/api".to_string(),
        "https://[::ffff:127.0.0.1]/api".to_string(),
        "https://0.0.0.0/api".to_string(),
        "https://10.1.2.3/api".to_string(),
        "https://224.0.0.1/api".to_string(),
        "http://api.example.com/v1".to_string(),
        "https://user:pass@api.example.com/v1".to_string(),
        "ftp://api.example.com/v1".to_string(),
    ] {
        let body = json!({"workspaceId": "ws", "pms": "hostaway", "apiBaseUrl": base, "credentials": credentials});
        let answer = daemon.admin("POST", "/v1/accounts", Some(body)).await;
        assert_error(&answer, 422, "invalid_url");
        let message = answer.1["error"]["message"].as_str().unwrap();
        assert!(message.starts_with("apiBaseUrl"), "{base}: {message}");
        assert!(!message.contains("pass@"), "no password echoed: {message}");
    }
    let account = daemon
        .create_account(
            json!({"id": "sandbox", "workspaceId": "ws", "pms": "hostaway", "apiBaseUrl": "https://sandbox.example.com/v1", "credentials": credentials}),
        )
        .await;
    assert_eq!(account["apiBaseUrl"], "https://sandbox.example.com/v1");
    for base in [pms.url.clone(), "http://169.254.169.254/latest".to_string()] {
        let answer = daemon.admin("PATCH", "/v1/accounts/sandbox", Some(json!({"apiBaseUrl": base}))).await;
        assert_error(&answer, 422, "invalid_url");
    }
    let (_, account) = daemon.admin("GET", "/v1/accounts/sandbox", None).await;
    assert_eq!(account["apiBaseUrl"], "https://sandbox.example.com/v1", "the refused PATCH changed nothing");
    assert!(pms.calls().is_empty() && pms.n_tokens() == 0, "nothing reached the loopback server");
}
