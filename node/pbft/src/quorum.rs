//! Fault threshold and quorum sizes.
//!
//! For n = 3f+1 the quorum is the classic 2f+1. For other n we use
//! ceil((n+f+1)/2) so two quorums always intersect in at least f+1
//! replicas (hence in one honest one), which 2f+1 alone would not give
//! e.g. for n = 5.

/// f = floor((n-1)/3); 0 for n <= 3.
pub fn max_faulty(n: usize) -> usize {
    n.saturating_sub(1) / 3
}

/// Smallest set size such that any two such sets share f+1 members.
pub fn quorum(n: usize) -> usize {
    (n + max_faulty(n)) / 2 + 1
}

/// f+1: at least one honest replica is in any set of this size.
pub fn weak_quorum(n: usize) -> usize {
    max_faulty(n) + 1
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classic_sizes() {
        assert_eq!((max_faulty(1), quorum(1)), (0, 1));
        assert_eq!((max_faulty(4), quorum(4)), (1, 3));
        assert_eq!((max_faulty(7), quorum(7)), (2, 5));
        assert_eq!((max_faulty(10), quorum(10)), (3, 7));
        assert_eq!(weak_quorum(7), 3);
    }

    #[test]
    fn quorums_intersect_in_an_honest_replica() {
        for n in 1..60 {
            let (f, q) = (max_faulty(n), quorum(n));
            assert!(
                q <= n - f,
                "n={n}: quorum must be reachable without f replicas"
            );
            assert!(2 * q > n + f, "n={n}: two quorums share f+1");
        }
    }
}
