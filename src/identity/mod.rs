//! Auth0 Management API client and the principal mapping. (not built yet)
