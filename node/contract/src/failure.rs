//! Why code does not install, and why a call fails. A failed call commits
//! with its failure and no state change; every replica reaches the same one.

/// Code that cannot be installed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CompileError {
    #[error("the code is {size} bytes, more than the {max} allowed")]
    TooLarge { size: usize, max: usize },
    /// Not valid WebAssembly under the engine's rules: floating point is
    /// refused here, so results cannot depend on the host's NaN patterns.
    #[error("the code is not a valid contract module: {0}")]
    Invalid(String),
    #[error("the code imports {module}.{name}, which the host does not provide")]
    UnknownImport { module: String, name: String },
    #[error("the code exports no memory named `memory`")]
    NoMemory,
    #[error("the code has a start function; contracts begin in `init`")]
    StartFunction,
}

/// Why a call failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Failure {
    #[error("out of fuel after {limit} units")]
    OutOfFuel { limit: u64 },
    #[error("the contract has no entry point `{0}`")]
    UnknownFunction(String),
    #[error("the contract trapped: {0}")]
    Trap(String),
    #[error("the contract aborted: {0}")]
    Abort(String),
    #[error("a query cannot write")]
    ReadOnly,
    #[error("{what} of {size} bytes exceeds the limit of {max}")]
    TooLarge {
        what: &'static str,
        size: usize,
        max: usize,
    },
    #[error("more than {max} {what} in one call")]
    TooMany { what: &'static str, max: usize },
    #[error("memory access out of bounds: {len} bytes at {ptr}")]
    OutOfBounds { ptr: i64, len: i64 },
    #[error("the contract could not be instantiated: {0}")]
    Instantiate(String),
}

impl Failure {
    /// A short, stable name for metrics and outcomes.
    pub fn kind(&self) -> &'static str {
        match self {
            Failure::OutOfFuel { .. } => "out_of_fuel",
            Failure::UnknownFunction(_) => "unknown_function",
            Failure::Trap(_) => "trap",
            Failure::Abort(_) => "abort",
            Failure::ReadOnly => "read_only",
            Failure::TooLarge { .. } => "too_large",
            Failure::TooMany { .. } => "too_many",
            Failure::OutOfBounds { .. } => "out_of_bounds",
            Failure::Instantiate(_) => "instantiate",
        }
    }
}
