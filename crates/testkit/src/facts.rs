//! Synthetic facts in RoAD's shape, as many as a benchmark or the many-facts report asks
//! for (up to [`MAX_SYNTHETIC_FACTS`]).
//!
//! The shipped RoAD and TIMED validation files hold 17 rows between them; batches of 100
//! and runs of 1,000 edits need more. On random-weight encoders a fact's meaning plays no
//! part, only that every fact has its own subject (a batch refuses one subject twice) and
//! the same shape as a real row: an edit prompt "The {office} of {place}", a source and a
//! target name, three generality prompts and three unrelated prompts.
//!
//! Deterministic: fact `i` is the same in every run and every caller.

/// Offices × places: the number of distinct subjects.
pub const MAX_SYNTHETIC_FACTS: usize = OFFICES.len() * PLACES.len();

const OFFICES: [&str; 20] = [
    "mayor",
    "governor",
    "captain",
    "president",
    "chancellor",
    "queen",
    "bishop",
    "coach",
    "director",
    "head chef",
    "conductor",
    "principal",
    "sheriff",
    "ambassador",
    "editor",
    "founder",
    "champion",
    "librarian",
    "judge",
    "harbour master",
];

const PLACES: [&str; 50] = [
    "Springfield",
    "Riverdale",
    "Oakridge",
    "Maplewood",
    "Lakeview",
    "Stonebridge",
    "Fairhaven",
    "Westbrook",
    "Ashford",
    "Brightwater",
    "Cedar Falls",
    "Dunmore",
    "Elmstead",
    "Foxhollow",
    "Glenrock",
    "Hawthorne",
    "Ironvale",
    "Juniper Bay",
    "Kingsport",
    "Larkspur",
    "Millbrook",
    "Northgate",
    "Old Harbor",
    "Pinecrest",
    "Queensbury",
    "Redcliff",
    "Silverton",
    "Thornbury",
    "Upton",
    "Valemont",
    "Willowdale",
    "Yarrow",
    "Zephyr Point",
    "Amberley",
    "Blackwood",
    "Clearwater",
    "Driftwood",
    "Eastwick",
    "Fernhill",
    "Greystone",
    "Highfield",
    "Ivybridge",
    "Kestrel Cove",
    "Lindenhurst",
    "Moorland",
    "Newhaven",
    "Orchard Hill",
    "Primrose",
    "Ravenscroft",
    "Sunnydale",
];

const FIRST_NAMES: [&str; 24] = [
    "Ana", "Ben", "Chloe", "David", "Elena", "Farid", "Grace", "Hiro", "Ines", "Jonas", "Kemi",
    "Luca", "Maya", "Nikolai", "Olga", "Pedro", "Quinn", "Rosa", "Samir", "Tara", "Umar", "Vera",
    "Wen", "Yusuf",
];

const LAST_NAMES: [&str; 25] = [
    "Okafor",
    "Reyes",
    "Lindqvist",
    "Tanaka",
    "Moreau",
    "Kowalski",
    "Haddad",
    "Brennan",
    "Castillo",
    "Novak",
    "Osei",
    "Petrov",
    "Quintero",
    "Rossi",
    "Sato",
    "Varga",
    "Weber",
    "Abara",
    "Bianchi",
    "Dubois",
    "Eriksen",
    "Fischer",
    "Garcia",
    "Huang",
    "Ivanova",
];

/// One synthetic fact with RoAD's judging prompts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyntheticFact {
    /// "The mayor of Springfield": the edit prompt and its subject.
    pub prompt: String,
    pub source: String,
    pub target: String,
    /// (prompt, old, new): prompts about the subject that should follow the edit.
    pub positives: Vec<(String, String, String)>,
    /// (prompt, new): prompts that should not change, and what the edit would wrongly
    /// turn them into.
    pub negatives: Vec<(String, String)>,
}

/// Person `n` of the name lists. 24 × 25 are coprime, so n < 600 are all distinct.
fn name(n: usize) -> String {
    format!(
        "{} {}",
        FIRST_NAMES[n % FIRST_NAMES.len()],
        LAST_NAMES[n % LAST_NAMES.len()]
    )
}

/// Fact `i` (0-based). Panics when `i >= MAX_SYNTHETIC_FACTS`.
pub fn synthetic_fact(i: usize) -> SyntheticFact {
    assert!(
        i < MAX_SYNTHETIC_FACTS,
        "at most {MAX_SYNTHETIC_FACTS} synthetic facts"
    );
    // Walk places fastest so consecutive facts differ in both words of the subject.
    let office = OFFICES[(i / PLACES.len() + i) % OFFICES.len()];
    let place = PLACES[i % PLACES.len()];
    let prompt = format!("The {office} of {place}");
    let source = name(2 * i);
    let target = name(2 * i + 1);
    let positives = ["playing guitar", "eating an apple", "wearing sunglasses"]
        .iter()
        .map(|activity| {
            (
                format!("{prompt} {activity}"),
                format!("{source} {activity}"),
                format!("{target} {activity}"),
            )
        })
        .collect();
    let negatives = vec![
        (source.clone(), target.clone()),
        (
            format!("A painting of {place}"),
            format!("A painting of {target}"),
        ),
        (format!("A {office}"), target.clone()),
    ];
    SyntheticFact {
        prompt,
        source,
        target,
        positives,
        negatives,
    }
}

/// The first `n` synthetic facts.
pub fn synthetic_facts(n: usize) -> Vec<SyntheticFact> {
    (0..n).map(synthetic_fact).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn every_fact_has_its_own_subject_and_distinct_names() {
        let facts = synthetic_facts(MAX_SYNTHETIC_FACTS);
        let subjects: HashSet<&str> = facts.iter().map(|f| f.prompt.as_str()).collect();
        assert_eq!(subjects.len(), MAX_SYNTHETIC_FACTS);
        assert!(facts.iter().all(|f| f.source != f.target));
        assert_eq!(synthetic_fact(7), synthetic_fact(7));
    }
}
