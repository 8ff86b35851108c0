"""Imports every part's tables so the metadata of both stores is complete."""

from tutela.audit import models as audit_models
from tutela.consent import models as consent_models
from tutela.erasure import models as erasure_models
from tutela.exports import models as exports_models
from tutela.households import models as households_models
from tutela.identity import models as identity_models
from tutela.identity import recovery_models
from tutela.notices import models as notices_models
from tutela.retention import models as retention_models
from tutela.transparency import models as transparency_models
from tutela.vault import models as vault_models

__all__ = [
    "audit_models",
    "consent_models",
    "erasure_models",
    "exports_models",
    "households_models",
    "identity_models",
    "notices_models",
    "recovery_models",
    "retention_models",
    "transparency_models",
    "vault_models",
]
