//! Device models: which fields a device type has, in which units, and how they evolve.
//!
//! Every model is a small physical story, not independent noise per field: a valve's flow
//! follows its opening and the pressure across it; a PV inverter's DC power is voltage times
//! current, its AC power a fixed efficiency below, and it produces nothing at night.
//! Slow quantities are mean-reverting random walks ([`Driver`], an Ornstein-Uhlenbeck process)
//! around physically plausible set points with a daily cycle where nature has one.

use crate::scenario::Range;
use crate::{builtin, DeviceSettings};
use fieldlab_core::FieldValue;
use rand::rngs::SmallRng;
use rand_distr::{Distribution, StandardNormal};
use std::collections::BTreeMap;
use std::f64::consts::PI;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FieldInfo {
    pub name: &'static str,
    /// Unit symbol; `bool` marks a boolean field (published as `true`/`false`).
    pub unit: &'static str,
    pub description: &'static str,
}

/// Shorthand for the field tables of the built-in types.
pub const fn field(name: &'static str, unit: &'static str, description: &'static str) -> FieldInfo {
    FieldInfo {
        name,
        unit,
        description,
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TypeInfo {
    pub name: &'static str,
    pub description: &'static str,
    pub fields: &'static [FieldInfo],
}

impl TypeInfo {
    pub fn field_names(&self) -> Vec<&'static str> {
        self.fields.iter().map(|f| f.name).collect()
    }

    /// (field, unit) of every field that has a unit (boolean fields have none): the one source
    /// of units for the API, the UI and the quality rules' messages.
    pub fn units(&self) -> impl Iterator<Item = (&'static str, &'static str)> + '_ {
        self.fields
            .iter()
            .filter(|f| !f.unit.is_empty() && f.unit != "bool")
            .map(|f| (f.name, f.unit))
    }
}

/// Every catalog type's units, `{type: {field: unit}}` (built-in and custom types): what
/// exports write beside each value.
pub fn catalog_units(
) -> std::collections::BTreeMap<String, std::collections::BTreeMap<String, String>> {
    catalog()
        .into_iter()
        .map(|t| {
            (
                t.name.to_string(),
                t.units()
                    .map(|(f, u)| (f.to_string(), u.to_string()))
                    .collect(),
            )
        })
        .collect()
}

/// One device's state machine. `step` is called once per message with the current time and
/// the active scenario ranges; it must not read clocks or do I/O.
pub trait DeviceModel: Send {
    fn info(&self) -> &'static TypeInfo;
    fn step(
        &mut self,
        t_ms: i64,
        dt_s: f64,
        ranges: &BTreeMap<String, Range>,
        rng: &mut SmallRng,
    ) -> Vec<(&'static str, f64)>;
}

/// A mean-reverting random walk (Ornstein-Uhlenbeck): `dx = theta (mu - x) dt + sigma dW`.
#[derive(Debug, Clone)]
pub struct Driver {
    pub x: f64,
    pub theta: f64,
    pub sigma: f64,
}

impl Driver {
    pub fn new(x: f64, theta: f64, sigma: f64) -> Self {
        Driver { x, theta, sigma }
    }

    /// Advance by `dt` seconds towards `mu`; a scenario range re-centres and bounds it.
    pub fn step(&mut self, mu: f64, dt: f64, range: Option<&Range>, rng: &mut SmallRng) -> f64 {
        let (mu, theta) = match range {
            Some(r) => ((r.lo + r.hi) / 2.0, self.theta.max(0.2)),
            None => (mu, self.theta),
        };
        let z: f64 = StandardNormal.sample(rng);
        // The exact transition of the process over `dt`, not the Euler step
        // `x += theta (mu - x) dt + sigma sqrt(dt) z`, which diverges once `theta dt > 2` (a
        // device with a 10 s interval and theta 0.5 reached 1e13 within minutes).
        let dt = dt.max(0.0);
        self.x = if theta > 0.0 {
            let decay = (-theta * dt).exp();
            let sd = self.sigma * ((1.0 - decay * decay) / (2.0 * theta)).sqrt();
            mu + (self.x - mu) * decay + sd * z
        } else {
            self.x + self.sigma * dt.sqrt() * z
        };
        if let Some(r) = range {
            self.x = self.x.clamp(r.lo, r.hi);
        }
        self.x
    }
}

/// Hour of day (UTC, fractional) of a timestamp.
pub(crate) fn hour_of_day(t_ms: i64) -> f64 {
    (t_ms.rem_euclid(86_400_000)) as f64 / 3_600_000.0
}

/// Clear-sky sunlight, 0..1: a half sine from 06:00 to 20:00 UTC, 0 at night.
pub(crate) fn daylight(t_ms: i64) -> f64 {
    let h = hour_of_day(t_ms);
    if (6.0..20.0).contains(&h) {
        (PI * (h - 6.0) / 14.0).sin()
    } else {
        0.0
    }
}

pub(crate) fn daily(t_ms: i64, peak_hour: f64) -> f64 {
    (2.0 * PI * (hour_of_day(t_ms) - peak_hour + 6.0) / 24.0).sin()
}

pub(crate) fn round(x: f64, digits: i32) -> f64 {
    let m = 10f64.powi(digits);
    (x * m).round() / m
}

// ---------------------------------------------------------------------------------------------

pub static TEMPERATURE_SENSOR: TypeInfo = TypeInfo {
    name: "TemperatureSensor",
    description:
        "Room/process temperature sensor with relative humidity; daily cycle peaking mid-afternoon.",
    fields: &[
        FieldInfo {
            name: "temperature",
            unit: "°C",
            description: "air temperature",
        },
        FieldInfo {
            name: "humidity",
            unit: "%RH",
            description: "relative humidity; falls as temperature rises",
        },
    ],
};

struct TemperatureSensor {
    temp: Driver,
    hum_noise: Driver,
    lo: f64,
    hi: f64,
}

impl DeviceModel for TemperatureSensor {
    fn info(&self) -> &'static TypeInfo {
        &TEMPERATURE_SENSOR
    }
    fn step(
        &mut self,
        t: i64,
        dt: f64,
        r: &BTreeMap<String, Range>,
        rng: &mut SmallRng,
    ) -> Vec<(&'static str, f64)> {
        let mu = 21.0 + 2.0 * daily(t, 15.0);
        let temp = self
            .temp
            .step(mu, dt, r.get("temperature"), rng)
            .clamp(self.lo, self.hi);
        let hn = self.hum_noise.step(0.0, dt, None, rng);
        let hum = (45.0 - 1.5 * (temp - 21.0) + hn).clamp(0.0, 100.0);
        vec![("temperature", round(temp, 2)), ("humidity", round(hum, 1))]
    }
}

pub static PRESSURE_VALVE: TypeInfo = TypeInfo {
    name: "PressureValve",
    description:
        "Control valve on a water line: opening drives flow, flow ~ Cv * opening * sqrt(Δp).",
    fields: &[
        FieldInfo {
            name: "pressure",
            unit: "bar",
            description: "upstream pressure (downstream is 1 bar)",
        },
        FieldInfo {
            name: "valve_position",
            unit: "%",
            description: "opening, 0 = closed",
        },
        FieldInfo {
            name: "flow_rate",
            unit: "m³/h",
            description: "20 * opening * sqrt(pressure - 1 bar)",
        },
    ],
};

struct PressureValve {
    pressure: Driver,
    position: Driver,
    lo: f64,
    hi: f64,
}

impl DeviceModel for PressureValve {
    fn info(&self) -> &'static TypeInfo {
        &PRESSURE_VALVE
    }
    fn step(
        &mut self,
        _t: i64,
        dt: f64,
        r: &BTreeMap<String, Range>,
        rng: &mut SmallRng,
    ) -> Vec<(&'static str, f64)> {
        let p = self
            .pressure
            .step(6.0, dt, r.get("pressure"), rng)
            .clamp(self.lo, self.hi);
        let pos = self
            .position
            .step(60.0, dt, r.get("valve_position"), rng)
            .clamp(0.0, 100.0);
        let flow = 20.0 * (pos / 100.0) * (p - 1.0).max(0.0).sqrt();
        vec![
            ("pressure", round(p, 3)),
            ("valve_position", round(pos, 1)),
            ("flow_rate", round(flow, 2)),
        ]
    }
}

pub static PV_INVERTER: TypeInfo = TypeInfo {
    name: "PvInverter",
    description:
        "PV string inverter (renewable lab): irradiance follows the sun (06-20 UTC) and clouds; \
                  P_dc = V_dc * I_dc, P_ac = 96.5 % of P_dc, nothing at night.",
    fields: &[
        FieldInfo {
            name: "irradiance",
            unit: "W/m²",
            description: "plane-of-array irradiance",
        },
        FieldInfo {
            name: "module_temperature",
            unit: "°C",
            description: "ambient + 0.03 °C per W/m²",
        },
        FieldInfo {
            name: "dc_voltage",
            unit: "V",
            description: "string voltage, -0.4 %/K above 25 °C; 0 when off",
        },
        FieldInfo {
            name: "dc_current",
            unit: "A",
            description: "12 A at 1000 W/m²",
        },
        FieldInfo {
            name: "dc_power",
            unit: "W",
            description: "dc_voltage * dc_current",
        },
        FieldInfo {
            name: "ac_power",
            unit: "W",
            description: "0.965 * dc_power",
        },
        FieldInfo {
            name: "energy_total",
            unit: "kWh",
            description: "AC energy since the emulator started",
        },
    ],
};

struct PvInverter {
    cloud: Driver,
    irradiance_override: Driver,
    energy_kwh: f64,
    /// The module's temperature: it follows ambient + irradiance heating with a thermal time
    /// constant (a module does not jump 2 °C in a second when a cloud passes), plus sensor noise
    /// (a real sensor never repeats one value to 0.01 °C all night).
    module_t: Option<f64>,
    module_noise: Driver,
}

/// A PV module's thermal time constant, seconds.
const MODULE_TAU_S: f64 = 300.0;

impl DeviceModel for PvInverter {
    fn info(&self) -> &'static TypeInfo {
        &PV_INVERTER
    }
    fn step(
        &mut self,
        t: i64,
        dt: f64,
        r: &BTreeMap<String, Range>,
        rng: &mut SmallRng,
    ) -> Vec<(&'static str, f64)> {
        let clear = 1000.0 * daylight(t);
        let cloud = self.cloud.step(0.85, dt, None, rng).clamp(0.2, 1.0);
        let mut irr = clear * cloud;
        if let Some(range) = r.get("irradiance") {
            self.irradiance_override.x = irr;
            irr = self.irradiance_override.step(irr, dt, Some(range), rng);
        }
        let ambient = 15.0 + 5.0 * daily(t, 15.0);
        let target = ambient + 0.03 * irr;
        let m = match self.module_t {
            Some(m) => target + (m - target) * (-dt.max(0.0) / MODULE_TAU_S).exp(),
            None => target,
        };
        self.module_t = Some(m);
        let module_t = m + self.module_noise.step(0.0, dt, None, rng);
        let on = irr > 5.0;
        let v = if on {
            600.0 * (1.0 - 0.004 * (module_t - 25.0))
        } else {
            0.0
        };
        let i = if on { 12.0 * irr / 1000.0 } else { 0.0 };
        let (v, i) = (round(v, 1), round(i, 3));
        let p_dc = v * i;
        let p_ac = 0.965 * p_dc;
        self.energy_kwh += p_ac * dt / 3_600_000.0;
        vec![
            ("irradiance", round(irr, 1)),
            ("module_temperature", round(module_t, 2)),
            ("dc_voltage", v),
            ("dc_current", i),
            ("dc_power", round(p_dc, 1)),
            ("ac_power", round(p_ac, 1)),
            ("energy_total", round(self.energy_kwh, 4)),
        ]
    }
}

/// Every device type: the built-in ones, then custom types from YAML ([`crate::custom`]).
pub fn catalog() -> Vec<&'static TypeInfo> {
    let mut v = vec![
        &TEMPERATURE_SENSOR,
        &PRESSURE_VALVE,
        &builtin::CNC_MACHINE,
        &builtin::MOTOR,
        &PV_INVERTER,
        &builtin::WIND_TURBINE,
        &builtin::BIOGAS_PLANT,
        &builtin::HEAT_BOILER,
        &builtin::ENERGY_STORAGE,
        &builtin::ENGINE_TEST_BENCH,
        &builtin::ALGAE_FARM,
        &builtin::REEFER,
    ];
    v.extend(crate::custom::types());
    v
}

/// Look a type up by name. Besides the exact name, the snake_case spelling
/// (`temperature_sensor`, `pv_inverter`) is accepted.
pub fn type_info(name: &str) -> Option<&'static TypeInfo> {
    let cat = catalog();
    cat.iter()
        .find(|t| t.name == name)
        .or_else(|| cat.iter().find(|t| snake(t.name) == name))
        .copied()
}

/// `PvInverter` -> `pv_inverter`.
pub fn snake(name: &str) -> String {
    let mut out = String::with_capacity(name.len() + 4);
    for (i, c) in name.chars().enumerate() {
        if c.is_ascii_uppercase() {
            if i > 0 {
                out.push('_');
            }
            out.push(c.to_ascii_lowercase());
        } else {
            out.push(c);
        }
    }
    out
}

/// Instantiate a model for a configured device (`type_name` as accepted by [`type_info`]).
pub fn build(type_name: &str, s: &DeviceSettings) -> Option<Box<dyn DeviceModel>> {
    let info = type_info(type_name)?;
    Some(match info.name {
        "TemperatureSensor" => Box::new(TemperatureSensor {
            temp: Driver::new(21.0, 0.05, 0.08),
            hum_noise: Driver::new(0.0, 0.05, 0.3),
            lo: s.min_value.unwrap_or(-40.0),
            hi: s.max_value.unwrap_or(125.0),
        }),
        "PressureValve" => Box::new(PressureValve {
            pressure: Driver::new(6.0, 0.05, 0.05),
            position: Driver::new(60.0, 0.02, 1.5),
            lo: s.min_value.unwrap_or(0.0),
            hi: s.max_value.unwrap_or(16.0),
        }),
        "PvInverter" => Box::new(PvInverter {
            cloud: Driver::new(0.85, 0.02, 0.03),
            irradiance_override: Driver::new(0.0, 0.5, 5.0),
            energy_kwh: 0.0,
            module_t: None,
            module_noise: Driver::new(0.0, 0.5, 0.05),
        }),
        other => builtin::build(other, s).or_else(|| crate::custom::build(info))?,
    })
}

/// Step a model and apply the phase's ranges to every field (derived ones included).
/// Boolean fields (unit `bool`) come out as booleans.
pub fn sample(
    m: &mut dyn DeviceModel,
    t_ms: i64,
    dt_s: f64,
    ranges: &BTreeMap<String, Range>,
    rng: &mut SmallRng,
) -> Vec<(&'static str, FieldValue)> {
    let info = m.info();
    m.step(t_ms, dt_s, ranges, rng)
        .into_iter()
        .map(|(k, v)| {
            let v = ranges.get(k).map_or(v, |r| v.clamp(r.lo, r.hi));
            let is_bool = info.fields.iter().any(|f| f.name == k && f.unit == "bool");
            let v = if is_bool {
                FieldValue::Bool(v >= 0.5)
            } else {
                FieldValue::F64(v)
            };
            (k, v)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    const NOON: i64 = 1_767_268_800_000; // 2026-01-01T12:00:00Z

    #[test]
    fn a_driver_stays_bounded_at_any_interval() {
        // theta 0.5 with a 10 s step: the Euler step diverged (theta dt = 5 > 2).
        for dt in [0.1, 1.0, 10.0, 600.0] {
            let mut d = Driver::new(0.0, 0.5, 2.0);
            let mut rng = SmallRng::seed_from_u64(5);
            let sd = 2.0 / (2.0f64 * 0.5).sqrt(); // the stationary spread
            let mut sq = 0.0;
            for _ in 0..20_000 {
                let x = d.step(0.0, dt, None, &mut rng);
                assert!(x.abs() < 8.0 * sd, "dt {dt}: {x}");
                sq += x * x;
            }
            let rms = (sq / 20_000.0).sqrt();
            if dt >= 10.0 {
                assert!((rms / sd - 1.0).abs() < 0.1, "dt {dt}: rms {rms} vs {sd}");
            }
        }
    }
    const MIDNIGHT: i64 = 1_767_225_600_000;

    fn run(
        ty: &str,
        t0: i64,
        n: usize,
        ranges: &BTreeMap<String, Range>,
    ) -> Vec<BTreeMap<String, f64>> {
        let mut m = build(ty, &DeviceSettings::default()).unwrap();
        let mut rng = SmallRng::seed_from_u64(7);
        (0..n)
            .map(|i| {
                sample(m.as_mut(), t0 + i as i64 * 1000, 1.0, ranges, &mut rng)
                    .into_iter()
                    .map(|(k, v)| (k.to_string(), v.as_f64().unwrap()))
                    .collect()
            })
            .collect()
    }

    #[test]
    fn every_type_emits_exactly_its_documented_fields() {
        for t in catalog() {
            let out = run(t.name, NOON, 1, &BTreeMap::new());
            let mut got: Vec<&str> = out[0].keys().map(String::as_str).collect();
            let mut want = t.field_names();
            got.sort();
            want.sort();
            assert_eq!(got, want, "{}", t.name);
        }
    }

    #[test]
    fn pv_power_is_voltage_times_current_and_zero_at_night() {
        for s in run("PvInverter", NOON, 60, &BTreeMap::new()) {
            assert!((s["dc_power"] - s["dc_voltage"] * s["dc_current"]).abs() < 0.1);
            assert!(s["ac_power"] <= s["dc_power"] && s["ac_power"] > 0.0);
        }
        for s in run("PvInverter", MIDNIGHT, 10, &BTreeMap::new()) {
            assert_eq!(s["dc_power"], 0.0);
            assert_eq!(s["irradiance"], 0.0);
        }
    }

    #[test]
    fn valve_flow_follows_opening_and_pressure() {
        for s in run("PressureValve", NOON, 100, &BTreeMap::new()) {
            let want = 20.0 * s["valve_position"] / 100.0 * (s["pressure"] - 1.0).sqrt();
            assert!((s["flow_rate"] - want).abs() < 0.05, "{s:?}");
        }
    }

    #[test]
    fn a_scenario_range_really_moves_the_values() {
        let mut hot = BTreeMap::new();
        hot.insert("temperature".to_string(), Range { lo: 45.0, hi: 50.0 });
        let normal = run("TemperatureSensor", NOON, 30, &BTreeMap::new());
        assert!(normal
            .iter()
            .all(|s| (15.0..30.0).contains(&s["temperature"])));
        let alert = run("TemperatureSensor", NOON, 30, &hot);
        assert!(alert
            .iter()
            .all(|s| (45.0..=50.0).contains(&s["temperature"])));
        // Humidity responds to the heat: it is physically tied to temperature.
        assert!(alert[29]["humidity"] < normal[29]["humidity"]);
    }

    #[test]
    fn same_seed_same_values() {
        assert_eq!(
            run("TemperatureSensor", NOON, 20, &BTreeMap::new()),
            run("TemperatureSensor", NOON, 20, &BTreeMap::new())
        );
    }
}
