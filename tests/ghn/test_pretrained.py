"""``GHN.from_pretrained`` and :mod:`ghn.pretrained`: released GHNs fetched over HTTP (a local server on 127.0.0.1
serving real small checkpoints), verified by Git blob id, cached atomically; local files and run directories."""

from __future__ import annotations

import io
import os

import pytest
import torch

from archspace.errors import UsageError
from ghn import GHN, CheckpointError, DownloadError, pretrained
from ghn.cli import build_parser, main

from .loopback import closed_port_url, loopback_release, register
from .test_cli import TINY, error_line

NAME, FILE = "test-ghn", "test_ghn.pt"


def small_ghn(seed: int = 0) -> GHN:
    torch.manual_seed(seed)
    return GHN(max_shape=(16, 16, 3, 3), num_classes=10, hidden_dim=8)


def ours_bytes(tmp_path, seed: int = 0) -> tuple[bytes, GHN]:
    """A real small GHN saved with ``GHN.save`` (safetensors), as bytes."""
    ghn = small_ghn(seed)
    path = tmp_path / f"src{seed}.safetensors"
    ghn.save(str(path))
    return path.read_bytes(), ghn


def reference_bytes(seed: int = 1) -> tuple[bytes, GHN]:
    """A real small GHN in the reference's ``torch.save`` format (``state_dict`` + ``config`` with ``hid``)."""
    ghn = small_ghn(seed)
    buf = io.BytesIO()
    torch.save({"state_dict": ghn.state_dict(), "config": {"max_shape": (16, 16, 3, 3), "num_classes": 10,
                                                          "hid": 8}}, buf)
    return buf.getvalue(), ghn


def assert_same_weights(a: GHN, b: GHN) -> None:
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for k in sa:
        assert torch.equal(sa[k], sb[k]), k


def files_in(folder) -> list[str]:
    """Every file in ``folder``, hidden temporary files included."""
    return sorted(os.listdir(folder)) if os.path.isdir(folder) else []


@pytest.fixture
def cache(tmp_path):
    return tmp_path / "cache"


@pytest.fixture
def server(monkeypatch, cache):
    with loopback_release(monkeypatch, cache) as srv:
        yield srv


# ---- the registry and the hash ----------------------------------------------------------------------------------


def test_git_blob_id_is_what_git_hash_object_prints(tmp_path):
    empty, hello = tmp_path / "empty", tmp_path / "hello"
    empty.write_bytes(b"")
    hello.write_bytes(b"hello\n")
    assert pretrained.git_blob_id(empty) == "e69de29bb2d1d6434b8b29ae775ad8c2e48c5391"
    assert pretrained.git_blob_id(hello) == "ce013625030ba8dba906f756967f9e9ca394464a"


def test_the_registry_is_the_five_released_files_at_the_pinned_commit(monkeypatch):
    monkeypatch.delenv(pretrained.URL_ENV, raising=False)
    assert list(pretrained.RELEASES) == ["ghn2-cifar10", "ghn2-imagenet", "ghn1-cifar10", "ghn1-imagenet",
                                         "mlp-cifar10"]
    for name, release in pretrained.RELEASES.items():
        assert release.file == name.replace("-", "_") + ".pt"
        assert pretrained.release_url(name) == ("https://raw.githubusercontent.com/facebookresearch/ppuda/"
                                                "4673a42507a9dcd0a5ae04e74599e8c92af689b9/checkpoints/" + release.file)
    assert pretrained.RELEASES["ghn2-cifar10"].blob_id == "4f290e0fad1b73066eeabb50be52e0c377d0b15b"
    assert len({r.blob_id for r in pretrained.RELEASES.values()}) == 5


def test_cache_folder_follows_GHN_CACHE_then_XDG_then_home(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.delenv(pretrained.CACHE_ENV, raising=False)
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    assert pretrained.cache_dir() == str(tmp_path / "home" / ".cache" / "ghn-archspace")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert pretrained.cache_dir() == str(tmp_path / "xdg" / "ghn-archspace")
    monkeypatch.setenv(pretrained.CACHE_ENV, str(tmp_path / "mine"))
    assert pretrained.cache_dir() == str(tmp_path / "mine")


# ---- downloads ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["ours", "reference"])
def test_a_release_is_downloaded_verified_cached_and_loaded_once(fmt, server, cache, tmp_path, monkeypatch, capsys):
    data, expected = ours_bytes(tmp_path) if fmt == "ours" else reference_bytes()
    server.serve(FILE, data)
    register(monkeypatch, NAME, FILE, data)
    ghn = GHN.from_pretrained(NAME)
    assert_same_weights(ghn, expected)
    assert not ghn.training and ghn.config == expected.config
    assert (cache / FILE).read_bytes() == data and files_in(cache) == [FILE]  # no temporary file left
    assert f"downloading {NAME} from {server.base_url}{FILE} to {cache / FILE}" in capsys.readouterr().err
    assert_same_weights(GHN.from_pretrained(NAME), expected)
    assert server.requests == ["/ppuda/checkpoints/" + FILE]  # the second call used the cache


def test_a_corrupted_download_is_deleted_and_reported(server, cache, tmp_path, monkeypatch):
    data, _ = ours_bytes(tmp_path)
    bad = bytearray(data)
    bad[-5] ^= 0xFF  # one flipped byte in the weights
    server.serve(FILE, bytes(bad))
    register(monkeypatch, NAME, FILE, data)
    with pytest.raises(DownloadError, match="does not match the released file") as e:
        GHN.from_pretrained(NAME, progress=False)
    assert "was deleted" in str(e.value) and str(cache / FILE) in str(e.value)
    assert files_in(cache) == []


@pytest.mark.parametrize("how", ["declared-longer", "shorter-file"])
def test_a_truncated_download_is_deleted_and_reported(how, server, cache, tmp_path, monkeypatch):
    data, _ = ours_bytes(tmp_path)
    if how == "declared-longer":  # the connection closes before Content-Length bytes arrived
        server.serve(FILE, data[:1000], declared=len(data))
        message = f"was truncated (1000 of {len(data)} bytes)"
    else:  # a complete response of a shorter file
        server.serve(FILE, data[:1000])
        message = "does not match the released file"
    register(monkeypatch, NAME, FILE, data)
    with pytest.raises(DownloadError, match=message.replace("(", r"\(").replace(")", r"\)")) as e:
        GHN.from_pretrained(NAME, progress=False)
    assert str(cache / FILE) in str(e.value)
    assert files_in(cache) == []


def test_a_download_that_stalls_midway_leaves_no_half_file(server, cache, tmp_path, monkeypatch):
    data, _ = ours_bytes(tmp_path)
    server.serve(FILE, data, stall=True)
    register(monkeypatch, NAME, FILE, data)
    monkeypatch.setattr(pretrained, "TIMEOUT_S", 0.5)
    with pytest.raises(DownloadError, match="broke off after .* bytes .*timed out.*nothing was kept") as e:
        GHN.from_pretrained(NAME, progress=False)
    assert str(cache / FILE) in str(e.value)
    assert files_in(cache) == []


def test_http_404_is_one_clear_error(server, cache, monkeypatch):
    register(monkeypatch, NAME, FILE, b"never served")
    with pytest.raises(DownloadError, match="answered HTTP 404 Not Found") as e:
        GHN.from_pretrained(NAME)
    assert f"download {server.base_url}{FILE} by hand and put it at {cache / FILE}" in str(e.value)
    assert files_in(cache) == []


def test_offline_says_where_to_put_the_file_and_a_file_put_there_is_used(cache, tmp_path, monkeypatch):
    data, expected = ours_bytes(tmp_path)
    register(monkeypatch, NAME, FILE, data)
    url = closed_port_url()
    monkeypatch.setenv(pretrained.URL_ENV, url)
    monkeypatch.setenv(pretrained.CACHE_ENV, str(cache))
    with pytest.raises(DownloadError, match="no connection to") as e:
        GHN.from_pretrained(NAME)
    assert e.value.url == url + FILE and e.value.path == str(cache / FILE)
    assert f"put it at {cache / FILE}" in str(e.value) and isinstance(e.value, UsageError)
    assert files_in(cache) == []
    with open(e.value.path, "wb") as f:  # as the message says, by hand
        f.write(data)
    assert_same_weights(GHN.from_pretrained(NAME), expected)


def test_a_cached_file_that_fails_verification_is_fetched_again(server, cache, tmp_path, monkeypatch, capsys):
    data, expected = ours_bytes(tmp_path)
    server.serve(FILE, data)
    register(monkeypatch, NAME, FILE, data)
    cache.mkdir()
    (cache / FILE).write_bytes(data[:-10])  # e.g. a copy put there by hand that was cut short
    assert_same_weights(GHN.from_pretrained(NAME), expected)
    assert "does not match the released" in capsys.readouterr().err
    assert len(server.requests) == 1 and (cache / FILE).read_bytes() == data


def test_an_unwritable_cache_is_one_clear_error(server, tmp_path, monkeypatch):
    data, _ = ours_bytes(tmp_path)
    server.serve(FILE, data)
    register(monkeypatch, NAME, FILE, data)
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    monkeypatch.setenv(pretrained.CACHE_ENV, str(blocker / "cache"))  # a folder below a file cannot exist
    with pytest.raises(DownloadError, match=f"cannot write in the GHN cache folder .*set {pretrained.CACHE_ENV}"):
        GHN.from_pretrained(NAME)
    assert server.requests == []


# ---- names, files and run directories ----------------------------------------------------------------------------


def test_a_file_a_run_directory_and_home_relative_paths_load_without_any_request(server, tmp_path, monkeypatch):
    ghn = small_ghn(3)
    run = tmp_path / "home" / "runs" / "r1"
    ghn.save(str(run / "ghn.safetensors"))
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    for spec in (run / "ghn.safetensors", str(run), "~/runs/r1", "~/runs/r1/ghn.safetensors"):
        assert_same_weights(GHN.from_pretrained(spec), ghn)
    assert server.requests == []


def test_a_value_that_is_neither_a_name_nor_a_path():
    with pytest.raises(UsageError, match="a GHN checkpoint is a released GHN's name or a path, got 123"):
        GHN.from_pretrained(123)


def test_a_directory_without_a_ghn_is_the_loaders_error(tmp_path):
    with pytest.raises(CheckpointError, match="checkpoint is a directory, not a file"):
        GHN.from_pretrained(str(tmp_path))


@pytest.mark.parametrize("spec, error, message", [
    ("ghn2-cifar", UsageError, "'ghn2-cifar' is neither a checkpoint file nor a released GHN; did you mean "
                               "ghn2-cifar10"),
    ("GHN2-CIFAR10", UsageError, "did you mean ghn2-cifar10"),
    ("resnet", UsageError, "; choose one of ghn1-cifar10, ghn1-imagenet, ghn2-cifar10, ghn2-imagenet, mlp-cifar10"),
    ("ghn2_cifar10.pt", CheckpointError, "checkpoint file not found: ghn2_cifar10.pt (nor a released GHN: did you "
                                         "mean ghn2-cifar10"),
    ("missing/ghn.safetensors", CheckpointError, "checkpoint file not found: missing/ghn.safetensors"),
])
def test_unknown_names_and_missing_files(spec, error, message, server, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(error) as e:
        GHN.from_pretrained(spec)
    assert message in str(e.value)
    assert server.requests == []


# ---- the command line ----------------------------------------------------------------------------------------------


def test_ghn_predict_help_lists_the_released_names():
    sub = next(a for a in build_parser()._actions if a.dest == "command")
    ckpt = next(a for a in sub.choices["predict"]._actions if a.dest == "ckpt")
    for name in pretrained.RELEASES:
        assert name in ckpt.help


def test_ghn_predict_with_a_released_name(server, tmp_path, monkeypatch, capsys):
    data, expected = ours_bytes(tmp_path)
    server.serve(FILE, data)
    register(monkeypatch, NAME, FILE, data)
    out = tmp_path / "pred.safetensors"
    assert main(["predict", TINY, "--ckpt", NAME, "--out", str(out)]) == 0
    assert "predicted 10/10 parameter tensors" in capsys.readouterr().out
    from safetensors.torch import load_file

    from .nets import TinyResNet

    want = expected.predict(TinyResNet(), bn_mode="running").state_dict()
    got = load_file(str(out))
    for k, v in want.items():
        torch.testing.assert_close(got[k], v, rtol=1e-5, atol=1e-6, msg=k)


def test_ghn_predict_offline_is_one_line_with_the_cache_path(cache, tmp_path, monkeypatch, capsys):
    register(monkeypatch, NAME, FILE, b"x")
    monkeypatch.setenv(pretrained.URL_ENV, closed_port_url())
    monkeypatch.setenv(pretrained.CACHE_ENV, str(cache))
    assert main(["predict", TINY, "--ckpt", NAME]) == 2
    line = error_line(capsys)
    assert f"cannot download {NAME}" in line and f"put it at {cache / FILE}" in line


def test_ghn_predict_unknown_name_is_one_line(capsys):
    assert main(["predict", TINY, "--ckpt", "ghn2-imagenett"]) == 2
    assert "did you mean ghn2-imagenet" in error_line(capsys)


def test_checkpoint_digest_follows_the_file_a_run_folder_names(tmp_path):
    """Caches keyed by a GHN (bench_finetune, bench_mup, ghn prune) see a retrained GHN in the same run folder as
    another GHN: the digest is the resolved file's, not the path's."""
    from archspace.files import file_sha256

    run = tmp_path / "run"
    run.mkdir()
    GHN(max_shape=(8, 8, 3, 3), hidden_dim=8).save(str(run / "ghn.safetensors"))
    first = pretrained.checkpoint_sha256(run)
    assert first == pretrained.checkpoint_sha256(run / "ghn.safetensors") == file_sha256(run / "ghn.safetensors")
    torch.manual_seed(1)
    GHN(max_shape=(8, 8, 3, 3), hidden_dim=8).save(str(run / "ghn.safetensors"))  # retrained in the same folder
    assert pretrained.checkpoint_sha256(run) != first
    with pytest.raises(CheckpointError, match="checkpoint file not found"):
        pretrained.checkpoint_sha256(tmp_path / "missing.safetensors")
