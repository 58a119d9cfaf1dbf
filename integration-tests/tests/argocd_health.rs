//! The Argo CD health check of a Rollout (`deploy/argocd/health.lua`), run by
//! a real Lua interpreter (`lua5.4`, which `scripts/test` installs) against
//! Rollouts whose status is built with the executor's own types and
//! conditions, for every phase and for a spec the controller has not seen.
//!
//! Also keeps `deploy/argocd/argocd-cm-patch.yaml` generated from the
//! script: `SLUICE_UPDATE_ARGOCD=1 cargo test -p sluice-integration-tests
//! --test argocd_health` rewrites it.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests stop at the first failed step

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::{Duration, SystemTime};

use serde_json::Value;
use sluice_executor::crd::{
    AnalysisResult, Phase, Rollout, RolloutSpec, RolloutStatus, StepState, Verdict,
};
use sluice_executor::machine::{condition_types, reasons, set_conditions};

const SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../deploy/argocd/health.lua");
const PATCH: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../deploy/argocd/argocd-cm-patch.yaml"
);
/// The `argocd-cm` key Argo CD reads a `sluice.dev` `Rollout`'s health from.
const KEY: &str = "resource.customizations.health.sluice.dev_Rollout";
const WAITING: &str = "Waiting for the rollout controller to observe the newest spec";
const GENERATION: i64 = 4;

/// Every phase; `expected_health` fails to compile when one is added, as a
/// reminder to add it here too.
const PHASES: [Phase; 7] = [
    Phase::Pending,
    Phase::Progressing,
    Phase::Paused,
    Phase::RollingBack,
    Phase::Succeeded,
    Phase::RolledBack,
    Phase::Failed,
];

fn expected_health(phase: Phase) -> &'static str {
    match phase {
        Phase::Pending | Phase::Progressing | Phase::RollingBack => "Progressing",
        Phase::Paused => "Suspended",
        Phase::Succeeded => "Healthy",
        Phase::RolledBack | Phase::Failed => "Degraded",
    }
}

// ---- Rollouts as the API server serves them ----

/// A status at 0-based `step` of three, as the machine leaves it before the
/// controller writes the conditions.
fn status(phase: Phase, step: u32, message: &str) -> RolloutStatus {
    RolloutStatus {
        phase,
        current_step: step,
        total_steps: 3,
        step_label: format!("{}/3", step + 1),
        message: message.to_owned(),
        observed_generation: GENERATION,
        ..RolloutStatus::default()
    }
}

/// `status` with the conditions the controller writes beside it.
fn written(mut status: RolloutStatus, paused_by_request: bool) -> RolloutStatus {
    let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
    set_conditions(&mut status, paused_by_request, GENERATION, now);
    status
}

/// A Rollout at `generation` with `status`, as JSON.
fn rollout(generation: i64, status: Option<RolloutStatus>) -> Value {
    let mut rollout = Rollout::new("web", RolloutSpec::default());
    rollout.metadata.namespace = Some("shop".into());
    rollout.metadata.generation = Some(generation);
    rollout.status = status;
    serde_json::to_value(&rollout).expect("a Rollout serializes")
}

fn reason_of(status: &RolloutStatus, kind: &str) -> String {
    status
        .conditions
        .iter()
        .find(|c| c.kind == kind)
        .map(|c| format!("{}/{}", c.status, c.reason))
        .unwrap_or_default()
}

// ---- JSON -> Lua, and the interpreter ----

/// A Lua string literal holding `text` exactly.
fn lua_string(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 2);
    out.push('"');
    for c in text.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            // Other control characters as decimal escapes, three digits so
            // a following digit is not read into them; everything else
            // (UTF-8 included) is taken as it is.
            c if c.is_ascii_control() => out.push_str(&format!("\\{:03}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// A Lua table constructor for `value`, as Argo CD hands an object to a
/// health script: objects and arrays as tables, null as nil.
fn lua(value: &Value) -> String {
    match value {
        Value::Null => "nil".into(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => n.to_string(),
        Value::String(s) => lua_string(s),
        Value::Array(items) => {
            let items: Vec<String> = items.iter().map(lua).collect();
            format!("{{{}}}", items.join(", "))
        }
        Value::Object(fields) => {
            let fields: Vec<String> = fields
                .iter()
                .map(|(k, v)| format!("[{}] = {}", lua_string(k), lua(v)))
                .collect();
            format!("{{{}}}", fields.join(", "))
        }
    }
}

/// Runs the health script on `object` with `lua5.4`: (status, message).
fn health(object: &Value) -> (String, String) {
    let driver = format!(
        "obj = {}\nlocal hs = dofile({})\n\
         assert(type(hs) == \"table\", \"health.lua returned no table\")\n\
         assert(type(hs.message) == \"string\", \"hs.message is not a string\")\n\
         io.write(tostring(hs.status), \"\\t\", hs.message)\n",
        lua(object),
        lua_string(SCRIPT),
    );
    let mut child = Command::new("lua5.4")
        .arg("-")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| {
            panic!(
                "cannot run lua5.4 ({e}): the Argo CD health check is tested with a real Lua; \
                 run scripts/test, which installs it (apt-get install lua5.4)"
            )
        });
    child
        .stdin
        .take()
        .expect("stdin is piped")
        .write_all(driver.as_bytes())
        .expect("lua5.4 reads the driver");
    let out = child.wait_with_output().expect("lua5.4 runs");
    assert!(
        out.status.success(),
        "lua5.4 failed: {}\ndriver:\n{driver}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8(out.stdout).expect("UTF-8 output");
    let (status, message) = stdout.split_once('\t').expect("status<TAB>message");
    assert!(
        [
            "Healthy",
            "Progressing",
            "Suspended",
            "Degraded",
            "Missing",
            "Unknown"
        ]
        .contains(&status),
        "{status:?} is not an Argo CD health status"
    );
    (status.to_owned(), message.to_owned())
}

fn assert_health(object: &Value, status: &str, says: &[&str]) {
    let (got, message) = health(object);
    assert_eq!(got, status, "message: {message:?}");
    for part in says {
        assert!(message.contains(part), "{message:?} does not say {part:?}");
    }
}

// ---- The health of each phase ----

#[test]
fn every_phase_has_the_health_argo_cd_should_show() {
    for phase in PHASES {
        let message = format!("the machine says {phase:?}");
        let object = rollout(GENERATION, Some(written(status(phase, 1, &message), false)));
        assert_health(&object, expected_health(phase), &[&message]);
    }
}

#[test]
fn a_rollout_without_status_waits_for_the_controller() {
    assert_health(&rollout(1, None), "Progressing", &[WAITING]);
}

#[test]
fn a_spec_newer_than_the_status_waits_for_the_controller_even_after_success() {
    let done = written(status(Phase::Succeeded, 2, "released"), false);
    assert_health(
        &rollout(GENERATION + 1, Some(done)),
        "Progressing",
        &[WAITING],
    );
}

#[test]
fn a_status_from_before_observed_generation_existed_waits_for_the_controller() {
    let mut object = rollout(
        GENERATION,
        Some(written(status(Phase::Succeeded, 2, ""), false)),
    );
    object["status"]
        .as_object_mut()
        .expect("a status")
        .remove("observedGeneration");
    assert_health(&object, "Progressing", &[WAITING]);
}

#[test]
fn a_release_waiting_for_its_workload_is_progressing() {
    let mut pending = status(
        Phase::Pending,
        0,
        "waiting for the Deployment's own rollout to finish",
    );
    pending.step_label.clear();
    pending.total_steps = 0;
    let object = rollout(GENERATION, Some(written(pending, false)));
    assert_health(
        &object,
        "Progressing",
        &["Pending: waiting for the Deployment's own rollout to finish"],
    );
}

#[test]
fn a_release_in_flight_names_its_phase_step_and_message() {
    let running = written(
        status(Phase::Progressing, 1, "step 2: 3/6 new pods ready"),
        false,
    );
    assert_eq!(
        reason_of(&running, condition_types::PROGRESSING),
        format!("True/{}", reasons::RELEASING)
    );
    assert_health(
        &rollout(GENERATION, Some(running)),
        "Progressing",
        &["Progressing at step 2/3: step 2: 3/6 new pods ready"],
    );
}

#[test]
fn handing_the_workload_back_after_the_last_step_is_still_progressing() {
    // Blue-green's rollback window: still releasing (Pause and Abort apply).
    let mut window = status(
        Phase::Progressing,
        2,
        "all traffic on the new version; the old version is kept until 2023-11-14T22:23:20Z",
    );
    window.step_state = StepState::Completed;
    let mut given = window.clone();
    let window = written(window, false);
    assert_eq!(
        reason_of(&window, condition_types::PROGRESSING),
        format!("True/{}", reasons::RELEASING)
    );
    assert_health(
        &rollout(GENERATION, Some(window)),
        "Progressing",
        &["Progressing at step 3/3", "the old version is kept until"],
    );
    // Given back to its controller.
    given.handing_back_since = Some("2023-11-14T22:23:20Z".into());
    given.message = "handing back: 3 of 4 new pods ready".into();
    let given = written(given, false);
    assert_eq!(
        reason_of(&given, condition_types::PROGRESSING),
        format!("True/{}", reasons::HANDING_BACK)
    );
    assert_health(
        &rollout(GENERATION, Some(given)),
        "Progressing",
        &["Progressing at step 3/3", "handing back: 3 of 4"],
    );
}

#[test]
fn rolling_back_is_progressing_and_says_why() {
    let back = written(
        status(
            Phase::RollingBack,
            1,
            "step 2: analysis failed: error rate 7% > 1%",
        ),
        false,
    );
    assert_health(
        &rollout(GENERATION, Some(back)),
        "Progressing",
        &["RollingBack at step 2/3: step 2: analysis failed: error rate 7% > 1%"],
    );
}

// ---- Held releases are Suspended, saying why ----

#[test]
fn a_pause_by_request_is_suspended_and_says_so() {
    let held = written(
        status(Phase::Paused, 1, "paused on request; Resume continues"),
        true,
    );
    assert_eq!(
        reason_of(&held, condition_types::PAUSED),
        format!("True/{}", reasons::PAUSED_BY_REQUEST)
    );
    assert_health(
        &rollout(GENERATION, Some(held)),
        "Suspended",
        &["Paused by request at step 2/3: paused on request; Resume continues"],
    );
}

#[test]
fn a_steps_pause_is_suspended_and_says_until_when() {
    let mut held = status(Phase::Paused, 0, "step 1 paused until 2023-11-14T22:18:20Z");
    held.step_state = StepState::Paused;
    held.pause_until = Some("2023-11-14T22:18:20Z".into());
    let held = written(held, false);
    assert_eq!(
        reason_of(&held, condition_types::PAUSED),
        format!("True/{}", reasons::STEP_PAUSE)
    );
    assert_health(
        &rollout(GENERATION, Some(held)),
        "Suspended",
        &[
            "Paused by the step's pause at step 1/3",
            "until 2023-11-14T22:18:20Z",
        ],
    );
}

#[test]
fn an_inconclusive_analysis_is_suspended_and_says_so() {
    let message = "step 2: analysis Inconclusive: no data for error-rate; \
                   Promote to continue, Abort to roll back";
    let mut held = status(Phase::Paused, 1, message);
    held.step_state = StepState::Paused;
    held.analysis = Some(AnalysisResult {
        step: 1,
        verdict: Some(Verdict::Inconclusive),
        message: "no data for error-rate".into(),
        evidence: Vec::new(),
    });
    let held = written(held, false);
    assert_eq!(
        reason_of(&held, condition_types::PAUSED),
        format!("True/{}", reasons::ANALYSIS_INCONCLUSIVE)
    );
    assert_health(
        &rollout(GENERATION, Some(held)),
        "Suspended",
        &["Paused after an inconclusive analysis at step 2/3", message],
    );
}

#[test]
fn a_release_paused_before_its_start_is_suspended_though_pending() {
    let mut pending = status(
        Phase::Pending,
        0,
        "paused on request before the start; Resume starts it",
    );
    pending.step_label.clear();
    let held = written(pending, true);
    assert_eq!(
        reason_of(&held, condition_types::PAUSED),
        format!("True/{}", reasons::PAUSED_BY_REQUEST)
    );
    assert_health(
        &rollout(GENERATION, Some(held)),
        "Suspended",
        &["Paused by request: paused on request before the start; Resume starts it"],
    );
}

// ---- Ends ----

#[test]
fn success_is_healthy() {
    let done = written(
        status(
            Phase::Succeeded,
            2,
            "released; the Deployment is handed back",
        ),
        false,
    );
    assert_health(
        &rollout(GENERATION, Some(done)),
        "Healthy",
        &["Succeeded: released; the Deployment is handed back"],
    );
}

#[test]
fn a_rollback_and_a_failure_are_degraded_with_their_reason() {
    let back = written(status(Phase::RolledBack, 1, "aborted: bad build"), false);
    assert_health(
        &rollout(GENERATION, Some(back)),
        "Degraded",
        &["RolledBack: aborted: bad build"],
    );
    let failed = written(
        status(Phase::Failed, 0, "the workload has no container named web"),
        false,
    );
    assert_health(
        &rollout(GENERATION, Some(failed)),
        "Degraded",
        &["Failed: the workload has no container named web"],
    );
}

#[test]
fn an_unknown_phase_is_unknown_and_named() {
    let mut object = rollout(
        GENERATION,
        Some(written(status(Phase::Progressing, 0, ""), false)),
    );
    object["status"]["phase"] = "Exploding".into();
    assert_health(&object, "Unknown", &["Unknown phase Exploding"]);
}

#[test]
fn messages_with_quotes_backslashes_and_newlines_reach_lua_intact() {
    let message = "metric \"p99\" > 2s\\n\nsecond line\t\u{7}é ]] [[";
    let failed = written(status(Phase::Failed, 0, message), false);
    let (got, said) = health(&rollout(GENERATION, Some(failed)));
    assert_eq!(got, "Degraded");
    assert_eq!(said, format!("Failed: {message}"));
}

// ---- The argocd-cm patch ----

/// `argocd-cm-patch.yaml` as generated from the script.
fn patch(script: &str) -> String {
    let mut out = String::from(
        "# Generated from deploy/argocd/health.lua; do not edit.\n\
         # Regenerate: SLUICE_UPDATE_ARGOCD=1 cargo test -p sluice-integration-tests --test argocd_health\n\
         # Install (in Argo CD's namespace):\n\
         #   kubectl -n argocd patch configmap argocd-cm --patch-file deploy/argocd/argocd-cm-patch.yaml\n\
         apiVersion: v1\n\
         kind: ConfigMap\n\
         metadata:\n\
         \x20 name: argocd-cm\n\
         \x20 labels:\n\
         \x20   app.kubernetes.io/name: argocd-cm\n\
         \x20   app.kubernetes.io/part-of: argocd\n\
         data:\n",
    );
    out.push_str(&format!("  {KEY}: |\n"));
    for line in script.lines() {
        if !line.is_empty() {
            out.push_str("    ");
            out.push_str(line);
        }
        out.push('\n');
    }
    out
}

#[test]
fn the_argocd_cm_patch_embeds_exactly_health_lua() {
    let script = std::fs::read_to_string(SCRIPT).expect("deploy/argocd/health.lua");
    // A block scalar keeps exactly one final newline and cannot start with
    // indentation; the script must fit it to be embedded as it is.
    assert!(
        script.ends_with('\n') && !script.ends_with("\n\n") && !script.starts_with(' '),
        "health.lua must end with exactly one newline and not start with a space"
    );
    let fresh = patch(&script);
    if std::env::var_os("SLUICE_UPDATE_ARGOCD").is_some() {
        std::fs::write(PATCH, &fresh).expect("write deploy/argocd/argocd-cm-patch.yaml");
    }
    let stored = std::fs::read_to_string(PATCH).unwrap_or_default();
    assert!(
        stored == fresh,
        "deploy/argocd/argocd-cm-patch.yaml is stale: run \
         SLUICE_UPDATE_ARGOCD=1 cargo test -p sluice-integration-tests --test argocd_health"
    );
    // And read back as YAML, the key holds the script byte for byte.
    let parsed: serde_yaml::Value = serde_yaml::from_str(&stored).expect("the patch is YAML");
    assert_eq!(parsed["kind"].as_str(), Some("ConfigMap"));
    assert_eq!(parsed["metadata"]["name"].as_str(), Some("argocd-cm"));
    assert_eq!(parsed["data"][KEY].as_str(), Some(script.as_str()));
}
