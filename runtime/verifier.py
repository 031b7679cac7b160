"""verify(): run a bundle on this machine against the conformance vectors it carries.

The check to make after copying a bundle to an edge box, upgrading onnxruntime or switching
execution provider: every file's checksum first (a damaged copy is reported as one), then each
vector of conformance.json (docs/conformance.md), pass or how far off.

    report = verify("./smol-int8", provider="cpu")
    report.passed; [(o.name, o.passed, o.detail) for o in report.outcomes]
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from edgelm.errors import BundleError
from edgelm.runtime import conformance
from edgelm.runtime.conformance import Outcome


@dataclass(frozen=True)
class VerifyReport:
    """What `edgelm verify` found: the bundle, where it ran, and one outcome per vector."""

    bundle: Path
    provider: str
    precision: str
    written_by: str
    outcomes: tuple[Outcome, ...]

    @property
    def passed(self) -> bool:
        return bool(self.outcomes) and all(o.passed for o in self.outcomes)

    @property
    def failures(self) -> list[Outcome]:
        return [o for o in self.outcomes if not o.passed]


def verify(path: str | Path, provider: str = "auto", threads: int | None = None) -> VerifyReport:
    """Check every file of the bundle at PATH, then run its conformance vectors on PROVIDER.

    Raises BundleError when the bundle cannot be opened (a damaged file, an edited manifest) or
    carries no vectors; a vector that does not match is a failed outcome, not an exception.
    """
    from edgelm.runtime import load

    model = load(path, provider=provider, threads=threads)  # hashes every file: a damaged copy stops here
    manifest = model.manifest
    if not manifest.conformance_file:
        raise BundleError(f"{path} carries no conformance vectors (it was written before edgelm 0.3); "
                          "re-export it (or quantize it again) with this edgelm to add them")
    vectors = conformance.read(model.bundle.folder, manifest.conformance_file)
    return VerifyReport(bundle=Path(path), provider=model.provider, precision=str(vectors.get("precision", "?")),
                        written_by=str(vectors.get("written_by", "?")), outcomes=tuple(conformance.check(model, vectors)))
