//! Reserved state keys. Client transactions cannot write keys under
//! [`RESERVED_PREFIX`]; configuration transactions write only these.

/// Prefix of every key the consortium configuration owns.
pub const RESERVED_PREFIX: &[u8] = b"\0kubeledger/";

/// The current [`ConsortiumConfig`](crate::proto::ConsortiumConfig). Its key
/// history is the history of the configuration.
pub const CONFIG_KEY: &[u8] = b"\0kubeledger/config";

const PROPOSAL_PREFIX: &[u8] = b"\0kubeledger/proposal/";
const CODE_PREFIX: &[u8] = b"\0kubeledger/code/";
/// Contract `<name>`'s state is under `CONTRACT_PREFIX<name>/`: reserved,
/// so plain puts cannot touch it and only the contract's calls write it.
pub const CONTRACT_PREFIX: &[u8] = b"\0kubeledger/contract/";

/// Key of installed contract code, by its SHA-256.
pub fn code_key(hash: &[u8]) -> Vec<u8> {
    let mut k = CODE_PREFIX.to_vec();
    k.extend_from_slice(hex::encode(hash).as_bytes());
    k
}
const OUTCOME_PREFIX: &[u8] = b"\0kubeledger/outcome/";

/// Key of proposal `id` (zero-padded, so keys sort by id).
pub fn proposal_key(id: u64) -> Vec<u8> {
    let mut k = PROPOSAL_PREFIX.to_vec();
    k.extend_from_slice(format!("{id:020}").as_bytes());
    k
}

/// Key of the [`ConfigOutcome`](crate::proto::ConfigOutcome) of a
/// configuration transaction.
pub fn outcome_key(tx_id: &[u8; 32]) -> Vec<u8> {
    let mut k = OUTCOME_PREFIX.to_vec();
    k.extend_from_slice(hex::encode(tx_id).as_bytes());
    k
}

pub fn is_reserved(key: &[u8]) -> bool {
    key.starts_with(RESERVED_PREFIX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proposal_keys_sort_by_id_and_are_reserved() {
        assert!(proposal_key(9) < proposal_key(10));
        assert!(is_reserved(&proposal_key(1)));
        assert!(is_reserved(&outcome_key(&[0; 32])));
        assert!(is_reserved(CONFIG_KEY));
        assert!(is_reserved(&code_key(&[1; 32])));
        assert!(is_reserved(CONTRACT_PREFIX));
        assert!(!is_reserved(b"kubeledger/config"));
    }
}
