//! JSON Schemas of the two policy kinds, generated from the wire types (schemars, draft-07 so
//! that yaml-language-server can validate with them). The output is byte-for-byte reproducible:
//! the committed files in `schemas/` are checked against it by a test and by
//! `runwarden schema --check`.

use schemars::JsonSchema;
use schemars::generate::SchemaSettings;

use super::wire::{AccessPolicyDocument, SettingsDocument};

/// File name of the `Settings` schema.
pub const SETTINGS_SCHEMA: &str = "settings.schema.json";
/// File name of the `AccessPolicy` schema.
pub const ACCESS_POLICY_SCHEMA: &str = "accesspolicy.schema.json";

/// The policy schemas as `(file name, contents)` pairs: pretty JSON with a trailing newline.
pub fn policy_schemas() -> Vec<(&'static str, String)> {
    vec![
        (SETTINGS_SCHEMA, render::<SettingsDocument>()),
        (ACCESS_POLICY_SCHEMA, render::<AccessPolicyDocument>()),
    ]
}

fn render<T: JsonSchema>() -> String {
    let generator = SchemaSettings::draft07().for_deserialize().into_generator();
    let schema = generator.into_root_schema_for::<T>();
    let mut text = serde_json::to_string_pretty(&schema).expect("a schema serializes to JSON");
    text.push('\n');
    text
}
