"""Sign-in attempts of an independent OPC UA client (python-asyncua) against fieldlab's OPC UA
server with fieldlab auth on, all in one process (to keep the tests fast).

Usage: opcua_auth_client.py URL CERT_DIR PLAN_JSON

PLAN_JSON is a list of attempts, each an object:
  label       name of the attempt in the output
  security    "basic256sha256" (default; a client application certificate is made in CERT_DIR)
              or "none"
  user, password          UserName token (omit both for anonymous)
  anonymous_policy        policy id sent with an anonymous token (default: the offered one)
  user_cert               CN of a self-signed X.509 user certificate to sign in with (made in
                          CERT_DIR/users); with "trust_into", a copy goes into that directory
                          first (what an admin does)
  passwords   instead of one sign-in: a list of passwords for `user` tried one after another
              on ONE connection (ActivateSession again after each refusal); the result is the
              list of outcomes ("ok" or the status code name)
  connections instead of one sign-in: open this many TCP connections at once and report how
              many the server answered (a Hello/Acknowledge) and how many it closed
  device      device to act on (default oven_1)
  actions     any of "browse", "read", "stop", "start", "revoke", in order; "revoke" marks
              `user` revoked in the fieldlab users file `users_file` (what `fieldlab users
              revoke` does). An action done again is reported as "<action>2", "<action>3", ...

Prints one JSON object: label -> what happened ("connect": "ok" or the status code name, then
one entry per action: a value, or the status code name it failed with). Also "endpoints": the
endpoints the server offers, with their user token types.
"""

import asyncio
import datetime
import json
import shutil
import sys
from pathlib import Path

from asyncua import Client, ua
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID
from opcua_security import secure

NS_URI = "urn:fieldlab:emulator"


def err(e):
    return type(e).__name__ if isinstance(e, ua.UaStatusCodeError) else f"{type(e).__name__}: {e}"


def user_cert(cert_dir, cn):
    """A self-signed user certificate for CN, valid from yesterday to tomorrow."""
    d = Path(cert_dir) / "users"
    d.mkdir(parents=True, exist_ok=True)
    cert_path, key_path = d / f"{cn}.der", d / f"{cn}-key.pem"
    if cert_path.exists():
        return cert_path, key_path
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True, content_commitment=True, key_encipherment=True,
                data_encipherment=True, key_agreement=False, key_cert_sign=False,
                crl_sign=False, encipher_only=False, decipher_only=False,
            ),
            critical=True,
        )
        .sign(key, hashes.SHA256())
    )
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.DER))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.TraditionalOpenSSL,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


async def child(node, ns, name):
    return await node.get_child([f"{ns}:{name}"])


async def guesses(url, cert_dir, a):
    client = Client(url=url, timeout=10)
    await secure(client, cert_dir)
    out = []
    await client.connect_socket()
    try:
        await client.send_hello()
        await client.open_secure_channel()
        await client.create_session()
        for p in a["passwords"]:
            try:
                await client.activate_session(username=a["user"], password=p)
                out.append("ok")
            except Exception as e:  # noqa: BLE001 - the status is the result
                out.append(err(e))
    finally:
        client.disconnect_socket()
    return {"connect": out}


async def connections(url, n):
    from urllib.parse import urlparse

    u = urlparse(url)
    # A minimal OPC UA Hello (Part 6, 7.1.2.3): the server answers ACK if it took the connection.
    endpoint = url.encode()
    body = (
        (0).to_bytes(4, "little") + (65535).to_bytes(4, "little") + (65535).to_bytes(4, "little")
        + (0).to_bytes(4, "little") + (0).to_bytes(4, "little")
        + len(endpoint).to_bytes(4, "little") + endpoint
    )
    hello = b"HELF" + (8 + len(body)).to_bytes(4, "little") + body

    async def one():
        try:
            r, w = await asyncio.open_connection(u.hostname, u.port)
        except OSError:
            return "refused", None
        try:
            w.write(hello)
            await w.drain()
            head = await asyncio.wait_for(r.read(3), 10)
            return ("answered" if head == b"ACK" else "closed"), w
        except (OSError, asyncio.TimeoutError):
            return "closed", w

    res = await asyncio.gather(*[one() for _ in range(n)])
    out = {"answered": 0, "closed": 0, "refused": 0}
    for what, w in res:
        out[what] += 1
        if w is not None:
            w.close()
    return {"connect": out}


async def attempt(url, cert_dir, a):
    if "passwords" in a:
        return await guesses(url, cert_dir, a)
    if "connections" in a:
        return await connections(url, a["connections"])
    out = {}
    client = Client(url=url, timeout=10)
    if a.get("security", "basic256sha256") == "basic256sha256":
        await secure(client, cert_dir)
    if "anonymous_policy" in a:
        # Send an anonymous token with this policy id even though the server offers none (a
        # client that ignores the endpoint description): the server's own check must refuse it.
        plain = client._add_anonymous_auth

        def forced(params):
            plain(params)
            params.UserIdentityToken.PolicyId = a["anonymous_policy"]

        client._add_anonymous_auth = forced
    if "user" in a:
        client.set_user(a["user"])
        client.set_password(a.get("password", ""))
    if "user_cert" in a:
        cert, key = user_cert(cert_dir, a["user_cert"])
        if "trust_into" in a:
            shutil.copy(cert, Path(a["trust_into"]) / cert.name)
        await client.load_client_certificate(str(cert))
        await client.load_private_key(key)
    try:
        await client.connect()
    except Exception as e:  # noqa: BLE001 - the status is the result
        out["connect"] = err(e)
        try:
            await client.disconnect()
        except Exception:  # noqa: BLE001
            pass
        return out
    out["connect"] = "ok"
    try:
        ns = await client.get_namespace_index(NS_URI)
        root = await child(client.nodes.objects, ns, "DeviceEmulator")
        dev = await child(root, ns, a.get("device", "oven_1"))
        for act in a.get("actions", []):
            key, n = act, 1
            while key in out:
                n += 1
                key = f"{act}{n}"
            try:
                if act == "revoke":
                    f = Path(a["users_file"])
                    users = json.loads(f.read_text())
                    for u in users["users"]:
                        if u["name"] == a["user"]:
                            u["revoked"] = True
                    f.write_text(json.dumps(users, indent=2))
                    out[key] = True
                elif act == "browse":
                    out[key] = sorted([(await c.read_browse_name()).Name for c in await root.get_children()])
                elif act == "read":
                    out[key] = await (await child(dev, ns, "State")).read_value()
                elif act in ("stop", "start"):
                    m = await child(dev, ns, act.capitalize())
                    out[key + "_executable"] = (
                        await m.read_attribute(ua.AttributeIds.UserExecutable)
                    ).Value.Value
                    out[key] = await dev.call_method(m.nodeid)
                    # The mirror re-reads the fleet at once after a call.
                    want = "stopped" if act == "stop" else "running"
                    state = None
                    for _ in range(30):
                        state = await (await child(dev, ns, "State")).read_value()
                        if state == want:
                            break
                        await asyncio.sleep(0.1)
                    out[key + "_state"] = state
            except Exception as e:  # noqa: BLE001
                out[key] = err(e)
    finally:
        await client.disconnect()
    return out


async def endpoints(url):
    client = Client(url=url, timeout=10)
    eps = await client.connect_and_get_server_endpoints()
    return sorted(
        [
            ua.MessageSecurityMode(e.SecurityMode).name,
            e.SecurityPolicyUri.rsplit("#", 1)[-1],
            sorted(ua.UserTokenType(t.TokenType).name for t in e.UserIdentityTokens),
        ]
        for e in eps
    )


from urllib.parse import urlparse, urlunparse  # noqa: E402


async def main(url, cert_dir, plan):
    out = {"endpoints": await endpoints(url)}
    for a in plan:
        # "host": connect to another address of the same server (another client address).
        u = url if "host" not in a else urlunparse(urlparse(url)._replace(netloc=f"{a['host']}:{urlparse(url).port}"))
        out[a["label"]] = await asyncio.wait_for(attempt(u, cert_dir, a), 60)
    print(json.dumps(out))


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2], json.loads(sys.argv[3])))
