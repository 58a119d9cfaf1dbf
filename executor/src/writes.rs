//! Parameters of the executor's writes: each one names the field manager
//! [`keys::FIELD_MANAGER`], so `managedFields` on every object it touches
//! say which fields Sluice wrote (server-side apply users and GitOps tools
//! read them).

use kube::api::{PatchParams, PostParams};

use crate::keys;

/// Parameters for a patch.
pub fn patch() -> PatchParams {
    PatchParams {
        field_manager: Some(keys::FIELD_MANAGER.to_string()),
        ..PatchParams::default()
    }
}

/// Parameters for a create or a replace.
pub fn post() -> PostParams {
    PostParams {
        field_manager: Some(keys::FIELD_MANAGER.to_string()),
        ..PostParams::default()
    }
}
