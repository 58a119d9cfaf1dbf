//! Events, as kube-apiserver keeps them: one store seen through two APIs.
//! An Event written through `events.k8s.io/v1` (what kube-rs' and
//! client-go's new recorders write) is read through core `v1` (what
//! `kubectl get events` and `kubectl describe` read) and the other way
//! round; each API names some fields its own way. Writes are checked as
//! kube-apiserver checks them, with the stricter rules for an Event
//! created through `events.k8s.io/v1`.

use serde_json::{Map, Value, json};

/// Fields named differently in the two APIs: core `v1`, then
/// `events.k8s.io/v1`.
const RENAMED: [(&str, &str); 6] = [
    ("involvedObject", "regarding"),
    ("message", "note"),
    ("source", "deprecatedSource"),
    ("firstTimestamp", "deprecatedFirstTimestamp"),
    ("lastTimestamp", "deprecatedLastTimestamp"),
    ("count", "deprecatedCount"),
];

/// The reporting controller's field, named differently too.
const REPORTER: (&str, &str) = ("reportingComponent", "reportingController");

/// An `events.k8s.io/v1` Event as core `v1` stores it.
pub(crate) fn to_core(event: Value) -> Value {
    rename(event, "v1", |name| {
        RENAMED
            .iter()
            .chain(std::iter::once(&REPORTER))
            .find(|(_, new)| *new == name)
            .map(|(core, _)| *core)
    })
}

/// A core `v1` Event as `events.k8s.io/v1` shows it.
pub(crate) fn to_v1(event: Value) -> Value {
    let mut shown = rename(event, "events.k8s.io/v1", |name| {
        RENAMED
            .iter()
            .chain(std::iter::once(&REPORTER))
            .find(|(core, _)| *core == name)
            .map(|(_, new)| *new)
    });
    // `events.k8s.io/v1` leaves out what is empty; core `v1` writes its
    // reporter's fields always.
    if let Some(map) = shown.as_object_mut() {
        for key in ["reportingController", "reportingInstance"] {
            if map.get(key).is_some_and(|v| v == "") {
                map.remove(key);
            }
        }
    }
    defaults(&mut shown, true);
    shown
}

fn rename(event: Value, api_version: &str, to: impl Fn(&str) -> Option<&'static str>) -> Value {
    let Value::Object(fields) = event else {
        return event;
    };
    let mut out = Map::new();
    for (key, value) in fields {
        let key = to(&key).map_or(key, str::to_owned);
        out.insert(key, value);
    }
    out.insert("apiVersion".to_owned(), json!(api_version));
    Value::Object(out)
}

/// What an Event shows when it was written without them, in core `v1`
/// (`v1_view` false) or in `events.k8s.io/v1`: its times as null, its
/// source as `{}`, and in core `v1` its reporter as empty text.
pub(crate) fn defaults(event: &mut Value, v1_view: bool) {
    let Some(map) = event.as_object_mut() else {
        return;
    };
    let (nulls, source): (&[&str], &str) = if v1_view {
        (
            &[
                "eventTime",
                "deprecatedFirstTimestamp",
                "deprecatedLastTimestamp",
            ],
            "deprecatedSource",
        )
    } else {
        (&["eventTime", "firstTimestamp", "lastTimestamp"], "source")
    };
    for key in nulls {
        map.entry(*key).or_insert(Value::Null);
    }
    map.entry(source).or_insert_with(|| json!({}));
    if !v1_view {
        for key in ["reportingComponent", "reportingInstance"] {
            map.entry(key).or_insert_with(|| json!(""));
        }
    }
}

/// What kube-apiserver refuses in an Event being created, given in its
/// core `v1` form; `through_v1` when it came through `events.k8s.io/v1`,
/// which requires a time and refuses the deprecated fields.
pub(crate) fn problems(event: &Value, through_v1: bool) -> Vec<(String, String)> {
    let mut found = Vec::new();
    let text = |key: &str| event[key].as_str().unwrap_or_default();
    let timed = !event["eventTime"].is_null();
    if through_v1 {
        if !timed {
            found.push(("eventTime".to_owned(), "Required value".to_owned()));
        }
        let kind = text("type");
        if kind != "Normal" && kind != "Warning" {
            found.push((
                "type".to_owned(),
                format!("Invalid value: \"\": has invalid value: {kind}"),
            ));
        }
        let set = |key: &str| match &event[key] {
            Value::Null => false,
            Value::Number(n) => n.as_i64() != Some(0),
            Value::Object(o) => o
                .values()
                .any(|v| v.as_str().is_some_and(|s| !s.is_empty())),
            Value::String(s) => !s.is_empty(),
            _ => true,
        };
        for key in ["firstTimestamp", "lastTimestamp", "count", "source"] {
            if set(key) {
                found.push((
                    key.to_owned(),
                    "Invalid value: \"\": needs to be unset".to_owned(),
                ));
            }
        }
    }
    if timed {
        // An Event with a time names who reported it and what was done.
        let reporter = if through_v1 { REPORTER.1 } else { REPORTER.0 };
        for (key, field) in [
            ("reportingComponent", reporter),
            ("reportingInstance", "reportingInstance"),
            ("action", "action"),
            ("reason", "reason"),
        ] {
            if text(key).is_empty() {
                found.push((field.to_owned(), "Required value".to_owned()));
            }
        }
        for (key, field, limit) in [
            ("reportingInstance", "reportingInstance", 128),
            ("action", "action", 128),
            ("reason", "reason", 128),
            ("message", if through_v1 { "note" } else { "message" }, 1024),
        ] {
            if text(key).len() > limit {
                found.push((
                    field.to_owned(),
                    format!("Too long: may not be more than {limit} bytes"),
                ));
            }
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_event_reads_the_same_through_either_api() {
        let core = json!({"apiVersion": "v1", "kind": "Event", "metadata": {"name": "e"},
            "involvedObject": {"kind": "Pod", "name": "p"}, "message": "m", "reason": "R",
            "source": {"component": "c"}, "count": 2, "type": "Normal",
            "reportingComponent": "", "reportingInstance": ""});
        let shown = to_v1(core.clone());
        assert_eq!(shown["apiVersion"], "events.k8s.io/v1");
        assert_eq!(shown["regarding"], core["involvedObject"]);
        assert_eq!(shown["note"], "m");
        assert_eq!(shown["deprecatedCount"], 2);
        assert_eq!(shown["deprecatedSource"], json!({"component": "c"}));
        assert!(shown.get("reportingController").is_none());
        let mut back = to_core(shown);
        defaults(&mut back, false);
        let mut expected = core;
        defaults(&mut expected, false);
        expected["reportingComponent"] = json!("");
        assert_eq!(back, expected);
    }

    #[test]
    fn an_event_created_through_events_v1_needs_a_time_and_no_deprecated_fields() {
        let event = to_core(json!({"type": "Odd", "deprecatedCount": 3,
            "deprecatedSource": {"component": "x"}, "reason": "R"}));
        let fields: Vec<String> = problems(&event, true).into_iter().map(|(f, _)| f).collect();
        assert_eq!(fields, ["eventTime", "type", "count", "source"]);
        assert!(problems(&event, false).is_empty(), "core v1 takes it");
        let timed = to_core(
            json!({"type": "Normal", "eventTime": "2026-01-01T00:00:00.000000Z",
            "reason": "R"}),
        );
        let fields: Vec<String> = problems(&timed, true).into_iter().map(|(f, _)| f).collect();
        assert_eq!(
            fields,
            ["reportingController", "reportingInstance", "action"]
        );
        let fields: Vec<String> = problems(&timed, false)
            .into_iter()
            .map(|(f, _)| f)
            .collect();
        assert_eq!(
            fields,
            ["reportingComponent", "reportingInstance", "action"]
        );
    }
}
