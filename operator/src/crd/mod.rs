//! Custom resources of the `kubeledger.io/v1alpha1` API: [`Consortium`] (cluster
//! scoped) and [`Member`] (namespaced).
//!
//! The CRD YAML in `crds/` is generated from these types (`kubeledger-operator crd`)
//! and a test fails when the checked-in files drift from the types.

mod consortium;
mod duration;
mod member;

pub use consortium::*;
pub use duration::{parse_duration, DurationError};
pub use member::*;

use kube::CustomResourceExt;

/// The API group of every kubeledger resource.
pub const GROUP: &str = "kubeledger.io";

/// Every CRD of the operator, in the order they are written to `crds/`.
pub fn all_crds(
) -> Vec<k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition>
{
    vec![Consortium::crd(), Member::crd()]
}

/// The CRDs as one multi-document YAML stream (what `kubeledger-operator crd` prints).
pub fn crds_yaml() -> Result<String, serde_yaml::Error> {
    let mut out = String::new();
    for crd in all_crds() {
        out.push_str("---\n");
        out.push_str(&serde_yaml::to_string(&crd)?);
    }
    Ok(out)
}

/// The checked-in file holding [`crds_yaml`], relative to the repository root
/// (the Helm chart keeps an identical copy in `charts/kubeledger/crds/`).
pub const CRD_FILE: &str = "crds/kubeledger.io.yaml";
