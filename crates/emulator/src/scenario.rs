//! Scenario timelines: phases that run in order and loop.
//!
//! A phase (`name`, `duration` seconds, `parameters`) as in the legacy emulator's devices.yaml. The one
//! parameter form every model understands is `<field>_range: [lo, hi]`: while the phase runs,
//! the field's driver is re-centred on the middle of the range and kept inside it.

use crate::ScenarioSpec;
use std::collections::BTreeMap;

/// A field range override of the active phase.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Range {
    pub lo: f64,
    pub hi: f64,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Phase {
    pub name: String,
    pub duration_ms: i64,
    pub ranges: BTreeMap<String, Range>,
}

/// A looping list of phases; empty means "normal operation" forever.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Timeline {
    pub phases: Vec<Phase>,
}

impl Timeline {
    /// Build from config, checking parameters against the model's fields.
    /// Errors name the parameter and list what is accepted.
    pub fn from_specs(
        specs: &[ScenarioSpec],
        fields: &[&str],
    ) -> Result<Timeline, (usize, String)> {
        let mut phases = Vec::new();
        for (i, s) in specs.iter().enumerate() {
            let mut ranges = BTreeMap::new();
            for (k, v) in &s.parameters {
                let field = k
                    .strip_suffix("_range")
                    .filter(|f| fields.contains(f))
                    .ok_or_else(|| {
                        (
                            i,
                            format!(
                                "unknown scenario parameter `{k}`; this device type accepts {}",
                                fields
                                    .iter()
                                    .map(|f| format!("{f}_range"))
                                    .collect::<Vec<_>>()
                                    .join(", ")
                            ),
                        )
                    })?;
                let pair = v
                    .as_sequence()
                    .filter(|s| s.len() == 2)
                    .and_then(|s| Some((s[0].as_f64()?, s[1].as_f64()?)))
                    .filter(|(a, b)| a.is_finite() && b.is_finite() && a <= b)
                    .ok_or_else(|| (i, format!("`{k}` must be [low, high] with low <= high")))?;
                ranges.insert(
                    field.to_string(),
                    Range {
                        lo: pair.0,
                        hi: pair.1,
                    },
                );
            }
            phases.push(Phase {
                name: s.name.clone(),
                duration_ms: (s.duration * 1000.0) as i64,
                ranges,
            });
        }
        Ok(Timeline { phases })
    }

    /// The phase active `elapsed_ms` after the timeline started.
    pub fn phase_at(&self, elapsed_ms: i64) -> Option<&Phase> {
        let total: i64 = self.phases.iter().map(|p| p.duration_ms.max(1)).sum();
        if total == 0 {
            return None;
        }
        let mut t = elapsed_ms.rem_euclid(total);
        for p in &self.phases {
            if t < p.duration_ms.max(1) {
                return Some(p);
            }
            t -= p.duration_ms.max(1);
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(name: &str, d: f64, params: &str) -> ScenarioSpec {
        ScenarioSpec {
            name: name.into(),
            duration: d,
            parameters: serde_yaml::from_str(params).unwrap(),
        }
    }

    #[test]
    fn phases_follow_each_other_and_loop() {
        let t = Timeline::from_specs(
            &[
                spec("normal", 10.0, "temperature_range: [18, 25]"),
                spec("hot", 5.0, "temperature_range: [45, 50]"),
            ],
            &["temperature"],
        )
        .unwrap();
        assert_eq!(t.phase_at(0).unwrap().name, "normal");
        assert_eq!(t.phase_at(9_999).unwrap().name, "normal");
        assert_eq!(t.phase_at(10_000).unwrap().name, "hot");
        assert_eq!(t.phase_at(15_000).unwrap().name, "normal");
        assert_eq!(
            t.phase_at(12_000).unwrap().ranges["temperature"],
            Range { lo: 45.0, hi: 50.0 }
        );
    }

    #[test]
    fn unknown_parameters_are_refused_with_the_accepted_list() {
        let e = Timeline::from_specs(
            &[spec("x", 1.0, "pressure_range: [1, 2]")],
            &["temperature"],
        )
        .unwrap_err();
        assert!(e.1.contains("temperature_range"), "{}", e.1);
        let e = Timeline::from_specs(
            &[spec("x", 1.0, "temperature_range: [5, 1]")],
            &["temperature"],
        )
        .unwrap_err();
        assert!(e.1.contains("low <= high"));
    }
}
