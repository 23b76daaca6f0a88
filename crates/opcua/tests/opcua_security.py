"""Basic256Sha256 for the test clients (opcua_client.py, opcua_auth_client.py): a self-signed
client application certificate, and SignAndEncrypt with it.
"""

from pathlib import Path

from asyncua import ua

APP_URI = "urn:fieldlab:test-client"


async def secure(client, cert_dir):
    """Make `client` sign and encrypt (Basic256Sha256) with an application certificate it
    makes in `cert_dir`."""
    from asyncua.crypto.cert_gen import setup_self_signed_certificate
    from asyncua.crypto.security_policies import SecurityPolicyBasic256Sha256
    from cryptography.x509.oid import ExtendedKeyUsageOID

    d = Path(cert_dir)
    key, cert = d / "client-key.pem", d / "client-cert.der"
    await setup_self_signed_certificate(
        key, cert, APP_URI, "localhost",
        [ExtendedKeyUsageOID.CLIENT_AUTH], {"commonName": "fieldlab test client"},
    )
    client.application_uri = APP_URI
    await client.set_security(
        SecurityPolicyBasic256Sha256, str(cert), str(key),
        mode=ua.MessageSecurityMode.SignAndEncrypt,
    )
