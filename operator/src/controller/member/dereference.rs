//! Step 1, dereference: what a Member points at.

use k8s_openapi::api::core::v1::Secret;
use kube::{Api, ResourceExt};

use crate::build::names;
use crate::controller::Context;
use crate::crd::{Consortium, Member};
use crate::{Error, Result};

/// What a Member points at: its Consortium and the key Secret kept for it.
pub(super) struct Found {
    pub(super) consortium: Consortium,
    pub(super) existing_secret: Option<Secret>,
}

/// Step 1, dereference: the Member's Consortium (None if it does not exist)
/// and its existing key Secret.
pub(super) async fn dereference(ctx: &Context, member: &Member, ns: &str) -> Result<Option<Found>> {
    let consortia: Api<Consortium> = Api::all(ctx.client.clone());
    let name = &member.spec.consortium;
    let found = consortia.get_opt(name).await;
    let Some(consortium) = found.map_err(Error::kube("read", "Consortium", name))? else {
        return Ok(None);
    };
    let secrets: Api<Secret> = Api::namespaced(ctx.client.clone(), ns);
    let secret = names::secret(&member.name_any());
    let existing_secret = secrets.get_opt(&secret).await.map_err(Error::kube(
        "read",
        "Secret",
        format!("{ns}/{secret}"),
    ))?;
    Ok(Some(Found {
        consortium,
        existing_secret,
    }))
}
