//! A real Prometheus (Debian's `prometheus` package) on loopback, and an
//! exporter whose series a test sets, for Prometheus to scrape.

use std::{
    collections::BTreeMap,
    net::SocketAddr,
    process::{Child, Command, Stdio},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpListener,
};

/// How one revision of a workload behaves, as the exporter reports it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Behaviour {
    /// Requests per second.
    pub rps: f64,
    /// Share of requests answered 500.
    pub error_ratio: f64,
    /// Latency of every request, in seconds.
    pub latency: f64,
}

/// (namespace, workload, revision).
type Key = (String, String, String);

/// An HTTP `/metrics` endpoint serving request counters and latency
/// histograms that grow with wall time at the rates a test sets.
#[derive(Clone)]
pub struct Exporter {
    /// Where it listens.
    pub addr: SocketAddr,
    series: Arc<Mutex<BTreeMap<Key, (Behaviour, Instant)>>>,
}

/// Latency buckets the exporter writes, in seconds.
pub const BUCKETS: [f64; 10] = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0];

impl Exporter {
    /// Starts the exporter on a free loopback port.
    pub async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind exporter");
        let exporter = Self {
            addr: listener.local_addr().expect("addr"),
            series: Arc::default(),
        };
        let served = exporter.clone();
        tokio::spawn(async move {
            while let Ok((mut socket, _)) = listener.accept().await {
                let body = served.render();
                tokio::spawn(async move {
                    let mut buffer = [0u8; 2048];
                    let _ = socket.read(&mut buffer).await;
                    let reply = format!(
                        "HTTP/1.1 200 OK\r\ncontent-type: text/plain; version=0.0.4\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                        body.len()
                    );
                    let _ = socket.write_all(reply.as_bytes()).await;
                });
            }
        });
        exporter
    }

    /// Sets how a revision behaves from now on.
    pub fn set(&self, namespace: &str, workload: &str, revision: &str, behaviour: Behaviour) {
        let key = (
            namespace.to_owned(),
            workload.to_owned(),
            revision.to_owned(),
        );
        self.series
            .lock()
            .expect("series")
            .insert(key, (behaviour, Instant::now()));
    }

    fn render(&self) -> String {
        use std::fmt::Write as _;
        let series = self.series.lock().expect("series");
        let mut out = String::from("# TYPE http_requests_total counter\n");
        for ((ns, wl, rev), (b, since)) in series.iter() {
            let total = b.rps * since.elapsed().as_secs_f64();
            let labels =
                format!(r#"namespace="{ns}",workload="{wl}",revision="{rev}",pod="{wl}-{rev}-0""#);
            let _ = writeln!(
                out,
                "http_requests_total{{{labels},code=\"200\"}} {}",
                total * (1.0 - b.error_ratio)
            );
            let _ = writeln!(
                out,
                "http_requests_total{{{labels},code=\"500\"}} {}",
                total * b.error_ratio
            );
        }
        out.push_str("# TYPE http_request_duration_seconds histogram\n");
        for ((ns, wl, rev), (b, since)) in series.iter() {
            let total = b.rps * since.elapsed().as_secs_f64();
            let labels =
                format!(r#"namespace="{ns}",workload="{wl}",revision="{rev}",pod="{wl}-{rev}-0""#);
            for le in BUCKETS {
                let count = if b.latency <= le { total } else { 0.0 };
                let _ = writeln!(
                    out,
                    "http_request_duration_seconds_bucket{{{labels},le=\"{le}\"}} {count}"
                );
            }
            let _ = writeln!(
                out,
                "http_request_duration_seconds_bucket{{{labels},le=\"+Inf\"}} {total}"
            );
            let _ = writeln!(
                out,
                "http_request_duration_seconds_sum{{{labels}}} {}",
                total * b.latency
            );
            let _ = writeln!(
                out,
                "http_request_duration_seconds_count{{{labels}}} {total}"
            );
        }
        out
    }
}

/// A Prometheus server; stopped when dropped.
pub struct Prometheus {
    child: Child,
    _dir: tempfile::TempDir,
    /// Its base URL.
    pub url: String,
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port()
}

impl Prometheus {
    /// Starts Prometheus scraping `targets` every second, storage in a
    /// temporary folder, and waits until it is ready.
    ///
    /// # Panics
    /// When `prometheus` is not installed (`scripts/test` installs it) or
    /// does not become ready.
    pub async fn start(targets: &[SocketAddr]) -> Self {
        Self::serve(tempfile::tempdir().expect("tempdir"), targets).await
    }

    /// Prometheus with its storage in `dir/data`, scraping `targets`.
    async fn serve(dir: tempfile::TempDir, targets: &[SocketAddr]) -> Self {
        let config = dir.path().join("prometheus.yml");
        let targets: Vec<String> = targets.iter().map(|t| format!("'{t}'")).collect();
        std::fs::write(
            &config,
            format!(
                "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nscrape_configs:\n  - job_name: test\n    static_configs:\n      - targets: [{}]\n",
                targets.join(", ")
            ),
        )
        .expect("write config");
        let port = free_port();
        let child = Command::new("prometheus")
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .arg("--log.level=warn")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("prometheus must be installed: scripts/test installs Debian's package");
        let prometheus = Self {
            child,
            _dir: dir,
            url: format!("http://127.0.0.1:{port}"),
        };
        let _ = rustls::crypto::ring::default_provider().install_default();
        let client = reqwest::Client::new();
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let ready = client
                .get(format!("{}/-/ready", prometheus.url))
                .send()
                .await;
            if ready.is_ok_and(|r| r.status().is_success()) {
                return prometheus;
            }
            assert!(Instant::now() < deadline, "prometheus did not become ready");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Prometheus {
    /// Starts Prometheus over stored samples only, scraping nothing: the
    /// `OpenMetrics` text `samples` (with timestamps, ending `# EOF`) is
    /// written into its storage first with `promtool tsdb
    /// create-blocks-from openmetrics`, as a backfill is done.
    ///
    /// # Panics
    /// When `promtool` refuses the samples, or Prometheus does not start.
    pub async fn with_samples(samples: &str) -> Self {
        let staging = tempfile::tempdir().expect("tempdir");
        let input = staging.path().join("samples.om");
        std::fs::write(&input, samples).expect("write samples");
        let dir = tempfile::tempdir().expect("tempdir");
        let data = dir.path().join("data");
        let out = Command::new("promtool")
            .args(["tsdb", "create-blocks-from", "openmetrics"])
            .arg(&input)
            .arg(&data)
            .output()
            .expect("promtool comes with Debian's prometheus package");
        assert!(
            out.status.success(),
            "promtool refused the samples: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Self::serve(dir, &[]).await
    }
}
