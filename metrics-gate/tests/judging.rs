//! The analysis semantics, rule by rule, at the exact boundaries.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests stop at the first failed step

use std::time::Duration;

use sluice_gate::{
    judge::{Outcome, Tally, Verdict, combine, judge},
    spec::{Condition, Direction, MetricSpec},
    template::Template,
};

fn metric(success: Option<Condition>, failure: Option<Condition>) -> MetricSpec {
    MetricSpec {
        name: "m".into(),
        query: Template::literal("q"),
        success,
        failure,
        interval: Duration::from_secs(60),
        count: 0,
        initial_delay: Duration::ZERO,
        failure_limit: 0,
        inconclusive_limit: 0,
        consecutive_error_limit: 4,
        consecutive_success_limit: 0,
        dry_run: false,
    }
}

fn at_most(max: f64) -> Option<Condition> {
    Some(Condition::Threshold {
        min: None,
        max: Some(max),
    })
}

fn at_least(min: f64) -> Option<Condition> {
    Some(Condition::Threshold {
        min: Some(min),
        max: None,
    })
}

fn comparison(direction: Direction) -> Option<Condition> {
    Some(Condition::Comparison {
        baseline: Template::literal("b"),
        max_ratio: 1.5,
        slack: 0.01,
        direction,
    })
}

#[test]
fn an_empty_result_is_inconclusive_never_a_pass() {
    let j = judge(&metric(at_most(0.05), None), &[], &[]);
    assert_eq!(j.outcome, Outcome::Inconclusive);
    assert!(j.message.contains("no data"), "{}", j.message);
    // Even with only a failure condition, which passes anything else.
    assert_eq!(
        judge(&metric(None, at_least(0.05)), &[], &[]).outcome,
        Outcome::Inconclusive
    );
}

#[test]
fn nan_is_inconclusive() {
    assert_eq!(
        judge(&metric(at_most(0.05), None), &[f64::NAN], &[]).outcome,
        Outcome::Inconclusive
    );
    assert_eq!(
        judge(&metric(None, at_least(0.05)), &[0.01, f64::NAN], &[]).outcome,
        Outcome::Inconclusive
    );
}

#[test]
fn threshold_bounds_are_inclusive() {
    let m = metric(at_most(0.05), None);
    assert_eq!(judge(&m, &[0.05], &[]).outcome, Outcome::Successful);
    assert_eq!(judge(&m, &[0.050_000_1], &[]).outcome, Outcome::Failed);
    let m = metric(None, at_least(0.05));
    assert_eq!(judge(&m, &[0.05], &[]).outcome, Outcome::Failed);
    assert_eq!(judge(&m, &[0.049], &[]).outcome, Outcome::Successful);
}

#[test]
fn infinity_is_a_value_and_breaches_a_bound() {
    let j = judge(&metric(at_most(0.5), None), &[f64::INFINITY], &[]);
    assert_eq!(j.outcome, Outcome::Failed);
}

#[test]
fn with_both_conditions_the_gap_between_them_is_inconclusive() {
    // Success: at most 1% errors; failure: at least 5%.
    let m = metric(at_most(0.01), at_least(0.05));
    assert_eq!(judge(&m, &[0.005], &[]).outcome, Outcome::Successful);
    assert_eq!(judge(&m, &[0.07], &[]).outcome, Outcome::Failed);
    let j = judge(&m, &[0.03], &[]);
    assert_eq!(j.outcome, Outcome::Inconclusive);
    assert!(
        j.message.starts_with("neither condition held"),
        "{}",
        j.message
    );
}

#[test]
fn failure_wins_over_success_and_names_its_condition() {
    let m = metric(at_most(0.1), at_least(0.05));
    let j = judge(&m, &[0.07], &[]);
    assert_eq!(j.outcome, Outcome::Failed);
    assert_eq!(j.decided_by, "failureCondition.threshold.min=0.05");
}

#[test]
fn every_series_must_meet_success_and_any_series_may_fail() {
    let m = metric(at_most(0.05), None);
    assert_eq!(judge(&m, &[0.01, 0.2], &[]).outcome, Outcome::Failed);
    let m = metric(None, at_least(0.05));
    assert_eq!(judge(&m, &[0.01, 0.2], &[]).outcome, Outcome::Failed);
}

#[test]
fn comparison_allows_ratio_plus_slack_over_the_baseline() {
    let m = metric(comparison(Direction::HigherIsWorse), None);
    // Allowed: 0.02 * 1.5 + 0.01 = 0.04.
    assert_eq!(judge(&m, &[0.04], &[0.02]).outcome, Outcome::Successful);
    let j = judge(&m, &[0.041], &[0.02]);
    assert_eq!(j.outcome, Outcome::Failed);
    assert!(
        j.message.contains("canary 0.041 > allowed 0.04"),
        "{}",
        j.message
    );
    // The slack keeps a zero-error baseline from failing on noise.
    assert_eq!(judge(&m, &[0.005], &[0.0]).outcome, Outcome::Successful);
}

#[test]
fn comparison_for_lower_is_worse_metrics() {
    let m = metric(None, comparison(Direction::LowerIsWorse));
    // Allowed: 0.99 / 1.5 - 0.01 = 0.65.
    assert_eq!(judge(&m, &[0.9], &[0.99]).outcome, Outcome::Successful);
    assert_eq!(judge(&m, &[0.6], &[0.99]).outcome, Outcome::Failed);
}

#[test]
fn comparison_without_baseline_data_is_inconclusive_and_with_many_series_an_error() {
    let m = metric(comparison(Direction::HigherIsWorse), None);
    assert_eq!(judge(&m, &[0.01], &[]).outcome, Outcome::Inconclusive);
    assert_eq!(
        judge(&m, &[0.01], &[f64::NAN]).outcome,
        Outcome::Inconclusive
    );
    assert_eq!(judge(&m, &[0.01, 0.02], &[0.01]).outcome, Outcome::Error);
}

fn verdict_after(m: &MetricSpec, outcomes: &[Outcome]) -> Verdict {
    let mut tally = Tally::default();
    for &o in outcomes {
        tally.record(o);
    }
    tally.verdict(m).0
}

#[test]
fn a_failure_limit_of_3_fails_on_the_4th_failure() {
    let mut m = metric(at_most(1.0), None);
    m.failure_limit = 3;
    let f = Outcome::Failed;
    assert_eq!(verdict_after(&m, &[f, f, f]), Verdict::Running);
    assert_eq!(verdict_after(&m, &[f, f, f, f]), Verdict::Fail);
    m.failure_limit = 0;
    assert_eq!(
        verdict_after(&m, &[f]),
        Verdict::Fail,
        "the default fails on the first"
    );
}

#[test]
fn the_default_error_limit_errs_on_the_5th_error_in_a_row() {
    let m = metric(at_most(1.0), None);
    let e = Outcome::Error;
    assert_eq!(verdict_after(&m, &[e, e, e, e]), Verdict::Running);
    assert_eq!(verdict_after(&m, &[e, e, e, e, e]), Verdict::Error);
    // A success in between restarts the run.
    assert_eq!(
        verdict_after(&m, &[e, e, e, e, Outcome::Successful, e]),
        Verdict::Running
    );
}

#[test]
fn errors_are_never_failures() {
    let m = metric(at_most(1.0), None);
    let mut tally = Tally::default();
    tally.record(Outcome::Error);
    assert_eq!(tally.failed, 0);
    assert_eq!(tally.verdict(&m).0, Verdict::Running);
}

#[test]
fn an_inconclusive_limit_of_2_is_inconclusive_on_the_3rd() {
    let mut m = metric(at_most(1.0), None);
    m.inconclusive_limit = 2;
    let i = Outcome::Inconclusive;
    assert_eq!(verdict_after(&m, &[i, i]), Verdict::Running);
    assert_eq!(verdict_after(&m, &[i, i, i]), Verdict::Inconclusive);
}

#[test]
fn consecutive_successes_pass_early() {
    let mut m = metric(at_most(1.0), None);
    m.consecutive_success_limit = 3;
    let s = Outcome::Successful;
    assert_eq!(verdict_after(&m, &[s, s]), Verdict::Running);
    assert_eq!(verdict_after(&m, &[s, s, s]), Verdict::Pass);
    m.inconclusive_limit = 5;
    assert_eq!(
        verdict_after(&m, &[s, s, Outcome::Inconclusive, s, s]),
        Verdict::Running
    );
}

#[test]
fn a_counted_metric_needs_at_least_one_success_to_pass() {
    let mut m = metric(at_most(1.0), None);
    m.count = 3;
    m.inconclusive_limit = 10;
    let (s, i, e) = (Outcome::Successful, Outcome::Inconclusive, Outcome::Error);
    assert_eq!(verdict_after(&m, &[s, s]), Verdict::Running);
    assert_eq!(verdict_after(&m, &[s, i, e]), Verdict::Pass);
    assert_eq!(verdict_after(&m, &[i, e, i]), Verdict::Inconclusive);
}

#[test]
fn the_worst_metric_decides_and_dry_runs_never_do() {
    let v = |list: &[(&'static str, Verdict, bool)]| combine(list.iter().copied());
    assert_eq!(
        v(&[("a", Verdict::Pass, false), ("b", Verdict::Pass, false)]),
        (Verdict::Pass, None)
    );
    assert_eq!(
        v(&[
            ("a", Verdict::Inconclusive, false),
            ("b", Verdict::Error, false)
        ]),
        (Verdict::Error, Some("b"))
    );
    assert_eq!(
        v(&[("a", Verdict::Error, false), ("b", Verdict::Fail, false)]),
        (Verdict::Fail, Some("b"))
    );
    assert_eq!(
        v(&[("a", Verdict::Pass, false), ("b", Verdict::Running, false)]),
        (Verdict::Running, None)
    );
    assert_eq!(
        v(&[("a", Verdict::Pass, false), ("dry", Verdict::Fail, true)]),
        (Verdict::Pass, None)
    );
    assert_eq!(
        v(&[("a", Verdict::Pass, false), ("dry", Verdict::Running, true)]),
        (Verdict::Running, None)
    );
}
