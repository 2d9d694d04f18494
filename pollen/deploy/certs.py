"""TLS certificates and SuperNode auth keys for a Pollen deployment, made with `cryptography`.

One private CA signs one server certificate for the SuperLink; every SuperNode gets an EC P-384 key
pair in OpenSSH format (the only kind Flower's node authentication accepts). Private keys are
created with mode 0600 from the start (never chmod-ed after being written world-readable).
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from pollen.errors import DeploymentError

CA_CERT, CA_KEY = "ca.crt", "ca.key"
SERVER_CERT, SERVER_KEY = "server.pem", "server.key"
MANIFEST = "bundle.json"
# The SuperLink starts its own SuperExec, which dials the Runtime API on loopback (Flower rewrites
# 0.0.0.0 to 127.0.0.1), so the server certificate must always be valid for these names too.
LOOPBACK_HOSTS = ("127.0.0.1", "localhost")
_DNS_LABEL = re.compile(r"^(?!-)[A-Za-z0-9-]{1,63}(?<!-)$")


class CertError(DeploymentError):
    """Certificate material is missing, malformed, or would be overwritten."""


@dataclass(frozen=True)
class CertBundle:
    """Paths of one certificate directory (what `flower-superlink`/`flower-supernode` are given)."""

    dir: Path
    hosts: tuple[str, ...]
    node_keys: tuple[Path, ...]
    node_pubs: tuple[Path, ...]

    @property
    def ca_cert(self) -> Path:
        return self.dir / CA_CERT

    @property
    def ca_key(self) -> Path:
        return self.dir / CA_KEY

    @property
    def server_cert(self) -> Path:
        return self.dir / SERVER_CERT

    @property
    def server_key(self) -> Path:
        return self.dir / SERVER_KEY

    @property
    def n_nodes(self) -> int:
        return len(self.node_keys)


def node_key_path(out_dir: Path, i: int) -> Path:
    return Path(out_dir) / f"node-{i}.key"


def node_pub_path(out_dir: Path, i: int) -> Path:
    return Path(out_dir) / f"node-{i}.pub"


def _parse_host(host: str) -> x509.GeneralName:
    """An IP literal becomes an IPAddress SAN (TLS clients never match IPs against DNSName)."""
    host = host.strip()
    try:
        return x509.IPAddress(ipaddress.ip_address(host.strip("[]")))
    except ValueError:
        pass
    name = host.rstrip(".")
    labels = name.split(".")
    if labels and labels[0] == "*":  # wildcard only as the whole left-most label
        labels = labels[1:]
    if not name or len(name) > 253 or not labels or not all(_DNS_LABEL.match(x) for x in labels):
        raise CertError(f"host {host!r} is neither an IP address nor a valid DNS name")
    return x509.DNSName(name.lower())


def _sans(hosts: list[str]) -> list[x509.GeneralName]:
    out: list[x509.GeneralName] = []
    for h in [*hosts, *LOOPBACK_HOSTS]:
        san = _parse_host(h)
        if san not in out:
            out.append(san)
    return out


def _write(path: Path, data: bytes, private: bool) -> None:
    """Write via a fresh file created with the final mode, then rename (atomic, never 0644 first)."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.unlink(missing_ok=True)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600 if private else 0o644)
    try:
        os.write(fd, data)
        os.fchmod(fd, 0o600 if private else 0o644)  # umask may have removed bits of 0644
    finally:
        os.close(fd)
    os.replace(tmp, path)


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def _make_ca(key: ec.EllipticCurvePrivateKey, now: dt.datetime, days: int) -> x509.Certificate:
    name = x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Pollen"),
                      x509.NameAttribute(NameOID.COMMON_NAME, "Pollen deployment CA")])
    pub = key.public_key()
    return (
        x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(pub)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                     content_commitment=False, key_encipherment=False,
                                     data_encipherment=False, key_agreement=False,
                                     encipher_only=False, decipher_only=False), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(pub), critical=False)
        .sign(key, hashes.SHA384())
    )


def _make_server(key: ec.EllipticCurvePrivateKey, ca: x509.Certificate,
                 ca_key: ec.EllipticCurvePrivateKey, sans: list[x509.GeneralName],
                 now: dt.datetime, days: int) -> x509.Certificate:
    cn = str(sans[0].value)
    pub = key.public_key()
    return (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Pollen"),
                                 x509.NameAttribute(NameOID.COMMON_NAME, cn)]))
        .issuer_name(ca.subject).public_key(pub).serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(days=days))
        .add_extension(x509.SubjectAlternativeName(sans), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=False, crl_sign=False,
                                     content_commitment=False, key_encipherment=False,
                                     data_encipherment=False, key_agreement=False,
                                     encipher_only=False, decipher_only=False), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(pub), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
                       critical=False)
        .sign(ca_key, hashes.SHA384())
    )


def generate_certs(out_dir: Path, hosts: list[str], n_nodes: int, *, days: int = 365,
                   overwrite: bool = False) -> CertBundle:
    """Write ca.crt/ca.key, server.pem/server.key and node-I.key/.pub (I < n_nodes) into out_dir.

    `hosts` are the names/IPs SuperNodes dial; loopback is always added for the SuperLink's own
    SuperExec. Existing files are never replaced unless `overwrite` (a fresh CA would silently
    lock out every deployed node).
    """
    out_dir = Path(out_dir)
    if not hosts or not any(h.strip() for h in hosts):
        raise CertError("no hosts given: list the names/IPs clients use to reach the server "
                        "(e.g. --hosts 127.0.0.1,localhost,myserver.example)")
    if n_nodes < 0:
        raise CertError(f"--nodes must be >= 0, got {n_nodes}")
    if days < 1:
        raise CertError(f"certificate validity must be >= 1 day, got {days}")
    hosts = [h.strip() for h in hosts if h.strip()]
    sans = _sans(hosts)  # validates every host before anything is written

    targets = [out_dir / n for n in (CA_CERT, CA_KEY, SERVER_CERT, SERVER_KEY, MANIFEST)]
    targets += [p for i in range(n_nodes) for p in (node_key_path(out_dir, i), node_pub_path(out_dir, i))]
    if out_dir.exists() and not out_dir.is_dir():
        raise CertError(f"{out_dir} exists and is not a directory")
    existing = [p.name for p in targets if p.exists()]
    if existing and not overwrite:
        raise CertError(f"{out_dir} already holds {', '.join(existing)}; refusing to overwrite "
                        "(pass overwrite / --force to replace the whole bundle)")
    out_dir.mkdir(parents=True, exist_ok=True)
    if overwrite:  # stale node files of an earlier, larger bundle would look registrable
        for stale in out_dir.glob("node-*.*"):
            if stale not in targets and re.fullmatch(r"node-\d+\.(key|pub)", stale.name):
                stale.unlink()

    now = dt.datetime.now(dt.UTC)
    ca_key = ec.generate_private_key(ec.SECP384R1())
    ca = _make_ca(ca_key, now, days)
    srv_key = ec.generate_private_key(ec.SECP384R1())
    srv = _make_server(srv_key, ca, ca_key, sans, now, days)
    _write(out_dir / CA_KEY, _key_pem(ca_key), private=True)
    _write(out_dir / CA_CERT, ca.public_bytes(serialization.Encoding.PEM), private=False)
    _write(out_dir / SERVER_KEY, _key_pem(srv_key), private=True)
    _write(out_dir / SERVER_CERT, srv.public_bytes(serialization.Encoding.PEM), private=False)

    for i in range(n_nodes):
        key = ec.generate_private_key(ec.SECP384R1())
        _write(node_key_path(out_dir, i), key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH,
            serialization.NoEncryption()), private=True)
        pub = key.public_key().public_bytes(serialization.Encoding.OpenSSH,
                                            serialization.PublicFormat.OpenSSH)
        _write(node_pub_path(out_dir, i), pub + f" pollen-node-{i}\n".encode(), private=False)

    manifest = {"hosts": hosts, "n_nodes": n_nodes, "created": now.isoformat(),
                "not_after": (now + dt.timedelta(days=days)).isoformat()}
    _write(out_dir / MANIFEST, (json.dumps(manifest, indent=2) + "\n").encode(), private=False)
    return load_bundle(out_dir)


def load_bundle(cert_dir: Path, *, role: Literal["server", "client", "full"] = "full") -> CertBundle:
    """Check a certs directory holds what `role` needs and say exactly which files are missing.

    server: CA cert, server cert/key and the node *public* keys to register; client: the CA cert
    only (its node key is passed on its own); full: everything `generate_certs` wrote.
    """
    cert_dir = Path(cert_dir)
    if role not in ("server", "client", "full"):
        raise CertError(f"unknown bundle role {role!r}; choose server, client or full")
    if not cert_dir.is_dir():
        raise CertError(f"certificate directory {cert_dir} does not exist; create it with "
                        f"`pollen certs --out {cert_dir} --hosts ... --nodes N`")
    hosts: tuple[str, ...] = ()
    n_nodes = None
    if (cert_dir / MANIFEST).is_file():
        try:
            meta = json.loads((cert_dir / MANIFEST).read_text())
            hosts, n_nodes = tuple(meta["hosts"]), int(meta["n_nodes"])
        except (ValueError, KeyError, TypeError) as err:
            raise CertError(f"{cert_dir / MANIFEST} is corrupt ({err}); regenerate the bundle") from err
    if n_nodes is None:  # hand-made bundle: take the node files that are there
        n_nodes = len(list(cert_dir.glob("node-*.pub")))
    need = [CA_CERT]
    if role in ("server", "full"):
        need += [SERVER_CERT, SERVER_KEY] + [node_pub_path(cert_dir, i).name for i in range(n_nodes)]
    if role == "full":
        need += [CA_KEY] + [node_key_path(cert_dir, i).name for i in range(n_nodes)]
    missing = [n for n in need if not (cert_dir / n).is_file()]
    if missing:
        raise CertError(f"certificate directory {cert_dir} is missing {', '.join(missing)} "
                        f"(needed by the {role})")
    return CertBundle(dir=cert_dir, hosts=hosts,
                      node_keys=tuple(node_key_path(cert_dir, i) for i in range(n_nodes)),
                      node_pubs=tuple(node_pub_path(cert_dir, i) for i in range(n_nodes)))
