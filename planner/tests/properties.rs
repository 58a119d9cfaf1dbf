//! Properties that hold for every valid strategy and size.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests stop at the first failed step

use proptest::prelude::{Just, any, prop, prop_assert, prop_assert_eq, prop_oneof, proptest};
use proptest::strategy::Strategy as _;
use sluice_planner::{
    PlanOptions, Progress, make_plan,
    spec::{CanaryStrategy, PERCENT_PATTERN, Pause, Percent, Quantity, Step, Strategy, Style},
};

/// Random steps, sorted so that they never go backwards at any size: either
/// every step is a count or every step is a percent, ascending.
fn strategy() -> impl proptest::strategy::Strategy<Value = Strategy> {
    let style = prop_oneof![
        Just(Style::Partition),
        Just(Style::Canary),
        Just(Style::BlueGreen)
    ];
    let steps = prop::collection::vec(
        (0i64..=100, prop::option::of(0i64..=100), any::<bool>()),
        0..10,
    );
    (style, steps, any::<bool>()).prop_map(|(style, mut raw, percents)| {
        raw.sort_by_key(|(q, _, _)| *q);
        let raw: Vec<(Quantity, Option<i64>, bool)> = raw
            .into_iter()
            .map(|(q, t, p)| {
                let q = if percents {
                    Quantity::Text(format!("{q}%"))
                } else {
                    Quantity::Number(q)
                };
                (q, t, p)
            })
            .collect();
        let mut traffic: Vec<Option<i64>> = raw.iter().map(|(_, t, _)| *t).collect();
        let mut sorted: Vec<i64> = traffic.iter().flatten().copied().collect();
        sorted.sort_unstable();
        let mut next = sorted.into_iter();
        for t in traffic.iter_mut().flatten() {
            *t = next.next().unwrap_or(0);
        }
        let steps = raw
            .into_iter()
            .zip(traffic)
            .map(|((replicas, _, pause), traffic)| Step {
                // Traffic written as the replicas are: `20` or `20%`.
                traffic: traffic.map(|value| Percent {
                    value,
                    sign: percents,
                }),
                // Ensure at least one new pod serves any traffic.
                replicas: Some(match replicas {
                    Quantity::Number(0) => Quantity::Number(1),
                    Quantity::Text(t) if t == "0%" => Quantity::Text("1%".into()),
                    other => other,
                }),
                pause: pause.then(Pause::default),
                ..Default::default()
            })
            .collect();
        Strategy {
            style: Some(style),
            canary: CanaryStrategy {
                steps,
                ..Default::default()
            },
            blue_green: None,
        }
    })
}

proptest! {
    #[test]
    fn plans_are_monotone_bounded_and_end_at_everything(s in strategy(), n in 1u32..500) {
        let plan = make_plan(&s, &PlanOptions { replicas: n, ..Default::default() }).unwrap();
        prop_assert!(!plan.batches.is_empty());
        let mut previous = (0, 0);
        for b in &plan.batches {
            prop_assert!(b.canary_replicas <= n && b.stable_replicas <= n && b.traffic <= 100);
            prop_assert!(b.canary_replicas >= previous.0 && b.traffic >= previous.1, "backwards at {}", b.index);
            prop_assert!(b.max_unready <= b.canary_replicas);
            prop_assert!(b.expected_total_pods >= n);
            previous = (b.canary_replicas, b.traffic);
        }
        let last = plan.batches.last().unwrap();
        prop_assert_eq!((last.canary_replicas, last.traffic), (n, 100));
    }

    #[test]
    fn a_nonzero_replica_step_never_plans_zero_pods(s in strategy(), n in 1u32..500) {
        let plan = make_plan(&s, &PlanOptions { replicas: n, ..Default::default() }).unwrap();
        for b in plan.batches.iter().filter(|b| b.step.is_some()) {
            prop_assert!(b.canary_replicas >= 1);
        }
    }

    #[test]
    fn partition_style_never_exceeds_replicas_plus_surge(s in strategy(), n in 1u32..500) {
        let mut s = s;
        s.style = Some(Style::Partition);
        let plan = make_plan(&s, &PlanOptions { replicas: n, ..Default::default() }).unwrap();
        let surge = (n * 25).div_ceil(100);
        for b in &plan.batches {
            prop_assert!(b.expected_total_pods <= n + surge);
            prop_assert_eq!(b.canary_replicas + b.stable_replicas, n);
        }
    }

    #[test]
    fn replanning_never_undoes_a_done_batch(
        s in strategy(),
        old_n in 1u32..300,
        new_n in 1u32..300,
        done in 0usize..12,
    ) {
        let old = make_plan(&s, &PlanOptions { replicas: old_n, ..Default::default() }).unwrap();
        let done = done.min(old.batches.len() - 1);
        let reached = &old.batches[done];
        let progress = Progress {
            canary_replicas: reached.canary_replicas,
            traffic: reached.traffic,
            completed_batches: done as u32 + 1,
        };
        let options = PlanOptions { replicas: new_n, progress: Some(progress), ..Default::default() };
        let new = make_plan(&s, &options).unwrap();
        let current = new.current_batch.unwrap();
        prop_assert!(current < new.batches.len());
        for b in &new.batches[current..] {
            prop_assert!(b.canary_replicas >= progress.canary_replicas.min(new_n));
            prop_assert!(b.traffic >= progress.traffic);
            prop_assert!(b.canary_replicas <= new_n);
        }
        let last = new.batches.last().unwrap();
        prop_assert_eq!((last.canary_replicas, last.traffic), (new_n, 100));
    }

    /// The Rollout CRD lets the API server store any text matching the
    /// pattern; the executor must be able to read every one of them.
    #[test]
    fn every_text_the_crd_pattern_admits_reads_as_a_percent(
        // Generation takes the pattern without its anchors.
        text in proptest::string::string_regex(&PERCENT_PATTERN[1..PERCENT_PATTERN.len() - 1]).unwrap(),
    ) {
        prop_assert!(Percent::parse(&text).is_ok(), "{:?}", text);
    }
}
