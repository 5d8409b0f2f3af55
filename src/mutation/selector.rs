//! Kubernetes label selectors in their string form
//! (`app.kubernetes.io/name=prometheus,tier!=canary,env in (prod,staging),!legacy`),
//! the form `kubectl -l` and the `--pod-selector` flag take.

use std::fmt;
use std::str::FromStr;

use super::view::{Json, Object};

#[derive(Clone, Debug, PartialEq, Eq)]
enum Requirement {
    Exists(String),
    DoesNotExist(String),
    In(String, Vec<String>),
    NotIn(String, Vec<String>),
}

impl Requirement {
    fn matches(&self, labels: Option<&Object<'_>>) -> bool {
        let value = |key: &str| labels.and_then(|l| l.get(key)).and_then(Json::as_str);
        match self {
            Self::Exists(key) => value(key).is_some(),
            Self::DoesNotExist(key) => value(key).is_none(),
            Self::In(key, values) => value(key).is_some_and(|v| values.iter().any(|x| x == v)),
            // As in Kubernetes, a missing label satisfies `notin` and `!=`.
            Self::NotIn(key, values) => !value(key).is_some_and(|v| values.iter().any(|x| x == v)),
        }
    }
}

/// A parsed label selector; all requirements must hold (AND).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LabelSelector {
    source: String,
    requirements: Vec<Requirement>,
}

impl LabelSelector {
    /// `app.kubernetes.io/name=prometheus`: what prometheus-operator puts on its pods.
    pub fn default_prometheus() -> Self {
        Self {
            source: "app.kubernetes.io/name=prometheus".into(),
            requirements: vec![Requirement::In(
                "app.kubernetes.io/name".into(),
                vec!["prometheus".into()],
            )],
        }
    }

    /// Whether `labels` (an object's `metadata.labels`, possibly absent)
    /// satisfies every requirement. An empty selector selects nothing: a
    /// webhook that injects every pod of the cluster is never what was meant.
    pub fn matches(&self, labels: Option<&Object<'_>>) -> bool {
        !self.requirements.is_empty() && self.requirements.iter().all(|r| r.matches(labels))
    }
}

impl fmt::Display for LabelSelector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.source)
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("invalid label selector {selector:?}: {reason}")]
pub struct SelectorError {
    selector: String,
    reason: String,
}

impl FromStr for LabelSelector {
    type Err = SelectorError;

    fn from_str(source: &str) -> Result<Self, Self::Err> {
        let fail = |reason: String| SelectorError {
            selector: source.to_owned(),
            reason,
        };
        let requirements = split_requirements(source)
            .map_err(fail)?
            .into_iter()
            .map(|part| parse_requirement(part).map_err(fail))
            .collect::<Result<Vec<_>, _>>()?;
        if requirements.is_empty() {
            return Err(fail("it is empty, and would select nothing".into()));
        }
        Ok(Self {
            source: source.trim().to_owned(),
            requirements,
        })
    }
}

/// Splits on the commas that separate requirements, not those inside `( )`.
fn split_requirements(source: &str) -> Result<Vec<&str>, String> {
    let mut parts = Vec::new();
    let mut depth = 0usize;
    let mut start = 0;
    for (i, c) in source.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => depth = depth.checked_sub(1).ok_or("unbalanced ')'")?,
            ',' if depth == 0 => {
                parts.push(source.get(start..i).unwrap_or_default());
                start = i + 1;
            }
            _ => {}
        }
    }
    if depth != 0 {
        return Err("unbalanced '('".into());
    }
    parts.push(source.get(start..).unwrap_or_default());
    Ok(parts
        .into_iter()
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .collect())
}

fn parse_requirement(part: &str) -> Result<Requirement, String> {
    if let Some(key) = part.strip_prefix('!') {
        return Ok(Requirement::DoesNotExist(label_key(key)?));
    }
    if let Some((key, value)) = part.split_once("!=") {
        return Ok(Requirement::NotIn(
            label_key(key)?,
            vec![label_value(value)?],
        ));
    }
    if let Some((key, value)) = part.split_once("==").or_else(|| part.split_once('=')) {
        return Ok(Requirement::In(label_key(key)?, vec![label_value(value)?]));
    }
    if let Some((key, rest)) = part.split_once(char::is_whitespace) {
        let rest = rest.trim_start();
        let (operator, values) = rest
            .split_once('(')
            .ok_or_else(|| format!("expected '(' after the operator in {part:?}"))?;
        let values = values
            .strip_suffix(')')
            .ok_or_else(|| format!("expected ')' at the end of {part:?}"))?;
        let values = values
            .split(',')
            .map(label_value)
            .collect::<Result<Vec<_>, _>>()?;
        return match operator.trim() {
            "in" => Ok(Requirement::In(label_key(key)?, values)),
            "notin" => Ok(Requirement::NotIn(label_key(key)?, values)),
            other => Err(format!("unknown operator {other:?} (expected in or notin)")),
        };
    }
    Ok(Requirement::Exists(label_key(part)?))
}

fn label_key(key: &str) -> Result<String, String> {
    let key = key.trim();
    let name = key.rsplit_once('/').map_or(key, |(_, name)| name);
    let valid = !name.is_empty()
        && name.len() <= 63
        && key.len() <= 316
        && key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '/'));
    if valid {
        Ok(key.to_owned())
    } else {
        Err(format!("{key:?} is not a valid label key"))
    }
}

fn label_value(value: &str) -> Result<String, String> {
    let value = value.trim();
    let valid = value.len() <= 63
        && value
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if valid {
        Ok(value.to_owned())
    } else {
        Err(format!("{value:?} is not a valid label value"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{Value, json};

    fn matches(selector: &LabelSelector, labels: Value) -> bool {
        selector.matches(Json::from(&labels).as_object())
    }

    #[test]
    fn equality_selector_matches_only_that_value() {
        let selector: LabelSelector = "app.kubernetes.io/name=prometheus".parse().unwrap();
        assert!(matches(
            &selector,
            json!({"app.kubernetes.io/name": "prometheus"})
        ));
        assert!(!matches(
            &selector,
            json!({"app.kubernetes.io/name": "grafana"})
        ));
        assert!(!selector.matches(None));
        assert_eq!(selector, LabelSelector::default_prometheus());
    }

    #[test]
    fn set_based_and_existence_requirements_combine() {
        let selector: LabelSelector = "env in (prod, staging),tier!=canary,!legacy,app"
            .parse()
            .unwrap();
        assert!(matches(&selector, json!({"env": "prod", "app": "x"})));
        assert!(!matches(&selector, json!({"env": "dev", "app": "x"})));
        assert!(!matches(
            &selector,
            json!({"env": "prod", "app": "x", "tier": "canary"})
        ));
        assert!(!matches(
            &selector,
            json!({"env": "prod", "app": "x", "legacy": ""})
        ));
        assert!(!matches(&selector, json!({"env": "prod"})));
    }

    #[test]
    fn notin_is_satisfied_by_a_missing_label() {
        let selector: LabelSelector = "app=p,tier notin (canary)".parse().unwrap();
        assert!(matches(&selector, json!({"app": "p"})));
    }

    #[test]
    fn rejects_malformed_selectors_with_a_reason() {
        for bad in [
            "",
            " , ",
            "a in (b",
            "a)",
            "a foo (b)",
            "bad key=x",
            "a=b c",
            "a in b",
        ] {
            let err = bad.parse::<LabelSelector>().unwrap_err();
            assert!(
                err.to_string().contains("invalid label selector"),
                "{bad}: {err}"
            );
        }
    }
}
