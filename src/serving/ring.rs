//! Which serving replica owns a tenant: rendezvous (highest-random-weight) hashing of the
//! tenant id over the replica names.
//!
//! `score(replica, tenant) = splitmix64(fnv1a64(replica ++ [0] ++ tenant))`; the owner is the
//! replica with the highest score (ties go to the smaller name). Every router and replica
//! computes the same owner from the same replica list with no shared state, adding or
//! removing a replica moves only the tenants it gains or held (about 1/n of them), and a
//! tenant's variants therefore stay warm in one replica's cache.

use crate::tenant::TenantId;

const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;

fn fnv1a64(parts: &[&[u8]]) -> u64 {
    let mut hash = FNV_OFFSET;
    for part in parts {
        for byte in *part {
            hash ^= u64::from(*byte);
            hash = hash.wrapping_mul(FNV_PRIME);
        }
    }
    hash
}

/// The splitmix64 finaliser: spreads FNV's weak low bits over the whole word.
fn splitmix64(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

/// A hash of `parts` that is the same in every process and release, with well-spread low
/// bits (FNV-1a finished by splitmix64).
pub fn stable_hash(parts: &[&[u8]]) -> u64 {
    splitmix64(fnv1a64(parts))
}

/// The score of `replica` for `tenant`.
pub fn score(replica: &str, tenant: &TenantId) -> u64 {
    stable_hash(&[replica.as_bytes(), &[0], tenant.as_str().as_bytes()])
}

/// The replica that owns `tenant`, or `None` when there are no replicas.
pub fn owner<'a>(replicas: &'a [String], tenant: &TenantId) -> Option<&'a str> {
    replicas
        .iter()
        .map(|replica| (score(replica, tenant), replica))
        .max_by(|a, b| a.0.cmp(&b.0).then_with(|| b.1.cmp(a.1)))
        .map(|(_, replica)| replica.as_str())
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn tenants(n: usize) -> Vec<TenantId> {
        (0..n)
            .map(|i| TenantId::parse(&format!("tenant-{i:05}")).unwrap())
            .collect()
    }

    fn replicas(n: usize) -> Vec<String> {
        (0..n).map(|i| format!("serve-{i}")).collect()
    }

    #[test]
    fn the_owner_is_a_pure_function_of_tenant_and_replica_list() {
        let tenant = TenantId::parse("acme").unwrap();
        let list = replicas(3);
        let mut reversed = list.clone();
        reversed.reverse();
        assert_eq!(owner(&list, &tenant), owner(&reversed, &tenant));
        // pinned values: a change of the function would silently reshuffle every tenant
        assert_eq!(fnv1a64(&[b"a"]), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(score("serve-0", &tenant), score("serve-0", &tenant));
        assert_eq!(owner(&[], &tenant), None);
    }

    #[test]
    fn tenants_spread_evenly_over_replicas() {
        let list = replicas(4);
        let mut counts: HashMap<&str, usize> = HashMap::new();
        for tenant in tenants(10_000) {
            *counts.entry(owner(&list, &tenant).unwrap()).or_default() += 1;
        }
        assert_eq!(counts.len(), 4);
        for (replica, count) in counts {
            assert!(
                (2_200..=2_800).contains(&count),
                "{replica} owns {count} of 10,000 tenants"
            );
        }
    }

    #[test]
    fn adding_a_replica_moves_only_the_tenants_it_takes() {
        let before = replicas(4);
        let after = replicas(5);
        let all = tenants(10_000);
        let mut moved = 0;
        for tenant in &all {
            let old = owner(&before, tenant).unwrap();
            let new = owner(&after, tenant).unwrap();
            if old != new {
                assert_eq!(new, "serve-4", "a tenant moved between old replicas");
                moved += 1;
            }
        }
        // about a fifth of the tenants move to the new replica, no more
        assert!((1_700..=2_300).contains(&moved), "{moved} moved");
    }
}
