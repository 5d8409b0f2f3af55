//! Builds the JSON patch as a list of additions, path by path.
//!
//! Mutations never round-trip the object through typed structs: they read the
//! object as JSON and emit operations that add what is missing. Paths are
//! built token by token, so `/` and `~` in keys are escaped (RFC 6901).

use std::fmt::Write as _;

use json_patch::jsonptr::PointerBuf;
use json_patch::{AddOperation, Patch, PatchOperation, RemoveOperation, ReplaceOperation};
use serde_json::Value;

/// A JSON Pointer under construction, e.g. `Path::root().key("spec").key("volumes")`:
/// the encoded pointer text, each step one allocation of the right size
/// (this is on every review's path).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Path(String);

impl Path {
    pub fn root() -> Self {
        Self(String::new())
    }

    /// Appends an object key, `~` and `/` escaped as `~0` and `~1`.
    pub fn key(&self, key: &str) -> Self {
        let escapes = key.bytes().filter(|b| matches!(b, b'~' | b'/')).count();
        let mut pointer = String::with_capacity(self.0.len() + 1 + key.len() + escapes);
        pointer.push_str(&self.0);
        pointer.push('/');
        if escapes == 0 {
            pointer.push_str(key);
        } else {
            for c in key.chars() {
                match c {
                    '~' => pointer.push_str("~0"),
                    '/' => pointer.push_str("~1"),
                    c => pointer.push(c),
                }
            }
        }
        Self(pointer)
    }

    /// Appends an array index.
    pub fn index(&self, index: usize) -> Self {
        let mut pointer = String::with_capacity(self.0.len() + 8);
        pointer.push_str(&self.0);
        // Writing to a String cannot fail.
        let _ = write!(pointer, "/{index}");
        Self(pointer)
    }

    /// The position after the last element of an array (`-`).
    pub fn end(&self) -> Self {
        self.key("-")
    }
}

impl std::fmt::Display for Path {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// Accumulates patch operations.
///
/// A write into a field that holds the wrong type (a list that is a string,
/// a mapping that is a number) would overwrite the user's value; instead the
/// builder records the first such field, and the whole object is left alone
/// (see [`PatchBuilder::refused`]). The API server validates types only after
/// mutating admission, so custom resources can arrive that way.
#[derive(Debug, Default)]
pub struct PatchBuilder {
    operations: Vec<PatchOperation>,
    refused: Option<String>,
}

impl PatchBuilder {
    pub fn add(&mut self, path: Path, value: Value) {
        if let Some(path) = self.pointer(path) {
            self.operations
                .push(PatchOperation::Add(AddOperation { path, value }));
        }
    }

    /// Replaces a value that exists. Used only for the merges SPEC.md allows
    /// (an annotation whose content is merged, `scheme: http` -> `https`).
    pub fn replace(&mut self, path: Path, value: Value) {
        if let Some(path) = self.pointer(path) {
            self.operations
                .push(PatchOperation::Replace(ReplaceOperation { path, value }));
        }
    }

    /// Removes a value that exists. Used only for what this webhook itself
    /// wrote before (its stale rules, an earlier version's endpoint TLS).
    pub fn remove(&mut self, path: Path) {
        if let Some(path) = self.pointer(path) {
            self.operations
                .push(PatchOperation::Remove(RemoveOperation { path }));
        }
    }

    /// [`Path`] only builds valid pointers; should one ever not be, the
    /// object is left alone rather than sent a patch the API server refuses.
    fn pointer(&mut self, path: Path) -> Option<PointerBuf> {
        match PointerBuf::parse(path.0) {
            Ok(pointer) => Some(pointer),
            Err(error) => {
                self.refused.get_or_insert_with(|| {
                    format!("a patch path is not a valid JSON pointer ({error})")
                });
                None
            }
        }
    }

    /// Appends `item` to the list at `array_path` (`existing` being what is
    /// there now), creating the list when it is absent or null.
    pub fn add_to_array(&mut self, array_path: &Path, existing: Option<&Value>, item: Value) {
        match existing {
            Some(Value::Array(_)) => self.add(array_path.end(), item),
            None | Some(Value::Null) => self.add(array_path.clone(), Value::Array(vec![item])),
            Some(_) => self.refuse(array_path, "list"),
        }
    }

    /// Requires a mapping at `path` (`value` being what is there now).
    pub fn require_mapping(&mut self, path: &Path, value: Option<&Value>) {
        if !value.is_some_and(Value::is_object) {
            self.refuse(path, "mapping");
        }
    }

    /// Creates an empty mapping at `path` when absent or null; refuses
    /// anything else that is not a mapping.
    pub fn ensure_mapping(&mut self, path: &Path, value: Option<&Value>) {
        match value {
            None | Some(Value::Null) => self.add(path.clone(), Value::Object(Default::default())),
            Some(Value::Object(_)) => {}
            Some(_) => self.refuse(path, "mapping"),
        }
    }

    pub fn refuse(&mut self, path: &Path, expected: &str) {
        if self.refused.is_none() {
            self.refused = Some(format!("{path} is not a {expected}"));
        }
    }

    /// Why no patch may be applied, if a write was refused.
    pub fn refused(&self) -> Option<&str> {
        self.refused.as_deref()
    }

    pub fn is_empty(&self) -> bool {
        self.operations.is_empty()
    }

    pub fn len(&self) -> usize {
        self.operations.len()
    }

    pub fn build(self) -> Patch {
        Patch(self.operations)
    }
}

/// Keys to add to one JSON object that may not exist yet.
///
/// When the object exists, each key becomes its own `add`; when it does not
/// (or is null), a single `add` creates it with every key. Either way the
/// keys already present are never touched.
pub struct ObjectAdditions<'a> {
    path: Path,
    existing: Option<&'a serde_json::Map<String, Value>>,
    /// Something that is neither a mapping nor null is there.
    wrong_type: bool,
    additions: serde_json::Map<String, Value>,
}

impl<'a> ObjectAdditions<'a> {
    /// `current` is what is at `path` in the object now.
    pub fn new(path: Path, current: Option<&'a Value>) -> Self {
        Self {
            path,
            existing: current.and_then(Value::as_object),
            wrong_type: current.is_some_and(|v| !v.is_object() && !v.is_null()),
            additions: serde_json::Map::new(),
        }
    }

    pub fn get(&self, key: &str) -> Option<&'a Value> {
        self.existing.and_then(|map| map.get(key))
    }

    /// Adds `key` unless the object already has it.
    pub fn insert_if_absent(&mut self, key: &str, value: Value) {
        if self.get(key).is_none() {
            self.additions.insert(key.to_owned(), value);
        }
    }

    pub fn emit(self, patch: &mut PatchBuilder) {
        if self.additions.is_empty() {
            return;
        }
        if self.wrong_type {
            patch.refuse(&self.path, "mapping");
        } else if self.existing.is_some() {
            for (key, value) in self.additions {
                patch.add(self.path.key(&key), value);
            }
        } else {
            patch.add(self.path, Value::Object(self.additions));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn escapes_slash_and_tilde_in_keys() {
        let path = Path::root()
            .key("metadata")
            .key("annotations")
            .key("proxy.istio.io/config")
            .key("a~b")
            .index(12)
            .key("");
        assert_eq!(
            path.to_string(),
            "/metadata/annotations/proxy.istio.io~1config/a~0b/12/"
        );
        assert!(PointerBuf::parse(path.to_string()).is_ok());
    }

    #[test]
    fn creates_a_missing_object_in_one_operation() {
        let mut patch = PatchBuilder::default();
        let mut additions = ObjectAdditions::new(Path::root().key("annotations"), None);
        additions.insert_if_absent("a", json!("1"));
        additions.insert_if_absent("b", json!("2"));
        additions.emit(&mut patch);
        assert_eq!(
            serde_json::to_value(patch.build()).unwrap(),
            json!([{"op": "add", "path": "/annotations", "value": {"a": "1", "b": "2"}}])
        );
    }

    #[test]
    fn adds_only_missing_keys_to_an_existing_object() {
        let current = json!({"a": "mine"});
        let mut patch = PatchBuilder::default();
        let mut additions = ObjectAdditions::new(Path::root().key("annotations"), Some(&current));
        additions.insert_if_absent("a", json!("theirs"));
        additions.insert_if_absent("b", json!("2"));
        additions.emit(&mut patch);
        assert_eq!(
            serde_json::to_value(patch.build()).unwrap(),
            json!([{"op": "add", "path": "/annotations/b", "value": "2"}])
        );
    }

    #[test]
    fn refuses_to_overwrite_a_field_of_the_wrong_type() {
        let mut patch = PatchBuilder::default();
        patch.add_to_array(&Path::root().key("volumes"), Some(&json!("x")), json!(1));
        let three = json!(3);
        let mut additions = ObjectAdditions::new(Path::root().key("annotations"), Some(&three));
        additions.insert_if_absent("a", json!("1"));
        additions.emit(&mut patch);
        assert!(patch.is_empty());
        assert_eq!(patch.refused(), Some("/volumes is not a list"));
    }

    #[test]
    fn appends_to_an_existing_array_and_creates_a_missing_one() {
        let mut patch = PatchBuilder::default();
        let list = Path::root().key("volumes");
        patch.add_to_array(&list, Some(&json!([1])), json!(2));
        patch.add_to_array(&list, None, json!(3));
        patch.add_to_array(&list, Some(&Value::Null), json!(4));
        assert_eq!(
            serde_json::to_value(patch.build()).unwrap(),
            json!([
                {"op": "add", "path": "/volumes/-", "value": 2},
                {"op": "add", "path": "/volumes", "value": [3]},
                {"op": "add", "path": "/volumes", "value": [4]},
            ])
        );
    }
}
