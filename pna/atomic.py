"""The one writer of every file the package writes, and the manifest that says which files it wrote.

Writes go to a temporary name in the same folder, are flushed and fsync'ed, then renamed over the target
(os.replace), and the folder is fsync'ed: a crash or a kill mid-write leaves the old file or the new one, never
a cut one. Each write also records the file's name in its folder's manifest (MANIFEST, a JSON list of names;
sub-folders the tool made are listed with a trailing "/"), so ``remove_written`` can delete exactly what the
tool wrote and nothing a user put beside it.

    atomic.write_json(path, {"a": 1})            # also write_text, write_bytes, torch_save
    atomic.make_dirs(root / "runs" / "x", base=root)   # mkdir -p, recording each new level under base
    removed = atomic.remove_written(root)        # the files listed in the manifests under root (recursively)
"""
from __future__ import annotations

import io
import json
import os
import tempfile
from pathlib import Path
from typing import Any, Callable

import torch

MANIFEST = ".pna-manifest.json"


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:  # e.g. Windows: folders cannot be opened
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _replace_with(path: Path, write: Callable[[Any], None], record: bool) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    _fsync_dir(path.parent)
    if record:
        _record(path.parent, path.name)
    return path


def write_bytes(path: str | os.PathLike[str], data: bytes) -> Path:
    """Write bytes atomically (see the module docstring); returns the path."""
    return _replace_with(Path(path), lambda handle: handle.write(data), record=True)


def write_text(path: str | os.PathLike[str], text: str) -> Path:
    """Write UTF-8 text atomically; returns the path."""
    return write_bytes(path, text.encode("utf-8"))


def write_json(path: str | os.PathLike[str], data: Any, default: Callable[[Any], Any] | None = None) -> Path:
    """Write JSON (indented, keys sorted, so equal data gives equal bytes) atomically; returns the path."""
    return write_text(path, json.dumps(data, indent=2, sort_keys=True, default=default) + "\n")


def torch_save(obj: Any, path: str | os.PathLike[str]) -> Path:
    """torch.save atomically; returns the path."""
    return _replace_with(Path(path), lambda handle: torch.save(obj, handle), record=True)


def save_figure(fig: Any, path: str | os.PathLike[str], **savefig_kwargs: Any) -> Path:
    """A matplotlib figure saved atomically (format from the suffix); returns the path."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format=Path(path).suffix.lstrip(".") or "png", **savefig_kwargs)
    return write_bytes(path, buffer.getvalue())


def read_manifest(folder: str | os.PathLike[str]) -> list[str]:
    """Names the tool wrote in folder (sub-folders end in "/"); [] without a (readable) manifest."""
    try:
        names = json.loads((Path(folder) / MANIFEST).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return []
    return [n for n in names if isinstance(n, str)] if isinstance(names, list) else []


def _record(folder: Path, name: str) -> None:
    """Add a name to folder's manifest (once)."""
    names = read_manifest(folder)
    if name not in names:
        text = json.dumps(sorted(names + [name]), indent=0)
        _replace_with(folder / MANIFEST, lambda handle: handle.write(text.encode("utf-8")), record=False)


def record(path: str | os.PathLike[str]) -> None:
    """Record a file the tool made without write_* (e.g. a lock file) in its folder's manifest."""
    path = Path(path)
    _record(path.parent, path.name)


def make_dirs(path: str | os.PathLike[str], base: str | os.PathLike[str]) -> Path:
    """mkdir -p path, recording every level below base (which must contain path) in its parent's manifest."""
    path, base = Path(path), Path(base)
    rel = path.resolve().relative_to(base.resolve())
    path.mkdir(parents=True, exist_ok=True)
    current = base
    for part in rel.parts:
        _record(current, part + "/")
        current = current / part
    return path


def remove_written(folder: str | os.PathLike[str]) -> list[Path]:
    """Delete what the manifests under folder list (files, and listed sub-folders recursively), then each
    manifest, and each folder left empty (folder itself included). Files the tool did not write stay, and so
    do the folders holding them. Returns the files deleted."""
    folder = Path(folder)
    removed: list[Path] = []
    for name in read_manifest(folder):
        target = folder / name.rstrip("/")
        if name.endswith("/"):
            if target.is_dir() and not target.is_symlink():
                removed += remove_written(target)
        elif target.is_file() or target.is_symlink():
            target.unlink()
            removed.append(target)
    manifest = folder / MANIFEST
    if manifest.exists():
        manifest.unlink()
    try:
        folder.rmdir()  # only if empty
    except OSError:
        pass
    return removed
