"""The released GHNs by name: fetched once into a cache folder, verified, then loaded like any checkpoint.

The five GHNs released with the paper (Knyazev et al., NeurIPS 2021, "Available GHNs" of facebookresearch/ppuda)
live in that repository's ``checkpoints/`` folder. :func:`resolve_checkpoint` turns what a user wrote into a
checkpoint file:

- an existing file: itself;
- one of our run directories: its ``ghn.safetensors``;
- a name of :data:`RELEASES` (``ghn2-cifar10`` ...): the cached copy, downloaded first when missing.

Downloads come from the raw file URLs of ppuda at the pinned commit :data:`COMMIT` (``$GHN_PRETRAINED_URL``
replaces the base URL, for a mirror), go to a temporary file in the cache folder, and are moved into place only
after their Git blob id (SHA-1 of ``b"blob <size>\\0"`` + content, :func:`git_blob_id`) matched the registry; a
file that does not match is deleted and reported, so the cache never holds a half or foreign file. A cached file is
verified again before every use and downloaded again when it fails. The cache folder is ``$GHN_CACHE``, else
``$XDG_CACHE_HOME/ghn-archspace``, else ``~/.cache/ghn-archspace`` (:func:`cache_dir`).

Test and mirror hooks, the only two: the base URL (``$GHN_PRETRAINED_URL``) and the registry dict
:data:`RELEASES` (add an entry, e.g. with ``monkeypatch.setitem``).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import sys
import urllib.error
import urllib.request
from dataclasses import dataclass

from archspace.errors import UsageError

#: facebookresearch/ppuda commit whose ``checkpoints/`` files are the released GHNs.
COMMIT = "4673a42507a9dcd0a5ae04e74599e8c92af689b9"
#: Where the released files are fetched from (a file name is appended).
BASE_URL = f"https://raw.githubusercontent.com/facebookresearch/ppuda/{COMMIT}/checkpoints/"
#: Environment variable that replaces :data:`BASE_URL` (a mirror, or the tests' local server).
URL_ENV = "GHN_PRETRAINED_URL"
#: Environment variable that sets the cache folder.
CACHE_ENV = "GHN_CACHE"
#: Seconds without data after which a download is given up.
TIMEOUT_S = 60.0
#: Name of the trained GHN inside a ``ghn-train`` run directory.
RUN_DIR_FILE = "ghn.safetensors"


@dataclass(frozen=True)
class Release:
    """One released GHN checkpoint.

    Args:
        file: its file name in ppuda's ``checkpoints/`` folder (and in the cache).
        blob_id: Git blob id of the file at :data:`COMMIT` (40 hex digits).
        about: one line for listings.
    """

    file: str
    blob_id: str
    about: str


#: Released GHNs by name (the registry; Knyazev et al., NeurIPS 2021, ppuda's README "Available GHNs").
RELEASES: dict[str, Release] = {
    "ghn2-cifar10": Release("ghn2_cifar10.pt", "4f290e0fad1b73066eeabb50be52e0c377d0b15b", "GHN-2, CIFAR-10"),
    "ghn2-imagenet": Release("ghn2_imagenet.pt", "7b5d6733e9fdf0069bc6186cad3a0b1b54fda68d", "GHN-2, ImageNet"),
    "ghn1-cifar10": Release("ghn1_cifar10.pt", "0c97a283aefc0445dd357c08f1b36698149b8013", "GHN-1, CIFAR-10"),
    "ghn1-imagenet": Release("ghn1_imagenet.pt", "985ebeb350c4ae79e0553d88c07d986fa69c227b", "GHN-1, ImageNet"),
    "mlp-cifar10": Release("mlp_cifar10.pt", "3a987c98b437fd2dfc603668a846f2b632ed28a3",
                           "MLP baseline (no message passing), CIFAR-10"),
}

#: ``--ckpt`` help of every command that loads a GHN.
CKPT_HELP = ("GHN checkpoint: a released GHN by name (" + ", ".join(RELEASES) + "; downloaded once into "
             f"${CACHE_ENV} or ~/.cache/ghn-archspace), a file (ours .safetensors or a reference .pt), or a "
             "ghn-train run directory")


class DownloadError(UsageError):
    """A released GHN could not be fetched or did not verify; the message says where to put the file by hand.

    Args:
        message: what went wrong.
        url: where it was fetched from.
        path: where the verified file belongs (the cache path).
    """

    def __init__(self, message: str, url: str, path: str) -> None:
        self.url, self.path = url, path
        super().__init__(message)


def cache_dir() -> str:
    """The folder released GHNs are cached in: ``$GHN_CACHE``, else ``$XDG_CACHE_HOME/ghn-archspace``, else
    ``~/.cache/ghn-archspace`` (created when a file is downloaded, not here).

    Returns:
        An absolute path.
    """
    folder = os.environ.get(CACHE_ENV)
    if not folder:
        folder = os.path.join(os.environ.get("XDG_CACHE_HOME") or os.path.join("~", ".cache"), "ghn-archspace")
    return os.path.abspath(os.path.expanduser(folder))


def release_url(name: str) -> str:
    """The URL a released GHN is fetched from (:data:`BASE_URL`, or ``$GHN_PRETRAINED_URL``, + its file name)."""
    base = os.environ.get(URL_ENV) or BASE_URL
    return base.rstrip("/") + "/" + RELEASES[name].file


def git_blob_id(path: str | os.PathLike) -> str:
    """The Git blob id of a file: SHA-1 of ``b"blob <size>\\0"`` followed by its bytes (what ``git hash-object``
    prints).

    Args:
        path: the file.

    Returns:
        40 lower-case hex digits.
    """
    h = hashlib.sha1(b"blob %d\0" % os.path.getsize(path))
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _by_hand(name: str, url: str, dest: str) -> str:
    """The end of every download error: how to put the file in place without this code."""
    return (f"download {url} by hand and put it at {dest} (it is checked against Git blob id "
            f"{RELEASES[name].blob_id}), or pass --ckpt / ckpt= the path of a copy")


def _download(name: str, url: str, dest: str, progress: bool) -> None:
    """Fetch ``url`` into a temporary file beside ``dest`` (:func:`archspace.files.atomic_path`), which replaces
    ``dest`` only when the download is complete and its blob id matches the registry; on every failure (and on
    Ctrl-C) the temporary file is removed."""
    from archspace.files import atomic_path

    try:
        with atomic_path(dest) as tmp:
            got = _fetch_into(tmp, name, url, dest, progress)
            blob = git_blob_id(tmp)
            if blob != RELEASES[name].blob_id:
                raise DownloadError(f"download of {name} from {url} does not match the released file (Git blob id "
                                    f"{blob} for {got} bytes, expected {RELEASES[name].blob_id}) and was deleted; "
                                    "try again, or " + _by_hand(name, url, dest), url, dest)
    except DownloadError:
        raise
    except OSError as e:  # the folder cannot be created or written in
        folder = os.path.dirname(dest)
        raise DownloadError(f"cannot write in the GHN cache folder {folder} ({e.strerror or e}); set {CACHE_ENV} "
                            "to a writable folder", url, dest) from e


def _fetch_into(tmp: str, name: str, url: str, dest: str, progress: bool) -> int:
    """Write the body at ``url`` to ``tmp`` with a progress bar; returns its size in bytes.

    Raises:
        DownloadError: an HTTP error, no connection, a transfer that broke off, or fewer bytes than announced.
    """
    from tqdm.auto import tqdm

    got, declared, connected = 0, None, False
    with open(tmp, "wb") as f:
        try:
            with urllib.request.urlopen(url, timeout=TIMEOUT_S) as response:
                connected = True
                declared = response.length  # Content-Length, None when the server does not send one
                print(f"downloading {name} from {url} to {dest}", file=sys.stderr)
                with tqdm(total=declared, unit="B", unit_scale=True, unit_divisor=1024, desc=name,
                          disable=not progress, file=sys.stderr, leave=False) as bar:
                    for chunk in iter(lambda: response.read1(1 << 16), b""):
                        f.write(chunk)
                        got += len(chunk)
                        bar.update(len(chunk))
        except urllib.error.HTTPError as e:
            raise DownloadError(f"cannot download {name}: {url} answered HTTP {e.code} {e.reason}; "
                                + _by_hand(name, url, dest), url, dest) from e
        except (urllib.error.URLError, OSError) as e:  # no route, refused, DNS, timeout, reset mid-transfer
            reason = getattr(e, "reason", None) or e
            if connected:
                raise DownloadError(f"download of {name} from {url} broke off after {got} bytes ({reason}); "
                                    "nothing was kept; try again, or " + _by_hand(name, url, dest), url, dest) from e
            raise DownloadError(f"cannot download {name} (no connection to {url}: {reason}); on an offline "
                                "machine " + _by_hand(name, url, dest), url, dest) from e
    # http.client returns a short body without an error when the connection closes early: count the bytes
    if declared is not None and got != declared:
        raise DownloadError(f"download of {name} from {url} was truncated ({got} of {declared} bytes) and was "
                            "deleted; try again, or " + _by_hand(name, url, dest), url, dest)
    return got


def fetch(name: str, progress: bool = True) -> str:
    """The cached, verified file of a released GHN, downloaded first when it is missing or fails verification.

    Args:
        name: a key of :data:`RELEASES`.
        progress: show a tqdm progress bar (on stderr) while downloading.

    Returns:
        The path of the file in :func:`cache_dir`.

    Raises:
        UsageError: ``name`` is not a released GHN (with a "did you mean").
        DownloadError: no connection, an HTTP error, a truncated download or one whose Git blob id does not match
            (deleted); the message names the URL and the exact cache path to put the file at by hand.
    """
    if name not in RELEASES:
        from archspace.errors import suggest

        raise UsageError(f"unknown released GHN {name!r}" + suggest(name, RELEASES))
    dest = os.path.join(cache_dir(), RELEASES[name].file)
    url = release_url(name)
    if os.path.isfile(dest):
        blob = git_blob_id(dest)
        if blob == RELEASES[name].blob_id:
            return dest
        print(f"cached {dest} does not match the released {name} (Git blob id {blob}, expected "
              f"{RELEASES[name].blob_id}); deleting it and downloading it again", file=sys.stderr)
        with contextlib.suppress(FileNotFoundError):  # another process may have replaced it already
            os.remove(dest)
    _download(name, url, dest, progress)
    return dest


def resolve_checkpoint(name_or_path: str | os.PathLike, progress: bool = True) -> str:
    """The checkpoint file meant by a released GHN's name, a file path, or a ``ghn-train`` run directory.

    A path that exists wins over a name (a file called ``ghn2-cifar10`` in the working directory is used as is).

    Args:
        name_or_path: ``"ghn2-cifar10"`` (see :data:`RELEASES`), a checkpoint file, or a run directory holding
            ``ghn.safetensors``; ``~`` is expanded.
        progress: show a progress bar while downloading.

    Returns:
        A file path for :func:`ghn.checkpoint.load_checkpoint`. A missing path or a directory without
        ``ghn.safetensors`` is returned unchanged, so that the loader reports it in its usual words.

    Raises:
        UsageError: a bare word that is neither a file nor a released GHN (with a "did you mean"), or neither a
            string nor a path.
        ghn.checkpoint.CheckpointError: a missing file whose name is close to a released GHN's (with a "did you
            mean": ``ghn2_cifar10.pt`` -> ``ghn2-cifar10``).
        DownloadError: as :func:`fetch`.
    """
    if not isinstance(name_or_path, (str, os.PathLike)):
        raise UsageError(f"a GHN checkpoint is a released GHN's name or a path, got {name_or_path!r}")
    raw = os.fspath(name_or_path)
    path = os.path.expanduser(raw)
    if os.path.isdir(path) and os.path.isfile(os.path.join(path, RUN_DIR_FILE)):
        return os.path.join(path, RUN_DIR_FILE)
    if os.path.exists(path):
        return path
    if raw in RELEASES:
        return fetch(raw, progress=progress)
    from archspace.errors import suggest

    if os.sep not in raw and "/" not in raw and "." not in raw:  # a bare word: meant as a name
        raise UsageError(f"{raw!r} is neither a checkpoint file nor a released GHN" + suggest(raw, RELEASES))
    hint = suggest(os.path.basename(path), RELEASES)
    if hint.startswith("; did you mean"):  # e.g. ghn2_cifar10.pt, the file name of a release that is not here
        from .checkpoint import CheckpointError

        raise CheckpointError(path, "checkpoint file not found", "nor a released GHN" + hint.replace(";", ":", 1))
    return path


def checkpoint_sha256(name_or_path: str | os.PathLike) -> str:
    """The SHA-256 of the checkpoint file that ``name_or_path`` means (:func:`resolve_checkpoint`: a released GHN's
    name, a file, or a ``ghn-train`` run directory), so that results cached under it are tied to the GHN itself, not
    to a path that a later run may overwrite.

    Raises:
        UsageError, CheckpointError, DownloadError: as :func:`resolve_checkpoint`; CheckpointError for a path that
            resolves to no file.
    """
    from archspace.files import file_sha256

    path = resolve_checkpoint(name_or_path, progress=False)
    if not os.path.isfile(path):
        from .checkpoint import CheckpointError

        raise CheckpointError(path, "checkpoint file not found")
    return file_sha256(path)
