//! Sluice installed from `deploy/` (`kubectl kustomize`) on a real control
//! plane with the `Node,RBAC` authorizers and ServiceAccount admission, each
//! service run as its pod would run it: the command line and environment
//! read from the rendered Deployment, and the credentials a pod gets (a
//! token the API server issues for the Deployment's ServiceAccount, the
//! cluster's CA, the namespace) laid out in a folder. So every request the
//! executor makes is authorized by the rendered RBAC and nothing else.
//!
//! What cannot be as in a cluster, and how it is bridged (every change
//! named in `Pods::environment`): there is no pod network or cluster DNS,
//! so a Service's DNS name in an address becomes the loopback address of
//! the process behind it, each process listens on a port of its own, and
//! the API server calls the webhook by address (its configurations'
//! `clientConfig` set to a URL, the address added to the certificate's
//! names).

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests stop at the first failed step

use std::{collections::BTreeMap, path::Path, time::Duration};

use k8s_openapi::api::{apps::v1::Deployment, coordination::v1::Lease};
use kube::Api;
use serde_json::{Value, json};
use sluice_executor::crd::{Phase, Rollout, RolloutStatus};
use sluice_integration_tests::{controlplane::ControlPlane, helm, process::Service};
use sluice_proto::v1 as pb;
use tokio_util::sync::CancellationToken;

mod fleet;

const NAMESPACE: &str = "sluice-system";

/// `kubectl kustomize deploy/`, one JSON value per object.
fn kustomize(dir: &str) -> Vec<Value> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(dir);
    let out = std::process::Command::new("kubectl")
        .arg("kustomize")
        .arg(&path)
        .output()
        .expect("kubectl runs");
    assert!(
        out.status.success(),
        "kubectl kustomize {}: {}",
        path.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    documents(&String::from_utf8_lossy(&out.stdout))
}

/// The objects of a multi-document YAML stream.
fn documents(yaml: &str) -> Vec<Value> {
    serde_yaml::Deserializer::from_str(yaml)
        .map(|doc| serde::Deserialize::deserialize(doc).expect("YAML"))
        .filter(|v: &Value| !v.is_null())
        .collect()
}

/// The chart's render (`helm template`, CRDs included) in the namespace
/// `sluice-system`, with `set` values.
/// Runs `helm VERB sluice charts/sluice --namespace sluice-system` with
/// `extra` flags and each of `set` as `--set`: (success, stdout, stderr).
fn helm_chart(verb: &str, extra: &[&str], set: &[&str]) -> (bool, String, String) {
    let chart = Path::new(env!("CARGO_MANIFEST_DIR")).join("../charts/sluice");
    let mut args = vec![
        verb,
        "sluice",
        chart.to_str().unwrap(),
        "--namespace",
        NAMESPACE,
    ];
    args.extend(extra);
    for value in set {
        args.extend(["--set", value]);
    }
    helm::run(&args)
}

fn helm_template(set: &[&str]) -> Vec<Value> {
    let (ok, out, err) = helm_chart("template", &["--include-crds"], set);
    assert!(ok, "helm template: {err}");
    documents(&out)
}

/// `v` with whole floats as integers: YAML's `0.0` and `0` are one number
/// to the API server, and kustomize writes the first as the second.
fn canonical(v: Value) -> Value {
    match v {
        Value::Number(n) => match n.as_f64() {
            Some(f) if n.is_f64() && f.fract() == 0.0 && f.abs() < 1e15 => json!(f as i64),
            _ => Value::Number(n),
        },
        Value::Array(items) => Value::Array(items.into_iter().map(canonical).collect()),
        Value::Object(map) => {
            Value::Object(map.into_iter().map(|(k, v)| (k, canonical(v))).collect())
        }
        other => other,
    }
}

/// Objects by apiVersion, kind, namespace and name, so two renders compare
/// whatever their order; the Namespace left out (Helm installs into one).
fn by_identity(objects: Vec<Value>) -> BTreeMap<String, Value> {
    objects
        .into_iter()
        .filter(|o| o["kind"] != "Namespace")
        .map(|o| {
            let key = format!(
                "{} {} {}/{}",
                o["apiVersion"].as_str().unwrap_or_default(),
                o["kind"].as_str().unwrap_or_default(),
                o["metadata"]["namespace"].as_str().unwrap_or_default(),
                o["metadata"]["name"].as_str().unwrap_or_default()
            );
            (key, canonical(o))
        })
        .collect()
}

fn assert_same(chart: Vec<Value>, kustomize: Vec<Value>, what: &str) {
    let (chart, kustomize) = (by_identity(chart), by_identity(kustomize));
    assert_eq!(
        chart.keys().collect::<Vec<_>>(),
        kustomize.keys().collect::<Vec<_>>(),
        "{what}: the same objects"
    );
    for (key, object) in &chart {
        assert_eq!(
            object, &kustomize[key],
            "{what}: {key} differs (left: the chart, right: kustomize)"
        );
    }
}

#[test]
fn the_chart_passes_helm_lint() {
    let chart = Path::new(env!("CARGO_MANIFEST_DIR")).join("../charts/sluice");
    let (ok, out, err) = helm::run(&["lint", "--strict", chart.to_str().unwrap()]);
    assert!(ok, "helm lint:\n{out}{err}");
}

#[test]
fn the_chart_refuses_bad_values_naming_them() {
    for (value, named) in [
        ("executor.replicas=-1", "/executor/replicas"),
        ("executor.shards=0", "/executor/shards"),
        ("executor.shards=2000", "/executor/shards"),
        ("image.tag=1.0 bad", "/image/tag"),
        ("image.tag=-x", "/image/tag"),
        ("image.tag=:::", "/image/tag"),
        ("image.repository=UPPER/x", "/image/repository"),
        ("prometheus.port=99999", "/prometheus/port"),
        ("watchNamespaces={shop,Shop_Bad}", "/watchNamespaces/1"),
        ("watchNamespaces={shop,shop}", "/watchNamespaces"),
        (
            "watchNamespaces={shop,kube-system},webhook.certificate=cert-manager",
            "\"kube-system\" cannot be watched",
        ),
        (
            "watchNamespaces={sluice-system},webhook.certificate=cert-manager",
            "\"sluice-system\" cannot be watched",
        ),
        ("webhook.certificate=magic", "/webhook/certificate"),
        ("nonsense=1", "nonsense"),
        (
            "watchNamespaces={shop}",
            "webhook.certificate to cert-manager or secret",
        ),
        (
            "webhook.certificate=secret,webhook.caBundle=Zm9v",
            "webhook.caBundle must be the base64 of a PEM certificate",
        ),
    ] {
        let (ok, _, err) = helm_chart("template", &[], &[value]);
        assert!(!ok, "{value} must be refused");
        assert!(err.contains(named), "{value}: {err}");
    }
}

#[test]
fn the_chart_with_its_defaults_renders_what_kustomize_does() {
    assert_same(helm_template(&[]), kustomize("deploy"), "defaults");
}

#[test]
fn the_charts_options_render_what_the_overlays_do() {
    assert_same(
        helm_template(&["tls.enabled=true"]),
        kustomize("deploy/overlays/mtls"),
        "mutual TLS",
    );
    assert_same(
        helm_template(&["serviceMonitor.enabled=true"]),
        kustomize("deploy/overlays/servicemonitor"),
        "ServiceMonitor",
    );
}

#[test]
fn the_mtls_overlay_gives_every_service_a_certificate_for_its_service_name() {
    let objects = kustomize("deploy/overlays/mtls");
    for service in ["sluice-planner", "sluice-gate", "sluice-executor"] {
        let d = find(&objects, "Deployment", service);
        let spec = &d["spec"]["template"]["spec"];
        let secret = spec["volumes"][0]["secret"]["secretName"].as_str().unwrap();
        let certificate = find(&objects, "Certificate", secret);
        assert_eq!(
            certificate["spec"]["dnsNames"],
            json!([format!("{service}.{NAMESPACE}.svc")])
        );
        let env: Vec<&str> = spec["containers"][0]["env"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|e| e["name"].as_str())
            .collect();
        for var in [
            "SLUICE_TLS_CERT",
            "SLUICE_TLS_KEY",
            "SLUICE_TLS_CLIENT_CA",
            "SLUICE_TLS_CA",
        ] {
            assert!(env.contains(&var), "{service} lacks {var}: {env:?}");
        }
    }
}

/// The image cannot be built here (no container runtime); what it promises
/// the manifests is checked instead: every command they run is a binary
/// the Containerfile builds and copies to that path, and it runs as the
/// user the pods require.
#[test]
fn the_image_holds_every_binary_the_manifests_run_as_the_user_they_require() {
    let containerfile =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../Containerfile"))
            .unwrap();
    let objects = kustomize("deploy");
    for d in objects.iter().filter(|o| o["kind"] == "Deployment") {
        let spec = &d["spec"]["template"]["spec"];
        let command = spec["containers"][0]["command"][0].as_str().unwrap();
        let binary = command
            .strip_prefix("/usr/local/bin/")
            .unwrap_or_else(|| panic!("{command}: the image keeps its binaries in /usr/local/bin"));
        assert!(
            containerfile.contains(&format!("--bin {binary} "))
                && containerfile.contains(&format!("release/{binary} ")),
            "the Containerfile builds and copies {binary}"
        );
        // A workspace binary of that name exists (built for the tests).
        sluice_integration_tests::process::binary(binary);
        let user = spec["securityContext"]["runAsUser"].as_u64().unwrap();
        assert!(
            containerfile.contains(&format!("\nUSER {user}:{user}\n")),
            "the image runs as {user}"
        );
        assert_eq!(spec["securityContext"]["runAsNonRoot"], true);
    }
    assert!(containerfile.contains("COPY --from=build /out/ /usr/local/bin/"));
}

fn find<'a>(objects: &'a [Value], kind: &str, name: &str) -> &'a Value {
    objects
        .iter()
        .find(|o| o["kind"] == kind && o["metadata"]["name"] == name)
        .unwrap_or_else(|| panic!("no {kind} {name} in the rendered manifests"))
}

/// The rendered Deployments run as processes, and what stands in for the
/// pod network: the loopback address behind each `Service:port`.
struct Pods<'a> {
    plane: &'a ControlPlane,
    objects: &'a [Value],
    /// `host:port` as the manifests write it -> the loopback address.
    addresses: BTreeMap<String, String>,
    /// Folders with each pod's credentials, kept while it runs.
    folders: Vec<tempfile::TempDir>,
}

/// A pod's process and the loopback ports its container ports became.
struct Pod {
    name: String,
    process: Service,
    ports: BTreeMap<String, u16>,
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl<'a> Pods<'a> {
    /// Pods of `objects` on `plane`, whose gate's Prometheus (the base's
    /// `prometheus.monitoring.svc:9090`) is the agent's `metrics` address.
    fn new(plane: &'a ControlPlane, objects: &'a [Value], metrics: String) -> Self {
        Self {
            plane,
            objects,
            addresses: [("prometheus.monitoring.svc:9090".to_owned(), metrics)].into(),
            folders: Vec::new(),
        }
    }

    /// Starts pod `pod` of Deployment `deployment`: the rendered container's
    /// command, arguments and environment; the downward API's fields; the
    /// service account's credentials when the pod mounts them.
    fn start(&mut self, deployment: &str, pod: &str) -> Pod {
        let d = find(self.objects, "Deployment", deployment);
        let spec = &d["spec"]["template"]["spec"];
        let container = &spec["containers"][0];
        let command: Vec<String> = serde_json::from_value(container["command"].clone()).unwrap();
        let binary = Path::new(&command[0])
            .file_name()
            .unwrap()
            .to_string_lossy()
            .into_owned();
        let mut args: Vec<String> = command[1..].to_vec();
        args.extend(
            container["args"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|a| a.as_str().unwrap().to_owned()),
        );
        // Each container port gets a loopback port of its own.
        let mut ports = BTreeMap::new();
        for port in container["ports"].as_array().into_iter().flatten() {
            ports.insert(
                port["containerPort"].to_string(),
                (port["name"].as_str().unwrap().to_owned(), free_port()),
            );
        }
        // Secret volumes: the Secret's keys as files in a folder.
        let mut mounts = BTreeMap::new();
        for mount in container["volumeMounts"].as_array().into_iter().flatten() {
            let volume = spec["volumes"]
                .as_array()
                .into_iter()
                .flatten()
                .find(|v| v["name"] == mount["name"])
                .unwrap();
            let secret = volume["secret"]["secretName"]
                .as_str()
                .unwrap_or_else(|| panic!("{volume}: a volume the test does not lay out"));
            let (ok, out) = self
                .plane
                .kubectl(&["get", "secret", secret, "-n", NAMESPACE, "-o", "json"]);
            assert!(ok, "the Secret {secret} the pod mounts: {out}");
            let secret: Value = serde_json::from_str(&out).unwrap();
            let folder = tempfile::tempdir().unwrap();
            for (key, data) in secret["data"].as_object().unwrap() {
                use base64::Engine;
                let bytes = base64::engine::general_purpose::STANDARD
                    .decode(data.as_str().unwrap())
                    .unwrap();
                std::fs::write(folder.path().join(key), bytes).unwrap();
            }
            mounts.insert(
                mount["mountPath"].as_str().unwrap().to_owned(),
                folder.path().display().to_string(),
            );
            self.folders.push(folder);
        }
        let mut env = Vec::new();
        for var in container["env"].as_array().into_iter().flatten() {
            let name = var["name"].as_str().unwrap().to_owned();
            let value = if let Some(value) = var["value"].as_str() {
                let value = mounts
                    .iter()
                    .find_map(|(path, folder)| {
                        value
                            .strip_prefix(path.as_str())
                            .map(|rest| format!("{folder}{rest}"))
                    })
                    .unwrap_or_else(|| value.to_owned());
                self.environment(&name, &value, &ports)
            } else {
                match var["valueFrom"]["fieldRef"]["fieldPath"].as_str() {
                    Some("metadata.namespace") => NAMESPACE.to_owned(),
                    Some("metadata.name") => pod.to_owned(),
                    other => panic!("{name}: a source the test does not lay out: {other:?}"),
                }
            };
            env.push((name, value));
        }
        let account = spec["serviceAccountName"].as_str().unwrap();
        let sa = find(self.objects, "ServiceAccount", account);
        let mounted = spec["automountServiceAccountToken"]
            .as_bool()
            .or(sa["automountServiceAccountToken"].as_bool())
            .unwrap_or(true);
        if mounted {
            let folder = tempfile::tempdir().unwrap();
            std::fs::write(
                folder.path().join("token"),
                self.plane.token_for(NAMESPACE, account),
            )
            .unwrap();
            std::fs::write(folder.path().join("ca.crt"), self.plane.ca_pem()).unwrap();
            std::fs::write(folder.path().join("namespace"), NAMESPACE).unwrap();
            env.push(("KUBERNETES_SERVICE_HOST".into(), "127.0.0.1".into()));
            env.push((
                "KUBERNETES_SERVICE_PORT".into(),
                self.plane.port().to_string(),
            ));
            env.push((
                "SLUICE_SERVICE_ACCOUNT_DIR".into(),
                folder.path().display().to_string(),
            ));
            self.folders.push(folder);
        }
        let process = Service::start_as_container(&binary, &args, &env);
        let ports: BTreeMap<String, u16> = ports.into_values().collect();
        // The Services selecting this Deployment now lead to it.
        let labels = &d["spec"]["template"]["metadata"]["labels"];
        for service in self.objects.iter().filter(|o| o["kind"] == "Service") {
            let selector = service["spec"]["selector"].as_object().unwrap();
            if selector.iter().all(|(k, v)| labels[k] == *v) {
                let host = format!(
                    "{}.{NAMESPACE}.svc",
                    service["metadata"]["name"].as_str().unwrap()
                );
                for port in service["spec"]["ports"].as_array().unwrap() {
                    let target = &ports[port["targetPort"].as_str().unwrap()];
                    self.addresses
                        .entry(format!("{host}:{}", port["port"]))
                        .or_insert(format!("127.0.0.1:{target}"));
                }
            }
        }
        Pod {
            name: pod.to_owned(),
            process,
            ports,
        }
    }

    /// The value the process gets for `name`: the manifest's, with what
    /// has no counterpart on one machine bridged.
    fn environment(
        &self,
        name: &str,
        value: &str,
        ports: &BTreeMap<String, (String, u16)>,
    ) -> String {
        // A listening address: the pod's port, on loopback.
        if let Some(port) = value.strip_prefix("0.0.0.0:") {
            return format!("127.0.0.1:{}", ports[port].1);
        }
        // The webhook is called by address here, so its certificate must
        // name the address too.
        if name == "SLUICE_WEBHOOK_HOST" {
            return format!("{value},127.0.0.1");
        }
        // A Service's DNS name: the process behind it.
        let mut value = value.to_owned();
        for (from, to) in &self.addresses {
            value = value.replace(from, to);
        }
        assert!(
            !value.contains(".svc"),
            "{name}={value}: a Service the test has not started"
        );
        value
    }
}

/// A stand-in for a Service's virtual address: each connection goes to the
/// first of the endpoints that accepts it, as kube-proxy sends it to a
/// ready endpoint (a killed replica's port refuses). New endpoints are
/// added through the returned list.
async fn service(
    backends: Vec<String>,
) -> (
    std::net::SocketAddr,
    std::sync::Arc<std::sync::Mutex<Vec<String>>>,
) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let endpoints = std::sync::Arc::new(std::sync::Mutex::new(backends));
    let shared = endpoints.clone();
    tokio::spawn(async move {
        loop {
            let Ok((mut inbound, _)) = listener.accept().await else {
                return;
            };
            let backends = shared.lock().unwrap().clone();
            tokio::spawn(async move {
                for backend in backends {
                    if let Ok(mut outbound) = tokio::net::TcpStream::connect(&backend).await {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                        return;
                    }
                }
            });
        }
    });
    (addr, endpoints)
}

/// Sends the admin token with every call.
#[derive(Clone)]
struct Bearer(tonic::metadata::MetadataValue<tonic::metadata::Ascii>);

impl tonic::service::Interceptor for Bearer {
    fn call(
        &mut self,
        mut request: tonic::Request<()>,
    ) -> Result<tonic::Request<()>, tonic::Status> {
        request
            .metadata_mut()
            .insert("authorization", self.0.clone());
        Ok(request)
    }
}

/// The Rollouts API of `executor`, called with the admin token the
/// executor put in the Secret sluice-api-tokens, as an admin reads it.
async fn api_as_admin(
    plane: &ControlPlane,
    executor: &Pod,
) -> pb::rollouts_client::RolloutsClient<
    tonic::service::interceptor::InterceptedService<tonic::transport::Channel, Bearer>,
> {
    use base64::Engine;
    let (ok, out) = plane.kubectl(&[
        "get",
        "secret",
        "sluice-api-tokens",
        "-n",
        NAMESPACE,
        "-o",
        "jsonpath={.data.tokens\\.yaml}",
    ]);
    assert!(ok, "{out}");
    let file = base64::engine::general_purpose::STANDARD
        .decode(out.trim())
        .unwrap();
    let file = String::from_utf8(file).unwrap();
    let token = file
        .lines()
        .find_map(|l| l.trim().strip_prefix("token: "))
        .expect("the admin token");
    let channel = tonic::transport::Channel::from_shared(format!(
        "http://127.0.0.1:{}",
        executor.ports["grpc"]
    ))
    .unwrap()
    .connect()
    .await
    .unwrap();
    pb::rollouts_client::RolloutsClient::with_interceptor(
        channel,
        Bearer(format!("Bearer {token}").parse().unwrap()),
    )
}

/// The executor that holds the Lease.
async fn leader(client: &kube::Client) -> Option<String> {
    let leases: Api<Lease> = Api::namespaced(client.clone(), NAMESPACE);
    leases
        .get_opt("sluice-executor")
        .await
        .unwrap()
        .and_then(|l| l.spec?.holder_identity)
}

async fn wait_status(
    rollouts: &Api<Rollout>,
    name: &str,
    until: impl Fn(&RolloutStatus) -> bool,
) -> RolloutStatus {
    let mut status = RolloutStatus::default();
    for _ in 0..1200 {
        if let Some(r) = rollouts.get_opt(name).await.unwrap() {
            status = r.status.unwrap_or_default();
            if until(&status) {
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    status
}

fn ended(s: &RolloutStatus) -> bool {
    matches!(
        s.phase,
        Phase::Succeeded | Phase::RolledBack | Phase::Failed
    )
}

async fn wait_ready(client: &kube::Client, namespace: &str, name: &str, replicas: i32) {
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), namespace);
    for _ in 0..600 {
        let status = deployments
            .get(name)
            .await
            .unwrap()
            .status
            .unwrap_or_default();
        if status.ready_replicas == Some(replicas) && status.updated_replicas == Some(replicas) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("{namespace}/{name} never became ready");
}

/// Waits until the pod's `/readyz` answers 200, as its readiness probe
/// would: its dependencies (planner, gate, the Kubernetes API) answer.
async fn serving(pod: &Pod) {
    let url = format!("http://127.0.0.1:{}/readyz", pod.ports["admin"]);
    for _ in 0..600 {
        if reqwest::get(&url)
            .await
            .is_ok_and(|r| r.status().is_success())
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!(
        "{} never became ready:\n{}",
        pod.name,
        pod.process.log().join("\n")
    );
}

/// The executors' warnings and errors, for a failed assertion.
fn trouble(plane: &ControlPlane, executors: &[Pod]) -> String {
    let (_, cluster) = plane.kubectl(&["get", "deploy,rs,pods", "-n", "default", "-o", "wide"]);
    let warnings = executors
        .iter()
        .flat_map(|e| {
            e.process
                .log()
                .into_iter()
                .filter(|l| l.contains("\"WARN\"") || l.contains("\"ERROR\""))
                .map(move |l| format!("{}: {l}", e.name))
        })
        .collect::<Vec<_>>()
        .join("\n");
    format!("{cluster}\n{warnings}")
}

/// Kubernetes API answers 403 the executor counted, from its `/metrics`.
async fn forbidden(executor: &Pod) -> Vec<String> {
    let url = format!("http://127.0.0.1:{}/metrics", executor.ports["admin"]);
    let text = reqwest::get(&url).await.unwrap().text().await.unwrap();
    let requests: Vec<&str> = text
        .lines()
        .filter(|l| l.starts_with("sluice_executor_kube_requests_total"))
        .collect();
    assert!(
        !requests.is_empty(),
        "the executor counts its requests:\n{text}"
    );
    requests
        .into_iter()
        .filter(|l| l.contains("code=\"403\""))
        .map(str::to_owned)
        .collect()
}

fn kubectl_apply(plane: &ControlPlane, objects: &[Value]) {
    let file = tempfile::Builder::new().suffix(".json").tempfile().unwrap();
    let list = json!({"apiVersion": "v1", "kind": "List", "items": objects});
    std::fs::write(file.path(), list.to_string()).unwrap();
    let (ok, out) = plane.kubectl(&["apply", "-f", file.path().to_str().unwrap()]);
    assert!(ok, "{out}");
}

fn web(name: &str, image: &str) -> Vec<Value> {
    web_in("default", name, image)
}

fn web_in(namespace: &str, name: &str, image: &str) -> Vec<Value> {
    vec![
        json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name, "namespace": namespace},
            "spec": {"replicas": 4, "selector": {"matchLabels": {"app": name}},
                "template": {"metadata": {"labels": {"app": name}}, "spec": {"containers": [{"name": "web", "image": image}]}}}}),
        json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": name, "namespace": namespace},
            "spec": {"selector": {"app": name}, "ports": [{"port": 80, "targetPort": 8080}]}}),
    ]
}

fn crd_established(plane: &ControlPlane) {
    let (ok, out) = plane.kubectl(&[
        "wait",
        "--for=condition=Established",
        "crd/rollouts.sluice.dev",
        "--timeout=60s",
    ]);
    assert!(ok, "{out}");
}

/// A real control plane with ServiceAccount admission and `Node,RBAC`,
/// Sluice applied to it with `kubectl apply -k deploy/`, and the agent's
/// nodes with load on the Service `default/web`. Returns the plane, an
/// admin client, the rendered objects and the agent's metrics address.
async fn install(stop: &CancellationToken) -> (ControlPlane, kube::Client, Vec<Value>, String) {
    let plane = ControlPlane::start_with_service_accounts().await;
    let client = plane.client().await;
    let objects = kustomize("deploy");

    // The install, as an admin applies it.
    let (ok, out) = plane.kubectl(&[
        "apply",
        "-k",
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../deploy")
            .to_str()
            .unwrap(),
    ]);
    assert!(ok, "kubectl apply -k deploy/: {out}");
    crd_established(&plane);

    // The chart's render is accepted by the same API server (as an
    // upgrade of what kustomize installed).
    let file = tempfile::Builder::new().suffix(".json").tempfile().unwrap();
    let list = json!({"apiVersion": "v1", "kind": "List", "items": helm_template(&[])});
    std::fs::write(file.path(), list.to_string()).unwrap();
    let (ok, out) = plane.kubectl(&[
        "apply",
        "--dry-run=server",
        "-f",
        file.path().to_str().unwrap(),
    ]);
    assert!(ok, "the chart's render, applied: {out}");

    // The nodes, their traffic and metrics (the gate's "Prometheus").
    let metrics_addr = fleet::start(
        &client,
        "[{namespace: default, target: {service: web}, rps: 200}]",
        stop,
    )
    .await;
    (plane, client, objects, metrics_addr.to_string())
}

/// Starts the planner, the gate and `executors` executor pods, waits until
/// they serve, and points the webhook configurations at the executors.
async fn start_sluice(pods: &mut Pods<'_>, executors: usize) -> (Pod, Pod, Executors) {
    let planner = pods.start("sluice-planner", "sluice-planner-0");
    let gate = pods.start("sluice-gate", "sluice-gate-0");
    let executors: Vec<Pod> = (0..executors)
        .map(|i| pods.start("sluice-executor", &format!("sluice-executor-{i}")))
        .collect();
    for e in &executors {
        serving(e).await;
    }
    let plane = pods.plane;
    // The API server calls the webhook by address (no pod network here),
    // through a stand-in for the Service: any executor that answers.
    let (webhook, endpoints) = service(
        executors
            .iter()
            .map(|e| format!("127.0.0.1:{}", e.ports["webhook"]))
            .collect(),
    )
    .await;
    let webhook = format!("https://{webhook}");
    for (kind, path) in [
        ("mutatingwebhookconfiguration", "/mutate"),
        ("validatingwebhookconfiguration", "/validate"),
    ] {
        let patch = json!([
            {"op": "remove", "path": "/webhooks/0/clientConfig/service"},
            {"op": "add", "path": "/webhooks/0/clientConfig/url", "value": format!("{webhook}{path}")},
        ]);
        let (ok, out) = plane.kubectl(&[
            "patch",
            kind,
            "sluice",
            "--type=json",
            "-p",
            &patch.to_string(),
        ]);
        assert!(ok, "{out}");
        // The executors write their CA into it.
        let mut bundle = String::new();
        for _ in 0..600 {
            let (_, out) = plane.kubectl(&[
                "get",
                kind,
                "sluice",
                "-o",
                "jsonpath={.webhooks[0].clientConfig.caBundle}",
            ]);
            bundle = out;
            if !bundle.is_empty() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert!(!bundle.is_empty(), "no caBundle in {kind} sluice");
    }
    (
        planner,
        gate,
        Executors {
            pods: executors,
            endpoints,
        },
    )
}

/// The executor pods, and the webhook Service's endpoints they stand behind.
struct Executors {
    pods: Vec<Pod>,
    endpoints: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_kustomize_install_releases_rolls_back_and_hands_the_lease_over_under_rbac_on_a_real_control_plane()
 {
    let stop = CancellationToken::new();
    let _guard = stop.clone().drop_guard();
    let (plane, client, objects, metrics_addr) = install(&stop).await;
    let mut pods = Pods::new(&plane, &objects, metrics_addr);
    let (
        _planner,
        _gate,
        Executors {
            pods: mut executors,
            endpoints,
        },
    ) = start_sluice(&mut pods, 2).await;

    // The workloads.
    let mut manifests = web("web", "registry.example/web:1.0");
    manifests.extend(web("api", "registry.example/api:1.0"));
    kubectl_apply(&plane, &manifests);
    wait_ready(&client, "default", "web", 4).await;
    wait_ready(&client, "default", "api", 4).await;
    let rollouts: Api<Rollout> = Api::namespaced(client.clone(), "default");

    // 1. A release a platform starts through the API: the executor writes
    //    the Rollout with its own ServiceAccount.
    // Without a token the API serves nobody: the install keeps tokens in
    // the Secret sluice-api-tokens, made by the executor with one admin token.
    let mut anonymous = pb::rollouts_client::RolloutsClient::connect(format!(
        "http://127.0.0.1:{}",
        executors[1].ports["grpc"]
    ))
    .await
    .unwrap();
    let refused = anonymous
        .list_rollouts(pb::ListRolloutsRequest::default())
        .await
        .unwrap_err();
    assert_eq!(refused.code(), tonic::Code::Unauthenticated, "{refused:?}");
    let mut api = api_as_admin(&plane, &executors[1]).await;
    api.start_rollout(pb::StartRolloutRequest {
        namespace: "default".into(),
        name: "web".into(),
        spec: Some(pb::RolloutSpec {
            workload: Some(pb::WorkloadRef {
                kind: pb::WorkloadKind::Deployment as i32,
                name: "web".into(),
            }),
            images: vec![pb::ImageUpdate {
                container: "web".into(),
                image: "registry.example/web:2.0".into(),
            }],
            strategy: Some(pb::Strategy {
                canary: Some(pb::CanaryStrategy {
                    steps: vec![
                        pb::CanaryStep {
                            replicas: "50%".into(),
                            ..Default::default()
                        },
                        pb::CanaryStep {
                            replicas: "100%".into(),
                            ..Default::default()
                        },
                    ],
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        }),
    })
    .await
    .expect("StartRollout");
    let done = wait_status(&rollouts, "web", ended).await;
    assert_eq!(
        done.phase,
        Phase::Succeeded,
        "{done:#?}\n{}",
        trouble(&plane, &executors)
    );

    // 2. A bad version, with an analysis on the canary's success rate:
    //    rolled back by the gate's verdict.
    kubectl_apply(
        &plane,
        &[
            json!({"apiVersion": "sluice.dev/v1alpha1", "kind": "Rollout",
            "metadata": {"name": "web", "namespace": "default"},
            "spec": {"workload": {"kind": "Deployment", "name": "web"},
                "images": [{"container": "web", "image": "registry.example/web:2.0-bad"}],
                "traffic": {"stableService": "web"},
                "strategy": {"canary": {"steps": [{"replicas": "50%", "analyses": ["health"]}, {"replicas": "100%"}]}},
                "analyses": [{"name": "health", "metrics": [{"name": "success-rate", "template": "request-success-rate",
                    "successCondition": {"threshold": {"min": 0.99}}, "failureCondition": {"threshold": {"max": 0.9}},
                    "initialDelay": "3s", "interval": "1s", "count": 3, "inconclusiveLimit": 2}]}]}}),
        ],
    );
    let done = wait_status(&rollouts, "web", |s| {
        ended(s) && s.steps.first().is_some_and(|st| !st.evidence.is_empty())
    })
    .await;
    assert_eq!(done.phase, Phase::RolledBack, "{done:#?}");

    // 3. A bound workload changed with kubectl set image, and the Lease
    //    handed over mid-release: the leader is killed, the other replica
    //    takes the release on to the end.
    kubectl_apply(
        &plane,
        &[
            json!({"apiVersion": "sluice.dev/v1alpha1", "kind": "Rollout",
            "metadata": {"name": "api", "namespace": "default"},
            "spec": {"workload": {"kind": "Deployment", "name": "api"},
                "strategy": {"canary": {"steps": [{"replicas": "25%", "pause": {"duration": "5s"}}, {"replicas": "100%"}]}}}}),
        ],
    );
    let idle = wait_status(&rollouts, "api", |s| s.phase == Phase::Succeeded).await;
    assert_eq!(idle.phase, Phase::Succeeded, "an idle binding: {idle:#?}");
    let (ok, out) = plane.kubectl(&[
        "set",
        "image",
        "deployment/api",
        "web=registry.example/api:2.0",
    ]);
    assert!(ok, "{out}");
    let paused = wait_status(&rollouts, "api", |s| {
        s.phase == Phase::Progressing && !s.canary_revision.is_empty()
    })
    .await;
    assert_eq!(paused.phase, Phase::Progressing, "{paused:#?}");
    let holder = leader(&client).await.expect("a Lease holder");
    let (kill, keep): (Vec<_>, Vec<_>) = executors.drain(..).partition(|e| e.name == holder);
    let mut killed = kill
        .into_iter()
        .next()
        .expect("the holder is one of the two");
    let survivor = keep.into_iter().next().unwrap();
    let refused = forbidden(&killed).await;
    assert!(refused.is_empty(), "403s at {}: {refused:?}", killed.name);
    killed.process.kill();
    let done = wait_status(&rollouts, "api", ended).await;
    assert_eq!(
        done.phase,
        Phase::Succeeded,
        "{done:#?}\n{}",
        trouble(&plane, std::slice::from_ref(&survivor))
    );
    assert_eq!(
        leader(&client).await.as_deref(),
        Some(survivor.name.as_str())
    );
    let refused = forbidden(&survivor).await;
    assert!(refused.is_empty(), "403s at {}: {refused:?}", survivor.name);

    // 4. An upgrade mid-release: a release waits at its approval pause,
    //    the executor stops, the chart's render (the "newer manifests") is
    //    applied over the kustomize install, and an executor started from
    //    the chart's Deployment carries the release on from the same step.
    kubectl_apply(
        &plane,
        &[
            json!({"apiVersion": "sluice.dev/v1alpha1", "kind": "Rollout",
            "metadata": {"name": "web", "namespace": "default"},
            "spec": {"workload": {"kind": "Deployment", "name": "web"},
                "images": [{"container": "web", "image": "registry.example/web:3.0"}],
                "strategy": {"canary": {"steps": [{"replicas": "50%", "pause": {}}, {"replicas": "100%"}]}}}}),
        ],
    );
    let waiting = wait_status(&rollouts, "web", |s| {
        s.phase == Phase::Paused && s.canary_replicas == 2
    })
    .await;
    assert_eq!(waiting.phase, Phase::Paused, "{waiting:#?}");
    survivor.process.terminate();
    let chart = helm_template(&[]);
    // (The webhook configurations stay as the test bridged them: a URL
    // where a cluster has the Service.)
    let upgrade: Vec<Value> = chart
        .iter()
        .filter(|o| {
            !o["kind"]
                .as_str()
                .unwrap_or_default()
                .ends_with("WebhookConfiguration")
        })
        .cloned()
        .collect();
    kubectl_apply(&plane, &upgrade);
    let mut upgraded = Pods::new(&plane, &chart, String::new());
    upgraded.addresses = pods.addresses.clone();
    let next = upgraded.start("sluice-executor", "sluice-executor-2");
    serving(&next).await;
    // Ready, it joins the webhook's Service.
    endpoints
        .lock()
        .unwrap()
        .push(format!("127.0.0.1:{}", next.ports["webhook"]));
    let mut api = api_as_admin(&plane, &next).await;
    let still = wait_status(&rollouts, "web", |_| true).await;
    assert_eq!(
        (still.phase, still.current_step, still.release.as_str()),
        (Phase::Paused, 0, waiting.release.as_str()),
        "the release in flight is where it was: {still:#?}"
    );
    api.promote(pb::PromoteRequest {
        namespace: "default".into(),
        name: "web".into(),
        full: false,
    })
    .await
    .expect("Promote");
    let done = wait_status(&rollouts, "web", ended).await;
    assert_eq!(
        done.phase,
        Phase::Succeeded,
        "{done:#?}\n{}",
        trouble(&plane, std::slice::from_ref(&next))
    );
    assert_eq!(
        done.steps[0].started, waiting.steps[0].started,
        "the first step was not done again"
    );
    let refused = forbidden(&next).await;
    assert!(refused.is_empty(), "403s at {}: {refused:?}", next.name);
    stop.cancel();
}

/// Takes `verb` on `resource` out of the executor's ClusterRole (the whole
/// rule when it was the rule's only verb); returns the role as it was.
async fn revoke(
    client: &kube::Client,
    resource: &str,
    verb: &str,
) -> k8s_openapi::api::rbac::v1::ClusterRole {
    use k8s_openapi::api::rbac::v1::ClusterRole;
    let roles: Api<ClusterRole> = Api::all(client.clone());
    let original = roles.get("sluice-executor").await.unwrap();
    let mut role = original.clone();
    let rules = role.rules.as_mut().unwrap();
    for rule in rules.iter_mut() {
        if rule
            .resources
            .as_ref()
            .is_some_and(|rs| rs.iter().any(|x| x == resource))
        {
            assert!(
                rule.resources.as_ref().unwrap().len() == 1,
                "{resource} shares its rule"
            );
            assert!(
                rule.verbs.iter().any(|v| v == verb),
                "{resource} {verb} is granted"
            );
            rule.verbs.retain(|v| v != verb);
        }
    }
    rules.retain(|r| !r.verbs.is_empty());
    roles
        .replace("sluice-executor", &Default::default(), &role)
        .await
        .unwrap();
    original
}

/// Puts the executor's ClusterRole back as `original` was.
async fn restore(client: &kube::Client, mut original: k8s_openapi::api::rbac::v1::ClusterRole) {
    use k8s_openapi::api::rbac::v1::ClusterRole;
    let roles: Api<ClusterRole> = Api::all(client.clone());
    original.metadata.resource_version = None;
    roles
        .replace("sluice-executor", &Default::default(), &original)
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_permission_a_release_needs_when_missing_is_named_in_the_log_and_on_the_rollout_on_a_real_control_plane()
 {
    let stop = CancellationToken::new();
    let _guard = stop.clone().drop_guard();
    let (plane, client, objects, metrics_addr) = install(&stop).await;
    let mut pods = Pods::new(&plane, &objects, metrics_addr);
    let (
        _planner,
        _gate,
        Executors {
            pods: executors, ..
        },
    ) = start_sluice(&mut pods, 1).await;
    let executor = &executors[0];
    kubectl_apply(&plane, &web("web", "registry.example/web:1.0"));
    wait_ready(&client, "default", "web", 4).await;
    let rollouts: Api<Rollout> = Api::namespaced(client.clone(), "default");
    let release = |version: usize| {
        json!({"apiVersion": "sluice.dev/v1alpha1", "kind": "Rollout",
            "metadata": {"name": "web", "namespace": "default"},
            "spec": {"workload": {"kind": "Deployment", "name": "web"},
                "images": [{"container": "web", "image": format!("registry.example/web:{version}.0")}],
                "strategy": {"canary": {"steps": [{"replicas": "50%"}, {"replicas": "100%"}]}}}})
    };

    // Each verb a partition release of a Deployment uses, taken away in
    // turn: the release stops there, the log and the Rollout say which
    // request was refused, and once the verb is given back the release
    // goes on to the end.
    let mut version = 2;
    for (resource, verb, group) in [
        ("deployments", "patch", "apps"),
        ("replicasets", "create", "apps"),
        ("replicasets", "patch", "apps"),
        ("rollouts/status", "patch", "sluice.dev"),
    ] {
        let granted = revoke(&client, resource, verb).await;
        let previous = rollouts
            .get_opt("web")
            .await
            .unwrap()
            .and_then(|r| r.status)
            .map(|s| s.release);
        kubectl_apply(&plane, &[release(version)]);
        let refusal = format!("cannot {verb} resource \"{resource}\" in API group \"{group}\"");
        let line = executor.process.wait_for_log(|l| {
            l["forbidden"]
                .as_str()
                .is_some_and(|f| f.contains(&refusal))
        });
        assert!(
            line["message"].as_str().unwrap().contains("not allowed"),
            "{line}"
        );
        if resource != "rollouts/status" {
            // Where the status can be written, it says so.
            let blocked = wait_status(&rollouts, "web", |s| s.message.contains(&refusal)).await;
            assert!(
                blocked.message.starts_with("blocked by permissions: "),
                "{resource} {verb}: {blocked:#?}"
            );
            let progressing = blocked
                .conditions
                .iter()
                .find(|c| c.kind == "Progressing")
                .unwrap();
            assert_eq!(
                (progressing.status.as_str(), progressing.reason.as_str()),
                ("False", "Forbidden"),
                "{blocked:#?}"
            );
            // Never the previous release's outcome: a release refused its
            // first write reads Pending (it has not begun).
            assert!(
                !matches!(
                    blocked.phase,
                    Phase::Succeeded | Phase::RolledBack | Phase::Failed
                ),
                "{resource} {verb}: {blocked:#?}"
            );
            assert!(
                !blocked
                    .conditions
                    .iter()
                    .any(|c| c.kind == "Completed" && c.status == "True"),
                "{resource} {verb}: {blocked:#?}"
            );
        }
        restore(&client, granted).await;
        let done = wait_status(&rollouts, "web", |s| {
            ended(s) && Some(&s.release) != previous.as_ref()
        })
        .await;
        assert_eq!(
            done.phase,
            Phase::Succeeded,
            "{resource} {verb} given back: {done:#?}\n{}",
            trouble(&plane, &executors)
        );
        let progressing = done
            .conditions
            .iter()
            .find(|c| c.kind == "Progressing")
            .unwrap();
        assert_eq!(progressing.reason, "Succeeded");
        if resource != "rollouts/status" {
            // Said once, however many looks met the refusal.
            let said = executor
                .process
                .log()
                .iter()
                .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
                .filter(|l| {
                    l["forbidden"]
                        .as_str()
                        .is_some_and(|f| f.contains(&refusal))
                        && l["message"]
                            .as_str()
                            .is_some_and(|m| m.contains("not allowed"))
                })
                .count();
            assert_eq!(said, 1, "{resource} {verb}: logged {said} times");
        }
        version += 1;
    }

    // Events are notes for people: without them a release still ends.
    let granted = revoke(&client, "events", "create").await;
    let previous = rollouts.get("web").await.unwrap().status.unwrap().release;
    kubectl_apply(&plane, &[release(version)]);
    let done = wait_status(&rollouts, "web", |s| ended(s) && s.release != previous).await;
    assert_eq!(done.phase, Phase::Succeeded, "{done:#?}");
    restore(&client, granted).await;
    stop.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_charts_namespaced_mode_releases_with_roles_only_and_keeps_callers_in_its_namespace_on_a_real_control_plane()
 {
    use base64::Engine;
    let stop = CancellationToken::new();
    let _guard = stop.clone().drop_guard();
    let plane = ControlPlane::start_with_service_accounts().await;
    let client = plane.client().await;
    for namespace in [NAMESPACE, "shop", "cafe", "gone", "outside"] {
        let (ok, out) = plane.kubectl(&["create", "namespace", namespace]);
        assert!(ok, "{out}");
    }
    // The webhook's certificate, made by the user (webhook.certificate
    // secret): a CA, and a serving certificate in the Secret sluice-webhook.
    let dir = tempfile::tempdir().unwrap();
    let ca = sluice_integration_tests::pki::Authority::new(dir.path(), "webhook-ca");
    let serving = ca.issue("webhook");
    let (ok, out) = plane.kubectl(&[
        "create",
        "secret",
        "tls",
        "sluice-webhook",
        "-n",
        NAMESPACE,
        "--cert",
        serving.cert.to_str().unwrap(),
        "--key",
        serving.key.to_str().unwrap(),
    ]);
    assert!(ok, "{out}");
    let bundle = base64::engine::general_purpose::STANDARD.encode(std::fs::read(&ca.cert).unwrap());
    // The namespace holds the Secret already, so the chart does not make it.
    let values = [
        "watchNamespaces={shop,cafe,gone}",
        "webhook.certificate=secret",
        &format!("webhook.caBundle={bundle}"),
        "namespace.create=false",
    ];
    let objects = helm_template(&values);
    let cluster_wide: Vec<&Value> = objects
        .iter()
        .filter(|o| o["kind"] == "ClusterRole" || o["kind"] == "ClusterRoleBinding")
        .collect();
    assert!(cluster_wide.is_empty(), "Roles only: {cluster_wide:?}");
    // Installed as a user would: `helm install` (which also checks the
    // chart's kubeVersion against the API server's).
    let kubeconfig = plane.kubeconfig.to_str().unwrap();
    let (ok, out, err) = helm_chart("install", &["--kubeconfig", kubeconfig], &values);
    assert!(ok, "helm install: {out}{err}");
    crd_established(&plane);
    let (ok, out, err) = helm::run(&[
        "list",
        "--namespace",
        NAMESPACE,
        "--kubeconfig",
        kubeconfig,
        "--output",
        "json",
    ]);
    assert!(ok, "helm list: {err}");
    let releases: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(releases[0]["status"], "deployed", "{releases}");
    let metrics = fleet::start(
        &client,
        "[{namespace: shop, target: {service: web}, rps: 50}]",
        &stop,
    )
    .await;
    // A watched namespace deleted after the install (its Role with it):
    // the executor cannot list there, which must not hold the others.
    let (ok, out) = plane.kubectl(&["delete", "namespace", "gone", "--wait"]);
    assert!(ok, "{out}");
    let mut pods = Pods::new(&plane, &objects, metrics.to_string());
    let (
        _planner,
        _gate,
        Executors {
            pods: executors, ..
        },
    ) = start_sluice(&mut pods, 1).await;
    let executor = &executors[0];

    // A bound workload in each watched namespace, released on kubectl set
    // image; one outside them, which the executor neither sees nor holds.
    let bound = |namespace: &str| {
        json!({"apiVersion": "sluice.dev/v1alpha1", "kind": "Rollout",
        "metadata": {"name": "web", "namespace": namespace},
        "spec": {"workload": {"kind": "Deployment", "name": "web"},
            "strategy": {"canary": {"steps": [{"replicas": "50%"}, {"replicas": "100%"}]}}}})
    };
    let mut before = BTreeMap::new();
    for namespace in ["shop", "cafe"] {
        kubectl_apply(
            &plane,
            &web_in(namespace, "web", "registry.example/web:1.0"),
        );
        wait_ready(&client, namespace, "web", 4).await;
        kubectl_apply(&plane, &[bound(namespace)]);
        let rollouts: Api<Rollout> = Api::namespaced(client.clone(), namespace);
        let idle = wait_status(&rollouts, "web", |s| s.phase == Phase::Succeeded).await;
        assert_eq!(idle.phase, Phase::Succeeded, "{namespace}: {idle:#?}");
        before.insert(namespace, idle.release);
    }
    let mut outside = web_in("outside", "web", "registry.example/web:1.0");
    outside.push(bound("outside"));
    kubectl_apply(&plane, &outside);
    for namespace in ["shop", "cafe", "outside"] {
        let (ok, out) = plane.kubectl(&[
            "set",
            "image",
            "-n",
            namespace,
            "deployment/web",
            "web=registry.example/web:2.0",
        ]);
        assert!(ok, "{out}");
    }
    for namespace in ["shop", "cafe"] {
        let rollouts: Api<Rollout> = Api::namespaced(client.clone(), namespace);
        let done = wait_status(&rollouts, "web", |s| {
            ended(s) && s.release != before[namespace]
        })
        .await;
        assert_eq!(
            done.phase,
            Phase::Succeeded,
            "{namespace}: {done:#?}\n{}",
            trouble(&plane, &executors)
        );
    }
    // Outside: Kubernetes' own rolling update, not held, and its Rollout
    // never touched.
    wait_ready(&client, "outside", "web", 4).await;
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), "outside");
    let web = deployments.get("web").await.unwrap();
    assert_ne!(web.spec.as_ref().unwrap().paused, Some(true), "{web:?}");
    let rollouts: Api<Rollout> = Api::namespaced(client.clone(), "outside");
    let untouched = rollouts.get("web").await.unwrap();
    assert!(untouched.status.is_none(), "{untouched:?}");

    // The API keeps every caller to that namespace.
    let mut api = api_as_admin(&plane, executor).await;
    let refused = api
        .get_rollout(pb::GetRolloutRequest {
            namespace: "default".into(),
            name: "web".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(refused.code(), tonic::Code::PermissionDenied, "{refused:?}");
    assert!(
        refused.message().contains("only on cafe, gone, shop"),
        "{}",
        refused.message()
    );
    let listed = api
        .list_rollouts(pb::ListRolloutsRequest::default())
        .await
        .unwrap()
        .into_inner();
    let names: Vec<(&str, &str)> = listed
        .rollouts
        .iter()
        .map(|r| (r.namespace.as_str(), r.name.as_str()))
        .collect();
    assert_eq!(names, [("cafe", "web"), ("shop", "web")], "{listed:?}");
    // The only refusals are the lists of the namespace that is gone:
    // no write of a release was refused.
    let refused = forbidden(executor).await;
    assert!(
        refused.iter().all(|line| line.contains("verb=\"list\"")),
        "403s: {refused:?}"
    );
    stop.cancel();
}
