//! The word count the state tests run: a generated corpus with its
//! reference counts, and the job itself.

use std::collections::HashMap;

use bytes::Bytes;
use rocketmq_streams::prelude::*;

/// Distinct words of the corpus.
pub const DISTINCT: usize = 50_000;
/// Words in the corpus.
pub const WORDS: usize = 1_000_000;
/// Words per input line (one message per line).
pub const WORDS_PER_LINE: usize = 20;

/// Lines of a corpus of `WORDS` words: every one of `DISTINCT` words at least
/// once, the rest skewed (a few words very frequent, most rare), and the
/// reference counts, computed here independently of the engine.
pub fn corpus() -> (Vec<Bytes>, HashMap<String, u64>) {
    let mut words = Vec::with_capacity(WORDS);
    words.extend((0..DISTINCT).map(|i| i as u64));
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    while words.len() < WORDS {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let u = (x >> 11) as f64 / (1u64 << 53) as f64;
        words.push((u * u * u * DISTINCT as f64) as u64);
    }
    let mut reference = HashMap::new();
    for w in &words {
        *reference.entry(format!("w{w}")).or_insert(0u64) += 1;
    }
    let lines = words
        .chunks(WORDS_PER_LINE)
        .map(|chunk| Bytes::from(chunk.iter().map(|w| format!("w{w}")).collect::<Vec<_>>().join(" ")))
        .collect();
    (lines, reference)
}

/// `source(input) → flat_map(words) → key_by(word) → count → to_rstream`:
/// the stream of count updates `(word, count)`.
pub fn word_count(builder: &StreamBuilder, input: &str) -> RStream<(String, u64)> {
    builder
        .source(input, Utf8)
        .flat_map(|line: String| line.split_whitespace().map(str::to_owned).collect::<Vec<_>>())
        .key_by(|w: &String| w.clone())
        .count()
        .to_rstream()
}

/// The words whose count differs from the reference, at most five, as
/// `(word, expected, got)`; empty when every count is right.
pub fn wrong_counts(got: &HashMap<String, u64>, reference: &HashMap<String, u64>) -> Vec<(String, u64, Option<u64>)> {
    let mut wrong: Vec<_> = reference
        .iter()
        .filter(|(w, c)| got.get(*w) != Some(c))
        .map(|(w, c)| (w.clone(), *c, got.get(w).copied()))
        .collect();
    wrong.extend(
        got.iter()
            .filter(|(w, _)| !reference.contains_key(*w))
            .map(|(w, c)| (w.clone(), 0, Some(*c))),
    );
    wrong.truncate(5);
    wrong
}
