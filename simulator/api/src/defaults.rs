//! The defaults a real API server fills in, for the built-in kinds whose
//! defaults controllers and clients rely on. Applied on create and update.

use serde_json::{Value, json};

fn default(object: &mut Value, key: &str, value: Value) {
    if let Some(map) = object.as_object_mut() {
        map.entry(key.to_owned()).or_insert(value);
    }
}

fn pod_spec(spec: &mut Value) {
    // The v1 API keeps the account's old name beside the new one: each is
    // filled in from the other.
    let account = |field: &str| {
        spec[field]
            .as_str()
            .filter(|n| !n.is_empty())
            .map(str::to_owned)
    };
    if let Some(name) = account("serviceAccountName").or_else(|| account("serviceAccount")) {
        spec["serviceAccountName"] = json!(name);
        spec["serviceAccount"] = json!(name);
    }
    if let Some(volumes) = spec.get_mut("volumes").and_then(Value::as_array_mut) {
        for v in volumes {
            volume(v);
        }
    }
    default(spec, "restartPolicy", json!("Always"));
    default(spec, "terminationGracePeriodSeconds", json!(30));
    default(spec, "dnsPolicy", json!("ClusterFirst"));
    default(spec, "schedulerName", json!("default-scheduler"));
    default(spec, "securityContext", json!({}));
    for list in ["containers", "initContainers"] {
        // `get_mut`, not indexing: indexing a missing key would add a null.
        if let Some(containers) = spec.get_mut(list).and_then(Value::as_array_mut) {
            for c in containers {
                let image = c["image"].as_str().unwrap_or_default();
                let latest = !image.contains(':') || image.ends_with(":latest");
                default(
                    c,
                    "imagePullPolicy",
                    json!(if latest { "Always" } else { "IfNotPresent" }),
                );
                default(c, "terminationMessagePath", json!("/dev/termination-log"));
                default(c, "terminationMessagePolicy", json!("File"));
                default(c, "resources", json!({}));
                for kind in ["requests", "limits"] {
                    if let Some(map) = c.get_mut("resources").and_then(|r| r.get_mut(kind)) {
                        canonical_quantities(map);
                    }
                }
                if let Some(env) = c.get_mut("env").and_then(Value::as_array_mut) {
                    for e in env {
                        if let Some(field) = e
                            .get_mut("valueFrom")
                            .and_then(|v| v.get_mut("fieldRef"))
                            .filter(|f| f.is_object())
                        {
                            default(field, "apiVersion", json!("v1"));
                        }
                    }
                }
                for probe in ["livenessProbe", "readinessProbe", "startupProbe"] {
                    if let Some(p) = c.get_mut(probe).filter(|p| p.is_object()) {
                        self::probe(p);
                    }
                }
                // `get_mut`, not indexing: indexing would add `"ports": null`.
                if let Some(ports) = c.get_mut("ports").and_then(Value::as_array_mut) {
                    for p in ports {
                        default(p, "protocol", json!("TCP"));
                    }
                }
            }
        }
    }
}

/// A volume's defaults: file modes 0644 (420) for what it projects from the
/// API, and `apiVersion: v1` on a downward API field reference.
fn volume(v: &mut Value) {
    for source in ["configMap", "secret", "downwardAPI", "projected"] {
        if let Some(s) = v.get_mut(source).filter(|s| s.is_object()) {
            default(s, "defaultMode", json!(420));
        }
    }
    let field_refs = |items: Option<&mut Value>| {
        for item in items.and_then(Value::as_array_mut).into_iter().flatten() {
            if let Some(field) = item.get_mut("fieldRef").filter(|f| f.is_object()) {
                default(field, "apiVersion", json!("v1"));
            }
        }
    };
    field_refs(v.get_mut("downwardAPI").and_then(|d| d.get_mut("items")));
    if let Some(sources) = v
        .get_mut("projected")
        .and_then(|p| p.get_mut("sources"))
        .and_then(Value::as_array_mut)
    {
        for source in sources {
            field_refs(
                source
                    .get_mut("downwardAPI")
                    .and_then(|d| d.get_mut("items")),
            );
        }
    }
}

/// Each quantity of a map (`{"cpu": "0.25"}`) in its canonical form, as
/// kube-apiserver stores it.
/// A quantity written as a JSON number (`cpu: 0.5` in YAML) is read as
/// its text, as the Go type reads it, and stored as a string.
pub(crate) fn canonical_quantities(map: &mut Value) {
    if let Some(map) = map.as_object_mut() {
        for value in map.values_mut() {
            let text = match value {
                Value::String(s) => Some(s.clone()),
                Value::Number(n) => Some(number_text(n)),
                _ => None,
            };
            if let Some(canonical) = text.as_deref().and_then(canonical_quantity) {
                *value = Value::String(canonical);
            }
        }
    }
}

/// A JSON number as a quantity's text: whole numbers without a fraction or
/// an exponent (`1e9` is `1000000000`).
fn number_text(n: &serde_json::Number) -> String {
    if n.is_u64() || n.is_i64() {
        return n.to_string();
    }
    match n.as_f64() {
        Some(f) if f.fract() == 0.0 && f.abs() < 1e18 => format!("{}", f as i64),
        Some(f) => format!("{f}"),
        None => n.to_string(),
    }
}

/// The suffixes of binary quantities, with their power of two.
const BINARY: [(&str, u32); 6] = [
    ("Ki", 10),
    ("Mi", 20),
    ("Gi", 30),
    ("Ti", 40),
    ("Pi", 50),
    ("Ei", 60),
];

/// The suffixes of decimal quantities, with their power of ten.
const DECIMAL: [(&str, i32); 10] = [
    ("n", -9),
    ("u", -6),
    ("m", -3),
    ("", 0),
    ("k", 3),
    ("M", 6),
    ("G", 9),
    ("T", 12),
    ("P", 15),
    ("E", 18),
];

/// A quantity in Kubernetes' canonical form: the largest suffix of its own
/// kind (binary `Ki`..`Ei`, or decimal `m`, none, `k`..`E`) that leaves a
/// whole number (`0.25` is `250m`, `1000m` is `1`, `1.5Gi` is `1536Mi`);
/// a binary amount that is no whole number of bytes, or below 1024, is
/// written in decimal. `None` when it is not a quantity this reads (an
/// exponent, or more precision than a nano): left as written.
pub(crate) fn canonical_quantity(text: &str) -> Option<String> {
    if decimal_exponent(text).is_some() {
        return None;
    }
    let (nanos, binary) = quantity_nanos(text)?;
    quantity_text(nanos, binary)
}

/// A quantity's amount in nano-units, and whether it is a whole number of
/// bytes written with a binary suffix. `None` as for [`canonical_quantity`].
pub(crate) fn quantity_nanos(text: &str) -> Option<(u128, bool)> {
    let text = text.trim();
    if let Some((number, exponent)) = decimal_exponent(text) {
        // `1e3`, `2.5E-1`: the number's nano-units times ten to the power.
        let (nanos, _) = quantity_nanos(number)?;
        return if exponent >= 0 {
            Some((
                nanos.checked_mul(10u128.checked_pow(exponent as u32)?)?,
                false,
            ))
        } else {
            let divisor = 10u128.checked_pow(exponent.unsigned_abs())?;
            nanos
                .is_multiple_of(divisor)
                .then_some((nanos / divisor, false))
        };
    }
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.' || c == '+' || c == '-'))
        .unwrap_or(text.len());
    let (number, suffix) = text.split_at(split);
    if number.is_empty() || number.starts_with('-') || suffix.contains(['e', 'E']) && suffix != "E"
    {
        return None;
    }
    let number = number.trim_start_matches('+');
    let (whole, fraction) = number.split_once('.').unwrap_or((number, ""));
    if !whole.chars().all(|c| c.is_ascii_digit()) || !fraction.chars().all(|c| c.is_ascii_digit()) {
        return None;
    }
    // The amount in nano-units of the suffix's base, as an integer.
    let digits: String = format!("{whole}{fraction}");
    let digits: u128 = if digits.is_empty() {
        return None;
    } else {
        digits.parse().ok()?
    };
    let scale = i32::try_from(fraction.len()).ok()?;
    if let Some((_, shift)) = BINARY.iter().find(|(s, _)| *s == suffix) {
        // Bytes times 10^scale.
        let scaled = digits.checked_mul(1u128 << shift)?;
        let divisor = 10u128.checked_pow(scale as u32)?;
        if scaled.is_multiple_of(divisor) {
            return Some(((scaled / divisor).checked_mul(1_000_000_000)?, true));
        }
        // Not whole bytes: decimal, in nano-bytes.
        return Some((scaled.checked_mul(1_000_000_000)? / divisor, false));
    }
    let (_, exponent) = DECIMAL.iter().find(|(s, _)| *s == suffix)?;
    // Nano-units: digits * 10^(exponent + 9 - scale).
    let power = exponent + 9 - scale;
    if power < 0 {
        return None;
    }
    Some((
        digits.checked_mul(10u128.checked_pow(power as u32)?)?,
        false,
    ))
}

/// A quantity in decimal exponent form (`1e3`, `5E-1`, `2e+2`): its
/// number and its exponent. `E` alone is the exa suffix, not this.
fn decimal_exponent(text: &str) -> Option<(&str, i32)> {
    let at = text.find(['e', 'E'])?;
    let (number, rest) = (&text[..at], &text[at + 1..]);
    if number.is_empty() || rest.is_empty() {
        return None;
    }
    let digits = rest.strip_prefix(['+', '-']).unwrap_or(rest);
    if digits.is_empty() || !digits.chars().all(|c| c.is_ascii_digit()) {
        return None;
    }
    Some((number, rest.parse().ok()?))
}

/// `nanos` written canonically, in binary when `binary` (a whole number of
/// bytes: below 1024 as a plain number); `None` for 1024 bytes or more
/// that no binary suffix writes whole.
pub(crate) fn quantity_text(nanos: u128, binary: bool) -> Option<String> {
    if binary && nanos.is_multiple_of(1_000_000_000) {
        let bytes = nanos / 1_000_000_000;
        if bytes < 1024 {
            return Some(bytes.to_string());
        }
        let (name, shift) = BINARY
            .iter()
            .rev()
            .find(|(_, shift)| bytes.is_multiple_of(1u128 << shift))?;
        return Some(format!("{}{name}", bytes >> shift));
    }
    Some(decimal(nanos, &DECIMAL))
}

/// Nano-units written with the largest decimal suffix that is whole.
fn decimal(nanos: u128, suffixes: &[(&str, i32)]) -> String {
    if nanos == 0 {
        return "0".to_owned();
    }
    for (name, exponent) in suffixes.iter().rev() {
        let unit = 10u128.pow((exponent + 9) as u32);
        if nanos.is_multiple_of(unit) {
            return format!("{}{name}", nanos / unit);
        }
    }
    format!("{nanos}n")
}

/// A probe's timings, and an HTTP probe's path and scheme.
fn probe(p: &mut Value) {
    default(p, "timeoutSeconds", json!(1));
    default(p, "periodSeconds", json!(10));
    default(p, "successThreshold", json!(1));
    default(p, "failureThreshold", json!(3));
    if let Some(get) = p.get_mut("httpGet").filter(|g| g.is_object()) {
        default(get, "path", json!("/"));
        default(get, "scheme", json!("HTTP"));
    }
}

fn persistent_volume_claim(claim: &mut Value) {
    default(&mut claim["spec"], "volumeMode", json!("Filesystem"));
    if let Some(map) = claim
        .get_mut("spec")
        .and_then(|s| s.get_mut("resources"))
        .and_then(|r| r.get_mut("requests"))
    {
        canonical_quantities(map);
    }
    if claim["status"].is_null() {
        claim["status"] = json!({"phase": "Pending"});
    }
}

fn template(spec: &mut Value) {
    if spec["template"]["spec"].is_object() {
        pod_spec(&mut spec["template"]["spec"]);
    }
}

/// A Job's selector, made from its uid as kube-apiserver makes it on
/// create unless the Job chose its own (`manualSelector: true`): the uid
/// and the Job's name go into its pods' labels.
fn job_selector(job: &mut Value) {
    let (uid, name) = (
        job["metadata"]["uid"].clone(),
        job["metadata"]["name"].clone(),
    );
    let spec = &mut job["spec"];
    default(spec, "manualSelector", json!(false));
    if spec["manualSelector"] == json!(true) || !spec["selector"].is_null() || !uid.is_string() {
        return;
    }
    spec["selector"] = json!({"matchLabels": {"batch.kubernetes.io/controller-uid": uid}});
    let template = &mut spec["template"];
    if !template["metadata"].is_object() {
        template["metadata"] = json!({});
    }
    if !template["metadata"]["labels"].is_object() {
        template["metadata"]["labels"] = json!({});
    }
    let labels = &mut template["metadata"]["labels"];
    for (key, value) in [
        ("batch.kubernetes.io/controller-uid", &uid),
        ("batch.kubernetes.io/job-name", &name),
        ("controller-uid", &uid),
        ("job-name", &name),
    ] {
        labels[key] = value.clone();
    }
}

/// A pod's quality of service class, from its containers' CPU and memory
/// requests and limits: `Guaranteed` when every container limits both and
/// requests what it limits, `BestEffort` when none asks for either,
/// `Burstable` otherwise.
pub(crate) fn qos_class(spec: &Value) -> &'static str {
    let containers: Vec<&Value> = ["containers", "initContainers"]
        .iter()
        .flat_map(|list| spec[*list].as_array().into_iter().flatten())
        .collect();
    let set = |c: &Value, kind: &str, key: &str| c["resources"][kind][key].is_string();
    let any = containers.iter().any(|c| {
        ["requests", "limits"]
            .iter()
            .any(|kind| ["cpu", "memory"].iter().any(|key| set(c, kind, key)))
    });
    if !any {
        return "BestEffort";
    }
    let guaranteed = containers.iter().all(|c| {
        ["cpu", "memory"].iter().all(|key| {
            set(c, "limits", key)
                && c["resources"]["requests"][*key] == c["resources"]["limits"][*key]
        })
    });
    if guaranteed {
        "Guaranteed"
    } else {
        "Burstable"
    }
}

/// A node port from kube-apiserver's default range (30000-32767), handed
/// out in turn.
fn next_node_port() -> u32 {
    static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    30000 + NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed) % 2768
}

/// Fills in defaults for `group/plural`; `next_ip` hands out cluster IPs.
pub(crate) fn apply(
    group: &str,
    plural: &str,
    object: &mut Value,
    next_ip: &mut dyn FnMut() -> String,
) {
    match (group, plural) {
        ("", "pods") => {
            // Pods only, not templates: requests default to the limits.
            for list in ["containers", "initContainers"] {
                let containers = object["spec"].get_mut(list).and_then(Value::as_array_mut);
                for c in containers.into_iter().flatten() {
                    let Some(limits) = c["resources"]["limits"].as_object().cloned() else {
                        continue;
                    };
                    if !c["resources"]["requests"].is_object() {
                        c["resources"]["requests"] = json!({});
                    }
                    for (key, value) in limits {
                        default(&mut c["resources"]["requests"], &key, value);
                    }
                }
            }
            pod_spec(&mut object["spec"]);
            // Pods only, not templates: the defaulting of a Pod, and the
            // DefaultTolerationSeconds admission plugin.
            default(&mut object["spec"], "enableServiceLinks", json!(true));
            let spec = &mut object["spec"];
            // The Priority admission plugin: with no priority class (and no
            // global default class) a pod has priority 0, and may preempt.
            if spec["priorityClassName"].as_str().is_none_or(str::is_empty) {
                default(spec, "priority", json!(0));
            }
            default(spec, "preemptionPolicy", json!("PreemptLowerPriority"));
            if spec.get("tolerations").is_none_or(Value::is_null) {
                spec["tolerations"] = json!([]);
            }
            if let Some(tolerations) = spec["tolerations"].as_array_mut() {
                for taint in [
                    "node.kubernetes.io/not-ready",
                    "node.kubernetes.io/unreachable",
                ] {
                    // Not when a toleration already tolerates the taint
                    // (a wildcard `operator: Exists` among them).
                    let tolerates = |t: &Value| {
                        let effect = t["effect"].as_str().unwrap_or_default();
                        let key = t["key"].as_str().unwrap_or_default();
                        let exists = t["operator"] == "Exists";
                        (effect.is_empty() || effect == "NoExecute")
                            && ((key.is_empty() && exists) || key == taint)
                    };
                    if !tolerations.iter().any(tolerates) {
                        tolerations.push(json!({"key": taint, "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 300}));
                    }
                }
            }
            if object["status"].is_null() {
                let qos = qos_class(&object["spec"]);
                object["status"] = json!({"phase": "Pending", "qosClass": qos});
            }
        }
        ("apps", "deployments") => {
            let spec = &mut object["spec"];
            // `paused` is `omitempty` in the Go type: false is never stored,
            // so a client reads it back as absent.
            if spec["paused"] == json!(false)
                && let Some(map) = spec.as_object_mut()
            {
                map.remove("paused");
            }
            default(spec, "replicas", json!(1));
            default(spec, "revisionHistoryLimit", json!(10));
            default(spec, "progressDeadlineSeconds", json!(600));
            // An empty strategy (what a Go client sends: the struct is not
            // a pointer) is defaulted like a missing one.
            default(spec, "strategy", json!({}));
            default(&mut spec["strategy"], "type", json!("RollingUpdate"));
            if spec["strategy"]["type"] == "RollingUpdate" {
                default(&mut spec["strategy"], "rollingUpdate", json!({}));
                default(
                    &mut spec["strategy"]["rollingUpdate"],
                    "maxSurge",
                    json!("25%"),
                );
                default(
                    &mut spec["strategy"]["rollingUpdate"],
                    "maxUnavailable",
                    json!("25%"),
                );
            }
            template(spec);
        }
        ("scheduling.k8s.io", "priorityclasses") if object["preemptionPolicy"].is_null() => {
            object["preemptionPolicy"] = json!("PreemptLowerPriority");
        }
        ("", "limitranges") => {
            if let Some(limits) = object["spec"]["limits"].as_array_mut() {
                for limit in limits {
                    for field in [
                        "max",
                        "min",
                        "default",
                        "defaultRequest",
                        "maxLimitRequestRatio",
                    ] {
                        if let Some(map) = limit.get_mut(field) {
                            canonical_quantities(map);
                        }
                    }
                }
            }
            crate::limits::default_limit_range(object);
        }
        ("", "resourcequotas") => {
            if let Some(hard) = object["spec"].get_mut("hard") {
                canonical_quantities(hard);
            }
        }
        ("apps", "replicasets") => {
            default(&mut object["spec"], "replicas", json!(1));
            template(&mut object["spec"]);
        }
        ("apps", "statefulsets") => {
            let spec = &mut object["spec"];
            default(spec, "replicas", json!(1));
            default(spec, "podManagementPolicy", json!("OrderedReady"));
            default(spec, "revisionHistoryLimit", json!(10));
            default(spec, "updateStrategy", json!({}));
            // As kube-apiserver: a `rollingUpdate` is made only with a
            // defaulted type; one written `RollingUpdate` keeps none.
            if spec["updateStrategy"]["type"]
                .as_str()
                .is_none_or(str::is_empty)
            {
                spec["updateStrategy"]["type"] = json!("RollingUpdate");
                default(&mut spec["updateStrategy"], "rollingUpdate", json!({}));
            }
            if spec["updateStrategy"]["type"] == "RollingUpdate"
                && spec["updateStrategy"]["rollingUpdate"].is_object()
            {
                default(
                    &mut spec["updateStrategy"]["rollingUpdate"],
                    "partition",
                    json!(0),
                );
            }
            default(
                spec,
                "persistentVolumeClaimRetentionPolicy",
                json!({"whenDeleted": "Retain", "whenScaled": "Retain"}),
            );
            template(spec);
            if let Some(claims) = spec
                .get_mut("volumeClaimTemplates")
                .and_then(Value::as_array_mut)
            {
                for claim in claims {
                    default(claim, "apiVersion", json!("v1"));
                    default(claim, "kind", json!("PersistentVolumeClaim"));
                    persistent_volume_claim(claim);
                }
            }
        }
        ("apps", "daemonsets") => {
            let spec = &mut object["spec"];
            default(spec, "revisionHistoryLimit", json!(10));
            default(spec, "updateStrategy", json!({}));
            default(&mut spec["updateStrategy"], "type", json!("RollingUpdate"));
            if spec["updateStrategy"]["type"] == "RollingUpdate" {
                default(
                    &mut spec["updateStrategy"],
                    "rollingUpdate",
                    json!({"maxSurge": 0, "maxUnavailable": 1}),
                );
                let rolling = &mut spec["updateStrategy"]["rollingUpdate"];
                default(rolling, "maxSurge", json!(0));
                default(rolling, "maxUnavailable", json!(1));
            }
            template(spec);
        }
        ("", "namespaces") => {
            // Set on every write, as the real server does, so a namespace
            // selector can always name a namespace.
            let name = object["metadata"]["name"].clone();
            if name.is_string() {
                if !object["metadata"]["labels"].is_object() {
                    object["metadata"]["labels"] = json!({});
                }
                object["metadata"]["labels"]["kubernetes.io/metadata.name"] = name;
            }
        }
        ("", "secrets") => {
            // `stringData` is write-only: merged into `data` (base64), its
            // keys winning, and never stored.
            if let Some(Value::Object(plain)) =
                object.as_object_mut().and_then(|o| o.remove("stringData"))
            {
                if !object["data"].is_object() {
                    object["data"] = json!({});
                }
                for (key, value) in plain {
                    let bytes = value.as_str().unwrap_or_default().as_bytes().to_vec();
                    object["data"][key] =
                        serde_json::to_value(k8s_openapi::ByteString(bytes)).unwrap_or_default();
                }
            }
            default(object, "type", json!("Opaque"));
        }
        ("", "persistentvolumeclaims") => persistent_volume_claim(object),
        ("", "events") => crate::events::defaults(object, false),
        ("batch", "jobs") => {
            let spec = &mut object["spec"];
            default(spec, "parallelism", json!(1));
            default(spec, "completions", json!(1));
            default(spec, "backoffLimit", json!(6));
            default(spec, "completionMode", json!("NonIndexed"));
            default(spec, "suspend", json!(false));
            let replacement = if spec["podFailurePolicy"].is_object() {
                "Failed"
            } else {
                "TerminatingOrFailed"
            };
            default(spec, "podReplacementPolicy", json!(replacement));
            template(spec);
            job_selector(object);
        }
        ("batch", "cronjobs") => {
            let spec = &mut object["spec"];
            default(spec, "concurrencyPolicy", json!("Allow"));
            default(spec, "suspend", json!(false));
            default(spec, "successfulJobsHistoryLimit", json!(3));
            default(spec, "failedJobsHistoryLimit", json!(1));
            if spec["jobTemplate"]["spec"].is_object() {
                template(&mut spec["jobTemplate"]["spec"]);
            }
            // Go writes a template's metadata (a struct, not a pointer)
            // even when nothing is in it.
            if spec["jobTemplate"].is_object() {
                default(&mut spec["jobTemplate"], "metadata", json!({}));
            }
            if spec["jobTemplate"]["spec"]["template"].is_object() {
                default(
                    &mut spec["jobTemplate"]["spec"]["template"],
                    "metadata",
                    json!({}),
                );
            }
        }
        ("", "services") => {
            let spec = &mut object["spec"];
            default(spec, "type", json!("ClusterIP"));
            default(spec, "sessionAffinity", json!("None"));
            if spec["clusterIP"] == "None" {
                // Headless.
                default(spec, "clusterIPs", json!(["None"]));
            } else if spec["clusterIP"].as_str().is_none_or(str::is_empty)
                && spec["type"] != "ExternalName"
            {
                let ip = next_ip();
                spec["clusterIP"] = json!(ip);
                spec["clusterIPs"] = json!([ip]);
            }
            if spec["type"] != "ExternalName" {
                default(spec, "ipFamilies", json!(["IPv4"]));
                default(spec, "ipFamilyPolicy", json!("SingleStack"));
                default(spec, "internalTrafficPolicy", json!("Cluster"));
            }
            let exposed = matches!(spec["type"].as_str(), Some("NodePort" | "LoadBalancer"));
            if exposed {
                default(spec, "externalTrafficPolicy", json!("Cluster"));
            }
            if spec["type"] == "LoadBalancer" {
                default(spec, "allocateLoadBalancerNodePorts", json!(true));
            }
            // A LoadBalancer that allocates no node ports gets none (a port
            // may still name one of its own).
            let allocates = exposed && spec["allocateLoadBalancerNodePorts"] != false;
            if let Some(ports) = spec.get_mut("ports").and_then(Value::as_array_mut) {
                for p in ports {
                    default(p, "protocol", json!("TCP"));
                    let port = p["port"].clone();
                    // Unset or 0 (what a Go client sends for an unset
                    // IntOrString): the Service's own port.
                    if p["targetPort"] == json!(0) || p["targetPort"].is_null() {
                        p["targetPort"] = port;
                    }
                    if allocates && p["nodePort"].as_i64().is_none_or(|n| n == 0) {
                        p["nodePort"] = json!(next_node_port());
                    }
                }
            }
        }
        ("autoscaling", "horizontalpodautoscalers") => {
            default(&mut object["spec"], "minReplicas", json!(1));
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn deployment(spec: Value) -> Value {
        let mut d = json!({"spec": spec});
        apply("apps", "deployments", &mut d, &mut || "10.0.0.1".into());
        d
    }

    #[test]
    fn a_secrets_string_data_is_merged_into_its_data_and_not_kept() {
        let mut secret = json!({"metadata": {"name": "s"}, "data": {"a": "b2xk", "b": "Yg=="}, "stringData": {"a": "new", "c": "é"}});
        apply("", "secrets", &mut secret, &mut || unreachable!());
        assert_eq!(
            secret,
            json!({"metadata": {"name": "s"}, "type": "Opaque",
                "data": {"a": "bmV3", "b": "Yg==", "c": "w6k="}})
        );
    }

    #[test]
    fn a_deployment_reads_back_as_the_real_api_server_stores_it() {
        let d = deployment(json!({
            "paused": false,
            "template": {"spec": {"containers": [{"name": "web", "image": "web:1.0"}]}}
        }));
        let spec = d["spec"].as_object().unwrap();
        assert!(!spec.contains_key("paused"), "false is omitted: {spec:?}");
        let pod = d["spec"]["template"]["spec"].as_object().unwrap();
        assert!(!pod.contains_key("initContainers"), "no null list: {pod:?}");
        let container = pod["containers"][0].as_object().unwrap();
        assert!(
            !container.contains_key("ports"),
            "no null list: {container:?}"
        );
        assert_eq!(
            pod["containers"][0]["imagePullPolicy"],
            json!("IfNotPresent")
        );
        assert_eq!(d["spec"]["strategy"]["rollingUpdate"]["maxSurge"], "25%");
        let paused = deployment(json!({"paused": true}));
        assert_eq!(paused["spec"]["paused"], json!(true));
    }

    #[test]
    fn quantities_take_their_canonical_form() {
        for (written, canonical) in [
            ("0.25", "250m"),
            ("1000m", "1"),
            ("1", "1"),
            ("100m", "100m"),
            ("1.5", "1500m"),
            ("128974848", "128974848"),
            ("1Gi", "1Gi"),
            ("1.5Gi", "1536Mi"),
            ("1024Mi", "1Gi"),
            ("0.5Ki", "512"),
            ("1000k", "1M"),
            ("0", "0"),
            ("2E", "2E"),
        ] {
            assert_eq!(
                canonical_quantity(written).as_deref(),
                Some(canonical),
                "{written}"
            );
        }
        assert_eq!(
            canonical_quantity("1e3"),
            None,
            "exponents are left as written"
        );
        assert_eq!(canonical_quantity("-1"), None);
        assert_eq!(canonical_quantity("lots"), None);
        // Read all the same, so a quota written `1e3` is enforced.
        for (written, nanos) in [
            ("1e3", 1_000_000_000_000),
            ("1E1", 10_000_000_000),
            ("5e-1", 500_000_000),
            ("2.5e+2", 250_000_000_000),
        ] {
            assert_eq!(quantity_nanos(written), Some((nanos, false)), "{written}");
        }
        assert_eq!(quantity_nanos("1e"), None);
    }
}
