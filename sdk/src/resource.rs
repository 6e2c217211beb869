//! The entity producing telemetry (`service.name`, `service.version`, host, ...).

use crate::attributes::{KeyValue, Value};

/// An immutable set of resource attributes, shared by every span of a provider.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Resource {
    attrs: Vec<KeyValue>,
    schema_url: Option<String>,
}

impl Resource {
    /// A resource from attributes; a later duplicate key replaces an earlier one.
    pub fn new(attrs: impl IntoIterator<Item = KeyValue>) -> Self {
        let mut r = Resource::default();
        for kv in attrs {
            r.set(kv);
        }
        r
    }

    /// Sets one attribute, replacing an existing value for the same key.
    pub fn set(&mut self, kv: KeyValue) {
        if let Some(existing) = self.attrs.iter_mut().find(|e| e.key == kv.key) {
            existing.value = kv.value;
        } else {
            self.attrs.push(kv);
        }
    }

    /// Merges `other` into `self`; `other` wins on conflicts.
    pub fn merge(mut self, other: &Resource) -> Self {
        for kv in &other.attrs {
            self.set(kv.clone());
        }
        if other.schema_url.is_some() {
            self.schema_url = other.schema_url.clone();
        }
        self
    }

    /// Looks up an attribute value.
    pub fn get(&self, key: &str) -> Option<&Value> {
        self.attrs
            .iter()
            .find(|kv| kv.key.as_str() == key)
            .map(|kv| &kv.value)
    }

    /// All attributes in insertion order.
    pub fn iter(&self) -> impl Iterator<Item = &KeyValue> {
        self.attrs.iter()
    }

    /// Number of attributes.
    pub fn len(&self) -> usize {
        self.attrs.len()
    }

    /// True when there are no attributes.
    pub fn is_empty(&self) -> bool {
        self.attrs.is_empty()
    }

    /// The schema URL, if any.
    pub fn schema_url(&self) -> Option<&str> {
        self.schema_url.as_deref()
    }

    /// Sets the schema URL.
    pub fn with_schema_url(mut self, url: impl Into<String>) -> Self {
        self.schema_url = Some(url.into());
        self
    }
}
