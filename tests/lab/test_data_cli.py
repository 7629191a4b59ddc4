"""``asyncps data download``: its arguments, its "already there" path, and fetching, MD5
checking and unpacking from file:// URLs to files written under tmp_path. No test touches
the network: ``urlopen`` is made to fail wherever nothing should be fetched."""

from __future__ import annotations

import hashlib
import io
import tarfile
import urllib.request

import pytest

from asyncps.lab.cli.data import DownloadFailed, Remote, Source, SOURCES, download, unpack
from asyncps.lab.cli.main import main
from asyncps.workers import DATASETS, load_dataset
from asyncps.workers.image_files import CIFAR_FOLDER, IDX_FILES


@pytest.fixture
def offline(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("this test must not fetch anything")

    monkeypatch.setattr(urllib.request, "urlopen", refuse)


def md5(path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


def cifar_archive(tmp_path, image_files, name: str = "cifar.tar.gz"):
    """A small cifar-10-python.tar.gz: cifar-10-batches-py/ with the five batches, test_batch and batches.meta."""
    stage = tmp_path / "stage"
    image_files.cifar_dataset(stage, per_batch=20, n_test=20)
    archive = tmp_path / name
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(stage / CIFAR_FOLDER, arcname=CIFAR_FOLDER)
    return archive


def test_the_sources_are_the_files_the_readers_read():
    assert set(SOURCES) == {"mnist", "fashion_mnist", "cifar10"} and set(SOURCES) <= set(DATASETS)
    for name in ("mnist", "fashion_mnist"):
        assert [r.filename for r in SOURCES[name].files] == [f"{f}.gz" for pair in IDX_FILES.values() for f in pair]
        assert all(r.urls[0].startswith("https://") for r in SOURCES[name].files)
    assert SOURCES["cifar10"].archive == SOURCES["cifar10"].files[0].filename == "cifar-10-python.tar.gz"
    digests = [r.md5 for source in SOURCES.values() for r in source.files]
    assert len(set(digests)) == 9 and all(len(d) == 32 and int(d, 16) >= 0 for d in digests)


@pytest.mark.parametrize("name", ["mnist", "fashion_mnist", "cifar10"])
def test_a_directory_that_holds_the_data_set_fetches_nothing(tmp_path, image_files, offline, capsys, name):
    directory = tmp_path / name
    if name == "cifar10":
        image_files.cifar_dataset(directory, per_batch=10, n_test=10)
    else:
        image_files.idx_dataset(directory, n_train=20, n_test=10, gz=name == "mnist")
    assert main(["data", "download", name, str(directory)]) == 0
    printed = capsys.readouterr().out
    assert printed.startswith(f"{name}: already in {directory}; nothing downloaded")
    assert f'data.options = {{path = "{directory}"}}' in printed


def test_dir_defaults_to_data_slash_name(tmp_path, image_files, offline, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    image_files.idx_dataset(tmp_path / "data" / "mnist", n_train=20, n_test=10)
    assert main(["data", "download", "mnist", "--no-progress"]) == 0
    assert capsys.readouterr().out.startswith("mnist: already in data/mnist; nothing downloaded")


@pytest.mark.parametrize("argv, message", [
    (["data"], "the following arguments are required: ACTION"),
    (["data", "download"], "the following arguments are required: NAME"),
    (["data", "download", "mnits"], "argument NAME: invalid choice: 'mnits' (choose from 'cifar10', "
                                    "'fashion_mnist', 'mnist')"),
    (["data", "fetch", "mnist"], "argument ACTION: invalid choice: 'fetch' (choose from 'download')"),
    (["data", "download", "mnist", "a", "b"], "unrecognized arguments: b"),
])
def test_usage_errors_name_what_is_allowed(argv, message, offline, capsys):
    with pytest.raises(SystemExit) as exit_:
        main(argv)
    assert exit_.value.code == 2
    assert message in capsys.readouterr().err


def test_cifar10_is_fetched_from_the_first_url_that_serves_it_checked_and_unpacked(tmp_path, image_files):
    archive = cifar_archive(tmp_path, image_files)
    missing = (tmp_path / "nowhere.tar.gz").as_uri()
    sources = {"cifar10": Source((Remote("cifar-10-python.tar.gz", md5(archive), (missing, archive.as_uri())),),
                                 archive="cifar-10-python.tar.gz")}
    target = tmp_path / "data" / "cifar10"
    done = download("cifar10", target, progress=True, sources=sources)
    assert done[0].startswith("cifar-10-python.tar.gz: ") and done[0].endswith(f"from {archive.as_uri()}, MD5 verified")
    assert done[1] == f"cifar-10-python.tar.gz: unpacked to {target / CIFAR_FOLDER}/ (the archive can go)"
    assert sorted(p.name for p in target.iterdir()) == [CIFAR_FOLDER, "cifar-10-python.tar.gz"]
    loaded = load_dataset("cifar10", path=str(target))
    assert [len(loaded.train), len(loaded.val), len(loaded.test)] == [90, 10, 20]
    assert download("cifar10", target, sources=sources)[0].startswith("cifar10: already in")


def test_an_archive_already_there_is_checked_and_unpacked_without_fetching(tmp_path, image_files, offline):
    target = tmp_path / "cifar10"
    target.mkdir()
    archive = cifar_archive(tmp_path, image_files)
    (target / "cifar-10-python.tar.gz").write_bytes(archive.read_bytes())
    sources = {"cifar10": Source((Remote("cifar-10-python.tar.gz", md5(archive), ("https://example.invalid/x",)),),
                                 archive="cifar-10-python.tar.gz")}
    assert download("cifar10", target, sources=sources)[0] == "cifar-10-python.tar.gz: already there, MD5 verified"
    assert (target / CIFAR_FOLDER / "test_batch").is_file()


def idx_sources(tmp_path, image_files) -> dict[str, Source]:
    """An MNIST source whose four .gz files are under tmp_path/served."""
    served = tmp_path / "served"
    image_files.idx_dataset(served, n_train=30, n_test=10, gz=True)
    return {"mnist": Source(tuple(Remote(p.name, md5(p), (p.as_uri(),)) for p in sorted(served.iterdir())))}


def test_idx_files_are_fetched_but_one_there_with_its_digest_is_kept(tmp_path, image_files):
    sources = idx_sources(tmp_path, image_files)
    target = tmp_path / "mnist"
    target.mkdir()
    kept = target / "t10k-labels-idx1-ubyte.gz"
    kept.write_bytes((tmp_path / "served" / kept.name).read_bytes())
    done = download("mnist", target, progress=False, sources=sources)
    assert f"{kept.name}: already there, MD5 verified" in done and len(done) == 4
    assert sorted(p.name for p in target.iterdir()) == sorted(p.name for p in (tmp_path / "served").iterdir())
    assert len(load_dataset("mnist", path=str(target)).test) == 10


def test_a_file_there_with_another_digest_is_refused(tmp_path, image_files):
    sources = idx_sources(tmp_path, image_files)
    target = tmp_path / "mnist"
    target.mkdir()
    (target / "train-images-idx3-ubyte.gz").write_bytes(b"half a download")
    expected = md5(tmp_path / "served" / "train-images-idx3-ubyte.gz")
    with pytest.raises(ValueError) as caught:
        download("mnist", target, progress=False, sources=sources)
    found = hashlib.md5(b"half a download").hexdigest()
    assert str(caught.value) == (
        f"Invalid file '{target / 'train-images-idx3-ubyte.gz'}': its MD5 is {found}, and "
        f"train-images-idx3-ubyte.gz's is {expected} (an interrupted copy, or another file: delete it and run this "
        f"again)")


def test_a_wrong_digest_from_every_url_fails_and_leaves_no_file(tmp_path, image_files, capsys, monkeypatch):
    archive = cifar_archive(tmp_path, image_files)
    monkeypatch.setitem(SOURCES, "cifar10", Source((Remote("cifar-10-python.tar.gz", "0" * 32, (archive.as_uri(),)),),
                                                   archive="cifar-10-python.tar.gz"))
    target = tmp_path / "cifar10"
    assert main(["data", "download", "cifar10", str(target), "--no-progress"]) == 1
    assert capsys.readouterr().err == (f"asyncps data: error: could not fetch cifar-10-python.tar.gz: "
                                       f"{archive.as_uri()} (its MD5 is {md5(archive)}, expected {'0' * 32})\n")
    assert list(target.iterdir()) == []


def test_an_unreachable_url_is_named_with_its_reason(tmp_path):
    sources = {"mnist": Source((Remote("train-images-idx3-ubyte.gz", "0" * 32, ((tmp_path / "gone").as_uri(),)),))}
    with pytest.raises(DownloadFailed, match=r"could not fetch train-images-idx3-ubyte.gz: file://.*/gone \(.*No such "
                                             r"file or directory"):
        download("mnist", tmp_path / "mnist", progress=False, sources=sources)


def test_unpack_refuses_members_outside_the_data_set_folder(tmp_path):
    archive = tmp_path / "evil.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        for name in (f"{CIFAR_FOLDER}/data_batch_1", "../escaped"):
            info = tarfile.TarInfo(name)
            info.size = 3
            tar.addfile(info, io.BytesIO(b"abc"))
    target = tmp_path / "target"
    target.mkdir()
    with pytest.raises(ValueError) as caught:
        unpack(archive, target, CIFAR_FOLDER)
    assert str(caught.value) == (f"Invalid archive '{archive}': '../escaped' is not a file or directory under "
                                 f"{CIFAR_FOLDER}/ (refusing to unpack it)")
    assert list(target.iterdir()) == [] and not (tmp_path / "escaped").exists()


def test_an_archive_without_every_batch_is_named(tmp_path, image_files):
    archive = cifar_archive(tmp_path, image_files)
    with tarfile.open(archive, "w:gz") as tar:  # the folder and one batch only
        tar.add(tmp_path / "stage" / CIFAR_FOLDER / "data_batch_1", arcname=f"{CIFAR_FOLDER}/data_batch_1")
    sources = {"cifar10": Source((Remote("cifar-10-python.tar.gz", md5(archive), (archive.as_uri(),)),),
                                 archive="cifar-10-python.tar.gz")}
    target = tmp_path / "cifar10"
    with pytest.raises(ValueError) as caught:
        download("cifar10", target, progress=False, sources=sources)
    assert str(caught.value) == (f"Invalid archive '{target / 'cifar-10-python.tar.gz'}': it unpacked without "
                                 + ", ".join(f"{CIFAR_FOLDER}/{f}" for f in ("data_batch_2", "data_batch_3",
                                                                            "data_batch_4", "data_batch_5",
                                                                            "test_batch")))


def test_unpack_names_a_truncated_archive(tmp_path, image_files):
    archive = cifar_archive(tmp_path, image_files)
    archive.write_bytes(archive.read_bytes()[:2000])
    with pytest.raises(ValueError, match=rf"Invalid archive '{archive}': not a complete \.tar\.gz \(.*; delete it "
                                         rf"and run this again\)"):
        unpack(archive, tmp_path, CIFAR_FOLDER)
