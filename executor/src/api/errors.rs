//! Statuses the API answers with: field violations capped to fit a gRPC
//! header, and the Kubernetes API's answers mapped to precise codes.
//!
//! A status travels in HTTP/2 trailers (`grpc-message`, and
//! `grpc-status-details-bin` in base64), and grpc-core clients refuse
//! metadata past 8 KiB in all, reporting RESOURCE_EXHAUSTED instead of the
//! real status. So a status lists at most [`MAX_VIOLATIONS`] violations,
//! each clipped, then one more saying how many were left out, and its
//! message (sent twice: percent-encoded, and inside the details) is clipped
//! to [`MAX_MESSAGE_BYTES`]. At worst, every byte non-ASCII, the two
//! headers come to about 6.5 KiB; a status of ASCII paths and values to
//! under 5 KiB.

use tonic::{Code, Status};
use tonic_types::{ErrorDetails, StatusExt};

/// Violations listed in full in one status; the rest are counted.
pub const MAX_VIOLATIONS: usize = 20;
/// A violation's field path is clipped to this many bytes.
pub const MAX_FIELD_BYTES: usize = 80;
/// A violation's description is clipped to this many bytes.
pub const MAX_DESCRIPTION_BYTES: usize = 100;
/// A status message is clipped to this many bytes.
pub const MAX_MESSAGE_BYTES: usize = 256;
/// The field of the violation that counts those left out.
pub const MORE_FIELD: &str = "(more)";

/// `text`, cut at a character boundary to at most `max` bytes, with `…`
/// marking the cut.
pub fn clip(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_owned();
    }
    const MARK: &str = "…";
    let mut end = max.saturating_sub(MARK.len());
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}{MARK}", &text[..end])
}

/// A violation's description clipped to [`MAX_DESCRIPTION_BYTES`], its
/// closing ", got VALUE" kept (the value clipped on its own) so that the
/// value the caller sent is always shown: the explanation before it gives
/// way first.
pub fn clip_description(description: &str) -> String {
    if description.len() <= MAX_DESCRIPTION_BYTES {
        return description.to_owned();
    }
    let Some(at) = description.rfind(", got ") else {
        return clip(description, MAX_DESCRIPTION_BYTES);
    };
    let tail = clip(&description[at..], MAX_DESCRIPTION_BYTES / 2);
    let head = clip(&description[..at], MAX_DESCRIPTION_BYTES - tail.len());
    format!("{head}{tail}")
}

/// INVALID_ARGUMENT with a BadRequest listing `violations` as
/// `(field path, description)`, capped as the module says.
pub fn invalid(violations: &[(String, String)]) -> Status {
    let mut details = ErrorDetails::new();
    let shown = &violations[..violations.len().min(MAX_VIOLATIONS)];
    for (field, description) in shown {
        details
            .add_bad_request_violation(clip(field, MAX_FIELD_BYTES), clip_description(description));
    }
    let hidden = violations.len() - shown.len();
    if hidden > 0 {
        details.add_bad_request_violation(
            MORE_FIELD,
            format!(
                "{hidden} more problems not listed (the first {MAX_VIOLATIONS} of {} are)",
                violations.len()
            ),
        );
    }
    let mut summary = shown
        .iter()
        .map(|(f, d)| format!("{}: {}", clip(f, MAX_FIELD_BYTES), clip_description(d)))
        .collect::<Vec<_>>()
        .join("; ");
    if violations.len() > 1 {
        summary = format!("{} problems: {summary}", violations.len());
    }
    Status::with_error_details(
        Code::InvalidArgument,
        clip(&summary, MAX_MESSAGE_BYTES),
        details,
    )
}

/// INVALID_ARGUMENT for one field.
pub fn invalid_field(field: &str, description: impl Into<String>) -> Status {
    invalid(&[(field.to_owned(), description.into())])
}

/// What a failed Kubernetes call was about, to name it in the status.
#[derive(Debug, Clone, Copy)]
pub enum Target<'a> {
    /// A rollout, by namespace and name.
    Rollout(&'a str, &'a str),
    /// Creating a rollout: a 404 then means the namespace is missing.
    NewRollout(&'a str, &'a str),
}

/// NOT_FOUND naming a namespace that does not exist, with a ResourceInfo.
pub fn namespace_not_found(namespace: &str) -> Status {
    let details = ErrorDetails::with_resource_info(
        "Namespace",
        namespace,
        "",
        format!("namespace {namespace} does not exist"),
    );
    Status::with_error_details(
        Code::NotFound,
        format!("namespace {namespace} does not exist"),
        details,
    )
}

/// The Kubernetes API's answer as a gRPC status for `target`.
///
/// 404 is NOT_FOUND naming the rollout (or, on a create, the namespace);
/// 409 ABORTED (changed meanwhile; try again); 400 and 422
/// INVALID_ARGUMENT; 413 (the object is too large to store)
/// INVALID_ARGUMENT naming `spec`, which no retry can help; 403
/// PERMISSION_DENIED; anything else UNAVAILABLE.
pub fn kube_status(error: kube::Error, target: Target<'_>) -> Status {
    let (namespace, name) = match target {
        Target::Rollout(ns, n) | Target::NewRollout(ns, n) => (ns, n),
    };
    match error {
        kube::Error::Api(e) if e.code == 404 => match target {
            Target::NewRollout(..) => namespace_not_found(namespace),
            Target::Rollout(..) => {
                Status::not_found(format!("rollout {namespace}/{name} not found"))
            }
        },
        kube::Error::Api(e) if e.code == 409 => Status::aborted(clip(
            &format!(
                "rollout {namespace}/{name} changed meanwhile; try again: {}",
                e.message
            ),
            MAX_MESSAGE_BYTES,
        )),
        kube::Error::Api(e) if e.code == 413 => invalid_field(
            "spec",
            format!(
                "the Rollout is too large for the Kubernetes API to store: {}",
                e.message
            ),
        ),
        kube::Error::Api(e) if e.code == 422 || e.code == 400 => {
            Status::invalid_argument(clip(&e.message, MAX_MESSAGE_BYTES))
        }
        // An admission webhook refused the object (a second binding of a
        // workload, a policy): what the cluster holds forbids it.
        kube::Error::Api(e) if e.code == 403 && e.message.contains("admission webhook") => {
            Status::failed_precondition(clip(&e.message, MAX_MESSAGE_BYTES))
        }
        // The caller was allowed (its token); the executor's own account
        // was not: an install to fix, not the caller's permission.
        kube::Error::Api(e) if e.code == 403 => Status::failed_precondition(clip(
            &format!(
                "the executor is not allowed this request (its RBAC needs the permission): {}",
                e.message
            ),
            MAX_MESSAGE_BYTES,
        )),
        other => Status::unavailable(clip(
            &format!("the Kubernetes API failed: {other}"),
            MAX_MESSAGE_BYTES,
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The bytes of the two headers a status travels in: the details in
    /// base64 (4 bytes for every 3), the message percent-encoded (3 bytes
    /// for each byte outside printable ASCII).
    fn header_bytes(status: &Status) -> usize {
        let message: usize = status
            .message()
            .bytes()
            .map(|b| {
                if (0x20..0x7f).contains(&b) && b != b'%' {
                    1
                } else {
                    3
                }
            })
            .sum();
        status.details().len().div_ceil(3) * 4 + message
    }

    fn refused(message: &str) -> kube::Error {
        kube::Error::Api(
            kube::core::Status::failure(message, "Forbidden")
                .with_code(403)
                .boxed(),
        )
    }

    #[test]
    fn a_refusal_of_the_executors_own_account_is_a_failed_precondition_naming_it() {
        let status = kube_status(
            refused(
                r#"rollouts.sluice.dev "web" is forbidden: User "system:serviceaccount:sluice-system:sluice-executor" cannot patch resource "rollouts/status""#,
            ),
            Target::Rollout("shop", "web"),
        );
        assert_eq!(status.code(), Code::FailedPrecondition);
        assert!(
            status
                .message()
                .starts_with("the executor is not allowed this request")
                && status.message().contains("cannot patch resource"),
            "{}",
            status.message()
        );
        let webhook = kube_status(
            refused(
                r#"admission webhook "rollouts.sluice.dev" denied the request: Deployment web is bound to Rollout "web""#,
            ),
            Target::NewRollout("shop", "web-2"),
        );
        assert_eq!(webhook.code(), Code::FailedPrecondition);
        assert!(
            webhook.message().starts_with("admission webhook"),
            "{}",
            webhook.message()
        );
    }

    #[test]
    fn ten_thousand_violations_fit_in_a_header_and_are_counted() {
        let violations: Vec<(String, String)> = (0..10_000)
            .map(|i| {
                (
                    format!("spec.strategy.canary.steps[{i}].traffic"),
                    format!("must be between 0 and 100, got {}", 100 + i),
                )
            })
            .collect();
        let status = invalid(&violations);
        assert_eq!(status.code(), Code::InvalidArgument);
        assert!(
            header_bytes(&status) < 5 * 1024,
            "{}",
            header_bytes(&status)
        );
        let listed = status
            .get_error_details()
            .bad_request()
            .unwrap()
            .field_violations
            .clone();
        assert_eq!(listed.len(), MAX_VIOLATIONS + 1);
        assert_eq!(listed[0].field, "spec.strategy.canary.steps[0].traffic");
        assert_eq!(listed[MAX_VIOLATIONS].field, MORE_FIELD);
        assert!(
            listed[MAX_VIOLATIONS].description.contains("9980 more"),
            "{listed:?}"
        );
        assert!(
            status.message().starts_with("10000 problems: "),
            "{}",
            status.message()
        );
    }

    #[test]
    fn a_clipped_description_still_shows_the_value_sent() {
        let long = format!("{}, got \"Web!\"", "an explanation ".repeat(20));
        let clipped = clip_description(&long);
        assert!(clipped.len() <= MAX_DESCRIPTION_BYTES, "{clipped}");
        assert!(clipped.ends_with(", got \"Web!\""), "{clipped}");
        assert!(clipped.starts_with("an explanation"), "{clipped}");
        // A huge value is clipped on its own, within the same bound.
        let huge = format!("must be short, got {}", "x".repeat(500));
        let clipped = clip_description(&huge);
        assert!(clipped.len() <= MAX_DESCRIPTION_BYTES, "{clipped}");
        assert!(clipped.contains(", got xxx"), "{clipped}");
    }

    #[test]
    fn long_fields_and_descriptions_are_clipped_at_a_character_boundary() {
        let huge = "é".repeat(100_000);
        let status = invalid(&vec![(huge.clone(), huge); MAX_VIOLATIONS]);
        assert!(
            header_bytes(&status) < 7 * 1024,
            "{}",
            header_bytes(&status)
        );
        let listed = status
            .get_error_details()
            .bad_request()
            .unwrap()
            .field_violations
            .clone();
        assert!(listed[0].description.ends_with('…'));
        assert!(listed[0].description.len() <= MAX_DESCRIPTION_BYTES);
        assert!(listed[0].field.len() <= MAX_FIELD_BYTES);
    }

    #[test]
    fn a_payload_too_large_answer_is_an_invalid_spec_not_unavailable() {
        let e = kube::Error::Api(
            kube::core::Status::failure("length limit exceeded", "Failed to parse error data")
                .with_code(413)
                .boxed(),
        );
        let status = kube_status(e, Target::NewRollout("default", "web"));
        assert_eq!(status.code(), Code::InvalidArgument);
        let listed = status
            .get_error_details()
            .bad_request()
            .unwrap()
            .field_violations
            .clone();
        assert_eq!(listed[0].field, "spec");
    }

    #[test]
    fn a_missing_namespace_on_create_is_named() {
        let e = kube::Error::Api(
            kube::core::Status::failure("namespaces \"nope\" not found", "NotFound")
                .with_code(404)
                .boxed(),
        );
        let status = kube_status(e, Target::NewRollout("nope", "web"));
        assert_eq!(status.code(), Code::NotFound);
        assert!(
            status.message().contains("namespace nope"),
            "{}",
            status.message()
        );
        assert_eq!(
            status
                .get_error_details()
                .resource_info()
                .unwrap()
                .resource_name,
            "nope"
        );
    }
}
