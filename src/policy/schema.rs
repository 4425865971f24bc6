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

/// Removes the `"default": null` (and `[]`) schemars states for every field that may be left
/// out: editors would show `null` as the default, which is never what a left-out field means.
/// The fields with a real default state it with `extend("default" = ...)` in `wire`.
fn drop_empty_defaults(value: &mut serde_json::Value) {
    match value {
        serde_json::Value::Object(map) => {
            let empty = map.get("default").is_some_and(|d| d.is_null() || d.as_array().is_some_and(Vec::is_empty));
            if empty {
                map.remove("default");
            }
            map.values_mut().for_each(drop_empty_defaults);
        }
        serde_json::Value::Array(items) => items.iter_mut().for_each(drop_empty_defaults),
        _ => {}
    }
}

/// File name of the schema of either kind (for an editor's file match over a whole policy
/// directory, where a file may hold either).
pub const POLICY_SCHEMA: &str = "policy.schema.json";

/// Either kind of policy document: a file of the policy directory holds any of them, and
/// `kind` tells them apart. Only its schema is used.
#[derive(JsonSchema)]
#[serde(untagged)]
#[schemars(title = "runwarden policy document (Settings or AccessPolicy)")]
#[allow(dead_code)] // never built: it exists for its schema
enum PolicyDocument {
    Settings(SettingsDocument),
    AccessPolicy(AccessPolicyDocument),
}

/// The policy schemas as `(file name, contents)` pairs: pretty JSON with a trailing newline.
pub fn policy_schemas() -> Vec<(&'static str, String)> {
    vec![
        (SETTINGS_SCHEMA, render::<SettingsDocument>()),
        (ACCESS_POLICY_SCHEMA, render::<AccessPolicyDocument>()),
        (POLICY_SCHEMA, render::<PolicyDocument>()),
    ]
}

fn render<T: JsonSchema>() -> String {
    let generator = SchemaSettings::draft07().for_deserialize().into_generator();
    let schema = generator.into_root_schema_for::<T>();
    let mut value = serde_json::to_value(&schema).expect("a schema serializes to JSON");
    drop_empty_defaults(&mut value);
    let mut text = serde_json::to_string_pretty(&value).expect("a schema serializes to JSON");
    text.push('\n');
    text
}
