//! A running service binary, its log and its exit.

use std::{
    io::{BufRead, BufReader},
    net::SocketAddr,
    path::PathBuf,
    process::{Child, Command, ExitStatus, Stdio},
    sync::{Arc, Condvar, Mutex},
    time::{Duration, Instant},
};

/// How long a test waits for a process to log something before failing.
/// Generous: the machines are shared and slow, and this is a wait, not a
/// measurement.
pub const LOG_WAIT: Duration = Duration::from_secs(60);

/// The path of a workspace binary, built by `cargo build --workspace`.
///
/// # Panics
/// When the binary is missing, with the command that builds it.
pub fn binary(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    // target/<profile>/deps/<test> -> target/<profile>/<name>
    let dir = exe
        .parent()
        .and_then(|deps| deps.parent())
        .expect("target directory");
    let path = dir.join(name);
    assert!(
        path.is_file(),
        "{} is missing: run `cargo build --workspace --bins` first",
        path.display()
    );
    path
}

#[derive(Default)]
struct Log {
    lines: Vec<String>,
    closed: bool,
}

/// A service process; killed when dropped.
pub struct Service {
    child: Child,
    log: Arc<(Mutex<Log>, Condvar)>,
    /// The gRPC address it logged.
    pub grpc_addr: SocketAddr,
    /// The admin address it logged.
    pub admin_addr: SocketAddr,
}

impl Service {
    /// Starts `name` with `args` and JSON logs, and waits for its `listening` line.
    ///
    /// # Panics
    /// When it cannot start or exits before listening.
    pub fn start(name: &str, args: &[&str]) -> Self {
        let mut command = Command::new(binary(name));
        command
            .args([
                "--grpc-addr",
                "127.0.0.1:0",
                "--admin-addr",
                "127.0.0.1:0",
                "--log-format",
                "json",
            ])
            .args(args)
            .env_remove("RUST_LOG")
            .env_remove("KUBECONFIG");
        Self::spawn(name, command)
    }

    /// Starts `name` as a container would run it: exactly `args` and `env`,
    /// nothing inherited from this process (the container's command line
    /// and environment, read from a manifest). It must log JSON.
    ///
    /// # Panics
    /// As [`Service::start`].
    pub fn start_as_container(name: &str, args: &[String], env: &[(String, String)]) -> Self {
        let mut command = Command::new(binary(name));
        command
            .args(args)
            .env_clear()
            .envs(env.iter().map(|(k, v)| (k, v)));
        Self::spawn(name, command)
    }

    fn spawn(name: &str, mut command: Command) -> Self {
        let mut child = command
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("starting {name}: {e}"));
        let stderr = child.stderr.take().expect("piped stderr");
        let log = Arc::new((Mutex::new(Log::default()), Condvar::new()));
        let sink = Arc::clone(&log);
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                let (lock, ready) = &*sink;
                lock.lock().expect("log lock").lines.push(line);
                ready.notify_all();
            }
            let (lock, ready) = &*sink;
            lock.lock().expect("log lock").closed = true;
            ready.notify_all();
        });
        let mut service = Self {
            child,
            log,
            grpc_addr: SocketAddr::from(([0, 0, 0, 0], 0)),
            admin_addr: SocketAddr::from(([0, 0, 0, 0], 0)),
        };
        let listening = service.wait_for_log(|l| l["message"] == "listening");
        let addr = |key: &str| {
            listening[key]
                .as_str()
                .and_then(|a| a.parse().ok())
                .unwrap_or_else(|| panic!("{key} in {listening}"))
        };
        service.grpc_addr = addr("grpc_addr");
        service.admin_addr = addr("admin_addr");
        service
    }

    /// Waits until a JSON log line satisfies `matches`, and returns it.
    ///
    /// # Panics
    /// When the process ends or [`LOG_WAIT`] passes first; prints the log.
    pub fn wait_for_log(&self, matches: impl Fn(&serde_json::Value) -> bool) -> serde_json::Value {
        let (lock, ready) = &*self.log;
        let deadline = Instant::now() + LOG_WAIT;
        let mut log = lock.lock().expect("log lock");
        let mut seen = 0;
        loop {
            for line in &log.lines[seen..] {
                if let Ok(json) = serde_json::from_str::<serde_json::Value>(line)
                    && matches(&json)
                {
                    return json;
                }
            }
            seen = log.lines.len();
            let now = Instant::now();
            assert!(
                !log.closed && now < deadline,
                "log line not found; log:\n{}",
                log.lines.join("\n")
            );
            log = ready.wait_timeout(log, deadline - now).expect("log lock").0;
        }
    }

    /// Every log line so far.
    pub fn log(&self) -> Vec<String> {
        self.log.0.lock().expect("log lock").lines.clone()
    }

    /// Sends SIGKILL and reaps the process: a crash, with no chance to
    /// clean up.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Sends SIGTERM.
    pub fn terminate(&self) {
        let status = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        assert!(status.is_ok_and(|s| s.success()), "kill -TERM failed");
    }

    /// Waits for the process to exit, for at most `limit`; `None` if it did not.
    pub fn wait_exit(&mut self, limit: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The gRPC endpoint as a plaintext URI.
    pub fn uri(&self) -> String {
        format!("http://{}", self.grpc_addr)
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs `name` with `args` to completion (for flag errors): exit code and stderr.
pub fn run_to_exit(name: &str, args: &[&str]) -> (Option<i32>, String) {
    let output = Command::new(binary(name))
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("running {name}: {e}"));
    (
        output.status.code(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// Starts `sluice-sim` with `scenario` (a name or a file), writing its
/// kubeconfig to `kubeconfig`; the process and the address of its metrics
/// and query API, once it serves.
pub fn simulator(scenario: &str, kubeconfig: &str) -> (Service, String) {
    let sim = Service::start(
        "sluice-sim",
        &["--scenario", scenario, "--kubeconfig", kubeconfig],
    );
    let metrics = sim.wait_for_log(|l| l["message"] == "simulated cluster serving")["metrics_addr"]
        .as_str()
        .expect("the simulator logs its metrics address")
        .to_owned();
    (sim, metrics)
}

/// Starts `sluice-executor` against the given planner, gate and cluster,
/// with `extra` flags.
pub fn executor(planner: &Service, gate: &Service, kubeconfig: &str, extra: &[&str]) -> Service {
    let (planner, gate) = (planner.grpc_addr.to_string(), gate.grpc_addr.to_string());
    let mut args = vec![
        "--planner-addr",
        &planner,
        "--gate-addr",
        &gate,
        "--kubeconfig",
        kubeconfig,
    ];
    args.extend_from_slice(extra);
    Service::start("sluice-executor", &args)
}

/// A seeded moment between `min` and `min + spread`, the `k`th of a
/// series, so a test that kills or injects at "random" moments kills at
/// the same ones on every run and a failure can be replayed.
pub fn seeded_delay(seed: u64, k: u64, min: Duration, spread: Duration) -> Duration {
    let mut x = (seed ^ k.wrapping_mul(0x9E37_79B9_7F4A_7C15))
        .wrapping_mul(6_364_136_223_846_793_005)
        .wrapping_add(1_442_695_040_888_963_407);
    x ^= x >> 33;
    let spread = spread.as_millis().max(1) as u64;
    min + Duration::from_millis(x % spread)
}
