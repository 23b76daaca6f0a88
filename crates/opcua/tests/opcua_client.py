"""An independent OPC UA client (python-asyncua) against fieldlab's OPC UA server.

Usage: opcua_client.py URL DEVICE FIELD SECURITY [CERT_DIR [SCENARIO]]
  SECURITY: none | basic256sha256 (then a client certificate is generated in CERT_DIR)

Browses Objects/DeviceEmulator, reads DEVICE/FIELD until the value changes, calls Stop, checks
State, tries RunScenario with an unknown name, and prints one JSON object with what it saw.
Exits non-zero (with a message) when the server does not behave.
"""

import asyncio
import json
import sys

from asyncua import Client, ua
from opcua_security import secure

NS_URI = "urn:fieldlab:emulator"


async def child_by_name(node, ns, name):
    for c in await node.get_children():
        bn = await c.read_browse_name()
        if bn.Name == name and bn.NamespaceIndex == ns:
            return c
    raise SystemExit(f"no child {ns}:{name} under {node}")


async def run(url, device, field, security, cert_dir, scenario):
    client = Client(url=url, timeout=10)
    if security == "basic256sha256":
        await secure(client, cert_dir)
    out = {"security": security}
    async with client:
        ns = await client.get_namespace_index(NS_URI)
        root = await child_by_name(client.nodes.objects, ns, "DeviceEmulator")
        devices = [(await c.read_browse_name()).Name for c in await root.get_children()]
        out["devices"] = sorted(devices)
        dev = await child_by_name(root, ns, device)
        children = {(await c.read_browse_name()).Name: c for c in await dev.get_children()}
        out["children"] = sorted(children)
        var = children[field]
        first = await var.read_value()
        out["first"] = first
        second = first
        for _ in range(100):  # up to 10 s
            await asyncio.sleep(0.1)
            second = await var.read_value()
            if second != first:
                break
        out["second"] = second
        if second == first:
            raise SystemExit(f"{device}/{field} did not change within 10 s: {first}")
        out["state_before"] = await children["State"].read_value()

        out["stop"] = await dev.call_method(children["Stop"].nodeid)
        state = None
        for _ in range(50):
            state = await children["State"].read_value()
            if state == "stopped":
                break
            await asyncio.sleep(0.1)
        out["state_after"] = state
        # Stopped means silent: the value stays where it was.
        a = await var.read_value()
        await asyncio.sleep(1.0)
        out["still"] = [a, await var.read_value()]

        try:
            await dev.call_method(children["RunScenario"].nodeid, ua.Variant("no_such_scenario", ua.VariantType.String), False)
            out["bad_scenario"] = "accepted"
        except ua.UaStatusCodeError as e:
            out["bad_scenario"] = type(e).__name__
        out["run_scenario"] = await dev.call_method(
            children["RunScenario"].nodeid, ua.Variant(scenario, ua.VariantType.String), True)
        for _ in range(50):
            out["scenario"] = await children["Scenario"].read_value()
            # Devices with configured scenarios start on their `configured` timeline; the
            # mirror shows the new run once it has refreshed.
            if out["scenario"].startswith(scenario + ":"):
                break
            await asyncio.sleep(0.1)
    print(json.dumps(out))


if __name__ == "__main__":
    url, device, field, security = sys.argv[1:5]
    cert_dir = sys.argv[5] if len(sys.argv) > 5 else "."
    scenario = sys.argv[6] if len(sys.argv) > 6 else "hot"
    asyncio.run(run(url, device, field, security, cert_dir, scenario))
