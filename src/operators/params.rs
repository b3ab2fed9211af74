//! The `key=value,key=value` part of an operator spec.
//!
//! Every error names the whole spec, the offending parameter and the expected form, because
//! the user typed the spec and needs to see which part to change.

use crate::{Error, Result};

/// Parsed parameters of one spec; each key must be taken exactly once, and [`Params::finish`]
/// rejects keys nobody asked for.
pub(crate) struct Params<'a> {
    spec: &'a str,
    form: &'static str,
    entries: Vec<(&'a str, &'a str, bool)>,
    accepted: Vec<&'static str>,
}

/// The error every operator constructor and parser uses: key `operator`, message naming the
/// spec so that a long config file still points at the right line.
pub(crate) fn spec_error(spec: &str, problem: impl std::fmt::Display) -> Error {
    Error::config("operator", format!("`{spec}`: {problem}"))
}

impl<'a> Params<'a> {
    /// Splits `rest` (the text after `name:`) into `key=value` pairs. `form` is the canonical
    /// example spec quoted in errors.
    pub(crate) fn new(spec: &'a str, rest: Option<&'a str>, form: &'static str) -> Result<Self> {
        let mut entries: Vec<(&'a str, &'a str, bool)> = Vec::new();
        if let Some(rest) = rest.filter(|r| !r.trim().is_empty()) {
            for part in rest.split(',') {
                let part = part.trim();
                if part.is_empty() {
                    return Err(spec_error(
                        spec,
                        format!("empty parameter (stray comma); expected form `{form}`"),
                    ));
                }
                let Some((k, v)) = part.split_once('=') else {
                    return Err(spec_error(
                        spec,
                        format!(
                            "parameter `{part}` is not of the form key=value; expected form `{form}`"
                        ),
                    ));
                };
                let (k, v) = (k.trim(), v.trim());
                if entries.iter().any(|(e, _, _)| *e == k) {
                    return Err(spec_error(
                        spec,
                        format!("parameter `{k}` is given twice; expected form `{form}`"),
                    ));
                }
                entries.push((k, v, false));
            }
        }
        Ok(Params {
            spec,
            form,
            entries,
            accepted: Vec::new(),
        })
    }

    /// The value of `key` parsed as `T`, or None when absent. `what` describes a valid value
    /// ("a positive integer") for the error message.
    pub(crate) fn get<T: std::str::FromStr>(
        &mut self,
        key: &'static str,
        what: &str,
    ) -> Result<Option<T>> {
        self.accepted.push(key);
        let Some(entry) = self.entries.iter_mut().find(|(k, _, _)| *k == key) else {
            return Ok(None);
        };
        entry.2 = true;
        let text = entry.1;
        text.parse::<T>().map(Some).map_err(|_| {
            spec_error(
                self.spec,
                format!(
                    "parameter `{key}` = `{text}` is not {what}; expected form `{}`",
                    self.form
                ),
            )
        })
    }

    /// Like [`Params::get`] but the parameter must be present.
    pub(crate) fn require<T: std::str::FromStr>(
        &mut self,
        key: &'static str,
        what: &str,
    ) -> Result<T> {
        match self.get(key, what)? {
            Some(v) => Ok(v),
            None => Err(spec_error(
                self.spec,
                format!(
                    "missing parameter `{key}` ({what}); expected form `{}`",
                    self.form
                ),
            )),
        }
    }

    /// Fails on any parameter that no `get`/`require` asked for.
    pub(crate) fn finish(self) -> Result<()> {
        if let Some((k, _, _)) = self.entries.iter().find(|(_, _, used)| !used) {
            let accepted = if self.accepted.is_empty() {
                "none".to_string()
            } else {
                self.accepted.join(", ")
            };
            return Err(spec_error(
                self.spec,
                format!(
                    "unknown parameter `{k}` (accepted: {accepted}); expected form `{}`",
                    self.form
                ),
            ));
        }
        Ok(())
    }
}
