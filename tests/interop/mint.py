"""Mints JWTs with independent, widely used libraries (PyJWT, jwcrypto), for Tether's
interoperability tests: Tether never made these tokens or keys.

Reads one JSON object on stdin:
  {"keys": {NAME: {"type": "rsa2048"|"rsa1024"|"rsa3072"|"p256"|"p384"|"ed25519"|"oct",
                   "x5c": bool}},
   "tokens": [{"lib": "pyjwt"|"jwcrypto", "key": NAME, "alg": ALG, "kid": KID-or-null,
               "header": {...extra members...}, "claims": {...}}]}
and writes one JSON object on stdout:
  {"keys": {NAME: PUBLIC-JWK (with kid NAME, and x5c when asked)},
   "private": {NAME: PRIVATE-PEM (asymmetric keys only)},
   "tokens": [COMPACT-JWS, ...]}
A token with "malleate": true has its ECDSA signature (r, s) replaced by (r, n - s), the
other signature of the same message that ECDSA verification accepts.
Keys are generated afresh on every run.
"""

import base64
import datetime
import json
import sys

import jwt  # PyJWT
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.x509.oid import NameOID
from jwcrypto import jwk, jws
from jwcrypto.common import json_encode


def generate(kind):
    if kind.startswith("rsa"):
        return rsa.generate_private_key(public_exponent=65537, key_size=int(kind[3:]))
    if kind == "p256":
        return ec.generate_private_key(ec.SECP256R1())
    if kind == "p384":
        return ec.generate_private_key(ec.SECP384R1())
    if kind == "ed25519":
        return ed25519.Ed25519PrivateKey.generate()
    raise SystemExit(f"unknown key type {kind}")


def self_signed(key, name):
    """A self-signed certificate of the key (as IdPs publish in x5c)."""
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.datetime.now(datetime.timezone.utc)
    algorithm = None if isinstance(key, ed25519.Ed25519PrivateKey) else hashes.SHA256()
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now)
        .not_valid_after(now + datetime.timedelta(days=1))
        .sign(key, algorithm)
    )
    return base64.b64encode(cert.public_bytes(serialization.Encoding.DER)).decode()


# The orders of P-256 and P-384.
ORDER = {
    "ES256": 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551,
    "ES384": 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFC7634D81F4372DDF581A0DB248B0A77AECEC196ACCC52973,
}


def malleate(token, alg):
    """The same token under the other valid ECDSA signature (r, n - s)."""
    head, sig = token.rsplit(".", 1)
    raw = base64.urlsafe_b64decode(sig + "=" * (-len(sig) % 4))
    half = len(raw) // 2
    r, s = raw[:half], int.from_bytes(raw[half:], "big")
    other = r + (ORDER[alg] - s).to_bytes(half, "big")
    return head + "." + base64.urlsafe_b64encode(other).decode().rstrip("=")


def main():
    req = json.load(sys.stdin)
    private, public, pems, secrets = {}, {}, {}, {}
    for name, spec in req.get("keys", {}).items():
        if spec["type"] == "oct":
            k = jwk.JWK.generate(kty="oct", size=256, kid=name)
            secrets[name] = k
            public[name] = json.loads(k.export())
            continue
        key = generate(spec["type"])
        private[name] = key
        pem = key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        pems[name] = pem.decode()
        j = jwk.JWK.from_pem(pem)
        d = json.loads(j.export_public())
        d["kid"] = name
        if spec.get("x5c"):
            d["x5c"] = [self_signed(key, name)]
        public[name] = d
    tokens = []
    for t in req.get("tokens", []):
        header = dict(t.get("header", {}))
        if t.get("kid") is not None:
            header["kid"] = t["kid"]
        alg, claims, name = t["alg"], t["claims"], t.get("key")
        if t["lib"] == "pyjwt":
            if alg == "none":
                key = None
            elif name in secrets:
                key = base64.urlsafe_b64decode(secrets[name]["k"] + "==")
            else:
                key = private[name]
            tokens.append(jwt.encode(claims, key, algorithm=alg, headers=header or None))
        else:
            if name in secrets:
                key = secrets[name]
            else:
                key = jwk.JWK.from_pem(pems[name].encode())
            protected = {"alg": alg, **header}
            s = jws.JWS(json_encode(claims).encode())
            s.add_signature(key, alg=alg, protected=json_encode(protected))
            tokens.append(s.serialize(compact=True))
        if t.get("malleate"):
            tokens[-1] = malleate(tokens[-1], alg)
    json.dump({"keys": public, "private": pems, "tokens": tokens}, sys.stdout)


if __name__ == "__main__":
    main()
