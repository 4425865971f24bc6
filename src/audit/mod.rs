//! Auth0 hygiene findings and token checks. (not built yet)
