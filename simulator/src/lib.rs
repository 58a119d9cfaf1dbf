//! The simulator: a synthetic cluster so that everything runs, is tested and
//! is benchmarked on one machine.
//!
//! # Layout
//! - [`Config`]: flags and environment.
//! - [`agent`]: the simulator as the node fleet of a real cluster.
//! - [`api`]: the Kubernetes API server.
//! - [`cluster`]: controllers, scheduler and kubelets that make it behave.
//! - [`metrics`]: traffic, per-pod metrics and a Prometheus-compatible API.
//! - [`scenario`]: scenario files and running them.
//! - [`serve`]: the `sluice.v1.Simulator` control API.

pub mod agent;
pub use sluice_sim_api as api;
pub use sluice_sim_cluster as cluster;
pub use sluice_sim_metrics as metrics;
pub mod mirror;
pub mod scenario;

use std::sync::{Arc, RwLock};

use clap::Parser;
use sluice_proto::v1::{
    self as pb,
    simulator_server::{Simulator, SimulatorServer},
};
use sluice_runtime::{
    Error, cli::ServiceConfig, config::ServerArgs, server::GrpcServer, shutdown::Signal,
};
use tonic::{Request, Response, Status};

/// Flags and `SLUICE_*` variables of `sluice-sim`.
#[derive(Debug, Clone, Parser)]
#[command(
    name = "sluice-sim",
    version,
    about = "Sluice simulator: a synthetic cluster with traffic and metrics"
)]
pub struct Config {
    /// Options every Sluice server takes.
    #[command(flatten)]
    pub server: ServerArgs,

    /// Address of the simulated cluster's Kubernetes API; port 0 picks a free port.
    #[arg(long, env = "SLUICE_KUBE_ADDR", default_value = "127.0.0.1:0")]
    pub kube_addr: std::net::SocketAddr,

    /// Where to write a kubeconfig for the simulated cluster once it serves.
    #[arg(long, env = "SLUICE_KUBECONFIG")]
    pub kubeconfig: Option<std::path::PathBuf>,

    /// Address of `/metrics` (per-pod traffic metrics) and the Prometheus
    /// query API; port 0 picks a free port.
    #[arg(long, env = "SLUICE_METRICS_ADDR", default_value = "127.0.0.1:0")]
    pub metrics_addr: std::net::SocketAddr,

    /// Agent mode: act as the node fleet of the cluster this kubeconfig
    /// names (register nodes and renew their leases, bind and run its
    /// pods), instead of simulating a cluster in memory. With `--scenario`,
    /// the scenario's versions drive the pods and its load is split over
    /// them through the cluster's own Services and routers, served on
    /// `--metrics-addr`; its manifests and nodes are not used.
    #[arg(long, env = "SLUICE_AGENT_KUBECONFIG")]
    pub agent_kubeconfig: Option<std::path::PathBuf>,

    /// Nodes the agent registers.
    #[arg(long, env = "SLUICE_AGENT_NODES", default_value_t = 3)]
    pub agent_nodes: u32,

    /// A built-in scenario (healthy, bad-canary, slow-canary, crashloop,
    /// prometheus-outage, big-cluster) or a scenario file; an empty cluster
    /// when unset.
    #[arg(long, env = "SLUICE_SCENARIO")]
    pub scenario: Option<String>,
}

impl ServiceConfig for Config {
    fn server(&self) -> &ServerArgs {
        &self.server
    }
}

/// Serves the simulated cluster (Kubernetes API, metrics) and its control
/// API until `shutdown` completes.
///
/// # Errors
/// A scenario that does not load, an address that cannot be bound; see
/// also [`sluice_runtime::server::BoundServer::serve`].
pub async fn serve(config: Config, shutdown: Signal) -> Result<(), Error> {
    if let Some(path) = &config.agent_kubeconfig {
        return serve_agent(&config, path, shutdown).await;
    }
    let scenario = match &config.scenario {
        Some(name) => scenario::Scenario::load(name).map_err(|e| Error::Config {
            flag: "--scenario",
            message: e.to_string(),
        })?,
        None => scenario::Scenario::parse("empty", "name: empty").map_err(|e| Error::Config {
            flag: "--scenario",
            message: e.to_string(),
        })?,
    };
    let simulation = scenario::Simulation::start(scenario).map_err(|e| Error::Io {
        context: "starting the scenario",
        source: std::io::Error::other(e.message),
    })?;
    let current = Arc::new(RwLock::new(simulation));
    let (kube, kube_addr) = bind("--kube-addr", config.kube_addr).await?;
    let (metrics, metrics_addr) = bind("--metrics-addr", config.metrics_addr).await?;
    let tls = sluice_runtime::http::tls_acceptor(&config.server.tls)?;
    let server = GrpcServer::new("simulator", config.server.clone());
    let stop = server.shutdown_token();
    tokio::spawn(sluice_runtime::http::serve(
        kube,
        tls.clone(),
        forward(current.clone(), |s| s.api.router()),
        stop.clone(),
    ));
    tokio::spawn(sluice_runtime::http::serve(
        metrics,
        tls,
        forward(current.clone(), |s| {
            metrics::http::router(s.metrics.clone())
        }),
        stop,
    ));
    if let Some(path) = &config.kubeconfig {
        let text = kubeconfig(kube_addr, &config.server.tls);
        std::fs::write(path, text).map_err(|source| Error::Io {
            context: "writing --kubeconfig",
            source,
        })?;
    }
    tracing::info!(%kube_addr, %metrics_addr, kubeconfig = ?config.kubeconfig, scenario = ?config.scenario, "simulated cluster serving");
    server
        .add_service(SimulatorServer::new(SimulatorService { current }))
        .bind()
        .await?
        .serve(shutdown)
        .await
}

/// Binds the address `flag` gave; the listener and the address it got.
async fn bind(
    flag: &'static str,
    addr: std::net::SocketAddr,
) -> Result<(tokio::net::TcpListener, std::net::SocketAddr), Error> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|source| Error::Bind { flag, addr, source })?;
    let local = listener.local_addr().map_err(|source| Error::Io {
        context: "reading bound address",
        source,
    })?;
    Ok((listener, local))
}

/// Agent mode: the node fleet of another cluster, with health served.
async fn serve_agent(
    config: &Config,
    path: &std::path::Path,
    shutdown: Signal,
) -> Result<(), Error> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let flag = "--agent-kubeconfig";
    let file = kube::config::Kubeconfig::read_from(path).map_err(|e| Error::Config {
        flag,
        message: format!("{}: {e}", path.display()),
    })?;
    let kube_config = kube::config::Config::from_custom_kubeconfig(file, &Default::default())
        .await
        .map_err(|e| Error::Config {
            flag,
            message: format!("{}: {e}", path.display()),
        })?;
    let client = kube::Client::try_from(kube_config).map_err(|e| Error::Config {
        flag,
        message: e.to_string(),
    })?;
    // A scenario gives the versions' behaviour and the load; its manifests
    // and nodes are the real cluster's business, not the agent's.
    let (profiles, loads, seed) = match &config.scenario {
        Some(name) => {
            let s = scenario::Scenario::load(name).map_err(|e| Error::Config {
                flag: "--scenario",
                message: e.to_string(),
            })?;
            (s.profiles(), s.load.clone(), s.seed.max(1))
        }
        None => (Default::default(), Vec::new(), 1),
    };
    let (listener, metrics_addr) = bind("--metrics-addr", config.metrics_addr).await?;
    let server = GrpcServer::new("simulator-agent", config.server.clone());
    let stop = server.shutdown_token();
    let metrics = agent::traffic(client.clone(), profiles.clone(), loads, stop.clone())
        .await
        .map_err(|e| Error::Io {
            context: "starting the agent's traffic",
            source: std::io::Error::other(e.message),
        })?;
    tokio::spawn(sluice_runtime::http::serve(
        listener,
        sluice_runtime::http::tls_acceptor(&config.server.tls)?,
        metrics::http::router(metrics),
        stop.clone(),
    ));
    let options = agent::AgentOptions {
        nodes: config.agent_nodes,
        capacity: cluster::kubelet::DEFAULT_CAPACITY,
        profiles,
        seed,
    };
    let agent_client = client.clone();
    tokio::spawn(async move {
        if let Err(error) = agent::run(agent_client, options, stop).await {
            tracing::error!(%error, "the agent stopped");
        }
    });
    tracing::info!(nodes = config.agent_nodes, kubeconfig = %path.display(), %metrics_addr, "agent serving the cluster's pods");
    let api_server =
        sluice_runtime::health::Dependency::new("the cluster's API server", move || {
            let client = client.clone();
            async move {
                client
                    .apiserver_version()
                    .await
                    .map(|_| ())
                    .map_err(|e| e.to_string())
            }
        });
    server
        .depends_on(api_server)
        .bind()
        .await?
        .serve(shutdown)
        .await
}

type Current = Arc<RwLock<scenario::Simulation>>;

/// A router that sends each request to the current simulation's router,
/// so that loading a scenario swaps the cluster behind the same address.
fn forward(current: Current, make: fn(&scenario::Simulation) -> axum::Router) -> axum::Router {
    use tower::ServiceExt;
    axum::Router::new().fallback(move |request: axum::extract::Request| {
        let router = current.read().map(|s| make(&s)).unwrap_or_default();
        async move {
            router
                .oneshot(request)
                .await
                .unwrap_or_else(|never| match never {})
        }
    })
}

/// A kubeconfig pointing at the simulated cluster.
pub fn kubeconfig(addr: std::net::SocketAddr, tls: &sluice_runtime::config::TlsArgs) -> String {
    let (scheme, ca) = match (&tls.tls_cert, &tls.tls_ca) {
        (Some(_), Some(ca)) => (
            "https",
            format!("\n    certificate-authority: {}", ca.display()),
        ),
        (Some(_), None) => ("https", "\n    insecure-skip-tls-verify: true".to_owned()),
        _ => ("http", String::new()),
    };
    let user = match (&tls.tls_cert, &tls.tls_key) {
        (Some(cert), Some(key)) if tls.tls_client_ca.is_some() => {
            format!(
                "\n    client-certificate: {}\n    client-key: {}",
                cert.display(),
                key.display()
            )
        }
        // Over https without a client certificate kubectl would prompt for a
        // password; the simulator accepts any bearer token.
        (Some(_), _) => "\n    token: sluice-simulator".to_owned(),
        _ => " {}".to_owned(),
    };
    format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: sluice-sim\n  cluster:\n    server: {scheme}://{addr}{ca}\ncontexts:\n- name: sluice-sim\n  context:\n    cluster: sluice-sim\n    user: sluice-sim\n    namespace: default\ncurrent-context: sluice-sim\nusers:\n- name: sluice-sim\n  user:{user}\n"
    )
}

/// The simulator's control service.
#[derive(Debug, Clone)]
pub struct SimulatorService {
    current: Current,
}

impl SimulatorService {
    fn simulation(&self) -> Result<scenario::Simulation, Status> {
        self.current
            .read()
            .map(|s| s.clone())
            .map_err(|_| Status::internal("simulation state poisoned"))
    }
}

fn fault_from_proto(fault: &pb::Fault) -> Result<scenario::FaultSpec, Status> {
    use pb::fault::Kind;
    use scenario::FaultSpec as F;
    let kind = fault.kind.as_ref().ok_or_else(|| Status::invalid_argument("fault.kind: one of apiErrors, apiLatency, watchLag, dropWatches, prometheusUnavailable, nodeLoss, versionDegradation is required"))?;
    Ok(match kind {
        Kind::ApiErrors(e) => {
            if !(0.0..=1.0).contains(&e.rate) {
                return Err(Status::invalid_argument(format!(
                    "fault.apiErrors.rate: must be between 0 and 1, got {}",
                    e.rate
                )));
            }
            let code = u16::try_from(e.code)
                .ok()
                .filter(|c| (400..600).contains(c))
                .ok_or_else(|| {
                    Status::invalid_argument(format!(
                        "fault.apiErrors.code: must be an HTTP error code, got {}",
                        e.code
                    ))
                })?;
            F::ApiErrors {
                verb: e.verb.clone(),
                resource: e.resource.clone(),
                rate: e.rate,
                code,
            }
        }
        Kind::ApiLatency(l) => F::ApiLatency {
            verb: l.verb.clone(),
            resource: l.resource.clone(),
            latency_ms: l.latency.as_ref().map_or(0, |d| {
                (d.seconds.max(0) as u64) * 1000 + (d.nanos.max(0) as u64) / 1_000_000
            }),
        },
        Kind::WatchLag(l) => F::WatchLag {
            resource: l.resource.clone(),
            lag_ms: l.lag.as_ref().map_or(0, |d| {
                (d.seconds.max(0) as u64) * 1000 + (d.nanos.max(0) as u64) / 1_000_000
            }),
        },
        Kind::DropWatches(d) => F::DropWatches {
            resource: d.resource.clone(),
        },
        Kind::PrometheusUnavailable(_) => F::PrometheusUnavailable {},
        Kind::NodeLoss(n) => F::NodeLoss {
            node: n.node.clone(),
        },
        Kind::VersionDegradation(v) => F::VersionDegradation {
            image: v.version.clone(),
            error_ratio: v.error_ratio,
            added_latency_ms: v.added_latency.as_ref().map_or(0.0, |d| {
                d.seconds as f64 * 1000.0 + f64::from(d.nanos) / 1e6
            }),
        },
    })
}

#[tonic::async_trait]
impl Simulator for SimulatorService {
    async fn load_scenario(
        &self,
        request: Request<pb::LoadScenarioRequest>,
    ) -> Result<Response<pb::LoadScenarioResponse>, Status> {
        let request = request.into_inner();
        let mut scenario = match &request.source {
            Some(pb::load_scenario_request::Source::Name(name)) => scenario::Scenario::load(name),
            Some(pb::load_scenario_request::Source::Yaml(yaml)) => {
                scenario::Scenario::parse("request", yaml)
            }
            None => {
                return Err(Status::invalid_argument(
                    "source: a scenario name or YAML is required",
                ));
            }
        }
        .map_err(|e| Status::invalid_argument(e.to_string()))?;
        if request.seed != 0 {
            scenario.seed = request.seed;
        }
        if request.speed != 0.0 {
            if !(request.speed > 0.0 && request.speed.is_finite()) {
                return Err(Status::invalid_argument(format!(
                    "speed: must be above 0, got {}",
                    request.speed
                )));
            }
            scenario.speed = request.speed;
        }
        let summary = pb::LoadScenarioResponse {
            scenario: scenario.name.clone(),
            seed: scenario.seed,
            speed: scenario.speed,
            workloads: scenario
                .manifests
                .iter()
                .filter(|m| {
                    matches!(
                        m["kind"].as_str(),
                        Some("Deployment" | "StatefulSet" | "DaemonSet")
                    )
                })
                .count() as u32,
            nodes: scenario.nodes.count,
        };
        let next = scenario::Simulation::start(scenario).map_err(|e| {
            Status::invalid_argument(format!(
                "the scenario's manifests were refused: {}",
                e.message
            ))
        })?;
        let previous = {
            let mut current = self
                .current
                .write()
                .map_err(|_| Status::internal("simulation state poisoned"))?;
            std::mem::replace(&mut *current, next)
        };
        previous.stop();
        Ok(Response::new(summary))
    }

    async fn get_state(
        &self,
        request: Request<pb::GetStateRequest>,
    ) -> Result<Response<pb::ClusterState>, Status> {
        let namespace = request.into_inner().namespace;
        let sim = self.simulation()?;
        Ok(Response::new(state::of(&sim, &namespace)))
    }

    async fn inject_fault(
        &self,
        request: Request<pb::InjectFaultRequest>,
    ) -> Result<Response<pb::InjectFaultResponse>, Status> {
        let fault = request
            .into_inner()
            .fault
            .ok_or_else(|| Status::invalid_argument("fault: required"))?;
        if fault.id.is_empty() {
            return Err(Status::invalid_argument(
                "fault.id: required, so the fault can be cleared",
            ));
        }
        let spec = fault_from_proto(&fault)?;
        let sim = self.simulation()?;
        sim.inject(&fault.id, spec);
        if let Some(d) = &fault.duration {
            let (sim, id) = (sim.clone(), fault.id.clone());
            let after = std::time::Duration::new(d.seconds.max(0) as u64, d.nanos.max(0) as u32);
            tokio::spawn(async move {
                tokio::time::sleep(after).await;
                sim.clear(&[id]);
            });
        }
        Ok(Response::new(pb::InjectFaultResponse {
            fault: Some(fault),
        }))
    }

    async fn clear_faults(
        &self,
        request: Request<pb::ClearFaultsRequest>,
    ) -> Result<Response<pb::ClearFaultsResponse>, Status> {
        let ids = request.into_inner().ids;
        let cleared = self.simulation()?.clear(&ids);
        Ok(Response::new(pb::ClearFaultsResponse { cleared }))
    }
}

mod state;
