//! Bad requests get the status codes and reasons a real API server gives.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests stop at the first failed step

use axum::body::Body;
use http::{Method, Request};
use serde_json::{Value, json};
use sluice_sim::api::{ApiServer, Options};
use tower::ServiceExt;

async fn call(
    api: &ApiServer,
    method: Method,
    path: &str,
    content_type: &str,
    body: &str,
) -> (u16, Value) {
    let request = Request::builder()
        .method(method)
        .uri(path)
        .header("content-type", content_type)
        .body(Body::from(body.to_owned()))
        .unwrap();
    let response = api.router().oneshot(request).await.unwrap();
    let code = response.status().as_u16();
    let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
        .await
        .unwrap();
    (code, serde_json::from_slice(&bytes).unwrap_or(Value::Null))
}

const PODS: &str = "/api/v1/namespaces/default/pods";
const JSON: &str = "application/json";

fn pod(name: &str) -> String {
    json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name}, "spec": {"containers": [{"name": "c", "image": "i"}]}}).to_string()
}

fn assert_status(result: &(u16, Value), code: u16, reason: &str) {
    assert_eq!(result.0, code, "{}", result.1);
    assert_eq!(result.1["kind"], "Status");
    assert_eq!(result.1["reason"], reason, "{}", result.1);
    assert_eq!(result.1["code"], code);
}

#[tokio::test]
async fn malformed_json_is_a_bad_request() {
    let api = ApiServer::new(Options::default());
    assert_status(
        &call(&api, Method::POST, PODS, JSON, "{not json").await,
        400,
        "BadRequest",
    );
}

#[tokio::test]
async fn a_body_of_another_kind_is_a_bad_request() {
    let api = ApiServer::new(Options::default());
    let service =
        json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "x"}}).to_string();
    let result = call(&api, Method::POST, PODS, JSON, &service).await;
    assert_status(&result, 400, "BadRequest");
    assert!(
        result.1["message"]
            .as_str()
            .unwrap()
            .contains("(Service) does not match the expected kind (Pod)")
    );
}

#[tokio::test]
async fn unknown_resources_and_objects_are_not_found() {
    let api = ApiServer::new(Options::default());
    assert_status(
        &call(
            &api,
            Method::GET,
            "/api/v1/namespaces/default/widgets",
            JSON,
            "",
        )
        .await,
        404,
        "NotFound",
    );
    let missing = call(&api, Method::GET, &format!("{PODS}/nope"), JSON, "").await;
    assert_status(&missing, 404, "NotFound");
    assert_eq!(missing.1["message"], "pods \"nope\" not found");
    assert_eq!(missing.1["details"]["name"], "nope");
}

#[tokio::test]
async fn a_stale_resource_version_conflicts() {
    let api = ApiServer::new(Options::default());
    let (_, created) = call(&api, Method::POST, PODS, JSON, &pod("p")).await;
    let mut stale = created.clone();
    stale["metadata"]["resourceVersion"] = json!("1");
    let result = call(
        &api,
        Method::PUT,
        &format!("{PODS}/p"),
        JSON,
        &stale.to_string(),
    )
    .await;
    assert_status(&result, 409, "Conflict");
    assert!(
        result.1["message"]
            .as_str()
            .unwrap()
            .contains("the object has been modified")
    );
    assert_status(
        &call(&api, Method::POST, PODS, JSON, &pod("p")).await,
        409,
        "AlreadyExists",
    );
}

#[tokio::test]
async fn invalid_names_and_patches_are_refused() {
    let api = ApiServer::new(Options::default());
    let bad_name = call(&api, Method::POST, PODS, JSON, &pod("Bad_Name")).await;
    assert_status(&bad_name, 422, "Invalid");
    assert_eq!(bad_name.1["details"]["causes"][0]["field"], "metadata.name");
    call(&api, Method::POST, PODS, JSON, &pod("p")).await;
    let path = format!("{PODS}/p");
    let failed_test = r#"[{"op":"test","path":"/metadata/name","value":"q"}]"#;
    assert_status(
        &call(
            &api,
            Method::PATCH,
            &path,
            "application/json-patch+json",
            failed_test,
        )
        .await,
        422,
        "Invalid",
    );
    assert_status(
        &call(
            &api,
            Method::PATCH,
            &path,
            "application/merge-patch+json",
            "[1,2",
        )
        .await,
        400,
        "BadRequest",
    );
    assert_status(
        &call(&api, Method::PATCH, &path, "text/plain", "{}").await,
        415,
        "UnsupportedMediaType",
    );
}

#[tokio::test]
async fn wrong_methods_are_not_allowed() {
    let api = ApiServer::new(Options::default());
    call(&api, Method::POST, PODS, JSON, &pod("p")).await;
    assert_status(
        &call(&api, Method::POST, &format!("{PODS}/p"), JSON, &pod("p")).await,
        405,
        "MethodNotAllowed",
    );
}

#[tokio::test]
async fn delete_preconditions_are_checked() {
    let api = ApiServer::new(Options::default());
    call(&api, Method::POST, PODS, JSON, &pod("p")).await;
    let options = json!({"kind": "DeleteOptions", "apiVersion": "v1", "preconditions": {"uid": "someone-else"}}).to_string();
    assert_status(
        &call(&api, Method::DELETE, &format!("{PODS}/p"), JSON, &options).await,
        409,
        "Conflict",
    );
    let (code, _) = call(&api, Method::DELETE, &format!("{PODS}/p"), JSON, "").await;
    assert_eq!(code, 200);
}

#[tokio::test]
async fn injected_faults_fail_requests_with_the_chosen_code() {
    let api = ApiServer::new(Options::default());
    api.faults().add(sluice_sim::api::faults::Rule::Errors {
        id: "list-pods".into(),
        verb: "list".into(),
        resource: "pods".into(),
        rate: 1.0,
        code: 429,
    });
    assert_status(
        &call(&api, Method::GET, PODS, JSON, "").await,
        429,
        "TooManyRequests",
    );
    assert_eq!(
        call(&api, Method::POST, PODS, JSON, &pod("p")).await.0,
        201,
        "other verbs are untouched"
    );
    api.faults().clear(&[]);
    assert_eq!(call(&api, Method::GET, PODS, JSON, "").await.0, 200);
}

#[tokio::test]
async fn dropped_watches_end_so_clients_watch_again() {
    use futures::StreamExt;
    let api = ApiServer::new(Options::default());
    let request = Request::get("/api/v1/namespaces/default/configmaps?watch=true")
        .body(Body::empty())
        .unwrap();
    let response = api.router().oneshot(request).await.unwrap();
    let mut stream = response.into_body().into_data_stream();
    api.faults().drop_watches("configmaps");
    assert!(stream.next().await.is_none(), "the watch ends");
}

/// A lagging watch delivers its events late and in order; requests, and
/// watches of other resources, see the change at once.
#[tokio::test(start_paused = true)]
async fn a_lagging_watch_delivers_its_events_late_and_in_order() {
    use futures::StreamExt;
    let api = ApiServer::new(Options::default());
    api.faults().add(sluice_sim::api::faults::Rule::WatchLag {
        id: "slow".into(),
        resource: "configmaps".into(),
        lag: std::time::Duration::from_secs(2),
    });
    let watch = |plural: &str| {
        let request = Request::get(format!("/api/v1/namespaces/default/{plural}?watch=true"))
            .body(Body::empty())
            .unwrap();
        api.router().oneshot(request)
    };
    let mut maps = watch("configmaps")
        .await
        .unwrap()
        .into_body()
        .into_data_stream();
    let mut pods = watch("pods").await.unwrap().into_body().into_data_stream();
    let start = tokio::time::Instant::now();
    for name in ["a", "b"] {
        let body = json!({"metadata": {"name": name}}).to_string();
        let (code, _) = call(
            &api,
            Method::POST,
            "/api/v1/namespaces/default/configmaps",
            JSON,
            &body,
        )
        .await;
        assert_eq!(code, 201);
        tokio::time::advance(std::time::Duration::from_millis(500)).await;
    }
    let (code, _) = call(
        &api,
        Method::GET,
        "/api/v1/namespaces/default/configmaps/b",
        JSON,
        "",
    )
    .await;
    assert_eq!(code, 200, "a read sees the change at once");
    call(&api, Method::POST, PODS, JSON, &pod("p")).await;
    let line = pods.next().await.unwrap().unwrap();
    assert!(String::from_utf8_lossy(&line).contains("\"ADDED\""));
    assert!(
        start.elapsed() < std::time::Duration::from_secs(2),
        "other resources are not late"
    );
    let mut names = Vec::new();
    for _ in 0..2 {
        let line = maps.next().await.unwrap().unwrap();
        let event: Value = serde_json::from_slice(&line).unwrap();
        names.push((
            event["object"]["metadata"]["name"]
                .as_str()
                .unwrap()
                .to_owned(),
            start.elapsed(),
        ));
    }
    assert_eq!(names[0].0, "a");
    assert_eq!(names[1].0, "b");
    assert!(names[0].1 >= std::time::Duration::from_secs(2), "{names:?}");
    assert!(
        names[1].1 - names[0].1 <= std::time::Duration::from_millis(600),
        "each event is late by the lag, not by the lags of those before it: {names:?}"
    );
}

#[tokio::test]
async fn a_patch_or_apply_that_is_not_an_object_is_refused_and_the_server_goes_on() {
    let api = ApiServer::new(Options::default());
    call(&api, Method::POST, PODS, JSON, &pod("p")).await;
    let at = format!("{PODS}/p?fieldManager=m");
    for content_type in [
        "application/apply-patch+yaml",
        "application/merge-patch+json",
        "application/strategic-merge-patch+json",
    ] {
        for (body, code, reason) in [
            ("[]", 400, "BadRequest"),
            ("\"s\"", 400, "BadRequest"),
            ("1", 400, "BadRequest"),
            ("true", 400, "BadRequest"),
            ("{\"metadata\": []}", 422, "Invalid"),
            ("{\"metadata\": \"x\"}", 422, "Invalid"),
        ] {
            // An apply names its kind (one that names none is refused
            // for that, before its contents are read).
            let body = if content_type.starts_with("application/apply")
                && body.starts_with("{\"metadata")
            {
                body.replacen('{', "{\"apiVersion\": \"v1\", \"kind\": \"Pod\", ", 1)
            } else {
                body.to_owned()
            };
            let body = body.as_str();
            let answer = call(&api, Method::PATCH, &at, content_type, body).await;
            assert_eq!(answer.0, code, "{content_type} {body}: {}", answer.1);
            assert_eq!(answer.1["reason"], reason, "{content_type} {body}");
        }
    }
    // An apply may not bring ownership of its own.
    let forged = call(
        &api,
        Method::PATCH,
        &at,
        "application/apply-patch+yaml",
        "{\"apiVersion\": \"v1\", \"kind\": \"Pod\", \"metadata\": {\"managedFields\": [{\"manager\": \"x\"}]}}",
    )
    .await;
    assert_status(&forged, 400, "BadRequest");
    assert!(
        forged.1["message"]
            .as_str()
            .unwrap()
            .contains("managedFields must be nil")
    );
    let (code, pod) = call(&api, Method::GET, &format!("{PODS}/p"), JSON, "").await;
    assert_eq!(code, 200, "still served: {pod}");
}

#[tokio::test]
async fn a_patch_whose_result_has_a_value_of_the_wrong_type_is_refused_and_nothing_is_stored() {
    let api = ApiServer::new(Options::default());
    let configmaps = "/api/v1/namespaces/default/configmaps";
    let cm = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}, "data": {"a": "1"}});
    call(&api, Method::POST, configmaps, JSON, &cm.to_string()).await;
    let at = format!("{configmaps}/c?fieldManager=m");
    for (content_type, body) in [
        ("application/merge-patch+json", r#"{"data": [1]}"#),
        (
            "application/strategic-merge-patch+json",
            r#"{"metadata": {"labels": []}}"#,
        ),
        (
            "application/apply-patch+yaml",
            r#"{"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c", "labels": {"x": true}}}"#,
        ),
    ] {
        let answer = call(&api, Method::PATCH, &at, content_type, body).await;
        assert_status(&answer, 422, "Invalid");
    }
    let (_, stored) = call(&api, Method::GET, &format!("{configmaps}/c"), JSON, "").await;
    assert_eq!(stored["data"], json!({"a": "1"}));
    assert!(stored["metadata"].get("labels").is_none(), "{stored}");
}

#[tokio::test]
async fn a_body_nested_past_the_limit_is_refused_as_too_deep() {
    let api = ApiServer::new(Options::default());
    let deep = format!(
        "{{\"apiVersion\": \"v1\", \"kind\": \"ConfigMap\", \"metadata\": {{\"name\": \"deep\"}}, \"data\": {}{}}}",
        "[".repeat(20_000),
        "]".repeat(20_000)
    );
    let answer = call(
        &api,
        Method::POST,
        "/api/v1/namespaces/default/configmaps",
        JSON,
        &deep,
    )
    .await;
    assert_status(&answer, 400, "BadRequest");
    assert!(
        answer.1["message"].as_str().unwrap().contains("max depth"),
        "{}",
        answer.1
    );
}

/// NamespaceLifecycle admission: `default`, `kube-system` and `kube-public`
/// cannot be deleted, not even in a dry run; `kube-node-lease` and a
/// namespace of one's own can.
#[tokio::test]
async fn the_namespaces_every_cluster_keeps_cannot_be_deleted() {
    let api = ApiServer::new(Options::default());
    let namespace = json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "mine"}});
    let made = call(
        &api,
        Method::POST,
        "/api/v1/namespaces",
        JSON,
        &namespace.to_string(),
    )
    .await;
    assert_eq!(made.0, 201, "{}", made.1);
    for name in ["default", "kube-system", "kube-public"] {
        for dry in ["", "?dryRun=All"] {
            let refused = call(
                &api,
                Method::DELETE,
                &format!("/api/v1/namespaces/{name}{dry}"),
                JSON,
                "",
            )
            .await;
            assert_status(&refused, 403, "Forbidden");
            assert_eq!(
                refused.1["message"],
                format!("namespaces \"{name}\" is forbidden: this namespace may not be deleted")
            );
            assert_eq!(
                refused.1["details"],
                json!({"name": name, "kind": "namespaces"})
            );
        }
        let still = call(
            &api,
            Method::GET,
            &format!("/api/v1/namespaces/{name}"),
            JSON,
            "",
        )
        .await;
        assert_eq!(still.0, 200, "{name} is still there: {}", still.1);
    }
    for name in ["kube-node-lease", "mine"] {
        let gone = call(
            &api,
            Method::DELETE,
            &format!("/api/v1/namespaces/{name}"),
            JSON,
            "",
        )
        .await;
        assert_eq!(gone.0, 200, "{name}: {}", gone.1);
    }
}
