//! Every validation rule, with its exact message.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests stop at the first failed step

use sluice_planner::{
    FieldProblem, PlanOptions, Strategy, make_plan,
    validate::{Context, validate},
};

fn strategy(yaml: &str) -> Strategy {
    serde_yaml::from_str(yaml).unwrap()
}

fn problems_with(yaml: &str, context: Context<'_>) -> Vec<String> {
    validate(&strategy(yaml), context)
        .unwrap_err()
        .iter()
        .map(FieldProblem::to_string)
        .collect()
}

fn problems(yaml: &str) -> Vec<String> {
    problems_with(yaml, Context::default())
}

fn warnings(yaml: &str, replicas: u32) -> Vec<String> {
    let options = PlanOptions {
        replicas,
        ..Default::default()
    };
    make_plan(&strategy(yaml), &options)
        .unwrap()
        .warnings
        .iter()
        .map(ToString::to_string)
        .collect()
}

#[test]
fn traffic_above_100_names_the_step_and_value() {
    let yaml =
        "canary: {steps: [{replicas: 1}, {replicas: 2, traffic: 10}, {replicas: 3, traffic: 120}]}";
    assert_eq!(
        problems(yaml),
        ["strategy.canary.steps[2].traffic: must be between 0 and 100, got 120"]
    );
}

#[test]
fn negative_traffic_is_refused() {
    let yaml = "canary: {steps: [{replicas: 1, traffic: -5}]}";
    assert_eq!(
        problems(yaml),
        ["strategy.canary.steps[0].traffic: must be between 0 and 100, got -5"]
    );
}

#[test]
fn traffic_written_as_a_percent_is_judged_as_the_number_and_named_as_written() {
    let yaml = r#"canary: {steps: [{replicas: 1, traffic: 120%}, {replicas: 2, traffic: "-5%"}, {replicas: 3, traffic: " 50 % "}]}"#;
    assert_eq!(
        problems(yaml),
        [
            "strategy.canary.steps[0].traffic: must be between 0 and 100, got 120%",
            "strategy.canary.steps[1].traffic: must be between 0 and 100, got -5%",
        ]
    );
}

#[test]
fn traffic_going_backwards_is_refused_whichever_way_it_is_written() {
    let yaml = "canary: {steps: [{replicas: 1, traffic: 30%}, {replicas: 2, traffic: 20}]}";
    assert_eq!(
        problems(yaml),
        ["strategy.canary.steps[1].traffic: must not be less than steps[0].traffic (30), got 20"]
    );
}

#[test]
fn replicas_must_be_a_count_or_a_whole_percent() {
    let yaml = r#"canary: {steps: [{replicas: -1}, {replicas: "150%"}, {replicas: "ten"}]}"#;
    assert_eq!(
        problems(yaml),
        [
            "strategy.canary.steps[0].replicas: must be a count of 0 or more, got -1",
            "strategy.canary.steps[1].replicas: must be between 0% and 100%, got 150%",
            "strategy.canary.steps[2].replicas: must be a count such as 3 or a percent such as \"20%\", got \"ten\"",
        ]
    );
}

#[test]
fn replicas_never_go_backwards() {
    let yaml = r#"canary: {steps: [{replicas: "50%"}, {replicas: "20%"}]}"#;
    assert_eq!(
        problems(yaml),
        [
            "strategy.canary.steps[1].replicas: must not be less than steps[0].replicas (50%), got 20%"
        ]
    );
}

#[test]
fn mixed_counts_and_percents_are_compared_at_the_workload_size() {
    let yaml = r#"canary: {steps: [{replicas: 5}, {replicas: "10%"}]}"#;
    // Without a size the two cannot be compared.
    assert!(validate(&strategy(yaml), Context::default()).is_ok());
    let with_size = Context {
        replicas: Some(20),
        ..Default::default()
    };
    assert_eq!(
        problems_with(yaml, with_size),
        ["strategy.canary.steps[1].replicas: must not be less than steps[0].replicas (5), got 10%"]
    );
}

#[test]
fn traffic_never_goes_backwards() {
    let yaml = "canary: {steps: [{replicas: 2, traffic: 30}, {replicas: 3, traffic: 10}]}";
    assert_eq!(
        problems(yaml),
        ["strategy.canary.steps[1].traffic: must not be less than steps[0].traffic (30), got 10"]
    );
}

#[test]
fn traffic_without_new_pods_is_refused() {
    let yaml = "canary: {steps: [{traffic: 10}, {replicas: 0, traffic: 20}]}";
    assert_eq!(
        problems(yaml),
        [
            "strategy.canary.steps[0].traffic: 10% of traffic with no new pods: set replicas at or before this step",
            "strategy.canary.steps[1].traffic: 20% of traffic with no new pods: set replicas at or before this step",
        ]
    );
    // BlueGreen brings every new pod up at once, so traffic alone is fine.
    assert!(
        validate(
            &strategy("style: BlueGreen\ncanary: {steps: [{traffic: 10}]}"),
            Context::default()
        )
        .is_ok()
    );
}

#[test]
fn request_matches_are_checked_field_by_field() {
    let yaml = r#"
canary:
  steps:
    - replicas: 1
      matches:
        - headers: [{name: "", value: x}, {name: "bad header", value: x}, {name: x-user, value: ""}]
          cookies: [{name: beta, type: RegularExpression, value: "(unclosed"}]
          queryParams: [{name: "a=b", value: x}]
          path: {value: api}
        - {}
"#;
    let found = problems(yaml);
    let base = "strategy.canary.steps[0].matches";
    assert_eq!(found.len(), 7, "{found:#?}");
    assert_eq!(
        found[0],
        format!("{base}[0].headers[0].name: must name a header, got \"\"")
    );
    assert_eq!(
        found[1],
        format!("{base}[0].headers[1].name: not a valid header name, got \"bad header\"")
    );
    assert_eq!(
        found[2],
        format!("{base}[0].headers[2].value: must not be empty, got \"\"")
    );
    assert!(found[3].starts_with(&format!(
        "{base}[0].cookies[0].value: not a valid regular expression \"(unclosed\""
    )));
    assert_eq!(
        found[4],
        format!("{base}[0].queryParams[0].name: not a valid query parameter name, got \"a=b\"")
    );
    assert_eq!(
        found[5],
        format!("{base}[0].path.value: must start with \"/\", got \"api\"")
    );
    assert_eq!(
        found[6],
        format!("{base}[1]: must have at least one header, cookie, query parameter or path")
    );
}

#[test]
fn pauses_need_a_positive_duration_when_timed() {
    let yaml = "canary: {steps: [{replicas: 1, pause: {duration: 0s}}, {replicas: 2, pause: {duration: soon}}]}";
    assert_eq!(
        problems(yaml),
        [
            "strategy.canary.steps[0].pause.duration: must be longer than 0s, got \"0s\"",
            "strategy.canary.steps[1].pause.duration: `soon` is not a duration (use e.g. 500ms, 30s, 5m, 1h30m)",
        ]
    );
}

#[test]
fn analysis_references_are_named_once_and_must_exist() {
    let yaml =
        r#"canary: {steps: [{replicas: 1, analyses: ["", success-rate, success-rate, latency]}]}"#;
    let known = vec!["success-rate".to_owned()];
    let context = Context {
        known_analyses: Some(&known),
        ..Default::default()
    };
    assert_eq!(
        problems_with(yaml, context),
        [
            "strategy.canary.steps[0].analyses[0]: must name an analysis, got \"\"",
            "strategy.canary.steps[0].analyses[2]: \"success-rate\" is listed twice",
            "strategy.canary.steps[0].analyses[3]: no analysis named \"latency\" (defined: success-rate)",
        ]
    );
}

#[test]
fn shared_rules_are_checked() {
    let yaml = r#"
canary:
  failureThreshold: "101%"
  progressDeadline: 0s
  backgroundAnalysis: {analyses: [], startingStep: 3}
  steps: [{replicas: 1}, {replicas: 2}]
blueGreen: {rollbackWindow: forever}
"#;
    assert_eq!(
        problems(yaml),
        [
            "strategy.canary.failureThreshold: must be between 0% and 100%, got 101%",
            "strategy.canary.progressDeadline: must be longer than 0s, got \"0s\"",
            "strategy.canary.backgroundAnalysis.analyses: must name at least one analysis, got []",
            "strategy.canary.backgroundAnalysis.startingStep: must be between 1 and 2 (the number of steps), got 3",
            "strategy.blueGreen.rollbackWindow: `forever` is not a duration (use e.g. 500ms, 30s, 5m, 1h30m)",
        ]
    );
}

#[test]
fn unknown_fields_are_refused_when_reading_yaml() {
    let error = serde_yaml::from_str::<Strategy>("canary: {stepz: []}")
        .unwrap_err()
        .to_string();
    assert!(error.contains("unknown field `stepz`"), "{error}");
}

#[test]
fn plan_options_are_checked_with_the_strategy() {
    let options = PlanOptions {
        replicas: 0,
        max_surge: Some("lots".into()),
        ..Default::default()
    };
    let found: Vec<String> = make_plan(&strategy("canary: {steps: [{replicas: 200%}]}"), &options)
        .unwrap_err()
        .iter()
        .map(ToString::to_string)
        .collect();
    assert_eq!(
        found,
        [
            "strategy.canary.steps[0].replicas: must be between 0% and 100%, got 200%",
            "replicas: must be at least 1, got 0",
            "maxSurge: must be a count such as 3 or a percent such as \"20%\", got \"lots\"",
        ]
    );
}

#[test]
fn risky_choices_are_warnings_not_errors() {
    assert_eq!(
        warnings(
            "canary: {steps: [{replicas: 1, traffic: 50, pause: {}}]}",
            20
        ),
        [
            "strategy.canary.steps[0].traffic: 50% of traffic onto 1 of 20 pods: each new pod takes 19.0x the load of an old one"
        ]
    );
    assert_eq!(
        warnings("canary: {steps: [{replicas: 30, pause: {}}]}", 10),
        [
            "strategy.canary.steps[0].replicas: 30 is more than the workload's 10 replicas; capped at 10"
        ]
    );
    assert_eq!(
        warnings("canary: {steps: []}", 3),
        ["strategy.canary.steps: no steps: the release goes to 100% in one batch"]
    );
    assert_eq!(
        warnings("canary: {steps: [{replicas: 1}]}", 3),
        [
            "strategy.canary.steps: no step pauses or runs an analysis: each batch advances as soon as its pods are ready"
        ]
    );
    assert_eq!(
        warnings(
            "style: BlueGreen\ncanary: {steps: [{replicas: 1, traffic: 10, pause: {}}]}",
            4
        ),
        [
            "strategy.canary.steps[0].replicas: ignored for BlueGreen: the new version runs at full size from the first step"
        ]
    );
    assert_eq!(
        warnings(
            "canary: {steps: [{replicas: 1, pause: {}}]}\nblueGreen: {rollbackWindow: 5m}",
            4
        ),
        ["strategy.blueGreen.rollbackWindow: ignored for style Partition"]
    );
}
