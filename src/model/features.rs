//! The `ngram` featuriser: hashed word unigrams and bigrams and character trigrams of each word
//! (with boundary marks), deterministic on every machine (FNV-1a), so a base model trained
//! anywhere reads text the same way everywhere.

/// How text becomes bucket ids.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize, utoipa::ToSchema,
)]
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

/// Reusable buffers of [`FeatureConfig::ids_into`], so featurising a batch allocates once.
#[derive(Debug, Default)]
pub struct Scratch {
    /// The text's words, lower-cased, back to back.
    words: String,
    /// Byte range of each word in `words`.
    spans: Vec<(usize, usize)>,
    /// Byte offsets of the characters of the current boundary-marked word.
    marks: Vec<usize>,
    marked: String,
}

impl FeatureConfig {
    fn bucket(&self, hash: u64) -> u32 {
        (hash % u64::from(self.buckets.max(1))) as u32
    }

    /// The bucket ids of one text (never empty: an empty text maps to a reserved id 0).
    pub fn ids(&self, text: &str) -> Vec<u32> {
        let mut ids = Vec::new();
        self.ids_into(text, &mut ids, &mut Scratch::default());
        ids
    }

    /// Appends the ids of `text` to `ids`: word unigrams and bigrams (lower-cased
    /// alphanumeric words) and the character trigrams of each word marked `<word>`.
    pub fn ids_into(&self, text: &str, ids: &mut Vec<u32>, scratch: &mut Scratch) {
        let start = ids.len();
        scratch.words.clear();
        scratch.spans.clear();
        for word in text.split(|c: char| !c.is_alphanumeric()) {
            if word.is_empty() {
                continue;
            }
            let from = scratch.words.len();
            if word.is_ascii() {
                scratch
                    .words
                    .extend(word.bytes().map(|b| char::from(b.to_ascii_lowercase())));
            } else {
                scratch
                    .words
                    .extend(word.chars().flat_map(char::to_lowercase));
            }
            scratch.spans.push((from, scratch.words.len()));
        }
        let words = &scratch.words;
        for (index, &(from, to)) in scratch.spans.iter().enumerate() {
            if ids.len() - start >= self.max_ids {
                break;
            }
            let word = &words.as_bytes()[from..to];
            ids.push(self.bucket(fnv(1, &[word])));
            if let Some(&(next_from, next_to)) = scratch.spans.get(index + 1) {
                ids.push(self.bucket(fnv(2, &[word, &words.as_bytes()[next_from..next_to]])));
            }
            scratch.marked.clear();
            scratch.marked.push('<');
            scratch.marked.push_str(&words[from..to]);
            scratch.marked.push('>');
            scratch.marks.clear();
            scratch
                .marks
                .extend(scratch.marked.char_indices().map(|(offset, _)| offset));
            scratch.marks.push(scratch.marked.len());
            let marked = scratch.marked.as_bytes();
            for window in scratch.marks.windows(4) {
                ids.push(self.bucket(fnv(3, &[&marked[window[0]..window[3]]])));
            }
        }
        ids.truncate(start + self.max_ids);
        if ids.len() == start {
            ids.push(0);
        }
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
