//! Errors of the operator library.

/// Everything that can fail in reconcile, build or render.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A Kubernetes API call failed: `step` (such as "apply" or "read") of
    /// the object `kind` `object` (namespace/name, or name if cluster-wide).
    #[error("{step} {kind} {object}: {source}")]
    Kube {
        step: &'static str,
        kind: String,
        object: String,
        #[source]
        source: Box<kube::Error>,
    },

    #[error("finalizer error: {0}")]
    Finalizer(#[source] Box<kube::runtime::finalizer::Error<Error>>),

    #[error("serialization error: {0}")]
    Json(#[from] serde_json::Error),

    #[error("YAML error: {0}")]
    Yaml(#[from] serde_yaml::Error),

    #[error("invalid spec: {0}")]
    InvalidSpec(String),

    #[error(transparent)]
    Duration(#[from] crate::crd::DurationError),

    #[error("invalid key material in Secret {secret}: {reason}")]
    InvalidKey { secret: String, reason: String },

    /// An object that must be deleted and created again (a StatefulSet
    /// whose volume claims change) is not gone yet.
    #[error("replacing {object}: {reason}")]
    Replace { object: String, reason: String },

    #[error("object has no {0}")]
    MissingField(&'static str),

    #[error("chain: {0}")]
    Chain(#[from] crate::chain::ChainError),
}

impl Error {
    /// Wraps a failed API call on `kind` `object` during `step`, for
    /// `map_err`: `api.get(name).await.map_err(Error::kube("read", "Consortium", name))`.
    pub fn kube(
        step: &'static str,
        kind: impl Into<String>,
        object: impl Into<String>,
    ) -> impl FnOnce(kube::Error) -> Error {
        let (kind, object) = (kind.into(), object.into());
        move |source| Error::Kube {
            step,
            kind,
            object,
            source: Box::new(source),
        }
    }

    /// The API server refused an object as invalid (422), e.g. a change to
    /// a field it does not let change.
    pub fn is_invalid(&self) -> bool {
        matches!(self, Error::Kube { source, .. } if matches!(source.as_ref(), kube::Error::Api(e) if e.code == 422))
    }

    /// A short label for metrics: the cause, looking through the finalizer wrapper.
    pub fn metric_label(&self) -> String {
        use kube::runtime::finalizer::Error as F;
        match self {
            Error::Finalizer(e) => match e.as_ref() {
                F::ApplyFailed(inner) | F::CleanupFailed(inner) => return inner.metric_label(),
                _ => "finalizer",
            },
            Error::Kube { .. } => "kube",
            Error::Json(_) | Error::Yaml(_) => "serialization",
            Error::InvalidSpec(_) | Error::Duration(_) => "invalid_spec",
            Error::InvalidKey { .. } => "invalid_key",
            Error::MissingField(_) => "missing_field",
            Error::Chain(_) => "chain",
            Error::Replace { .. } => "replace",
        }
        .to_string()
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
