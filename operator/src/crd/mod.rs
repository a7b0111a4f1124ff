//! Custom resources of the `kubeledger.io/v1alpha1` API: [`Consortium`] (cluster
//! scoped) and [`Member`] (namespaced).
//!
//! The CRD YAML in `crds/` is generated from these types (`kubeledger-operator crd`)
//! and a test fails when the checked-in files drift from the types.

mod chain_params;
mod consortium;
mod duration;
mod member;

pub use chain_params::{ChainConfigStatus, EffectiveConfig, ScheduledParamsStatus};
pub use consortium::*;
pub use duration::{parse_duration, DurationError};
pub use member::*;

use kube::CustomResourceExt;

/// The API group of every kubeledger resource.
pub const GROUP: &str = "kubeledger.io";

type Crd =
    k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;

/// Every CRD of the operator, in the order they are written to `crds/`.
pub fn all_crds() -> Vec<Crd> {
    vec![Consortium::crd(), Member::crd()]
        .into_iter()
        .map(kubernetes_formats_only)
        .collect()
}

/// Integer formats the schema generator writes for Rust's unsigned types,
/// which the API server does not know: it warns about each one on every
/// apply of the CRDs. The bounds (`minimum`, `maximum`) stay and still hold.
const UNKNOWN_FORMATS: [&str; 5] = ["uint", "uint8", "uint16", "uint32", "uint64"];

fn kubernetes_formats_only(crd: Crd) -> Crd {
    fn strip(v: &mut serde_json::Value, depth: usize) {
        // CRD schemas nest a few dozen levels at most; the bound only keeps
        // the walk from recursing without limit on a hand-made type.
        if depth > 64 {
            return;
        }
        match v {
            serde_json::Value::Object(map) => {
                if map
                    .get("format")
                    .and_then(|f| f.as_str())
                    .is_some_and(|f| UNKNOWN_FORMATS.contains(&f))
                {
                    map.remove("format");
                }
                map.values_mut().for_each(|v| strip(v, depth + 1));
            }
            serde_json::Value::Array(items) => items.iter_mut().for_each(|v| strip(v, depth + 1)),
            _ => {}
        }
    }
    let Ok(mut value) = serde_json::to_value(&crd) else {
        return crd;
    };
    strip(&mut value, 0);
    serde_json::from_value(value).unwrap_or(crd)
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
