//! The address space as a mirror of the fleet: device objects added and removed as the fleet
//! changes, live values from the emulator's broadcast, methods that call its control API.

use fieldlab_emulator::runner::{ControlError, DeviceView, LiveMessage};
use fieldlab_emulator::Emulator;
use opcua::server::address_space::{AccessLevel, MethodBuilder, ObjectBuilder, VariableBuilder};
use opcua::server::node_manager::memory::SimpleNodeManager;
use opcua::server::SubscriptionCache;
use opcua::types::{
    DataTypeId, DataValue, DateTime, NodeId, ObjectId, ObjectTypeId, QualifiedName, StatusCode,
    VariableTypeId, Variant,
};
use parking_lot::Mutex;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{broadcast, Notify};
use tokio_util::sync::CancellationToken;

/// What the address space holds for one device.
struct DeviceNodes {
    device_type: String,
    /// Field name -> (variable node, is boolean).
    fields: HashMap<String, (NodeId, bool)>,
    /// Every node of the device, for removal.
    all: Vec<NodeId>,
}

pub(crate) struct Mirror {
    nm: Arc<SimpleNodeManager>,
    subs: Arc<SubscriptionCache>,
    ns: u16,
    em: Emulator,
    max_devices: usize,
    root: NodeId,
    devices: Mutex<HashMap<String, DeviceNodes>>,
    /// Wakes the sync task early (after a method call changed a device).
    changed: Arc<Notify>,
}

/// The status variables every device object has, besides its fields.
const STATUS: [(&str, &str); 4] = [
    ("State", "running, stopped or disconnected"),
    ("Seq", "sequence number of the last message"),
    (
        "MessagesPublished",
        "messages published since the device was created",
    ),
    ("Scenario", "running scenario and phase, empty when none"),
];

fn status(e: &ControlError) -> StatusCode {
    match e {
        ControlError::NotFound(_) => StatusCode::BadNodeIdUnknown,
        ControlError::Invalid { .. } => StatusCode::BadInvalidArgument,
        ControlError::Conflict(_) => StatusCode::BadInvalidState,
    }
}

fn state_word(v: &DeviceView) -> String {
    serde_json::to_value(v.state)
        .ok()
        .and_then(|s| s.as_str().map(str::to_string))
        .unwrap_or_else(|| format!("{:?}", v.state).to_lowercase())
}

fn scenario_text(v: &DeviceView) -> String {
    match &v.scenario {
        Some(s) => match &s.phase {
            Some(p) => format!("{}: {p}", s.name),
            None => s.name.clone(),
        },
        None => String::new(),
    }
}

/// The device id of a payload the emulator encoded (it writes `{"device_id":"<id>",` first),
/// without parsing the rest; `None` for anything else (then the full parse decides).
fn leading_device_id(payload: &[u8]) -> Option<&str> {
    let rest = payload.strip_prefix(br#"{"device_id":""#)?;
    let end = rest.iter().position(|&b| b == b'"' || b == b'\\')?;
    if rest[end] != b'"' {
        return None;
    }
    std::str::from_utf8(&rest[..end]).ok()
}

impl Mirror {
    pub(crate) fn new(
        nm: Arc<SimpleNodeManager>,
        subs: Arc<SubscriptionCache>,
        ns: u16,
        em: Emulator,
        max_devices: usize,
    ) -> Mirror {
        let root = NodeId::new(ns, "DeviceEmulator");
        {
            let mut space = nm.address_space().write();
            ObjectBuilder::new(
                &root,
                QualifiedName::new(ns, "DeviceEmulator"),
                "DeviceEmulator",
            )
            .description("The emulated devices of this fieldlab")
            .is_folder()
            .organized_by(ObjectId::ObjectsFolder)
            .insert(&mut *space);
        }
        Mirror {
            nm,
            subs,
            ns,
            em,
            max_devices,
            root,
            devices: Mutex::new(HashMap::new()),
            changed: Arc::new(Notify::new()),
        }
    }

    fn id(&self, parts: &[&str]) -> NodeId {
        NodeId::new(self.ns, format!("DeviceEmulator/{}", parts.join("/")))
    }

    /// Add the object, variables and methods of one device.
    fn add_device(&self, v: &DeviceView) -> DeviceNodes {
        let ns = self.ns;
        let name = v.device_id.as_str();
        let obj = self.id(&[name]);
        let mut nodes = DeviceNodes {
            device_type: v.device_type.clone(),
            fields: HashMap::new(),
            all: vec![obj.clone()],
        };
        let info = fieldlab_emulator::model::type_info(&v.device_type);
        let mut space = self.nm.address_space().write();
        ObjectBuilder::new(&obj, QualifiedName::new(ns, name), name)
            .description(format!(
                "{} ({})",
                v.device_type,
                info.map_or("", |i| i.description)
            ))
            .has_type_definition(ObjectTypeId::BaseObjectType)
            .organized_by(self.root.clone())
            .insert(&mut *space);
        for f in info.map(|i| i.fields).unwrap_or_default() {
            let id = self.id(&[name, f.name]);
            let boolean = f.unit == "bool";
            let description = if boolean {
                f.description.to_string()
            } else {
                format!("[{}] {}", f.unit, f.description)
            };
            VariableBuilder::new(&id, QualifiedName::new(ns, f.name), f.name)
                .description(description)
                .data_type(if boolean {
                    DataTypeId::Boolean
                } else {
                    DataTypeId::Double
                })
                .access_level(AccessLevel::CURRENT_READ)
                .user_access_level(AccessLevel::CURRENT_READ)
                .has_type_definition(VariableTypeId::BaseDataVariableType)
                .component_of(obj.clone())
                .insert(&mut *space);
            nodes.all.push(id.clone());
            nodes.fields.insert(f.name.to_string(), (id, boolean));
        }
        for (s, description) in STATUS {
            let id = self.id(&[name, s]);
            let (ty, value): (DataTypeId, Variant) = match s {
                "Seq" | "MessagesPublished" => (DataTypeId::UInt64, Variant::UInt64(0)),
                _ => (DataTypeId::String, Variant::from("")),
            };
            VariableBuilder::new(&id, QualifiedName::new(ns, s), s)
                .description(description)
                .data_type(ty)
                .value(value)
                .access_level(AccessLevel::CURRENT_READ)
                .user_access_level(AccessLevel::CURRENT_READ)
                .has_type_definition(VariableTypeId::BaseDataVariableType)
                .component_of(obj.clone())
                .insert(&mut *space);
            nodes.all.push(id);
        }
        let changed = |b: bool| Ok(vec![Variant::Boolean(b)]);
        let methods: [(&str, &str, bool); 4] = [
            (
                "Start",
                "Start publishing (false: it was running already)",
                false,
            ),
            (
                "Stop",
                "Stop publishing (false: it was stopped already)",
                false,
            ),
            (
                "RunScenario",
                "Run one of the device's scenarios by name; Loop repeats it",
                true,
            ),
            (
                "StopScenario",
                "End the running scenario (false: none was running)",
                false,
            ),
        ];
        for (m, description, takes_name) in methods {
            let id = self.id(&[name, m]);
            let out = self.id(&[name, m, "OutputArguments"]);
            let mut mb = MethodBuilder::new(&id, QualifiedName::new(ns, m), m)
                .description(description)
                .component_of(obj.clone())
                .executable(true)
                .user_executable(true)
                .output_args(
                    &mut *space,
                    &out,
                    &[("Changed", DataTypeId::Boolean).into()],
                );
            nodes.all.push(out);
            if takes_name {
                let inp = self.id(&[name, m, "InputArguments"]);
                mb = mb.input_args(
                    &mut *space,
                    &inp,
                    &[
                        ("Name", DataTypeId::String).into(),
                        ("Loop", DataTypeId::Boolean).into(),
                    ],
                );
                nodes.all.push(inp);
            }
            mb.insert(&mut *space);
            nodes.all.push(id.clone());
            let em = self.em.clone();
            let dev = name.to_string();
            let wake = self.changed.clone();
            let cb = move |args: &[Variant]| -> Result<Vec<Variant>, StatusCode> {
                let r = match m {
                    "Start" => em.start_device(&dev).map_err(|e| status(&e)),
                    "Stop" => em.stop_device(&dev).map_err(|e| status(&e)),
                    "StopScenario" => em.stop_scenario(&dev).map_err(|e| status(&e)),
                    _ => {
                        let scenario = match args.first() {
                            Some(Variant::String(s)) if !s.is_null() => s.as_ref().to_string(),
                            _ => return Err(StatusCode::BadInvalidArgument),
                        };
                        let looping = match args.get(1) {
                            None | Some(Variant::Empty) => false,
                            Some(Variant::Boolean(b)) => *b,
                            Some(_) => return Err(StatusCode::BadInvalidArgument),
                        };
                        em.start_scenario(&dev, Some(&scenario), None, looping)
                            .map(|_| true)
                            .map_err(|e| {
                                tracing::info!(device = %dev, error = %e, "OPC UA RunScenario refused");
                                status(&e)
                            })
                    }
                };
                wake.notify_one();
                r.and_then(changed)
            };
            self.nm.inner().add_method_callback(id, cb);
        }
        nodes
    }

    /// Bring the device objects in line with the fleet and refresh the status variables.
    pub(crate) fn sync(&self) {
        let views = self.em.list(self.max_devices);
        let mut devices = self.devices.lock();
        // Removed devices (or re-created with another type) leave the address space.
        let gone: Vec<String> = devices
            .iter()
            .filter(|(k, n)| {
                !views
                    .iter()
                    .any(|v| &v.device_id == *k && v.device_type == n.device_type)
            })
            .map(|(k, _)| k.clone())
            .collect();
        if !gone.is_empty() {
            let mut space = self.nm.address_space().write();
            for k in gone {
                if let Some(n) = devices.remove(&k) {
                    for id in n.all.iter().rev() {
                        space.delete(id, true);
                    }
                }
            }
        }
        for v in &views {
            if !devices.contains_key(&v.device_id) {
                let n = self.add_device(v);
                devices.insert(v.device_id.clone(), n);
            }
        }
        drop(devices);
        let now = DateTime::now();
        let mut updates: Vec<(NodeId, DataValue)> = Vec::with_capacity(views.len() * 4);
        for v in &views {
            let n = v.device_id.as_str();
            updates.push((
                self.id(&[n, "State"]),
                DataValue::new_at(state_word(v), now),
            ));
            updates.push((self.id(&[n, "Seq"]), DataValue::new_at(v.seq, now)));
            updates.push((
                self.id(&[n, "MessagesPublished"]),
                DataValue::new_at(v.messages_published, now),
            ));
            updates.push((
                self.id(&[n, "Scenario"]),
                DataValue::new_at(scenario_text(v), now),
            ));
        }
        self.set(updates);
    }

    fn set(&self, updates: Vec<(NodeId, DataValue)>) {
        if updates.is_empty() {
            return;
        }
        if let Err(e) = self.nm.set_values(
            &self.subs,
            updates.iter().map(|(id, dv)| (id, None, dv.clone())),
        ) {
            tracing::debug!(status = %e, "OPC UA value update skipped");
        }
    }

    /// Apply one telemetry message to its device's variables.
    fn apply(&self, m: &LiveMessage) {
        if let Some(id) = leading_device_id(&m.payload) {
            if !self.devices.lock().contains_key(id) {
                return; // not shown (beyond max_devices): skip the JSON parse
            }
        }
        let Ok(v) = serde_json::from_slice::<serde_json::Value>(&m.payload) else {
            return;
        };
        let Some(id) = v["device_id"].as_str() else {
            return;
        };
        let now_ms = fieldlab_core::time::now_ms();
        let ts = v["ts"]
            .as_str()
            .and_then(|t| fieldlab_core::time::parse_instant_ms(t, now_ms).ok())
            .and_then(chrono::DateTime::from_timestamp_millis)
            .map(DateTime::from)
            .unwrap_or_else(DateTime::now);
        let Some(data) = v["data"].as_object() else {
            return;
        };
        let mut updates = Vec::with_capacity(data.len() + 1);
        {
            let devices = self.devices.lock();
            let Some(nodes) = devices.get(id) else {
                return;
            };
            for (k, val) in data {
                let Some((node, boolean)) = nodes.fields.get(k) else {
                    continue; // a field this type does not declare (schema_break fault)
                };
                let dv = match (val, boolean) {
                    (serde_json::Value::Bool(b), true) => DataValue::new_at(*b, ts),
                    (serde_json::Value::Number(n), false) => {
                        DataValue::new_at(n.as_f64().unwrap_or(f64::NAN), ts)
                    }
                    // null (or NaN, which JSON cannot carry): the device sent no usable value.
                    (serde_json::Value::Null, _) => DataValue {
                        value: None,
                        status: Some(StatusCode::BadNoData),
                        source_timestamp: Some(ts),
                        server_timestamp: Some(DateTime::now()),
                        ..Default::default()
                    },
                    _ => continue,
                };
                updates.push((node.clone(), dv));
            }
        }
        if let Some(seq) = v["seq"].as_u64() {
            updates.push((self.id(&[id, "Seq"]), DataValue::new_at(seq, ts)));
        }
        self.set(updates);
    }

    /// Re-read the fleet every `every`, or at once after a method call.
    pub(crate) async fn run_sync(self: Arc<Self>, every: Duration, cancel: CancellationToken) {
        loop {
            tokio::select! {
                _ = cancel.cancelled() => break,
                _ = tokio::time::sleep(every) => {}
                _ = self.changed.notified() => {}
            }
            let m = self.clone();
            // list() locks the shards; keep it off the async workers.
            let _ = tokio::task::spawn_blocking(move || m.sync()).await;
        }
    }

    /// Follow the emulator's live telemetry into the variables.
    pub(crate) async fn run_live(self: Arc<Self>, cancel: CancellationToken) {
        let mut rx = self.em.subscribe();
        loop {
            tokio::select! {
                _ = cancel.cancelled() => break,
                m = rx.recv() => match m {
                    Ok(m) => self.apply(&m),
                    // Behind: older values are superseded anyway; carry on with the newest.
                    Err(broadcast::error::RecvError::Lagged(_)) => {}
                    Err(broadcast::error::RecvError::Closed) => break,
                },
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::leading_device_id;

    #[test]
    fn device_id_from_the_payload_prefix() {
        assert_eq!(
            leading_device_id(br#"{"device_id":"oven_1","seq":1}"#),
            Some("oven_1")
        );
        assert_eq!(leading_device_id(br#"{"device_id":"a\"b","seq":1}"#), None);
        assert_eq!(leading_device_id(br#"{"seq":1,"device_id":"x"}"#), None);
        assert_eq!(leading_device_id(b"garbage"), None);
    }
}
