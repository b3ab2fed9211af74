//! Choices as types: the closed sets of named values that configs and the command line spell
//! as strings (backend, atom storage, sampler, integrator). Each set is one enum with one
//! table of spellings; configs (serde), flags (clap) and the Python package parse through it,
//! once, at the edge, and an unknown spelling is an error that names the key and lists every
//! valid value.

use crate::{Error, Result};

/// A closed set of named values.
pub trait Choice: Copy + PartialEq + Sized + 'static {
    /// The config key the choice is read from, named in errors.
    const KEY: &'static str;
    /// What one value is called in errors ("backend", "sampler", …).
    const WHAT: &'static str;
    /// Every value with its spelling, in the order errors list them.
    const NAMES: &'static [(&'static str, Self)];

    /// The spelling of this value in configs, flags and file names.
    fn name(self) -> &'static str {
        Self::NAMES
            .iter()
            .find(|(_, v)| *v == self)
            .map(|(n, _)| *n)
            .expect("every value has a spelling")
    }

    /// Every spelling, comma-separated (for errors and help texts).
    fn spellings() -> String {
        Self::NAMES
            .iter()
            .map(|(n, _)| *n)
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// The value spelled `text`; an error naming [`Choice::KEY`] and the valid spellings.
    fn parse(text: &str) -> Result<Self> {
        Self::parse_for(text, Self::KEY)
    }

    /// [`Choice::parse`] with another key in the error (a command-line flag, say).
    fn parse_for(text: &str, key: &str) -> Result<Self> {
        Self::NAMES
            .iter()
            .find(|(n, _)| *n == text)
            .map(|(_, v)| *v)
            .ok_or_else(|| {
                Error::config(
                    key,
                    format!(
                        "unknown {} {text:?}; expected one of {}",
                        Self::WHAT,
                        Self::spellings()
                    ),
                )
            })
    }
}

/// Implements `Display`, `FromStr` (for clap) and serde's `Serialize`/`Deserialize` of a
/// [`Choice`] through its spellings, so that a config keeps its spelling and a bad value is
/// refused with the valid ones listed.
#[macro_export]
macro_rules! choice_by_name {
    ($t:ty) => {
        impl std::fmt::Display for $t {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str($crate::choices::Choice::name(*self))
            }
        }
        impl std::str::FromStr for $t {
            type Err = $crate::Error;
            fn from_str(s: &str) -> $crate::Result<Self> {
                <$t as $crate::choices::Choice>::parse(s)
            }
        }
        impl serde::Serialize for $t {
            fn serialize<S: serde::Serializer>(
                &self,
                s: S,
            ) -> std::result::Result<S::Ok, S::Error> {
                s.serialize_str($crate::choices::Choice::name(*self))
            }
        }
        impl<'de> serde::Deserialize<'de> for $t {
            fn deserialize<D: serde::Deserializer<'de>>(
                d: D,
            ) -> std::result::Result<Self, D::Error> {
                let text = String::deserialize(d)?;
                <$t as $crate::choices::Choice>::parse(&text).map_err(serde::de::Error::custom)
            }
        }
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Clone, Copy, Debug, PartialEq)]
    enum Colour {
        Red,
        Blue,
    }
    impl Choice for Colour {
        const KEY: &'static str = "paint.colour";
        const WHAT: &'static str = "colour";
        const NAMES: &'static [(&'static str, Self)] =
            &[("red", Colour::Red), ("blue", Colour::Blue)];
    }
    choice_by_name!(Colour);

    #[test]
    fn spellings_round_trip_and_errors_list_them() {
        for &(name, value) in Colour::NAMES {
            assert_eq!(value.name(), name);
            assert_eq!(Colour::parse(name).unwrap(), value);
            assert_eq!(value.to_string(), name);
        }
        let e = Colour::parse("green").unwrap_err().to_string();
        assert_eq!(
            e,
            "paint.colour: unknown colour \"green\"; expected one of red, blue"
        );
        let e = Colour::parse_for("green", "--colour")
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("--colour: "), "{e}");
    }

    #[test]
    fn serde_keeps_the_spelling() {
        #[derive(serde::Serialize, serde::Deserialize)]
        struct Wrap {
            c: Colour,
        }
        let w: Wrap = toml::from_str("c = \"blue\"").unwrap();
        assert_eq!(w.c, Colour::Blue);
        assert_eq!(toml::to_string(&w).unwrap().trim(), "c = \"blue\"");
        let e = toml::from_str::<Wrap>("c = \"green\"")
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("paint.colour") && e.contains("red, blue"), "{e}");
    }
}
