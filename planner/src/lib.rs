//! The planner: a release strategy and a workload's size in, a concrete plan
//! of batches out. Pure and deterministic: no Kubernetes, no Prometheus, no
//! clock. The executor asks it over gRPC; the CLI links it directly.
//!
//! # Layout
//! - [`make_plan`]: validation then planning, the one call most callers
//!   need.
//! - [`service`]: the `sluice.v1.Planner` gRPC service and [`serve`].
//! - [`config`]: flags and environment.
//!
//! The strategy model, its validation, the planning rules and their
//! `sluice.v1` conversions are pure and live in `sluice-model`; they are
//! re-exported here under their old paths: [`spec`], [`load`],
//! [`quantity`], [`validate`], [`plan`](mod@plan), [`convert`].

pub mod config;
pub mod service;

pub use sluice_model::{convert, load, plan, quantity, spec, validate};

pub use config::Config;
pub use plan::{Batch, Gate, Plan, Progress, Sizing};
pub use service::serve;
pub use spec::Strategy;
pub use validate::{FieldProblem, Warning};

use quantity::Amount;

/// Everything besides the strategy that a plan depends on.
#[derive(Debug, Clone, Default)]
pub struct PlanOptions {
    /// Replicas of the workload; must be at least 1.
    pub replicas: u32,
    /// The workload's maxSurge as written (`"25%"`, `"1"`); Kubernetes'
    /// default 25% when `None`.
    pub max_surge: Option<spec::Quantity>,
    /// Re-plan from here.
    pub progress: Option<Progress>,
    /// The analyses the rollout defines, when known.
    pub known_analyses: Option<Vec<String>>,
}

/// The default maxSurge of a Deployment.
pub const DEFAULT_MAX_SURGE: Amount = Amount::Percent(25);

/// Validates `strategy` and plans it: the one call most callers need.
///
/// # Errors
/// Every [`FieldProblem`] in the strategy and the options.
pub fn make_plan(strategy: &Strategy, options: &PlanOptions) -> Result<Plan, Vec<FieldProblem>> {
    let mut problems = Vec::new();
    if options.replicas == 0 {
        problems.push(FieldProblem::new("replicas", "must be at least 1, got 0"));
    }
    let max_surge = match &options.max_surge {
        None => DEFAULT_MAX_SURGE,
        Some(q) => Amount::parse("maxSurge", q).unwrap_or_else(|p| {
            problems.push(p);
            DEFAULT_MAX_SURGE
        }),
    };
    let context = validate::Context {
        replicas: (options.replicas > 0).then_some(options.replicas),
        known_analyses: options.known_analyses.as_deref(),
    };
    let validated = validate::validate(strategy, context);
    let validated = match validated {
        Ok(v) if problems.is_empty() => v,
        Ok(_) => return Err(problems),
        Err(mut found) => {
            found.append(&mut problems);
            return Err(found);
        }
    };
    let sizing = Sizing {
        replicas: options.replicas,
        max_surge,
    };
    let mut plan = plan::plan(&validated.strategy, sizing, options.progress);
    let mut warnings = validated.warnings;
    warnings.append(&mut plan.warnings);
    plan.warnings = warnings;
    Ok(plan)
}
