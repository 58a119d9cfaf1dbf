//! Plans for each style, the rounding rules and re-planning.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests stop at the first failed step

use std::time::Duration;

use sluice_planner::{Plan, PlanOptions, Progress, Strategy, make_plan, validate::PauseKind};

fn plan(yaml: &str, replicas: u32) -> Plan {
    plan_with(
        yaml,
        PlanOptions {
            replicas,
            ..Default::default()
        },
    )
}

fn plan_with(yaml: &str, options: PlanOptions) -> Plan {
    let strategy: Strategy = serde_yaml::from_str(yaml).unwrap();
    make_plan(&strategy, &options).unwrap()
}

/// (canary, stable, traffic, expected total pods) per batch.
fn shape(plan: &Plan) -> Vec<(u32, u32, u32, u32)> {
    plan.batches
        .iter()
        .map(|b| {
            (
                b.canary_replicas,
                b.stable_replicas,
                b.traffic,
                b.expected_total_pods,
            )
        })
        .collect()
}

const THREE_STEPS: &str = r#"
canary:
  steps:
    - {replicas: 1, pause: {}}
    - {replicas: "20%", traffic: 20, analyses: [success-rate], pause: {duration: 5m}}
    - {replicas: "50%", traffic: 50}
"#;

#[test]
fn partition_plan_replaces_pods_batch_by_batch_and_appends_the_final_batch() {
    let plan = plan(THREE_STEPS, 10);
    // maxSurge 25% of 10 rounds up to 3 pods.
    assert_eq!(
        shape(&plan),
        [
            (1, 9, 10, 11),
            (2, 8, 20, 11),
            (5, 5, 50, 13),
            (10, 0, 100, 13)
        ]
    );
    assert_eq!(
        plan.batches.iter().map(|b| b.step).collect::<Vec<_>>(),
        [Some(0), Some(1), Some(2), None]
    );
    assert_eq!(plan.batches[0].gate.pause, Some(PauseKind::UntilPromoted));
    assert_eq!(
        plan.batches[1].gate.pause,
        Some(PauseKind::For(Duration::from_secs(300)))
    );
    assert_eq!(*plan.batches[1].gate.analyses, ["success-rate"]);
    assert_eq!(plan.batches[3].gate.pause, None);
}

#[test]
fn traffic_plans_the_same_as_a_number_or_a_percent() {
    let numbers = plan(THREE_STEPS, 10);
    for written in ["20%", "\"20%\"", "\"20\""] {
        let yaml = THREE_STEPS.replace("traffic: 20,", &format!("traffic: {written},"));
        assert_ne!(yaml, THREE_STEPS);
        assert_eq!(shape(&plan(&yaml, 10)), shape(&numbers), "{written}");
    }
}

#[test]
fn no_final_batch_is_added_when_the_last_step_is_complete() {
    let plan = plan(
        r#"canary: {steps: [{replicas: "50%", pause: {}}, {replicas: "100%", traffic: 100}]}"#,
        4,
    );
    assert_eq!(shape(&plan), [(2, 2, 50, 5), (4, 0, 100, 5)]);
}

#[test]
fn a_strategy_without_steps_is_one_batch_to_everything() {
    let plan = plan("{}", 6);
    assert_eq!(shape(&plan), [(6, 0, 100, 8)]);
}

#[test]
fn traffic_follows_replicas_when_unset() {
    let plan = plan(
        r#"canary: {steps: [{replicas: 1, pause: {}}, {replicas: "30%", pause: {}}]}"#,
        3,
    );
    assert_eq!(
        plan.batches.iter().map(|b| b.traffic).collect::<Vec<_>>(),
        [33, 33, 100]
    );
}

#[test]
fn a_header_only_step_sends_nothing_but_matched_requests() {
    let yaml = "canary: {steps: [{replicas: 1, matches: [{headers: [{name: x-canary, value: 'on'}]}], pause: {}}, {replicas: 5, pause: {}}]}";
    let plan = plan(yaml, 10);
    assert_eq!(
        plan.batches.iter().map(|b| b.traffic).collect::<Vec<_>>(),
        [0, 50, 100]
    );
    assert_eq!(plan.batches[0].matches[0].headers[0].name, "x-canary");
}

#[test]
fn a_step_may_move_traffic_without_replicas_and_replicas_without_traffic() {
    let plan = plan(
        r#"canary: {steps: [{replicas: 2, traffic: 5, pause: {}}, {traffic: 30, pause: {}}, {replicas: 4, traffic: 30, pause: {}}]}"#,
        10,
    );
    assert_eq!(
        plan.batches
            .iter()
            .map(|b| (b.canary_replicas, b.traffic))
            .collect::<Vec<_>>(),
        [(2, 5), (2, 30), (4, 30), (10, 100)]
    );
}

#[test]
fn a_small_percent_of_a_small_workload_is_still_one_pod() {
    let plan = plan(r#"canary: {steps: [{replicas: "1%", pause: {}}]}"#, 3);
    assert_eq!(plan.batches[0].canary_replicas, 1);
}

#[test]
fn statefulsets_without_surge_keep_the_total_at_n() {
    let options = PlanOptions {
        replicas: 5,
        max_surge: Some("0".into()),
        ..Default::default()
    };
    let plan = plan_with(THREE_STEPS, options);
    assert!(
        plan.batches.iter().all(|b| b.expected_total_pods == 5),
        "{:?}",
        shape(&plan)
    );
}

#[test]
fn canary_style_keeps_stable_whole_until_the_final_batch() {
    let plan = plan(&format!("style: Canary\n{THREE_STEPS}"), 10);
    // Final batch: stable rolls to the new version (surge 3) beside the 5 canary pods.
    assert_eq!(
        shape(&plan),
        [
            (1, 10, 10, 11),
            (2, 10, 20, 12),
            (5, 10, 50, 15),
            (10, 0, 100, 18)
        ]
    );
}

#[test]
fn blue_green_runs_both_versions_at_full_size_and_switches_traffic() {
    let yaml = "style: BlueGreen\ncanary: {steps: [{pause: {}}, {traffic: 100}]}\nblueGreen: {rollbackWindow: 15m}";
    let plan = plan(yaml, 4);
    assert_eq!(shape(&plan), [(4, 4, 0, 8), (4, 4, 100, 8)]);
    assert_eq!(plan.rollback_window, Some(Duration::from_secs(900)));
}

#[test]
fn failure_threshold_counts_unready_pods_of_each_batch() {
    let plan = plan(
        r#"canary: {failureThreshold: "25%", steps: [{replicas: 3, pause: {}}, {replicas: 8, pause: {}}]}"#,
        10,
    );
    assert_eq!(
        plan.batches
            .iter()
            .map(|b| b.max_unready)
            .collect::<Vec<_>>(),
        [0, 2, 2]
    );
    let plan = plan_with(
        "canary: {failureThreshold: 1, steps: [{replicas: 3, pause: {}}]}",
        PlanOptions {
            replicas: 10,
            ..Default::default()
        },
    );
    assert_eq!(plan.batches[0].max_unready, 1);
}

#[test]
fn background_analysis_runs_from_its_starting_step_to_the_end() {
    let yaml = r#"canary: {backgroundAnalysis: {analyses: [errors], startingStep: 2}, steps: [{replicas: 1, pause: {}}, {replicas: 2}, {replicas: 3}]}"#;
    let plan = plan(yaml, 10);
    let running: Vec<bool> = plan
        .batches
        .iter()
        .map(|b| !b.gate.background_analyses.is_empty())
        .collect();
    assert_eq!(running, [false, true, true, true]);
}

#[test]
fn progress_deadline_defaults_to_ten_minutes() {
    let plan = plan(THREE_STEPS, 10);
    assert!(
        plan.batches
            .iter()
            .all(|b| b.gate.progress_deadline == Duration::from_secs(600))
    );
}

#[test]
fn replanning_after_scale_up_keeps_percentages_and_the_current_batch() {
    // Two batches done at 10 replicas: 2 new pods, 20% traffic. Now 20 replicas.
    let progress = Progress {
        canary_replicas: 2,
        traffic: 20,
        completed_batches: 2,
    };
    let options = PlanOptions {
        replicas: 20,
        progress: Some(progress),
        ..Default::default()
    };
    let plan = plan_with(THREE_STEPS, options);
    assert_eq!(plan.current_batch, Some(2));
    assert_eq!(
        plan.batches
            .iter()
            .map(|b| (b.canary_replicas, b.traffic))
            .collect::<Vec<_>>(),
        [(1, 5), (4, 20), (10, 50), (20, 100)]
    );
}

#[test]
fn replanning_after_scale_down_never_undoes_a_done_batch() {
    // At 20 replicas the rollout reached 10 new pods and 50% (batch 2 done).
    let progress = Progress {
        canary_replicas: 10,
        traffic: 50,
        completed_batches: 3,
    };
    let options = PlanOptions {
        replicas: 8,
        progress: Some(progress),
        ..Default::default()
    };
    let plan = plan_with(THREE_STEPS, options);
    assert_eq!(plan.current_batch, Some(3));
    assert_eq!(plan.batches[3].canary_replicas, 8);
    assert_eq!(plan.batches[3].traffic, 100);
    let progress = Progress {
        canary_replicas: 6,
        traffic: 50,
        completed_batches: 1,
    };
    let options = PlanOptions {
        replicas: 10,
        progress: Some(progress),
        ..Default::default()
    };
    let plan = plan_with(THREE_STEPS, options);
    // Batch 1 would be 2 pods and 20% at this size; it keeps the 6 pods and 50% reached.
    assert_eq!(
        (plan.batches[1].canary_replicas, plan.batches[1].traffic),
        (6, 50)
    );
}

#[test]
fn plans_serialize_in_the_strategy_vocabulary() {
    let json = serde_json::to_value(plan(THREE_STEPS, 10)).unwrap();
    assert_eq!(json["style"], "Partition");
    assert_eq!(json["batches"][1]["canaryReplicas"], 2);
    assert_eq!(json["batches"][1]["gate"]["pause"]["duration"], "5m");
    assert_eq!(json["batches"][0]["gate"]["pause"], serde_json::json!({}));
    assert_eq!(json["batches"][0]["gate"]["progressDeadline"], "10m");
}
