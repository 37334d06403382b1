"""The package as a user installs it: configs found by name, and a plain wheel (not an
editable checkout) that trains from another folder with its shipped configs and data."""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from common.train.typed import ConfigError
from image_exps.task import TASK as IMAGE

REPO = Path(__file__).resolve().parent.parent
DOMAINS = sorted(p.name for p in REPO.glob("*_exps") if (p / "__init__.py").is_file())
NOT_SOURCE = shutil.ignore_patterns(
    ".git", ".venv", "runs", "results", "data", "build", "dist", "*.egg-info", "__pycache__",
    ".pytest_cache", ".ruff_cache",
)  # fmt: skip


def test_a_config_is_found_by_its_name_as_well_as_by_its_path(tmp_path):
    shipped = IMAGE.default_config.parent
    assert IMAGE.config_path("digits") == shipped / "digits.yaml"
    assert IMAGE.config_path("cifar10_wrn16_8.yaml") == shipped / "cifar10_wrn16_8.yaml"
    assert IMAGE.config_path(None) == IMAGE.default_config
    mine = tmp_path / "digits"  # a file of the user's own wins over a shipped name
    mine.write_text("seed: 3\n")
    assert IMAGE.config_path(str(mine)) == mine
    with pytest.raises(ConfigError) as info:
        IMAGE.config_path("digitz")
    assert "no such file" in str(info.value) and "cifar10_images, cifar10_resnet18" in str(
        info.value
    )
    with pytest.raises(ConfigError):  # a path is never looked up among the shipped names
        IMAGE.config_path(str(tmp_path / "digits.yaml"))


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Path:
    """The project built as a wheel from a copy of its source and installed with pip
    (``--target``, its dependencies being this environment's) into a folder of its own."""
    from importlib import metadata

    major = int(metadata.version("setuptools").split(".")[0])
    if major < 77:  # pyproject's build requirement; built here without isolation (offline)
        pytest.skip(f"setuptools {major} in this environment: the build needs >= 77")
    root = tmp_path_factory.mktemp("wheel")
    source = root / "source"
    shutil.copytree(REPO, source, ignore=NOT_SOURCE)
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q"]
    build = [*pip, "wheel", "--no-deps", "--no-build-isolation", "--no-index"]
    subprocess.run([*build, "-w", str(root / "dist"), str(source)], check=True)
    (wheel,) = (root / "dist").glob("flatminima-*.whl")
    target = root / "site"
    subprocess.run(
        [*pip, "install", "--no-deps", "--no-index", "--target", target, wheel], check=True
    )
    return target


def test_the_wheel_holds_every_domain_with_its_configs_and_embedded_data(installed):
    assert DOMAINS == ["ecg_exps", "graph_exps", "image_exps", "text_exps"]
    for domain in DOMAINS:
        shipped = sorted(p.name for p in (REPO / domain / "configs").glob("*.yaml"))
        assert sorted(p.name for p in (installed / domain / "configs").glob("*.yaml")) == shipped
        for sums in (REPO / domain).glob("embedded/*/SHA256SUMS"):
            copy = installed / sums.relative_to(REPO)
            names = [line.split()[-1] for line in sums.read_text().splitlines() if line]
            assert all((copy.parent / name).is_file() for name in names), copy.parent


def test_the_installed_package_trains_from_another_folder_by_config_name(installed, tmp_path):
    env = {"PYTHONPATH": str(installed), "PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}
    where = subprocess.run(
        [sys.executable, "-c", "import image_exps, common; print(image_exps.__file__)"],
        cwd=tmp_path, env=env, capture_output=True, text=True, check=True,
    )  # fmt: skip
    assert where.stdout.strip().startswith(str(installed))  # not the checkout
    run = subprocess.run(
        [sys.executable, "-m", "image_exps.train", "--config", "digits", "smoke=true",
         "train.progress=false", "run_dir=run"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr[-2000:]
    assert (tmp_path / "run" / "summary.json").is_file() and "done: test accuracy" in run.stdout


def test_the_wheel_metadata_lists_no_checkout_paths(installed):
    (wheel,) = installed.parent.glob("dist/flatminima-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        tops = {name.split("/")[0] for name in archive.namelist()}
    assert {"common", *DOMAINS} <= tops
    assert not tops & {"tests", "scripts", "benchmarks", "runs", "data"}


BLOCK = "import sys\nfor name in {names!r}:\n    sys.modules[name] = None  # not installed\n"


def _run_with_blocked(names: list[str], code: str, cwd: Path) -> subprocess.CompletedProcess:
    script = BLOCK.format(names=names) + code
    return subprocess.run(
        [sys.executable, "-c", script], cwd=cwd, capture_output=True, text=True, timeout=300
    )


def test_the_image_domain_trains_without_the_other_domains_extras(tmp_path):
    run = _run_with_blocked(
        ["transformers", "datasets", "accelerate", "torch_geometric", "wfdb"],
        "from common.entry import run\nsys.argv = ['train', '--config', 'digits', "
        "'smoke=true', 'train.progress=false', 'run_dir=run']\n"
        "run('image_exps.task', 'train')\n",
        tmp_path,
    )
    assert run.returncode == 0, run.stderr[-2000:]
    assert (tmp_path / "run" / "summary.json").is_file()


@pytest.mark.parametrize(
    ("domain", "library", "args"),
    [
        ("graph", "torch_geometric", []),  # imported with the domain
        ("text", "transformers", []),  # imported by the first tokenizer
        ("ecg", "wfdb", ["data.name=mitdb", "data.records=[100]"]),  # by the first record
    ],
)
def test_a_domain_without_its_extra_says_what_to_install(tmp_path, domain, library, args):
    argv = ["train", "smoke=true", "train.progress=false", *args]
    run = _run_with_blocked(
        [library],
        f"from common.entry import run\nsys.argv = {argv!r}\nrun('{domain}_exps.task', 'train')\n",
        tmp_path,
    )
    assert run.returncode == 2 and "Traceback" not in run.stderr
    assert run.stderr.strip() == (
        f"error: the {domain} domain needs {library}, which is not installed: "
        f"pip install 'flatminima[{domain}]' (or pip install {library})"
    )


def test_only_an_extra_that_exists_is_suggested():
    from common.entry import _extras

    extras = _extras()
    assert {"text", "graph", "ecg", "all"} <= set(extras) and "image" not in extras
