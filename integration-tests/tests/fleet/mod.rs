//! The simulator's agent as a real control plane's node fleet, shared by
//! the tests against one: its nodes, the traffic through the cluster's own
//! Services and routers, and the metrics a gate reads.

use sluice_sim::{
    agent::{self, AgentOptions},
    cluster::profile::{Profile, Profiles},
    metrics::traffic::LoadProfile,
};
use tokio_util::sync::CancellationToken;

/// Pods start fast; `registry.example/web:2.0-bad` answers 30% errors.
fn profiles() -> Profiles {
    let fast = Profile {
        start_min_seconds: 0.2,
        start_max_seconds: 0.5,
        ready_after_seconds: 0.2,
        ..Profile::default()
    };
    let bad = Profile {
        error_ratio: 0.3,
        ..fast.clone()
    };
    Profiles {
        by_image: [("registry.example/web:2.0-bad".to_owned(), bad)].into(),
        default: fast,
    }
}

/// Two nodes of 50 pods on the cluster `client` reaches, the `loads` (YAML
/// list of load profiles) sent through its objects, until `stop`. Returns
/// the address of the Prometheus-compatible metrics and query endpoint.
pub(crate) async fn start(
    client: &kube::Client,
    loads: &str,
    stop: &CancellationToken,
) -> std::net::SocketAddr {
    let options = AgentOptions {
        nodes: 2,
        capacity: 50,
        profiles: profiles(),
        seed: 1,
    };
    let (agent_stop, agent_client) = (stop.clone(), client.clone());
    tokio::spawn(async move {
        agent::run(agent_client, options, agent_stop)
            .await
            .expect("the agent registers its nodes")
    });
    let loads: Vec<LoadProfile> = serde_yaml::from_str(loads).expect("load profiles");
    let metrics = agent::traffic(client.clone(), profiles(), loads, stop.clone())
        .await
        .expect("the agent's traffic starts");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("address");
    tokio::spawn(axum::serve(listener, sluice_sim::metrics::http::router(metrics)).into_future());
    addr
}
