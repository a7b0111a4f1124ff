//! Errors of the operator library.

/// Everything that can fail in reconcile, build or render.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("Kubernetes API error: {0}")]
    Kube(#[from] kube::Error),

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

    #[error("object has no {0}")]
    MissingField(&'static str),

    #[error("chain: {0}")]
    Chain(#[from] crate::chain::ChainError),

    /// Not a failure: teardown waits for something on chain (the finalizer
    /// stays until cleanup succeeds, so cleanup reports waiting this way).
    #[error("waiting: {0}")]
    Waiting(String),
}

impl Error {
    /// A short label for metrics: the cause, looking through the finalizer wrapper.
    /// Reconcile is waiting, not failing (see [`Error::Waiting`]).
    pub fn is_waiting(&self) -> bool {
        use kube::runtime::finalizer::Error as F;
        match self {
            Error::Waiting(_) => true,
            Error::Finalizer(e) => {
                matches!(e.as_ref(), F::CleanupFailed(inner) if inner.is_waiting())
            }
            _ => false,
        }
    }

    pub fn metric_label(&self) -> String {
        use kube::runtime::finalizer::Error as F;
        match self {
            Error::Finalizer(e) => match e.as_ref() {
                F::ApplyFailed(inner) | F::CleanupFailed(inner) => return inner.metric_label(),
                _ => "finalizer",
            },
            Error::Kube(_) => "kube",
            Error::Json(_) | Error::Yaml(_) => "serialization",
            Error::InvalidSpec(_) | Error::Duration(_) => "invalid_spec",
            Error::InvalidKey { .. } => "invalid_key",
            Error::MissingField(_) => "missing_field",
            Error::Chain(_) => "chain",
            Error::Waiting(_) => "waiting",
        }
        .to_string()
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
