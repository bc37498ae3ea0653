//! How user directories and ids compare, on the control plane (finding a user's sessions,
//! "log this user out") and on nodes (access rules, header authentication) alike: one user
//! to one is one user to the other.
//!
//! Case-insensitively, as user directories compare in QPS, except that a character which
//! lower-cases into ASCII (`K`, the Kelvin sign, into `k`; `İ` into `i` and a combining dot)
//! is kept as written: otherwise a user named with a look-alike would be the user with the
//! ASCII name, and could list and end its sessions or pass its access rules.

/// The characters a name compares by.
fn folded(name: &str) -> impl Iterator<Item = char> + '_ {
    name.chars().flat_map(|character| {
        let lower = character.to_lowercase();
        let keep = !character.is_ascii() && lower.clone().any(|folded| folded.is_ascii());
        let (kept, lowered) = if keep {
            (Some(character), None)
        } else {
            (None, Some(lower))
        };
        kept.into_iter().chain(lowered.into_iter().flatten())
    })
}

/// The form a name is indexed by.
pub fn fold(name: &str) -> String {
    folded(name).collect()
}

/// Whether two directories, or two ids, name the same user.
pub fn same(a: &str, b: &str) -> bool {
    if a.is_ascii() && b.is_ascii() {
        return a.eq_ignore_ascii_case(b);
    }
    folded(a).eq(folded(b))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn case_does_not_matter() {
        assert!(same("CORP", "corp"));
        assert!(same("ÄRGER", "ärger"));
        assert_eq!(fold("ÖSt"), "öst");
        assert!(!same("alice", "alicia"));
    }

    #[test]
    fn a_character_that_folds_into_ascii_is_kept() {
        assert!(!same("\u{212A}ate", "kate"));
        assert!(!same("\u{212A}ATE", "KATE"));
        assert!(!same("\u{130}van", "ivan"));
        assert_eq!(fold("\u{212A}ATE"), "\u{212A}ate");
        assert!(same("\u{212A}ate", "\u{212A}ATE"));
    }
}
