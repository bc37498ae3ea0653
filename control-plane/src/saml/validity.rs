//! How long a verified assertion stays acceptable, so that its spent marker outlives it:
//! an assertion whose marker expired while `samael` would still take it could be replayed.

use std::time::{Duration, SystemTime};

use chrono::{DateTime, Utc};
use samael::schema::Assertion;

use super::MAX_ASSERTION_MEMORY;
use crate::error::Error;

/// The last instant `assertion` passes the checks at, for a service provider allowing `skew`
/// and taking assertions up to `max_issue_delay` (skew included) after their `IssueInstant`.
///
/// Each of these is a bound that the checks enforce on their own, so the earliest of them is
/// one too: `IssueInstant` + `max_issue_delay`; the `Conditions` `NotOnOrAfter` + `skew`;
/// the latest `SubjectConfirmationData` `NotOnOrAfter` + `skew` (one confirmation in time
/// suffices). An `IssueInstant` later than `now` + `skew` is refused: it would stretch the
/// window by however far the identity provider's clock runs ahead, past any marker the
/// store keeps.
pub fn usable_until(
    assertion: &Assertion,
    skew: Duration,
    max_issue_delay: Duration,
    now: SystemTime,
) -> Result<SystemTime, Error> {
    let issued = SystemTime::from(assertion.issue_instant);
    if issued > now + skew {
        return Err(Error::Unauthenticated(
            "the SAML response is not valid yet (check the clocks)",
        ));
    }
    let conditions = assertion
        .conditions
        .as_ref()
        .and_then(|conditions| conditions.not_on_or_after);
    let confirmations = assertion
        .subject
        .as_ref()
        .and_then(|subject| subject.subject_confirmations.as_ref())
        .into_iter()
        .flatten()
        .filter_map(|confirmation| confirmation.subject_confirmation_data.as_ref())
        .filter_map(|data| data.not_on_or_after)
        .max();
    let with_skew = |at: DateTime<Utc>| SystemTime::from(at) + skew;
    let until = [conditions.map(with_skew), confirmations.map(with_skew)]
        .into_iter()
        .flatten()
        .fold(issued + max_issue_delay, SystemTime::min);
    if until > now + MAX_ASSERTION_MEMORY {
        // Not reached with the bounds above (skew ≤ 10 min); kept so that a change to them
        // cannot silently outgrow the marker.
        return Err(Error::Unauthenticated(
            "the SAML assertion is valid for too long",
        ));
    }
    Ok(until)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SKEW: Duration = Duration::from_secs(60);
    const DELAY: Duration = Duration::from_secs(150);

    /// An assertion issued at `issued`, with these `NotOnOrAfter`s (RFC 3339, or empty for
    /// none) on its Conditions and on two bearer confirmations.
    fn assertion(issued: &str, conditions: &str, confirmations: [&str; 2]) -> Assertion {
        let not_on_or_after = |at: &str| {
            if at.is_empty() {
                String::new()
            } else {
                format!(" NotOnOrAfter=\"{at}\"")
            }
        };
        let confirmations: String = confirmations
            .iter()
            .map(|at| {
                format!(
                    "<saml:SubjectConfirmation Method=\"urn:oasis:names:tc:SAML:2.0:cm:bearer\">\
                     <saml:SubjectConfirmationData Recipient=\"https://sp/acs\"{}/>\
                     </saml:SubjectConfirmation>",
                    not_on_or_after(at)
                )
            })
            .collect();
        let xml = format!(
            "<saml:Assertion xmlns:saml=\"urn:oasis:names:tc:SAML:2.0:assertion\" ID=\"_a\" \
             IssueInstant=\"{issued}\" Version=\"2.0\"><saml:Issuer>idp</saml:Issuer>\
             <saml:Subject><saml:NameID>alice</saml:NameID>{confirmations}</saml:Subject>\
             <saml:Conditions{}/></saml:Assertion>",
            not_on_or_after(conditions)
        );
        xml.parse().unwrap_or_else(|error| panic!("{error}: {xml}"))
    }

    fn at(text: &str) -> SystemTime {
        SystemTime::from(
            DateTime::parse_from_rfc3339(text).unwrap_or_else(|error| panic!("{error}")),
        )
    }

    const NOW: &str = "2026-12-08T00:00:00Z";

    #[test]
    fn the_window_ends_at_the_earliest_bound_the_checks_enforce() {
        let now = at(NOW);
        // The confirmation is the tighter bound (the later of the two confirmations counts).
        let until = usable_until(
            &assertion(NOW, "2026-12-08T00:05:00Z", ["2026-12-08T00:01:00Z", ""]),
            SKEW,
            DELAY,
            now,
        );
        assert_eq!(until.ok(), Some(at("2026-12-08T00:02:00Z")));
        let until = usable_until(
            &assertion(NOW, "", ["2026-12-08T00:00:30Z", "2026-12-08T00:01:10Z"]),
            SKEW,
            DELAY,
            now,
        );
        assert_eq!(until.ok(), Some(at("2026-12-08T00:02:10Z")));
        // The Conditions are.
        let until = usable_until(
            &assertion(NOW, "2026-12-08T00:00:20Z", ["2026-12-08T00:05:00Z", ""]),
            SKEW,
            DELAY,
            now,
        );
        assert_eq!(until.ok(), Some(at("2026-12-08T00:01:20Z")));
        // The IssueInstant is: long NotOnOrAfters do not outlast the issue delay.
        let until = usable_until(
            &assertion(NOW, "2026-12-09T00:00:00Z", ["2026-12-10T00:00:00Z", ""]),
            SKEW,
            DELAY,
            now,
        );
        assert_eq!(until.ok(), Some(now + DELAY));
        // Nothing but the IssueInstant: the issue delay, not `now` plus the skew.
        let until = usable_until(&assertion(NOW, "", ["", ""]), SKEW, DELAY, now);
        assert_eq!(until.ok(), Some(now + DELAY));
    }

    #[test]
    fn an_assertion_issued_in_the_future_is_refused_whatever_its_not_on_or_after() {
        let now = at(NOW);
        // Issued two days ahead, valid three: `samael` would take it for two days and more,
        // longer than any marker is kept.
        let ahead = assertion(
            "2026-12-10T00:00:00Z",
            "2026-12-11T00:00:00Z",
            ["2026-12-11T00:00:00Z", ""],
        );
        assert!(usable_until(&ahead, SKEW, DELAY, now).is_err());
        // Within the skew it is taken, and its window counts from its IssueInstant.
        let slightly = assertion("2026-12-08T00:00:50Z", "", ["2026-12-08T00:10:00Z", ""]);
        assert_eq!(
            usable_until(&slightly, SKEW, DELAY, now).ok(),
            Some(at("2026-12-08T00:00:50Z") + DELAY)
        );
    }
}
