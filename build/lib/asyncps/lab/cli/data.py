"""``asyncps data download NAME [DIR]``: fetch a data set's standard files into DIR (default ``data/NAME``).

- ``mnist``: the four gzipped IDX files (LeCun et al.), 12 MB, from the
  mirror torchvision uses or, failing it, yann.lecun.com.
- ``fashion_mnist``: its four gzipped IDX files, 31 MB, from Zalando's
  repository or its S3 site.
- ``cifar10``: ``cifar-10-python.tar.gz``, 170 MB, from the University of
  Toronto, unpacked to ``DIR/cifar-10-batches-py/`` (the archive is kept).

Each file's MD5 is the one torchvision checks (the digests published with the
data sets). A file downloads to ``<name>.part`` and takes its name only once
its digest matches, so a file under its own name is complete; one already
there with the right digest is not fetched again. When DIR already holds
what ``workers.load_dataset`` reads, nothing is fetched at all.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import tarfile
import urllib.error
import urllib.request
import zlib
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from tqdm import tqdm

from asyncps.workers.image_files import CIFAR_FOLDER, CIFAR_TEST, CIFAR_TRAIN, IDX_FILES

__all__ = ["Remote", "Source", "SOURCES", "DownloadFailed", "download", "add_data"]

CHUNK = 1 << 20
TIMEOUT = 60.0  # seconds without a byte before a mirror counts as failed


@dataclass(frozen=True)
class Remote:
    """One file: its name in DIR, its MD5, and the URLs to try in order."""

    filename: str
    md5: str
    urls: tuple[str, ...]


@dataclass(frozen=True)
class Source:
    """A data set's files; ``archive`` is the one of them (a .tar.gz) to unpack into DIR."""

    files: tuple[Remote, ...]
    archive: str | None = None


def _idx_source(md5s: dict[str, str], *bases: str) -> Source:
    return Source(tuple(Remote(name, md5, tuple(base + name for base in bases)) for name, md5 in md5s.items()))


SOURCES = {
    "mnist": _idx_source({"train-images-idx3-ubyte.gz": "f68b3c2dcbeaaa9fbdd348bbdeb94873",
                          "train-labels-idx1-ubyte.gz": "d53e105ee54ea40749a09fcbcd1e9432",
                          "t10k-images-idx3-ubyte.gz": "9fb629c4189551a2d022fa330f9573f3",
                          "t10k-labels-idx1-ubyte.gz": "ec29112dd5afa0611ce80d1b7f02629c"},
                         "https://ossci-datasets.s3.amazonaws.com/mnist/", "http://yann.lecun.com/exdb/mnist/"),
    "fashion_mnist": _idx_source({"train-images-idx3-ubyte.gz": "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
                                  "train-labels-idx1-ubyte.gz": "25c81989df183df01b3e8a0aad5dffbe",
                                  "t10k-images-idx3-ubyte.gz": "bef4ecab320f06d8554ea6380940ec79",
                                  "t10k-labels-idx1-ubyte.gz": "bb300cfdad3c16e7a12a480ee83cd310"},
                                 "https://raw.githubusercontent.com/zalandoresearch/fashion-mnist/master/data/fashion/",
                                 "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/"),
    "cifar10": Source((Remote("cifar-10-python.tar.gz", "c58f30108f718f92721af3b95e74349a",
                              ("https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz",)),),
                      archive="cifar-10-python.tar.gz"),
}


class DownloadFailed(Exception):
    """No URL of a file gave it with its digest."""


def missing(name: str, directory: Path) -> list[str]:
    """What ``load_dataset(name, path=directory)`` reads and ``directory`` lacks."""
    if name == "cifar10":
        folder = directory / CIFAR_FOLDER
        return [f"{CIFAR_FOLDER}/{f}" for f in (*CIFAR_TRAIN, CIFAR_TEST) if not (folder / f).is_file()]
    names = [f for pair in IDX_FILES.values() for f in pair]
    return [f"{f}[.gz]" for f in names if not ((directory / f).is_file() or (directory / f"{f}.gz").is_file())]


def md5_of(path: Path) -> str:
    digest = hashlib.md5(usedforsecurity=False)  # a checksum against corruption, as the publishers give it
    with open(path, "rb") as file:
        while chunk := file.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def fetch(remote: Remote, directory: Path, progress: bool) -> str:
    """``directory/remote.filename``, from the first URL that gives it with its MD5; what happened, in words."""
    target = directory / remote.filename
    if target.is_file():
        found = md5_of(target)
        if found != remote.md5:
            raise ValueError(f"Invalid file {os.fspath(target)!r}: its MD5 is {found}, and {remote.filename}'s is "
                             f"{remote.md5} (an interrupted copy, or another file: delete it and run this again)")
        return f"{remote.filename}: already there, MD5 verified"
    part = target.with_name(target.name + ".part")
    failures = []
    for url in remote.urls:
        try:
            found = _copy(url, part, progress)
        except OSError as err:  # URLError, HTTPError and timeouts are OSErrors
            reason = err if isinstance(err, urllib.error.HTTPError) else getattr(err, "reason", err)
            failures.append(f"{url} ({reason})")
            continue
        if found == remote.md5:
            part.replace(target)
            return f"{remote.filename}: {target.stat().st_size / 2**20:.1f} MiB from {url}, MD5 verified"
        failures.append(f"{url} (its MD5 is {found}, expected {remote.md5})")
    part.unlink(missing_ok=True)
    raise DownloadFailed(f"could not fetch {remote.filename}: {'; '.join(failures)}")


def _copy(url: str, part: Path, progress: bool) -> str:
    """Stream ``url`` into ``part`` with a progress bar; the MD5 of what came."""
    digest = hashlib.md5(usedforsecurity=False)
    request = urllib.request.Request(url, headers={"User-Agent": "asyncps"})  # some hosts refuse urllib's default
    with urllib.request.urlopen(request, timeout=TIMEOUT) as response, open(part, "wb") as out:
        size = int(response.headers.get("Content-Length") or 0) or None
        with tqdm(total=size, unit="B", unit_scale=True, unit_divisor=1024, desc=part.name[:-len(".part")],
                  disable=not progress, leave=False) as bar:
            while chunk := response.read(CHUNK):
                out.write(chunk)
                digest.update(chunk)
                bar.update(len(chunk))
    return digest.hexdigest()


def unpack(archive: Path, directory: Path, folder: str) -> None:
    """Unpack the .tar.gz ``archive`` into ``directory``: every member must be a file or directory under ``folder``."""
    try:
        with tarfile.open(archive, "r:gz") as tar:
            members = tar.getmembers()
            outside = [m.name for m in members if not (m.isfile() or m.isdir()) or ".." in PurePosixPath(m.name).parts
                       or PurePosixPath(m.name).parts[:1] != (folder,)]
            if outside:
                raise ValueError(f"Invalid archive {os.fspath(archive)!r}: {outside[0]!r} is not a file or directory "
                                 f"under {folder}/ (refusing to unpack it)")
            safe = {"filter": "data"} if hasattr(tarfile, "data_filter") else {}  # Python >= 3.11.4
            tar.extractall(directory, members=members, **safe)
    except (tarfile.TarError, EOFError, zlib.error) as err:
        raise ValueError(f"Invalid archive {os.fspath(archive)!r}: not a complete .tar.gz ({err}; delete it and "
                         f"run this again)") from None


def download(name: str, directory: str | os.PathLike, *, progress: bool = True,
             sources: dict[str, Source] = SOURCES) -> list[str]:
    """Fetch the data set ``name`` into ``directory`` unless it is there already; what was done, a line each."""
    source, directory = sources[name], Path(directory)
    if directory.is_dir() and not missing(name, directory):
        return [f"{name}: already in {os.fspath(directory)}; nothing downloaded (delete the files to fetch them "
                f"again)"]
    directory.mkdir(parents=True, exist_ok=True)
    done = [fetch(remote, directory, progress) for remote in source.files]
    if source.archive is not None:
        archive = directory / source.archive
        unpack(archive, directory, CIFAR_FOLDER)
        lacking = missing(name, directory)
        if lacking:
            raise ValueError(f"Invalid archive {os.fspath(archive)!r}: it unpacked without {', '.join(lacking)}")
        done.append(f"{source.archive}: unpacked to {os.fspath(directory / CIFAR_FOLDER)}/ (the archive can go)")
    return done


# -- the command -------------------------------------------------------------------
def add_data(commands) -> None:
    command = commands.add_parser("data", help="fetch the standard files of a data set",
                                  description="Data sets read from their standard files: get them here.")
    actions = command.add_subparsers(dest="action", required=True, metavar="ACTION")
    fetch_command = actions.add_parser(
        "download", help="download a data set's files, checking each one's MD5",
        description="Download the standard files of NAME into DIR and check each one's MD5 (cifar10: then unpack "
                    "its archive). Nothing is fetched when DIR already holds them. The experiment configs "
                    "experiments/NAME.toml read data/NAME, the default DIR.",
        epilog="e.g. asyncps data download mnist data/mnist")
    fetch_command.add_argument("name", choices=sorted(SOURCES), metavar="NAME",
                               help=f"one of {', '.join(sorted(SOURCES))}")
    fetch_command.add_argument("directory", nargs="?", metavar="DIR", help="where the files go (default: data/NAME)")
    fetch_command.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bar")
    fetch_command.set_defaults(run=run_download)


def run_download(args: argparse.Namespace) -> int:
    directory = args.directory or os.path.join("data", args.name)
    try:
        done = download(args.name, directory, progress=args.progress)
    except DownloadFailed as err:
        print(f"asyncps data: error: {err}", file=sys.stderr)
        return 1
    print(*done, sep="\n")
    print(f"read it with: data.options = {{path = {json.dumps(os.fspath(directory))}}} "
          f"(as experiments/{args.name}.toml does for data/{args.name})")
    return 0
