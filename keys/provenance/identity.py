"""The deployment's C2PA signing identity: an X.509 root CA and the certificate it issues
for signing manifests, EC P-256 (ES256), made with ``cryptography`` on first use.

Both private keys are stored encrypted with the root secret's Fernet key (``Vault``), like
the upstream credential, in ``provenance_signers``: one row per generation. The newest
generation signs. ``rotate`` issues a new signing certificate under the same root (readers
that trust the root need nothing new); ``rotate(new_root=True)`` makes a new root too, for
a root key feared lost. Every root ever made stays a trust anchor of ``identify``, so files
signed before a rotation still verify (docs/provenance.md).

The signing certificate carries what C2PA requires of a claim signer: digitalSignature key
usage, the emailProtection extended key usage, not a CA, issued by a CA with keyCertSign.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from keys.access.vault import Vault
from keys.models import ProvenanceSigner
from keys.records.audit import AuditTrail

ROOT_DAYS = 20 * 365
SIGNER_DAYS = 5 * 365
ORGANIZATION = "Drawbridge"


@dataclass(frozen=True)
class SigningIdentity:
    """A generation's signing certificate chain and key, decrypted, ready for c2pa."""

    generation: int
    key_id: str
    chain_pem: bytes  # the signing certificate, then the root
    private_key_pem: bytes
    root_pem: bytes

    def __repr__(self) -> str:
        return f"SigningIdentity(generation={self.generation}, key_id={self.key_id!r})"


def _name(common_name: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, ORGANIZATION),
        ]
    )


def _pem(certificate: x509.Certificate) -> str:
    return certificate.public_bytes(serialization.Encoding.PEM).decode("ascii")


def _key_pem(key: ec.EllipticCurvePrivateKey) -> str:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode("ascii")


def certificate_key_id(cert_pem: str | bytes) -> str:
    """First 16 hex digits of SHA-256 over the certificate's DER."""
    data = cert_pem.encode() if isinstance(cert_pem, str) else cert_pem
    der = x509.load_pem_x509_certificate(data).public_bytes(serialization.Encoding.DER)
    return hashlib.sha256(der).hexdigest()[:16]


def new_root(now: datetime, generation: int) -> tuple[str, str]:
    """A self-signed root CA: (certificate PEM, private key PEM)."""
    key = ec.generate_private_key(ec.SECP256R1())
    subject = _name(f"Drawbridge provenance root {generation}")
    certificate = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + timedelta(days=ROOT_DAYS))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=False,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    return _pem(certificate), _key_pem(key)


def new_signing_certificate(
    root_cert_pem: str, root_key_pem: str, now: datetime, generation: int
) -> tuple[str, str]:
    """A claim-signing certificate issued by the root: (certificate PEM, private key PEM)."""
    root = x509.load_pem_x509_certificate(root_cert_pem.encode())
    root_key = serialization.load_pem_private_key(root_key_pem.encode(), password=None)
    if not isinstance(root_key, ec.EllipticCurvePrivateKey):
        raise ValueError("the provenance root key is not an EC key")
    key = ec.generate_private_key(ec.SECP256R1())
    certificate = (
        x509.CertificateBuilder()
        .subject_name(_name(f"Drawbridge content signer {generation}"))
        .issuer_name(root.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(min(now + timedelta(days=SIGNER_DAYS), root.not_valid_after_utc))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(
            x509.ExtendedKeyUsage([ExtendedKeyUsageOID.EMAIL_PROTECTION]), critical=False
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(root_key.public_key()),
            critical=False,
        )
        .sign(root_key, hashes.SHA256())
    )
    return _pem(certificate), _key_pem(key)


class ProvenanceSigners:
    """The generations of the signing identity, in one transaction."""

    def __init__(self, session: Session, audit: AuditTrail, clock: Callable[[], datetime]):
        self._session = session
        self._audit = audit
        self._clock = clock

    def newest_generation(self) -> int | None:
        """The generation that signs now (one indexed read), or None before the first."""
        return self._session.execute(select(func.max(ProvenanceSigner.generation))).scalar()

    def get(self, generation: int) -> ProvenanceSigner | None:
        return self._session.get(ProvenanceSigner, generation)

    def all(self) -> list[ProvenanceSigner]:
        return list(
            self._session.scalars(select(ProvenanceSigner).order_by(ProvenanceSigner.generation))
        )

    def trust_anchors(self) -> list[str]:
        """Every root certificate ever made here, PEM, oldest first, without repeats."""
        roots: list[str] = []
        for row in self.all():
            if row.root_cert_pem not in roots:
                roots.append(row.root_cert_pem)
        return roots

    def ensure(self, vault: Vault, actor: str = "system") -> ProvenanceSigner:
        """The newest generation, made (a new root and signer) when there is none yet.

        Two processes making the first at once: one insert wins, the other reads it.
        """
        generation = self.newest_generation()
        if generation is not None:
            row = self.get(generation)
            assert row is not None
            return row
        try:
            with self._session.begin_nested():
                return self._make(vault, actor, 1, None)
        except IntegrityError:
            generation = self.newest_generation()
            row = self.get(generation) if generation is not None else None
            if row is None:
                raise
            return row

    def rotate(self, vault: Vault, actor: str, *, new_root: bool = False) -> ProvenanceSigner:
        """A new signing certificate (under the same root unless ``new_root``) that signs
        from now on; older generations stay for verification."""
        current = self.ensure(vault, actor)
        return self._make(vault, actor, current.generation + 1, None if new_root else current)

    def _make(
        self, vault: Vault, actor: str, generation: int, parent: ProvenanceSigner | None
    ) -> ProvenanceSigner:
        now = self._clock()
        # Certificates are checked against real time by every reader, whatever clock the
        # store is given (tests set theirs).
        issued = datetime.now(UTC)
        if parent is None:
            root_cert, root_key = new_root(issued, generation)
            root_key_encrypted = vault.encrypt(root_key)
        else:
            root_cert, root_key_encrypted = parent.root_cert_pem, parent.root_key_encrypted
            root_key = vault.decrypt(root_key_encrypted)
        cert, key = new_signing_certificate(root_cert, root_key, issued, generation)
        row = ProvenanceSigner(
            generation=generation,
            created_at=now,
            created_by=actor,
            key_id=certificate_key_id(cert),
            root_cert_pem=root_cert,
            root_key_encrypted=root_key_encrypted,
            cert_pem=cert,
            key_encrypted=vault.encrypt(key),
        )
        self._session.add(row)
        self._session.flush()
        self._audit.append(
            actor,
            "provenance.signer_created",
            f"signer:{row.key_id}",
            details={"generation": generation, "new_root": parent is None},
        )
        return row


def unlock(row: ProvenanceSigner, vault: Vault) -> SigningIdentity:
    """The generation's chain and decrypted key. Raises VaultError (wrong root secret)."""
    return SigningIdentity(
        generation=row.generation,
        key_id=row.key_id,
        chain_pem=(row.cert_pem + row.root_cert_pem).encode(),
        private_key_pem=vault.decrypt(row.key_encrypted).encode(),
        root_pem=row.root_cert_pem.encode(),
    )
