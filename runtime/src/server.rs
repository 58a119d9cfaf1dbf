//! Binds, serves and drains a Sluice gRPC server and its admin server.
//!
//! ```text
//! GrpcServer::new("planner", args)      what to serve
//!     .add_service(PlannerServer::new(..))
//!     .depends_on(Dependency::..)
//!     .bind().await?                    listeners bound, addresses known
//!     .serve(shutdown).await?           runs until `shutdown`, then drains
//! ```
//!
//! Every server gets, without asking: the standard gRPC health service,
//! server reflection (v1 and v1alpha, so older clients such as grpcurl and
//! Python's grpcio-reflection work), per-RPC metrics, TLS or mutual TLS when
//! configured, and a drain on shutdown.
//!
//! *Guarantees*: after `shutdown` completes the server stops accepting
//! connections, health turns NOT_SERVING, [`GrpcServer::shutdown_token`] is
//! cancelled so streaming handlers can end their streams, and `serve` returns
//! within the grace period even when a client holds a stream open.

use std::{convert::Infallible, net::SocketAddr, sync::Arc};

use axum::response::IntoResponse;
use prometheus_client::registry::Registry;
use tokio::{net::TcpListener, sync::watch};
pub use tokio_util::sync::CancellationToken;
use tonic::{
    server::NamedService,
    service::RoutesBuilder,
    transport::{Server, server::TcpIncoming},
};

use crate::{
    Error, admin,
    config::ServerArgs,
    health::{self, Dependency},
    metrics::GrpcMetrics,
};

/// A gRPC service a [`GrpcServer`] can serve: a generated server, with or
/// without an interceptor.
pub trait Service:
    tower::Service<
        http::Request<tonic::body::Body>,
        Error = Infallible,
        Response: IntoResponse,
        Future: Send + 'static,
    > + NamedService
    + Clone
    + Send
    + Sync
    + 'static
{
}

impl<S> Service for S where
    S: tower::Service<
            http::Request<tonic::body::Body>,
            Error = Infallible,
            Response: IntoResponse,
            Future: Send + 'static,
        > + NamedService
        + Clone
        + Send
        + Sync
        + 'static
{
}

/// A server being assembled: its services, dependencies and metrics.
pub struct GrpcServer {
    component: &'static str,
    args: ServerArgs,
    routes: RoutesBuilder,
    services: Vec<&'static str>,
    dependencies: Vec<Dependency>,
    registry: Registry,
    stop: CancellationToken,
    /// Tasks that end on their own once `stop` is cancelled and must end
    /// before the process does (a Lease to give up).
    finishing: Vec<tokio::task::JoinHandle<()>>,
}

impl std::fmt::Debug for GrpcServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GrpcServer")
            .field("component", &self.component)
            .field("services", &self.services)
            .field("dependencies", &self.dependencies)
            .finish_non_exhaustive()
    }
}

impl GrpcServer {
    /// A server for `component` (e.g. `planner`, used in logs) with no services yet.
    pub fn new(component: &'static str, args: ServerArgs) -> Self {
        Self {
            component,
            args,
            routes: RoutesBuilder::default(),
            services: Vec::new(),
            dependencies: Vec::new(),
            registry: Registry::with_labels(
                [(
                    std::borrow::Cow::Borrowed("component"),
                    std::borrow::Cow::Borrowed(component),
                )]
                .into_iter(),
            ),
            stop: CancellationToken::new(),
            finishing: Vec::new(),
        }
    }

    /// Waits for `task` at shutdown, after the drain and within the grace
    /// period: a task that ends on its own once the shutdown token is
    /// cancelled and must finish its last writes before the process exits.
    pub fn finishes_with(mut self, task: tokio::task::JoinHandle<()>) -> Self {
        self.finishing.push(task);
        self
    }

    /// Adds a gRPC service; its health follows the server's dependencies.
    pub fn add_service<S: Service>(mut self, service: S) -> Self {
        self.services.push(S::NAME);
        self.routes.add_service(service);
        self
    }

    /// Adds something the server needs before it reports SERVING.
    pub fn depends_on(mut self, dependency: Dependency) -> Self {
        self.dependencies.push(dependency);
        self
    }

    /// The registry served at `/metrics`, for the service's own metrics.
    pub fn registry_mut(&mut self) -> &mut Registry {
        &mut self.registry
    }

    /// Cancelled when shutdown starts; streaming handlers select on it to end
    /// their streams cleanly.
    pub fn shutdown_token(&self) -> CancellationToken {
        self.stop.clone()
    }

    /// Binds the gRPC and admin listeners and logs the addresses bound.
    ///
    /// # Errors
    /// [`Error::Bind`] naming the flag and address.
    pub async fn bind(self) -> Result<BoundServer, Error> {
        let grpc = TcpListener::bind(self.args.grpc_addr)
            .await
            .map_err(|source| Error::Bind {
                flag: "--grpc-addr",
                addr: self.args.grpc_addr,
                source,
            })?;
        let admin = TcpListener::bind(self.args.admin_addr)
            .await
            .map_err(|source| Error::Bind {
                flag: "--admin-addr",
                addr: self.args.admin_addr,
                source,
            })?;
        let local = |listener: &TcpListener| {
            listener.local_addr().map_err(|source| Error::Io {
                context: "reading bound address",
                source,
            })
        };
        let grpc_addr = local(&grpc)?;
        let admin_addr = local(&admin)?;
        tracing::info!(
            component = self.component,
            %grpc_addr,
            %admin_addr,
            tls = self.args.tls.enabled(),
            mutual_tls = self.args.tls.tls_client_ca.is_some(),
            "listening"
        );
        Ok(BoundServer {
            server: self,
            grpc,
            admin,
            grpc_addr,
            admin_addr,
        })
    }
}

/// A server whose listeners are bound.
pub struct BoundServer {
    server: GrpcServer,
    grpc: TcpListener,
    admin: TcpListener,
    grpc_addr: SocketAddr,
    admin_addr: SocketAddr,
}

impl std::fmt::Debug for BoundServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BoundServer")
            .field("server", &self.server)
            .field("grpc_addr", &self.grpc_addr)
            .field("admin_addr", &self.admin_addr)
            .finish_non_exhaustive()
    }
}

impl BoundServer {
    /// The address the gRPC server listens on.
    pub fn grpc_addr(&self) -> SocketAddr {
        self.grpc_addr
    }

    /// The address the admin HTTP server listens on.
    pub fn admin_addr(&self) -> SocketAddr {
        self.admin_addr
    }

    /// Serves until `shutdown` completes, then drains for at most the grace period.
    ///
    /// # Errors
    /// [`Error::Transport`] when TLS cannot be set up or the server fails,
    /// [`Error::Reflection`] when the descriptors are broken.
    pub async fn serve(self, shutdown: impl Future<Output = ()>) -> Result<(), Error> {
        let BoundServer {
            server,
            grpc,
            admin,
            ..
        } = self;
        let GrpcServer {
            component,
            args,
            mut routes,
            services,
            dependencies,
            mut registry,
            stop,
            finishing,
        } = server;

        let (reporter, health_service) = tonic_health::server::health_reporter();
        // Known and NOT_SERVING from the first request on, so that a client
        // never sees NOT_FOUND for a service that is merely starting.
        reporter
            .set_service_status("", tonic_health::ServingStatus::NotServing)
            .await;
        for service in &services {
            reporter
                .set_service_status(*service, tonic_health::ServingStatus::NotServing)
                .await;
        }
        routes.add_service(health_service);
        // Reflection lists what this server serves, not every service the
        // descriptors know of.
        let reflection = || {
            let mut builder = tonic_reflection::server::Builder::configure()
                .register_encoded_file_descriptor_set(sluice_proto::FILE_DESCRIPTOR_SET)
                .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
                .with_service_name("grpc.health.v1.Health")
                .with_service_name("grpc.reflection.v1.ServerReflection")
                .with_service_name("grpc.reflection.v1alpha.ServerReflection");
            for service in &services {
                builder = builder.with_service_name(*service);
            }
            builder
        };
        routes.add_service(reflection().build_v1()?);
        routes.add_service(reflection().build_v1alpha()?);

        let metrics = GrpcMetrics::register(&mut registry);
        let (ready_tx, ready_rx) = watch::channel(false);
        let admin_tls = crate::http::tls_acceptor(&args.tls)?;
        let admin_task = tokio::spawn(admin::serve(
            admin,
            admin_tls,
            Arc::new(registry),
            ready_rx,
            stop.clone(),
        ));
        let health_task = tokio::spawn(health::monitor(
            dependencies,
            reporter,
            services,
            ready_tx,
            stop.clone(),
        ));

        let mut builder = Server::builder();
        if let Some(tls) = args.tls.server_config()? {
            builder = builder.tls_config(tls)?;
        }
        // Without TCP_NODELAY a small reply waits for the peer's delayed ACK
        // (about 40 ms on Linux); keepalive finds dead peers of long streams.
        let incoming = TcpIncoming::from(grpc)
            .with_nodelay(Some(true))
            .with_keepalive(Some(std::time::Duration::from_secs(30)));
        // The metrics layer sits outermost so it times everything the server
        // does for a request, including authentication interceptors.
        let grpc_server = builder
            .layer(metrics.layer())
            .add_routes(routes.routes())
            .serve_with_incoming_shutdown(incoming, stop.clone().cancelled_owned());
        tokio::pin!(grpc_server);

        tokio::select! {
            result = &mut grpc_server => {
                stop.cancel();
                result?;
                return Ok(());
            }
            () = shutdown => {}
        }
        tracing::info!(component, grace = ?args.shutdown_grace, "draining");
        stop.cancel();
        match tokio::time::timeout(args.shutdown_grace, grpc_server).await {
            Ok(result) => result?,
            Err(_) => tracing::warn!(
                component,
                "grace period over with streams still open; closing them"
            ),
        }
        // Both end promptly once `stop` is cancelled; their errors are not
        // worth failing a clean shutdown for, but they are logged.
        if let Ok(Err(error)) = admin_task.await {
            tracing::warn!(%error, "admin server ended with an error");
        }
        let _ = health_task.await;
        for task in finishing {
            if tokio::time::timeout(args.shutdown_grace, task)
                .await
                .is_err()
            {
                tracing::warn!(component, "grace period over with a task still finishing");
            }
        }
        tracing::info!(component, "stopped");
        Ok(())
    }
}
