//! Insight into the identity side: token checks (`check-token`) and Auth0 hygiene findings
//! (`audit`). Both are pure functions over values read elsewhere, so they are tested without a
//! network and cannot fail on what they are given: every problem becomes part of the report.

pub mod token;
pub mod hygiene;
