//! Several propagators applied in order.

use super::{Extractor, Injector, TextMapPropagator};
use crate::context::Context;

/// Runs each inner propagator in order: every one injects; extraction threads
/// the context through all of them (later ones see what earlier ones extracted).
pub struct TextMapCompositePropagator {
    propagators: Vec<Box<dyn TextMapPropagator>>,
}

impl TextMapCompositePropagator {
    /// A composite of `propagators`, applied in the given order.
    pub fn new(propagators: Vec<Box<dyn TextMapPropagator>>) -> Self {
        TextMapCompositePropagator { propagators }
    }
}

impl std::fmt::Debug for TextMapCompositePropagator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TextMapCompositePropagator")
            .field("fields", &self.fields())
            .finish()
    }
}

impl TextMapPropagator for TextMapCompositePropagator {
    fn inject_context(&self, cx: &Context, injector: &mut dyn Injector) {
        for p in &self.propagators {
            p.inject_context(cx, injector);
        }
    }

    fn extract_with_context(&self, cx: &Context, extractor: &dyn Extractor) -> Context {
        let mut out = cx.clone();
        for p in &self.propagators {
            out = p.extract_with_context(&out, extractor);
        }
        out
    }

    fn fields(&self) -> Vec<&'static str> {
        let mut f: Vec<&'static str> = Vec::new();
        for p in &self.propagators {
            for k in p.fields() {
                if !f.contains(&k) {
                    f.push(k);
                }
            }
        }
        f
    }
}
