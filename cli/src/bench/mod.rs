//! `sluice bench`: the whole system on the simulator at growing numbers of
//! concurrent rollouts, with the figures users compare delivery systems by.
//!
//! Per size, a fresh simulated cluster holds one two-replica Deployment per
//! rollout. The executor is the `sluice-executor` binary (found beside
//! `sluice`) in a process of its own, so its CPU time and memory are its
//! own; it reaches the simulated API server over loopback HTTP, as it would
//! a real one. Most
//! rollouts release a healthy version in two batches with no analysis, so
//! the time between batches is the controller's own overhead; a share
//! releases a failing version behind an error-rate analysis, for the
//! decision latency. Before the sizes, the planner's and the gate's
//! per-call costs are measured against minimal baselines in the same run.

mod ground;
mod overhead;
mod peer;
mod probe;
mod report;

use std::{
    collections::BTreeMap,
    path::PathBuf,
    process::ExitCode,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant, SystemTime},
};

use anyhow::{Context as _, bail};
use clap::Args;
use kube::{
    Api, ResourceExt,
    api::{Patch, PatchParams, PostParams},
};
use serde_json::json;
use sluice_executor::crd::{Phase, Rollout};
use sluice_proto::v1::{metrics_gate_server::MetricsGateServer, planner_server::PlannerServer};
use sluice_sim::{
    cluster::profile::Profile,
    metrics::traffic::{LoadProfile, Target},
    scenario::{Scenario, Version},
};
use tokio_util::sync::CancellationToken;

use ground::Ground;
use probe::{Counter, Watch};
pub(crate) use report::SizeFigures;

/// Arguments of `sluice bench`.
#[derive(Debug, Args)]
pub(crate) struct BenchArgs {
    /// Numbers of concurrent rollouts, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "10,100,1000", value_parser = at_least_one)]
    sizes: Vec<usize>,
    /// Share of the rollouts that release a failing version (0 to 1).
    #[arg(long, default_value_t = 0.1, value_parser = share)]
    bad_share: f64,
    /// Calls per per-call overhead comparison.
    #[arg(long, default_value_t = 2000, value_parser = at_least_one)]
    calls: usize,
    /// Rollouts started per second; 0 starts them all at once. When paced,
    /// each rollout holds its last batch (a timed pause) until the last one
    /// has started, so every rollout of the size is in flight together, as
    /// when a platform's releases arrive over time instead of in one burst.
    #[arg(long, default_value_t = 0.0, value_parser = pace)]
    pace: f64,
    /// Folder for bench.json, bench.md and bench.svg.
    #[arg(long, default_value = "bench-results")]
    out: PathBuf,
    /// Also run Argo Rollouts' controller on the same workload, per size:
    /// the folder `scripts/build-peers` prints. Compare with
    /// `--bad-share 0` (the peer releases only the healthy version).
    #[arg(long)]
    argo_rollouts: Option<PathBuf>,
    /// The API request rates (QPS, burst twice that) Argo Rollouts runs at,
    /// one run each per size; its own default is 40.
    #[arg(long, value_delimiter = ',', default_value = "40,1000", value_parser = qps)]
    argo_qps: Vec<f64>,
    /// Also hold this many two-replica Deployments that no Rollout names,
    /// each with a template like a chart's (probes, resources, env), to
    /// measure what a big cluster costs the executor. Its memory is then
    /// also reported above that of an idle executor on an empty cluster,
    /// measured in the same run.
    #[arg(long, default_value_t = 0)]
    unrelated: usize,
    /// Run on the cluster this kubeconfig names instead of a fresh simulated
    /// one per size: one whose nodes run pods (say `examples/control-plane`
    /// with `sluice-sim --agent-kubeconfig` as its node fleet). Each size
    /// makes namespaces of its own and deletes them at its end; the Rollout
    /// CRD is installed when missing. Healthy releases only (`--bad-share
    /// 0`); the executor's requests are counted from its own metrics.
    #[arg(long)]
    kubeconfig: Option<PathBuf>,
    /// Run the executor with `--keep-all-workloads` (every workload kept
    /// whole in its caches), to weigh that against its default.
    #[arg(long)]
    keep_all_workloads: bool,
    /// Executor replicas to run, sharing the rollouts through `--shards`:
    /// CPU is then summed over them and memory is the largest replica's.
    #[arg(long, default_value_t = 1, value_parser = at_least_one)]
    replicas: usize,
    /// Shards the executors split the rollouts into (their `--shards`);
    /// by default as many as `--replicas`.
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=1024))]
    shards: Option<u32>,
    /// Make the Rollouts before the trigger, each at the version its
    /// workload runs (a release with nothing to do), and trigger by
    /// replacing their spec with the new version, as a platform's
    /// StartRollout of an app's next version does and as Argo Rollouts'
    /// runs are triggered. The figures (requests, CPU, memory, times) are
    /// then taken from the trigger on. By default each Rollout is made at
    /// the trigger, so its first read of the workload counts.
    #[arg(long)]
    existing_rollouts: bool,
    /// Log filter (tracing's env-filter syntax) for the in-process simulated
    /// cluster and the executor it starts; warnings by default.
    #[arg(long, default_value = "warn")]
    log: String,
}

/// The version every workload runs before the trigger.
const CURRENT: &str = "registry.example/app:1.0";
const GOOD: &str = "registry.example/app:2.0";
const BAD: &str = "registry.example/app:bad";

fn at_least_one(text: &str) -> Result<usize, String> {
    match text.trim().parse::<usize>() {
        Ok(n) if n >= 1 => Ok(n),
        _ => Err(format!(
            "must be a whole number of at least 1, got {text:?}"
        )),
    }
}

fn pace(text: &str) -> Result<f64, String> {
    match text.trim().parse::<f64>() {
        Ok(v) if v >= 0.0 && v.is_finite() => Ok(v),
        _ => Err(format!(
            "must be a number of rollouts per second, 0 or more, got {text:?}"
        )),
    }
}

fn qps(text: &str) -> Result<f64, String> {
    match text.trim().parse::<f64>() {
        Ok(v) if v > 0.0 && v.is_finite() => Ok(v),
        _ => Err(format!(
            "must be a number of requests per second above 0, got {text:?}"
        )),
    }
}

fn share(text: &str) -> Result<f64, String> {
    match text.trim().parse::<f64>() {
        Ok(v) if (0.0..=1.0).contains(&v) => Ok(v),
        _ => Err(format!("must be between 0 and 1, got {text:?}")),
    }
}

pub(crate) fn run(args: &BenchArgs) -> anyhow::Result<ExitCode> {
    std::fs::create_dir_all(&args.out)
        .with_context(|| format!("--out: cannot create {}", args.out.display()))?;
    sluice_runtime::telemetry::init(sluice_runtime::config::LogFormat::Pretty, &args.log)?;
    let _ = rustls::crypto::ring::default_provider().install_default();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let argo = args
        .argo_rollouts
        .as_deref()
        .map(peer::Argo::load)
        .transpose()?;
    let overheads = runtime.block_on(overhead::measure(args.calls))?;
    eprintln!(
        "per-call: Plan {:.0} µs vs bare tonic {:.0} µs; gate {:.0} µs vs bare tonic + raw query {:.0} µs",
        overheads.plan_us,
        overheads.tonic_us,
        overheads.evaluate_us,
        overheads.tonic_us + overheads.query_us
    );
    let mut sizes = Vec::new();
    let mut peers = Vec::new();
    let mut report = report::Report::new(overheads.clone(), Vec::new());
    if args.kubeconfig.is_some() && (args.bad_share > 0.0 || args.unrelated > 0) {
        bail!(
            "--kubeconfig: a given cluster runs healthy releases only, with no unrelated workloads; add --bad-share 0 and leave out --unrelated"
        );
    }
    let idle = if args.unrelated > 0 {
        let mib = runtime.block_on(idle_executor(&args.log, args.keep_all_workloads))?;
        eprintln!("an idle executor on an empty cluster: {mib:.1} MiB resident");
        Some(mib)
    } else {
        None
    };
    for &n in &args.sizes {
        let shape = Shape {
            n,
            bad_share: args.bad_share,
            pace: args.pace,
            unrelated: args.unrelated,
            keep_all: args.keep_all_workloads,
            existing: args.existing_rollouts,
            given: args.kubeconfig.clone(),
            replicas: args.replicas,
            shards: args
                .shards
                .unwrap_or(u32::try_from(args.replicas).unwrap_or(1)),
        };
        let mut figures = runtime.block_on(size(&shape, &args.log))?;
        if let Some(idle) = idle {
            figures.executor_idle_mib = Some(idle);
            figures.executor_above_idle_mib = Some(figures.executor_high_mib - idle);
        }
        eprintln!("{}", figures.line());
        sizes.push(figures);
        if let Some(argo) = &argo {
            for &qps in &args.argo_qps {
                let figures = runtime.block_on(peer::run(
                    argo,
                    n,
                    qps,
                    &args.log,
                    args.kubeconfig.as_deref(),
                ))?;
                eprintln!(
                    "{}: {} releases in {:.1} s; advance p50 {:?} ms p99 {:?} ms; CPU {:.2} s, peak {:.0} MiB, {:.1} requests per release",
                    figures.controller,
                    figures.rollouts,
                    figures.wall_seconds,
                    figures.advance_p50_ms,
                    figures.advance_p99_ms,
                    figures.cpu_seconds,
                    figures.peak_rss_mib,
                    figures.api_calls_per_release
                );
                peers.push(figures);
            }
        }
        // Written after every size, so a long run keeps what it measured.
        report = report::Report::new(overheads.clone(), sizes.clone())
            .paced(args.pace)
            .with_peers(peers.clone());
        report.write(&args.out)?;
    }
    println!("{}{}", report.markdown(), report.side_by_side());
    eprintln!(
        "wrote {}/bench.json, bench.md and bench.svg",
        args.out.display()
    );
    Ok(ExitCode::SUCCESS)
}

/// What one size runs.
struct Shape {
    /// Rollouts.
    n: usize,
    /// Share of them releasing a failing version.
    bad_share: f64,
    /// Rollouts started per second (0: all at once).
    pace: f64,
    /// Deployments no Rollout names.
    unrelated: usize,
    /// The executor keeps every workload whole.
    keep_all: bool,
    /// The Rollouts exist before the trigger (`--existing-rollouts`).
    existing: bool,
    /// The cluster to run on, when not a simulated one.
    given: Option<PathBuf>,
    /// Executor replicas.
    replicas: usize,
    /// Shards they split the rollouts into.
    shards: u32,
}

fn scenario(n: usize, bad: usize, unrelated: usize) -> Scenario {
    let mut s = Scenario::big_cluster(n, 2);
    s.name = format!("bench-{n}");
    // Room for every stable pod and a surge pod per rollout, and the
    // unrelated workloads' pods.
    s.nodes.count = (3 * n as u32 + 2 * unrelated as u32).div_ceil(100).max(1);
    s.manifests.extend((0..unrelated).map(unrelated_deployment));
    let fast = Profile {
        start_min_seconds: 0.05,
        start_max_seconds: 0.15,
        ready_after_seconds: 0.05,
        ..Profile::default()
    };
    let failing = Profile {
        error_ratio: 0.5,
        ..fast.clone()
    };
    for (image, profile) in [
        ("registry.example/app:1.0", fast.clone()),
        (GOOD, fast),
        (BAD, failing),
    ] {
        s.versions.push(Version {
            image: image.into(),
            profile,
        });
    }
    // The failing releases need traffic to be judged by.
    for i in 0..bad {
        let ns = format!("team-{}", i % 20);
        s.manifests.push(json!({
            "apiVersion": "v1", "kind": "Service",
            "metadata": {"name": format!("app-{i}"), "namespace": ns},
            "spec": {"selector": {"app": format!("app-{i}")}, "ports": [{"port": 80}]},
        }));
        s.load.push(LoadProfile {
            namespace: ns,
            target: Target {
                service: Some(format!("app-{i}")),
                ingress_host: None,
                http_route: None,
                virtual_service: None,
            },
            rps: 20.0,
            schedule: Vec::new(),
            classes: Vec::new(),
        });
    }
    s
}

/// Unrelated Deployment `i`: two replicas of a template as a chart writes
/// one, so what the executor would cache of it is of a common size.
fn unrelated_deployment(i: usize) -> serde_json::Value {
    let name = format!("other-{i}");
    let labels = json!({
        "app.kubernetes.io/name": name,
        "app.kubernetes.io/instance": "bench",
        "app.kubernetes.io/version": "1.0.0",
        "app.kubernetes.io/component": "api",
        "app.kubernetes.io/part-of": "shop",
    });
    let probe = |path: &str| {
        json!({
            "httpGet": {"path": path, "port": "http"},
            "initialDelaySeconds": 5, "periodSeconds": 10, "timeoutSeconds": 2,
            "failureThreshold": 3,
        })
    };
    json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {
            "name": name, "namespace": format!("other-{}", i % 20), "labels": labels,
            "annotations": {"meta.helm.sh/release-name": "bench", "meta.helm.sh/release-namespace": "default"},
        },
        "spec": {
            "replicas": 2,
            "selector": {"matchLabels": {"app.kubernetes.io/name": name, "app.kubernetes.io/instance": "bench"}},
            "template": {
                "metadata": {"labels": labels, "annotations": {"checksum/config": format!("{:064x}", i)}},
                "spec": {
                    "serviceAccountName": "default",
                    "securityContext": {"runAsNonRoot": true, "runAsUser": 10001, "fsGroup": 10001},
                    "containers": [{
                        "name": "api",
                        "image": "registry.example/app:1.0",
                        "ports": [{"name": "http", "containerPort": 8080, "protocol": "TCP"},
                                  {"name": "metrics", "containerPort": 9090, "protocol": "TCP"}],
                        "env": (0..6).map(|k| json!({"name": format!("SETTING_{k}"), "value": format!("value-{k}")})).collect::<Vec<_>>(),
                        "resources": {"requests": {"cpu": "100m", "memory": "128Mi"},
                                      "limits": {"cpu": "500m", "memory": "256Mi"}},
                        "livenessProbe": probe("/healthz"),
                        "readinessProbe": probe("/ready"),
                        "volumeMounts": [{"name": "config", "mountPath": "/etc/app", "readOnly": true}],
                        "securityContext": {"allowPrivilegeEscalation": false, "readOnlyRootFilesystem": true,
                                            "capabilities": {"drop": ["ALL"]}},
                    }],
                    "volumes": [{"name": "config", "configMap": {"name": format!("{name}-config")}}],
                },
            },
        },
    })
}

/// The resident memory (MiB) of an executor on an empty cluster, once its
/// watches have listed: what the executor costs before any workload.
async fn idle_executor(log: &str, keep_all: bool) -> anyhow::Result<f64> {
    let stop = CancellationToken::new();
    let _guard = stop.clone().drop_guard();
    let ground = Ground::simulated(Scenario::big_cluster(0, 2), &stop).await?;
    let services = sluice_executor::stack::services(
        PlannerServer::new(sluice_planner::service::PlannerService),
        MetricsGateServer::new(sluice_gate::service::GateService::new(
            sluice_gate::prometheus::Prometheus::new(sluice_gate::prometheus::ClientOptions::new(
                "http://127.0.0.1:9".parse()?,
            ))
            .map_err(|e| anyhow::anyhow!("gate: {e}"))?,
            stop.clone(),
        )),
        stop.clone(),
    )
    .await?;
    let lanes = Lanes {
        planner: services.planner,
        gate: services.gate,
        admin: format!("127.0.0.1:{}", peer::free_port()?).parse()?,
    };
    let mut executor = Executor::start(
        &ground.kubeconfig,
        lanes,
        &ground.lease,
        log,
        keep_all,
        (0, 1),
    )?;
    Executor::wait_leading(
        std::slice::from_mut(&mut executor),
        &ground.local,
        &ground.lease,
        1,
    )
    .await?;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let (rss, _) = probe::memory(&executor.pid);
    executor.stop().await;
    Ok(rss as f64 / 1_048_576.0)
}

/// Rollout `i`; with `hold`, its last batch waits that long before the
/// release ends.
/// Rollout `i`, releasing `image`.
fn rollout(i: usize, image: &str, hold: Option<Duration>, ns: &str) -> anyhow::Result<Rollout> {
    let bad = image == BAD;
    let mut spec = json!({
        "apiVersion": "sluice.dev/v1alpha1", "kind": "Rollout",
        "metadata": {"name": format!("app-{i}"), "namespace": ns},
        "spec": {
            "workload": {"kind": "Deployment", "name": format!("app-{i}")},
            "images": [{"container": "app", "image": image}],
            "strategy": {"canary": {"steps": [{"replicas": 1}]}},
        },
    });
    if let Some(hold) = hold {
        spec["spec"]["strategy"]["canary"]["steps"] = json!([
            {"replicas": 1},
            {"replicas": 2, "pause": {"duration": format!("{}s", hold.as_secs().max(1))}},
        ]);
    }
    if bad {
        spec["spec"]["strategy"]["canary"]["steps"][0]["analyses"] = json!(["errors"]);
        spec["spec"]["analyses"] = json!([{"name": "errors", "metrics": [{
            "name": "error-rate", "template": "request-error-rate",
            "successCondition": {"threshold": {"max": 0.05}},
            "failureCondition": {"threshold": {"min": 0.1}},
            "initialDelay": "2s", "interval": "1s", "count": 20, "failureLimit": 0,
        }]}]);
    }
    Ok(serde_json::from_value(spec)?)
}

/// A kubeconfig for the simulated API server at `addr`, in a folder that
/// goes when the first value drops.
fn kubeconfig_for(
    addr: std::net::SocketAddr,
) -> anyhow::Result<(tempfile::TempDir, std::path::PathBuf)> {
    let dir = tempfile::tempdir()?;
    let kubeconfig = dir.path().join("kubeconfig");
    std::fs::write(
        &kubeconfig,
        sluice_sim::kubeconfig(addr, &Default::default()),
    )?;
    Ok((dir, kubeconfig))
}

async fn listen() -> anyhow::Result<(tokio::net::TcpListener, std::net::SocketAddr)> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    Ok((listener, addr))
}

/// Where the executor finds the planner and the gate, and serves its
/// metrics.
struct Lanes {
    planner: std::net::SocketAddr,
    gate: std::net::SocketAddr,
    admin: std::net::SocketAddr,
}

/// The `sluice-executor` process of one size.
struct Executor {
    child: tokio::process::Child,
    /// Its process id, as /proc names it.
    pid: String,
}

impl Executor {
    /// Starts `sluice-executor` (the one beside this binary) against the
    /// cluster, the planner and the gate, serving its metrics at
    /// `lanes.admin` and leading through Lease `lease` of `default`, as
    /// replica `replica` of executors splitting the rollouts into `shards`.
    fn start(
        kubeconfig: &std::path::Path,
        lanes: Lanes,
        lease: &str,
        log: &str,
        keep_all: bool,
        (replica, shards): (usize, u32),
    ) -> anyhow::Result<Self> {
        let binary = std::env::current_exe()?.with_file_name("sluice-executor");
        if !binary.exists() {
            bail!(
                "{} is missing: build it beside sluice (cargo build --release --bins)",
                binary.display()
            );
        }
        let child = tokio::process::Command::new(&binary)
            .args(["--grpc-addr", "127.0.0.1:0"])
            .args(["--admin-addr", &lanes.admin.to_string()])
            .args(["--planner-addr", &lanes.planner.to_string()])
            .args(["--gate-addr", &lanes.gate.to_string()])
            .args(["--lease-name", lease])
            .args(["--identity", &format!("bench-{replica}")])
            .args(["--shards", &shards.to_string()])
            .arg("--kubeconfig")
            .arg(kubeconfig)
            .args(["--log", log])
            .args(keep_all.then_some("--keep-all-workloads"))
            .env_remove("KUBECONFIG")
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("starting {}", binary.display()))?;
        let pid = child
            .id()
            .map(|p| p.to_string())
            .context("the executor exited at once")?;
        Ok(Self { child, pid })
    }

    /// Waits until the `shards` Leases named after `lease` are held, by
    /// as many of `executors` as can share them: every controller runs.
    async fn wait_leading(
        executors: &mut [Self],
        client: &kube::Client,
        lease: &str,
        shards: u32,
    ) -> anyhow::Result<()> {
        let leases: Api<k8s_openapi::api::coordination::v1::Lease> =
            Api::namespaced(client.clone(), "default");
        let names: Vec<String> = if shards == 1 {
            vec![lease.to_owned()]
        } else {
            (0..shards).map(|i| format!("{lease}-{i}")).collect()
        };
        let sharing = executors.len().min(shards as usize);
        for _ in 0..600 {
            for executor in executors.iter_mut() {
                if let Some(status) = executor.child.try_wait()? {
                    bail!("sluice-executor exited with {status}");
                }
            }
            // Each shard's holder, read once: every shard held, by as
            // many replicas as can share them.
            let mut holders = Vec::new();
            for name in &names {
                holders.push(
                    leases
                        .get_opt(name)
                        .await?
                        .and_then(|l| l.spec?.holder_identity),
                );
            }
            let distinct: std::collections::BTreeSet<_> = holders.iter().flatten().collect();
            if holders.iter().all(Option::is_some) && distinct.len() == sharing {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        bail!("the executors never shared their Leases")
    }

    async fn stop(mut self) {
        let _ = self.child.kill().await;
    }
}

async fn size(shape: &Shape, log: &str) -> anyhow::Result<SizeFigures> {
    let (n, pace) = (shape.n, shape.pace);
    let bad = ((n as f64 * shape.bad_share).round() as usize).min(n);
    let stop = CancellationToken::new();
    let _guard = stop.clone().drop_guard();
    let ground = match &shape.given {
        None => Ground::simulated(scenario(n, bad, shape.unrelated), &stop).await?,
        Some(kubeconfig) => Ground::given(kubeconfig, n).await?,
    };
    let local = ground.local.clone();
    wait_ready(&local, &ground.prefix, n + shape.unrelated).await?;
    let grpc_calls = Counter::default();
    let (c1, c2) = (grpc_calls.clone(), grpc_calls.clone());
    let prometheus = sluice_gate::prometheus::Prometheus::new(
        sluice_gate::prometheus::ClientOptions::new(ground.metrics_url.parse()?),
    )
    .map_err(|e| anyhow::anyhow!("gate: {e}"))?;
    // The planner and the gate as the demo and the tests serve them, each
    // call counted.
    let services = sluice_executor::stack::services(
        PlannerServer::with_interceptor(sluice_planner::service::PlannerService, move |r| {
            c1.add();
            Ok(r)
        }),
        MetricsGateServer::with_interceptor(
            sluice_gate::service::GateService::new(prometheus, stop.clone()),
            move |r| {
                c2.add();
                Ok(r)
            },
        ),
        stop.clone(),
    )
    .await?;
    let (planner_addr, gate_addr) = (services.planner, services.gate);

    let watch = Watch::start(&local, &ground.prefix);
    let mut executors = Vec::new();
    let mut admins = Vec::new();
    for replica in 0..shape.replicas {
        let admin: std::net::SocketAddr = format!("127.0.0.1:{}", peer::free_port()?).parse()?;
        admins.push(admin);
        executors.push(Executor::start(
            &ground.kubeconfig,
            Lanes {
                planner: planner_addr,
                gate: gate_addr,
                admin,
            },
            &ground.lease,
            log,
            shape.keep_all,
            (replica, shape.shards),
        )?);
    }
    Executor::wait_leading(&mut executors, &local, &ground.lease, shape.shards).await?;
    // Paced: the first rollout still holds when the last one starts.
    let spacing = (pace > 0.0).then(|| Duration::from_secs_f64(1.0 / pace));
    let hold = spacing.map(|s| s * n as u32 + Duration::from_secs(5));
    if shape.existing {
        // Each Rollout made at the version its workload runs: the release
        // has nothing to do, and the workload is the executor's to watch.
        for i in 0..n {
            let r = rollout(i, CURRENT, hold, &ground.namespace(i))?;
            let ns = r.metadata.namespace.clone().unwrap_or_default();
            Api::<Rollout>::namespaced(local.clone(), &ns)
                .create(&PostParams::default(), &r)
                .await
                .with_context(|| format!("creating rollout {i}"))?;
        }
        let (outcomes, unfinished) =
            wait_done(&watch, n, Duration::from_secs(120 + n as u64 / 10)).await;
        if let Some(why) = unfinished {
            anyhow::bail!("the Rollouts made before the trigger did not end: {why}");
        }
        if let Some((key, s)) = outcomes.iter().find(|(_, s)| s.phase != Phase::Succeeded) {
            anyhow::bail!(
                "Rollout {key} at the running version ended {:?}: {}",
                s.phase,
                s.message
            );
        }
        watch.forget();
    }
    let requests_before = ground.requests(&admins, n).await?;
    let pids: Vec<String> = executors.iter().map(|e| e.pid.clone()).collect();
    // Their caches filled, before any rollout: the baseline.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let rss_before: Vec<u64> = pids.iter().map(|p| probe::memory(p).0).collect();
    // Each executor's resident memory at its highest while the rollouts
    // run, sampled: the allocator may hand memory back before the end.
    let highest: Arc<Vec<AtomicU64>> =
        Arc::new(rss_before.iter().map(|r| AtomicU64::new(*r)).collect());
    let sampler = {
        let (highest, pids) = (Arc::clone(&highest), pids.clone());
        tokio::spawn(async move {
            loop {
                for (pid, high) in pids.iter().zip(highest.iter()) {
                    high.fetch_max(probe::memory(pid).0, Ordering::Relaxed);
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        })
    };
    let cpu = |pids: &[String]| {
        pids.iter()
            .map(|p| probe::process_cpu_seconds(p))
            .sum::<f64>()
    };
    let exec_cpu_before = cpu(&pids);
    let other_cpu_before = probe::process_cpu_seconds("self");

    let began = Instant::now();
    let mut peak_in_flight = 0;
    for i in 0..n {
        if let Some(spacing) = spacing {
            tokio::time::sleep_until((began + spacing * i as u32).into()).await;
        }
        peak_in_flight = peak_in_flight.max(i + 1 - watch.ended());
        let r = rollout(
            i,
            if i < bad { BAD } else { GOOD },
            hold,
            &ground.namespace(i),
        )?;
        let ns = r.metadata.namespace.clone().unwrap_or_default();
        let rollouts = Api::<Rollout>::namespaced(local.clone(), &ns);
        if shape.existing {
            // The spec replaced, as StartRollout does.
            rollouts
                .patch(
                    &r.name_any(),
                    &PatchParams::default(),
                    &Patch::Merge(json!({"spec": r.spec})),
                )
                .await
                .with_context(|| format!("replacing the spec of rollout {i}"))?;
        } else {
            rollouts
                .create(&PostParams::default(), &r)
                .await
                .with_context(|| format!("creating rollout {i}"))?;
        }
    }
    let (outcomes, unfinished) = wait_done(
        &watch,
        n,
        Duration::from_secs(120 + n as u64 / 10) + hold.unwrap_or_default() * 2,
    )
    .await;
    let elapsed = began.elapsed();
    let exec_cpu = cpu(&pids);
    let other_cpu = probe::process_cpu_seconds("self");
    // The largest replica: what each must be sized for.
    let (mut exec_rss, mut exec_peak, mut grew) = (0, 0, 0);
    for ((pid, high), before) in pids.iter().zip(highest.iter()).zip(&rss_before) {
        let (rss, peak) = probe::memory(pid);
        let rss = rss.max(high.load(Ordering::Relaxed));
        exec_rss = exec_rss.max(rss);
        exec_peak = exec_peak.max(peak);
        grew = grew.max(rss.saturating_sub(*before));
    }
    sampler.abort();
    let (_, peak) = probe::memory("self");
    // From the trigger on.
    let mut requests = ground.requests(&admins, n).await?;
    for (kind, before) in requests_before {
        if let Some(count) = requests.get_mut(&kind) {
            *count -= before;
        }
    }
    requests.retain(|_, count| *count > 0.0);
    for executor in executors {
        executor.stop().await;
    }
    stop.cancel();
    ground.clean(shape.shards).await;

    let mut gate_share = Vec::new();
    let mut exec_share = Vec::new();
    let mut total = Vec::new();
    let mut rolled_back = 0;
    for (key, status) in &outcomes {
        if status.phase == Phase::RolledBack {
            rolled_back += 1;
        }
        let breach = status
            .steps
            .iter()
            .flat_map(|s| &s.evidence)
            .filter(|e| e.outcome == "FAILED")
            .filter_map(|e| e.time.parse::<prost_types::Timestamp>().ok())
            .filter_map(|t| SystemTime::try_from(t).ok())
            .min();
        if let (Some(breach), (Some(verdict), Some(drained))) = (breach, watch.decision(key)) {
            let span = |a: SystemTime, b: SystemTime| b.duration_since(a).unwrap_or_default();
            gate_share.push(span(breach, verdict));
            exec_share.push(span(verdict, drained));
            total.push(span(breach, drained));
        }
    }
    let succeeded = outcomes
        .values()
        .filter(|s| s.phase == Phase::Succeeded)
        .count();
    let advances = watch.advances();
    let releases = watch.release_times(began);
    // Two batches per healthy rollout; one for a rolled-back one.
    let steps = (2 * succeeded + rolled_back).max(1) as f64;
    Ok(SizeFigures {
        rollouts: n,
        unrelated: shape.unrelated,
        peak_in_flight,
        unfinished,
        failing: bad,
        succeeded,
        rolled_back,
        wall_seconds: elapsed.as_secs_f64(),
        advance_p50_ms: probe::quantile_ms(&advances, 0.5),
        advance_p99_ms: probe::quantile_ms(&advances, 0.99),
        advance_samples: advances.len(),
        release_p50_ms: probe::quantile_ms(&releases, 0.5),
        release_p99_ms: probe::quantile_ms(&releases, 0.99),
        decision_p50_ms: probe::quantile_ms(&total, 0.5),
        decision_p99_ms: probe::quantile_ms(&total, 0.99),
        decision_gate_p99_ms: probe::quantile_ms(&gate_share, 0.99),
        decision_executor_p50_ms: probe::quantile_ms(&exec_share, 0.5),
        decision_executor_p99_ms: probe::quantile_ms(&exec_share, 0.99),
        executor_cpu_seconds: exec_cpu - exec_cpu_before,
        other_cpu_seconds: other_cpu - other_cpu_before,
        executor_peak_rss_mib: exec_peak as f64 / 1_048_576.0,
        executor_high_mib: exec_rss as f64 / 1_048_576.0,
        executor_idle_mib: None,
        executor_above_idle_mib: None,
        executor_kib_per_rollout: grew as f64 / 1024.0 / n as f64,
        executors: shape.replicas,
        shards: shape.shards,
        peak_rss_mib: peak as f64 / 1_048_576.0,
        api_calls_per_step: requests.values().sum::<f64>() * n as f64 / steps,
        grpc_calls_per_step: grpc_calls.get() as f64 / steps,
        api_calls_per_rollout: requests,
    })
}

/// Waits until `n` Deployments in namespaces starting with `prefix` have
/// both replicas ready.
async fn wait_ready(client: &kube::Client, prefix: &str, n: usize) -> anyhow::Result<()> {
    let deployments: Api<k8s_openapi::api::apps::v1::Deployment> = Api::all(client.clone());
    let deadline = Instant::now() + Duration::from_secs(60 + n as u64 / 20);
    loop {
        let list = deployments.list(&Default::default()).await?;
        let ready = list
            .items
            .iter()
            .filter(|d| {
                d.metadata
                    .namespace
                    .as_deref()
                    // `--unrelated` workloads live in `other-*`.
                    .is_some_and(|ns| ns.starts_with(prefix) || ns.starts_with("other-"))
            })
            .filter(|d| d.status.as_ref().and_then(|s| s.ready_replicas) == Some(2))
            .count();
        if ready >= n {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("only {ready} of {n} Deployments became ready");
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// Waits until `n` rollouts have ended or `limit` has passed, reading the
/// harness's Rollout watch (listing 10,000 Rollouts ten times a second would
/// load the API server more than the rollouts do): the ended ones, and a
/// summary of the others (by phase and step state, with a message) when
/// some did not end.
async fn wait_done(
    watch: &Watch,
    n: usize,
    limit: Duration,
) -> (
    std::collections::HashMap<String, sluice_executor::crd::RolloutStatus>,
    Option<String>,
) {
    let deadline = Instant::now() + limit;
    loop {
        if watch.ended() >= n {
            return (watch.outcomes().0, None);
        }
        if Instant::now() > deadline {
            let (done, running) = watch.outcomes();
            let mut waiting: BTreeMap<String, (usize, String)> = BTreeMap::new();
            for status in running {
                let entry = waiting
                    .entry(format!("{:?}/{:?}", status.phase, status.step_state))
                    .or_default();
                entry.0 += 1;
                entry.1 = status.message;
            }
            let summary = waiting
                .iter()
                .map(|(state, (count, message))| format!("{count} {state} (e.g. {message:?})"))
                .collect::<Vec<_>>()
                .join("; ");
            let note = format!(
                "{} of {n} not ended after {} s: {summary}",
                n - done.len().min(n),
                limit.as_secs()
            );
            return (done, Some(note));
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}
