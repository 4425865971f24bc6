//! Integration tests of the policy language: the loader's rules, every malformed-file
//! diagnostic with its exact position, the example repository, the JSON Schemas, and the
//! `validate` and `schema` commands of the real binary.

mod cli;
mod malformed;
mod rules;
mod support;
mod walk;
