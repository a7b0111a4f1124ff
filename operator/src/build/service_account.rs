//! `<member>-node`: the nodes' ServiceAccount; nodes never talk to the API server.

use k8s_openapi::api::core::v1::ServiceAccount;

use super::{names, MemberInputs};
use crate::Result;

pub fn build(inputs: &MemberInputs<'_>) -> Result<ServiceAccount> {
    Ok(ServiceAccount {
        metadata: inputs.metadata(names::service_account(&inputs.name()?))?,
        automount_service_account_token: Some(false),
        ..Default::default()
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures;

    #[test]
    fn no_token_automount() {
        let (c, m, s) = fixtures::inputs();
        let sa = build(&MemberInputs {
            member: &m,
            consortium: &c,
            settings: &s,
        })
        .expect("build");
        assert_eq!(sa.automount_service_account_token, Some(false));
        assert_eq!(sa.metadata.name.as_deref(), Some("org1-node"));
    }
}
