"""A self-signed CA and serving certificate for the admission webhook, for where cert-manager is not.

The API server only calls webhooks over HTTPS and verifies them against the ``caBundle`` of the webhook
configuration. In a cluster, cert-manager issues the certificate and injects the CA (deploy/webhook).
On the local control plane the operator makes its own: a CA and a leaf certificate for the hosts the API
server dials (``127.0.0.1``), written in cert-manager's Secret layout (``ca.crt``, ``tls.crt``,
``tls.key``), so one ``--webhook-cert-dir`` option serves both cases.

``openssl`` does the work (the local control plane needs it already), so no crypto library is added to
the operator's dependencies.
"""

from __future__ import annotations

import ipaddress
import secrets
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

CA_CERT = "ca.crt"
CA_KEY = "ca.key"
TLS_CERT = "tls.crt"
TLS_KEY = "tls.key"
HOSTS_FILE = "hosts"  # the SANs the leaf was made for: a different list makes a new one
RENEW_BEFORE_SECONDS = 7 * 24 * 3600


class CertError(RuntimeError):
    pass


@dataclass(frozen=True)
class ServingCert:
    """Where a webhook server finds its certificate (cert-manager's Secret layout)."""

    directory: Path

    @property
    def certfile(self) -> Path:
        return self.directory / TLS_CERT

    @property
    def keyfile(self) -> Path:
        return self.directory / TLS_KEY

    @property
    def cafile(self) -> Path:
        """The CA the API server must trust; a certificate without one is trusted as its own CA."""
        ca = self.directory / CA_CERT
        return ca if ca.exists() else self.certfile

    def present(self) -> bool:
        return self.certfile.exists() and self.keyfile.exists()


def subject_alt_names(hosts: Sequence[str]) -> str:
    """``IP:`` for addresses, ``DNS:`` for names -- Go's TLS (the API server) only looks at SANs."""
    names = []
    for host in hosts:
        try:
            ipaddress.ip_address(host)
        except ValueError:
            names.append(f"DNS:{host}")
        else:
            names.append(f"IP:{host}")
    return ",".join(names)


def _openssl(*args: str, cwd: Path) -> None:
    try:
        subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True, text=True)
    except FileNotFoundError as exc:
        raise CertError("openssl is needed to make a self-signed webhook certificate") from exc
    except subprocess.CalledProcessError as exc:
        raise CertError(f"openssl {args[0]} failed: {exc.stderr.strip()}") from exc


def _valid_for(cert: ServingCert, hosts: Sequence[str]) -> bool:
    recorded = cert.directory / HOSTS_FILE
    if not (cert.present() and recorded.exists() and (cert.directory / CA_CERT).exists()):
        return False
    if recorded.read_text().split() != list(hosts):
        return False
    check = subprocess.run(
        ["openssl", "x509", "-checkend", str(RENEW_BEFORE_SECONDS), "-noout", "-in", str(cert.certfile)],
        capture_output=True,
    )
    return check.returncode == 0


def ensure_self_signed(directory: Path, hosts: Sequence[str], days: int = 365) -> ServingCert:
    """Reuse the certificate in ``directory`` if it covers ``hosts`` for another week; else make a new CA + leaf."""
    if not hosts:
        raise CertError("a webhook certificate needs at least one host")
    directory.mkdir(parents=True, exist_ok=True)
    cert = ServingCert(directory)
    if _valid_for(cert, hosts):
        return cert
    ca_conf = directory / "ca.cnf"
    ca_conf.write_text(
        "[req]\ndistinguished_name = dn\nx509_extensions = v3_ca\nprompt = no\n"
        "[dn]\nCN = cells-operator webhook CA\n"
        "[v3_ca]\nbasicConstraints = critical, CA:TRUE\nkeyUsage = critical, keyCertSign, cRLSign\n"
        "subjectKeyIdentifier = hash\n"
    )
    leaf_ext = directory / "leaf.cnf"
    leaf_ext.write_text(
        f"subjectAltName = {subject_alt_names(hosts)}\nbasicConstraints = CA:FALSE\n"
        "keyUsage = critical, digitalSignature, keyEncipherment\nextendedKeyUsage = serverAuth\n"
    )
    _openssl(
        "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", str(days),
        "-config", ca_conf.name, "-keyout", CA_KEY, "-out", CA_CERT, cwd=directory,
    )  # fmt: skip
    _openssl(
        "req", "-new", "-newkey", "rsa:2048", "-nodes", "-subj", f"/CN={hosts[0]}",
        "-keyout", TLS_KEY, "-out", "tls.csr", cwd=directory,
    )  # fmt: skip
    _openssl(
        "x509", "-req", "-in", "tls.csr", "-CA", CA_CERT, "-CAkey", CA_KEY, "-days", str(days),
        "-set_serial", f"0x{secrets.token_hex(12)}", "-extfile", leaf_ext.name, "-out", TLS_CERT, cwd=directory,
    )  # fmt: skip
    for scratch in ("tls.csr", "ca.cnf", "leaf.cnf"):
        (directory / scratch).unlink(missing_ok=True)
    for key in (CA_KEY, TLS_KEY):
        (directory / key).chmod(0o600)
    (directory / HOSTS_FILE).write_text("\n".join(hosts) + "\n")
    return cert
