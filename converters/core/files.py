"""Safe output: names checked before they become paths, every write inside the output
folder, and the whole output folder appearing at once.

* :func:`safe_name` / :func:`output_file` — a name that comes from input data (a dataset
  name, a record type, a resource type) must match :data:`DATA_NAME` before it becomes part
  of a file name, and every file name must match :data:`FILE_NAME` (no separator, no ``..``,
  no leading dot, no control character, no Windows device name); the final path must lie
  directly in the output folder once symlinks are followed.
* :class:`OutputStage` — the output folder is checked before any work starts (not the input,
  not inside or around it, not a file, its parent creatable and writable, holding nothing
  trialbridge did not write); everything is written into a staging folder beside it (same
  file system), a manifest listing every file with its digest is written last, then the
  staging folder is swapped in with one rename (an atomic exchange where the system has it)
  and the previous output removed, file by file as its manifest lists them.  A run killed
  midway leaves the previous complete output untouched; the next run removes its staging
  folder.
* :func:`atomic_path` / :func:`atomic_open` — one file written to a temporary sibling and
  renamed into place (used inside the staging folder, and for single-file outputs such as a
  validation report).
"""
from __future__ import annotations

import ctypes
import errno
import hashlib
import json
import os
import re
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Iterable, Iterator

from trialbridge.converters.core.issues import TrialbridgeError

try:  # POSIX: a lock the kernel drops when its process dies, however it dies
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None

# a name taken from input data (SDTM dataset, record type, FHIR resource type)
DATA_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_]{0,63}")
# a file name trialbridge writes: letters, digits, _ and -, then dot-separated suffixes
FILE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,127}(\.[A-Za-z0-9]{1,16}){0,3}")
WINDOWS_DEVICES = {"CON", "PRN", "AUX", "NUL", *(f"COM{n}" for n in range(1, 10)), *(f"LPT{n}" for n in range(1, 10))}

MANIFEST = ".trialbridge-manifest"      # written last: every file of a complete output, with its digest
MARKER = ".trialbridge-writing"         # in a staging folder while a run writes into it
STAGING = ".trialbridge.staging."       # staging folders: .<output name>.trialbridge.staging.<random>
PREVIOUS = ".trialbridge.previous."     # a previous output moved aside (systems without an atomic exchange)
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]")


def printable(text: object) -> str:
    """``text`` with control characters (C0, DEL, C1, bidirectional overrides) written as
    escapes (``\\x1b``, ``\\n``, ``\\u202e``), for a terminal; the data keeps the exact text."""
    def escape(m: re.Match) -> str:
        ch = m.group()
        return {"\n": "\\n", "\r": "\\r", "\t": "\\t"}.get(ch) or (
            f"\\x{ord(ch):02x}" if ord(ch) < 0x100 else f"\\u{ord(ch):04x}")
    return _CONTROL.sub(escape, str(text))


def safe_name(name: object) -> bool:
    """True if ``name`` (from input data) may become part of a file name."""
    return isinstance(name, str) and DATA_NAME.fullmatch(name) is not None \
        and name.upper() not in WINDOWS_DEVICES


def _check_file_name(name: str) -> None:
    if not isinstance(name, str) or FILE_NAME.fullmatch(name) is None \
            or name.split(".", 1)[0].upper() in WINDOWS_DEVICES:
        raise TrialbridgeError(f"refused to write a file named {printable(repr(name))}: not a safe file name "
                               "(letters, digits, _ and - with a suffix)")


def output_file(folder: str | os.PathLike, name: str) -> Path:
    """The path of file ``name`` directly in ``folder``: the name must be a safe file name
    and the path must resolve inside the folder, symlinks followed (else TrialbridgeError)."""
    _check_file_name(name)
    real = Path(os.path.realpath(folder))
    target = real / name
    if target.is_symlink() or Path(os.path.realpath(target)).parent != real:
        raise TrialbridgeError(f"refused to write {printable(target)}: it does not resolve inside {printable(real)}")
    return target


# ----------------------------------------------------------------------------- one file


@contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it over ``path`` on success."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    os.chmod(tmp_path, 0o666 & ~_umask())  # mkstemp makes 0600; outputs get ordinary permissions
    try:
        yield tmp_path
        os.replace(tmp_path, target)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


@contextmanager
def atomic_open(path: str | os.PathLike, mode: str = "w", **kwargs) -> Iterator[IO]:
    """Open a temporary sibling of ``path`` for writing; rename it into place on success."""
    if "b" not in mode:
        kwargs.setdefault("encoding", "utf-8")
        kwargs.setdefault("newline", "")
    with atomic_path(path) as tmp:
        with open(tmp, mode, **kwargs) as fh:
            yield fh


def _umask() -> int:
    umask = os.umask(0)
    os.umask(umask)
    return umask


# ----------------------------------------------------------------------------- paths of a run


def real_path(path: str | os.PathLike) -> Path:
    """``path`` absolute with every symlink followed (as far as it exists)."""
    return Path(os.path.realpath(os.path.abspath(path)))


def check_apart(output: Path, inputs: Iterable[Path | None], what: str = "output folder",
                source: str = "input") -> Path:
    """The real path of ``output``; TrialbridgeError if it is an input, lies inside one, or
    holds one (compared after following symlinks)."""
    real = real_path(output)
    for given in inputs:
        if given is None:
            continue
        there = real_path(given)
        if real == there:
            raise TrialbridgeError(f"{printable(output)}: the {what} is the {source} {printable(given)}"
                                   + (" (through a symlink)" if str(real) != os.path.abspath(output) else "")
                                   + f"; choose another path, the {source} is never written over")
        if there in real.parents:
            raise TrialbridgeError(f"{printable(output)}: the {what} is inside the {source} {printable(given)}; "
                                   "choose a path outside it")
        if real in there.parents:
            raise TrialbridgeError(f"{printable(output)}: the {source} {printable(given)} is inside the {what}; "
                                   f"choose a folder that does not hold the {source}")
    return real


def check_file_target(path: Path, inputs: Iterable[Path | None], *, ours: bytes, what: str = "report",
                      source: str = "input") -> Path:
    """A single output file (``--report``) checked before any work: not an input, not inside
    an input folder, not a folder; an existing file only if it holds ``ours`` in its first
    64 KiB (a file trialbridge wrote); its folder creatable and writable.  Returns the real path."""
    real = check_apart(path, inputs, what, source)
    shown = printable(path)
    if real.is_dir():
        raise TrialbridgeError(f"{shown}: the {what} path is a folder; give a file name")
    if real.exists():
        try:
            with open(real, "rb") as fh:
                head = fh.read(1 << 16)
        except OSError as exc:
            raise TrialbridgeError(f"{shown}: cannot read the existing {what}: {exc.strerror}") from exc
        if ours not in head:
            raise TrialbridgeError(f"{shown}: exists and was not written by trialbridge; it is never overwritten — "
                                   "choose another file name")
    ancestor = real.parent
    while not ancestor.exists():
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        raise TrialbridgeError(f"{shown}: cannot create its folder: {printable(ancestor)} is a file")
    try:
        real.parent.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=f".{real.name}.", suffix=".tmp", dir=real.parent)
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        raise TrialbridgeError(f"{shown}: cannot write in {printable(real.parent)}: {exc.strerror}") from exc
    return real


def read_manifest(folder: Path) -> dict[str, dict] | None:
    """The files a complete trialbridge output in ``folder`` lists (name -> size, sha256),
    or None if it has no readable manifest."""
    try:
        doc = json.loads((folder / MANIFEST).read_text(encoding="utf-8"))
        files = doc["files"]
        if isinstance(files, dict) and all(isinstance(v, dict) for v in files.values()):
            return files
    except (OSError, ValueError, KeyError, TypeError):
        pass
    return None


def _digest(path: Path, sync: bool = False) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(1 << 20):
            h.update(chunk)
        if sync:
            os.fsync(fh.fileno())  # on disk before the rename that publishes it
    return h.hexdigest()


def foreign_files(folder: Path, *, digests: bool = True) -> list[str] | None:
    """Entries of ``folder`` trialbridge did not write (not in its manifest, or changed since
    — size, and with ``digests`` the SHA-256); [] for an empty folder or a complete output of
    ours.  A folder with entries and no manifest: every entry is foreign."""
    entries = sorted(p.name for p in folder.iterdir())
    if not entries:
        return []
    listed = read_manifest(folder)
    if listed is None:
        return entries
    out = []
    for name in entries:
        if name == MANIFEST:
            continue
        p = folder / name
        want = listed.get(name)
        if want is None or p.is_symlink() or not p.is_file() or p.stat().st_size != want.get("size") \
                or (digests and _digest(p) != want.get("sha256")):
            out.append(name)
    return out


def manifest_differences(folder: Path) -> list[tuple[str, str]] | None:
    """How ``folder`` differs from what its manifest lists: (name, "missing" | "changed" |
    "not listed") sorted by name; None if the folder has no manifest (not a trialbridge output)."""
    listed = read_manifest(folder)
    if listed is None:
        return None
    out = []
    present = {p.name: p for p in folder.iterdir() if p.name != MANIFEST}
    for name in sorted(set(listed) | set(present)):
        p = present.get(name)
        if p is None:
            out.append((name, "missing"))
        elif name not in listed:
            out.append((name, "not listed"))
        elif p.is_symlink() or not p.is_file() or p.stat().st_size != listed[name].get("size") \
                or _digest(p) != listed[name].get("sha256"):
            out.append((name, "changed"))
    return out


def _lock(path: Path) -> int | None:
    """An open descriptor on folder ``path`` holding an exclusive lock; None if another
    running process holds it."""
    fd = os.open(path, os.O_RDONLY)
    if fcntl is None:  # pragma: no cover
        return fd
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(fd)
        return None
    return fd


def _remove_ours(folder: Path) -> bool:
    """Remove a folder trialbridge wrote (a complete output as its manifest lists, or a
    staging folder with its marker); True if it is gone.  Anything else stays."""
    if folder.is_symlink() or not folder.is_dir():
        return False
    if not any(folder.iterdir()):
        folder.rmdir()
        return True
    if (folder / MARKER).is_file():
        shutil.rmtree(folder, ignore_errors=True)
        return not folder.exists()
    listed = read_manifest(folder)
    if listed is None:
        return False
    for name in listed:
        p = folder / name
        if FILE_NAME.fullmatch(name) and p.is_file() and not p.is_symlink():
            p.unlink()
    for p in folder.iterdir():  # temporary files of our own atomic writes
        if p.name.startswith(".") and p.name.endswith(".tmp") and p.is_file():
            p.unlink()
    (folder / MANIFEST).unlink(missing_ok=True)
    try:
        folder.rmdir()
    except OSError:
        return False
    return True


def _exchange(a: Path, b: Path) -> bool:
    """Swap two paths atomically (Linux renameat2 RENAME_EXCHANGE); False where unsupported."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        renameat2 = libc.renameat2
    except (OSError, AttributeError):
        return False
    renameat2.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    at_fdcwd, rename_exchange = -100, 2
    if renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.ENOSYS, errno.EINVAL, errno.EOPNOTSUPP, errno.ENOTSUP):
        return False
    raise OSError(err, os.strerror(err), str(a))


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


class OutputStage:
    """One run's output folder, written whole or not at all (see the module docstring).

    ``OutputStage(output, inputs)`` checks the folder and makes the staging folder, before
    any work; writers write into :attr:`path`; :meth:`commit` publishes it and gives the
    final path of each file; :meth:`abort` (or leaving a ``with`` block by an exception)
    removes it.  :attr:`cleaned` counts the staging folders of killed runs it removed."""

    def __init__(self, output: str | os.PathLike, inputs: Iterable[Path | None] = ()):
        self.requested = Path(output)
        self.final = check_apart(self.requested, inputs)
        self.cleaned = 0
        self._fd: int | None = None
        shown = printable(self.requested)
        if self.final == self.final.parent:
            raise TrialbridgeError(f"{shown}: the root folder cannot be an output folder")
        if self.final.exists() and not self.final.is_dir():
            raise TrialbridgeError(f"{shown}: exists and is not a folder")
        parent = self.final.parent
        ancestor = parent
        while not ancestor.exists():
            ancestor = ancestor.parent
        if not ancestor.is_dir():
            raise TrialbridgeError(f"{shown}: cannot create the output folder: {printable(ancestor)} is a file")
        try:
            parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise TrialbridgeError(f"{shown}: cannot create the output folder: {exc.strerror}") from exc
        if self.final.is_dir():
            if os.stat(self.final).st_dev != os.stat(parent).st_dev:
                raise TrialbridgeError(f"{shown}: is a mount point; give a folder inside it")
            try:
                foreign = foreign_files(self.final)
            except OSError as exc:
                raise TrialbridgeError(f"{shown}: cannot read the output folder: {exc.strerror}") from exc
            if foreign:
                listed = ", ".join(printable(n) for n in foreign[:3]) + (f" and {len(foreign) - 3} more"
                                                                         if len(foreign) > 3 else "")
                raise TrialbridgeError(f"{shown}: the output folder holds files trialbridge did not write "
                                       f"({listed}); they are never overwritten or deleted — choose a new or "
                                       "empty folder, or move them away")
        try:
            self._clean_stale()
        except OSError as exc:
            raise TrialbridgeError(f"{shown}: cannot read {printable(parent)}: {exc.strerror}") from exc
        try:
            self.path = Path(tempfile.mkdtemp(prefix=f".{self.final.name}{STAGING}", dir=parent))
        except OSError as exc:
            raise TrialbridgeError(f"{shown}: cannot write in {printable(parent)}: {exc.strerror}") from exc
        try:
            # the permissions an existing output folder was given stay; a new one gets the usual
            mode = os.stat(self.final).st_mode & 0o7777 if self.final.is_dir() else 0o777 & ~_umask()
            os.chmod(self.path, mode)
            (self.path / MARKER).write_bytes(b"")
            self._fd = _lock(self.path)
        except OSError as exc:
            shutil.rmtree(self.path, ignore_errors=True)
            raise TrialbridgeError(f"{shown}: cannot write in {printable(parent)}: {exc.strerror}") from exc

    def _clean_stale(self) -> None:
        """Staging folders of runs killed before they finished (no living process holds
        their lock) are removed; a previous output moved aside is put back if the output is
        missing."""
        parent = self.final.parent
        for kind in (PREVIOUS, STAGING):
            for p in sorted(parent.glob(f".{glob_escape(self.final.name)}{glob_escape(kind)}*")):
                if p.is_symlink() or not p.is_dir():
                    continue
                fd = _lock(p)
                if fd is None:  # a running process writes there
                    continue
                try:
                    if kind == PREVIOUS and not self.final.exists() and read_manifest(p) is not None \
                            and not foreign_files(p):
                        os.rename(p, self.final)
                        self.cleaned += 1
                    elif _remove_ours(p):
                        self.cleaned += 1
                finally:
                    os.close(fd)

    def file(self, name: str) -> Path:
        """Path of file ``name`` in the staging folder (checked: :func:`output_file`)."""
        return output_file(self.path, name)

    def final_path(self, staged: Path) -> Path:
        """Where a file written in the staging folder lies once committed."""
        staged = Path(staged)
        return self.requested / staged.name if staged.parent in (self.path, real_path(self.path)) else staged

    def commit(self) -> None:
        """Manifest last, then the swap; the previous output (ours) is removed."""
        try:
            self._commit()
        except OSError as exc:
            raise TrialbridgeError(f"{printable(self.requested)}: cannot publish the output: {exc.strerror}; "
                                   "the previous output, if any, is untouched") from exc

    def _commit(self) -> None:
        files = {}
        for p in sorted(self.path.iterdir()):
            if p.name == MARKER:
                continue
            if p.is_symlink() or not p.is_file() or FILE_NAME.fullmatch(p.name) is None:
                raise TrialbridgeError(f"{printable(p)}: unexpected entry in the staging folder")
            files[p.name] = {"size": p.stat().st_size, "sha256": _digest(p, sync=True)}
        manifest = json.dumps({"written_by": "trialbridge", "files": files}, indent=1, sort_keys=True) + "\n"
        with atomic_open(self.path / MANIFEST) as fh:
            fh.write(manifest)
            fh.flush()
            os.fsync(fh.fileno())
        (self.path / MARKER).unlink()
        _fsync_dir(self.path)
        if self.final.is_dir():
            foreign = foreign_files(self.final, digests=False)
            if foreign:
                raise TrialbridgeError(f"{printable(self.requested)}: files appeared in the output folder during "
                                       f"the run ({', '.join(printable(n) for n in foreign[:3])}); nothing replaced")
            if _exchange(self.path, self.final):
                old = self.path
            else:
                old = Path(tempfile.mkdtemp(prefix=f".{self.final.name}{PREVIOUS}", dir=self.final.parent))
                os.rename(self.final, old)  # an empty folder is replaced by the rename
                os.rename(self.path, self.final)
            _remove_ours(old)
        else:
            os.rename(self.path, self.final)
        _fsync_dir(self.final.parent)
        self._release()

    def abort(self) -> None:
        """Remove the staging folder: nothing of this run is published."""
        if self.path.is_dir() and (self.path / MARKER).exists():
            shutil.rmtree(self.path, ignore_errors=True)
        self._release()

    def _release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> "OutputStage":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is not None:
            self.abort()


def glob_escape(text: str) -> str:
    return re.sub(r"([*?\[])", r"[\1]", text)
