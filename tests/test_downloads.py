"""Downloads through the libraries' own code, against a local mirror (issue 23).

A :class:`Mirror` (``http.server`` on 127.0.0.1, a thread) serves small real-format files in
the real hosts' layouts: a CIFAR-10 ``tar.gz`` of pickle batches (``/~kriz/``), a TU ``zip``
(``/graphkerneldatasets/``), PhysioNet's ``mitdb`` tree (``/content/mitdb/`` and
``/files/mitdb/1.0.0/``) and a Hugging Face model repo (``/<repo>/resolve/<revision>/``).
The loaders are pointed at it only through the libraries' own URL settings
(``CIFAR10.url`` / ``tgz_md5``, ``TUDataset.url``, wfdb's ``PN_CONTENT_URL`` and
``config.db_index_url``, huggingface_hub's ``ENDPOINT``: what ``HF_ENDPOINT`` sets); the
project's functions run unpatched. For each source: (a) the first run downloads and builds,
(b) a second one works with the mirror stopped, (c) a transfer cut mid-file leaves nothing a
later run trusts and the next run recovers, (d) a file failing its check is refused with a
clear message, (e) a missing file or repo is named. ``datasets.load_dataset`` (GLUE) is not
mirrored: it needs much more of the hub's API than ``from_pretrained`` does.
"""

from __future__ import annotations

import hashlib
import importlib
import io
import json
import threading
import time
import urllib.parse
import zipfile
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import torch_geometric
import torchvision
from torch_geometric.datasets import TUDataset

from common.errors import DataError, ModelError
from common.splits import Splits
from ecg_exps.data import build_ecg_data
from graph_exps.data import build_graph_data
from image_exps.data import CIFAR10_MEAN, CIFAR10_STD, build_image_data
from tests.image_fixtures import cifar_pixel, write_cifar_archive

# --------------------------------------------------------------------------- the mirror


class _MirrorServer(ThreadingHTTPServer):
    daemon_threads = True
    mirror: Mirror


class _Handler(BaseHTTPRequestHandler):
    """GET and HEAD (and ``Range: bytes=a-b``) of the mirror's files; 404 for others."""

    server: _MirrorServer

    def log_message(self, format: str, *args: object) -> None:  # quiet
        pass

    def do_HEAD(self) -> None:
        self._serve(body=False)

    def do_GET(self) -> None:
        self._serve(body=True)

    def _serve(self, body: bool) -> None:
        mirror = self.server.mirror
        path = urllib.parse.urlsplit(self.path).path
        mirror.requests.append(f"{self.command} {path}")
        data = mirror.files.get(path)
        if data is None:
            status, headers = mirror.missing(path)
            self.send_response(status)
            for key, value in {**headers, "Content-Length": "0"}.items():
                self.send_header(key, value)
            self.end_headers()
            return
        start, end, status = 0, len(data), 200
        ranged = self.headers.get("Range", "")
        if ranged.startswith("bytes="):
            first, _, last = ranged[6:].partition("-")
            start = int(first or 0)
            end = min(len(data), int(last) + 1) if last else len(data)
            status = 206
        self.send_response(status)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(end - start))
        self.send_header("Accept-Ranges", "bytes")
        for key, value in mirror.headers(path, data).items():
            self.send_header(key, value)
        if status == 206:
            self.send_header("Content-Range", f"bytes {start}-{end - 1}/{len(data)}")
        self.end_headers()
        if not body:
            return
        time.sleep(mirror.latency.get(path, 0.0))
        chunk = data[start:end]
        if path in mirror.cut:  # the connection drops halfway through the file
            chunk = chunk[: len(chunk) // 2]
            self.close_connection = True
        self.wfile.write(chunk)


class Mirror:
    """A local HTTP server of ``files`` (URL path -> bytes); paths in ``cut`` are sent half
    and the connection closed, those in ``latency`` wait that many seconds before their
    body; ``requests`` logs ``"METHOD /path"``. ``missing(path)`` is the status and headers
    of a path it lacks (404), ``headers(path, data)`` extra headers of one it has."""

    def __init__(self) -> None:
        self.files: dict[str, bytes] = {}
        self.cut: set[str] = set()
        self.latency: dict[str, float] = {}
        self.requests: list[str] = []
        self.missing: Callable[[str], tuple[int, dict[str, str]]] = lambda path: (404, {})
        self.headers: Callable[[str, bytes], dict[str, str]] = lambda path, data: {}
        self._server = _MirrorServer(("127.0.0.1", 0), _Handler)
        self._server.mirror = self
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()
        host, port = self._server.server_address[:2]
        self.url = f"http://{host}:{port}"
        self.running = True

    def got(self, path: str) -> bool:
        """Whether ``path`` was fetched (GET) at least once."""
        return f"GET {path}" in self.requests

    def stop(self) -> None:
        """Shut the server down: the port then refuses connections, as offline."""
        if self.running:
            self._server.shutdown()
            self._server.server_close()
            self._thread.join(5)
            self.running = False


@pytest.fixture
def mirror() -> Iterator[Mirror]:
    """A running :class:`Mirror`, stopped at the end of the test."""
    m = Mirror()
    try:
        yield m
    finally:
        m.stop()


def _message(error: pytest.ExceptionInfo[DataError]) -> str:
    """The DataError's message, checked to be one line without a chained traceback."""
    msg = str(error.value)
    assert "\n" not in msg and "Traceback" not in msg
    e = error.value
    assert e.__cause__ is None and (e.__context__ is None or e.__suppress_context__)
    return msg


# --------------------------------------------------------------------------- CIFAR-10

CIFAR_PATH = "/~kriz/cifar-10-python.tar.gz"  # https://www.cs.toronto.edu/~kriz/...


def _cifar_tarball(tmp: Path, n_per_batch: int) -> bytes:
    """torchvision's CIFAR-10 archive layout (pickle batches), ``n_per_batch`` images each."""
    return write_cifar_archive(tmp, n_per_batch=n_per_batch, n_test=6).read_bytes()


@pytest.fixture
def cifar(mirror: Mirror, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> bytes:
    """The mirror serves a 26-image CIFAR-10 archive; torchvision's URL and md5 name it."""
    archive = _cifar_tarball(tmp_path / "build", n_per_batch=4)
    mirror.files[CIFAR_PATH] = archive
    monkeypatch.setattr(torchvision.datasets.CIFAR10, "url", mirror.url + CIFAR_PATH)
    monkeypatch.setattr(torchvision.datasets.CIFAR10, "tgz_md5", hashlib.md5(archive).hexdigest())
    return archive


def _build_cifar(root: Path, download: bool = True) -> Splits:
    return build_image_data("cifar10", root, download=download, augment=False, val_fraction=0.1)


def _check_cifar(splits: Splits) -> None:
    """The splits hold the served archive's 20 training and 6 test images."""
    assert (splits.meta["n_train"], splits.meta["n_val"], splits.meta["n_test"]) == (18, 2, 6)
    for k in range(6):  # test image k is the 20 + k-th written, label (20 + k) % 10
        image, label = splits.test[k]
        assert label == (20 + k) % 10
        value = float(image[1, 5, 5]) * CIFAR10_STD[1] + CIFAR10_MEAN[1]  # un-normalised
        assert value == pytest.approx(cifar_pixel(20 + k) / 255, abs=1e-4)


def test_cifar_downloads_then_works_offline(cifar: bytes, mirror: Mirror, tmp_path: Path) -> None:
    root = tmp_path / "data"
    _check_cifar(_build_cifar(root))  # (a)
    assert mirror.got(CIFAR_PATH)
    mirror.stop()  # (b)
    _check_cifar(_build_cifar(root))


def test_cifar_interrupted_download_is_not_trusted(
    cifar: bytes, mirror: Mirror, tmp_path: Path
) -> None:
    root = tmp_path / "data"
    mirror.cut.add(CIFAR_PATH)
    with pytest.raises(DataError) as e:
        _build_cifar(root)
    assert "Downloading" in _message(e) and mirror.got(CIFAR_PATH)
    with pytest.raises(DataError):  # (c) nothing half-written is used offline ...
        _build_cifar(root, download=False)
    mirror.cut.clear()  # ... and the next run, the mirror whole again, recovers
    _check_cifar(_build_cifar(root))


def test_cifar_wrong_md5_is_refused(cifar: bytes, mirror: Mirror, tmp_path: Path) -> None:
    # (d) the mirror serves another (valid) archive than the one whose md5 torchvision knows
    mirror.files[CIFAR_PATH] = _cifar_tarball(tmp_path / "other", n_per_batch=5)
    root = tmp_path / "data"
    with pytest.raises(DataError) as e:
        _build_cifar(root)
    msg = _message(e)
    assert CIFAR_PATH in msg and ("md5" in msg.lower() or "checksum" in msg.lower()), msg
    with pytest.raises(DataError):  # the refused archive is not used by a later run either
        _build_cifar(root, download=False)
    mirror.files[CIFAR_PATH] = cifar
    _check_cifar(_build_cifar(root))


def test_cifar_404_names_the_url(cifar: bytes, mirror: Mirror, tmp_path: Path) -> None:
    del mirror.files[CIFAR_PATH]  # (e)
    with pytest.raises(DataError) as e:
        _build_cifar(tmp_path / "data")
    msg = _message(e)
    assert "404" in msg and mirror.url + CIFAR_PATH in msg, msg


# --------------------------------------------------------------------------- TU (PyG)

TU_PATH = "/graphkerneldatasets"  # https://www.chrsmrrs.com/graphkerneldatasets/<NAME>.zip
#: MUTAG's files served as a set that is not embedded (MUTAG itself is installed from the
#: package and never downloaded, which test_embedded_mutag_needs_no_network checks)
TU_NAME = "NCI1"
MUTAG = Path(__file__).parents[1] / "graph_exps" / "embedded" / "MUTAG"


def _tu_zip(name: str, damage: str | None = None) -> bytes:
    """The official TU archive layout: ``<name>/<name>_<kind>.txt`` and ``README.txt``;
    ``damage="crc"`` changes one digit of ``_A.txt`` after its CRC-32 was written."""
    buf = io.BytesIO()
    method = zipfile.ZIP_STORED if damage else zipfile.ZIP_DEFLATED
    with zipfile.ZipFile(buf, "w", method) as z:
        for src in sorted(MUTAG.glob("*.txt")):
            arcname = src.name.replace("MUTAG", name)
            z.writestr(f"{name}/{arcname}", src.read_bytes())
    data = buf.getvalue()
    if damage == "crc":
        text = (MUTAG / "MUTAG_A.txt").read_bytes()
        cut = text.index(b"\n", 200)  # a line in the middle of the first graph's edges
        bad = text[: cut - 1] + (b"7" if text[cut - 1 : cut] != b"7" else b"8") + text[cut:]
        assert data.count(text) == 1
        data = data.replace(text, bad)
    return data


@pytest.fixture
def tu(mirror: Mirror, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> str:
    """The mirror serves ``TU_NAME.zip``; PyG's ``TUDataset.url`` points at it."""
    mirror.files[f"{TU_PATH}/{TU_NAME}.zip"] = _tu_zip(TU_NAME)
    monkeypatch.setattr(TUDataset, "url", mirror.url + TU_PATH)
    monkeypatch.setattr(torch_geometric.home, "_home_dir", str(tmp_path / "pyg-home"))
    return f"{TU_PATH}/{TU_NAME}.zip"


def _build_graphs(root: Path, name: str = TU_NAME, download: bool = True) -> Splits:
    return build_graph_data(name, root, download=download)


def _check_graphs(splits: Splits, root: Path) -> None:
    """188 graphs with MUTAG's labels, read from the raw files the download left."""
    assert splits.meta["n_graphs"] == 188 and splits.meta["num_classes"] == 2
    raw = root / TU_NAME / "raw"
    for src in MUTAG.glob("MUTAG_*.txt"):
        assert (raw / src.name.replace("MUTAG", TU_NAME)).read_bytes() == src.read_bytes()


def test_tu_downloads_then_works_offline(tu: str, mirror: Mirror, tmp_path: Path) -> None:
    root = tmp_path / "data"
    _check_graphs(_build_graphs(root), root)  # (a)
    assert mirror.got(tu)
    mirror.stop()  # (b)
    _check_graphs(_build_graphs(root), root)


def test_embedded_mutag_needs_no_network(tu: str, mirror: Mirror, tmp_path: Path) -> None:
    assert _build_graphs(tmp_path, "MUTAG").meta["n_graphs"] == 188
    assert mirror.requests == []


def test_tu_interrupted_download_is_not_trusted(tu: str, mirror: Mirror, tmp_path: Path) -> None:
    root = tmp_path / "data"
    mirror.cut.add(tu)
    with pytest.raises(DataError) as e:
        _build_graphs(root)
    assert f"{mirror.url}{tu}" in _message(e) and mirror.got(tu)
    with pytest.raises(DataError):  # (c) nothing half-written is used offline ...
        _build_graphs(root, download=False)
    mirror.cut.clear()  # ... and the next run recovers
    _check_graphs(_build_graphs(root), root)


def test_tu_bad_crc_is_refused(tu: str, mirror: Mirror, tmp_path: Path) -> None:
    root = tmp_path / "data"
    mirror.files[tu] = _tu_zip(TU_NAME, damage="crc")  # (d) the zip's own check: CRC-32
    with pytest.raises(DataError) as e:
        _build_graphs(root)
    msg = _message(e)
    assert "CRC" in msg and f"{TU_NAME}_A.txt" in msg, msg
    with pytest.raises(DataError):
        _build_graphs(root, download=False)
    mirror.files[tu] = _tu_zip(TU_NAME)
    _check_graphs(_build_graphs(root), root)


def test_tu_404_names_the_url(tu: str, mirror: Mirror, tmp_path: Path) -> None:
    with pytest.raises(DataError) as e:  # (e)
        _build_graphs(tmp_path / "data", "NCI109")
    msg = _message(e)
    # the message's "Downloading <url> failed" names the URL that was asked for
    assert f"Downloading {mirror.url}{TU_PATH}/NCI109.zip failed" in msg, msg
    assert "NCI109_A.txt" in msg


# --------------------------------------------------------------------------- PhysioNet mitdb

PN_FILES = "/files/mitdb/1.0.0"  # https://physionet.org/files/mitdb/1.0.0/<record>.<ext>
PN_CONTENT = "/content/mitdb/"  # https://physionet.org/content/mitdb/: its version
EMBEDDED_MITDB = Path(__file__).parents[1] / "ecg_exps" / "embedded" / "mitdb"
#: records 100 and 208 (shipped with the package) served as 101 and 103: the package
#: installs its own records without a network, so only records it lacks are downloaded
SERVED = {101: 100, 103: 208}


def _renamed_record(new: int, old: int) -> dict[str, bytes]:
    """Record ``old``'s ``.hea``, ``.dat`` and ``.atr`` as record ``new``'s."""
    lines = (EMBEDDED_MITDB / f"{old}.hea").read_text().splitlines(keepends=True)
    lines[0] = lines[0].replace(str(old), str(new), 1)
    lines[1:] = [ln.replace(f"{old}.dat", f"{new}.dat") for ln in lines[1:]]
    return {
        f"{PN_FILES}/{new}.hea": "".join(lines).encode(),
        f"{PN_FILES}/{new}.dat": (EMBEDDED_MITDB / f"{old}.dat").read_bytes(),
        f"{PN_FILES}/{new}.atr": (EMBEDDED_MITDB / f"{old}.atr").read_bytes(),
    }


def _physionet_files() -> dict[str, bytes]:
    """What ``wfdb.dl_database('mitdb', ...)`` reads: the project page (its version), the
    version's folder, ``RECORDS``, ``ANNOTATORS`` and each record's files."""
    page = b"<html><body>\n<p>Version: 1.0.0</p>\n</body></html>\n"
    files = {
        PN_CONTENT: page,
        f"{PN_CONTENT}1.0.0/": page,
        f"{PN_FILES}/RECORDS": "".join(f"{r}\n" for r in sorted(SERVED)).encode(),
        f"{PN_FILES}/ANNOTATORS": b"atr\treference beat, rhythm, and signal quality annotations\n",
    }
    for new, old in SERVED.items():
        files.update(_renamed_record(new, old))
    return files


@pytest.fixture
def physionet(mirror: Mirror, monkeypatch: pytest.MonkeyPatch) -> Mirror:
    """The mirror serves PhysioNet's mitdb; wfdb's two base URLs point at it.

    Each ``.dat`` takes 0.3 s to come, as over a network: wfdb 4.3.1's ``dl_database``
    lists a ``.dat`` that holds two signals twice and fetches both copies in parallel; from
    a server faster than its own file writes, the second thread can find the first's file
    half-written and append to it, a corrupt record (a race in wfdb, not the project's).
    """
    download = importlib.import_module("wfdb.io.download")
    mirror.files.update(_physionet_files())
    mirror.latency.update({p: 0.3 for p in mirror.files if p.endswith(".dat")})
    monkeypatch.setattr(download, "PN_CONTENT_URL", f"{mirror.url}/content/")
    monkeypatch.setattr(download.config, "db_index_url", f"{mirror.url}/files/")
    return mirror


def _build_ecg(root: Path, records: list[int] | None = None, download: bool = True) -> Splits:
    return build_ecg_data("mitdb", root, records=records or sorted(SERVED), download=download)


def _check_ecg(splits: Splits, root: Path) -> None:
    """Both records' beats are in, and the files on disk are the served ones."""
    n = splits.meta["n_train"] + splits.meta["n_val"] + splits.meta["n_test"]
    assert n > 4000 and splits.meta["missing_records"] == []
    files = _physionet_files()
    for record in SERVED:
        for ext in ("hea", "dat", "atr"):
            got = (root / "mitdb" / f"{record}.{ext}").read_bytes()
            assert got == files[f"{PN_FILES}/{record}.{ext}"]


def _record_files(root: Path) -> list[str]:
    """The files under ``root/mitdb`` (a download's temporary folder included)."""
    folder = root / "mitdb"
    return sorted(p.name for p in folder.rglob("*") if p.is_file()) if folder.is_dir() else []


def test_mitdb_downloads_then_works_offline(physionet: Mirror, tmp_path: Path) -> None:
    root = tmp_path / "data"
    splits = _build_ecg(root)  # (a)
    _check_ecg(splits, root)
    assert splits.meta["downloaded"] and physionet.got(f"{PN_FILES}/103.dat")
    physionet.stop()  # (b)
    again = _build_ecg(root)
    _check_ecg(again, root)
    assert not again.meta["downloaded"]


def test_mitdb_interrupted_download_is_not_trusted(physionet: Mirror, tmp_path: Path) -> None:
    root = tmp_path / "data"
    physionet.cut.add(f"{PN_FILES}/103.dat")
    with pytest.raises(DataError) as e:
        _build_ecg(root)
    assert "Cannot download" in _message(e) and physionet.got(f"{PN_FILES}/103.dat")
    assert _record_files(root) == []  # (c) nothing half-written is left ...
    physionet.cut.clear()  # ... and the next run recovers
    _check_ecg(_build_ecg(root), root)


def test_mitdb_short_dat_is_refused(physionet: Mirror, tmp_path: Path) -> None:
    # (d) a .dat shorter than its header says (served whole, so the transfer looks fine)
    path = f"{PN_FILES}/103.dat"
    physionet.files[path] = physionet.files[path][:-3000]
    with pytest.raises(DataError) as e:
        _build_ecg(tmp_path / "data")
    assert "103.dat is truncated" in _message(e)


def test_mitdb_dat_failing_its_checksum_is_refused(physionet: Mirror, tmp_path: Path) -> None:
    # (d) the header's 16-bit checksum of each signal is WFDB's check of the samples
    path = f"{PN_FILES}/103.dat"
    dat = bytearray(physionet.files[path])
    dat[30_000:30_003] = bytes(b ^ 0x5A for b in dat[30_000:30_003])  # one frame, both leads
    physionet.files[path] = bytes(dat)
    with pytest.raises(DataError) as e:
        _build_ecg(tmp_path / "data")
    msg = _message(e)
    assert "103" in msg and "checksum" in msg, msg


def test_mitdb_404_names_the_missing_file(physionet: Mirror, tmp_path: Path) -> None:
    root = tmp_path / "data"
    with pytest.raises(DataError) as e:  # (e) record 105 is not on the mirror
        _build_ecg(root, records=[101, 105])
    msg = _message(e)
    assert "404" in msg and f"{physionet.url}{PN_FILES}/105.hea" in msg, msg
    assert _record_files(root) == []


def test_served_records_match_the_embedded_beats(tmp_path: Path) -> None:
    """The renamed records are records 100 and 208: same samples, same annotations."""
    import wfdb

    for new, old in SERVED.items():
        for path, data in _renamed_record(new, old).items():
            (tmp_path / Path(path).name).write_bytes(data)
        ours = wfdb.rdrecord(str(tmp_path / str(new)), sampto=3600)
        theirs = wfdb.rdrecord(str(EMBEDDED_MITDB / str(old)), sampto=3600)
        assert np.array_equal(ours.p_signal, theirs.p_signal)
        assert ours.sig_name == theirs.sig_name and ours.checksum == theirs.checksum


# --------------------------------------------------------------------------- Hugging Face hub

HUB_MODEL = "flatminima/tiny-bert"  # https://huggingface.co/<repo>/resolve/<revision>/<file>
HUB_COMMIT = "0123456789abcdef0123456789abcdef01234567"


def _hub_repo(folder: Path) -> dict[str, bytes]:
    """The hub's files of a model repo holding ``folder``: ``resolve`` of every file at
    ``main`` and at the commit, the model's info and its file tree (the API's JSON)."""
    names = sorted(p.name for p in folder.iterdir())
    files = {
        f"/api/models/{HUB_MODEL}": json.dumps(
            {"id": HUB_MODEL, "sha": HUB_COMMIT, "siblings": [{"rfilename": n} for n in names]}
        ).encode(),
        f"/api/models/{HUB_MODEL}/tree/main": json.dumps(
            [{"type": "file", "path": n, "size": (folder / n).stat().st_size} for n in names]
        ).encode(),
        f"/api/models/{HUB_MODEL}/tree/main/additional_chat_templates": b"[]",
    }
    for revision in ("main", HUB_COMMIT):
        for name in names:
            files[f"/{HUB_MODEL}/resolve/{revision}/{name}"] = (folder / name).read_bytes()
    return files


def _hub_missing(path: str) -> tuple[int, dict[str, str]]:
    """As the hub answers: a file missing from a repo it has, or a repo it does not have."""
    if path.startswith((f"/{HUB_MODEL}/", f"/api/models/{HUB_MODEL}/")):
        return 404, {"X-Error-Code": "EntryNotFound", "X-Repo-Commit": HUB_COMMIT}
    return 401, {"X-Error-Code": "RepoNotFound"}


def _hub_headers(path: str, data: bytes) -> dict[str, str]:
    """What ``hf_hub_download`` reads from a ``resolve``: the commit and the file's ETag."""
    if "/resolve/" not in path:
        return {"Content-Type": "application/json"}
    return {"X-Repo-Commit": HUB_COMMIT, "ETag": f'"{hashlib.sha256(data).hexdigest()}"'}


@pytest.fixture
def hub(mirror: Mirror, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> dict[str, Any]:
    """The mirror serves ``HUB_MODEL`` (tiny-bert's tokenizer and random weights, written by
    ``save_pretrained``) as the hub does; huggingface_hub's endpoint (what ``HF_ENDPOINT``
    sets at import) and cache point at the mirror and ``tmp_path``. Returns the weights."""
    import huggingface_hub.constants as hub_constants
    import huggingface_hub.hf_api
    import transformers.utils.hub
    from transformers import AutoModelForSequenceClassification

    from text_exps import synthetic

    folder = tmp_path / "repo"
    synthetic.tiny_tokenizer().save_pretrained(folder)
    torch.manual_seed(0)
    model = AutoModelForSequenceClassification.from_config(synthetic.tiny_bert_config(2))
    model.save_pretrained(folder)
    mirror.files.update(_hub_repo(folder))
    mirror.missing, mirror.headers = _hub_missing, _hub_headers
    cache = tmp_path / "hf-cache"
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))  # what the project's messages name
    monkeypatch.setattr(hub_constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(hub_constants, "ENDPOINT", mirror.url)
    monkeypatch.setattr(
        hub_constants,
        "HUGGINGFACE_CO_URL_TEMPLATE",
        mirror.url + "/{repo_id}/resolve/{revision}/{filename}",
    )
    monkeypatch.setattr(hub_constants, "HF_HUB_OFFLINE", False)
    # the API clients that took the endpoint when first made: transformers' shared one
    # (made again from the endpoint above) and huggingface_hub's module-level one
    monkeypatch.setattr(transformers.utils.hub, "_hf_api", None)
    monkeypatch.setattr(huggingface_hub.hf_api.api, "endpoint", mirror.url)
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def _load_model(name: str = HUB_MODEL) -> tuple[Any, Any]:
    from text_exps.models import build_text_model, load_tokenizer

    return load_tokenizer(name), build_text_model(name, 2)


def _check_model(tokenizer: Any, model: Any, weights: dict[str, Any]) -> None:
    """The tokenizer is tiny-bert's; every weight is the one served."""
    from text_exps import synthetic

    assert tokenizer.get_vocab() == synthetic.tiny_tokenizer().get_vocab()
    state = model.state_dict()
    assert weights.keys() <= state.keys()
    assert all(torch.equal(state[k], w) for k, w in weights.items())


def test_hub_model_downloads_then_loads_offline(
    hub: dict[str, Any], mirror: Mirror, monkeypatch: pytest.MonkeyPatch
) -> None:
    import huggingface_hub.constants as hub_constants

    _check_model(*_load_model(), hub)  # (a)
    assert mirror.got(f"/{HUB_MODEL}/resolve/{HUB_COMMIT}/model.safetensors")
    mirror.stop()  # (b) from the cache; HF_HUB_OFFLINE, or each file is retried ~23 s first
    monkeypatch.setattr(hub_constants, "HF_HUB_OFFLINE", True)
    _check_model(*_load_model(), hub)


def test_hub_missing_repo_names_it(hub: dict[str, Any], mirror: Mirror) -> None:
    with pytest.raises(ModelError) as e:  # (e) the hub: 401 RepoNotFound
        _load_model("flatminima/no-such-model")
    msg = str(e.value)
    assert "flatminima/no-such-model" in msg and "\n" not in msg
    assert "couldn't connect" not in msg, msg  # the mirror answered: it is not unreachable


def test_hub_interrupted_download_is_not_trusted(
    hub: dict[str, Any], mirror: Mirror, tmp_path: Path
) -> None:
    weights = f"/{HUB_MODEL}/resolve/{HUB_COMMIT}/model.safetensors"
    mirror.cut.add(weights)  # (c) huggingface_hub retries (about 5 s), then gives up
    with pytest.raises(ModelError) as e:
        _load_model()
    assert HUB_MODEL in str(e.value) and mirror.got(weights)
    blobs = tmp_path / "hf-cache" / "models--flatminima--tiny-bert" / "blobs"
    served = set(mirror.files.values())
    assert all(p.read_bytes() in served for p in blobs.iterdir())  # no half file kept
    mirror.cut.clear()
    _check_model(*_load_model(), hub)


def test_hub_file_failing_its_sha256_is_refused(hub: dict[str, Any], mirror: Mirror) -> None:
    weights = f"/{HUB_MODEL}/resolve/{HUB_COMMIT}/model.safetensors"
    good = mirror.files[weights]
    etag = f'"{hashlib.sha256(good).hexdigest()}"'
    mirror.files[weights] = good[:-400] + bytes(100) + good[-300:]  # (d) the last weights zeroed

    def headers(path: str, data: bytes) -> dict[str, str]:
        return {**_hub_headers(path, data), **({"ETag": etag} if path == weights else {})}

    mirror.headers = headers
    with pytest.raises(ModelError, match=r"model.safetensors .* is damaged \(its SHA-256"):
        _load_model()
    mirror.files[weights] = good  # the damaged blob was deleted: the next run fetches it again
    _load_model()
