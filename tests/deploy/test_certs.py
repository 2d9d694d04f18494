"""`pollen certs`: what the files contain, who may read them, and that nothing gets clobbered."""

from __future__ import annotations

import datetime as dt
import ipaddress
import stat
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import (
    load_pem_private_key,
    load_ssh_private_key,
    load_ssh_public_key,
)
from cryptography.x509.oid import ExtendedKeyUsageOID
from cryptography.x509.verification import PolicyBuilder, Store, VerificationError

from pollen.deploy.certs import CertError, generate_certs, load_bundle
from pollen.errors import PollenError

HOSTS = ["127.0.0.1", "localhost", "myserver.example", "10.1.2.3", "::1"]


@pytest.fixture(scope="module")
def bundle(tmp_path_factory: pytest.TempPathFactory):
    return generate_certs(tmp_path_factory.mktemp("certs"), HOSTS, 3, days=30)


def _cert(p: Path) -> x509.Certificate:
    return x509.load_pem_x509_certificate(p.read_bytes())


def test_sans_are_typed_ips_and_names(bundle) -> None:
    san = _cert(bundle.server_cert).extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    ips = set(san.get_values_for_type(x509.IPAddress))
    names = set(san.get_values_for_type(x509.DNSName))
    assert ips == {ipaddress.ip_address(h) for h in ("127.0.0.1", "10.1.2.3", "::1")}
    assert names == {"localhost", "myserver.example"}  # IPs never leak in as DNS names


def test_loopback_always_in_sans(tmp_path: Path) -> None:
    b = generate_certs(tmp_path, ["server.internal"], 0)
    san = _cert(b.server_cert).extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert ipaddress.ip_address("127.0.0.1") in san.get_values_for_type(x509.IPAddress)
    assert "localhost" in san.get_values_for_type(x509.DNSName)
    cn = _cert(b.server_cert).subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)
    assert [a.value for a in cn] == ["server.internal"]  # first user host, not loopback


def test_extensions_and_validity(bundle) -> None:
    ca, leaf = _cert(bundle.ca_cert), _cert(bundle.server_cert)
    bc = ca.extensions.get_extension_for_class(x509.BasicConstraints)
    assert bc.critical and bc.value.ca and bc.value.path_length == 0
    assert ca.extensions.get_extension_for_class(x509.KeyUsage).value.key_cert_sign
    lbc = leaf.extensions.get_extension_for_class(x509.BasicConstraints)
    assert lbc.critical and not lbc.value.ca
    assert not leaf.extensions.get_extension_for_class(x509.KeyUsage).value.key_cert_sign
    eku = leaf.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(eku) == [ExtendedKeyUsageOID.SERVER_AUTH]
    life = leaf.not_valid_after_utc - leaf.not_valid_before_utc
    assert dt.timedelta(days=30) <= life <= dt.timedelta(days=30, minutes=10)
    assert leaf.serial_number != ca.serial_number


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost", "myserver.example", "::1"])
def test_chain_verifies_for_each_host(bundle, host: str) -> None:
    store = Store([_cert(bundle.ca_cert)])
    try:
        subject: x509.GeneralName = x509.IPAddress(ipaddress.ip_address(host))
    except ValueError:
        subject = x509.DNSName(host)
    verifier = PolicyBuilder().store(store).build_server_verifier(subject)
    chain = verifier.verify(_cert(bundle.server_cert), [])
    assert chain[-1] == _cert(bundle.ca_cert)


def test_chain_rejects_other_host_and_other_ca(bundle, tmp_path: Path) -> None:
    from cryptography.x509 import DNSName
    store = Store([_cert(bundle.ca_cert)])
    with pytest.raises(VerificationError):
        PolicyBuilder().store(store).build_server_verifier(DNSName("evil.example")).verify(
            _cert(bundle.server_cert), [])
    other = generate_certs(tmp_path, ["localhost"], 0)
    with pytest.raises(VerificationError):
        PolicyBuilder().store(Store([_cert(other.ca_cert)])).build_server_verifier(
            DNSName("localhost")).verify(_cert(bundle.server_cert), [])


def test_private_keys_are_0600_and_match(bundle) -> None:
    for p in [bundle.ca_key, bundle.server_key, *bundle.node_keys]:
        assert stat.S_IMODE(p.stat().st_mode) == 0o600, p
    for p in [bundle.ca_cert, bundle.server_cert, *bundle.node_pubs]:
        assert stat.S_IMODE(p.stat().st_mode) & 0o044, p  # world/group readable is fine
    key = load_pem_private_key(bundle.server_key.read_bytes(), None)
    assert key.public_key() == _cert(bundle.server_cert).public_key()


def test_node_keys_are_openssh_p384_pairs(bundle) -> None:
    assert bundle.n_nodes == 3
    seen = set()
    for k, p in zip(bundle.node_keys, bundle.node_pubs, strict=True):
        assert k.read_bytes().startswith(b"-----BEGIN OPENSSH PRIVATE KEY-----")
        priv = load_ssh_private_key(k.read_bytes(), None)
        pub = load_ssh_public_key(p.read_bytes())
        assert isinstance(priv, ec.EllipticCurvePrivateKey) and isinstance(priv.curve, ec.SECP384R1)
        assert priv.public_key() == pub
        assert p.read_text().startswith("ecdsa-sha2-nistp384 ")
        seen.add(p.read_bytes().split()[1])
    assert len(seen) == 3  # distinct identities


def test_refuses_overwrite_then_overwrites_and_prunes(tmp_path: Path) -> None:
    first = generate_certs(tmp_path, ["localhost"], 3)
    old_ca = first.ca_cert.read_bytes()
    with pytest.raises(CertError, match="refusing to overwrite") as err:
        generate_certs(tmp_path, ["localhost"], 1)
    assert isinstance(err.value, PollenError) and "ca.crt" in str(err.value)
    assert first.ca_cert.read_bytes() == old_ca  # nothing was touched
    second = generate_certs(tmp_path, ["localhost"], 1, overwrite=True)
    assert second.ca_cert.read_bytes() != old_ca and second.n_nodes == 1
    assert not (tmp_path / "node-1.key").exists() and not (tmp_path / "node-2.pub").exists()
    assert not list(tmp_path.glob(".*.tmp"))


@pytest.mark.parametrize("hosts", [[], [" "], ["bad host"], ["-x.example"], ["a..b"]])
def test_bad_hosts_rejected_before_writing(tmp_path: Path, hosts: list[str]) -> None:
    with pytest.raises(CertError):
        generate_certs(tmp_path / "out", hosts, 1)
    assert not (tmp_path / "out").exists()


def test_load_bundle_names_missing_files(tmp_path: Path) -> None:
    b = generate_certs(tmp_path, ["localhost"], 2)
    assert load_bundle(tmp_path).node_pubs == b.node_pubs
    (tmp_path / "node-1.pub").unlink()
    b.server_key.unlink()
    with pytest.raises(CertError, match=r"missing server\.key, node-1\.pub"):
        load_bundle(tmp_path, role="server")
    assert load_bundle(tmp_path, role="client").ca_cert.is_file()  # a client needs ca.crt only
    with pytest.raises(CertError, match="does not exist"):
        load_bundle(tmp_path / "nope")
    b.ca_key.unlink()
    with pytest.raises(CertError, match=r"ca\.key"):
        load_bundle(tmp_path, role="full")
