//! The plan: a pure diff of desired against live, guards, and renderers. (not built yet)
