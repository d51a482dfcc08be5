//! The `ngram` featuriser: hashed word unigrams and bigrams and character trigrams of each word
//! (with boundary marks), deterministic on every machine (FNV-1a), so a base model trained
//! anywhere reads text the same way everywhere.

/// How text becomes bucket ids.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct FeatureConfig {
    /// Number of hash buckets (rows of the embedding table); below 2^31.
    pub buckets: u32,
    /// Most ids taken from one text (the rest are ignored).
    pub max_ids: usize,
}

impl Default for FeatureConfig {
    fn default() -> Self {
        Self {
            buckets: 1 << 17,
            max_ids: 512,
        }
    }
}

const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
const FNV_PRIME: u64 = 0x0100_0000_01b3;

fn fnv(seed: u8, parts: &[&[u8]]) -> u64 {
    let mut hash = FNV_OFFSET ^ u64::from(seed);
    for part in parts {
        for byte in *part {
            hash ^= u64::from(*byte);
            hash = hash.wrapping_mul(FNV_PRIME);
        }
        hash ^= 0xff;
        hash = hash.wrapping_mul(FNV_PRIME);
    }
    hash
}

/// Lower-cased alphanumeric words.
fn words(text: &str) -> Vec<String> {
    text.split(|c: char| !c.is_alphanumeric())
        .filter(|word| !word.is_empty())
        .map(str::to_lowercase)
        .collect()
}

impl FeatureConfig {
    fn bucket(&self, hash: u64) -> u32 {
        (hash % u64::from(self.buckets.max(1))) as u32
    }

    /// The bucket ids of one text (never empty: an empty text maps to a reserved id 0).
    pub fn ids(&self, text: &str) -> Vec<u32> {
        let words = words(text);
        let mut ids = Vec::with_capacity(words.len() * 4);
        for (index, word) in words.iter().enumerate() {
            ids.push(self.bucket(fnv(1, &[word.as_bytes()])));
            if let Some(next) = words.get(index + 1) {
                ids.push(self.bucket(fnv(2, &[word.as_bytes(), next.as_bytes()])));
            }
            let marked: Vec<char> = std::iter::once('<')
                .chain(word.chars())
                .chain(std::iter::once('>'))
                .collect();
            for window in marked.windows(3) {
                let gram: String = window.iter().collect();
                ids.push(self.bucket(fnv(3, &[gram.as_bytes()])));
            }
        }
        ids.truncate(self.max_ids);
        if ids.is_empty() {
            ids.push(0);
        }
        ids
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_deterministic_bounded_and_case_blind() {
        let config = FeatureConfig {
            buckets: 1_000,
            max_ids: 64,
        };
        let ids = config.ids("Either party may terminate");
        assert_eq!(ids, config.ids("either PARTY may terminate!"));
        assert!(ids.iter().all(|&id| id < 1_000));
        // 4 words: 4 unigrams + 3 bigrams + trigrams of "<either>", "<party>", "<may>", "<terminate>".
        assert_eq!(ids.len(), 4 + 3 + 6 + 5 + 3 + 9);
        assert_eq!(config.ids(""), vec![0]);
        assert_eq!(config.ids(&"word ".repeat(100)).len(), 64);
        assert_ne!(
            config.ids("governing law"),
            config.ids("termination notice")
        );
    }
}
