//! The Member's teardown: its removal from the chain's configuration first
//! (for a Member that joined after genesis), then its nodes and what they used.

use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{
    ConfigMap, PersistentVolumeClaim, Secret, Service, ServiceAccount,
};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use kube::api::{DeleteParams, ListParams};
use kube::runtime::controller::Action;
use kube::runtime::events::EventType;
use kube::{Api, ResourceExt};
use tracing::info;

use crate::build::names;
use crate::controller::{delete_if_exists, on_chain, Context};
use crate::crd::{Consortium, Member};
use crate::{Error, Result};

/// Where a deleted Member's teardown stands before anything is deleted.
pub(super) enum Teardown {
    /// Tear down now, with the Member's Consortium if it was read (its node
    /// defaults say whether volumes go).
    Proceed(Option<Box<Consortium>>),
    /// Not yet, for this reason: the Member's removal from the chain's
    /// configuration is pending, or its nodes still validate.
    Waits(String),
}

/// Teardown step 1: reads the Consortium where needed and, for a Member that
/// joined after genesis (it has an admission proposal), proposes its removal
/// from the chain's configuration first. Its nodes keep running until they
/// left the validator set (demoted to observers at the switch), so the old
/// set keeps its members until its epoch ends.
pub(super) async fn prepare_teardown(member: &Member, ctx: &Context) -> Result<Teardown> {
    let joined = member
        .status
        .as_ref()
        .is_some_and(|s| s.admission.is_some());
    let consortium = if member.spec.storage.is_none() || joined {
        Api::<Consortium>::all(ctx.client.clone())
            .get_opt(&member.spec.consortium)
            .await
            .map_err(Error::kube("read", "Consortium", &member.spec.consortium))?
    } else {
        None
    };
    if let (true, Some(c)) = (joined, &consortium) {
        if let on_chain::Removal::Pending(why) = on_chain::propose_removal(ctx, member, c).await? {
            return Ok(Teardown::Waits(why));
        }
    }
    Ok(Teardown::Proceed(consortium.map(Box::new)))
}

/// Tears down in order: nodes first, then what they used. The node keys follow
/// the data: with `storage.deleteOnTeardown` the volumes go and then the key
/// Secret; otherwise both stay for a Member re-created under the same name.
/// The genesis ConfigMap belongs to the Consortium.
pub(super) async fn cleanup_member(
    member: &Member,
    ctx: &Context,
    consortium: Option<Consortium>,
) -> Result<Action> {
    let name = member.name_any();
    let ns = member
        .namespace()
        .ok_or(Error::MissingField("metadata.namespace"))?;
    let client = &ctx.client;
    // The Member's storage, or else the Consortium's node defaults (if it still exists).
    let delete_volumes = match &member.spec.storage {
        Some(storage) => storage.delete_on_teardown,
        None => consortium
            .as_ref()
            .is_some_and(|c| c.spec.node_defaults.storage.delete_on_teardown),
    };
    ctx.event(
        member,
        EventType::Normal,
        "TearingDown",
        "Teardown",
        if delete_volumes {
            "Deleting the member's nodes, their volumes and their keys".into()
        } else {
            format!(
                "Deleting the member's nodes; volumes and Secret {} are kept for a Member re-created as {name}",
                names::secret(&name)
            )
        },
    )
    .await;
    delete_if_exists::<StatefulSet>(client, &ns, &names::statefulset(&name)).await?;
    delete_if_exists::<PodDisruptionBudget>(client, &ns, &names::pdb(&name)).await?;
    delete_if_exists::<Service>(client, &ns, &names::client_service(&name)).await?;
    delete_if_exists::<Service>(client, &ns, &names::headless_service(&name)).await?;
    delete_if_exists::<ConfigMap>(client, &ns, &names::config_map(&name)).await?;
    delete_if_exists::<ServiceAccount>(client, &ns, &names::service_account(&name)).await?;
    if delete_volumes {
        let pvcs: Api<PersistentVolumeClaim> = Api::namespaced(client.clone(), &ns);
        let selector =
            format!("app.kubernetes.io/name=kubeledger-node,app.kubernetes.io/instance={name}");
        pvcs.delete_collection(
            &DeleteParams::default(),
            &ListParams::default().labels(&selector),
        )
        .await
        .map_err(Error::kube(
            "delete",
            "PersistentVolumeClaim",
            format!("{ns}/{selector}"),
        ))?;
        // Keys last: if the volume deletion failed, the retry still finds them.
        delete_if_exists::<Secret>(client, &ns, &names::secret(&name)).await?;
    }
    info!(delete_volumes, "member torn down");
    Ok(Action::await_change())
}
