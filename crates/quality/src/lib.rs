//! fieldlab-quality: data-quality rules that run on every parsed reading.
//!
//! Why it exists: students learn what bad sensor data looks like, and operators must not
//! mistake a broken sensor for an anomaly in the process. A reading can be well-formed and
//! still wrong: a missing field, a value outside the sensor's range, a jump faster than the
//! physics allows, the same message twice, a timestamp that goes backwards or lies in the
//! future, a device that went silent, or fields that contradict each other (PV power above
//! what voltage and current allow). Each violation becomes a [`QualityEvent`] with its rule
//! and a human reason; [`Checker::score`] gives the share of clean readings per device and
//! time window.
//!
//! Architecture invariant: pure — no I/O, no clock (`now_ms` is an argument); state per
//! device is bounded (last timestamp, last sequence numbers, last value per field, and a
//! fixed number of score buckets).

/// Every rule a quality event can name (metrics start each at zero, so dashboards and alerts
/// see the series before the first violation).
pub const RULES: &[&str] = &[
    "required",
    "non_finite",
    "range",
    "rate",
    "stuck",
    "stale",
    "duplicate",
    "out_of_order",
    "clock_skew",
    "physics",
];

use fieldlab_core::reading::{FieldValue, Reading};
use std::collections::{BTreeMap, HashMap, VecDeque};

/// Which rules apply and their limits.
#[derive(Debug, Clone, PartialEq)]
pub struct Rules {
    /// Required fields per device type.
    pub required: BTreeMap<String, Vec<String>>,
    /// Allowed `[min, max]` per field name.
    pub ranges: BTreeMap<String, (f64, f64)>,
    /// Largest allowed |change| per second per field name.
    pub max_rate_per_s: BTreeMap<String, f64>,
    /// A device silent for longer than this is stale (ms; 0 = off).
    pub stale_after_ms: i64,
    /// A timestamp this far ahead of the receiving clock is clock skew (ms).
    pub max_future_ms: i64,
    /// Apply the lab's physics rules.
    pub physics: bool,
    /// Width of one quality-score bucket (ms).
    pub bucket_ms: i64,
    /// Fields that are never exactly constant when the sensor works (noisy analog values)...
    pub stuck_fields: Vec<String>,
    /// ...are reported `stuck` after this many identical consecutive values (0 = off).
    pub stuck_after: u32,
    /// Units per device type and field (the emulator's catalog, filled in by the wiring), for
    /// the messages of the physics rules; a reading's own declared units win. Empty: messages
    /// carry no unit.
    pub units: BTreeMap<String, BTreeMap<String, String>>,
}

impl Default for Rules {
    /// Ranges and rates for the emulator's device types, staleness 60 s, physics on.
    fn default() -> Self {
        let ranges = [
            ("temperature", (-40.0, 85.0)),
            ("humidity", (0.0, 100.0)),
            ("pressure", (0.0, 40.0)),
            ("valve_position", (0.0, 100.0)),
            ("flow_rate", (0.0, 500.0)),
            ("irradiance", (0.0, 1500.0)),
            ("module_temperature", (-40.0, 100.0)),
            ("dc_voltage", (0.0, 1500.0)),
            ("dc_current", (0.0, 100.0)),
            ("dc_power", (0.0, 150_000.0)),
            ("ac_power", (0.0, 150_000.0)),
            ("wind_speed", (0.0, 75.0)),
            ("soc", (0.0, 100.0)),
            ("state_of_charge", (0.0, 100.0)),
        ];
        let rates = [
            ("temperature", 2.0),
            ("humidity", 5.0),
            ("module_temperature", 2.0),
            ("energy_total", 1000.0),
        ];
        let required = [
            ("TemperatureSensor", vec!["temperature"]),
            ("PressureValve", vec!["pressure", "valve_position"]),
            (
                "PvInverter",
                vec!["dc_voltage", "dc_current", "dc_power", "ac_power"],
            ),
        ];
        Rules {
            required: required
                .into_iter()
                .map(|(t, f)| (t.to_string(), f.into_iter().map(String::from).collect()))
                .collect(),
            ranges: ranges
                .into_iter()
                .map(|(k, v)| (k.to_string(), v))
                .collect(),
            max_rate_per_s: rates.into_iter().map(|(k, v)| (k.to_string(), v)).collect(),
            stale_after_ms: 60_000,
            max_future_ms: 5_000,
            physics: true,
            bucket_ms: 60_000,
            stuck_fields: ["temperature", "humidity", "pressure", "module_temperature"]
                .into_iter()
                .map(String::from)
                .collect(),
            stuck_after: 30,
            units: BTreeMap::new(),
        }
    }
}

impl Rules {
    /// Bytes one device's state takes at most under these rules: [`DEVICE_STATE_BYTES`], or
    /// more when the rate limits and stuck checks name more fields than its allowance covers.
    pub fn device_state_bytes(&self) -> usize {
        let fields: usize = self
            .max_rate_per_s
            .keys()
            .chain(self.stuck_fields.iter())
            .map(|k| FIELD_ENTRY_BYTES + k.len())
            .sum();
        DEVICE_STATE_BYTES.max(DEVICE_STATE_BYTES - FIELDS_ALLOWANCE + fields)
    }
}

/// One violation.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct QualityEvent {
    pub device_id: String,
    /// The reading's timestamp (for staleness: the check time).
    pub ts_ms: i64,
    /// Stable rule name: `required`, `range`, `rate`, `stale`, `duplicate`, `out_of_order`,
    /// `clock_skew`, `non_finite`, `stuck`, `physics`.
    pub rule: String,
    pub field: Option<String>,
    pub reason: String,
    /// Another reading of an episode already reported (a clock running ahead reading after
    /// reading): the reading's verdict carries the rule, the event feed does not repeat it.
    #[serde(skip)]
    pub repeat: bool,
}

#[derive(Debug, Default)]
struct DeviceState {
    last_ts: Option<i64>,
    last_seen_at: i64,
    stale_reported: bool,
    /// The last reading was ahead of the receiving clock (a clock-skew episode is going on).
    skewed: bool,
    recent_seqs: VecDeque<u64>,
    last_values: HashMap<String, (i64, f64)>,
    /// Identical consecutive values per field (for `stuck`).
    repeats: HashMap<String, u32>,
    /// (bucket start, readings, readings with a violation), oldest first, bounded.
    buckets: VecDeque<(i64, u64, u64)>,
}

const MAX_BUCKETS: usize = 1440;
const SEQ_MEMORY: usize = 64;

/// Quality score of one device over one time range.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct QualityScore {
    pub device_id: String,
    pub from_ms: i64,
    pub to_ms: i64,
    pub readings: u64,
    pub flagged: u64,
    /// `1 - flagged / readings` (1 when there were no readings).
    pub score: f64,
}

/// Applies [`Rules`] to a stream of readings, keeping per-device state: at most `capacity`
/// devices' worth, the least recently used device's state evicted first (it starts afresh
/// when the device speaks again), so memory is bounded by configuration, not by the devices
/// clients name.
#[derive(Debug)]
pub struct Checker {
    rules: Rules,
    devices: lru::LruCache<String, DeviceState>,
}

impl Default for Checker {
    fn default() -> Self {
        Checker::new(Rules::default())
    }
}

/// Devices whose state a [`Checker::new`] keeps.
pub const DEFAULT_CAPACITY: usize = 100_000;

/// Bytes one device's quality state takes at most under the default [`Rules`] (its per-minute
/// buckets of one day, the recent sequence numbers and the last values of the fields with a
/// rate limit or a stuck check): for sizing [`Checker::with_capacity`] from a memory budget.
/// [`Rules::device_state_bytes`] is the same for other rules.
pub const DEVICE_STATE_BYTES: usize =
    MAX_BUCKETS * std::mem::size_of::<(i64, u64, u64)>() + SEQ_MEMORY * 8 + FIELDS_ALLOWANCE;

/// What [`DEVICE_STATE_BYTES`] allows for the remembered fields (the default rules need
/// about 900 bytes).
const FIELDS_ALLOWANCE: usize = 2048;

/// Bytes of one remembered field besides its name: the hash map entries of its last value and
/// its repeat count, with their control bytes and the name's allocation overhead.
const FIELD_ENTRY_BYTES: usize = 96;

fn num(fields: &[(String, FieldValue)], names: &[&str]) -> Option<(String, f64)> {
    names.iter().find_map(|n| {
        fields
            .iter()
            .find(|(k, _)| k == n)
            .and_then(|(k, v)| v.as_f64().map(|x| (k.clone(), x)))
    })
}

impl Checker {
    pub fn new(rules: Rules) -> Self {
        Checker::with_capacity(rules, DEFAULT_CAPACITY)
    }

    /// A checker keeping the state of at most `devices` devices (at least 1).
    pub fn with_capacity(rules: Rules, devices: usize) -> Self {
        Checker {
            rules,
            devices: lru::LruCache::new(
                std::num::NonZeroUsize::new(devices.max(1)).expect("at least 1"),
            ),
        }
    }

    /// Devices whose state is kept now.
    pub fn devices(&self) -> usize {
        self.devices.len()
    }

    pub fn rules(&self) -> &Rules {
        &self.rules
    }

    /// Check one reading received at `now_ms`; returns its violations.
    pub fn check(&mut self, r: &Reading, now_ms: i64) -> Vec<QualityEvent> {
        let mut ev = Vec::new();
        let mut push = |rule: &str, field: Option<&str>, reason: String| {
            ev.push(QualityEvent {
                device_id: r.device_id.clone(),
                ts_ms: r.ts_ms,
                rule: rule.to_string(),
                field: field.map(String::from),
                reason,
                repeat: false,
            })
        };
        let rules = &self.rules;
        let st = self
            .devices
            .get_or_insert_mut(r.device_id.clone(), DeviceState::default);
        st.last_seen_at = now_ms;
        st.stale_reported = false;

        if let Some(req) = rules.required.get(&r.device_type) {
            for f in req {
                if !r.fields.iter().any(|(k, _)| k == f) {
                    push(
                        "required",
                        Some(f),
                        format!("required field `{f}` is missing"),
                    );
                }
            }
        }
        let mut duplicate = false;
        if let Some(seq) = r.seq {
            if st.recent_seqs.contains(&seq) {
                duplicate = true;
                push(
                    "duplicate",
                    None,
                    format!("sequence number {seq} was already received"),
                );
            } else {
                if st.recent_seqs.len() == SEQ_MEMORY {
                    st.recent_seqs.pop_front();
                }
                st.recent_seqs.push_back(seq);
            }
        }
        if let Some(last) = st.last_ts {
            if r.ts_ms < last && !duplicate {
                push(
                    "out_of_order",
                    None,
                    format!(
                        "timestamp is {} ms older than the previous reading",
                        last - r.ts_ms
                    ),
                );
            } else if r.ts_ms == last && r.seq.is_none() {
                push(
                    "duplicate",
                    None,
                    "same timestamp as the previous reading".into(),
                );
            }
        }
        let skewed = r.ts_ms > now_ms + rules.max_future_ms;
        if skewed {
            push(
                "clock_skew",
                None,
                format!(
                    "timestamp is {:.1} s ahead of the receiving clock",
                    (r.ts_ms - now_ms) as f64 / 1000.0
                ),
            );
        }
        for (k, v) in &r.fields {
            let Some(x) = v.as_f64() else { continue };
            if !x.is_finite() {
                push("non_finite", Some(k), format!("`{k}` is {x}"));
                continue;
            }
            if let Some((lo, hi)) = rules.ranges.get(k) {
                if x < *lo || x > *hi {
                    push(
                        "range",
                        Some(k),
                        format!("`{k}` = {x} is outside [{lo}, {hi}]"),
                    );
                }
            }
            if rules.stuck_after > 0 && rules.stuck_fields.contains(k) && !duplicate {
                let same = st.last_values.get(k).is_some_and(|(_, x0)| *x0 == x);
                let n = st.repeats.entry(k.clone()).or_insert(0);
                *n = if same { *n + 1 } else { 0 };
                if *n + 1 == rules.stuck_after {
                    push(
                        "stuck",
                        Some(k),
                        format!(
                            "`{k}` has been exactly {x} for {} readings in a row (sensor stuck?)",
                            rules.stuck_after
                        ),
                    );
                }
            }
            let last = if duplicate {
                None
            } else {
                st.last_values.get(k)
            };
            if let (Some(max), Some((t0, x0))) = (rules.max_rate_per_s.get(k), last) {
                let dt = (r.ts_ms - t0) as f64 / 1000.0;
                if dt > 0.0 {
                    let rate = (x - x0).abs() / dt;
                    if rate > *max {
                        push(
                            "rate",
                            Some(k),
                            format!(
                                "`{k}` changed {:.3}/s (from {} to {} in {dt:.1} s), limit {max}/s",
                                rate,
                                tidy(*x0),
                                tidy(x)
                            ),
                        );
                    }
                }
            }
        }
        if rules.physics {
            let catalog = rules.units.get(r.device_type.as_str());
            let unit = |field: &str| -> String {
                let u = r
                    .units
                    .get(field)
                    .cloned()
                    .or_else(|| catalog.and_then(|c| c.get(field).cloned()));
                u.map(|u| format!(" {u}")).unwrap_or_default()
            };
            physics(&r.fields, &unit, &mut push);
        }
        // One clock-skew event per episode; the readings after the first still carry the rule.
        if skewed && st.skewed {
            for e in ev.iter_mut().filter(|e| e.rule == "clock_skew") {
                e.repeat = true;
            }
        }
        st.skewed = skewed;
        // learn (not from a reading whose clock runs ahead: it would make every reading after
        // the episode "out of order" until real time caught up)
        if !duplicate && !skewed && st.last_ts.is_none_or(|l| r.ts_ms >= l) {
            st.last_ts = Some(r.ts_ms);
            for (k, v) in &r.fields {
                // an out-of-range value is not a baseline for the next rate check
                let in_range = |x: &f64| {
                    rules
                        .ranges
                        .get(k)
                        .is_none_or(|(lo, hi)| lo <= x && x <= hi)
                };
                // Only fields a rule compares with their last value (a rate limit, the stuck
                // check) are remembered: those are named by the configuration, so a device
                // inventing field names cannot grow its state (it grew by every new name).
                if !rules.max_rate_per_s.contains_key(k) && !rules.stuck_fields.contains(k) {
                    continue;
                }
                if let Some(x) = v.as_f64().filter(|x| x.is_finite() && in_range(x)) {
                    st.last_values.insert(k.clone(), (r.ts_ms, x));
                }
            }
        }
        let b = now_ms.div_euclid(rules.bucket_ms) * rules.bucket_ms;
        match st.buckets.back_mut() {
            Some(last) if last.0 == b => {
                last.1 += 1;
                last.2 += (!ev.is_empty()) as u64;
            }
            _ => {
                if st.buckets.len() == MAX_BUCKETS {
                    st.buckets.pop_front();
                }
                st.buckets.push_back((b, 1, (!ev.is_empty()) as u64));
            }
        }
        ev
    }

    /// Devices silent for longer than `stale_after` (each reported once per silence).
    pub fn stale(&mut self, now_ms: i64) -> Vec<QualityEvent> {
        let after = self.rules.stale_after_ms;
        if after <= 0 {
            return Vec::new();
        }
        let mut out = Vec::new();
        for (id, st) in self.devices.iter_mut() {
            if !st.stale_reported && now_ms - st.last_seen_at > after {
                st.stale_reported = true;
                out.push(QualityEvent {
                    device_id: id.clone(),
                    ts_ms: now_ms,
                    rule: "stale".into(),
                    field: None,
                    reason: format!(
                        "no reading for {:.0} s (limit {:.0} s)",
                        (now_ms - st.last_seen_at) as f64 / 1000.0,
                        after as f64 / 1000.0
                    ),
                    repeat: false,
                });
            }
        }
        out.sort_by(|a, b| a.device_id.cmp(&b.device_id));
        out
    }

    /// Quality score per device over `[from_ms, to_ms)` (by receive time), sorted by device.
    pub fn score(&self, from_ms: i64, to_ms: i64, device: Option<&str>) -> Vec<QualityScore> {
        let mut v: Vec<QualityScore> = self
            .devices
            .iter()
            .filter(|(id, _)| device.is_none_or(|d| d == id.as_str()))
            .map(|(id, st)| {
                let (mut n, mut bad) = (0, 0);
                for (b, c, f) in &st.buckets {
                    if *b + self.rules.bucket_ms > from_ms && *b < to_ms {
                        n += c;
                        bad += f;
                    }
                }
                QualityScore {
                    device_id: id.clone(),
                    from_ms,
                    to_ms,
                    readings: n,
                    flagged: bad,
                    score: if n == 0 {
                        1.0
                    } else {
                        1.0 - bad as f64 / n as f64
                    },
                }
            })
            .collect();
        v.sort_by(|a, b| a.device_id.cmp(&b.device_id));
        v
    }
}

/// The lab's physics rules (PRODUCT.md section 2). Field names are matched from short alias
/// lists so that every emulator type and hand-written payloads are covered.
fn physics(
    fields: &[(String, FieldValue)],
    unit: &impl Fn(&str) -> String,
    push: &mut impl FnMut(&str, Option<&str>, String),
) {
    // PV: DC power cannot exceed voltage x current (10 % tolerance for sampling skew).
    if let (Some((pk, p)), Some((vk, v)), Some((ik, i))) = (
        num(fields, &["dc_power", "pv_power"]),
        num(fields, &["dc_voltage", "pv_voltage"]),
        num(fields, &["dc_current", "pv_current"]),
    ) {
        if p > 1.1 * v * i + 1e-9 {
            let (pu, vu, iu) = (unit(&pk), unit(&vk), unit(&ik));
            push(
                "physics",
                Some(&pk),
                format!(
                    "PV power {p}{pu} exceeds 1.1 x {v}{vu} x {i}{iu} = {:.1}",
                    1.1 * v * i
                ),
            );
        }
    }
    // Wind: no power outside the cut-in..cut-out speed range 3..25 m/s.
    if let (Some((sk, s)), Some((pk, p))) = (
        num(fields, &["wind_speed"]),
        num(
            fields,
            &["power", "active_power", "power_output", "electrical_power"],
        ),
    ) {
        if !(3.0..=25.0).contains(&s) && p.abs() > 1e-6 {
            push(
                "physics",
                Some(&sk),
                format!(
                    "wind turbine produces {p}{} at {s}{} (outside 3..25 m/s)",
                    unit(&pk),
                    unit(&sk)
                ),
            );
        }
    }
    // Battery: below 10 % state of charge it must not keep discharging (power < 0 = discharge).
    if let (Some((sk, soc)), Some((pk, p))) = (
        num(fields, &["soc", "state_of_charge"]),
        num(fields, &["battery_power", "power"]),
    ) {
        if soc < 10.0 && p < 0.0 {
            push(
                "physics",
                Some(&sk),
                format!(
                    "battery discharging ({p}{}) at SOC {soc}{} (< 10 %)",
                    unit(&pk),
                    unit(&sk)
                ),
            );
        }
    }
    // Boiler: water is heated, so not colder than ambient (1 K tolerance).
    if let (Some((wk, w)), Some((ak, a))) = (
        num(
            fields,
            &[
                "water_temperature",
                "boiler_temperature",
                "flow_temperature",
            ],
        ),
        num(fields, &["ambient_temperature"]),
    ) {
        if w < a - 1.0 {
            push(
                "physics",
                Some(&wk),
                format!(
                    "boiler water {w}{} is colder than ambient {a}{}",
                    unit(&wk),
                    unit(&ak)
                ),
            );
        }
    }
    // Engine: oil runs hotter than coolant (2 K tolerance).
    if let (Some((ok, o)), Some((ck, c))) = (
        num(fields, &["oil_temperature"]),
        num(fields, &["coolant_temperature"]),
    ) {
        if o < c - 2.0 {
            push(
                "physics",
                Some(&ok),
                format!(
                    "engine oil {o}{} is colder than coolant {c}{}",
                    unit(&ok),
                    unit(&ck)
                ),
            );
        }
    }
}

/// A value as a message shows it: rounded to 9 decimals, so float noise from arithmetic
/// (33.519999999999996) reads as the number it stands for (33.52).
fn tidy(x: f64) -> f64 {
    let r = (x * 1e9).round() / 1e9;
    if r.is_finite() {
        r
    } else {
        x
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reading(dev: &str, ty: &str, ts: i64, seq: Option<u64>, f: &[(&str, f64)]) -> Reading {
        Reading {
            device_id: dev.into(),
            device_type: ty.into(),
            ts_ms: ts,
            seq,
            fields: f
                .iter()
                .map(|(k, v)| (k.to_string(), FieldValue::F64(*v)))
                .collect(),
            units: Default::default(),
            tags: Default::default(),
            status: None,
        }
    }

    fn rules_of(ev: &[QualityEvent]) -> Vec<&str> {
        for e in ev {
            assert!(
                RULES.contains(&e.rule.as_str()),
                "{} missing from RULES",
                e.rule
            );
        }
        ev.iter().map(|e| e.rule.as_str()).collect()
    }

    #[test]
    fn a_device_inventing_field_names_does_not_grow_its_state() {
        // 100,000 readings, each with a new field name (and a temperature): only the fields
        // the rules compare with their last value are remembered.
        let mut c = Checker::default();
        for i in 0..100_000i64 {
            let name = format!("field_{i}_{}", "x".repeat(200));
            let ev = c.check(
                &reading(
                    "d1",
                    "T",
                    i * 1000,
                    None,
                    &[(&name, 1.0), ("temperature", 21.0)],
                ),
                i * 1000,
            );
            assert!(ev.is_empty() || i >= 29, "{ev:?}");
        }
        let st = c.devices.peek("d1").unwrap();
        assert_eq!(st.last_values.len(), 1, "only temperature");
        assert!(st.repeats.len() <= 1);
        // ...and the rate rule still sees the remembered one.
        let ev = c.check(
            &reading("d1", "T", 100_000_000, None, &[("temperature", 80.0)]),
            100_000_000,
        );
        assert!(rules_of(&ev).contains(&"rate"), "{ev:?}");
        // The state's size under the default rules is the constant the budget assumes; many
        // configured fields raise it.
        assert_eq!(Rules::default().device_state_bytes(), DEVICE_STATE_BYTES);
        let mut many = Rules::default();
        for i in 0..1000 {
            many.max_rate_per_s.insert(format!("f{i}"), 1.0);
        }
        assert!(many.device_state_bytes() > DEVICE_STATE_BYTES + 1000 * 96);
    }

    #[test]
    fn state_is_kept_for_at_most_capacity_devices_least_recently_used_first() {
        let mut c = Checker::with_capacity(Rules::default(), 2);
        let r = |d: &str, ts: i64| reading(d, "T", ts, None, &[("x", 1.0)]);
        c.check(&r("a", 1000), 1000);
        c.check(&r("b", 1000), 1000);
        c.check(&r("a", 2000), 2000);
        c.check(&r("c", 1000), 1000);
        assert_eq!(c.devices(), 2);
        let kept: Vec<String> = c
            .score(0, 10_000, None)
            .into_iter()
            .map(|s| s.device_id)
            .collect();
        assert_eq!(kept, ["a", "c"], "b was the least recently used");
        // a kept its state: an older reading is still out of order.
        assert!(rules_of(&c.check(&r("a", 1500), 3000)).contains(&"out_of_order"));
    }

    #[test]
    fn clean_readings_pass_and_score_one() {
        let mut c = Checker::new(Rules::default());
        for i in 0..10 {
            let r = reading(
                "t1",
                "TemperatureSensor",
                i * 1000,
                Some(i as u64),
                &[("temperature", 21.0), ("humidity", 40.0)],
            );
            assert!(c.check(&r, i * 1000).is_empty());
        }
        let s = c.score(0, 60_000, None);
        assert_eq!((s[0].readings, s[0].flagged, s[0].score), (10, 0, 1.0));
    }

    #[test]
    fn each_rule_fires_with_a_reason() {
        let mut c = Checker::new(Rules::default());
        let t = "TemperatureSensor";
        c.check(
            &reading("t1", t, 10_000, Some(1), &[("temperature", 21.0)]),
            10_000,
        );
        let e = c.check(
            &reading("t1", t, 11_000, Some(2), &[("humidity", 40.0)]),
            11_000,
        );
        assert_eq!(rules_of(&e), ["required"]);
        assert!(e[0].reason.contains("`temperature`"));
        let e = c.check(
            &reading("t1", t, 12_000, Some(3), &[("temperature", 120.0)]),
            12_000,
        );
        assert_eq!(rules_of(&e), ["range", "rate"], "{e:?}");
        let e = c.check(
            &reading("t1", t, 13_000, Some(3), &[("temperature", 21.0)]),
            13_000,
        );
        assert_eq!(rules_of(&e), ["duplicate"]);
        let e = c.check(
            &reading("t1", t, 9_000, Some(4), &[("temperature", 21.0)]),
            14_000,
        );
        assert_eq!(rules_of(&e), ["out_of_order"]);
        let e = c.check(
            &reading("t1", t, 60_000, Some(5), &[("temperature", 21.0)]),
            15_000,
        );
        assert_eq!(rules_of(&e), ["clock_skew"]);
        let e = c.check(
            &reading("t1", t, 61_000, Some(6), &[("temperature", f64::NAN)]),
            61_000,
        );
        assert_eq!(rules_of(&e), ["non_finite"]);
        for i in 0..30 {
            let ts = 62_000 + i * 100;
            let e = c.check(
                &reading("t1", t, ts, Some(10 + i as u64), &[("temperature", 22.0)]),
                ts,
            );
            assert_eq!(
                rules_of(&e),
                if i == 29 { vec!["stuck"] } else { vec![] },
                "{i}"
            );
        }
        assert!(c.stale(100_000).is_empty());
        let e = c.stale(130_000);
        assert_eq!(rules_of(&e), ["stale"]);
        assert!(c.stale(140_000).is_empty(), "reported once per silence");
        let s = &c.score(0, 200_000, Some("t1"))[0];
        assert_eq!((s.readings, s.flagged), (37, 7));
    }

    /// A clock that runs an hour ahead for three readings: each carries `clock_skew`, only the
    /// first is an event, and the readings after the episode are in order again at once.
    #[test]
    fn a_clock_skew_episode_is_one_event_and_the_series_recovers_when_it_ends() {
        let mut c = Checker::new(Rules::default());
        let t = "TemperatureSensor";
        let mut events = Vec::new();
        for i in 0..20i64 {
            let now = 1_000_000 + i * 1000;
            let ts = if (5..8).contains(&i) {
                now + 3_600_000
            } else {
                now
            };
            let e = c.check(
                &reading(
                    "t1",
                    t,
                    ts,
                    Some(i as u64),
                    &[("temperature", 21.0 + (i % 3) as f64 * 0.1)],
                ),
                now,
            );
            let rules = rules_of(&e);
            if (5..8).contains(&i) {
                assert_eq!(rules, ["clock_skew"], "reading {i}");
            } else {
                assert!(rules.is_empty(), "reading {i}: {e:?}");
            }
            events.extend(e.into_iter().filter(|e| !e.repeat));
        }
        assert_eq!(events.len(), 1, "one event for the episode: {events:?}");
    }

    #[test]
    fn physics_messages_carry_the_catalog_units() {
        let mut rules = Rules::default();
        rules.units.insert(
            "WindTurbine".into(),
            [("power", "kW"), ("wind_speed", "m/s")]
                .into_iter()
                .map(|(f, u)| (f.to_string(), u.to_string()))
                .collect(),
        );
        let mut c = Checker::new(rules);
        let ev = c.check(
            &reading(
                "wt",
                "WindTurbine",
                1_000,
                None,
                &[("wind_speed", 2.0), ("power", 1002.8)],
            ),
            1_000,
        );
        let msg = &ev.iter().find(|e| e.rule == "physics").unwrap().reason;
        assert_eq!(
            msg,
            "wind turbine produces 1002.8 kW at 2 m/s (outside 3..25 m/s)"
        );
        // A type the catalog does not know: no unit is made up.
        let ev = c.check(
            &reading(
                "x",
                "Other",
                1_000,
                None,
                &[("wind_speed", 2.0), ("power", 5.0)],
            ),
            1_000,
        );
        let msg = &ev.iter().find(|e| e.rule == "physics").unwrap().reason;
        assert_eq!(msg, "wind turbine produces 5 at 2 (outside 3..25 m/s)");
    }

    #[test]
    fn physics_rules_of_the_lab() {
        let mut c = Checker::new(Rules::default());
        #[allow(clippy::type_complexity)]
        let cases: &[(&str, &[(&str, f64)], bool)] = &[
            (
                "PvInverter",
                &[
                    ("dc_voltage", 400.0),
                    ("dc_current", 10.0),
                    ("dc_power", 4000.0),
                    ("ac_power", 3800.0),
                ],
                false,
            ),
            (
                "PvInverter",
                &[
                    ("dc_voltage", 400.0),
                    ("dc_current", 10.0),
                    ("dc_power", 4500.0),
                    ("ac_power", 3800.0),
                ],
                true,
            ),
            ("Wind", &[("wind_speed", 2.0), ("power", 500.0)], true),
            ("Wind", &[("wind_speed", 12.0), ("power", 500.0)], false),
            ("Wind", &[("wind_speed", 30.0), ("power", 0.0)], false),
            ("Battery", &[("soc", 8.0), ("battery_power", -200.0)], true),
            ("Battery", &[("soc", 8.0), ("battery_power", 200.0)], false),
            (
                "Boiler",
                &[("water_temperature", 15.0), ("ambient_temperature", 20.0)],
                true,
            ),
            (
                "Boiler",
                &[("water_temperature", 60.0), ("ambient_temperature", 20.0)],
                false,
            ),
            (
                "Engine",
                &[("oil_temperature", 60.0), ("coolant_temperature", 85.0)],
                true,
            ),
            (
                "Engine",
                &[("oil_temperature", 95.0), ("coolant_temperature", 85.0)],
                false,
            ),
        ];
        for (i, (ty, f, bad)) in cases.iter().enumerate() {
            let e = c.check(&reading(&format!("d{i}"), ty, 1000, None, f), 1000);
            assert_eq!(
                e.iter().any(|e| e.rule == "physics"),
                *bad,
                "{ty} {f:?}: {e:?}"
            );
        }
    }
}
