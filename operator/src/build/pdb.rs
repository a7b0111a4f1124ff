//! `<member>`: PodDisruptionBudget letting voluntary disruptions take at most one
//! of the member's nodes at a time.

use k8s_openapi::api::policy::v1::{PodDisruptionBudget, PodDisruptionBudgetSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::{names, MemberInputs};
use crate::Result;

pub fn build(inputs: &MemberInputs<'_>) -> Result<PodDisruptionBudget> {
    Ok(PodDisruptionBudget {
        metadata: inputs.metadata(names::pdb(&inputs.name()?))?,
        spec: Some(PodDisruptionBudgetSpec {
            max_unavailable: Some(IntOrString::Int(1)),
            selector: Some(LabelSelector {
                match_labels: Some(inputs.selector_labels()?),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures;

    #[test]
    fn one_node_at_a_time() {
        let (c, m, s) = fixtures::inputs();
        let pdb = build(&MemberInputs {
            member: &m,
            consortium: &c,
            settings: &s,
        })
        .expect("build");
        let spec = pdb.spec.expect("spec");
        assert_eq!(spec.max_unavailable, Some(IntOrString::Int(1)));
        assert_eq!(
            spec.selector.expect("sel").match_labels.expect("labels")["app.kubernetes.io/instance"],
            "org1"
        );
    }
}
