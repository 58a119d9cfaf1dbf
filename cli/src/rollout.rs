//! `sluice rollout ...`: the Rollouts API from the command line.

use std::{io::IsTerminal as _, path::PathBuf, process::ExitCode};

use anyhow::Context as _;
use clap::{Args, Subcommand, ValueEnum};
use serde_json::{Value, json};
use sluice_proto::v1::{self as pb, rollouts_client::RolloutsClient};
use tonic::{Request, transport::Endpoint};

/// Where the executor is and who is calling.
#[derive(Debug, Args)]
pub(crate) struct Connection {
    /// The executor's gRPC address.
    #[arg(
        long,
        env = "SLUICE_EXECUTOR_ADDR",
        default_value = "127.0.0.1:7100",
        global = true
    )]
    executor: String,
    /// A file holding the bearer token, when the executor checks tokens.
    #[arg(long, env = "SLUICE_TOKEN_FILE", global = true)]
    token_file: Option<PathBuf>,
    /// The rollout's namespace.
    #[arg(
        short = 'n',
        long,
        env = "SLUICE_NAMESPACE",
        default_value = "default",
        global = true
    )]
    namespace: String,
    /// Output format.
    #[arg(short = 'o', long, value_enum, default_value_t = Format::Table, global = true)]
    output: Format,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Format {
    Table,
    Json,
    Yaml,
}

/// `sluice rollout` subcommands.
#[derive(Debug, Subcommand)]
pub(crate) enum RolloutCommand {
    /// Release new images of a Deployment with a strategy file.
    ///
    /// Example: sluice rollout start web --image web=registry.example/web:2.0 -f strategy.yaml
    Start {
        /// The rollout's name (and, unless --workload, the Deployment's).
        name: String,
        /// The Deployment to release; the rollout's name by default.
        #[arg(long)]
        workload: Option<String>,
        /// A new image: CONTAINER=IMAGE; repeatable.
        #[arg(long = "image", required = true, value_parser = parse_image)]
        images: Vec<(String, String)>,
        /// The strategy (YAML, as `sluice plan` reads it).
        #[arg(short = 'f', long = "file")]
        strategy: Option<PathBuf>,
    },
    /// Show one rollout.
    Get {
        /// The rollout.
        name: String,
    },
    /// List rollouts (every namespace you may read with --all-namespaces).
    List {
        /// Every namespace.
        #[arg(short = 'A', long)]
        all_namespaces: bool,
    },
    /// Follow a rollout until it ends.
    Watch {
        /// The rollout.
        name: String,
    },
    /// End the current pause (or every remaining step with --full).
    Promote {
        /// The rollout.
        name: String,
        /// Skip every remaining step.
        #[arg(long)]
        full: bool,
    },
    /// Hold a rollout where it is.
    Pause {
        /// The rollout.
        name: String,
    },
    /// Continue a held rollout.
    Resume {
        /// The rollout.
        name: String,
    },
    /// Roll back now.
    Abort {
        /// The rollout.
        name: String,
        /// Why, recorded in its status.
        #[arg(long, default_value = "aborted from the command line")]
        reason: String,
    },
    /// Start a rolled-back rollout again.
    Retry {
        /// The rollout.
        name: String,
    },
}

fn parse_image(text: &str) -> Result<(String, String), String> {
    text.split_once('=')
        .map(|(c, i)| (c.to_owned(), i.to_owned()))
        .ok_or_else(|| format!("`{text}` is not CONTAINER=IMAGE"))
}

fn phase(p: i32) -> String {
    pb::RolloutPhase::try_from(p).map_or("Unknown".into(), |p| {
        p.as_str_name()
            .trim_start_matches("ROLLOUT_PHASE_")
            .split('_')
            .map(|w| format!("{}{}", &w[..1], w[1..].to_lowercase()))
            .collect()
    })
}

fn summary(r: &pb::Rollout) -> Value {
    let s = r.status.clone().unwrap_or_default();
    // What was asked and not yet acted on leads the message.
    let mut asked = Vec::new();
    if !s.abort_requested.is_empty() {
        asked.push(format!("abort requested ({})", s.abort_requested));
    }
    if !s.promote_requested.is_empty() {
        asked.push(format!("promote ({}) requested", s.promote_requested));
    }
    let message = if asked.is_empty() {
        s.message.clone()
    } else if s.message.is_empty() {
        asked.join("; ")
    } else {
        format!("{}; {}", asked.join("; "), s.message)
    };
    json!({
        "namespace": r.namespace, "name": r.name, "revision": r.revision, "phase": phase(s.phase),
        // A release with no batches (nothing to release) is at step 0 of 0.
        "step": crate::live::step_number(&s), "steps": s.total_steps, "newPods": s.canary_replicas, "readyNewPods": s.ready_canary_replicas,
        "traffic": s.traffic, "canaryRevision": s.canary_revision, "stableRevision": s.stable_revision, "message": message,
        "paused": s.paused, "abortRequested": s.abort_requested, "promoteRequested": s.promote_requested,
    })
}

fn print(format: Format, rollouts: &[pb::Rollout]) -> anyhow::Result<()> {
    let values: Vec<Value> = rollouts.iter().map(summary).collect();
    match format {
        Format::Json => println!(
            "{}",
            serde_json::to_string_pretty(&if values.len() == 1 {
                values[0].clone()
            } else {
                json!(values)
            })?
        ),
        Format::Yaml => print!(
            "{}",
            serde_yaml::to_string(&if values.len() == 1 {
                values[0].clone()
            } else {
                json!(values)
            })?
        ),
        Format::Table => {
            println!(
                "{:<14} {:<20} {:<12} {:>5} {:>8} {:>7}  MESSAGE",
                "NAMESPACE", "NAME", "PHASE", "STEP", "NEW", "TRAFFIC"
            );
            for v in values {
                println!(
                    "{:<14} {:<20} {:<12} {:>5} {:>8} {:>6}%  {}",
                    v["namespace"].as_str().unwrap_or_default(),
                    v["name"].as_str().unwrap_or_default(),
                    v["phase"].as_str().unwrap_or_default(),
                    format!("{}/{}", v["step"], v["steps"]),
                    format!("{}/{}", v["readyNewPods"], v["newPods"]),
                    v["traffic"],
                    v["message"].as_str().unwrap_or_default()
                );
            }
        }
    }
    Ok(())
}

pub(crate) fn run(connection: &Connection, command: &RolloutCommand) -> anyhow::Result<ExitCode> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(call(connection, command))
}

async fn call(c: &Connection, command: &RolloutCommand) -> anyhow::Result<ExitCode> {
    let uri = if c.executor.contains("://") {
        c.executor.clone()
    } else {
        format!("http://{}", c.executor)
    };
    // A token file that cannot be used is a usage error (exit 2), found
    // before any call goes out.
    let token = match &c.token_file {
        Some(path) => match std::fs::read_to_string(path) {
            Ok(text) if !text.trim().is_empty() => Some(text.trim().to_owned()),
            Ok(_) => {
                eprintln!("error: --token-file {}: the file is empty", path.display());
                return Ok(ExitCode::from(2));
            }
            Err(e) => {
                eprintln!("error: --token-file {}: {e}", path.display());
                return Ok(ExitCode::from(2));
            }
        },
        None => None,
    };
    let channel = Endpoint::from_shared(uri.clone())?
        .connect()
        .await
        .with_context(|| format!("cannot reach the executor at {uri}"))?;
    let authed = |mut request: Request<()>| -> Result<Request<()>, tonic::Status> {
        if let Some(token) = &token {
            let value = format!("Bearer {token}").parse().map_err(|_| {
                tonic::Status::invalid_argument("the token is not a valid header value")
            })?;
            request.metadata_mut().insert("authorization", value);
        }
        Ok(request)
    };
    let mut client = RolloutsClient::with_interceptor(channel, authed);
    let ns = c.namespace.clone();
    let one = match command {
        RolloutCommand::Start {
            name,
            workload,
            images,
            strategy,
        } => {
            let strategy = match strategy {
                None => sluice_model::spec::Strategy::default(),
                Some(path) => crate::plan::read_strategy(path)?,
            };
            let strategy = sluice_model::convert::strategy_to_proto(&strategy).map_err(|p| {
                anyhow::anyhow!(
                    "{}",
                    p.iter()
                        .map(ToString::to_string)
                        .collect::<Vec<_>>()
                        .join("; ")
                )
            })?;
            let spec = pb::RolloutSpec {
                workload: Some(pb::WorkloadRef {
                    kind: pb::WorkloadKind::Deployment as i32,
                    name: workload.clone().unwrap_or_else(|| name.clone()),
                }),
                images: images
                    .iter()
                    .map(|(container, image)| pb::ImageUpdate {
                        container: container.clone(),
                        image: image.clone(),
                    })
                    .collect(),
                strategy: Some(strategy),
                ..Default::default()
            };
            client
                .start_rollout(pb::StartRolloutRequest {
                    namespace: ns,
                    name: name.clone(),
                    spec: Some(spec),
                })
                .await
        }
        RolloutCommand::Get { name } => {
            client
                .get_rollout(pb::GetRolloutRequest {
                    namespace: ns,
                    name: name.clone(),
                })
                .await
        }
        RolloutCommand::List { all_namespaces } => {
            let mut all = Vec::new();
            let mut token = String::new();
            loop {
                let page = client
                    .list_rollouts(pb::ListRolloutsRequest {
                        namespace: if *all_namespaces {
                            String::new()
                        } else {
                            ns.clone()
                        },
                        page_token: token,
                        ..Default::default()
                    })
                    .await
                    .map_err(status_error)?
                    .into_inner();
                all.extend(page.rollouts);
                if page.next_page_token.is_empty() {
                    break;
                }
                token = page.next_page_token;
            }
            print(c.output, &all)?;
            return Ok(ExitCode::SUCCESS);
        }
        RolloutCommand::Watch { name } => {
            let mut stream = client
                .watch_rollout(pb::WatchRolloutRequest {
                    namespace: ns,
                    name: name.clone(),
                    since_revision: String::new(),
                })
                .await
                .map_err(status_error)?
                .into_inner();
            let mut view = crate::live::Live::new(std::io::stdout().is_terminal());
            while let Some(event) = stream.message().await.map_err(status_error)? {
                let Some(r) = event.rollout else { continue };
                let v = summary(&r);
                view.show(&r);
                match v["phase"].as_str() {
                    Some("Succeeded") => return Ok(ExitCode::SUCCESS),
                    Some("RolledBack" | "Failed") => return Ok(ExitCode::FAILURE),
                    _ => {}
                }
            }
            return Ok(ExitCode::SUCCESS);
        }
        RolloutCommand::Promote { name, full } => {
            client
                .promote(pb::PromoteRequest {
                    namespace: ns,
                    name: name.clone(),
                    full: *full,
                })
                .await
        }
        RolloutCommand::Pause { name } => {
            client
                .pause(pb::PauseRequest {
                    namespace: ns,
                    name: name.clone(),
                    reason: String::new(),
                })
                .await
        }
        RolloutCommand::Resume { name } => {
            client
                .resume(pb::ResumeRequest {
                    namespace: ns,
                    name: name.clone(),
                })
                .await
        }
        RolloutCommand::Abort { name, reason } => {
            client
                .abort(pb::AbortRequest {
                    namespace: ns,
                    name: name.clone(),
                    reason: reason.clone(),
                })
                .await
        }
        RolloutCommand::Retry { name } => {
            client
                .retry(pb::RetryRequest {
                    namespace: ns,
                    name: name.clone(),
                })
                .await
        }
    };
    let rollout = one.map_err(status_error)?.into_inner();
    print(c.output, &[rollout])?;
    Ok(ExitCode::SUCCESS)
}

fn status_error(status: tonic::Status) -> anyhow::Error {
    use tonic_types::StatusExt;
    let mut text = format!("{:?}: {}", status.code(), status.message());
    if let Some(bad) = status.get_error_details().bad_request() {
        for v in &bad.field_violations {
            text.push_str(&format!("\n  {}: {}", v.field, v.description));
        }
    }
    anyhow::anyhow!(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_summary_counts_steps_from_one_and_leads_with_what_was_asked() {
        let mut r = pb::Rollout {
            status: Some(pb::RolloutStatus {
                current_step: 1,
                total_steps: 3,
                message: "waiting for pods".into(),
                abort_requested: "bad latency".into(),
                ..Default::default()
            }),
            ..Default::default()
        };
        let v = summary(&r);
        assert_eq!(
            (v["step"].clone(), v["steps"].clone()),
            (json!(2), json!(3))
        );
        assert_eq!(
            v["message"],
            "abort requested (bad latency); waiting for pods"
        );
        // Nothing to release: no batch, so step 0 of 0, not 1 of 0.
        r.status = Some(pb::RolloutStatus::default());
        let v = summary(&r);
        assert_eq!(
            (v["step"].clone(), v["steps"].clone()),
            (json!(0), json!(0))
        );
    }
}
