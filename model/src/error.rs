use std::fmt;

/// A value that cannot be part of a mirroring session, with the field it came from so the
/// message tells the operator what to fix.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct ValidationError {
    pub field: String,
    pub reason: String,
}

impl ValidationError {
    pub fn new(field: impl Into<String>, reason: impl Into<String>) -> Self {
        Self { field: field.into(), reason: reason.into() }
    }

    /// The same error reported under an enclosing field, e.g. `sources[2]`.
    pub fn within(self, field: impl fmt::Display) -> Self {
        Self {
            field: format!("{field}{}", if self.field.is_empty() { String::new() } else { format!(".{}", self.field) }),
            ..self
        }
    }
}

impl fmt::Display for ValidationError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.field.is_empty() { write!(f, "{}", self.reason) } else { write!(f, "{}: {}", self.field, self.reason) }
    }
}
