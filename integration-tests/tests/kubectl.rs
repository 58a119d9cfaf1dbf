//! The machine's own kubectl against the simulated cluster, as a user would
//! run it.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests stop at the first failed step

use std::{
    path::{Path, PathBuf},
    process::{Command, Output, Stdio},
    time::Duration,
};

use sluice_integration_tests::process::Service;

struct Cluster {
    _sim: Service,
    _dir: tempfile::TempDir,
    kubeconfig: PathBuf,
}

fn cluster() -> Cluster {
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = dir.path().join("kubeconfig");
    let sim = Service::start(
        "sluice-sim",
        &["--kubeconfig", kubeconfig.to_str().unwrap()],
    );
    Cluster {
        _sim: sim,
        _dir: dir,
        kubeconfig,
    }
}

fn manifest(name: &str) -> String {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("manifests")
        .join(name)
        .display()
        .to_string()
}

impl Cluster {
    fn run(&self, args: &[&str]) -> Output {
        Command::new("kubectl")
            .args(args)
            .env("KUBECONFIG", &self.kubeconfig)
            .env_remove("KUBERNETES_SERVICE_HOST")
            .stdin(Stdio::null())
            .output()
            .expect("kubectl is on the machine")
    }

    /// Runs kubectl, expecting success; returns stdout.
    fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "kubectl {args:?} failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Runs kubectl, expecting failure; returns stderr.
    fn fails(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(!out.status.success(), "kubectl {args:?} should fail");
        String::from_utf8_lossy(&out.stderr).into_owned()
    }
}

#[test]
fn apply_get_describe_and_delete_a_whole_app() {
    let c = cluster();
    // The simulator installs the Gateway API CRDs at start, as an operator would.
    let applied = c.ok(&["apply", "-f", &manifest("app.yaml")]);
    for line in [
        "deployment.apps/web created",
        "service/web created",
        "ingress.networking.k8s.io/web created",
        "httproute.gateway.networking.k8s.io/web created",
    ] {
        assert!(applied.contains(line), "{applied}");
    }
    let again = c.ok(&["apply", "-f", &manifest("app.yaml")]);
    assert!(again.contains("deployment.apps/web unchanged"), "{again}");

    let table = c.ok(&["get", "deploy,svc,ing,httproute"]);
    assert!(
        table.contains("deployment.apps/web") && table.contains("0/3"),
        "{table}"
    );
    assert!(
        table.contains("service/web") && table.contains("80/TCP"),
        "{table}"
    );

    let yaml = c.ok(&["get", "deploy", "web", "-o", "yaml"]);
    assert!(
        yaml.contains("image: registry.example/web:1.0") && yaml.contains("resourceVersion:"),
        "{yaml}"
    );
    let described = c.ok(&["describe", "deploy", "web"]);
    assert!(
        described.contains("Replicas:") && described.contains("registry.example/web:1.0"),
        "{described}"
    );
    // The controllers' Events, as describe and `kubectl events` find them.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        let described = c.ok(&["describe", "deploy", "web"]);
        let events = c.ok(&["events", "--for", "deployment/web"]);
        if described.contains("ScalingReplicaSet")
            && described.contains("Scaled up replica set web-")
            && events.contains("ScalingReplicaSet")
        {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no ScalingReplicaSet event: {described}\n{events}"
        );
        std::thread::sleep(std::time::Duration::from_millis(200));
    }

    c.ok(&["delete", "-f", &manifest("app.yaml")]);
    let empty = c.run(&["get", "deploy,svc", "-o", "name"]);
    assert!(String::from_utf8_lossy(&empty.stdout).trim().is_empty());
}

#[test]
fn kubectl_reaches_a_simulator_serving_tls() {
    let dir = tempfile::tempdir().unwrap();
    let ca = sluice_integration_tests::pki::Authority::new(dir.path(), "ca");
    let server = ca.issue("sim");
    let kubeconfig = dir.path().join("kubeconfig");
    let (cert, key, ca_path) = (
        server.cert.display().to_string(),
        server.key.display().to_string(),
        ca.cert.display().to_string(),
    );
    let sim = Service::start(
        "sluice-sim",
        &[
            "--tls-cert",
            &cert,
            "--tls-key",
            &key,
            "--tls-ca",
            &ca_path,
            "--kubeconfig",
            kubeconfig.to_str().unwrap(),
        ],
    );
    let c = Cluster {
        _sim: sim,
        _dir: dir,
        kubeconfig,
    };
    let config = std::fs::read_to_string(&c.kubeconfig).unwrap();
    assert!(config.contains("server: https://127.0.0.1:"), "{config}");
    assert!(
        c.ok(&["get", "namespaces", "-o", "name"])
            .contains("namespace/default")
    );
}

#[test]
fn kubectl_explain_describes_custom_resources_from_their_crd_and_the_built_in_kinds() {
    let c = cluster();
    let crd = concat!(env!("CARGO_MANIFEST_DIR"), "/../deploy/crds/rollouts.yaml");
    c.ok(&["apply", "-f", crd]);
    let top = c.ok(&["explain", "rollouts"]);
    assert!(
        top.contains("KIND:")
            && top.contains("Rollout")
            && top.contains("GROUP:")
            && top.contains("sluice.dev")
            && top.contains("v1alpha1"),
        "{top}"
    );
    assert!(top.contains("spec") && top.contains("status"), "{top}");
    let field = c.ok(&["explain", "rollouts.spec.analyses"]);
    assert!(
        field.contains("Analyses the strategy's steps refer to by name."),
        "{field}"
    );
    let missing = c.run(&["explain", "rollouts.spec.nonesuch"]);
    assert!(!missing.status.success(), "an unknown field is an error");
    // The built-in kinds, from Kubernetes' own descriptions.
    let strategy = c.ok(&["explain", "deployment.spec.strategy"]);
    assert!(
        strategy.contains("DeploymentStrategy") && strategy.contains("rollingUpdate"),
        "{strategy}"
    );
    let probe = c.ok(&[
        "explain",
        "pods.spec.containers.readinessProbe.periodSeconds",
    ]);
    assert!(
        probe.contains("How often (in seconds) to perform the probe"),
        "{probe}"
    );
    let hpa = c.ok(&["explain", "hpa.spec.metrics"]);
    assert!(hpa.contains("autoscaling"), "{hpa}");
}

#[test]
fn a_crd_and_its_objects_show_their_printer_columns() {
    let c = cluster();
    // As with a real cluster, a CRD is installed before objects of its kind.
    assert!(
        c.ok(&["apply", "-f", &manifest("widget-crd.yaml")])
            .contains("created")
    );
    assert!(
        c.ok(&["apply", "-f", &manifest("widget.yaml")])
            .contains("widget.example.dev/gear created")
    );
    let resources = c.ok(&["api-resources", "--api-group", "example.dev"]);
    assert!(
        resources.contains("widgets") && resources.contains("wd"),
        "{resources}"
    );
    let widgets = c.ok(&["get", "wd"]);
    assert!(
        widgets.contains("COLOR") && widgets.contains("gear") && widgets.contains("blue"),
        "{widgets}"
    );
}

#[test]
fn patch_scale_label_and_annotate() {
    let c = cluster();
    c.ok(&["apply", "-f", &manifest("app.yaml")]);
    c.ok(&["patch", "deploy", "web", "-p", r#"{"spec":{"template":{"spec":{"containers":[{"name":"web","image":"registry.example/web:2.0"}]}}}}"#]);
    c.ok(&[
        "patch",
        "deploy",
        "web",
        "--type",
        "merge",
        "-p",
        r#"{"metadata":{"labels":{"tier":"front"}}}"#,
    ]);
    c.ok(&["patch", "deploy", "web", "--type", "json", "-p", r#"[{"op":"test","path":"/spec/replicas","value":3},{"op":"replace","path":"/spec/replicas","value":4}]"#]);
    let failed = c.fails(&[
        "patch",
        "deploy",
        "web",
        "--type",
        "json",
        "-p",
        r#"[{"op":"test","path":"/spec/replicas","value":3}]"#,
    ]);
    assert!(
        failed.contains("invalid") || failed.contains("Invalid"),
        "{failed}"
    );
    c.ok(&["scale", "deploy", "web", "--replicas", "6"]);
    c.ok(&["label", "deploy", "web", "team=payments"]);
    c.ok(&["annotate", "deploy", "web", "owner=platform"]);
    let fields = c.ok(&["get", "deploy", "web", "-o", "jsonpath={.spec.replicas} {.metadata.labels.tier} {.metadata.labels.team} {.metadata.annotations.owner} {.spec.template.spec.containers[0].image}"]);
    assert_eq!(fields, "6 front payments platform registry.example/web:2.0");
    let missing = c.fails(&["get", "deploy", "nothing"]);
    assert!(missing.contains("\"nothing\" not found"), "{missing}");
}

#[test]
fn get_watch_prints_changes_as_they_happen() {
    let c = cluster();
    c.ok(&["apply", "-f", &manifest("app.yaml")]);
    let mut watch = Command::new("kubectl")
        .args(["get", "deploy", "web", "-w", "--output-watch-events"])
        .env("KUBECONFIG", &c.kubeconfig)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Wait until the watch shows the object, then change it.
    let stdout = watch.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel::<String>();
    std::thread::spawn(move || {
        use std::io::BufRead;
        for line in std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
        {
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    let mut seen = String::new();
    let wait_for = |seen: &mut String, needle: &str| {
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        while !seen.contains(needle) {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            match rx.recv_timeout(left) {
                Ok(line) => {
                    seen.push_str(&line);
                    seen.push('\n');
                }
                Err(_) => panic!("the watch never showed {needle:?}:\n{seen}"),
            }
        }
    };
    wait_for(&mut seen, "ADDED");
    c.ok(&["scale", "deploy", "web", "--replicas=7"]);
    wait_for(&mut seen, "0/7");
    let _ = watch.kill();
    let _ = watch.wait();
    assert!(seen.contains("ADDED"), "{seen}");
    assert!(seen.contains("MODIFIED") && seen.contains("0/7"), "{seen}");
}

/// kubectl reading a Deployment's ready replicas until it has `n`.
fn wait_ready(c: &Cluster, name: &str, n: &str) {
    for _ in 0..300 {
        let out = c.run(&[
            "get",
            "deploy",
            name,
            "-o",
            "jsonpath={.status.readyReplicas}",
        ]);
        if String::from_utf8_lossy(&out.stdout) == n {
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("deployment {name} never had {n} ready replicas");
}

#[test]
fn dry_runs_store_nothing_invalid_objects_are_refused_naming_the_field_and_the_cluster_goes_on() {
    let c = cluster();
    c.ok(&["apply", "-f", &manifest("app.yaml")]);
    let dir = tempfile::tempdir().unwrap();
    let write = |name: &str, text: &str| {
        let path = dir.path().join(name);
        std::fs::write(&path, text).unwrap();
        path.display().to_string()
    };
    let changed = std::fs::read_to_string(manifest("app.yaml"))
        .unwrap()
        .replace("registry.example/web:1.0", "registry.example/web:9.9")
        .replace("replicas: 3", "replicas: 5");
    let changed = write("changed.yaml", &changed);
    let image = || {
        c.ok(&["get", "deploy", "web", "-o", "jsonpath={.spec.replicas} {.spec.template.spec.containers[0].image} {.metadata.generation}"])
    };
    let before = image();
    // A server-side dry run answers with the change and keeps nothing; so
    // does kubectl diff (which exits 1 when there are differences).
    let out = c.ok(&["apply", "--dry-run=server", "-f", &changed]);
    assert!(
        out.contains("deployment.apps/web configured (server dry run)"),
        "{out}"
    );
    // Forced: the HTTPRoute's lists, defaulted from its CRD when kubectl
    // created it client-side, differ from the manifest's, and
    // kube-apiserver reports them as conflicts with
    // kubectl-client-side-apply too.
    let out = c.ok(&[
        "apply",
        "--server-side",
        "--force-conflicts",
        "--dry-run=server",
        "-f",
        &changed,
    ]);
    assert!(out.contains("(server dry run)"), "{out}");
    let diff = c.run(&["diff", "-f", &changed]);
    assert_eq!(
        diff.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&diff.stderr)
    );
    assert!(String::from_utf8_lossy(&diff.stdout).contains("registry.example/web:9.9"));
    c.ok(&["delete", "deploy", "web", "--dry-run=server"]);
    c.ok(&[
        "create",
        "-f",
        &write(
            "other.yaml",
            "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: other}\n",
        ),
        "--dry-run=server",
    ]);
    assert_eq!(image(), before, "nothing changed");
    assert!(
        c.fails(&["get", "configmap", "other"])
            .contains("not found")
    );

    // Invalid workloads are refused as kube-apiserver refuses them.
    let bad = [
        (
            "replicas: 3",
            "replicas: -1",
            "spec.replicas: Invalid value: -1",
        ),
        (
            "containerPort: 8080",
            "containerPort: 80800",
            "spec.template.spec.containers[0].ports[0].containerPort: Invalid value: 80800",
        ),
        (
            "metadata: {labels: {app: web}}\n    spec",
            "metadata: {labels: {app: other}}\n    spec",
            "`selector` does not match template `labels`",
        ),
        (
            "image: registry.example/web:1.0",
            "image: \"\"",
            "spec.template.spec.containers[0].image: Required value",
        ),
    ];
    let original = std::fs::read_to_string(manifest("app.yaml")).unwrap();
    let deployment = original
        .split("---")
        .next()
        .unwrap()
        .replace("name: web\n", "name: bad\n");
    for (from, to, said) in bad {
        assert!(deployment.contains(from), "{from}");
        let file = write("bad.yaml", &deployment.replace(from, to));
        let err = c.fails(&["apply", "-f", &file]);
        assert!(
            err.contains("is invalid") && err.contains(said),
            "{to}: {err}"
        );
    }
    assert!(c.fails(&["get", "deploy", "bad"]).contains("not found"));
    // An invalid change of a stored one is refused too, and it keeps going.
    let err = c.fails(&[
        "patch",
        "deploy",
        "web",
        "-p",
        r#"{"spec":{"replicas":-1}}"#,
    ]);
    assert!(err.contains("spec.replicas: Invalid value: -1"), "{err}");
    c.ok(&["scale", "deploy", "web", "--replicas=4"]);
    wait_ready(&c, "web", "4");
}

#[test]
fn sluices_own_install_applies_and_the_kinds_charts_ship_are_served() {
    let c = cluster();
    // Everything `kubectl apply -k deploy/` makes: RBAC, PDBs, NetworkPolicies,
    // webhook configurations, as on a real cluster (stored; no controller
    // acts on them here).
    let deploy = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy");
    let out = c.ok(&["apply", "-k", deploy.to_str().unwrap()]);
    for made in [
        "clusterrole.rbac.authorization.k8s.io/sluice-executor created",
        "role.rbac.authorization.k8s.io/sluice-executor created",
        "poddisruptionbudget.policy/sluice-executor created",
        "networkpolicy.networking.k8s.io/sluice-default-deny created",
        "deployment.apps/sluice-executor created",
    ] {
        assert!(out.contains(made), "{made}:\n{out}");
    }
    let pdb = c.ok(&["get", "pdb", "-n", "sluice-system", "-o", "name"]);
    assert!(
        pdb.contains("poddisruptionbudget.policy/sluice-gate"),
        "{pdb}"
    );
    // The namespace label a real server sets, which namespace selectors use.
    let label = c.ok(&[
        "get",
        "namespace",
        "sluice-system",
        "-o",
        "jsonpath={.metadata.labels.kubernetes\\.io/metadata\\.name}",
    ]);
    assert_eq!(label, "sluice-system");
    let resources = c.ok(&["api-resources", "-o", "name"]);
    for kind in [
        "jobs.batch",
        "cronjobs.batch",
        "horizontalpodautoscalers.autoscaling",
        "persistentvolumeclaims",
        "storageclasses.storage.k8s.io",
        "priorityclasses.scheduling.k8s.io",
    ] {
        assert!(resources.lines().any(|l| l == kind), "{kind}:\n{resources}");
    }
    // `kubectl auth can-i` (a SelfSubjectAccessReview): every request is
    // allowed here.
    let can = c.ok(&["auth", "can-i", "create", "deployments", "-n", "shop"]);
    assert_eq!(can.trim(), "yes");
    // `kubectl auth whoami` (a SelfSubjectReview): the one identity here.
    let who = c.ok(&["auth", "whoami", "-o", "json"]);
    let who: serde_json::Value = serde_json::from_str(&who).unwrap();
    assert_eq!(who["kind"], "SelfSubjectReview", "{who}");
    assert_eq!(
        who["status"]["userInfo"]["username"], "system:admin",
        "{who}"
    );
    // With the webhook registered but unreachable here, a Rollout that
    // breaks its schema is still answered 422 first (the API server checks
    // the object before calling validating webhooks).
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.yaml");
    std::fs::write(
        &bad,
        "apiVersion: sluice.dev/v1alpha1\nkind: Rollout\nmetadata: {name: web}\nspec:\n  workload: {kind: Job, name: web}\n",
    )
    .unwrap();
    let err = c.fails(&["apply", "-f", bad.to_str().unwrap()]);
    assert!(err.contains("Unsupported value: \"Job\""), "{err}");
    // kubectl create sends protobuf, which the simulator reads.
    c.ok(&["create", "namespace", "shop"]);
    c.ok(&[
        "create",
        "deployment",
        "created",
        "--image=registry.example/web:1.0",
        "--replicas=2",
    ]);
    wait_ready(&c, "created", "2");
    // A built-in object's value of the wrong type is refused as the Go
    // types refuse it.
    let typed = dir.path().join("typed.yaml");
    std::fs::write(
        &typed,
        "apiVersion: v1\nkind: Pod\nmetadata: {name: p}\nspec:\n  containers: [{name: c, image: i, command: [true]}]\n",
    )
    .unwrap();
    let err = c.fails(&["apply", "-f", typed.to_str().unwrap()]);
    assert!(
        err.contains("Pod in version \"v1\" cannot be handled as a Pod"),
        "{err}"
    );
    // The version clients check (a chart's kubeVersion, kubectl's skew).
    let version = c.ok(&["version", "-o", "json"]);
    let version: serde_json::Value = serde_json::from_str(&version).unwrap();
    assert_eq!(version["serverVersion"]["gitVersion"], "v1.34.4+sluice");
    // The executor's Deployment, as stored, carries the probe defaults.
    let probe = c.ok(&[
        "get",
        "deployment",
        "sluice-executor",
        "-n",
        "sluice-system",
        "-o",
        "jsonpath={.spec.template.spec.containers[0].readinessProbe.timeoutSeconds}/{.spec.template.spec.containers[0].readinessProbe.failureThreshold}",
    ]);
    assert_eq!(probe, "1/3");
}

#[test]
fn a_custom_resource_against_its_crd_schema_is_refused_pruned_or_warned_as_kube_apiserver_does() {
    let c = cluster();
    let dir = tempfile::tempdir().unwrap();
    let write = |name: &str, text: &str| {
        let path = dir.path().join(name);
        std::fs::write(&path, text).unwrap();
        path.display().to_string()
    };
    let rollout = |workload: &str, extra: &str| {
        format!(
            "apiVersion: sluice.dev/v1alpha1\nkind: Rollout\nmetadata: {{name: web}}\nspec:\n  workload: {workload}\n{extra}"
        )
    };
    // A value outside the schema's enum: 422, the field and the allowed
    // values named, nothing stored.
    let bad = write("bad.yaml", &rollout("{kind: Job, name: web}", ""));
    let err = c.fails(&["apply", "-f", &bad]);
    assert!(
        err.contains("spec.workload.kind: Unsupported value: \"Job\": supported values: \"Deployment\", \"StatefulSet\""),
        "{err}"
    );
    let none = c.run(&["get", "rollout", "web"]);
    assert!(!none.status.success(), "nothing stored");
    // An unknown field: kubectl asks for strict validation, and the server
    // refuses naming it.
    let unknown = write(
        "unknown.yaml",
        &rollout("{kind: Deployment, name: web}", "  colour: red\n"),
    );
    let err = c.fails(&["apply", "-f", &unknown]);
    assert!(
        err.contains("Rollout in version \"v1alpha1\" cannot be handled as a Rollout: strict decoding error: unknown field \"spec.colour\""),
        "{err}"
    );
    // A value of the wrong type: its type is named, as kube-apiserver does.
    let typed = write("typed.yaml", &rollout("{kind: Deployment, name: 5}", ""));
    let err = c.fails(&["apply", "-f", &typed]);
    assert!(
        err.contains("spec.workload.name: Invalid value: \"integer\": spec.workload.name in body must be of type string: \"integer\""),
        "{err}"
    );
    // Asked to warn, the write is made without the field, and kubectl
    // prints the server's warning.
    let out = c.run(&["apply", "--validate=warn", "-f", &unknown]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("unknown field \"spec.colour\""),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stored = c.ok(&["get", "rollout", "web", "-o", "json"]);
    let stored: serde_json::Value = serde_json::from_str(&stored).unwrap();
    assert!(stored["spec"].get("colour").is_none(), "pruned: {stored}");
    assert_eq!(stored["spec"]["workload"]["name"], "web");
    // A required field missing.
    let missing = write("missing.yaml", &rollout("{kind: Deployment}", ""));
    let err = c.fails(&["apply", "-f", &missing]);
    assert!(err.contains("spec.workload.name: Required value"), "{err}");
}
