//! Custom device types, defined in YAML from [`generator`](crate::generator)s.
//!
//! ```yaml
//! devices:
//!   types:
//!     - name: Beehive
//!       description: Hive scale in the school garden
//!       fields:
//!         - name: weight
//!           unit: kg
//!           generator: { kind: random_walk, start: 40, step: 0.05, min: 0, max: 120 }
//!         - name: temperature
//!           unit: °C
//!           generator: { kind: sum, of: [{ kind: daily, mean: 34, amplitude: 1 }, { kind: gaussian, std: 0.1 }] }
//! ```
//!
//! Registered types join the catalog for the life of the process: `TypeInfo` hands out
//! `&'static` names (so a device costs a pointer, not a copy of its field table), which is why
//! registration leaks the few strings of each type once — a bounded cost, paid at start-up.

use crate::generator::{Generator, GeneratorSpec};
use crate::model::{DeviceModel, FieldInfo, TypeInfo};
use crate::scenario::Range;
use parking_lot::RwLock;
use rand::rngs::SmallRng;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CustomTypeSpec {
    pub name: String,
    #[serde(default)]
    pub description: String,
    pub fields: Vec<CustomFieldSpec>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CustomFieldSpec {
    pub name: String,
    #[serde(default)]
    pub unit: String,
    #[serde(default)]
    pub description: String,
    pub generator: GeneratorSpec,
}

struct Registered {
    info: &'static TypeInfo,
    /// Built once (replay files are read here), cloned per device.
    generators: Vec<Generator>,
}

static REGISTRY: RwLock<Vec<Registered>> = RwLock::new(Vec::new());

/// The registered custom types.
pub fn types() -> Vec<&'static TypeInfo> {
    REGISTRY.read().iter().map(|r| r.info).collect()
}

fn leak(s: &str) -> &'static str {
    Box::leak(s.to_string().into_boxed_str())
}

/// Parse `devices.types` entries (YAML values) and register them. Errors carry the dotted
/// key under `devices.types`, e.g. `devices.types[0].fields[1].generator`.
pub fn register_yaml(
    values: &[serde_yaml::Value],
) -> Result<Vec<&'static TypeInfo>, (String, String)> {
    let mut specs = Vec::new();
    for (i, v) in values.iter().enumerate() {
        let spec: CustomTypeSpec = serde_path_to_error::deserialize(v.clone()).map_err(|e| {
            let path = e.path().to_string();
            let key = if path == "." {
                format!("devices.types[{i}]")
            } else {
                format!("devices.types[{i}].{path}")
            };
            (key, e.into_inner().to_string())
        })?;
        specs.push(spec);
    }
    register(&specs)
}

/// Register custom types (a type of the same name registered before is replaced).
pub fn register(specs: &[CustomTypeSpec]) -> Result<Vec<&'static TypeInfo>, (String, String)> {
    let mut built = Vec::new();
    for (i, s) in specs.iter().enumerate() {
        let key = |k: &str| format!("devices.types[{i}]{k}");
        if s.name.is_empty() || s.name.contains(['/', '+', '#', ' ']) {
            return Err((
                key(".name"),
                "must be a non-empty word without '/', '+', '#'".into(),
            ));
        }
        if crate::builtin::build(&s.name, &Default::default()).is_some()
            || ["TemperatureSensor", "PressureValve", "PvInverter"].contains(&s.name.as_str())
        {
            return Err((
                key(".name"),
                format!("`{}` is a built-in type; pick another name", s.name),
            ));
        }
        if s.fields.is_empty() {
            return Err((key(".fields"), "needs at least one field".into()));
        }
        let mut fields = Vec::new();
        let mut generators = Vec::new();
        for (j, f) in s.fields.iter().enumerate() {
            if f.name.is_empty() || fields.iter().any(|x: &FieldInfo| x.name == f.name) {
                return Err((
                    key(&format!(".fields[{j}].name")),
                    "field names must be non-empty and unique".into(),
                ));
            }
            generators.push(
                f.generator
                    .build()
                    .map_err(|e| (key(&format!(".fields[{j}].generator")), e))?,
            );
            fields.push(FieldInfo {
                name: leak(&f.name),
                unit: leak(&f.unit),
                description: leak(&f.description),
            });
        }
        let info: &'static TypeInfo = Box::leak(Box::new(TypeInfo {
            name: leak(&s.name),
            description: leak(&s.description),
            fields: Box::leak(fields.into_boxed_slice()),
        }));
        built.push(Registered { info, generators });
    }
    let infos = built.iter().map(|r| r.info).collect();
    let mut reg = REGISTRY.write();
    for b in built {
        reg.retain(|r| r.info.name != b.info.name);
        reg.push(b);
    }
    Ok(infos)
}

/// A device of a custom type: one generator per field.
struct CustomModel {
    info: &'static TypeInfo,
    generators: Vec<Generator>,
}

impl DeviceModel for CustomModel {
    fn info(&self) -> &'static TypeInfo {
        self.info
    }
    fn step(
        &mut self,
        t_ms: i64,
        _dt_s: f64,
        _ranges: &BTreeMap<String, Range>,
        rng: &mut SmallRng,
    ) -> Vec<(&'static str, f64)> {
        self.info
            .fields
            .iter()
            .zip(self.generators.iter_mut())
            .map(|(f, g)| (f.name, g.next(t_ms, rng)))
            .collect()
    }
}

pub(crate) fn build(info: &'static TypeInfo) -> Option<Box<dyn DeviceModel>> {
    let reg = REGISTRY.read();
    let r = reg.iter().find(|r| std::ptr::eq(r.info, info))?;
    Some(Box::new(CustomModel {
        info,
        generators: r.generators.clone(),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{build, catalog, sample, type_info};
    use rand::SeedableRng;

    #[test]
    fn a_yaml_type_joins_the_catalog_and_generates_its_fields() {
        let yaml = r#"
- name: Beehive
  description: hive scale
  fields:
    - name: weight
      unit: kg
      generator: { kind: constant, value: 42 }
    - name: hum
      unit: "%"
      generator: { kind: uniform, min: 40, max: 60 }
"#;
        let v: Vec<serde_yaml::Value> = serde_yaml::from_str(yaml).unwrap();
        register_yaml(&v).unwrap();
        assert!(catalog().iter().any(|t| t.name == "Beehive"));
        assert_eq!(type_info("beehive").unwrap().fields[0].unit, "kg");
        let mut m = build("Beehive", &Default::default()).unwrap();
        let mut rng = SmallRng::seed_from_u64(1);
        let s = sample(m.as_mut(), 0, 1.0, &BTreeMap::new(), &mut rng);
        assert_eq!(s[0].1.as_f64(), Some(42.0));
        assert!((40.0..60.0).contains(&s[1].1.as_f64().unwrap()));
    }

    #[test]
    fn bad_custom_types_name_the_key() {
        let v: Vec<serde_yaml::Value> = serde_yaml::from_str(
            "- name: X1\n  fields:\n    - name: a\n      generator: { kind: uniform, min: 3, max: 1 }\n",
        )
        .unwrap();
        let (k, m) = register_yaml(&v).unwrap_err();
        assert_eq!(k, "devices.types[0].fields[0].generator");
        assert!(m.contains("min <= max"));
        let v: Vec<serde_yaml::Value> = serde_yaml::from_str(
            "- name: Motor\n  fields:\n    - {name: a, generator: {kind: constant, value: 1}}\n",
        )
        .unwrap();
        assert!(register_yaml(&v).unwrap_err().1.contains("built-in"));
        let v: Vec<serde_yaml::Value> = serde_yaml::from_str("- name: Y\n  felds: []\n").unwrap();
        assert!(register_yaml(&v).unwrap_err().1.contains("unknown field"));
    }
}
