"""Pinned npm packages, fetched once with the ordinary client and verified by sha512.

Why its own module: fetching and verifying a tarball (pin, registry, `npm pack` must all agree,
and only verified files enter the cache) is a security boundary that has nothing to do with how
emoji become captions; keeping it apart keeps it small enough to audit.
"""
from __future__ import annotations

import base64
import hashlib
import json
import logging
import os
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

from blinkgen.errors import DataError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class NpmPackage:
    """One pinned npm release. `integrity` is the registry's sha512 in SRI form, recorded with
    `npm view NAME@VERSION dist.integrity` when the pin was made; a tarball must match it."""

    name: str
    version: str
    integrity: str

    @property
    def spec(self) -> str:
        return f"{self.name}@{self.version}"

    @property
    def filename(self) -> str:  # what `npm pack` writes
        return f"{self.name}-{self.version}.tgz"


# Recorded 2025 with `npm view <spec> dist.integrity`.
PACKAGES = {
    "google": NpmPackage("emoji-datasource-google", "16.0.0",
                         "sha512-ZRexfzs7MVoLnmzZmNsO4TKhnAJp5D++Vm6PpUpH/jEQQlemp3l88CjZ+DoZ2faM9R4QxZkOPJCoT8DlPhfQ3A=="),
    "twitter": NpmPackage("emoji-datasource-twitter", "16.0.0",
                          "sha512-7F+uCuHH+7Qnrc15P5tnbvKkg9E6tlzi4MnT2uW1RlN4pLYTza6cP/dstIfSDMtpjFLWuZewWg8jBbuL2eyELQ=="),
}


def default_cache_dir() -> Path:
    return Path.home() / ".cache" / "blinkgen" / "npm"


# ---------------------------------------------------------------- fetching and verification
def sri_sha512(path: Path) -> str:
    h = hashlib.sha512()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return "sha512-" + base64.b64encode(h.digest()).decode()


def verify_tarball(path: Path, expected: dict[str, str]) -> None:
    """Raise DataError unless the file's sha512 equals every expected value ({source: SRI})."""
    got = sri_sha512(path)
    bad = {src: want for src, want in expected.items() if want != got}
    if bad:
        raise DataError(f"integrity check failed for {path}: sha512 is {got}, but "
                        + "; ".join(f"{src} says {want}" for src, want in bad.items()))


def _npm_json(args: list[str], cwd: Path, timeout: int):
    cmd = f"npm {' '.join(args)}"
    try:
        r = subprocess.run(["npm", *args], cwd=cwd, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        raise DataError(f"`{cmd}` took over {timeout} s; check the network") from None
    if r.returncode != 0:
        raise DataError(f"`{cmd}` failed: {r.stderr.strip()[-500:]}")
    try:
        return json.loads(r.stdout)
    except ValueError:
        raise DataError(f"`{cmd}` printed no JSON: {r.stdout.strip()[:200]!r}") from None


def fetch_tarball(pkg: NpmPackage, cache_dir: Path) -> Path:
    """The verified tarball for `pkg`, from the cache or fetched once with `npm pack`.

    Only verified files enter the cache (fetched into a temp dir, checked against the pinned hash
    and the registry's, then renamed), so a cached file that fails the pin is tampering or disk
    corruption: it is removed and the build stops loudly rather than refetching behind the user's
    back."""
    cache_dir.mkdir(parents=True, exist_ok=True)
    cached = cache_dir / pkg.filename
    if cached.is_file():
        try:
            verify_tarball(cached, {"the pinned hash": pkg.integrity})
        except DataError as e:
            cached.unlink()
            raise DataError(f"{e}. Removed the cached file; run again to download it afresh.") from None
        log.info("using cached %s", cached)
        return cached
    if shutil.which("npm") is None:
        raise DataError(f"{pkg.spec} is not cached in {cache_dir} and npm is missing: apt-get install npm")
    log.info("fetching %s with npm pack", pkg.spec)
    registry = _npm_json(["view", pkg.spec, "dist.integrity", "--json"], cache_dir, 120)
    with tempfile.TemporaryDirectory(dir=cache_dir, prefix=".fetch-") as tmp:
        packed = _npm_json(["pack", pkg.spec, "--json"], Path(tmp), 900)
        path = Path(tmp) / (packed[0].get("filename") or pkg.filename)
        verify_tarball(path, {"the pinned hash": pkg.integrity, "the npm registry": registry,
                              "npm pack": packed[0].get("integrity", registry)})
        os.replace(path, cached)
    return cached
